"""Documentation steps: release notes from the commits of a release, and the configuration changes it brings.

``release-notes`` lists the commits between the previous version's commit (from the ledger) and this one,
grouped by their conventional-commit type (``feat``, ``fix``, the rest), from the git repository that holds the
service folder (only commits touching that folder when the repository holds several services). The notes are
written to the step's report folder as ``release-notes-<version>.md``; the ledger's step event names the file,
which is what the production checklist's ``releaseNotes`` item looks for.

``document-config-changes`` diffs the service's ``.deploy`` files against those of the previous version. Each
run records a snapshot of the files in the ledger (a ``config`` event; ``.deploy`` files hold no secrets by
design); the previous version's snapshot is the one compared with, or, for a version deployed before snapshots
existed, the files at its commit in git. The diff is written as ``config-changes-<version>.diff``.

Both post a short summary to Slack when the service has ``notifications.slack``, once per deployment (a retry
does not post again).
"""

from __future__ import annotations

import difflib
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_deploy_provider.steps import StepContext, StepError, StepResult, safe_name

#: Commits listed when the previous version's commit is unknown.
FALLBACK_COMMITS = 20
#: Lines of the notes or the diff shown in the Slack message.
SLACK_LINES = 15
#: Largest snapshot kept in the ledger (bytes of all files together); larger ones are compared but not stored.
MAX_SNAPSHOT = 256 * 1024
GROUPS = (("feat", "Features"), ("fix", "Fixes"), ("other", "Other changes"))
CONVENTIONAL = re.compile(r"^(?P<type>[A-Za-z]+)(?:\((?P<scope>[^)]*)\))?(?P<bang>!)?:\s*(?P<text>\S.*)$")


# ---------------------------------------------------------------------------------------------------- git


def git(repo: Path, *args: str) -> str:
    """Output of ``git <args>`` in ``repo``; a failure is a StepError with git's message."""
    try:
        proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise StepError("git not found on the worker's PATH") from None
    if proc.returncode != 0:
        raise StepError(f"git {args[0]} failed: {(proc.stderr or proc.stdout).strip()[:400]}")
    return proc.stdout


def repository(service_root: Path) -> Path:
    """The root of the git repository holding the service folder."""
    if not service_root.is_dir():
        raise StepError(f"service folder {service_root} does not exist")
    try:
        return Path(git(service_root, "rev-parse", "--show-toplevel").strip())
    except StepError:
        raise StepError(f"the service folder {service_root} is not in a git repository: release notes and "
                        "configuration history come from git") from None


def has_commit(repo: Path, sha: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=repo, capture_output=True,
                          timeout=60).returncode == 0


@dataclass
class Commit:
    sha: str
    author: str
    subject: str
    body: str

    @property
    def parsed(self) -> tuple[str, str | None, str, bool]:
        """(group, scope, text, breaking) of a conventional-commit subject; other subjects are ``other``."""
        match = CONVENTIONAL.match(self.subject)
        breaking = "BREAKING CHANGE" in self.body or "BREAKING-CHANGE" in self.body
        if not match:
            return "other", None, self.subject, breaking
        kind = match["type"].lower()
        group = kind if kind in ("feat", "fix") else "other"
        text = match["text"] if group != "other" else self.subject
        return group, match["scope"] if group != "other" else None, text, breaking or bool(match["bang"])


def commits(repo: Path, revisions: Sequence[str], paths: Sequence[str] = ()) -> list[Commit]:
    """Commits of ``git log --no-merges <revisions> [-- paths]``, newest first."""
    out = git(repo, "log", "--no-merges", "--format=%H%x1f%an%x1f%s%x1f%b%x1e", *revisions, "--", *paths)
    found = []
    for record in out.split("\x1e"):
        fields = record.strip("\n").split("\x1f")
        if len(fields) == 4:
            found.append(Commit(*fields))
    return found


def service_paths(repo: Path, service_root: Path) -> list[str]:
    """The service folder relative to the repository: a repository holding several services lists only the
    commits touching this one."""
    rel = service_root.resolve().relative_to(repo.resolve())
    return [] if str(rel) == "." else [str(rel)]


# ---------------------------------------------------------------------------------------------------- Slack


def post(ctx: StepContext, key: str, text: str, lines: Sequence[str], footer: str = "") -> str:
    """Post a summary through the slack provider's incoming-webhook notifier (as deployment notifications are),
    once per deployment; returns what happened."""
    settings = ctx.notification or {}
    conn_id = settings.get("slack_conn_id")
    if not conn_id:
        return "not posted (no notifications.slack)"
    if ctx.ledger is not None and any(e.data.get("key") == key for e in
                                      ctx.ledger.events(ctx.deployment_id, kind="notification")):
        return "already posted by an earlier try"
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}]
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}})
    if footer:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footer[:300]}]})
    try:
        SlackWebhookNotifier(slack_webhook_conn_id=conn_id, text=text, blocks=blocks).notify({})
    except Exception as exc:  # noqa: BLE001 - the webhook refused or could not be reached
        raise StepError(f"posting to Slack failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    if ctx.ledger is not None:
        ctx.ledger.record_event(ctx.deployment_id, "notification", text, data={
            "key": key, "event": ctx.step, "channel": settings.get("channel")})
    return "posted to " + (settings.get("channel") or "Slack")


# ------------------------------------------------------------------------------------------- release notes


def render_notes(ctx: StepContext, found: list[Commit], scope: str) -> str:
    """Markdown: a title, where the commits come from, then breaking changes, features, fixes, the rest."""
    lines = [f"# {ctx.service} {ctx.version}", "", f"{scope}.", ""]
    breaking = [c for c in found if c.parsed[3]]
    if breaking:
        lines += ["## Breaking changes", ""] + [_item(c) for c in breaking] + [""]
    for group, title in GROUPS:
        items = [_item(c) for c in found if c.parsed[0] == group]
        if items:
            lines += [f"## {title}", ""] + items + [""]
    if not found:
        lines += ["No commits.", ""]
    return "\n".join(lines)


def _item(c: Commit) -> str:
    _, scope, text, _ = c.parsed
    return f"- {f'**{scope}:** ' if scope else ''}{text} ({c.sha[:7]}, {c.author})"


def release_notes(ctx: StepContext) -> StepResult:
    """Release notes of ``ctx.version``: the commits since the previous version's commit, grouped by type."""
    if not ctx.commit:
        raise StepError("the release has no commit sha, so there are no commits to list (start the run with "
                        "the version's commit)")
    repo = repository(ctx.service_root)
    if not has_commit(repo, ctx.commit):
        raise StepError(f"commit {ctx.commit} is not in the repository at {repo} (fetch it first)")
    paths = service_paths(repo, ctx.service_root)
    previous = ctx.previous_commit
    if previous and has_commit(repo, previous):
        found = commits(repo, [f"{previous}..{ctx.commit}"], paths)
        scope = (f"Commits since {ctx.previous_version or 'the previous version'} ({previous[:7]}) up to "
                 f"{ctx.commit[:7]}")
    else:
        found = commits(repo, ["-n", str(FALLBACK_COMMITS), ctx.commit], paths)
        why = (f"the previous version's commit {previous[:7]} is not in the repository" if previous else
               "the previous version's commit is unknown")
        scope = f"The last {len(found)} commits up to {ctx.commit[:7]}: {why}"
    text = render_notes(ctx, found, scope)
    ctx.reports_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.reports_dir / f"release-notes-{safe_name(ctx.version)}.md"
    path.write_text(text)
    counts = {group: sum(1 for c in found if c.parsed[0] == group) for group, _ in GROUPS}
    summary = (f"{len(found)} commit(s): {counts['feat']} feature(s), {counts['fix']} fix(es), "
               f"{counts['other']} other")
    items = [line for line in text.splitlines() if line.startswith("- ")]
    shown = items[:SLACK_LINES] + ([f"... and {len(items) - SLACK_LINES} more"] if len(items) > SLACK_LINES else [])
    posted = post(ctx, f"release-notes:{ctx.version}",
                  f"*Release notes: {ctx.service} {ctx.version}* ({ctx.environment}): {summary}", shown,
                  footer=scope)
    ctx.log.info("Release notes of %s written to %s; %s", ctx.version, path, posted)
    return StepResult(ok=True, summary=f"{summary}; {posted}", changed=True,
                      artifacts={"release_notes": str(path)},
                      data={"commits": len(found), "groups": counts, "scope": scope, "posted": posted})


# ----------------------------------------------------------------------------------- configuration changes


def deploy_files(service_root: Path) -> dict[str, str]:
    """The service's ``.deploy/*.yaml`` (and ``*.yml``) files: name -> text."""
    folder = service_root / ".deploy"
    if not folder.is_dir():
        return {}
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in (".yaml", ".yml")}


def previous_files(ctx: StepContext) -> tuple[dict[str, str] | None, str]:
    """The previous version's ``.deploy`` files and where they came from: its ledger snapshot (this
    environment's first), else the files at its commit in git; ``None`` when neither is known."""
    if not ctx.previous_version:
        return None, "no previous version"
    if ctx.ledger is not None:
        snapshots = [e for e in ctx.ledger.service_events(ctx.service, "config")
                     if e.data.get("version") == ctx.previous_version and e.deployment_id != ctx.deployment_id
                     and isinstance(e.data.get("files"), dict)]
        if snapshots:
            best = max(snapshots, key=lambda e: (e.data.get("environment") == ctx.environment, e.at))
            return best.data["files"], (f"the snapshot recorded when {ctx.previous_version} was deployed to "
                                        f"{best.data.get('environment')}")
    if ctx.previous_commit:
        try:
            repo = repository(ctx.service_root)
        except StepError:
            return None, f"no snapshot of {ctx.previous_version} and no git repository"
        if has_commit(repo, ctx.previous_commit):
            rel = "/".join([*service_paths(repo, ctx.service_root), ".deploy"])
            listed = git(repo, "ls-tree", "--name-only", f"{ctx.previous_commit}:{rel}").split() \
                if _tree_exists(repo, ctx.previous_commit, rel) else []
            files = {name: git(repo, "show", f"{ctx.previous_commit}:{rel}/{name}") for name in listed
                     if name.endswith((".yaml", ".yml"))}
            return files, f"git at {ctx.previous_version}'s commit {ctx.previous_commit[:7]}"
    return None, f"no snapshot of {ctx.previous_version} and its commit is unknown"


def _tree_exists(repo: Path, sha: str, rel: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{sha}:{rel}"], cwd=repo, capture_output=True,
                          timeout=60).returncode == 0


def diff_files(before: dict[str, str], after: dict[str, str], old: str, new: str) -> tuple[str, list[str]]:
    """A unified diff of every changed file, and one line per file (``service.yaml: +2 -1``)."""
    parts: list[str] = []
    stats: list[str] = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        lines = list(difflib.unified_diff((a or "").splitlines(keepends=True), (b or "").splitlines(keepends=True),
                                          fromfile=f"a/.deploy/{name} ({old})" if a is not None else "/dev/null",
                                          tofile=f"b/.deploy/{name} ({new})" if b is not None else "/dev/null"))
        lines = [line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines]
        parts.append("".join(lines))
        added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
        removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
        state = " (new file)" if a is None else " (deleted)" if b is None else ""
        stats.append(f"{name}{state}: +{added} -{removed}")
    return "".join(parts), stats


def record_snapshot(ctx: StepContext, files: dict[str, str]) -> str:
    """Keep this version's ``.deploy`` files in the ledger (once per deployment) for later comparisons."""
    if ctx.ledger is None:
        return "no ledger: snapshot not kept"
    if any(e.data.get("version") == ctx.version for e in ctx.ledger.events(ctx.deployment_id, kind="config")):
        return "snapshot already kept by an earlier try"
    if sum(len(t.encode()) for t in files.values()) > MAX_SNAPSHOT:
        return f"snapshot larger than {MAX_SNAPSHOT // 1024} KiB: not kept"
    ctx.ledger.record_event(ctx.deployment_id, "config", f".deploy files of {ctx.version} ({len(files)})",
                            data={"version": ctx.version, "environment": ctx.environment, "files": files})
    return "snapshot kept"


def config_changes(ctx: StepContext) -> StepResult:
    """The ``.deploy`` changes between the previous version and ``ctx.version``, as a unified diff."""
    current = deploy_files(ctx.service_root)
    if not current:
        raise StepError(f"no .deploy/*.yaml files in {ctx.service_root}")
    kept = record_snapshot(ctx, current)
    before, source = previous_files(ctx)
    data: dict[str, Any] = {"files": sorted(current), "compared_with": source, "snapshot": kept}
    if before is None:
        return StepResult(ok=True, summary=f"nothing to compare with ({source}); {kept}", changed=False, data=data)
    diff, stats = diff_files(before, current, ctx.previous_version or "previous", ctx.version)
    data["changed_files"] = stats
    if not diff:
        return StepResult(ok=True, summary=f"no configuration changes since {ctx.previous_version}; {kept}",
                          changed=False, data=data)
    ctx.reports_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.reports_dir / f"config-changes-{safe_name(ctx.version)}.diff"
    path.write_text(diff)
    summary = f"{len(stats)} file(s) changed since {ctx.previous_version}: {', '.join(stats)}"
    excerpt = diff.splitlines()[:SLACK_LINES * 2]
    posted = post(ctx, f"config-changes:{ctx.version}",
                  f"*Configuration changes: {ctx.service} {ctx.version}* ({ctx.environment}): {summary}",
                  ["```" + "\n".join(excerpt)[:2800] + "\n```"], footer=f"compared with {source}")
    return StepResult(ok=True, summary=f"{summary}; {posted}; {kept}", changed=True,
                      artifacts={"config_changes": str(path)}, data={**data, "posted": posted})



