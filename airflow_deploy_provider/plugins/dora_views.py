"""The DORA metrics in Airflow: Prometheus gauges, JSON and a page of the UI, under ``/deploy``.

- ``GET /deploy/metrics``: :func:`~airflow_deploy_provider.dora.prometheus_text` of the report, for a
  Prometheus scrape job that sends an Airflow token as its bearer token;
- ``GET /deploy/dora.json``: :meth:`~airflow_deploy_provider.dora.DoraReport.to_dict`;
- ``GET /deploy/dora``: an HTML page (the plugin puts it in the UI's navigation) with the KPIs per environment
  and per service against the spec's targets and DORA's bands, and charts drawn here as inline SVG: no
  JavaScript, nothing fetched from elsewhere (Airflow often runs offline).

Every route takes the period as ``days`` (default 30) up to now, optionally one ``service`` and one
``environment``, and needs an Airflow login allowed to read DAG runs (:data:`~.app.AUTHENTICATED`). The
ledger is the one of the ``deploy_ledger`` connection, as for the DAGs. What is computed is kept
:func:`cache_seconds` (30 s by default) per ledger and filters: scrapes every few seconds, or many people on
the page, read the ledger once per period of the cache.
"""

from __future__ import annotations

import html
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from airflow_deploy_provider.dora import (
    ENVIRONMENTS,
    FAIL,
    NO_DATA,
    PASS,
    ROLLBACK_KIND,
    TARGETS,
    DoraReport,
    DoraRow,
    compute_dora,
    default_period,
    format_seconds,
    prometheus_text,
)
from airflow_deploy_provider.plugins.app import AUTHENTICATED

if TYPE_CHECKING:
    from airflow_deploy_provider.ledger.store import Deployment

log = logging.getLogger(__name__)

#: What Prometheus expects of the text exposition format.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_DAYS = 30.0
MAX_DAYS = 3650.0
DEFAULT_CACHE_SECONDS = 30.0
#: At most this many bars in the chart of deployments per week (longer periods put several weeks in a bar).
MAX_BARS = 53
#: Failures and rollbacks listed under the charts, newest first.
RECENT_FAILURES = 10
WEEK = timedelta(days=7)

# The page runs no script and loads nothing; it may only be framed by Airflow's own UI (same origin).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "form-action 'self'; frame-ancestors 'self'; base-uri 'none'",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


#: Airflow's login and permission check (``dag_id`` refused first, see ``plugins/app.py``).
DEPENDENCIES = AUTHENTICATED

Days = Annotated[float, Query(gt=0, le=MAX_DAYS, description="The period: the last `days` days up to now")]
Service = Annotated[str | None, Query(max_length=200, description="Only this service")]
Environment = Annotated[str | None, Query(max_length=100, description="Only this environment")]

router = APIRouter(tags=["dora"])


# ------------------------------------------------------------------------------------------------ the cache

T = TypeVar("T")


class TTLCache(Generic[T]):
    """Values computed for a key, kept ``ttl`` seconds; at most one computation per key at a time (a burst of
    requests for the same figures waits for the first one instead of each reading the ledger), at most
    ``max_entries`` keys (the filters come from the query: bounded memory whatever callers send).

    :param clock: seconds, monotonic (tests move it).
    """

    def __init__(self, max_entries: int = 64, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Any, tuple[float, T]] = OrderedDict()
        self._computing: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, ttl: float, compute: Callable[[], T]) -> T:
        """The value of ``key`` computed less than ``ttl`` seconds ago, else ``compute()`` (kept)."""
        with self._lock:
            fresh = self._fresh(key, ttl)
            if fresh is not None:
                return fresh[1]
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:  # computed by another request while this one waited
                fresh = self._fresh(key, ttl)
                if fresh is not None:
                    return fresh[1]
            try:
                value = compute()
            finally:
                with self._lock:
                    self._computing.pop(key, None)
            with self._lock:
                self._entries[key] = (self.clock(), value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return value

    def _fresh(self, key: Any, ttl: float) -> tuple[float, T] | None:
        entry = self._entries.get(key)
        return entry if entry is not None and self.clock() - entry[0] < ttl else None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE: TTLCache[Any] = TTLCache()


def cache_seconds() -> float:
    """How long computed figures are kept: ``[deploy] dora_cache_seconds`` (0 computes on every request)."""
    from airflow.configuration import conf

    try:
        return max(0.0, conf.getfloat("deploy", "dora_cache_seconds", fallback=DEFAULT_CACHE_SECONDS))
    except ValueError:
        return DEFAULT_CACHE_SECONDS


# -------------------------------------------------------------------------------------------- the figures


class LedgerUnavailable(Exception):
    """The ledger cannot be read: its connection is wrong or its database does not answer."""


@dataclass(frozen=True)
class Filters:
    """The period and filters of a request; empty filters (an HTML form's "every service") are none."""

    days: float
    service: str | None
    environment: str | None

    @classmethod
    def of(cls, days: float, service: str | None, environment: str | None) -> Filters:
        return cls(days, (service or "").strip() or None, (environment or "").strip() or None)

    def params(self, **override: Any) -> str:
        """The query string of these filters (for links between the views)."""
        values = {"days": f"{self.days:g}", "service": self.service, "environment": self.environment,
                  **override}
        return urlencode({k: v for k, v in values.items() if v})


@dataclass(frozen=True)
class PageData:
    """What the page shows: the report, and the ledger's rows of the same period for the charts."""

    report: DoraReport
    rows: list[Deployment]
    services: list[str]  # every service with deployments in the period (the filter's choices)
    environments: list[str]


def _ledger_url() -> str:
    from airflow_deploy_provider.ledger.hook import DeploymentLedgerHook

    try:
        return DeploymentLedgerHook().get_url()
    except ValueError as exc:  # a connection of the wrong type or without URL: its message says which
        raise LedgerUnavailable(str(exc)) from exc


def _read(what: str, compute: Callable[[], T]) -> T:
    """Run a ledger read; a database error becomes :class:`LedgerUnavailable` (logged, not shown: it may
    name hosts and queries)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return compute()
    except SQLAlchemyError as exc:
        log.exception("deploy DORA: reading the deployment ledger for %s failed", what)
        raise LedgerUnavailable("the deployment ledger cannot be read (see the api-server log)") from exc


def load_report(q: Filters) -> DoraReport:
    """The report of ``q`` (cached)."""
    url = _ledger_url()

    def compute() -> DoraReport:
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        since, until = default_period(q.days)
        return _read("the report", lambda: compute_dora(DeploymentLedger.from_url(url), since=since,
                                                        until=until, service=q.service,
                                                        environment=q.environment))

    return CACHE.get(("report", url, q), cache_seconds(), compute)


def load_page(q: Filters) -> PageData:
    """The report of ``q`` with the rows of its period, and the choices of the filters (cached)."""
    url = _ledger_url()
    ttl = cache_seconds()

    def compute() -> tuple[DoraReport, list[Deployment]]:
        from airflow_deploy_provider.ledger.store import DeploymentLedger

        ledger = DeploymentLedger.from_url(url)
        since, until = default_period(q.days)

        def read() -> tuple[DoraReport, list[Deployment]]:
            report = compute_dora(ledger, since=since, until=until, service=q.service,
                                  environment=q.environment)
            # The same period as the report's, for the charts and the list of failures.
            rows = ledger.top_level_between(report.since, report.until, service=q.service,
                                            environment=q.environment)
            return report, rows

        return _read("the page", read)

    report, rows = CACHE.get(("page", url, q), ttl, compute)
    # The filters' choices come from the unfiltered report (the one a Prometheus scrape keeps warm).
    everything = report if q.service is None and q.environment is None else \
        load_report(Filters(q.days, None, None))
    services = sorted({r.service for r in everything.rows if r.service} | ({q.service} if q.service else set()))
    seen = {r.environment for r in everything.totals} | ({q.environment} if q.environment else set())
    environments = [*ENVIRONMENTS, *sorted(seen - set(ENVIRONMENTS))]
    return PageData(report, rows, services, environments)


# ------------------------------------------------------------------------------------------------- routes


@router.get("/metrics", dependencies=DEPENDENCIES, summary="DORA metrics for Prometheus",
            response_class=Response)
def metrics(days: Days = DEFAULT_DAYS, service: Service = None, environment: Environment = None) -> Response:
    """The DORA metrics and deployment KPIs of the last ``days`` days as Prometheus gauges (text exposition
    format 0.0.4). A figure without data has no sample."""
    try:
        report = load_report(Filters.of(days, service, environment))
    except LedgerUnavailable as exc:
        return Response(f"# {exc}\n", status_code=503, media_type=PROMETHEUS_CONTENT_TYPE)
    return Response(prometheus_text(report), media_type=PROMETHEUS_CONTENT_TYPE,
                    headers={"Cache-Control": "no-store"})


@router.get("/dora.json", dependencies=DEPENDENCIES, summary="DORA metrics as JSON")
def dora_json(days: Days = DEFAULT_DAYS, service: Service = None,
              environment: Environment = None) -> JSONResponse:
    """The report as JSON (as ``airflow-deploy dora --format json``): durations in seconds, rates as
    fractions, ``null`` for no data."""
    try:
        report = load_report(Filters.of(days, service, environment))
    except LedgerUnavailable as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    return JSONResponse(report.to_dict(), headers={"Cache-Control": "no-store"})


@router.get("/dora", dependencies=DEPENDENCIES, summary="DORA metrics page", response_class=HTMLResponse)
def dora_page(days: Days = DEFAULT_DAYS, service: Service = None,
              environment: Environment = None) -> HTMLResponse:
    """The page of the UI: KPIs per environment and per service, charts, recent failures."""
    q = Filters.of(days, service, environment)
    try:
        data = load_page(q)
    except LedgerUnavailable as exc:
        body = f"<h1>Deployments: DORA metrics</h1><p class=\"error\">{_e(str(exc))}</p>"
        return HTMLResponse(_document(body), status_code=503, headers=PAGE_HEADERS)
    return HTMLResponse(render_page(data, q), headers=PAGE_HEADERS)


# --------------------------------------------------------------------------------------------------- page


def _e(value: Any) -> str:
    """Escaped for HTML text and attribute values (everything from the ledger goes through here)."""
    return html.escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return NO_DATA if value is None else f"{value * 100:.1f}%"


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


@dataclass(frozen=True)
class Kpi:
    """One KPI as the page shows it: value, detail, and its verdict (``css`` is the verdict's class)."""

    name: str
    value: str
    detail: str
    verdict: str
    css: str


def _target_verdict(status: str, target: str) -> tuple[str, str]:
    label = TARGETS[target].label
    if status == PASS:
        return f"pass: target {label}", "pass"
    if status == FAIL:
        return f"fail: target {label}", "fail"
    return f"no data (target {label})", "nodata"


def _band_verdict(band: str | None) -> tuple[str, str]:
    return (f"DORA band: {band}", f"band-{band}") if band else ("no data (DORA band)", "nodata")


def kpis(row: DoraRow | None) -> list[Kpi]:
    """The six KPIs of a row; ``None`` (nothing happened there) is "no data" throughout."""
    names = ("Deployment frequency", "Lead time for changes", "Mean time to recovery (MTTR)",
             "Change failure rate", "Deployment success rate", "Rollbacks")
    if row is None:
        verdicts = [_band_verdict(None), _band_verdict(None), _target_verdict(NO_DATA, "mttr_seconds"),
                    _target_verdict(NO_DATA, "change_failure_rate"), _target_verdict(NO_DATA, "success_rate"),
                    ("", "nodata")]
        return [Kpi(n, NO_DATA, "nothing deployed", v, c) for n, (v, c) in zip(names, verdicts)]
    f, lt, m = row.frequency, row.lead_time, row.mttr
    cfr, ok, rb = row.change_failure_rate, row.success_rate, row.rollbacks
    if f.per_day is None or f.per_week is None or f.count is None:
        frequency = Kpi(names[0], NO_DATA, "nothing finished", *_band_verdict(None))
    else:
        hotfixes = f" ({_plural(f.hotfixes, 'hotfix', 'hotfixes')})" if f.hotfixes else ""
        frequency = Kpi(names[0], f"{f.per_week:.2f}/week",
                        f"{f.count} completed{hotfixes}, {f.per_day:.2f}/day", *_band_verdict(f.band))
    if lt.count:
        lead_detail = f"median; p90 {format_seconds(lt.p90_seconds)}; {lt.count} measured"
    else:
        lead_detail = "no commit time known"
    if lt.without_commit_time:
        lead_detail += f"; {lt.without_commit_time} without commit time"
    lead = Kpi(names[1], format_seconds(lt.median_seconds), lead_detail, *_band_verdict(lt.band))
    if m.incidents:
        mttr_detail = f"mean of {_plural(m.recovered, 'recovered incident')}; {m.unrecovered} unrecovered"
    else:
        mttr_detail = "no incident"
    mttr = Kpi(names[2], format_seconds(m.mean_seconds), mttr_detail,
               *_target_verdict(m.status, "mttr_seconds"))
    failure = Kpi(names[3], _pct(cfr.value), f"{cfr.part} of {cfr.whole} finished" if cfr.whole else
                  "nothing finished", *_target_verdict(cfr.status, "change_failure_rate"))
    success = Kpi(names[4], _pct(ok.value), f"{ok.part} of {ok.whole} finished" if ok.whole else
                  "nothing finished", *_target_verdict(ok.status, "success_rate"))
    if rb.per_week is None:
        rollbacks = Kpi(names[5], NO_DATA, "nothing finished", "", "nodata")
    else:
        rollbacks = Kpi(names[5], str(rb.count),
                        f"{rb.automatic} automatic, {_plural(rb.runs, 'rollback run')}; "
                        f"{rb.per_week:.2f}/week; {_pct(rb.rate)} of deployments rolled back", "", "")
    return [frequency, lead, mttr, failure, success, rollbacks]


def _kpi_cards(row: DoraRow | None) -> str:
    cards = []
    for k in kpis(row):
        value_css = "value nodata" if k.value == NO_DATA else "value"
        verdict = f'<div class="verdict {k.css}">{_e(k.verdict)}</div>' if k.verdict else ""
        cards.append(f'<div class="kpi"><div class="name">{_e(k.name)}</div>'
                     f'<div class="{value_css}">{_e(k.value)}</div><div class="detail">{_e(k.detail)}</div>'
                     f"{verdict}</div>")
    running = row.deployments.running if row is not None else 0
    note = f'<p class="note">{_plural(running, "deployment")} still running, not counted.</p>' if running else ""
    return f'<div class="kpis">{"".join(cards)}</div>{note}'


def _status_cell(text: str, status: str) -> str:
    css = {PASS: "pass", FAIL: "fail"}.get(status, "nodata")
    return f'<td class="{css}">{_e(text)}</td>'


def _band_cell(band: str | None) -> str:
    return f'<td class="band-{_e(band)}">{_e(band)}</td>' if band else '<td class="nodata">no data</td>'


def _rows_table(rows: Sequence[DoraRow]) -> str:
    if not rows:
        return '<p class="nodata">no data: no deployment finished in this period.</p>'
    head = ("Service", "Environment", "Deployments", "Per week", "Frequency band", "Lead time p50",
            "Lead time p90", "Lead time band", "MTTR", "Change failure rate", "Success rate", "Rollbacks",
            "Running")
    body = []
    for r in rows:
        f, lt = r.frequency, r.lead_time
        cells = [
            f"<td>{_e(r.service or 'every service')}</td>", f"<td>{_e(r.environment)}</td>",
            f"<td>{f.count if f.count is not None else NO_DATA}</td>",
            f"<td>{NO_DATA if f.per_week is None else f'{f.per_week:.2f}'}</td>", _band_cell(f.band),
            f"<td>{_e(format_seconds(lt.median_seconds))}</td>", f"<td>{_e(format_seconds(lt.p90_seconds))}</td>",
            _band_cell(lt.band),
            _status_cell(format_seconds(r.mttr.mean_seconds), r.mttr.status),
            _status_cell(_pct(r.change_failure_rate.value), r.change_failure_rate.status),
            _status_cell(_pct(r.success_rate.value), r.success_rate.status),
            f"<td>{r.rollbacks.count if r.rollbacks.per_week is not None else NO_DATA}</td>",
            f"<td>{r.deployments.running}</td>",
        ]
        body.append(f"<tr>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<div class="scroll"><table><thead><tr>{header}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _failures_table(rows: Iterable[Deployment]) -> str:
    failed = [d for d in rows if d.finished_at is not None and d.status in ("failed", "rolled_back")]
    failed.sort(key=lambda d: (d.finished_at, d.id), reverse=True)
    if not failed:
        return '<p class="nodata">None in this period.</p>'
    body = []
    for d in failed[:RECENT_FAILURES]:
        assert d.finished_at is not None
        status = "rolled back" if d.status == "rolled_back" else "failed"
        body.append(
            f"<tr><td>{d.finished_at:%Y-%m-%d %H:%M}</td><td>{_e(d.service)}</td><td>{_e(d.environment)}</td>"
            f"<td>{_e(d.kind)}</td><td>{_e(d.version)}</td><td class=\"fail\">{status}</td>"
            f"<td>{_e(d.outcome_reason or '')}</td></tr>")
    more = len(failed) - RECENT_FAILURES
    tail = f'<p class="note">and {more} more (the JSON has them all counted).</p>' if more > 0 else ""
    header = "".join(f"<th>{h}</th>" for h in ("Finished (UTC)", "Service", "Environment", "Kind", "Version",
                                               "Outcome", "Reason"))
    return (f'<div class="scroll"><table><thead><tr>{header}</tr></thead><tbody>{"".join(body)}</tbody>'
            f"</table></div>{tail}")


def _form(data: PageData, q: Filters) -> str:
    def options(values: Sequence[str], chosen: str | None, every: str) -> str:
        out = [f'<option value=""{" selected" if chosen is None else ""}>{_e(every)}</option>']
        out += [f'<option value="{_e(v)}"{" selected" if v == chosen else ""}>{_e(v)}</option>' for v in values]
        return "".join(out)

    # No action: the form reloads this page with its query, whatever prefix the api-server is served under.
    return (
        '<form method="get" class="filters">'
        f'<label>Last <input type="number" name="days" min="1" max="{MAX_DAYS:g}" step="1" '
        f'value="{q.days:g}"> days</label>'
        f'<label>Service <select name="service">{options(data.services, q.service, "every service")}'
        "</select></label>"
        f'<label>Environment <select name="environment">'
        f'{options(data.environments, q.environment, "every environment")}</select></label>'
        '<button type="submit">Show</button></form>')


def render_page(data: PageData, q: Filters) -> str:
    """The whole page (HTML with inline SVG)."""
    report = data.report
    scope = f"service {_e(q.service)}" if q.service else "every service"
    period = (f"Last {q.days:g} days: {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC "
              f"(computed {report.generated_at:%H:%M:%S} UTC; figures are kept up to {cache_seconds():g} s)")
    links = (f'Also as <a href="dora.json?{_e(q.params())}">JSON</a> and as '
             f'<a href="metrics?{_e(q.params())}">Prometheus metrics</a>.')
    targets = ("Targets: deployment success rate " + TARGETS["success_rate"].label + ", MTTR "
               + TARGETS["mttr_seconds"].label + ", change failure rate " + TARGETS["change_failure_rate"].label
               + "; deployment frequency and lead time are rated by DORA's bands (elite, high, medium, low).")
    environments = [q.environment] if q.environment else \
        [*ENVIRONMENTS, *[t.environment for t in report.totals if t.environment not in ENVIRONMENTS]]
    sections = [f'<section><h3>{_e(env)} <span class="scope">({scope})</span></h3>'
                f"{_kpi_cards(report.total(env))}</section>" for env in environments]
    size, buckets = weekly_outcomes(data.rows, report.since, report.until)
    per = "week" if size == 1 else f"{size} weeks"
    body = [
        "<h1>Deployments: DORA metrics</h1>",
        f'<p class="period">{_e(period)}</p>',
        _form(data, q),
        f'<p class="note">{_e(targets)} {links}</p>',
        "<h2>By environment</h2>", *sections,
        f"<h2>Deployments per {_e(per)}</h2>",
        weekly_chart(buckets, size),
        '<p class="note">Deployments of changes (rollback runs apart) by the week they finished, as the '
        "ledger records them: a deployment that a rollback run replaced later counts as rolled back.</p>",
        "<h2>Lead time and MTTR by service</h2>",
        '<div class="charts">',
        duration_chart("Lead time for changes (median; the tick: p90)",
                        [(_row_label(r), r.lead_time.median_seconds, r.lead_time.p90_seconds, r.lead_time.band)
                         for r in report.rows], target=None),
        duration_chart(f"Mean time to recovery (the dashed line: target {TARGETS['mttr_seconds'].label})",
                       [(_row_label(r), r.mttr.mean_seconds, None, r.mttr.status) for r in report.rows],
                       target=TARGETS["mttr_seconds"].threshold),
        "</div>",
        "<h2>By service and environment</h2>", _rows_table(report.rows),
        "<h2>Recent failures and rollbacks</h2>", _failures_table(data.rows),
    ]
    return _document("".join(body))


def _row_label(row: DoraRow) -> str:
    return f"{row.service or 'every service'} / {row.environment}"


STYLE = """
:root { color-scheme: light dark; --fg: #1a202c; --muted: #5a6472; --bg: #ffffff; --card: #f6f8fa;
  --line: #d0d7de; --pass: #1a7f37; --fail: #cf222e; --warn: #bc4c00; --bar: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9aa4af; --bg: #0d1117; --card: #161b22;
  --line: #30363d; --pass: #3fb950; --fail: #f85149; --warn: #db6d28; --bar: #4493f8; } }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); margin: 16px 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 16px 0 6px; } .scope, .period, .note, .detail { color: var(--muted); }
.note { font-size: 12px; }
.filters { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; margin: 12px 0; }
.filters input { width: 5em; } .filters select, .filters input, .filters button { font: inherit; }
.kpis { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 10px; }
.kpi { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.kpi .name { font-size: 12px; color: var(--muted); } .kpi .value { font-size: 22px; font-weight: 600; }
.kpi .detail { font-size: 12px; } .kpi .verdict { font-size: 12px; font-weight: 600; margin-top: 4px; }
.pass, .band-elite, .band-high { color: var(--pass); } .fail, .band-low { color: var(--fail); }
.band-medium { color: var(--warn); } .nodata, .value.nodata { color: var(--muted); font-style: italic; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; } th, td { border-bottom: 1px solid var(--line);
  padding: 4px 10px; text-align: left; white-space: nowrap; } th { color: var(--muted); font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 24px; }
svg { max-width: 100%; height: auto; } svg text { fill: var(--fg); font: 11px system-ui, sans-serif; }
svg .axis { stroke: var(--line); } svg .grid { stroke: var(--line); stroke-dasharray: 2 3; }
svg .succeeded { fill: var(--pass); } svg .failed { fill: var(--fail); } svg .rolled_back { fill: var(--warn); }
svg .bar { fill: var(--bar); } svg .bar.pass { fill: var(--pass); } svg .bar.fail { fill: var(--fail); }
svg .tick { stroke: var(--fg); stroke-width: 2; } svg .target { stroke: var(--fail); stroke-dasharray: 5 4; }
svg text.muted { fill: var(--muted); font-style: italic; } .error { color: var(--fail); }
"""


def _document(body: str) -> str:
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Deployments: DORA metrics</title><style>{STYLE}</style></head><body>{body}</body></html>")


# ------------------------------------------------------------------------------------------------- charts

OUTCOMES = (("succeeded", "succeeded"), ("failed", "failed"), ("rolled_back", "rolled back"))


@dataclass(frozen=True)
class Bucket:
    """Deployments of changes that finished in ``[start, start + size weeks)``, by outcome."""

    start: datetime
    succeeded: int
    failed: int
    rolled_back: int

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.rolled_back


def weekly_outcomes(rows: Iterable[Deployment], since: datetime,
                    until: datetime) -> tuple[int, list[Bucket]]:
    """``(weeks per bucket, buckets)``: weeks from the Monday (UTC) of ``since`` to ``until``, several weeks
    a bucket when there would be more than :data:`MAX_BARS`. Rollback runs and running deployments are left
    out; a status other than succeeded and rolled_back counts as failed (as the KPIs count it)."""
    since, until = since.astimezone(timezone.utc), until.astimezone(timezone.utc)
    first = (since - timedelta(days=since.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    weeks = max(1, math.ceil((until - first) / WEEK))
    size = max(1, math.ceil(weeks / MAX_BARS))
    counts = [[0, 0, 0] for _ in range(math.ceil(weeks / size))]
    for d in rows:
        if d.kind == ROLLBACK_KIND or d.finished_at is None or d.status == "running":
            continue
        index = (d.finished_at - first) // (WEEK * size)
        if 0 <= index < len(counts):
            counts[index][{"succeeded": 0, "rolled_back": 2}.get(d.status, 1)] += 1
    return size, [Bucket(first + WEEK * size * i, *c) for i, c in enumerate(counts)]


def _step(peak: float, ticks: int = 4) -> float:
    """A round step (1, 2 or 5 x 10^n) for about ``ticks`` grid lines up to ``peak``."""
    raw = max(peak, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def weekly_chart(buckets: Sequence[Bucket], size: int) -> str:
    """Stacked bars per bucket: succeeded, failed, rolled back; a title on each bar says its counts."""
    peak = max((b.total for b in buckets), default=0)
    if peak == 0:
        return '<p class="nodata">no data: no deployment finished in this period.</p>'
    width, height, left, right, top, bottom = 760, 250, 36, 12, 12, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    step = max(1, math.ceil(_step(peak)))
    ymax = step * math.ceil(peak / step)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="Deployments per week by outcome">']
    for value in range(0, ymax + 1, step):
        y = top + plot_h - plot_h * value / ymax
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value}</text>')
    slot = plot_w / len(buckets)
    bar = max(1.0, slot * 0.7)
    label_every = math.ceil(len(buckets) / 12)
    for i, b in enumerate(buckets):
        x = left + i * slot + (slot - bar) / 2
        y = top + plot_h
        span = "week" if size == 1 else f"{size} weeks"
        tip = (f"{span} of {b.start:%Y-%m-%d}: {b.succeeded} succeeded, {b.failed} failed, "
               f"{b.rolled_back} rolled back")
        out.append(f"<g><title>{_e(tip)}</title>")
        for css, _ in OUTCOMES:
            count = getattr(b, css)
            if count:
                h = plot_h * count / ymax
                y -= h
                out.append(f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}"/>')
        out.append("</g>")
        if i % label_every == 0:
            out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                       f"{b.start:%m-%d}</text>")
    out.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    x = left
    for css, label in OUTCOMES:  # the legend
        out.append(f'<rect class="{css}" x="{x}" y="{height - 14}" width="10" height="10"/>'
                   f'<text x="{x + 14}" y="{height - 5}">{label}</text>')
        x += 24 + 7 * len(label)
    out.append("</svg>")
    return "".join(out)


def _short(label: str, limit: int = 30) -> str:
    return label if len(label) <= limit else label[:limit - 1] + "\u2026"


def duration_chart(title: str, items: Sequence[tuple[str, float | None, float | None, str | None]], *,
                   target: float | None) -> str:
    """Horizontal bars of a duration per row: ``(label, value, tick, status or band)``; "no data" where the
    value is ``None``; a dashed line at ``target`` when given."""
    known = [v for _, value, tick, _ in items for v in (value, tick) if v is not None]
    heading = f"<h3>{_e(title)}</h3>"
    if not items or not known:
        return f'<div>{heading}<p class="nodata">no data</p></div>'
    label_w, bar_w, row_h, top, bottom = 190, 330, 24, 6, 26
    width, height = label_w + bar_w + 70, top + row_h * len(items) + bottom
    peak = max([*known, *([target * 1.2] if target is not None else [])])
    out = [f'<div>{heading}<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{_e(title)}">']

    def x_of(seconds: float) -> float:
        return label_w + bar_w * seconds / peak

    for fraction in (0.0, 0.5, 1.0):
        x = x_of(peak * fraction)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}"/>'
                   f'<text x="{x:.1f}" y="{height - bottom + 14}" text-anchor="middle">'
                   f"{_e(format_seconds(peak * fraction))}</text>")
    for i, (label, value, tick, status) in enumerate(items):
        y = top + i * row_h
        out.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end"><title>{_e(label)}</title>'
                   f"{_e(_short(label))}</text>")
        if value is None:
            out.append(f'<text class="muted" x="{label_w + 4}" y="{y + 16}">no data</text>')
            continue
        css = {PASS: "bar pass", FAIL: "bar fail"}.get(status or "", "bar")
        tip = f"{label}: {format_seconds(value)}" + (f", p90 {format_seconds(tick)}" if tick is not None else "")
        out.append(f"<g><title>{_e(tip)}</title>"
                   f'<rect class="{css}" x="{label_w}" y="{y + 5}" width="{max(1.0, x_of(value) - label_w):.1f}" '
                   f'height="{row_h - 10}"/>')
        if tick is not None:
            out.append(f'<line class="tick" x1="{x_of(tick):.1f}" x2="{x_of(tick):.1f}" y1="{y + 2}" '
                       f'y2="{y + row_h - 2}"/>')
        end = max(x_of(value), x_of(tick) if tick is not None else 0)
        out.append(f'<text x="{end + 5:.1f}" y="{y + 16}">{_e(format_seconds(value))}</text></g>')
    if target is not None:
        x = x_of(target)
        out.append(f'<line class="target" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}"/>')
    out.append("</svg></div>")
    return "".join(out)


__all__ = ["CACHE", "PROMETHEUS_CONTENT_TYPE", "TTLCache", "router"]
