"""Pairing: which MLflow run trained which Optuna trial, by every convention in use.

In this order of confidence:

1. the trial's user attribute ``mlflow_run_id`` (the tutorials' way);
2. the trial's system attribute ``mlflow_run_id`` (optuna-integration's ``track_in_mlflow``);
3. runs that mltidy's MLflow plugin tagged with the trial they ran in (``mltidy.optuna.*``),
   which covers trials killed before the training script wrote ``mlflow_run_id``;
4. runs mltidy linked before (``optuna.study_name`` / ``optuna.trial_number``);
5. runs written by optuna-integration's ``MLflowCallback`` (experiment named after the study,
   tag ``number``, tag ``datetime_start``).

What cannot be matched with confidence (several candidate runs, one run claimed by several
trials, an ``mlflow_run_id`` pointing nowhere) is reported, never guessed. Pure: no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

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


def _callback_start_matches(run: RunRef, trial: TrialRef) -> bool:
    """MLflowCallback writes the trial's start as ``str(naive local datetime)``."""
    text = run.tags.get(names.CALLBACK_DATETIME_START)
    if not text or trial.started_at is None:
        return True
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return True
    aware = value.astimezone() if value.tzinfo is None else value
    return abs(aware - trial.started_at) < timedelta(seconds=1)


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
    callback = [
        run
        for run in runs.by_key.get(("callback", trial.study, str(trial.number)), [])
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
        if len(claimants) == 1:
            kept.append(claimants[0])
            continue
        who = ", ".join(f"{p.trial.study} #{p.trial.number}" for p in claimants)
        for pair in claimants:
            unmatched.append(
                Unmatched(pair.trial, f"run {pair.run.run_id[:8]} matches several trials: {who}")
            )
    return Pairing(tuple(kept), tuple(unmatched), tuple(without))


__all__ = ["CandidateRuns", "Pair", "Pairing", "Unmatched", "match", "pair_all"]
