"""Per-study queries of the Optuna fast path: health (for ``declutter``) and progress (``watch``).

Each is one grouped query over ``trials`` for all selected studies, plus, for progress, a few
small lookups per study (directions, best value, budget) on tables that older storages may lack.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mltidy import names
from mltidy.backends.optuna.time import StorageTimes
from mltidy.backends.optuna.trials import json_text, parse_budget
from mltidy.backends.sql import translate_sql_error
from mltidy.model import Selection, StoreId, StudyHealth, StudyProgress, utc_now

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.engine import Connection, Engine


@dataclass(frozen=True)
class StudyQueries:
    """The study queries over one storage's engine and table objects.

    Attributes:
        found_tables: the storage's tables (older storages lack some the queries read).
        times: how the storage's naive datetimes are read (shared with the backend).
    """

    engine: Engine
    t: dict[str, Any]
    uri: StoreId
    found_tables: frozenset[str]
    times: StorageTimes

    def _selected(self, query: Select[Any], selection: Selection) -> Select[Any]:
        if not selection.studies:
            return query
        return query.where(self.t["studies"].c.study_name.in_(selection.studies))

    def health(self, selection: Selection) -> list[StudyHealth]:
        from sqlalchemy import case, func, select
        from sqlalchemy.exc import SQLAlchemyError

        trials, studies = self.t["trials"], self.t["studies"]
        attrs = self.t["trial_system_attributes"]
        closed = (
            select(func.count())
            .select_from(attrs)
            .where(attrs.c.trial_id == trials.c.trial_id, attrs.c.key == names.CLOSED_AT)
            .scalar_subquery()
        )
        counts = (
            select(
                studies.c.study_name,
                func.count(trials.c.trial_id),
                func.sum(case((trials.c.state == "RUNNING", 1), else_=0)),
                func.sum(case((trials.c.state == "FAIL", 1), else_=0)),
                func.sum(case((closed > 0, 1), else_=0)),
            )
            .select_from(studies.outerjoin(trials, trials.c.study_id == studies.c.study_id))
            .group_by(studies.c.study_name)
            .order_by(studies.c.study_name)
        )
        spans = (
            select(studies.c.study_name, trials.c.datetime_start, trials.c.datetime_complete)
            .select_from(trials.join(studies, studies.c.study_id == trials.c.study_id))
            .where(trials.c.state == "FAIL")
        )
        seconds: dict[str, float] = {}
        try:
            with self.engine.connect() as conn:
                rows = list(conn.execute(self._selected(counts, selection)))
                for name, start, end in conn.execute(self._selected(spans, selection)):
                    if isinstance(start, datetime) and isinstance(end, datetime):
                        seconds[name] = seconds.get(name, 0.0) + max(
                            (end - start).total_seconds(), 0.0
                        )
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        return [
            StudyHealth(
                study=name,
                trials=int(total or 0),
                running=int(running or 0),
                failed=int(failed or 0),
                closed_by_mltidy=int(closed_n or 0),
                failed_seconds=seconds.get(name, 0.0),
            )
            for name, total, running, failed, closed_n in rows
        ]

    def progress(self, selection: Selection) -> list[StudyProgress]:
        from sqlalchemy import case, func, select
        from sqlalchemy.exc import SQLAlchemyError

        trials, studies = self.t["trials"], self.t["studies"]

        def count(state: str) -> Any:
            return func.sum(case((trials.c.state == state, 1), else_=0))

        query = (
            select(
                studies.c.study_id,
                studies.c.study_name,
                func.count(trials.c.trial_id).label("total"),
                count("RUNNING").label("running"),
                count("WAITING").label("waiting"),
                count("COMPLETE").label("complete"),
                count("PRUNED").label("pruned"),
                count("FAIL").label("failed"),
                func.min(trials.c.datetime_start).label("first_start"),
                func.max(trials.c.datetime_start).label("last_start"),
                func.max(trials.c.datetime_complete).label("last_complete"),
            )
            .select_from(studies.outerjoin(trials, trials.c.study_id == studies.c.study_id))
            .group_by(studies.c.study_id, studies.c.study_name)
            .order_by(studies.c.study_name)
        )
        now = utc_now()
        found: list[StudyProgress] = []
        try:
            with self.engine.connect() as conn:
                for row in list(conn.execute(self._selected(query, selection))):
                    directions = self._directions(conn, row.study_id)
                    best = self._best(conn, row.study_id, directions)
                    found.append(
                        StudyProgress(
                            study=row.study_name,
                            study_id=str(row.study_id),
                            directions=directions,
                            trials=int(row.total or 0),
                            running=int(row.running or 0),
                            waiting=int(row.waiting or 0),
                            complete=int(row.complete or 0),
                            pruned=int(row.pruned or 0),
                            failed=int(row.failed or 0),
                            first_started_at=self._time(row.first_start, now),
                            last_started_at=self._time(row.last_start, now),
                            last_completed_at=self._time(row.last_complete, now),
                            best_value=best[0] if best else None,
                            best_trial_number=best[1] if best else None,
                            budget=self._budget(conn, row.study_id),
                        )
                    )
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        return found

    def _time(self, value: Any, now: datetime) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return self.times.to_utc(value, now)

    def _directions(self, conn: Connection, study_id: int) -> tuple[str, ...]:
        from sqlalchemy import select

        if "study_directions" not in self.found_tables:
            return ()
        table = self.t["study_directions"]
        rows = conn.execute(
            select(table.c.direction)
            .where(table.c.study_id == study_id)
            .order_by(table.c.objective)
        )
        return tuple(str(direction).rsplit(".", 1)[-1] for (direction,) in rows)

    def _best(
        self, conn: Connection, study_id: int, directions: tuple[str, ...]
    ) -> tuple[float, int] | None:
        """The best completed trial of a single-objective study (multi-objective: none)."""
        from sqlalchemy import select

        if len(directions) != 1 or "trial_values" not in self.found_tables:
            return None
        trials, values = self.t["trials"], self.t["trial_values"]
        order = values.c.value.desc() if directions[0] == "MAXIMIZE" else values.c.value.asc()
        row = conn.execute(
            select(values.c.value, trials.c.number)
            .select_from(trials.join(values, values.c.trial_id == trials.c.trial_id))
            .where(
                trials.c.study_id == study_id,
                trials.c.state == "COMPLETE",
                values.c.objective == 0,
                values.c.value.is_not(None),
            )
            .order_by(order, trials.c.number)
            .limit(1)
        ).first()
        return (float(row[0]), int(row[1])) if row else None

    def _budget(self, conn: Connection, study_id: int) -> int | None:
        from sqlalchemy import select

        if "study_user_attributes" not in self.found_tables:
            return None
        table = self.t["study_user_attributes"]
        value = conn.execute(
            select(table.c.value_json).where(
                table.c.study_id == study_id, table.c.key == names.BUDGET
            )
        ).scalar()
        return parse_budget(json_text(value) if value is not None else None)


__all__ = ["StudyQueries"]
