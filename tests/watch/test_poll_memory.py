"""A ``watch`` daemon remembers where each store's run history stood (``PollMemory``) and reads
only what can have ended since; it must report exactly what polls without that memory report.
Real stores, real jobs (one finishes, one is killed with SIGKILL) between the polls."""

from __future__ import annotations

import signal
from datetime import timedelta

from labs import Lab, ready
from mltidy.backends.identity import store_spec
from mltidy.model import Selection, StoreKind, utc_now
from mltidy.watch.poll import PollMemory, WatchOptions, poll
from mltidy.watch.state import WatchState


def test_a_daemon_with_memory_reports_what_polls_without_it_report(lab: Lab) -> None:
    specs = [
        store_spec(StoreKind.MLFLOW, lab.mlflow, "test"),
        store_spec(StoreKind.OPTUNA, lab.optuna, "test"),
    ]
    options = WatchOptions(stale_after=timedelta(hours=1), idle_after=timedelta(hours=1))
    memory = PollMemory()
    with WatchState(lab.root / "daemon.db") as daemon, WatchState(lab.root / "once.db") as once:

        def both() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
            now = utc_now()
            remembered = poll(specs, Selection(), daemon, [], options, now=now, memory=memory)
            fresh = poll(specs, Selection(), once, [], options, now=now)
            return (
                sorted((e.kind.value, e.key) for e in remembered.events),
                sorted((e.kind.value, e.key) for e in fresh.events),
            )

        first = both()
        assert first[0] == first[1]
        (mark,) = memory.history.values()
        finisher, killed = lab.start(2), lab.start(3000)
        try:
            ready(finisher, killed)
            killed.kill(signal.SIGKILL)
            assert finisher.wait() == 0
            second = both()
        finally:
            for job in (finisher, killed):
                job.kill(signal.SIGKILL)
        assert second[0] == second[1]
        assert {kind for kind, _ in second[0]} >= {"run-finished", "dead"}, second[0]
        (after,) = memory.history.values()
        assert after.full_at == mark.full_at  # the second poll read only what had changed
        assert after.position > mark.position
        assert str(killed.run_id) in after.running  # dead, but RUNNING until it is closed
        assert both() == ([], [])
