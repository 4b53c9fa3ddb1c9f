"""The judge: a pure function from evidence to a verdict and a checkable reason.

These tests hand it constructed facts; tests/test_liveness.py hands it real processes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from mltidy.judge import Policy, judge, short_command
from mltidy.model import Record, RecordKind, VerdictKind
from mltidy.probe import ProcessInfo, StaticFacts

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
    assert recent.kind is VerdictKind.ALIVE
    assert recent.reason == "last metric 2 min ago from gpu-03"
    silent = judge(_run(last=timedelta(hours=2, minutes=14), tags=tags), HERE, POLICY)
    assert silent.kind is VerdictKind.STALE
    assert silent.reason.startswith("last metric 2 h 14 min ago from gpu-03")
    young = judge(_run(started=timedelta(minutes=5), tags=tags), HERE, POLICY)
    assert young.kind is VerdictKind.UNKNOWN


def test_mltidy_heartbeat_counts_as_activity() -> None:
    tags = {
        **_tags(host="gpu-03"),
        "mltidy.heartbeat_at": (NOW - timedelta(seconds=40)).isoformat(),
    }
    verdict = judge(_run(last=timedelta(hours=5), tags=tags), HERE, POLICY)
    assert verdict.kind is VerdictKind.ALIVE
    assert verdict.reason == "last heartbeat 40 s ago from gpu-03"
    tags["mltidy.heartbeat_at"] = (NOW - timedelta(hours=2, minutes=14)).isoformat()
    verdict = judge(_run(last=timedelta(hours=5), tags=tags), HERE, POLICY)
    assert verdict.kind is VerdictKind.STALE
    assert verdict.reason.startswith("last heartbeat 2 h 14 min ago from gpu-03")


def test_without_provenance_silence_longer_than_stale_after_is_stale() -> None:
    verdict = judge(_run(last=timedelta(hours=2, minutes=14)), HERE, POLICY)
    assert verdict.kind is VerdictKind.STALE
    assert "2 h 14 min" in verdict.reason


def test_without_provenance_recent_activity_is_alive() -> None:
    verdict = judge(_run(last=timedelta(minutes=5)), HERE, POLICY)
    assert verdict.kind is VerdictKind.ALIVE


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
