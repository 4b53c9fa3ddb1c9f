"""Linking for MLflow SQL stores: candidate runs by id or by the trial they name, and tag writes.

A mix-in of :class:`~mltidy.backends.mlflow_sql.MlflowSqlBackend`; it uses the backend's engine
and table objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mltidy.backends.interface import RunLinker
from mltidy.backends.sql import retry_locked, translate_sql_error
from mltidy.model import RunRef, StoreId

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

LINK_TAG_KEYS = ("number", "datetime_start", "mlflow.note.content", "mlflow.runName")
LINK_TAG_PREFIXES = ("mltidy.optuna.", "optuna.")
STUDY_TAGS = ("mltidy.optuna.study", "optuna.study_name")
CHUNK = 500


class MlflowSqlLinks(RunLinker):
    """Run-side linking over SQL (no mlflow import)."""

    uri: StoreId
    _engine: Engine
    _t: dict[str, Any]

    def link_candidates(self, run_ids: set[str], studies: set[str]) -> list[RunRef]:
        from sqlalchemy import exists, select
        from sqlalchemy.exc import SQLAlchemyError

        runs, exps, tags = self._t["runs"], self._t["experiments"], self._t["tags"]
        base = (
            select(runs.c.run_uuid, runs.c.name, runs.c.experiment_id, exps.c.name.label("exp"))
            .select_from(runs.join(exps, exps.c.experiment_id == runs.c.experiment_id))
            .where(runs.c.lifecycle_stage == "active")
        )
        names = sorted(studies)
        queries = []
        ids = sorted(run_ids)
        for start in range(0, len(ids), CHUNK):
            queries.append(base.where(runs.c.run_uuid.in_(ids[start : start + CHUNK])))
        if names:
            tagged = exists().where(
                tags.c.run_uuid == runs.c.run_uuid,
                tags.c.key.in_(STUDY_TAGS),
                tags.c.value.in_(names),
            )
            numbered = exists().where(tags.c.run_uuid == runs.c.run_uuid, tags.c.key == "number")
            queries.append(base.where(tagged))
            queries.append(base.where(exps.c.name.in_(names), numbered))
        found: dict[str, Any] = {}
        try:
            with self._engine.connect() as conn:
                for query in queries:
                    for row in conn.execute(query):
                        found[row.run_uuid] = row
                run_tags = self._link_tags(conn, list(found))
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        return [
            RunRef(
                store=self.uri,
                run_id=row.run_uuid,
                name=row.name or row.run_uuid,
                experiment_id=str(row.experiment_id),
                experiment=row.exp,
                tags=run_tags.get(row.run_uuid, {}),
            )
            for row in found.values()
        ]

    def _link_tags(self, conn: Connection, run_ids: list[str]) -> dict[str, dict[str, str]]:
        from sqlalchemy import or_, select

        tags = self._t["tags"]
        wanted = or_(
            tags.c.key.in_(LINK_TAG_KEYS),
            *(tags.c.key.like(f"{prefix}%") for prefix in LINK_TAG_PREFIXES),
        )
        found: dict[str, dict[str, str]] = {}
        for start in range(0, len(run_ids), CHUNK):
            query = select(tags.c.run_uuid, tags.c.key, tags.c.value).where(
                tags.c.run_uuid.in_(run_ids[start : start + CHUNK]), wanted
            )
            for run_id, key, value in conn.execute(query):
                found.setdefault(run_id, {})[key] = value or ""
        return found

    def write_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from sqlalchemy import delete, insert

        table = self._t["tags"]

        def attempt() -> None:
            with self._engine.begin() as conn:
                conn.execute(
                    delete(table).where(table.c.run_uuid == run_id, table.c.key.in_(list(tags)))
                )
                conn.execute(
                    insert(table),
                    [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()],
                )

        retry_locked(attempt, self.uri)
