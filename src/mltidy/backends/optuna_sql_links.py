"""Linking for Optuna RDB storages: trials with their link attributes and notes, and writes.

A mix-in of :class:`~mltidy.backends.optuna_sql.OptunaSqlBackend`. Writes go straight to the
tables in one transaction: optuna's storage API refuses attributes on finished trials, and the
trials worth linking are mostly finished.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mltidy import dashboard_notes
from mltidy.backends.interface import TrialLinker
from mltidy.backends.sql import retry_locked, translate_sql_error
from mltidy.model import Selection, StoreId, TrialRef

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine


def _decode(value_json: str | None) -> Any:
    if value_json is None:
        return None
    try:
        return json.loads(value_json)
    except ValueError:
        return value_json


class OptunaSqlLinks(TrialLinker):
    """Trial-side linking over SQL (no optuna import)."""

    uri: StoreId
    _engine: Engine
    _t: dict[str, Any]
    _naive_utc: bool

    def _study_attrs_table(self) -> Any:
        from sqlalchemy import Integer, String, column, table

        return table(
            "study_system_attributes",
            column("study_id", Integer),
            column("key", String),
            column("value_json", String),
        )

    def iter_link_trials(self, selection: Selection) -> Iterator[TrialRef]:
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        from mltidy.backends.optuna_time import rdb_to_utc
        from mltidy.model import utc_now

        trials, studies = self._t["trials"], self._t["studies"]
        user, system = self._t["trial_user_attributes"], self._t["trial_system_attributes"]
        study_attrs = self._study_attrs_table()
        query = select(
            trials.c.trial_id,
            trials.c.number,
            trials.c.state,
            trials.c.datetime_start,
            studies.c.study_id,
            studies.c.study_name,
        ).select_from(trials.join(studies, studies.c.study_id == trials.c.study_id))
        if selection.studies:
            query = query.where(studies.c.study_name.in_(selection.studies))
        now = utc_now()
        try:
            with self._engine.connect() as conn:
                rows = list(conn.execute(query))
                study_ids = sorted({row.study_id for row in rows})
                attrs: dict[tuple[str, int], dict[str, Any]] = {}
                for name, table in (("user", user), ("system", system)):
                    attr_query = select(table.c.trial_id, table.c.key, table.c.value_json).where(
                        table.c.key.in_(["mlflow_run_id", "mlflow_run_url"])
                    )
                    for trial_id, key, value in conn.execute(attr_query):
                        attrs.setdefault((name, trial_id), {})[key] = _decode(value)
                notes = self._notes(conn, study_attrs, study_ids)
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        for row in rows:
            user_attrs = attrs.get(("user", row.trial_id), {})
            system_attrs = attrs.get(("system", row.trial_id), {})
            _, note, _ = dashboard_notes.read_note(notes.get(row.study_id, {}), row.trial_id)
            yield TrialRef(
                store=self.uri,
                study=row.study_name,
                study_id=str(row.study_id),
                trial_id=str(row.trial_id),
                number=int(row.number),
                state=str(row.state).rsplit(".", 1)[-1],
                started_at=rdb_to_utc(row.datetime_start, naive_utc=self._naive_utc, now=now),
                run_id_user_attr=_str(user_attrs.get("mlflow_run_id")),
                run_id_system_attr=_str(system_attrs.get("mlflow_run_id")),
                run_url=_str(user_attrs.get("mlflow_run_url")),
                note=note,
            )

    def _notes(
        self, conn: Connection, study_attrs: Any, study_ids: list[int]
    ) -> dict[int, dict[str, Any]]:
        from sqlalchemy import select

        notes: dict[int, dict[str, Any]] = {}
        if not study_ids:
            return notes
        query = select(study_attrs.c.study_id, study_attrs.c.key, study_attrs.c.value_json).where(
            study_attrs.c.study_id.in_(study_ids), study_attrs.c.key.like("dashboard:%")
        )
        for study_id, key, value in conn.execute(query):
            notes.setdefault(study_id, {})[key] = _decode(value)
        return notes

    def write_trial_link(self, trial: TrialRef, run_url: str | None, note: str | None) -> str:
        from sqlalchemy import delete, insert

        user = self._t["trial_user_attributes"]
        study_attrs = self._study_attrs_table()
        trial_id, study_id = int(trial.trial_id), int(trial.study_id)

        def attempt() -> str:
            with self._engine.begin() as conn:
                if run_url is not None:
                    conn.execute(
                        delete(user).where(
                            user.c.trial_id == trial_id, user.c.key == "mlflow_run_url"
                        )
                    )
                    conn.execute(
                        insert(user).values(
                            trial_id=trial_id, key="mlflow_run_url", value_json=json.dumps(run_url)
                        )
                    )
                if note is not None:
                    current = self._notes(conn, study_attrs, [study_id]).get(study_id, {})
                    version, _, chunks = dashboard_notes.read_note(current, trial_id)
                    values = dashboard_notes.note_attrs(trial_id, version + 1, note, chunks)
                    conn.execute(
                        delete(study_attrs).where(
                            study_attrs.c.study_id == study_id,
                            study_attrs.c.key.in_(list(values)),
                        )
                    )
                    conn.execute(
                        insert(study_attrs),
                        [
                            {"study_id": study_id, "key": k, "value_json": json.dumps(v)}
                            for k, v in values.items()
                        ],
                    )
            return ""

        return retry_locked(attempt, self.uri)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


__all__ = ["OptunaSqlLinks"]
