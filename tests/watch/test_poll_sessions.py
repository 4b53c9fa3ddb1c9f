"""One ``watch --close`` poll reads through one store session: each store opened once, one scan
for the events and for the closing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from close_world import CloseWorld, make_close_world
from mltidy.backends.identity import store_spec
from mltidy.backends.registry import open_backend
from mltidy.backends.session import StoreSession
from mltidy.model import Selection, StoreKind, StoreSpec
from mltidy.watch.poll import WatchOptions, poll
from mltidy.watch.state import WatchState


@pytest.fixture
def world(tmp_path: Path) -> Iterator[CloseWorld]:
    made = make_close_world(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        f"sqlite:///{tmp_path / 'optuna.db'}",
        tmp_path / "work",
        "opens",
    )
    yield made
    made.stop()


def test_a_close_poll_opens_each_store_once(world: CloseWorld, tmp_path: Path) -> None:
    opened: Counter[str] = Counter()
    scans: Counter[str] = Counter()

    def counting_open(kind: StoreKind, uri: str, *, writable: bool = False) -> Any:
        opened[uri] += 1
        backend = open_backend(kind, uri, writable=writable)
        real = backend.iter_active

        def iter_active(selection: Selection) -> Any:
            scans[uri] += 1
            return real(selection)

        backend.iter_active = iter_active  # type: ignore[method-assign]
        return backend

    def session(specs: Sequence[StoreSpec]) -> StoreSession:
        return StoreSession(specs, opener=counting_open)

    specs = [
        store_spec(StoreKind.MLFLOW, world.mlflow_uri, "test"),
        store_spec(StoreKind.OPTUNA, world.optuna_url, "test"),
    ]
    selection = Selection((world.name,), (world.name,))
    with WatchState(tmp_path / "state.db") as state:
        result = poll(
            specs,
            selection,
            state,
            [],
            WatchOptions(stale_after=timedelta(hours=1), close=True),
            session=session,
        )
    assert result.closed is not None
    closed = {c.item.record.id for c in result.closed.changes}
    assert str(world.killed.run_id) in closed  # the poll did close, on the same session
    assert all(s.ok for s in result.stores)
    assert dict(opened) == {spec.uri: 1 for spec in specs}
    assert dict(scans) == {spec.uri: 1 for spec in specs}
