"""The SLURM source against a real SLURM (munged, slurmctld, slurmd started by the fixtures).

Jobs are real ``sbatch`` jobs ended the real ways: ``scancel``, a time limit, the cgroup OOM
killer, preemption, a node going down, ``scontrol requeue``. The one job that takes a minute
(the time limit) is submitted when the module starts and checked by the last test.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mltidy import names
from mltidy.evidence import JobPhase, JobRef, Liveness, SchedulerAnswer
from mltidy.evidence.slurm import SlurmSource
from slurm_cluster import SlurmCluster

pytestmark = pytest.mark.slurm

#: Generous: a query against the local controller takes a few hundredths of a second.
QUERY_TIMEOUT = 10.0


def _ref(job_id: str, **kwargs: str | int | None) -> JobRef:
    return JobRef("slurm", job_id, **kwargs)  # type: ignore[arg-type]


def _ask(cluster: SlurmCluster, *refs: JobRef, **env: str) -> SchedulerAnswer:
    source = SlurmSource(timeout=QUERY_TIMEOUT, environ={**cluster.env, **env})
    answer = source.query(refs)
    assert answer.unavailable is None, answer.unavailable
    return answer


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _near_now(value: datetime | None, slack: float = 120.0) -> bool:
    return value is not None and abs((_now() - value).total_seconds()) < slack


@pytest.fixture(scope="module")
def timed_out_job(slurm_cluster: SlurmCluster) -> str:
    """A job with a one-minute limit, submitted first: SLURM enforces limits every ~30 s."""
    return slurm_cluster.sbatch("--time=1", wrap="sleep 600")


@pytest.fixture(scope="module", autouse=True)
def _start_slow_jobs_first(timed_out_job: str) -> None:
    """Submit the time-limit job as the module starts, so it runs out while others test."""


@pytest.fixture
def call_log(tmp_path: Path, slurm: SlurmCluster) -> Iterator[tuple[dict[str, str], Path]]:
    """A PATH whose squeue/sacct/scontrol log each call and run the real one; and the log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for command in ("squeue", "sacct", "scontrol"):
        real = shutil.which(command)
        assert real is not None
        wrapper = bin_dir / command
        wrapper.write_text(f'#!/bin/sh\necho "{command} $*" >> "{log}"\nexec "{real}" "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    yield {**slurm.env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, log


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


# -- jobs ended the real ways ---------------------------------------------------------------------
def test_a_running_job_is_proof_of_life(slurm: SlurmCluster) -> None:
    job = slurm.sbatch(wrap="sleep 300")
    slurm.wait_for(job, {"RUNNING"})
    status = _ask(slurm, _ref(job)).status(_ref(job))
    assert status is not None
    assert (status.state, status.phase, status.node) == ("RUNNING", JobPhase.RUNNING, slurm.node)
    assert _near_now(status.started_at)
    assert status.ended_at is None  # squeue prints start + time limit; not an end
    evidence = status.evidence_for(_now())
    assert evidence.liveness is Liveness.RUNNING
    assert evidence.reason.startswith(f"SLURM job {job} is RUNNING on node {slurm.node} since ")
    slurm.scancel(job)


def test_times_are_utc_whatever_the_time_zone_and_format_of_the_user(
    slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SLURM prints local time, in SLURM_TIME_FORMAT; the source pins both for its clients.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        job = slurm.sbatch(wrap="true")
        slurm.wait_for(job, {"COMPLETED"})
        status = _ask(
            slurm, _ref(job), TZ="Asia/Kolkata", SLURM_TIME_FORMAT="relative", SQUEUE_FORMAT="%i"
        ).status(_ref(job))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert status is not None
    assert status.state == "COMPLETED"
    assert _near_now(status.ended_at, slack=60)
    assert status.started_at is not None and status.ended_at is not None
    assert status.ended_at.utcoffset() == timedelta(0)


def test_a_cancelled_job_ended_with_the_schedulers_words(slurm: SlurmCluster) -> None:
    job = slurm.sbatch(wrap="sleep 300")
    slurm.wait_for(job, {"RUNNING"})
    slurm.scancel(job)
    slurm.wait_for(job, {"CANCELLED"})
    status = _ask(slurm, _ref(job)).status(_ref(job))
    assert status is not None
    assert (status.state, status.phase, status.exit) == (
        "CANCELLED",
        JobPhase.ENDED,
        "signal 15 SIGTERM",
    )
    evidence = status.evidence_for(status.started_at)
    assert evidence.liveness is Liveness.ENDED
    assert evidence.ended_at == status.ended_at and _near_now(status.ended_at)
    assert evidence.reason == (
        f"SLURM job {job} ended CANCELLED (signal 15 SIGTERM) at "
        f"{status.ended_at:%Y-%m-%d %H:%M:%S} UTC on node {slurm.node}"
    )


@pytest.mark.parametrize(
    ("wrap", "state", "exit_words"),
    [("true", "COMPLETED", None), ("exit 1", "FAILED", "exit code 1")],
)
def test_completed_and_failed_jobs_have_ended(
    slurm: SlurmCluster, wrap: str, state: str, exit_words: str | None
) -> None:
    job = slurm.sbatch(wrap=wrap)
    slurm.wait_for(job, {state})
    status = _ask(slurm, _ref(job)).status(_ref(job))
    assert status is not None
    assert (status.state, status.phase, status.exit, status.reason) == (
        state,
        JobPhase.ENDED,
        exit_words,
        None,
    )
    assert status.evidence_for(None).liveness is Liveness.ENDED


def test_a_requeued_job_is_judged_by_its_current_incarnation(slurm: SlurmCluster) -> None:
    job = slurm.sbatch("--requeue", wrap="sleep 300")
    slurm.wait_for(job, {"RUNNING"})
    first = _ask(slurm, _ref(job)).status(_ref(job))
    assert first is not None and first.restarts == 0 and first.started_at is not None
    record_started = first.started_at + timedelta(seconds=1)  # a run the first incarnation made
    while _now() < record_started + timedelta(seconds=1):
        time.sleep(0.1)

    slurm.scontrol("requeue", job)
    slurm.wait_for(job, {"PENDING"})
    old_record, new_record = _ref(job, restarts=0), _ref(job, restarts=1)
    answer = _ask(slurm, _ref(job), old_record)
    waiting = answer.status(_ref(job))
    assert waiting is not None
    assert (waiting.state, waiting.phase, waiting.restarts) == ("PENDING", JobPhase.PENDING, 1)
    assert _near_now(waiting.submitted_at)  # a requeue queues the job anew
    by_clock = waiting.evidence_for(record_started)
    assert by_clock.liveness is Liveness.ENDED
    assert by_clock.reason.startswith(f"SLURM job {job} was requeued at ")
    assert answer.evidence_for(old_record, None).liveness is Liveness.ENDED

    # SLURM holds a requeued job for a while (BeginTime); let it start again now. Not at once:
    # slurmd refuses a relaunch in the same second as the requeue revoked the job's credential
    # ("Job credential revoked"), and the job would end FAILED.
    time.sleep(2)
    slurm.scontrol("update", f"JobId={job}", "StartTime=now")
    slurm.wait_for(job, {"RUNNING"})
    answer = _ask(slurm, _ref(job), old_record, new_record)
    again = answer.status(_ref(job))
    assert again is not None and again.restarts == 1 and again.started_at is not None
    assert again.evidence_for(record_started).liveness is Liveness.ENDED
    assert again.evidence_for(again.started_at + timedelta(seconds=2)).liveness is Liveness.RUNNING
    assert answer.evidence_for(old_record, None).liveness is Liveness.ENDED
    assert answer.evidence_for(new_record, None).liveness is Liveness.RUNNING
    slurm.scancel(job)


def test_array_tasks_by_job_id_or_by_array_name(slurm: SlurmCluster) -> None:
    array = slurm.sbatch("--array=0-1", wrap="sleep 300")
    slurm.wait_for(f"{array}_1", {"RUNNING"})
    ids = slurm.run(
        "squeue", "--noheader", f"--jobs={array}", "--array", "--format=%A %i"
    ).stdout.split("\n")
    task_ids = dict(reversed(line.split()) for line in ids if line.strip())
    source = SlurmSource(timeout=QUERY_TIMEOUT, environ=slurm.env)
    by_id = source.job_of({names.SLURM_JOB_ID: task_ids[f"{array}_1"]})
    by_name = source.job_of({names.SLURM_ARRAY_JOB_ID: array, names.SLURM_ARRAY_TASK_ID: "0"})
    assert by_id is not None and by_name is not None
    answer = source.query([by_id, by_name])
    first, second = answer.status(by_name), answer.status(by_id)
    assert first is not None and second is not None
    assert first.label == f"SLURM job {array}_0"
    assert second.label in (f"SLURM job {array}_1 (job id {by_id.job_id})", f"SLURM job {array}_1")
    assert first.phase is second.phase is JobPhase.RUNNING
    slurm.scancel(array)


def test_a_step_is_judged_by_itself_while_its_job_runs(slurm: SlurmCluster) -> None:
    # Step 0 ends (as a killed `srun python train.py` would) while the job goes on.
    job = slurm.sbatch(wrap="srun true; srun sleep 300")
    slurm.wait_for(job, {"RUNNING"})
    deadline = time.monotonic() + 30
    while "RUNNING" not in slurm.run(
        "squeue", "--noheader", "--steps", f"--jobs={job}", "--Format=StepID:|,StepState:|"
    ).stdout.replace(f"{job}.batch|RUNNING", ""):
        assert time.monotonic() < deadline, "step 1 did not start"
        time.sleep(0.2)
    done, running, whole = _ref(job, step="0"), _ref(job, step="1"), _ref(job)
    answer = _ask(slurm, done, running, whole)
    assert answer.calls == 3  # squeue (jobs), squeue (steps), sacct (how did step 0 end?)
    gone = answer.evidence_for(done, _now())
    assert gone.liveness is Liveness.ENDED
    assert gone.reason == (
        f"step 0 of SLURM job {job} is no longer among the job's running steps (the job is "
        f"RUNNING on node {slurm.node})"
    )
    assert answer.evidence_for(running, _now()).liveness is Liveness.RUNNING
    assert answer.evidence_for(whole, _now()).liveness is Liveness.RUNNING
    slurm.scancel(job)


def test_an_unknown_job_is_absent_and_the_answer_says_why(slurm: SlurmCluster) -> None:
    known = slurm.sbatch(wrap="true")
    slurm.wait_for(known, {"COMPLETED"})
    for refs in ([_ref("987654")], [_ref("987654"), _ref(known)]):  # squeue fails on one id
        answer = _ask(slurm, *refs)
        assert answer.status(_ref("987654")) is None
        assert answer.evidence_for(_ref("987654"), _now()).reason == (
            "SLURM does not know job 987654 (the controller keeps finished jobs only for "
            "MinJobAge, and accounting storage (sacct) is disabled)"
        )
    assert answer.status(_ref(known)) is not None


def test_one_batched_query_whatever_the_number_of_jobs(
    slurm: SlurmCluster, call_log: tuple[dict[str, str], Path]
) -> None:
    env, log = call_log
    jobs = [slurm.sbatch("--hold", wrap="true") for _ in range(3)]
    source = SlurmSource(timeout=QUERY_TIMEOUT, environ=env)
    one = source.query([_ref(jobs[0])])
    assert (one.calls, _calls(log)) == (1, [_calls(log)[0]])
    assert _calls(log)[0].startswith("squeue ")

    log.unlink()
    many = [_ref(job) for job in jobs] + [_ref(str(n)) for n in range(900000, 900200)]
    answer = source.query(many)
    calls = _calls(log)
    # One squeue for every job, and one sacct for the 200 it does not know.
    assert [call.split()[0] for call in calls] == ["squeue", "sacct"]
    assert answer.calls == 2
    assert f"--jobs={','.join(jobs)},900000,900001," in calls[0]
    assert all(answer.status(_ref(job)) is not None for job in jobs)
    slurm.scancel(*jobs)


# -- when SLURM cannot be asked -------------------------------------------------------------------
def test_a_controller_that_does_not_answer_is_unavailable_within_the_time_bound(
    slurm: SlurmCluster,
) -> None:
    source = SlurmSource(
        timeout=2.0, environ={**slurm.env, "SLURM_CONF": str(slurm.dead_controller_conf())}
    )
    began = time.monotonic()
    answer = source.query([_ref("1")])
    elapsed = time.monotonic() - began
    assert elapsed < 3.5
    assert answer.unavailable is not None
    assert answer.unavailable.startswith("squeue did not answer within 2s: is slurmctld running")
    assert answer.evidence_for(_ref("1"), None).reason.startswith("SLURM could not be asked: ")


def test_no_client_or_no_configuration_is_said_at_once(slurm: SlurmCluster, tmp_path: Path) -> None:
    no_client = SlurmSource(environ={**slurm.env, "PATH": str(tmp_path)})
    assert no_client.unavailable_reason() == (
        "the SLURM client squeue is not installed on this host (not on PATH)"
    )
    assert no_client.query([_ref("1")]).unavailable == no_client.unavailable_reason()
    no_conf = SlurmSource(environ={**slurm.env, "SLURM_CONF": str(tmp_path / "slurm.conf")})
    assert (
        no_conf.query([_ref("1")]).unavailable == f"SLURM_CONF={tmp_path}/slurm.conf names no file"
    )


def test_refused_credentials_are_unavailable_with_slurms_words(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        slurm.conf.read_text().replace(str(slurm.munge_socket), str(tmp_path / "no-munged"))
    )
    answer = SlurmSource(environ={**slurm.env, "SLURM_CONF": str(conf)}).query([_ref("1")])
    assert answer.unavailable is not None
    assert answer.unavailable.startswith("squeue failed: ")
    assert "authentication" in answer.unavailable.lower()
    assert "munge" in answer.unavailable.lower()


def test_no_job_asks_nothing(slurm: SlurmCluster, call_log: tuple[dict[str, str], Path]) -> None:
    env, log = call_log
    answer = SlurmSource(environ=env).query([JobRef("kubernetes", "pod-1"), _ref("1;reboot")])
    assert (answer.calls, answer.statuses, answer.unavailable, _calls(log)) == (0, {}, None, [])


# -- other clusters: memory limits, accounting, preemption, lost nodes ----------------------------
def test_a_job_killed_for_memory_ended_out_of_memory(slurm_oom_cluster: SlurmCluster) -> None:
    cluster = slurm_oom_cluster
    job = cluster.sbatch(
        "--mem=50M", wrap="python3 -c 'import time; x = bytearray(400 << 20); time.sleep(30)'"
    )
    cluster.wait_for(job, {"OUT_OF_MEMORY"}, timeout=60)
    evidence = _ask(cluster, _ref(job)).evidence_for(_ref(job), None)
    assert evidence.liveness is Liveness.ENDED
    assert evidence.reason.startswith(f"SLURM job {job} ended OUT_OF_MEMORY at ")
    assert evidence.reason.endswith(f" on node {cluster.node}")


def test_accounting_answers_for_jobs_the_controller_forgot(
    slurm_accounting_cluster: SlurmCluster, call_log: tuple[dict[str, str], Path]
) -> None:
    cluster = slurm_accounting_cluster
    env, log = call_log
    failed = cluster.sbatch(wrap="exit 3")
    cancelled = cluster.sbatch(wrap="sleep 300")
    cluster.wait_for(cancelled, {"RUNNING"})
    cluster.scancel(cancelled)
    for job in (failed, cancelled):  # MinJobAge=2: the controller forgets them soon
        cluster.wait_for(job, lambda state: state is None, timeout=60)
    env = {**env, "SLURM_CONF": str(cluster.conf)}
    deadline = time.monotonic() + 30
    while True:  # slurmdbd records the end a moment after the controller
        answer = SlurmSource(timeout=QUERY_TIMEOUT, environ=env).query(
            [_ref(failed), _ref(cancelled), _ref("987654")]
        )
        statuses = [answer.status(_ref(job)) for job in (failed, cancelled)]
        if all(s is not None and s.phase is JobPhase.ENDED for s in statuses):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.5)
        log.unlink(missing_ok=True)
    assert [call.split()[0] for call in _calls(log)] == ["squeue", "sacct"]
    first, second = statuses
    assert first is not None and second is not None
    assert (first.state, first.exit, first.answered_by) == ("FAILED", "exit code 3", "sacct")
    assert (second.state, second.reason) == ("CANCELLED", "by uid 0")
    assert second.evidence_for(None).reason.startswith(
        f"SLURM job {cancelled} ended CANCELLED (by uid 0) at "
    )
    assert answer.evidence_for(_ref("987654"), None).reason == (
        "SLURM does not know job 987654 (neither squeue nor sacct knows it: another cluster's job?)"
    )


def test_accounting_says_how_a_step_ended_while_its_job_runs(
    slurm_accounting_cluster: SlurmCluster,
) -> None:
    cluster = slurm_accounting_cluster
    job = cluster.sbatch(wrap="srun false; srun sleep 300")
    cluster.wait_for(job, {"RUNNING"})
    step = _ref(job, step="0")
    deadline = time.monotonic() + 30
    while True:
        status = _ask(cluster, step).status(step)
        if status is not None and status.answered_by == "sacct":
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert (status.state, status.phase, status.exit) == ("FAILED", JobPhase.ENDED, "exit code 1")
    assert status.sentence().startswith(f"step 0 of SLURM job {job} ended FAILED (exit code 1) at ")
    cluster.scancel(job)


@pytest.fixture(scope="module")
def doomed_cluster(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """A short-lived SLURM for what would hurt other tests: preemption, a node going down,
    the controller stopping. Its tests run in file order."""
    with SlurmCluster(name="mltidydoomed", cpus=2) as cluster:
        yield cluster


def test_a_preempted_job_ended_preempted(doomed_cluster: SlurmCluster) -> None:
    cluster = doomed_cluster
    low = cluster.sbatch("--exclusive", wrap="sleep 300")
    cluster.wait_for(low, {"RUNNING"})
    high = cluster.sbatch("--partition=urgent", "--exclusive", wrap="sleep 300")
    cluster.wait_for(low, {"PREEMPTED"})
    evidence = _ask(cluster, _ref(low)).evidence_for(_ref(low), None)
    assert evidence.liveness is Liveness.ENDED
    assert evidence.reason.startswith(f"SLURM job {low} ended PREEMPTED (signal 15 SIGTERM) at ")
    cluster.scancel(high)


def test_a_job_lost_with_its_node_ended_node_fail(doomed_cluster: SlurmCluster) -> None:
    cluster = doomed_cluster
    lost = cluster.sbatch("--no-requeue", wrap="sleep 300")
    requeued = cluster.sbatch("--requeue", wrap="sleep 300")
    for job in (lost, requeued):
        cluster.wait_for(job, {"RUNNING"})
    began = _now()
    cluster.scontrol("update", f"NodeName={cluster.node}", "State=DOWN", "Reason=mltidy-test")
    cluster.wait_for(lost, {"NODE_FAIL"})
    cluster.wait_for(requeued, {"PENDING"})
    answer = _ask(cluster, _ref(lost), _ref(requeued))
    gone = answer.evidence_for(_ref(lost), began)
    assert gone.liveness is Liveness.ENDED
    assert gone.reason.startswith(f"SLURM job {lost} ended NODE_FAIL (")
    # A job that may be requeued comes back after a node failure: its records have ended.
    back = answer.evidence_for(_ref(requeued), began - timedelta(seconds=30))
    assert back.liveness is Liveness.ENDED
    assert back.reason.startswith(f"SLURM job {requeued} was requeued at ")


def test_a_stopped_controller_is_unavailable_within_the_time_bound(
    doomed_cluster: SlurmCluster,
) -> None:
    cluster = doomed_cluster
    cluster.stop_controller()
    began = time.monotonic()
    answer = SlurmSource(timeout=2.0, environ=cluster.env).query([_ref("1")])
    assert time.monotonic() - began < 3.5
    assert answer.unavailable is not None
    assert "did not answer within 2s" in answer.unavailable


# -- last: the job that needed a minute ----------------------------------------------------------
@pytest.mark.slow
def test_a_job_over_its_time_limit_ended_timeout(slurm: SlurmCluster, timed_out_job: str) -> None:
    job = timed_out_job
    slurm.wait_for(job, {"TIMEOUT"}, timeout=150)
    status = _ask(slurm, _ref(job)).status(_ref(job))
    assert status is not None
    assert (status.state, status.phase) == ("TIMEOUT", JobPhase.ENDED)
    assert status.started_at is not None and status.ended_at is not None
    assert status.ended_at - status.started_at >= timedelta(minutes=1)
    assert status.evidence_for(status.started_at).reason.startswith(
        f"SLURM job {job} ended TIMEOUT ("
    )
