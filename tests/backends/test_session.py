"""The store session: URIs checked up front, each store opened once, failures kept as statuses,
writable in place, everything closed at the end."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mltidy.backends.identity import store_spec
from mltidy.backends.registry import open_backend
from mltidy.backends.session import StoreSession
from mltidy.errors import UsageError
from mltidy.model import StoreKind


def test_a_bad_scheme_is_refused_before_anything_opens(tmp_path: Path) -> None:
    opened: list[str] = []

    def opener(kind: StoreKind, uri: str, *, writable: bool = False) -> Any:
        opened.append(uri)
        return open_backend(kind, uri, writable=writable)

    specs = [
        store_spec(StoreKind.MLFLOW, f"sqlite:///{tmp_path}/m.db", "test"),
        store_spec(StoreKind.OPTUNA, "ftp://example/x", "test"),
    ]
    with pytest.raises(UsageError, match="ftp"):
        StoreSession(specs, opener=opener)
    assert opened == []


def test_failures_are_statuses_and_nothing_is_created(tmp_path: Path) -> None:
    missing = store_spec(StoreKind.MLFLOW, f"sqlite:///{tmp_path}/missing.db", "test")
    count: Counter[str] = Counter()

    def opener(kind: StoreKind, uri: str, *, writable: bool = False) -> Any:
        count[uri] += 1
        return open_backend(kind, uri, writable=writable)

    with StoreSession([missing, missing], opener=opener) as session:
        assert len(session) == 1  # one store, however often it is named
        assert session.backend(missing.key) is None
        assert session.backend(missing.key) is None  # not retried
        assert session.writable(missing.key) is None
        (status,) = session.statuses()
        assert (
            not status.ok and status.uri == missing.id and "does not exist" in (status.error or "")
        )
    assert count[missing.uri] == 1
    assert not (tmp_path / "missing.db").exists()


def test_relative_paths_become_one_absolute_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    here = store_spec(StoreKind.MLFLOW, "sqlite:///mlflow.db", "test")
    monkeypatch.chdir(tmp_path / "sub")
    there = store_spec(StoreKind.MLFLOW, "sqlite:///../mlflow.db", "test")
    assert here.id == there.id == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert here.uri == there.uri == here.id
    server = store_spec(StoreKind.OPTUNA, "postgresql+psycopg2://bob:p@ss/w rd@DB:5432/o", "t")
    assert server.id == "postgresql://bob@db:5432/o"
    # The secret stays inside, percent-encoded so that drivers read the password meant.
    assert server.uri.startswith("postgresql+psycopg2://bob:p%40ss%2Fw%20rd@")
