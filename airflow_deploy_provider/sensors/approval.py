"""Approval of a deployment by people, on Airflow's human-in-the-loop support (3.1+).

Airflow's HITL request takes one answer. An approval policy needs several (every group's ``required``
distinct members), so after each answer the request is renewed: recorded in the ledger, the answer cleared, the
task waiting again (``awaiting_input`` on Airflow 3.3+, no worker slot held) until the policy is met, someone
rejects, or the request expires.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from airflow_deploy_provider.operators.base import DeploymentBaseOperator
from airflow_deploy_provider.operators.lifecycle import NotifyingMixin

APPROVE, REJECT = "Approve", "Reject"


def _same_person(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and str(a).strip().lower() == str(b).strip().lower()


def covered(groups: list[dict[str, Any]], approvers: list[str]) -> dict[str, list[str]]:
    """Which approver counts for which group: a maximum matching of distinct people to the groups' seats
    (``required`` seats per group; a person only for a group they are a member of, any group without members).
    A person counts once, for one group."""
    people: list[str] = []
    for person in approvers:  # a person counts once, however often they answered
        if not any(_same_person(person, p) for p in people):
            people.append(person)
    approvers = people
    seats = [(g["name"], i) for g in groups for i in range(int(g.get("required", 1)))]
    eligible = {name: [s for s, (group, _) in enumerate(seats) if _member(groups, group, name)] for name in approvers}
    seat_of: dict[int, str] = {}

    def assign(person: str, seen: set[int]) -> bool:
        for seat in eligible[person]:
            if seat in seen:
                continue
            seen.add(seat)
            if seat not in seat_of or assign(seat_of[seat], seen):
                seat_of[seat] = person
                return True
        return False

    for person in approvers:
        assign(person, set())
    result: dict[str, list[str]] = {g["name"]: [] for g in groups}
    for seat, person in sorted(seat_of.items()):
        result[seats[seat][0]].append(person)
    return result


def _member(groups: list[dict[str, Any]], group: str, person: str) -> bool:
    members = next((g.get("members") or [] for g in groups if g["name"] == group), [])
    return not members or any(_same_person(m, person) for m in members)


def _can_count(groups: list[dict[str, Any]], missing: dict[str, int], person: str) -> bool:
    """Whether ``person`` is in a group that still needs approvals."""
    return any(missing.get(g["name"]) and _member(groups, g["name"], person) for g in groups)


class ApprovalSensor(NotifyingMixin, DeploymentBaseOperator, HITLOperator):
    """
    Waits for the approvals a policy requires: every group's ``required`` distinct members, a person counting
    once. Whoever triggered the run or authored the commit cannot approve it (separation of duties); people
    outside the groups are not offered the request and are refused. A rejection stops the run with its reason;
    an unanswered request expires after the policy's ``timeout`` and the run fails before anything is deployed.
    Every decision (who, group, when, comment) goes to the ledger and to the notification channel, with the
    link to where to approve.

    People answer in the Airflow UI (the task's required action) or through the REST API
    (``PATCH .../taskInstances/{task_id}/-1/hitlDetails``, ``{"chosen_options": ["Approve"],
    "params_input": {"comment": "..."}}``).

    Template fields: ``deployment_id``, ``version``, ``severity``, ``author``, ``subject``, ``body``.

    :param policies: approval policy (``groups``, ``timeout``) by name; ``default`` or a hotfix severity.
    :param severity: which policy applies (templated); ``default`` unless a hotfix.
    :param version: the version to approve (templated).
    :param author: the commit's author (templated): may not approve.
    :param notification: where decisions are announced.
    """

    template_fields: Sequence[str] = ("deployment_id", "version", "severity", "author", "subject", "body")
    ui_color = "#fbbc04"
    waits_for_people = True
    expected_duration = timedelta(0)

    def __init__(self, *, policies: dict[str, dict[str, Any]], severity: str = "default", version: str = "",
                 author: str | None = None, notification: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("subject", f"Approve: {kwargs.get('service')} {version} to {kwargs.get('environment')}"
                          + (f" ({kwargs['region']})" if kwargs.get("region") else ""))
        super().__init__(options=[APPROVE, REJECT], multiple=False,
                         params={"comment": Param("", type=["null", "string"], maxLength=2000,
                                                  title="Comment", description="Why (recorded and announced).")},
                         **kwargs)
        if not policies:
            raise ValueError(f"{self.task_id}: at least one approval policy is needed")
        for name, policy in policies.items():
            groups = policy.get("groups") or []
            if not groups:
                raise ValueError(f"{self.task_id}: policy {name!r} has no groups")
            for group in groups:
                if group.get("members") and group.get("required", 1) > len(set(group["members"])):
                    raise ValueError(f"{self.task_id}: group {group.get('name')!r} needs more approvals than members")
        self.policies = policies
        self.severity = severity
        self.version = version
        self.author = author
        self.notification = notification

    def describe(self) -> str:
        parts = []
        for name, policy in self.policies.items():
            groups = ", ".join(f"{g.get('required', 1)} x {g['name']}" for g in policy["groups"])
            parts.append(groups if name == "default" else f"{name}: {groups}")
        return "wait for approval: " + "; ".join(parts)

    # ------------------------------------------------------------------------------------------ state

    @property
    def policy(self) -> dict[str, Any]:
        name = self.severity if self.severity in self.policies else "default"
        if name not in self.policies:
            raise AirflowFailException(f"no approval policy for {self.severity!r}; policies: {', '.join(self.policies)}")
        return self.policies[name]

    def _events(self) -> list[Any]:
        return [e for e in self.ledger.events(self.deployment_id, kind="approval") if e.task_id == self.task_id]

    def _approvers(self) -> list[str]:
        return [e.data["user"] for e in self._events() if e.data.get("decision") == "approved"]

    def _deadline(self) -> datetime:
        requested = next((e for e in self._events() if e.data.get("decision") == "requested"), None)
        return datetime.fromisoformat(requested.data["deadline"]) if requested is not None else None  # type: ignore[return-value]

    def _missing(self, groups: list[dict[str, Any]], approvers: list[str]) -> dict[str, int]:
        counted = covered(groups, approvers)
        return {g["name"]: int(g.get("required", 1)) - len(counted[g["name"]]) for g in groups
                if int(g.get("required", 1)) > len(counted[g["name"]])}

    def _excluded(self, context: Any) -> dict[str, str]:
        """People who may not approve, and why."""
        from airflow_deploy_provider.notifications.slack import triggering_user

        out = {}
        who = triggering_user(context)
        if who:
            out[who] = "triggered this run"
        if self.author and str(self.author).strip() not in ("", "None"):
            out.setdefault(str(self.author), "authored the commit")
        return out

    # ------------------------------------------------------------------------------------------ flow

    def execute(self, context: Any) -> Any:
        groups = self.policy["groups"]
        if not self._missing(groups, self._approvers()):  # a retry after the policy was met
            return self._approved(context, groups)
        pending = self._unprocessed_answer(context)
        if pending is not None:  # a try that ended between an answer and its record (a retry picks it up)
            return self.execute_complete(context, pending)
        if self._deadline() is None:
            timeout = self.policy.get("timeout") or timedelta(hours=24)
            if not isinstance(timeout, timedelta):
                timeout = timedelta(seconds=float(timeout))
            deadline = datetime.now(timezone.utc) + timeout
            link = self._link(context)
            self._record(context, "requested", None, f"approval requested: {self._needs(groups)}; until "
                         f"{deadline:%Y-%m-%d %H:%M} UTC" + (f"; approve at {link}" if link else ""),
                         deadline=deadline.isoformat(), link=link, announce=True)
        return self._wait(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        groups = self.policy["groups"]
        if "error" in event:
            if event.get("error_type") == "timeout":
                deadline = self._deadline()
                self._record(context, "expired", None, f"approval request expired (deadline {deadline:%Y-%m-%d %H:%M} "
                             f"UTC) with {self._needs(groups, self._approvers())} still missing; nothing was "
                             "deployed", announce=True)
                raise AirflowFailException("the approval request expired; nothing was deployed")
            raise AirflowFailException(f"approval request failed: {event.get('error')}")
        user = event.get("responded_by_user") or {}
        person = str(user.get("name") or user.get("id") or "")
        choice = (event.get("chosen_options") or [""])[0]
        comment = ((event.get("params_input") or {}).get("comment") or "").strip() or None
        approvers = self._approvers()
        excluded = self._excluded(context)
        why_not = next((f"{person} {why}" for who, why in excluded.items() if _same_person(who, person)), None)
        if choice == REJECT:
            if not any(_member(groups, g["name"], person) for g in groups) and why_not is None:
                self._record(context, "refused", person, f"rejection by {person} refused: not in any approving group "
                             f"({', '.join(g['name'] for g in groups)})", comment=comment)
                return self._wait(context)
            self._record(context, "rejected", person, f"rejected by {person}" + (f": {comment}" if comment else ""),
                         comment=comment, announce=True)
            raise AirflowFailException(f"rejected by {person}" + (f": {comment}" if comment else "") +
                                       "; nothing was deployed")
        if why_not is not None:
            self._record(context, "refused", person, f"approval by {why_not}: refused (separation of duties)",
                         comment=comment, announce=True)
            return self._wait(context)
        if any(_same_person(a, person) for a in approvers):
            self._record(context, "refused", person, f"approval by {person} counted once already; another "
                         "person must approve", comment=comment)
            return self._wait(context)
        missing = self._missing(groups, approvers)
        if not _can_count(groups, missing, person):
            self._record(context, "refused", person, f"approval by {person} refused: not a member of a group that "
                         f"still needs approval ({', '.join(missing)})", comment=comment, announce=True)
            return self._wait(context)
        counted = covered(groups, [*approvers, person])
        group = next((g for g, people in counted.items() if any(_same_person(p, person) for p in people)), None)
        self._record(context, "approved", person, f"approved by {person} ({group})" + (f": {comment}" if comment else "")
                     + f"; {self._needs(groups, [*approvers, person]) or 'policy met'}", group=group, comment=comment,
                     announce=True)
        if self._missing(groups, [*approvers, person]):
            return self._wait(context)
        return self._approved(context, groups)

    def _unprocessed_answer(self, context: Any) -> dict[str, Any] | None:
        """An answer given to this task's request but not recorded yet, as a resume event."""
        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail

        try:
            detail = get_hitl_detail_content_detail(context["task_instance"].id)
        except Exception:  # no request yet (first try)
            return None
        if not detail.response_received or detail.responded_at is None:
            return None
        recorded = [datetime.fromisoformat(e.data["at"]) for e in self._events() if e.data.get("at")]
        if recorded and max(recorded) >= detail.responded_at:
            return None
        user = detail.responded_by_user
        return {"chosen_options": detail.chosen_options or [], "params_input": detail.params_input or {},
                "responded_at": detail.responded_at,
                "responded_by_user": {"id": user.id, "name": user.name} if user is not None else {}}

    def _approved(self, context: Any, groups: list[dict[str, Any]]) -> dict[str, Any]:
        counted = covered(groups, self._approvers())
        self.log.info("approval policy met: %s", counted)
        return {"approved_by": counted}

    def _wait(self, context: Any) -> Any:
        """(Re)open the request until the deadline. Airflow keeps one request per task instance: renewing it
        clears the last answer but keeps its text and assignees, so both are written for the whole policy (the
        progress is in the ledger, the log and the notifications)."""
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        groups = self.policy["groups"]
        remaining = self._deadline() - datetime.now(timezone.utc)
        if remaining <= timedelta(0):
            return self.execute_complete(context, {"error": "timeout", "error_type": "timeout"})
        excluded = self._excluded(context)
        self.body = (f"**{self.service} {self.version}** to **{self.environment}**"
                     + (f" ({self.region})" if self.region else "")
                     + f"\n\nNeeded: {self._needs(groups)}, by distinct people."
                     + "\n\nNot allowed to approve: "
                     + (", ".join(f"{who} ({why})" for who, why in excluded.items()) or "nobody") + ".")
        allowed = None
        if all(g.get("members") for g in groups):  # only members are offered the request (others get HTTP 403)
            allowed = sorted({m for g in groups for m in g["members"]
                              if not any(_same_person(m, x) for x in excluded)})
            approvers = self._approvers()
            missing = self._missing(groups, approvers)
            if not any(_can_count(groups, missing, m) and not any(_same_person(m, a) for a in approvers)
                       for m in allowed):
                self._record(context, "expired", None, "nobody left who may approve: "
                             f"{self._needs(groups, approvers)} missing", announce=True)
                raise AirflowFailException("nobody left who may approve; nothing was deployed")
        upsert_hitl_detail(ti_id=context["task_instance"].id, options=self.options, subject=self.subject,
                           body=self.body, defaults=None, multiple=False, params=self.serialized_params,
                           assigned_users=[{"id": m, "name": m} for m in allowed] if allowed else None)
        return self._park(context, remaining)

    def _park(self, context: Any, remaining: timedelta) -> Any:
        try:
            from airflow.sdk.exceptions import TaskAwaitingInput
        except ImportError:  # Airflow < 3.3: the HITL trigger waits in the triggerer
            from airflow.providers.standard.triggers.hitl import HITLTrigger

            self.defer(trigger=HITLTrigger(ti_id=context["task_instance"].id, options=self.options, defaults=None,
                                           params=self.serialized_params, multiple=False,
                                           timeout_datetime=datetime.now(timezone.utc) + remaining),
                       method_name="execute_complete")
        # Airflow 3.3+: the task waits in ``awaiting_input``, resumed by the answer or the scheduler's timeout.
        raise TaskAwaitingInput(method_name="execute_complete", timeout=remaining)

    # ------------------------------------------------------------------------------------------ output

    def _needs(self, groups: list[dict[str, Any]], approvers: list[str] | None = None) -> str:
        missing = self._missing(groups, approvers or [])
        return ", ".join(f"{n} x {name}" for name, n in missing.items())

    def _link(self, context: Any) -> str | None:
        try:
            return self.generate_link_to_ui_from_context(context=context)
        except Exception:  # no [api] base_url: the run's page is the next best thing
            from airflow_deploy_provider.notifications.slack import run_url

            dag_run = context.get("dag_run")
            return run_url(getattr(dag_run, "dag_id", None), getattr(dag_run, "run_id", None))

    def _record(self, context: Any, decision: str, person: str | None, message: str, *, announce: bool = False,
                **data: Any) -> None:
        from airflow_deploy_provider.notifications.slack import DeploymentMessage

        number = len(self._events())
        self.record("approval", message, data={"decision": decision, "user": person, "at": datetime.now(
            timezone.utc).isoformat(), "policy": self.severity, **data})
        if announce:
            link = data.get("link") or self._link(context)
            msg = DeploymentMessage(event="approval", service=self.service, environment=self.environment,
                                    region=self.region, version=self.version, who=person, reason=message,
                                    run_url=link)
            self.log.info("approval notification: %s", self.notify("approval", msg, context,
                                                                   key=f"approval:{self.task_id}:{number}"))
