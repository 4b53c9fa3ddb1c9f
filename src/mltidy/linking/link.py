"""``link``: pair Optuna trials with their MLflow runs, and write the links on both sides.

Planned first, applied second (the style of every command that changes records): :func:`plan`
reads the stores, pairs trials and runs (:mod:`mltidy.linking.pairing`) and works out what each
pair lacks; :func:`apply` writes exactly that.

Written on the trial: user attribute ``mlflow_run_url`` and mltidy's section of its
optuna-dashboard note. Written on the run: tags ``optuna.study_name``, ``optuna.trial_number``,
``optuna.storage`` (the storage's identity), ``optuna.dashboard_url`` and mltidy's section of its
description (``mlflow.note.content``). The user's own text in notes and descriptions is kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

from mltidy import names
from mltidy.backends.interface import Backend, RunLinker, TrialLinker
from mltidy.backends.session import StoreSession
from mltidy.dashboard_notes import with_section
from mltidy.errors import StoreError
from mltidy.linking.pairing import CandidateRuns, Pair, Unmatched, pair_all
from mltidy.linking.urls import LinkBases, dashboard_trial_url, mlflow_run_url
from mltidy.model import (
    RecordKind,
    RunRef,
    Selection,
    StoreKey,
    StoreKind,
    StoreStatus,
    TrialRef,
    utc_now,
)
from mltidy.scope import Named, Scope, resolve_ids
from mltidy.text import md_code, md_link

#: What ``trial_writes`` calls the trial's optuna-dashboard note.
DASHBOARD_NOTE = "dashboard note"


class LinkStatus(str, Enum):
    """What became of one pair."""

    PLANNED = "planned"
    LINKED = "linked"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass(frozen=True)
class LinkChange:
    """One pair, its links, and what was (or would be) written.

    ``note`` and ``run_tags`` are the values to write (``run_tags`` only the changed ones).
    """

    pair: Pair
    run_url: str
    dashboard_url: str
    trial_writes: tuple[str, ...]
    run_writes: tuple[str, ...]
    status: LinkStatus
    detail: str | None = None
    note: str = ""
    run_tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LinkReport:
    """Everything ``link`` found, and planned or did."""

    stores: tuple[StoreStatus, ...]
    changes: tuple[LinkChange, ...]
    unmatched: tuple[Unmatched, ...]
    without_run: tuple[TrialRef, ...]
    dry_run: bool
    missing: tuple[str, ...] = ()
    """Ids given with ``--run``/``--trial`` that named no trial or run read."""

    @property
    def trials_without_run(self) -> int:
        """How many trials no run could be found for."""
        return len(self.without_run)

    @property
    def failed(self) -> tuple[LinkChange, ...]:
        """Pairs whose links could not be written."""
        return tuple(c for c in self.changes if c.status is LinkStatus.FAILED)


def link_values(
    trial: TrialRef, run: RunRef, bases: LinkBases
) -> tuple[str, str, str, dict[str, str]]:
    """What a linked pair should carry: (run URL, dashboard URL, trial note, run tags)."""
    run_url = mlflow_run_url(bases.ui(run.store), run.experiment_id, run.run_id)
    dash_url = dashboard_trial_url(bases.dashboard, trial.study_id, trial.number)
    # Names are someone else's text: code spans (literal in every renderer); the targets are
    # the http(s) pages mltidy built, or no link at all.
    note = with_section(trial.note, f"**MLflow run:** {md_link(md_code(run.name), run_url)}")
    description = with_section(
        run.tags.get(names.MLFLOW_NOTE, ""),
        f"**Optuna trial:** {md_link(f'{md_code(trial.study)} #{trial.number}', dash_url)}",
    )
    run_tags = {
        names.LINK_STUDY: trial.study,
        names.LINK_TRIAL_NUMBER: str(trial.number),
        names.LINK_STORAGE: trial.store,
        names.LINK_DASHBOARD: dash_url,
        names.MLFLOW_NOTE: description,
    }
    return run_url, dash_url, note, run_tags


def plan(session: StoreSession, selection: Selection, bases: LinkBases) -> LinkReport:
    """Read the stores, pair trials and runs, and work out what each pair lacks.

    Only the selected pairs (:mod:`mltidy.scope`): a trial of a named study, or a run of a
    named experiment; ``--older-than``/``--silent-for`` look at the trial's start, ``--user``/
    ``--host`` at its run's provenance; trials without a run are listed when their study is
    selected.

    Raises:
        UsageError: a selection that names what no store holds, or an ambiguous id.
    """
    scope = Scope.of(session, selection, utc_now())
    trials: list[TrialRef] = []
    for spec, backend in session.backends(StoreKind.OPTUNA):
        if isinstance(backend, TrialLinker):
            try:
                trials += list(backend.iter_link_trials(scope.for_backend(spec.kind)))
            except StoreError as exc:
                session.fail(spec.key, exc)
    runs = CandidateRuns()
    run_ids = {i for t in trials for i in (t.run_id_user_attr, t.run_id_system_attr) if i}
    studies = {t.study for t in trials}
    for spec, backend in session.backends(StoreKind.MLFLOW):
        if isinstance(backend, RunLinker):
            try:
                for run in backend.link_candidates(run_ids, studies):
                    runs.add(run)
            except StoreError as exc:
                session.fail(spec.key, exc)
    pairing = pair_all(trials, runs)
    pairs = [p for p in pairing.pairs if _wanted(scope, p.trial, p.run)]
    unmatched = [u for u in pairing.unmatched if _wanted(scope, u.trial, None)]
    without = [t for t in pairing.without_run if _wanted(scope, t, None)]
    missing: tuple[str, ...] = ()
    if selection.names_records:
        picked = resolve_ids(
            selection,
            [
                *(n for p in pairs for n in _names(p.trial, p.run)),
                *(n for u in unmatched for n in _names(u.trial, None)),
                *(n for t in without for n in _names(t, None)),
            ],
        )
        pairs = [p for p in pairs if picked.picks(_names(p.trial, p.run))]
        unmatched = [u for u in unmatched if picked.picks(_names(u.trial, None))]
        without = [t for t in without if picked.picks(_names(t, None))]
        missing = picked.missing
    changes = tuple(_planned(pair, bases) for pair in pairs)
    return LinkReport(
        session.statuses(),
        changes,
        tuple(unmatched),
        tuple(without),
        dry_run=True,
        missing=missing,
    )


def _wanted(scope: Scope, trial: TrialRef, run: RunRef | None) -> bool:
    """Whether a trial (and its run, when paired) belongs to the selection."""
    selection = scope.selection
    in_containers = not selection.by_container or (
        trial.study in selection.studies
        or (bool(selection.experiments) and scope.wants_study(trial.study))
        or (run is not None and scope.in_experiments(run.experiment, run.experiment_id))
    )
    tags = run.tags if run is not None else {}
    return in_containers and scope.narrows(
        started_at=trial.started_at,
        last_seen=trial.started_at,
        users={tags.get(names.USER), tags.get(names.MLFLOW_USER)},
        host=tags.get(names.HOST),
    )


def _names(trial: TrialRef, run: RunRef | None) -> list[Named]:
    """A trial and its run, as ``--trial`` and ``--run`` name them."""
    found = [
        Named(
            RecordKind.OPTUNA_TRIAL,
            trial.store,
            trial.trial_id,
            trial.study,
            trial.number,
            f"{trial.study}: trial {trial.number}",
        )
    ]
    if run is not None:
        found.append(
            Named(
                RecordKind.MLFLOW_RUN,
                run.store,
                run.run_id,
                run.experiment,
                None,
                f"{run.experiment}: {run.name}",
            )
        )
    return found


def _planned(pair: Pair, bases: LinkBases) -> LinkChange:
    run_url, dash_url, note, run_tags = link_values(pair.trial, pair.run, bases)
    changed = {k: v for k, v in run_tags.items() if pair.run.tags.get(k) != v}
    trial_writes = []
    if pair.trial.run_url != run_url:
        trial_writes.append(names.MLFLOW_RUN_URL)
    if pair.trial.note != note:
        trial_writes.append(DASHBOARD_NOTE)
    status = LinkStatus.PLANNED if trial_writes or changed else LinkStatus.UNCHANGED
    return LinkChange(
        pair,
        run_url,
        dash_url,
        tuple(trial_writes),
        tuple(sorted(changed)),
        status,
        note=note,
        run_tags=tuple(sorted(changed.items())),
    )


def apply(session: StoreSession, report: LinkReport) -> LinkReport:
    """Write what the plan found missing, pair by pair; failures are recorded."""
    changes = tuple(
        _write(session, c) if c.status is LinkStatus.PLANNED else c for c in report.changes
    )
    return dataclasses.replace(report, changes=changes, dry_run=False)


def _write(session: StoreSession, change: LinkChange) -> LinkChange:
    trial, run = change.pair.trial, change.pair.run
    remark = ""
    try:
        if change.trial_writes:
            trial_backend = _writable(session, (StoreKind.OPTUNA, trial.store))
            if not isinstance(trial_backend, TrialLinker):
                raise StoreError(f"{trial.store} cannot write links")
            remark = trial_backend.write_trial_link(
                trial,
                change.run_url if names.MLFLOW_RUN_URL in change.trial_writes else None,
                change.note if DASHBOARD_NOTE in change.trial_writes else None,
            )
        if change.run_tags:
            run_backend = _writable(session, (StoreKind.MLFLOW, run.store))
            if not isinstance(run_backend, RunLinker):
                raise StoreError(f"{run.store} cannot write links")
            run_backend.write_run_tags(run.run_id, dict(change.run_tags))
    except StoreError as exc:
        return dataclasses.replace(change, status=LinkStatus.FAILED, detail=exc.message)
    return dataclasses.replace(change, status=LinkStatus.LINKED, detail=remark or None)


def _writable(session: StoreSession, store: StoreKey) -> Backend:
    """The store's backend, writable.

    Raises:
        StoreError: the store failed.
    """
    backend = session.writable(store)
    if backend is None:
        raise StoreError(session.status(store).error or f"{store[1]} cannot be opened")
    return backend


__all__ = ["LinkChange", "LinkReport", "LinkStatus", "apply", "link_values", "plan"]
