"""``--format json`` is written record by record, and is exactly the document json.dumps makes."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest

from mltidy.cli.render import JSON_VERSION, record_dict, store_dict, write_json
from mltidy.model import (
    JudgedRecord,
    Record,
    RecordKind,
    StoreKind,
    StoreStatus,
    Verdict,
    VerdictKind,
)


def _record(n: int) -> JudgedRecord:
    record = Record(
        kind=RecordKind.OPTUNA_TRIAL if n % 2 else RecordKind.MLFLOW_RUN,
        store="sqlite:///m\u00e9lange.db",
        id=f"{n:032x}",
        name=f'run "{n}"\nsecond line',
        container="exp",
        container_id="1",
        state="RUNNING",
        started_at=datetime(2026, 1, 1, 10, n % 60, tzinfo=timezone.utc),
        last_activity_at=None if n % 3 else datetime(2026, 1, 1, 11, tzinfo=timezone.utc),
        trial_number=n if n % 2 else None,
    )
    return JudgedRecord(record, Verdict(VerdictKind.STALE, "no metric for 2 h"), None)


@pytest.mark.parametrize("count", [0, 1, 3])
@pytest.mark.parametrize("store_count", [0, 1, 2])
def test_streamed_json_is_the_document_json_dumps_makes(count: int, store_count: int) -> None:
    stores = [
        StoreStatus(
            f"sqlite:///s{n}.db", StoreKind.MLFLOW, ok=n == 0, error=None if n == 0 else "x"
        )
        for n in range(store_count)
    ]
    records = [_record(n) for n in range(count)]
    out = io.StringIO()
    write_json(stores, records, out)
    payload = {
        "version": JSON_VERSION,
        "stores": [store_dict(s) for s in stores],
        "records": [record_dict(r) for r in records],
    }
    assert out.getvalue() == json.dumps(payload, indent=2) + "\n"
    assert json.loads(out.getvalue()) == payload


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": None, "c": 'x\u00e9\n"', "d": True, "e": 1.5, "f": float("nan")},
        {},
        [],
        [{"a": 1}],
        {"a": [1, 2]},
        {"a": {"b": 1}},
        "text",
        None,
    ],
)
@pytest.mark.parametrize("depth", [0, 2, 4])
def test_indented_is_json_dumps_text_for_text(value: object, depth: int) -> None:
    from mltidy.cli.render import indented

    expected = json.dumps(value, indent=2).replace("\n", "\n" + " " * depth)
    assert indented(value, depth) == expected
