"""What every way of reading Optuna (SQL tables, optuna's storages) shares about trials.

A trial becomes the same :class:`~mltidy.model.Record` whichever way it was read: the same
attributes (``mltidy.*`` and the link keys) in the same text form, the same name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from mltidy import names
from mltidy.model import ActivitySource, Record, RecordKind, StoreId, TrialRef


def decode(value_json: str | None) -> Any:
    """An attribute's value from its stored JSON; the text itself when it is not JSON."""
    if value_json is None:
        return None
    try:
        return json.loads(value_json)
    except ValueError:
        return value_json


def attr_text(value: Any) -> str:
    """An attribute value in the text form records carry (strings as they are, else JSON)."""
    return value if isinstance(value, str) else json.dumps(value)


def json_text(value_json: str | None) -> str:
    """The text form of an attribute stored as JSON (``""`` when absent)."""
    return "" if value_json is None else attr_text(decode(value_json))


def carried(key: str) -> bool:
    """Whether a record carries the attribute ``key`` (``mltidy.*`` and the link keys)."""
    return key in names.TRIAL_LINK_KEYS or key.startswith(names.PREFIX)


def record_attrs(*sources: Mapping[str, Any]) -> dict[str, str]:
    """The carried attributes of user and system attribute mappings (later ones win)."""
    return {key: attr_text(value) for s in sources for key, value in s.items() if carried(key)}


def link_text(value: Any) -> str | None:
    """A link attribute's value when it is a non-empty string."""
    return value if isinstance(value, str) and value else None


def parse_budget(text: str | None) -> int | None:
    """A trial budget from an attribute's text form; ``None`` when absent or not a positive int."""
    if text is None:
        return None
    try:
        budget = int(float(text))
    except ValueError:
        return None
    return budget if budget > 0 else None


def trial_record(
    store: StoreId,
    trial: tuple[int, int, str],
    study: tuple[str, int],
    *,
    started_at: datetime | None,
    last_activity_at: datetime | None,
    tags: dict[str, str],
    assumed_utc_offset: timedelta | None = None,
) -> Record:
    """A trial as a record: ``trial`` is its (id, number, state name), ``study`` (name, id).

    A trial's own activity is always its newest Optuna heartbeat (``trial_heartbeats``):
    intermediate values carry no time in any storage."""
    trial_id, number, state = trial
    study_name, study_id = study
    return Record(
        kind=RecordKind.OPTUNA_TRIAL,
        store=store,
        id=str(trial_id),
        name=f"trial {number}",
        container=study_name,
        container_id=str(study_id),
        state=state,
        started_at=started_at,
        last_activity_at=last_activity_at,
        trial_number=number,
        tags=tags,
        activity_source=None if last_activity_at is None else ActivitySource.OPTUNA_HEARTBEAT,
        assumed_utc_offset=assumed_utc_offset,
    )


def trial_ref(
    store: StoreId,
    trial: tuple[int, int, str],
    study: tuple[str, int],
    *,
    started_at: datetime | None,
    attrs: tuple[Mapping[str, Any], Mapping[str, Any]],
    note: str,
) -> TrialRef:
    """A trial as the linker sees it: ``trial`` is its (id, number, state name), ``study``
    (name, id), ``attrs`` its decoded (user, system) attributes (the link keys at least)."""
    trial_id, number, state = trial
    study_name, study_id = study
    user, system = attrs
    return TrialRef(
        store=store,
        study=study_name,
        study_id=str(study_id),
        trial_id=str(trial_id),
        number=number,
        state=state,
        started_at=started_at,
        run_id_user_attr=link_text(user.get(names.MLFLOW_RUN_ID)),
        run_id_system_attr=link_text(system.get(names.MLFLOW_RUN_ID)),
        run_url=link_text(user.get(names.MLFLOW_RUN_URL)),
        note=note,
    )


__all__ = [
    "attr_text",
    "carried",
    "decode",
    "json_text",
    "link_text",
    "parse_budget",
    "record_attrs",
    "trial_record",
    "trial_ref",
]
