"""The judge: a pure function from evidence to a verdict and a checkable reason.

These tests hand it constructed facts; tests/test_liveness.py hands it real processes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from mltidy.evidence.local import ProcessInfo, StaticFacts
from mltidy.judge import Policy, judge, short_command
from mltidy.model import ActivitySource, Basis, Record, RecordKind, VerdictKind

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
POLICY = Policy(now=NOW, stale_after=timedelta(hours=1))
HERE = StaticFacts(
    host="gpu-07",
    boot_id="boot-now",
    processes={
        4121: ProcessInfo(4121, 1000.0, "python train.py"),
        5000: ProcessInfo(5000, 9999.0, "bash"),
        6000: ProcessInfo(6000, 1000.0, "python train.py", zombie=True),
    },
)


def _tags(host: str = "gpu-07", pid: int = 4121, start: float = 1000.0, boot: str = "boot-now"):
    return {
        "mltidy.host": host,
        "mltidy.pid": str(pid),
        "mltidy.pid_start": f"{start:.2f}",
        "mltidy.boot_id": boot,
        "mltidy.cmd": "python3 /home/me/train.py --lr 0.1",
    }


def _run(
    started: timedelta | None = timedelta(hours=5),
    last: timedelta | None = None,
    tags: dict[str, str] | None = None,
    pause: timedelta | None = None,
    count: int = 0,
) -> Record:
    return Record(
        kind=RecordKind.MLFLOW_RUN,
        store="sqlite:///mlflow.db",
        id="abc",
        name="run",
        container="exp",
        container_id="1",
        state="RUNNING",
        started_at=None if started is None else NOW - started,
        last_activity_at=None if last is None else NOW - last,
        tags=tags or {},
        activity_source=None if last is None else ActivitySource.METRIC,
        longest_pause=pause,
        activity_count=count,
    )


def test_process_gone_on_this_host_is_dead() -> None:
    verdict = judge(_run(tags=_tags(pid=777)), HERE, POLICY)
    assert verdict.kind is VerdictKind.DEAD
    assert verdict.reason == "process 777 (python3 train.py) no longer exists on gpu-07"


def test_process_running_with_its_start_time_is_alive_even_when_silent() -> None:
    verdict = judge(_run(last=timedelta(hours=3), tags=_tags()), HERE, POLICY)
    assert verdict.kind is VerdictKind.ALIVE
    assert "process 4121" in verdict.reason and "is running on gpu-07" in verdict.reason


def test_reused_pid_is_dead() -> None:
    verdict = judge(_run(tags=_tags(pid=5000, start=1000.0)), HERE, POLICY)
    assert verdict.kind is VerdictKind.DEAD
    assert "another process (bash)" in verdict.reason


def test_zombie_is_dead() -> None:
    verdict = judge(_run(tags=_tags(pid=6000)), HERE, POLICY)
    assert verdict.kind is VerdictKind.DEAD
    assert "zombie" in verdict.reason


def test_reboot_is_dead() -> None:
    verdict = judge(_run(tags=_tags(boot="boot-before")), HERE, POLICY)
    assert verdict.kind is VerdictKind.DEAD
    assert verdict.reason == "host gpu-07 rebooted since it started (boot id changed)"


def test_another_hosts_record_is_never_dead() -> None:
    tags = _tags(host="gpu-03", pid=777)
    recent = judge(_run(last=timedelta(minutes=2), tags=tags), HERE, POLICY)
    assert recent.kind is VerdictKind.ACTIVE  # activity is not proof of life
    assert recent.reason == "last metric 2 min ago from gpu-03; no proof that its process lives"
    silent = judge(_run(last=timedelta(hours=2, minutes=14), tags=tags), HERE, POLICY)
    assert silent.kind is VerdictKind.STALE
    assert silent.reason.startswith("last metric 2 h 14 min ago from gpu-03")
    young = judge(_run(started=timedelta(minutes=5), tags=tags), HERE, POLICY)
    assert young.kind is VerdictKind.UNKNOWN


def test_a_heartbeat_is_judged_by_its_own_interval() -> None:
    tags = {
        **_tags(host="gpu-03"),
        "mltidy.heartbeat_at": (NOW - timedelta(seconds=25)).isoformat(),
        "mltidy.heartbeat_interval": "10.0",
    }
    verdict = judge(_run(last=timedelta(hours=5), tags=tags), HERE, POLICY)
    assert verdict.kind is VerdictKind.ALIVE
    assert verdict.reason == "mltidy heartbeat 25 s ago from gpu-03 (every 10 s)"
    tags["mltidy.heartbeat_at"] = (NOW - timedelta(seconds=56)).isoformat()
    verdict = judge(_run(last=timedelta(hours=5), tags=tags), HERE, POLICY)
    assert verdict.kind is VerdictKind.STALE  # 56 s of silence is 5 beats missed, not an hour
    assert verdict.basis is Basis.HEARTBEAT
    assert verdict.reason == (
        "its heartbeat stopped: last beat 56 s ago from gpu-03, it beat every 10 s"
    )


def test_a_heartbeat_without_interval_falls_back_to_stale_after() -> None:
    tags = {
        **_tags(host="gpu-03"),
        "mltidy.heartbeat_at": (NOW - timedelta(seconds=40)).isoformat(),
    }
    assert judge(_run(tags=tags), HERE, POLICY).kind is VerdictKind.ALIVE
    tags["mltidy.heartbeat_at"] = (NOW - timedelta(hours=2, minutes=14)).isoformat()
    verdict = judge(_run(tags=tags), HERE, POLICY)
    assert verdict.kind is VerdictKind.STALE
    assert "last beat 2 h 14 min ago from gpu-03" in verdict.reason


def test_without_provenance_silence_longer_than_stale_after_is_stale() -> None:
    verdict = judge(_run(last=timedelta(hours=2, minutes=14)), HERE, POLICY)
    assert verdict.kind is VerdictKind.STALE
    assert "2 h 14 min" in verdict.reason


def test_without_provenance_recent_activity_is_active_not_alive() -> None:
    verdict = judge(_run(last=timedelta(minutes=5)), HERE, POLICY)
    assert verdict.kind is VerdictKind.ACTIVE
    assert verdict.reason.startswith("last metric 5 min ago")


def test_silence_is_judged_against_the_records_own_rhythm() -> None:
    quick = _run(last=timedelta(minutes=6), pause=timedelta(seconds=4), count=300)
    verdict = judge(quick, HERE, POLICY)
    assert verdict.kind is VerdictKind.STALE and verdict.basis is Basis.RHYTHM
    assert "silent 6 min since its last metric; its longest pause before was 4 s" in verdict.reason
    floor = judge(
        _run(last=timedelta(seconds=90), pause=timedelta(seconds=2), count=300), HERE, POLICY
    )
    assert floor.kind is VerdictKind.ACTIVE  # never before the floor
    # A job with long epochs is not called stale early, --stale-after or not.
    slow = _run(last=timedelta(hours=2), pause=timedelta(minutes=45), count=20)
    assert judge(slow, HERE, POLICY).kind is VerdictKind.ACTIVE
    # A pause three times the longest before is not stale either.
    once = _run(last=timedelta(minutes=3), pause=timedelta(minutes=1), count=50)
    assert judge(once, HERE, POLICY).kind is VerdictKind.ACTIVE
    # Too little history: --stale-after decides.
    young = _run(last=timedelta(minutes=6), pause=timedelta(seconds=4), count=3)
    assert judge(young, HERE, POLICY).kind is VerdictKind.ACTIVE


def test_a_time_in_the_future_is_never_proof_of_life() -> None:
    ahead = judge(_run(last=-timedelta(days=365), tags=_tags(host="gpu-03")), HERE, POLICY)
    assert ahead.kind is VerdictKind.UNKNOWN and ahead.basis is Basis.CLOCK
    assert ahead.reason.startswith(
        "its last metric is dated 365 d in the future: the clock of gpu-03"
    )
    beat = {**_tags(host="gpu-03"), "mltidy.heartbeat_at": (NOW + timedelta(days=1)).isoformat()}
    assert judge(_run(tags=beat), HERE, POLICY).kind is VerdictKind.UNKNOWN
    start = judge(_run(started=-timedelta(hours=9)), HERE, POLICY)
    assert start.kind is VerdictKind.UNKNOWN and "start is dated 9 h" in start.reason
    small = judge(_run(last=-timedelta(seconds=30)), HERE, POLICY)  # within the tolerance
    assert small.kind is VerdictKind.ACTIVE


def test_a_pid_is_judged_only_in_its_own_namespace() -> None:
    inside = ProcessInfo(12, 1000.0, "python train.py")
    host = StaticFacts(
        host="gpu-07",
        boot_id="boot-now",
        pid_ns=4026531836,
        processes={12: ProcessInfo(12, 55.0, "kworker")},
        namespaces={4026532999: {12: inside}},
    )
    tags = {**_tags(pid=12), "mltidy.pid_ns": "4026532999"}
    verdict = judge(_run(tags=tags), host, POLICY)
    assert verdict.kind is VerdictKind.ALIVE  # not the host's pid 12
    assert (
        verdict.reason
        == "process 12 (python3 train.py) is running on gpu-07 in pid namespace 4026532999"
    )
    gone = {**_tags(pid=13), "mltidy.pid_ns": "4026532999"}
    assert judge(_run(tags=gone), host, POLICY).kind is VerdictKind.DEAD
    # From inside a container, a job outside cannot be seen: no verdict from its pid.
    container = StaticFacts(host="gpu-07", boot_id="boot-now", pid_ns=4026532111)
    outside = {**_tags(pid=4121), "mltidy.pid_ns": "4026531836"}
    blind = judge(_run(last=timedelta(minutes=2), tags=outside), container, POLICY)
    assert blind.kind is VerdictKind.ACTIVE
    assert "ran in another pid namespace (4026531836, a container)" in blind.reason
    # An older record without its namespace is not judged by pid from inside a container.
    old = judge(_run(tags=_tags(pid=777)), container, POLICY)
    assert old.kind is not VerdictKind.DEAD and "does not name its pid namespace" in old.reason


def test_without_provenance_never_logged() -> None:
    assert judge(_run(started=timedelta(hours=3)), HERE, POLICY).kind is VerdictKind.STALE
    young = judge(_run(started=timedelta(minutes=3)), HERE, POLICY)
    assert young.kind is VerdictKind.UNKNOWN
    assert "too young" in young.reason
    assert judge(_run(started=None), HERE, POLICY).kind is VerdictKind.UNKNOWN


def test_a_trial_names_the_run_it_inherited_from() -> None:
    trial = Record(
        kind=RecordKind.OPTUNA_TRIAL,
        store="sqlite:///optuna.db",
        id="1",
        name="trial 0",
        container="study",
        container_id="1",
        state="RUNNING",
        started_at=NOW - timedelta(hours=2),
        trial_number=0,
        tags=_tags(pid=777),
        evidence_from="0123456789abcdef",
    )
    verdict = judge(trial, HERE, POLICY)
    assert verdict.kind is VerdictKind.DEAD
    assert verdict.reason.startswith("its MLflow run 01234567: process 777")


def test_short_command() -> None:
    assert short_command("python3 /a/b/train.py --lr 1") == "python3 train.py"
    assert short_command("/usr/bin/python -m pkg.train --x") == "python -m pkg.train"
    assert short_command("python -c") == "python"


def test_the_judge_is_pure() -> None:
    record = _run(tags=_tags(pid=777))
    assert judge(record, HERE, POLICY) == judge(record, HERE, POLICY)


def _trial_of_unknown_zone(started: timedelta, assumed: timedelta) -> Record:
    """An Optuna 4.x trial whose naive start was read in this machine's zone (``assumed``)."""
    return Record(
        kind=RecordKind.OPTUNA_TRIAL,
        store="sqlite:///optuna.db",
        id="7",
        name="trial 3",
        container="s",
        container_id="1",
        state="RUNNING",
        started_at=NOW - started,
        trial_number=3,
        assumed_utc_offset=assumed,
    )


def test_an_age_that_depends_on_an_unknown_zone_is_not_stated_as_fact() -> None:
    # Read as UTC here; written anywhere from UTC-12 to UTC+14: 2 h could be 0 to 16 h.
    verdict = judge(_trial_of_unknown_zone(timedelta(hours=2), timedelta(0)), HERE, POLICY)
    assert verdict.kind is VerdictKind.UNKNOWN and verdict.basis is Basis.CLOCK
    assert "started 2 h ago if its writer's clock was at UTC+00:00" in verdict.reason
    assert "0 s to 16 h ago at other offsets" in verdict.reason
    assert "optuna_utc_offset" in verdict.reason


def test_an_age_the_zone_cannot_change_is_judged_as_usual() -> None:
    old = judge(_trial_of_unknown_zone(timedelta(days=3), timedelta(hours=9)), HERE, POLICY)
    assert old.kind is VerdictKind.STALE and old.basis is Basis.STALE_AFTER
    assert old.reason.startswith("started at least 2 d 3 h ago (in any time zone)")
    # Read at UTC+14 (the eastmost zone): 10 min old here is at most 10 min old anywhere.
    young = judge(_trial_of_unknown_zone(timedelta(minutes=10), timedelta(hours=14)), HERE, POLICY)
    assert young.kind is VerdictKind.UNKNOWN and "too young" in young.reason


def test_a_start_in_the_future_names_the_unknown_zone() -> None:
    # Written in Tokyo, read as UTC: 9 h ahead.
    verdict = judge(_trial_of_unknown_zone(-timedelta(hours=9), timedelta(0)), HERE, POLICY)
    assert verdict.kind is VerdictKind.UNKNOWN and verdict.basis is Basis.CLOCK
    assert verdict.reason.startswith("its start reads 9 h in the future: its storage keeps")
    assert "(read as UTC+00:00)" in verdict.reason
