"""Pairing: which MLflow run trained which Optuna trial, by every convention in use.

In this order of confidence:

1. the trial's user attribute ``mlflow_run_id`` (the tutorials' way);
2. the trial's system attribute ``mlflow_run_id`` (optuna-integration's ``track_in_mlflow``);
3. runs that mltidy's MLflow plugin tagged with the trial they ran in (``mltidy.optuna.*``),
   which covers trials killed before the training script wrote ``mlflow_run_id``;
4. runs mltidy linked before (``optuna.study_name`` / ``optuna.trial_number``);
5. runs written by optuna-integration's ``MLflowCallback``: experiment named after the study
   and tag ``number``, which identify a trial exactly. The run's ``datetime_start`` tag (the
   trial's start as naive local text of the writing process) only breaks ties: it agrees with
   a trial when the two differ by a whole quarter hour (a UTC offset, whichever zone wrote or
   reads it) to the second.

What cannot be matched with confidence (several candidate runs, one run claimed by several
trials, an ``mlflow_run_id`` pointing nowhere, a ``datetime_start`` that no UTC offset
explains) is reported with the reason, never guessed. Pure: no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from mltidy import names
from mltidy.model import RunRef, TrialRef


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


class CandidateRuns:
    """Candidate runs from every MLflow store, by every key a convention matches on."""

    def __init__(self) -> None:
        self.by_id: dict[str, RunRef] = {}
        self.by_key: dict[tuple[str, str, str], list[RunRef]] = defaultdict(list)

    def add(self, run: RunRef) -> None:
        """Index a run under every convention its tags follow."""
        if run.run_id in self.by_id:
            return
        self.by_id[run.run_id] = run
        tags = run.tags
        study = tags.get(names.RUN_STUDY)
        if study and tags.get(names.RUN_TRIAL_ID):
            self.by_key[("plugin", study, tags[names.RUN_TRIAL_ID])].append(run)
        if tags.get(names.LINK_STUDY) and tags.get(names.LINK_TRIAL_NUMBER):
            key = ("linked", tags[names.LINK_STUDY], tags[names.LINK_TRIAL_NUMBER])
            self.by_key[key].append(run)
        if tags.get(names.CALLBACK_NUMBER):
            self.by_key[("callback", run.experiment, tags[names.CALLBACK_NUMBER])].append(run)


#: UTC offsets in use, and how close a naive time must be to one to count as agreeing.
QUARTER_HOUR = timedelta(minutes=15)
OFFSETS = (timedelta(hours=-12), timedelta(hours=14))
SAME_SECOND = timedelta(seconds=1)


def callback_start_agrees(run: RunRef, trial: TrialRef) -> bool | None:
    """Whether a MLflowCallback run's ``datetime_start`` tag is this trial's start.

    The callback writes ``str(trial.datetime_start)``: naive local time of the process that
    ran the study, in a zone no store records. It agrees when it is the trial's start at some
    real UTC offset, to the second; ``None`` when either time is missing or unreadable.
    """
    text = run.tags.get(names.CALLBACK_DATETIME_START)
    if not text or trial.started_at is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is not None:
        return abs(value - trial.started_at) < SAME_SECOND
    diff = value - trial.started_at.astimezone(timezone.utc).replace(tzinfo=None)
    offset = QUARTER_HOUR * round(diff / QUARTER_HOUR)
    return abs(diff - offset) < SAME_SECOND and OFFSETS[0] <= offset <= OFFSETS[1]


def _callback(trial: TrialRef, candidates: list[RunRef]) -> Pair | Unmatched | None:
    """A MLflowCallback run by study name and trial number; its start only breaks ties."""
    how = "optuna-integration MLflowCallback run"
    if not candidates:
        return None
    agree = [run for run in candidates if callback_start_agrees(run, trial) is not False]
    if len(candidates) == 1:
        if not agree:
            run = candidates[0]
            return Unmatched(
                trial,
                f"run {run.run_id[:8]} ({how}, number {trial.number}) has datetime_start "
                f"{run.tags.get(names.CALLBACK_DATETIME_START)}, which is not this trial's "
                "start at any UTC offset",
            )
        return Pair(trial, candidates[0], f"{how} (study name and trial number)")
    exact = [run for run in candidates if callback_start_agrees(run, trial) is True]
    if len(exact) == 1:
        return Pair(trial, exact[0], f"{how} (study name, trial number and datetime_start)")
    ids = ", ".join(sorted(r.run_id[:8] for r in candidates))
    return Unmatched(
        trial,
        f"{len(candidates)} candidate runs ({how}, number {trial.number}): {ids}; their "
        "datetime_start does not tell them apart",
    )


def match(trial: TrialRef, runs: CandidateRuns) -> Pair | Unmatched | None:
    """The run of one trial by the conventions in order, or why it is unclear, or ``None``."""
    for run_id, how in (
        (trial.run_id_user_attr, "trial user attribute mlflow_run_id"),
        (trial.run_id_system_attr, "trial system attribute mlflow_run_id (track_in_mlflow)"),
    ):
        if run_id:
            run = runs.by_id.get(run_id)
            if run is None:
                return Unmatched(
                    trial, f"mlflow_run_id {run_id} is in none of the MLflow stores read"
                )
            return Pair(trial, run, how)
    plugin = runs.by_key.get(("plugin", trial.study, trial.trial_id), [])
    linked = [
        run
        for run in runs.by_key.get(("linked", trial.study, str(trial.number)), [])
        if run.tags.get(names.LINK_STORAGE) in (None, "", trial.store)
    ]
    for candidates, how in (
        (plugin, "run tagged by mltidy's MLflow plugin"),
        (linked, "mltidy link tags"),
    ):
        if len(candidates) == 1:
            return Pair(trial, candidates[0], how)
        if len(candidates) > 1:
            ids = ", ".join(sorted(r.run_id[:8] for r in candidates))
            return Unmatched(trial, f"{len(candidates)} candidate runs ({how}): {ids}")
    return _callback(trial, runs.by_key.get(("callback", trial.study, str(trial.number)), []))


@dataclass(frozen=True)
class Pairing:
    """Every trial's fate: paired, unclear, or without a run."""

    pairs: tuple[Pair, ...]
    unmatched: tuple[Unmatched, ...]
    without_run: tuple[TrialRef, ...]


def pair_all(trials: Iterable[TrialRef], runs: CandidateRuns) -> Pairing:
    """Match every trial; a run claimed by several trials pairs with none of them."""
    pairs: list[Pair] = []
    unmatched: list[Unmatched] = []
    without: list[TrialRef] = []
    for trial in trials:
        found = match(trial, runs)
        if found is None:
            without.append(trial)
        elif isinstance(found, Unmatched):
            unmatched.append(found)
        else:
            pairs.append(found)
    claims: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        claims[pair.run.run_id].append(pair)
    kept: list[Pair] = []
    for claimants in claims.values():
        if len(claimants) > 1:
            # Trials of two storages with one study name claim the same MLflowCallback run:
            # the one whose start the run's datetime_start tag is, if only one.
            exact = [p for p in claimants if callback_start_agrees(p.run, p.trial) is True]
            if len(exact) == 1:
                owner = exact[0].trial
                for pair in claimants:
                    if pair is not exact[0]:
                        why = (
                            f"run {pair.run.run_id[:8]} is {owner.study} #{owner.number} of "
                            f"{owner.store} (its datetime_start tag)"
                        )
                        unmatched.append(Unmatched(pair.trial, why))
                claimants = exact
        if len(claimants) == 1:
            kept.append(claimants[0])
            continue
        who = ", ".join(f"{p.trial.study} #{p.trial.number}" for p in claimants)
        for pair in claimants:
            unmatched.append(
                Unmatched(pair.trial, f"run {pair.run.run_id[:8]} matches several trials: {who}")
            )
    return Pairing(tuple(kept), tuple(unmatched), tuple(without))


__all__ = [
    "CandidateRuns",
    "Pair",
    "Pairing",
    "Unmatched",
    "callback_start_agrees",
    "match",
    "pair_all",
]
