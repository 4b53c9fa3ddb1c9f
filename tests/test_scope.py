"""What a selection selects: containers across kinds by every link convention, the narrowing
filters, and ids as tables show them (constructed records; tests/cli/test_selection_cli.py has
the same over real killed jobs)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pytest

from mltidy import names
from mltidy.errors import UsageError
from mltidy.model import Record, RecordKind, RunRef, Selection, StoreId, StoreKind, TrialName
from mltidy.scope import Named, Scope, parse_trial, resolve_ids, select_named

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
MLFLOW = StoreId("sqlite:////data/mlflow.db")
OPTUNA = StoreId("sqlite:////data/optuna.db")


def run(
    run_id: str,
    experiment: str,
    tags: dict[str, str] | None = None,
    *,
    started: timedelta = timedelta(hours=3),
    active: timedelta | None = None,
    user: str | None = "ana",
) -> Record:
    return Record(
        kind=RecordKind.MLFLOW_RUN,
        store=MLFLOW,
        id=run_id,
        name=f"run-{run_id[:4]}",
        container=experiment,
        container_id=str(sum(map(ord, experiment))),
        state="RUNNING",
        started_at=NOW - started,
        last_activity_at=None if active is None else NOW - active,
        user=user,
        tags=tags or {},
    )


def trial(
    study: str, number: int, tags: dict[str, str] | None = None, *, trial_id: str | None = None
) -> Record:
    return Record(
        kind=RecordKind.OPTUNA_TRIAL,
        store=OPTUNA,
        id=trial_id or str(100 + number),
        name=f"trial {number}",
        container=study,
        container_id="1",
        state="RUNNING",
        started_at=NOW - timedelta(hours=3),
        trial_number=number,
        tags=tags or {},
    )


class FakeLinks:
    """What the stores would say across kinds."""

    def __init__(
        self, run_ids: dict[str, set[str]] | None = None, naming: Sequence[RunRef] = ()
    ) -> None:
        self.run_ids = run_ids or {}
        self.naming = list(naming)
        self.asked: list[str] = []

    def run_ids_of(self, studies: tuple[str, ...]) -> frozenset[str]:
        return frozenset(i for s in studies for i in self.run_ids.get(s, set()))

    def runs_naming(self, study: str) -> Sequence[RunRef]:
        self.asked.append(study)
        return [r for r in self.naming if study in (*r.tags.values(), r.experiment)]


def ref(run_id: str, experiment: str, tags: dict[str, str]) -> RunRef:
    return RunRef(MLFLOW, run_id, run_id, "7", experiment, tags)


# -- containers, across kinds ---------------------------------------------------------------


def test_a_study_selects_its_trials_and_the_runs_linked_to_them_by_every_convention() -> None:
    links = FakeLinks(run_ids={"lr-sweep": {"by-attr"}})
    scope = Scope(Selection(studies=("lr-sweep",)), NOW, links)
    assert scope.wants(trial("lr-sweep", 3))
    assert not scope.wants(trial("other", 3))
    # the trial's mlflow_run_id names the run
    assert scope.wants(run("by-attr", "exp-1"))
    # the plugin's tags, mltidy's link tags, MLflowCallback's experiment named after the study
    assert scope.wants(run("plugin", "exp-2", {names.RUN_STUDY: "lr-sweep"}))
    assert scope.wants(run("linked", "exp-3", {names.LINK_STUDY: "lr-sweep"}))
    assert scope.wants(run("callback", "lr-sweep"))
    # runs of other experiments are not in it (the measured defect: they were)
    assert not scope.wants(run("unrelated", "exp-1"))
    assert not scope.wants(run("other-study", "exp-1", {names.RUN_STUDY: "other"}))


def test_an_experiment_selects_its_runs_and_the_trials_linked_to_them() -> None:
    finished = ref(
        "f1", "exp-a", {names.LINK_STUDY: "s2", names.LINK_TRIAL_NUMBER: "4"}
    )  # a finished run that names trial s2 #4
    plugin = ref("p1", "exp-a", {names.RUN_STUDY: "s3", names.RUN_TRIAL_ID: "555"})
    elsewhere = ref("x1", "exp-z", {names.LINK_STUDY: "s2", names.LINK_TRIAL_NUMBER: "5"})
    links = FakeLinks(naming=[finished, plugin, elsewhere])
    scope = Scope(Selection(experiments=("exp-a",)), NOW, links)
    assert scope.wants(run("r1", "exp-a"))
    assert not scope.wants(run("r2", "exp-b"))
    # its run (found by mlflow_run_id or the run's tags) is in the experiment
    assert scope.wants(trial("s1", 0), run=run("r1", "exp-a"))
    assert not scope.wants(trial("s1", 1), run=run("r2", "exp-b"))
    # a run of the experiment that the stores say names the trial
    assert scope.wants(trial("s2", 4))
    assert scope.wants(trial("s3", 9, trial_id="555"))
    assert not scope.wants(trial("s2", 5))  # named by a run of another experiment
    assert not scope.wants(trial("s9", 1))
    # MLflowCallback: a study named after the experiment
    assert scope.wants(trial("exp-a", 2))


def test_experiments_by_id_and_names_together_are_a_union() -> None:
    scope = Scope(Selection(experiments=("17",), studies=("s1",)), NOW, FakeLinks(), ["exp-q"])
    assert scope.for_backend(StoreKind.MLFLOW) == Selection()  # runs of s1 may be anywhere
    assert scope.for_backend(StoreKind.OPTUNA) == Selection()  # trials of exp-q too
    assert scope.wants(run("r1", "exp-q"))
    assert scope.wants(trial("s1", 1))
    assert scope.wants(trial("exp-q", 1))
    assert not scope.wants(run("r2", "exp-other"))


def test_a_store_filters_only_what_loses_no_linked_record() -> None:
    only_experiments = Scope(Selection(experiments=("e",)), NOW)
    assert only_experiments.for_backend(StoreKind.MLFLOW) == Selection(experiments=("e",))
    assert only_experiments.for_backend(StoreKind.OPTUNA) == Selection()
    only_studies = Scope(Selection(studies=("s",)), NOW)
    assert only_studies.for_backend(StoreKind.MLFLOW) == Selection()
    assert only_studies.for_backend(StoreKind.OPTUNA) == Selection(studies=("s",))


def test_no_store_is_asked_when_the_answer_is_already_known() -> None:
    links = FakeLinks()
    scope = Scope(Selection(experiments=("e",)), NOW, links)
    assert scope.wants(trial("s1", 1), run=run("r", "e"))
    assert links.asked == []


# -- narrowing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selection", "wanted"),
    [
        (Selection(older_than=timedelta(hours=2)), True),
        (Selection(older_than=timedelta(hours=4)), False),
        (Selection(silent_for=timedelta(minutes=30)), True),  # last metric 1 h ago
        (Selection(silent_for=timedelta(hours=2)), False),
        (Selection(users=("ana",)), True),
        (Selection(users=("bob",)), False),
        (Selection(users=("bob", "carl")), True),  # the provenance's user
        (Selection(hosts=("gpu-07",)), True),  # the short name of gpu-07.cluster
        (Selection(hosts=("gpu-07.cluster",)), True),
        (Selection(hosts=("gpu-7",)), False),
        (Selection(studies=("s",), users=("ana",), hosts=("gpu-07",)), False),
    ],
)
def test_narrowing_filters_all_hold(selection: Selection, wanted: bool) -> None:
    record = run(
        "r1",
        "e",
        {names.HOST: "gpu-07.cluster", names.USER: "carl"},
        active=timedelta(hours=1),
    )
    assert Scope(selection, NOW).wants(record) is wanted


def test_silence_counts_the_heartbeat() -> None:
    beat = (NOW - timedelta(minutes=1)).isoformat()
    record = run("r1", "e", {names.HEARTBEAT_AT: beat}, active=timedelta(hours=1))
    assert not Scope(Selection(silent_for=timedelta(minutes=30)), NOW).wants(record)


def test_a_record_without_a_start_is_not_old() -> None:
    record = Record(RecordKind.MLFLOW_RUN, MLFLOW, "r", "r", "e", "1", "RUNNING", None)
    assert not Scope(Selection(older_than=timedelta(seconds=1)), NOW).wants(record)


# -- ids as tables show them -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s1:12", TrialName("s1", 12)),
        ("s1:#12", TrialName("s1", 12)),
        ("#12", TrialName(None, 12)),
        ("12", TrialName(None, 12)),
        ("a:b:3", TrialName("a:b", 3)),
    ],
)
def test_trial_references(text: str, expected: TrialName) -> None:
    assert parse_trial(text) == expected


@pytest.mark.parametrize("text", ["s1:x", ":3", "s1:", "no-number", "#"])
def test_bad_trial_references(text: str) -> None:
    with pytest.raises(UsageError, match="is not a trial reference"):
        parse_trial(text)


RECORDS = [
    run("d7fb5b7b0a1c4e0f9b7a6c5d4e3f2a10", "e"),
    run("d7aa11110a1c4e0f9b7a6c5d4e3f2a10", "e"),
    run("0c0ffee00a1c4e0f9b7a6c5d4e3f2a10", "e"),
    trial("s1", 3, trial_id="13"),
    trial("s2", 3, trial_id="23"),
    trial("s2", 4, trial_id="24"),
]


def named(selection: Selection) -> list[str]:
    picked, missing = select_named(RECORDS, selection, lambda r: [Named.of(r)])
    return [r.id if r.kind is RecordKind.MLFLOW_RUN else str(r.trial_number) for r in picked] + [
        f"missing {m}" for m in missing
    ]


def test_the_eight_characters_tables_show_select_a_run() -> None:
    assert named(Selection(runs=("d7fb5b7b",))) == ["d7fb5b7b0a1c4e0f9b7a6c5d4e3f2a10"]
    assert named(Selection(runs=("0C0FFEE",))) == ["0c0ffee00a1c4e0f9b7a6c5d4e3f2a10"]
    assert named(Selection(runs=("0c0ffee00a1c4e0f9b7a6c5d4e3f2a10",))) == [
        "0c0ffee00a1c4e0f9b7a6c5d4e3f2a10"
    ]


def test_trials_by_study_and_number_or_by_a_number_one_study_has() -> None:
    assert named(Selection(trials=(TrialName("s2", 3),))) == ["3"]
    assert named(Selection(trials=(TrialName(None, 4),))) == ["4"]
    assert named(Selection(trials=(TrialName("s9", 1), TrialName(None, 4)))) == [
        "4",
        "missing s9:1",
    ]
    assert named(Selection(runs=("ffff",))) == ["missing ffff"]


def test_an_ambiguous_prefix_is_a_usage_error_listing_the_candidates() -> None:
    with pytest.raises(UsageError) as caught:
        named(Selection(runs=("d7",)))
    assert "--run d7 matches 2 records" in caught.value.message
    assert "d7fb5b7b" in caught.value.message and "d7aa1111" in caught.value.message
    with pytest.raises(UsageError) as caught:
        named(Selection(trials=(TrialName(None, 3),)))
    assert "s1:3" in caught.value.message and "s2:3" in caught.value.message
    assert "STUDY:NUMBER" in (caught.value.hint or "")


def test_nothing_named_selects_everything() -> None:
    picked, missing = select_named(RECORDS, Selection(), lambda r: [Named.of(r)])
    assert picked == RECORDS and missing == ()
    assert resolve_ids(Selection(), []).missing == ()
