"""The scheduler-evidence value types: pure, constructed statuses (no scheduler needed).

tests/evidence/test_slurm.py checks the same decisions on statuses a real SLURM gave.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta, timezone

import pytest

from mltidy.evidence import (
    Incarnation,
    JobEvidence,
    JobPhase,
    JobRef,
    JobStatus,
    Liveness,
    SchedulerAnswer,
    SchedulerSource,
    ask,
    default_sources,
)

T0 = datetime(2026, 11, 30, 14, 0, tzinfo=timezone.utc)
JOB = JobRef("slurm", "4211")


def _status(phase: JobPhase, state: str, **kwargs: object) -> JobStatus:
    values: dict[str, object] = {
        "job": JOB,
        "label": "SLURM job 4211",
        "state": state,
        "phase": phase,
        "submitted_at": T0,
        "started_at": T0 + timedelta(minutes=1),
        "node": "gpu07",
        "restarts": 0,
    }
    values.update(kwargs)
    return JobStatus(**values)  # type: ignore[arg-type]


def test_an_ended_job_is_certain_evidence_in_the_schedulers_words() -> None:
    status = _status(JobPhase.ENDED, "OUT_OF_MEMORY", ended_at=T0 + timedelta(minutes=2, seconds=5))
    evidence = status.evidence_for(T0 + timedelta(minutes=1, seconds=3))
    assert evidence == JobEvidence(
        Liveness.ENDED,
        "SLURM job 4211 ended OUT_OF_MEMORY at 2026-11-30 14:02:05 UTC on node gpu07",
        ended_at=T0 + timedelta(minutes=2, seconds=5),
    )


def test_a_running_job_is_proof_of_life_whatever_the_node() -> None:
    evidence = _status(JobPhase.RUNNING, "RUNNING").evidence_for(T0 + timedelta(minutes=1))
    assert evidence.liveness is Liveness.RUNNING
    assert (
        evidence.reason == "SLURM job 4211 is RUNNING on node gpu07 since 2026-11-30 14:01:00 UTC"
    )


def test_exit_and_reason_are_said_once() -> None:
    status = _status(
        JobPhase.ENDED, "FAILED", exit="exit code 1", reason="launch failed", ended_at=T0
    )
    assert status.sentence() == (
        "SLURM job 4211 ended FAILED (exit code 1, launch failed) at 2026-11-30 14:00:00 UTC "
        "on node gpu07"
    )


@pytest.mark.parametrize(
    ("phase", "state", "liveness"),
    [
        (JobPhase.ENDING, "COMPLETING", Liveness.UNDECIDED),
        (JobPhase.UNKNOWN, "REVOKED", Liveness.UNDECIDED),
        (JobPhase.PENDING, "PENDING", Liveness.UNDECIDED),
    ],
)
def test_states_that_prove_nothing_leave_the_verdict_to_other_evidence(
    phase: JobPhase, state: str, liveness: Liveness
) -> None:
    evidence = _status(phase, state, started_at=None).evidence_for(T0 + timedelta(minutes=1))
    assert evidence.liveness is liveness
    assert state in evidence.reason


def test_a_requeued_job_is_judged_by_the_incarnation_the_record_started_in() -> None:
    requeued_at = T0 + timedelta(hours=1)
    running_again = _status(
        JobPhase.RUNNING,
        "RUNNING",
        restarts=1,
        submitted_at=requeued_at,
        started_at=requeued_at + timedelta(minutes=2),
    )
    before = T0 + timedelta(minutes=1)  # started in the first incarnation
    after = requeued_at + timedelta(minutes=2, seconds=4)
    assert running_again.incarnation_of(before) is Incarnation.EARLIER
    assert running_again.incarnation_of(after) is Incarnation.CURRENT
    old = running_again.evidence_for(before)
    assert old.liveness is Liveness.ENDED
    assert old.ended_at == requeued_at
    assert old.reason.startswith("SLURM job 4211 was requeued at 2026-11-30 15:00:00 UTC")
    assert running_again.evidence_for(after).liveness is Liveness.RUNNING


def test_the_recorded_restart_count_decides_without_clocks() -> None:
    running_again = _status(JobPhase.RUNNING, "RUNNING", restarts=2, started_at=T0)
    skewed = T0 - timedelta(hours=3)  # a record whose clock is far off
    assert running_again.incarnation_of(skewed, restarts=2) is Incarnation.CURRENT
    assert running_again.incarnation_of(skewed, restarts=1) is Incarnation.EARLIER
    assert running_again.incarnation_of(skewed, restarts=3) is Incarnation.OTHER_JOB
    with_ref = _status(
        JobPhase.RUNNING, "RUNNING", restarts=2, job=JobRef("slurm", "4211", restarts=1)
    )
    assert with_ref.evidence_for(None).liveness is Liveness.ENDED


def test_a_requeued_job_waiting_to_start_again_has_ended_every_records_incarnation() -> None:
    waiting = _status(JobPhase.PENDING, "PENDING", reason="BeginTime", restarts=1, started_at=None)
    evidence = waiting.evidence_for(T0 - timedelta(minutes=5))
    assert evidence.liveness is Liveness.ENDED
    assert evidence.reason == (
        "SLURM job 4211 was requeued at 2026-11-30 14:00:00 UTC, which ended the incarnation "
        "this record started in; it is now PENDING (BeginTime)"
    )


def test_a_job_submitted_after_the_record_started_is_another_job() -> None:
    status = _status(JobPhase.RUNNING, "RUNNING")
    evidence = status.evidence_for(T0 - timedelta(days=2))
    assert evidence.liveness is Liveness.UNDECIDED
    assert "cannot be the job this record ran in" in evidence.reason


def test_clock_differences_are_tolerated_up_to_halfway_to_the_requeue() -> None:
    status = _status(
        JobPhase.RUNNING,
        "RUNNING",
        restarts=1,
        started_at=T0,
        submitted_at=T0 - timedelta(minutes=2),
    )
    assert status.incarnation_of(T0 - timedelta(seconds=50)) is Incarnation.CURRENT
    assert status.incarnation_of(T0 - timedelta(seconds=70)) is Incarnation.EARLIER
    unknown_requeue = _status(
        JobPhase.RUNNING, "RUNNING", restarts=1, started_at=T0, submitted_at=None
    )
    assert unknown_requeue.incarnation_of(T0 - timedelta(seconds=5)) is Incarnation.CURRENT
    assert unknown_requeue.incarnation_of(T0 - timedelta(seconds=30)) is Incarnation.EARLIER


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _status(JobPhase.ENDED, "FAILED", ended_at=datetime(2026, 1, 1))


def test_an_answer_says_why_a_job_has_no_status() -> None:
    answer = SchedulerAnswer("SLURM", missing_hint="accounting storage (sacct) is disabled")
    assert answer.evidence_for(JOB, T0) == JobEvidence(
        Liveness.UNDECIDED,
        "SLURM does not know job 4211 (accounting storage (sacct) is disabled)",
    )
    down = SchedulerAnswer("SLURM", unavailable="squeue did not answer within 5s")
    assert down.evidence_for(JOB, T0).reason == (
        "SLURM could not be asked: squeue did not answer within 5s"
    )


class _Board(SchedulerSource):
    """A scheduler that is a dictionary: enough to check the plumbing of ask()."""

    name = "board"
    title = "Board"

    def __init__(self, states: Mapping[str, str]) -> None:
        self.states = states
        self.batches: list[set[JobRef]] = []

    def job_of(self, tags: Mapping[str, str]) -> JobRef | None:
        job = tags.get("board.job")
        return JobRef(self.name, job) if job else None

    def query(self, jobs: Collection[JobRef]) -> SchedulerAnswer:
        self.batches.append(set(jobs))
        return SchedulerAnswer(
            self.title,
            statuses={
                ref: JobStatus(ref, f"Board job {ref.job_id}", state, JobPhase(state.lower()))
                for ref in jobs
                if (state := self.states.get(ref.job_id))
            },
            calls=1,
        )


def test_ask_makes_one_query_per_source_for_all_records() -> None:
    board = _Board({"1": "RUNNING", "2": "ENDED"})
    records = [{"board.job": "1"}, {"board.job": "2"}, {"board.job": "1"}, {}, {"board.job": "3"}]
    evidence = ask([board], records)
    assert board.batches == [{JobRef("board", "1"), JobRef("board", "2"), JobRef("board", "3")}]
    seen = [evidence.evidence_for(tags, None) for tags in records]
    assert [e.liveness if e else None for e in seen] == [
        Liveness.RUNNING,
        Liveness.ENDED,
        Liveness.RUNNING,
        None,
        Liveness.UNDECIDED,
    ]


def test_a_source_no_record_names_is_not_asked() -> None:
    board = _Board({})
    assert ask([board], [{}, {"other": "x"}]).answers == {}
    assert board.batches == []


def test_default_sources_are_built_without_running_anything() -> None:
    (slurm,) = default_sources()
    assert slurm.name == "slurm"
    assert slurm.title == "SLURM"
