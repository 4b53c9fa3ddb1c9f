"""Which records a supervised job left: by supervision id, or by a pid it saw (start time too)."""

from __future__ import annotations

from datetime import datetime, timezone

from mltidy import names
from mltidy.model import JudgedRecord, Record, RecordKind, StoreId, Verdict, VerdictKind
from mltidy.supervision.cleanup import is_ours
from mltidy.supervision.process import ExitFacts, Supervision

NOW = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
EXIT = ExitFacts("python train.py", 100, "gpu-07", NOW, NOW, -9)
SUPERVISION = Supervision("sup-1", EXIT, {100: 1000.0, 101: 1001.0, 102: None})


def _item(**tags: str) -> JudgedRecord:
    record = Record(
        kind=RecordKind.MLFLOW_RUN,
        store=StoreId("sqlite:////data/mlflow.db"),
        id="r1",
        name="run",
        container="e",
        container_id="1",
        state="RUNNING",
        started_at=NOW,
        tags=tags,
    )
    return JudgedRecord(record, Verdict(VerdictKind.DEAD, "gone"))


def test_the_supervision_id_decides_on_any_host() -> None:
    assert is_ours(
        _item(**{names.SUPERVISION: "sup-1", names.HOST: "elsewhere"}), SUPERVISION, "gpu-07"
    )
    assert not is_ours(_item(**{names.SUPERVISION: "sup-2"}), SUPERVISION, "gpu-07")


def test_a_sampled_pid_counts_only_on_this_host_with_its_start_time() -> None:
    def item(pid: str, start: str | None = None, host: str = "gpu-07") -> JudgedRecord:
        tags = {names.HOST: host, names.PID: pid}
        if start is not None:
            tags[names.PID_START] = start
        return _item(**tags)

    assert is_ours(item("101", "1001.2"), SUPERVISION, "gpu-07")
    assert not is_ours(item("101", "1500.0"), SUPERVISION, "gpu-07")  # pid reused by another
    assert not is_ours(item("101", "1001.0", host="gpu-08"), SUPERVISION, "gpu-07")
    assert not is_ours(item("999"), SUPERVISION, "gpu-07")  # a pid the sampler never saw
    assert is_ours(item("102", "5.0"), SUPERVISION, "gpu-07")  # start unknown to the sampler
    assert not is_ours(item("not-a-pid"), SUPERVISION, "gpu-07")
