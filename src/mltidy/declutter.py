"""``declutter``: soft-delete the empty runs mltidy closed, and report failed trials per study.

Only runs that mltidy closed (they carry ``mltidy.closed_at``), that hold nothing (no metrics,
no params, no artifacts) and that were closed longer ago than ``older_than`` are deleted, and
only softly: MLflow's ``deleted`` lifecycle stage, which ``mlflow runs restore`` reverses.
Optuna cannot delete trials; for studies mltidy reports what failed and zombie trials cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from mltidy.backends.identity import store_id
from mltidy.backends.interface import Backend, RunDeclutterer, StudyReporter
from mltidy.backends.registry import backend_factory, open_backend
from mltidy.config import StoreSpec
from mltidy.durations import format_duration
from mltidy.errors import StoreError
from mltidy.model import RunContents, Selection, StoreKind, StoreStatus, StudyHealth


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
    tracking_uri: str


@dataclass(frozen=True)
class DeclutterReport:
    """What declutter found, did or would do."""

    stores: tuple[StoreStatus, ...]
    runs: tuple[RunDecision, ...]
    studies: tuple[tuple[str, StudyHealth], ...]
    dry_run: bool

    @property
    def failed(self) -> tuple[RunDecision, ...]:
        """Deletions that did not happen."""
        return tuple(r for r in self.runs if r.action is RunAction.FAILED)


def _judge(contents: RunContents, now: datetime, older_than: timedelta) -> tuple[RunAction, str]:
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
        return RunAction.KEEP, "its artifact store is remote and was not checked"
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


def declutter(
    specs: Iterable[StoreSpec],
    selection: Selection,
    *,
    now: datetime,
    older_than: timedelta,
    apply: bool,
) -> DeclutterReport:
    """Find (and with ``apply``, soft-delete) empty closed runs; report study health."""
    specs = list(specs)
    for spec in specs:
        backend_factory(spec.kind, spec.uri)
    stores: list[StoreStatus] = []
    runs: list[RunDecision] = []
    studies: list[tuple[str, StudyHealth]] = []
    for spec in specs:
        shown = store_id(spec.kind, spec.uri)
        try:
            backend = open_backend(spec.kind, spec.uri, writable=apply)
        except StoreError as exc:
            stores.append(StoreStatus(shown, spec.kind, False, exc.message, spec.source))
            continue
        try:
            if spec.kind is StoreKind.MLFLOW:
                runs += _runs(backend, spec, selection, now, older_than, apply)
            elif isinstance(backend, StudyReporter):
                studies += [(shown, h) for h in backend.study_health(selection)]
        except StoreError as exc:
            stores.append(StoreStatus(shown, spec.kind, False, exc.message, spec.source))
            continue
        finally:
            backend.close()
        stores.append(StoreStatus(shown, spec.kind, True, source=spec.source))
    return DeclutterReport(tuple(stores), tuple(runs), tuple(studies), not apply)


def _runs(
    backend: Backend,
    spec: StoreSpec,
    selection: Selection,
    now: datetime,
    older_than: timedelta,
    apply: bool,
) -> list[RunDecision]:
    if not isinstance(backend, RunDeclutterer):
        return []
    decisions: list[RunDecision] = []
    for contents in backend.iter_closed_runs(selection):
        action, why = _judge(contents, now, older_than)
        if action is RunAction.DELETE and apply:
            try:
                if backend.soft_delete(contents.record.id):
                    action = RunAction.DELETED
                else:
                    action, why = RunAction.KEEP, "changed since the scan; left alone"
            except StoreError as exc:
                action, why = RunAction.FAILED, exc.message
        decisions.append(RunDecision(contents, action, why, store_id(spec.kind, spec.uri)))
    return decisions


def restore_command(decision: RunDecision) -> str:
    """How a person brings a soft-deleted run back."""
    return (
        f"MLFLOW_TRACKING_URI='{decision.tracking_uri}' mlflow runs restore "
        f"--run-id {decision.contents.record.id}"
    )
