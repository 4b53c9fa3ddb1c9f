"""``declutter``: soft-delete the empty runs mltidy closed, and report failed trials per study.

Only runs that mltidy closed (they carry ``mltidy.closed_at``), that hold nothing (no metrics,
no params, no artifacts) and that were closed longer ago than ``older_than`` are deleted, and
only softly: MLflow's ``deleted`` lifecycle stage, which ``mlflow runs restore`` reverses.
Optuna cannot delete trials; for studies mltidy reports what failed and zombie trials cost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from mltidy.backends.interface import RunDeclutterer, StudyReporter
from mltidy.backends.session import StoreSession
from mltidy.durations import format_duration
from mltidy.errors import StoreError
from mltidy.model import RunContents, Selection, StoreId, StoreKind, StoreStatus, StudyHealth
from mltidy.scope import Named, Scope, select_named
from mltidy.text import shell_word


class RunAction(str, Enum):
    """What declutter does with one closed run."""

    DELETE = "delete"
    DELETED = "deleted"
    KEEP = "keep"
    FAILED = "failed"


@dataclass(frozen=True)
class RunDecision:
    """One closed run and what declutter does with it, and why."""

    contents: RunContents
    action: RunAction
    why: str
    store: StoreId


@dataclass(frozen=True)
class DeclutterReport:
    """What declutter found, did or would do."""

    stores: tuple[StoreStatus, ...]
    runs: tuple[RunDecision, ...]
    studies: tuple[tuple[StoreId, StudyHealth], ...]
    dry_run: bool
    missing: tuple[str, ...] = ()
    """Ids given with ``--run``/``--trial`` that named no closed run or study."""

    @property
    def failed(self) -> tuple[RunDecision, ...]:
        """Deletions that did not happen."""
        return tuple(r for r in self.runs if r.action is RunAction.FAILED)


def judge_contents(
    contents: RunContents, now: datetime, older_than: timedelta = timedelta(0)
) -> tuple[RunAction, str]:
    """Delete or keep one closed run, and why: only empty runs mltidy closed, closed longer
    ago than ``older_than``."""
    held = [
        f"{count} {noun}{'' if count == 1 else 's'}"
        for count, noun in (
            (contents.metrics, "metric"),
            (contents.params, "param"),
            (contents.artifacts or 0, "artifact"),
        )
        if count
    ]
    if held:
        return RunAction.KEEP, "holds " + ", ".join(held)
    if contents.artifacts is None:
        return RunAction.KEEP, (
            "its artifacts were not checked (a remote artifact store, or a location that is not "
            "the run's own folder)"
        )
    if contents.closed_at is None:
        return RunAction.KEEP, "no readable mltidy.closed_at"
    age = now - contents.closed_at
    if age < older_than:
        return (
            RunAction.KEEP,
            f"closed {format_duration(age)} ago, younger than --older-than "
            f"{format_duration(older_than)}",
        )
    return RunAction.DELETE, f"empty, closed by mltidy {format_duration(age)} ago"


def plan(
    session: StoreSession, selection: Selection, *, now: datetime, older_than: timedelta
) -> DeclutterReport:
    """Find the empty closed runs to soft-delete, and each study's health; changes nothing.

    Only the selected runs and studies (:mod:`mltidy.scope`): with ``--run``/``--trial``, the
    named runs and the studies of the named trials.

    Raises:
        UsageError: a selection that names what no store holds, or an ambiguous id.
    """
    scope = Scope.of(session, selection, now)
    runs: list[RunDecision] = []
    studies: list[tuple[StoreId, StudyHealth]] = []
    for spec, backend in session.backends():
        pushed = scope.for_backend(spec.kind)
        try:
            if isinstance(backend, RunDeclutterer):
                for contents in backend.iter_closed_runs(pushed):
                    if not scope.wants(contents.record):
                        continue
                    action, why = judge_contents(contents, now, older_than)
                    runs.append(RunDecision(contents, action, why, spec.id))
            if isinstance(backend, StudyReporter):
                studies += [
                    (spec.id, h) for h in backend.study_health(pushed) if scope.wants_study(h.study)
                ]
        except StoreError as exc:
            session.fail(spec.key, exc)
    runs, missing = select_named(runs, selection, lambda d: [Named.of(d.contents.record)])
    if selection.names_records:
        # A trial names its study here (Optuna cannot delete trials; declutter reports studies).
        named = {t.study for t in selection.trials}
        studies = [(store, h) for store, h in studies if h.study in named]
        shown = {h.study for _, h in studies}
        missing = tuple(p for p in selection.runs if p in missing)
        missing += tuple(str(t) for t in selection.trials if t.study not in shown)
    return DeclutterReport(
        session.statuses(), tuple(runs), tuple(studies), dry_run=True, missing=missing
    )


def apply(session: StoreSession, report: DeclutterReport) -> DeclutterReport:
    """Soft-delete the runs the plan would delete, each only if still finished and active."""
    runs: list[RunDecision] = []
    for decision in report.runs:
        if decision.action is not RunAction.DELETE:
            runs.append(decision)
            continue
        key = (StoreKind.MLFLOW, decision.store)
        backend = session.writable(key)
        action, why = RunAction.DELETED, decision.why
        if backend is None:
            action, why = RunAction.FAILED, session.status(key).error or "unreadable"
        elif not isinstance(backend, RunDeclutterer):
            action, why = RunAction.FAILED, "this store cannot delete runs"
        else:
            try:
                if not backend.soft_delete(decision.contents.record.id):
                    action, why = RunAction.KEEP, "changed since the scan; left alone"
            except StoreError as exc:
                action, why = RunAction.FAILED, exc.message
        runs.append(dataclasses.replace(decision, action=action, why=why))
    return DeclutterReport(
        report.stores, tuple(runs), report.studies, dry_run=False, missing=report.missing
    )


def restore_command(decision: RunDecision) -> str:
    """How a person brings a soft-deleted run back."""
    return (
        f"MLFLOW_TRACKING_URI={shell_word(decision.store)} mlflow runs restore "
        f"--run-id {shell_word(decision.contents.record.id)}"
    )
