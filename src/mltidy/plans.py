"""Plan files: apply exactly what a person reviewed, nothing more.

``mltidy close -f json > plan.json`` writes the plan (the dry run's JSON); ``mltidy close
--plan plan.json --yes`` applies exactly the changes it lists. Each is still a compare-and-set:
a record that ended, went away or logged new activity since the plan is reported and left alone.
The same holds for ``declutter`` (the runs the plan would delete, each re-read first) and
``link`` (the pairs the plan would write, left alone when they pair or link differently now).

A plan file is the command's JSON output with ``"dry_run": true`` (docs/close.md describes it):
``version`` (the JSON contract's, :data:`PLAN_VERSION`), ``command``, and ``stores`` with the
stores' identities. The stores are those of the plan: a file store is opened by its identity (an
absolute path); a server needs its URI given again (``--mlflow``/``--optuna``, the environment
or the config file), since credentials are never written into a plan.

Size: loading, checking and re-checking a plan file belong together: splitting would separate the
plan's format from the checks that make applying it safe.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mltidy import names
from mltidy.backends.identity import local_path, store_spec
from mltidy.backends.interface import RunDeclutterer
from mltidy.backends.session import StoreSession
from mltidy.close import Change, CloseOptions, CloseReport, Skip, newer_activity
from mltidy.declutter import DeclutterReport, RunAction, RunDecision, judge_contents
from mltidy.errors import StoreError, UsageError
from mltidy.linking.link import LinkChange, LinkReport
from mltidy.linking.pairing import Unmatched
from mltidy.model import (
    Basis,
    JudgedRecord,
    Record,
    RecordKind,
    Selection,
    StoreId,
    StoreKind,
    StoreSpec,
    TrialRef,
    Verdict,
    VerdictKind,
)

#: The version of the JSON contract plan files follow (docs/json.md).
PLAN_VERSION = 2
COMMANDS = ("close", "declutter", "link")


@dataclass(frozen=True)
class Plan:
    """A plan file, read and checked.

    Attributes:
        path: where it was read from.
        command: the command that wrote it (``close``, ``declutter``, ``link``).
        stores: the stores it names, by kind and identity.
        data: the whole document.
    """

    path: Path
    command: str
    stores: tuple[tuple[StoreKind, StoreId], ...]
    data: Mapping[str, Any]

    def fail(self, what: str) -> UsageError:
        """An error about this plan file."""
        return UsageError(
            f"{self.path}: {what}",
            hint=f"write a plan with: mltidy {self.command} -f json > {self.path.name}",
        )


def load(path: Path, command: str) -> Plan:
    """Read a plan file written by ``mltidy COMMAND -f json`` (a dry run).

    Raises:
        UsageError: unreadable, not JSON, another command's, another version, or a report of
            changes already applied rather than a plan.
    """
    hint = f"write one with: mltidy {command} -f json > {path.name}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the plan {path} ({exc.strerror or exc})", hint=hint) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a plan: not JSON ({exc})", hint=hint) from exc
    if not isinstance(data, dict) or ("error" in data and len(data) == 1):
        raise UsageError(f"{path} is not a plan", hint=hint)
    if data.get("command") != command:
        found = data.get("command")
        what = f"a plan of mltidy {found}" if found in COMMANDS else "not a plan of mltidy"
        raise UsageError(f"{path} is {what}, not of mltidy {command}", hint=hint)
    if data.get("version") != PLAN_VERSION:
        raise UsageError(
            f"{path} is a plan of version {data.get('version')!r}; this mltidy reads version "
            f"{PLAN_VERSION}",
            hint=hint,
        )
    if data.get("dry_run") is not True:
        raise UsageError(f"{path} reports changes already made; it is not a plan", hint=hint)
    plan = Plan(path, command, (), data)
    stores: list[tuple[StoreKind, StoreId]] = []
    for entry in _list(plan, "stores"):
        try:
            stores.append((StoreKind(entry["kind"]), StoreId(str(entry["uri"]))))
        except (KeyError, TypeError, ValueError):
            raise plan.fail(f"a store entry is not of the form {{uri, kind}}: {entry!r}") from None
    return dataclasses.replace(plan, stores=tuple(stores))


def _list(plan: Plan, key: str) -> list[Any]:
    value = plan.data.get(key)
    if not isinstance(value, list):
        raise plan.fail(f"{key!r} is missing or not a list")
    return value


def session_specs(
    plan: Plan, given: Sequence[StoreSpec], cwd: Path | None = None
) -> list[StoreSpec]:
    """The stores the plan names, as specs: the given spec of the same identity (it carries the
    credentials), else, for a file store, its identity itself (an absolute path).

    Raises:
        UsageError: the plan names a server that was not given.
    """
    by_key = {spec.key: spec for spec in given}
    specs: list[StoreSpec] = []
    for kind, identity in plan.stores:
        spec = by_key.get((kind, identity))
        if spec is None and local_path(kind, identity) is not None:
            spec = store_spec(kind, identity, f"plan {plan.path.name}", cwd)
        if spec is None:
            option = "--mlflow" if kind is StoreKind.MLFLOW else "--optuna"
            raise UsageError(
                f"{plan.path} names the {kind.value} store {identity}, which is not among the "
                "stores given",
                hint=f"give its URI (with credentials) with {option}, or set it in the "
                "environment or the config file",
            )
        specs.append(spec)
    return specs


def _time(plan: Plan, value: object, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise plan.fail(f"{field} is not a time: {value!r}") from None


def _store(plan: Plan, kind: RecordKind, identity: object) -> StoreId:
    store_kind = StoreKind.MLFLOW if kind is RecordKind.MLFLOW_RUN else StoreKind.OPTUNA
    if (store_kind, identity) not in plan.stores:
        raise plan.fail(f"a change names the store {identity!r}, which its stores do not list")
    return StoreId(str(identity))


# -- close --------------------------------------------------------------------------------


def close_report(plan: Plan) -> tuple[CloseReport, CloseOptions]:
    """The planned changes of a close plan, and the options applying them takes.

    Raises:
        UsageError: a change that is not of the documented form.
    """
    changes: list[Change] = []
    retry = False
    max_retry: int | None = None
    for entry in _list(plan, "changes"):
        try:
            change = _change(plan, entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise plan.fail(f"a change is not of the documented form ({exc!r})") from None
        if entry.get("status") != "planned":
            continue
        changes.append(change)
        if change.retry:
            retry = True
            max_retry = entry.get("max_retry")
    options = CloseOptions(explicit=True, retry=retry, max_retry=max_retry)
    return CloseReport((), tuple(changes), (), dry_run=True), options


def _change(plan: Plan, entry: Mapping[str, Any]) -> Change:
    kind = RecordKind(entry["kind"])
    beat = entry.get("heartbeat_at")
    record = Record(
        kind=kind,
        store=_store(plan, kind, entry["store"]),
        id=str(entry["id"]),
        name=str(entry["name"]),
        container=str(entry["container"]),
        container_id="",
        state=str(entry["state"]),
        started_at=_time(plan, entry.get("started_at"), "started_at"),
        last_activity_at=_time(plan, entry.get("last_activity_at"), "last_activity_at"),
        trial_number=entry.get("trial_number"),
        tags={names.HEARTBEAT_AT: str(beat)} if beat else {},
    )
    verdict = Verdict(VerdictKind(entry["verdict"]), str(entry["reason"]), Basis(entry["basis"]))
    end_time = _time(plan, entry["end_time"], "end_time")
    if end_time is None:
        raise ValueError("end_time is null")
    return Change(
        JudgedRecord(record, verdict, entry.get("url")),
        str(entry["new_state"]),
        end_time,
        forced=bool(entry.get("forced", False)),
        retry=bool(entry.get("retry", False)),
    )


def recheck(session: StoreSession, report: CloseReport) -> CloseReport:
    """A plan as it stands now, without changing anything: each record read again; those that
    ended, went away or logged new activity since the plan are left alone, and say why."""
    changes: list[Change] = []
    skipped: list[Skip] = list(report.skipped)
    for change in report.changes:
        record = change.item.record
        backend = session.backend(record.store_key)
        if backend is None:
            skipped.append(
                Skip(change.item, session.status(record.store_key).error or "unreadable")
            )
            continue
        try:
            fresh = backend.read(record.id)
        except StoreError as exc:
            session.fail(record.store_key, exc)
            skipped.append(Skip(change.item, exc.message))
            continue
        why = changed_since(record, fresh)
        if why is None:
            changes.append(change)
        else:
            skipped.append(Skip(change.item, why))
    return dataclasses.replace(
        report, stores=session.statuses(), changes=tuple(changes), skipped=tuple(skipped)
    )


def changed_since(planned: Record, fresh: Record | None) -> str | None:
    """Why a planned record may no longer be closed, or ``None`` when it is as planned."""
    if fresh is None:
        return "changed since the plan: gone from the store"
    if fresh.state != planned.state:
        return f"changed since the plan: now {fresh.state}"
    if newer_activity(fresh, planned):
        return "changed since the plan: new activity"
    return None


# -- declutter ------------------------------------------------------------------------------


def declutter_report(plan: Plan, session: StoreSession, now: datetime) -> DeclutterReport:
    """The deletions a declutter plan lists, each checked again against the store: a run no
    longer a closed, empty run of mltidy's is kept, and says why.

    Raises:
        UsageError: an entry that is not of the documented form.
    """
    wanted: dict[tuple[StoreId, str], Mapping[str, Any]] = {}
    for entry in _list(plan, "runs"):
        if not isinstance(entry, dict) or "id" not in entry or "store" not in entry:
            raise plan.fail(f"a run entry is not of the documented form: {entry!r}")
        if entry.get("action") == RunAction.DELETE.value:
            wanted[(_store(plan, RecordKind.MLFLOW_RUN, entry["store"]), str(entry["id"]))] = entry
    found: dict[tuple[StoreId, str], RunDecision] = {}
    stores = {store for store, _ in wanted}
    for spec, backend in session.backends(StoreKind.MLFLOW):
        if spec.id not in stores or not isinstance(backend, RunDeclutterer):
            continue
        try:
            for contents in backend.iter_closed_runs(Selection()):
                key = (spec.id, contents.record.id)
                if key in wanted:
                    action, why = judge_contents(contents, now)
                    if action is not RunAction.DELETE:
                        why = f"changed since the plan: {why}"
                    found[key] = RunDecision(contents, action, why, spec.id)
        except StoreError as exc:
            session.fail(spec.key, exc)
    decisions = [found[key] for key in wanted if key in found]
    gone = [
        key for key in wanted if key not in found and not session.failed((StoreKind.MLFLOW, key[0]))
    ]
    if gone:
        # Still reported: what the plan said, and that it is no longer so.
        decisions += [_gone(plan, wanted[key], key[0]) for key in gone]
    return DeclutterReport(session.statuses(), tuple(decisions), (), dry_run=True)


def _gone(plan: Plan, entry: Mapping[str, Any], store: StoreId) -> RunDecision:
    from mltidy.model import RunContents

    record = Record(
        kind=RecordKind.MLFLOW_RUN,
        store=store,
        id=str(entry["id"]),
        name=str(entry.get("name", entry["id"])),
        container=str(entry.get("container", "")),
        container_id="",
        state=str(entry.get("state", "")),
        started_at=None,
    )
    contents = RunContents(record, _time(plan, entry.get("closed_at"), "closed_at"), 0, 0, 0)
    why = "changed since the plan: no longer a finished run that mltidy closed"
    return RunDecision(contents, RunAction.KEEP, why, store)


# -- link -------------------------------------------------------------------------------------

#: A pair as a link plan names it: (Optuna store, trial id, MLflow store, run id).
PairKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class LinkPlan:
    """What a link plan would write."""

    pairs: dict[PairKey, Mapping[str, Any]]
    studies: tuple[str, ...]


def link_plan(plan: Plan) -> LinkPlan:
    """The pairs a link plan would write.

    Raises:
        UsageError: an entry that is not of the documented form.
    """
    pairs: dict[PairKey, Mapping[str, Any]] = {}
    for entry in _list(plan, "pairs"):
        try:
            key = (
                str(entry["optuna_store"]),
                str(entry["trial_id"]),
                str(entry["mlflow_store"]),
                str(entry["run_id"]),
            )
            planned = entry["status"] == "planned"
        except (KeyError, TypeError):
            raise plan.fail(f"a pair is not of the documented form: {entry!r}") from None
        if planned:
            _store(plan, RecordKind.OPTUNA_TRIAL, key[0])
            _store(plan, RecordKind.MLFLOW_RUN, key[2])
            pairs[key] = entry
    return LinkPlan(pairs, tuple(sorted({str(e["study"]) for e in pairs.values()})))


def pair_key(change: LinkChange) -> PairKey:
    """A pair as a link plan names it."""
    trial, run = change.pair.trial, change.pair.run
    return (trial.store, trial.trial_id, run.store, run.run_id)


def keep_planned(report: LinkReport, planned: LinkPlan) -> LinkReport:
    """Only the pairs of the plan, each still pairing and linking as planned; the others are
    reported as changed since the plan."""
    kept: list[LinkChange] = []
    changed: list[Unmatched] = []
    seen: set[PairKey] = set()
    for change in report.changes:
        key = pair_key(change)
        entry = planned.pairs.get(key)
        if entry is None:
            continue
        seen.add(key)
        if (change.run_url, change.dashboard_url) != (
            entry.get("mlflow_run_url"),
            entry.get("dashboard_url"),
        ):
            why = (
                "changed since the plan: the links would differ (another --mlflow-ui or "
                "--dashboard-url?)"
            )
            changed.append(Unmatched(change.pair.trial, why))
            continue
        kept.append(change)
    for key, entry in planned.pairs.items():
        if key not in seen:
            changed.append(Unmatched(_trial(entry), "changed since the plan: no longer this pair"))
    return dataclasses.replace(
        report,
        changes=tuple(kept),
        unmatched=(*changed,),
        without_run=(),
    )


def _trial(entry: Mapping[str, Any]) -> TrialRef:
    return TrialRef(
        store=StoreId(str(entry["optuna_store"])),
        study=str(entry.get("study", "")),
        study_id="",
        trial_id=str(entry["trial_id"]),
        number=int(entry.get("trial_number", -1)),
        state="",
        started_at=None,
        run_id_user_attr=None,
        run_id_system_attr=None,
        run_url=None,
        note="",
    )


__all__ = [
    "PLAN_VERSION",
    "LinkPlan",
    "Plan",
    "changed_since",
    "close_report",
    "declutter_report",
    "keep_planned",
    "link_plan",
    "load",
    "pair_key",
    "recheck",
    "session_specs",
]
