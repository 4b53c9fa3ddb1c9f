"""``link``: pair Optuna trials with their MLflow runs, and write the links on both sides.

Pairs come from every convention in use, in this order of confidence:

1. the trial's user attribute ``mlflow_run_id`` (the tutorials' way);
2. the trial's system attribute ``mlflow_run_id`` (optuna-integration's ``track_in_mlflow``);
3. runs that mltidy's MLflow plugin tagged with the trial they ran in (``mltidy.optuna.*``),
   which covers trials killed before the training script wrote ``mlflow_run_id``;
4. runs mltidy linked before (``optuna.study_name`` / ``optuna.trial_number``);
5. runs written by optuna-integration's ``MLflowCallback`` (experiment named after the study,
   tag ``number``, tag ``datetime_start``).

What cannot be matched with confidence (several candidate runs, one run claimed by several
trials, an ``mlflow_run_id`` pointing nowhere) is reported, never guessed.

Written on the trial: user attribute ``mlflow_run_url`` and mltidy's section of its
optuna-dashboard note. Written on the run: tags ``optuna.study_name``, ``optuna.trial_number``,
``optuna.storage`` (redacted), ``optuna.dashboard_url`` and mltidy's section of its description
(``mlflow.note.content``). The user's own text in notes and descriptions is kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from mltidy.backends.identity import store_id
from mltidy.backends.interface import Backend, RunLinker, TrialLinker
from mltidy.backends.registry import backend_factory, open_backend
from mltidy.config import StoreSpec
from mltidy.dashboard_notes import with_section
from mltidy.errors import StoreError
from mltidy.links import LinkBases, dashboard_trial_url, mlflow_run_url, mlflow_ui_for
from mltidy.model import RunRef, Selection, StoreKind, StoreStatus, TrialRef

STUDY_TAG = "optuna.study_name"
NUMBER_TAG = "optuna.trial_number"
STORAGE_TAG = "optuna.storage"
DASHBOARD_TAG = "optuna.dashboard_url"
NOTE_TAG = "mlflow.note.content"
RUN_URL_ATTR = "mlflow_run_url"


class LinkStatus(str, Enum):
    """What became of one pair."""

    PLANNED = "planned"
    LINKED = "linked"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass(frozen=True)
class Pair:
    """A trial and the run that trained it, and how mltidy knows."""

    trial: TrialRef
    run: RunRef
    how: str


@dataclass(frozen=True)
class Unmatched:
    """A trial whose run could not be told with confidence."""

    trial: TrialRef
    why: str


@dataclass(frozen=True)
class LinkChange:
    """One pair, its links, and what was (or would be) written."""

    pair: Pair
    run_url: str
    dashboard_url: str
    trial_writes: tuple[str, ...]
    run_writes: tuple[str, ...]
    status: LinkStatus
    detail: str | None = None


@dataclass(frozen=True)
class LinkReport:
    """Everything ``link`` found and did."""

    stores: tuple[StoreStatus, ...]
    changes: tuple[LinkChange, ...]
    unmatched: tuple[Unmatched, ...]
    trials_without_run: int
    dry_run: bool

    @property
    def failed(self) -> tuple[LinkChange, ...]:
        """Pairs whose links could not be written."""
        return tuple(c for c in self.changes if c.status is LinkStatus.FAILED)


class _Index:
    """Candidate runs from every MLflow store, by every key a convention matches on."""

    def __init__(self) -> None:
        self.by_id: dict[str, RunRef] = {}
        self.by_key: dict[tuple[str, str, str], list[RunRef]] = defaultdict(list)
        self.tracking: dict[str, str] = {}

    def add(self, run: RunRef) -> None:
        if run.run_id in self.by_id:
            return
        self.by_id[run.run_id] = run
        tags = run.tags
        study = tags.get("mltidy.optuna.study")
        if study and tags.get("mltidy.optuna.trial_id"):
            self.by_key[("plugin", study, tags["mltidy.optuna.trial_id"])].append(run)
        if tags.get(STUDY_TAG) and tags.get(NUMBER_TAG):
            self.by_key[("linked", tags[STUDY_TAG], tags[NUMBER_TAG])].append(run)
        if tags.get("number"):
            self.by_key[("callback", run.experiment, tags["number"])].append(run)


def _callback_start_matches(run: RunRef, trial: TrialRef) -> bool:
    """MLflowCallback writes the trial's start as ``str(naive local datetime)``."""
    text = run.tags.get("datetime_start")
    if not text or trial.started_at is None:
        return True
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return True
    aware = value.astimezone() if value.tzinfo is None else value
    return abs(aware - trial.started_at) < timedelta(seconds=1)


def match(trial: TrialRef, index: _Index) -> Pair | Unmatched | None:
    """The run of one trial by the conventions in order, or why it is unclear, or ``None``."""
    for run_id, how in (
        (trial.run_id_user_attr, "trial user attribute mlflow_run_id"),
        (trial.run_id_system_attr, "trial system attribute mlflow_run_id (track_in_mlflow)"),
    ):
        if run_id:
            run = index.by_id.get(run_id)
            if run is None:
                return Unmatched(
                    trial, f"mlflow_run_id {run_id} is in none of the MLflow stores read"
                )
            return Pair(trial, run, how)
    plugin = index.by_key.get(("plugin", trial.study, trial.trial_id), [])
    linked = [
        run
        for run in index.by_key.get(("linked", trial.study, str(trial.number)), [])
        if run.tags.get(STORAGE_TAG) in (None, "", trial.store)
    ]
    callback = [
        run
        for run in index.by_key.get(("callback", trial.study, str(trial.number)), [])
        if _callback_start_matches(run, trial)
    ]
    for candidates, how in (
        (plugin, "run tagged by mltidy's MLflow plugin"),
        (linked, "mltidy link tags"),
        (callback, "optuna-integration MLflowCallback run"),
    ):
        if len(candidates) == 1:
            return Pair(trial, candidates[0], how)
        if len(candidates) > 1:
            ids = ", ".join(sorted(r.run_id[:8] for r in candidates))
            return Unmatched(trial, f"{len(candidates)} candidate runs ({how}): {ids}")
    return None


def link_values(
    trial: TrialRef, run: RunRef, tracking_uri: str | None, bases: LinkBases
) -> tuple[str, str, str, dict[str, str]]:
    """What a linked pair should carry: (run URL, dashboard URL, trial note, run tags)."""
    ui = mlflow_ui_for(tracking_uri, bases.mlflow_ui)
    run_url = mlflow_run_url(ui, run.experiment_id, run.run_id)
    dash_url = dashboard_trial_url(bases.dashboard, trial.study_id, trial.number)
    note = with_section(trial.note, f"**MLflow run:** [{run.name}]({run_url})")
    description = with_section(
        run.tags.get(NOTE_TAG, ""),
        f"**Optuna trial:** [{trial.study} #{trial.number}]({dash_url})",
    )
    run_tags = {
        STUDY_TAG: trial.study,
        NUMBER_TAG: str(trial.number),
        STORAGE_TAG: trial.store,
        DASHBOARD_TAG: dash_url,
        NOTE_TAG: description,
    }
    return run_url, dash_url, note, run_tags


def _desired(pair: Pair, index: _Index, bases: LinkBases) -> tuple[str, str, str, dict[str, str]]:
    run = pair.run
    run_url, dash_url, note, run_tags = link_values(
        pair.trial, run, index.tracking.get(run.store), bases
    )
    changed = {k: v for k, v in run_tags.items() if run.tags.get(k) != v}
    return run_url, dash_url, note, changed


def link(
    specs: Iterable[StoreSpec],
    selection: Selection,
    bases: LinkBases,
    *,
    dry_run: bool = False,
) -> LinkReport:
    """Find every pair in the selected stores and write the missing links (unless ``dry_run``)."""
    specs = list(specs)
    for spec in specs:
        backend_factory(spec.kind, spec.uri)
    stores: list[StoreStatus] = []
    opened: dict[str, Backend] = {}
    trials: list[TrialRef] = []
    index = _Index()
    try:
        for spec in sorted(specs, key=lambda s: s.kind is StoreKind.MLFLOW):
            shown = store_id(spec.kind, spec.uri)
            try:
                backend = open_backend(spec.kind, spec.uri, writable=not dry_run)
            except StoreError as exc:
                stores.append(StoreStatus(shown, spec.kind, False, exc.message, spec.source))
                continue
            opened[shown] = backend
            try:
                if spec.kind is StoreKind.OPTUNA and isinstance(backend, TrialLinker):
                    trials += list(backend.iter_link_trials(selection))
                elif isinstance(backend, RunLinker):
                    index.tracking[shown] = spec.uri
                    run_ids = {
                        i for t in trials for i in (t.run_id_user_attr, t.run_id_system_attr) if i
                    }
                    studies = {t.study for t in trials}
                    for run in backend.link_candidates(run_ids, studies):
                        index.add(run)
            except StoreError as exc:
                stores.append(StoreStatus(shown, spec.kind, False, exc.message, spec.source))
                continue
            stores.append(StoreStatus(shown, spec.kind, True, source=spec.source))
        pairs, unmatched, without = _pairs(trials, index)
        changes = [_change(pair, index, bases, opened, dry_run) for pair in pairs]
    finally:
        for backend in opened.values():
            backend.close()
    return LinkReport(tuple(stores), tuple(changes), tuple(unmatched), without, dry_run)


def _pairs(trials: list[TrialRef], index: _Index) -> tuple[list[Pair], list[Unmatched], int]:
    pairs: list[Pair] = []
    unmatched: list[Unmatched] = []
    without = 0
    for trial in trials:
        found = match(trial, index)
        if found is None:
            without += 1
        elif isinstance(found, Unmatched):
            unmatched.append(found)
        else:
            pairs.append(found)
    claims: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        claims[pair.run.run_id].append(pair)
    kept: list[Pair] = []
    for claimants in claims.values():
        if len(claimants) == 1:
            kept.append(claimants[0])
            continue
        names = ", ".join(f"{p.trial.study} #{p.trial.number}" for p in claimants)
        for pair in claimants:
            unmatched.append(
                Unmatched(pair.trial, f"run {pair.run.run_id[:8]} matches several trials: {names}")
            )
    return kept, unmatched, without


def _change(
    pair: Pair, index: _Index, bases: LinkBases, opened: dict[str, Backend], dry_run: bool
) -> LinkChange:
    run_url, dash_url, note, run_tags = _desired(pair, index, bases)
    trial = pair.trial
    trial_writes = []
    if trial.run_url != run_url:
        trial_writes.append(RUN_URL_ATTR)
    if trial.note != note:
        trial_writes.append("dashboard note")
    run_writes = tuple(sorted(run_tags))
    if not trial_writes and not run_writes:
        return LinkChange(pair, run_url, dash_url, (), (), LinkStatus.UNCHANGED)
    if dry_run:
        return LinkChange(
            pair, run_url, dash_url, tuple(trial_writes), run_writes, LinkStatus.PLANNED
        )
    trial_backend, run_backend = opened[trial.store], opened[pair.run.store]
    remark = ""
    try:
        if trial_writes and isinstance(trial_backend, TrialLinker):
            remark = trial_backend.write_trial_link(
                trial,
                run_url if RUN_URL_ATTR in trial_writes else None,
                note if "dashboard note" in trial_writes else None,
            )
        if run_tags and isinstance(run_backend, RunLinker):
            run_backend.write_run_tags(pair.run.run_id, run_tags)
    except StoreError as exc:
        return LinkChange(
            pair, run_url, dash_url, tuple(trial_writes), run_writes, LinkStatus.FAILED, exc.message
        )
    return LinkChange(
        pair,
        run_url,
        dash_url,
        tuple(trial_writes),
        run_writes,
        LinkStatus.LINKED,
        remark or None,
    )
