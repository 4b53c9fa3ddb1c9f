"""Everything mltidy does with an MLflow store through ``MlflowClient``, whatever the store is.

Both client backends hold one :class:`ClientOps`: ``client.py`` (file stores, tracking servers)
and ``library.py`` (SQL stores at revisions the fast path does not know). They differ only in
how they check and open the store; every read and write after that is here.

Closing is a re-read, not a compare-and-set: the run is read fresh right before the write and
skipped unless it is RUNNING. A run that ends in the moment between the two is overwritten
(MLflow's REST API has no compare-and-set).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mltidy import names
from mltidy.backends.interface import (
    Backend,
    Closer,
    ContainerLister,
    RunDeclutterer,
    RunHistory,
    RunLinker,
)
from mltidy.backends.mlflow.runs import (
    ENDED,
    NO_RHYTHM,
    Rhythm,
    epoch_ms,
    latest_key,
    parse_time,
    run_record,
    run_ref,
    wanted_tags,
)
from mltidy.backends.translate import first_line, mentions
from mltidy.errors import NotAStore, StoreAccessDenied, StoreError, StoreUnreachable
from mltidy.model import (
    CloseRequest,
    CloseResult,
    CloseStatus,
    Record,
    RunContents,
    RunRef,
    Selection,
    StoreId,
    utc_now,
)

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

#: Results per page, and experiments per ``search_runs`` call.
PAGE = 1000
EXPERIMENTS_PER_SEARCH = 100
#: Words in a client error that mean the server could not be reached (lower case).
UNREACHABLE = ("connection refused", "max retries exceeded", "timed out", "connectionerror")


def translate_client_error(exc: BaseException, uri: StoreId) -> StoreError:
    """An ``MlflowClient`` (or ``requests``) error as one of mltidy's, without secrets."""
    text = first_line(exc)
    code = str(getattr(exc, "error_code", ""))
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or " 401" in text or " 403" in text:
        return StoreAccessDenied(
            f"{uri}: access denied",
            hint="set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, "
            "or MLFLOW_TRACKING_TOKEN",
        )
    if mentions(str(exc), UNREACHABLE):
        return StoreUnreachable(f"{uri}: cannot connect", hint="is the server running?")
    if "404" in text or "endpoint" in str(exc).lower():
        return NotAStore(f"{uri} does not answer like an MLflow tracking server ({text})")
    return StoreError(f"{uri}: {text}")


def quiet_mlflow() -> None:
    """Before mltidy uses MLflow in its own process: no telemetry. MLflow's telemetry writes an
    installation id under ``~/.config/mlflow`` and sends events; a read must write nothing."""
    os.environ[names.MLFLOW_DISABLE_TELEMETRY_ENV] = "true"


class ClientOps:
    """An opened ``MlflowClient`` and the active experiments of its store.

    Raises (on construction):
        StoreError: the client cannot be opened or cannot list experiments.
    """

    def __init__(self, tracking_uri: str, uri: StoreId) -> None:
        self.uri = uri
        quiet_mlflow()
        try:
            from mlflow.tracking import MlflowClient

            self.client: MlflowClient = MlflowClient(tracking_uri=tracking_uri)
        except Exception as exc:
            raise self.translate(exc) from exc
        self.experiments = self._list_experiments()

    def translate(self, exc: BaseException) -> StoreError:
        return translate_client_error(exc, self.uri)

    def _list_experiments(self) -> dict[str, str]:
        from mlflow.entities import ViewType

        found: dict[str, str] = {}
        token: str | None = None
        try:
            while True:
                page = self.client.search_experiments(
                    view_type=ViewType.ACTIVE_ONLY, max_results=PAGE, page_token=token
                )
                for experiment in page:
                    found[str(experiment.experiment_id)] = experiment.name
                token = page.token
                if not token:
                    return found
        except Exception as exc:
            raise self.translate(exc) from exc

    def experiment_ids(self, selection: Selection) -> list[str]:
        return [i for i, name in self.experiments.items() if selection.wants_experiment(name, i)]

    def pages(self, experiment_ids: list[str], filter_string: str) -> Iterator[Run]:
        """Every active run matching ``filter_string``, page by page, 100 experiments a call."""
        from mlflow.entities import ViewType

        for start in range(0, len(experiment_ids), EXPERIMENTS_PER_SEARCH):
            token: str | None = None
            while True:
                try:
                    page = self.client.search_runs(
                        experiment_ids=experiment_ids[start : start + EXPERIMENTS_PER_SEARCH],
                        filter_string=filter_string,
                        run_view_type=ViewType.ACTIVE_ONLY,
                        max_results=PAGE,
                        page_token=token,
                    )
                except Exception as exc:
                    raise self.translate(exc) from exc
                yield from page
                token = page.token
                if not token:
                    break

    def get_run(self, run_id: str) -> Run | None:
        """The run, or ``None`` when the store has no such run (other errors are raised as the
        client raised them; callers translate)."""
        try:
            return self.client.get_run(run_id)
        except Exception as exc:
            if str(getattr(exc, "error_code", "")) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def rhythm(self, run: Run) -> Rhythm:
        """A RUNNING run's rhythm from the history of its most recently logged metric: one
        ``get_metric_history`` call (MLflow's client has no history of all keys at once).

        Raises:
            Exception: as the client raised it; callers translate.
        """
        metric_objs: list[Any] = list(getattr(run.data, "_metric_objs", []) or [])
        key = latest_key((m.key, getattr(m, "timestamp", None)) for m in metric_objs)
        if key is None:
            return NO_RHYTHM
        history = self.client.get_metric_history(run.info.run_id, key)
        return Rhythm.of(m.timestamp for m in history)

    def record(self, run: Run) -> Record:
        """A run as a record; a RUNNING run with its rhythm (one more call).

        Raises:
            Exception: as the client raised it; callers translate.
        """
        info, data = run.info, run.data
        metric_objs: list[Any] = list(getattr(data, "_metric_objs", []) or [])
        stamps = [m.timestamp for m in metric_objs if getattr(m, "timestamp", None)]
        experiment_id = str(info.experiment_id)
        rhythm = self.rhythm(run) if info.status == "RUNNING" else None
        return run_record(
            self.uri,
            info.run_id,
            name=info.run_name,
            experiment=self.experiments.get(experiment_id, experiment_id),
            experiment_id=experiment_id,
            state=info.status,
            times_ms=(info.start_time, info.end_time, max(stamps) if stamps else None),
            user=info.user_id,
            tags=wanted_tags(data.tags, names.RUN_TAG_KEYS, names.RUN_TAG_PREFIXES),
            rhythm=rhythm,
        )

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        for run in self.pages(self.experiment_ids(selection), "attributes.status = 'RUNNING'"):
            # Some MLflow-compatible servers ignore filter_string: check it here.
            if run.info.status == "RUNNING" and run.info.lifecycle_stage == "active":
                try:
                    record = self.record(run)
                except Exception as exc:
                    raise self.translate(exc) from exc
                yield record

    def iter_ended_runs(self, selection: Selection, since: datetime) -> Iterator[Record]:
        since_ms = epoch_ms(since)
        found = [  # finished runs: record() makes no call
            self.record(run)
            for run in self.pages(
                self.experiment_ids(selection), f"attributes.end_time >= {since_ms}"
            )
            # Checked here too: never trust a server to filter.
            if run.info.status in ENDED
            and run.info.end_time is not None
            and run.info.end_time >= since_ms
        ]
        yield from sorted(found, key=lambda r: r.ended_at or r.started_at or since)

    def read(self, record_id: str) -> Record | None:
        try:
            run = self.get_run(record_id)
            return None if run is None else self.record(run)
        except Exception as exc:
            raise self.translate(exc) from exc

    def close_record(self, request: CloseRequest) -> CloseResult:
        from mlflow.entities import RunTag

        try:
            run = self.get_run(request.record_id)
            if run is None:
                return CloseResult(CloseStatus.MISSING)
            if run.info.status != "RUNNING" or run.info.lifecycle_stage != "active":
                return CloseResult(CloseStatus.NOT_RUNNING, run.info.status)
            tags = [RunTag(k, v) for k, v in request.attributes.items()]
            if tags:
                self.client.log_batch(request.record_id, tags=tags)
            self.client.set_terminated(
                request.record_id, status=request.new_state, end_time=epoch_ms(request.end_time)
            )
        except Exception as exc:
            raise self.translate(exc) from exc
        return CloseResult(CloseStatus.CLOSED)

    def iter_closed_runs(self, selection: Selection) -> Iterator[RunContents]:
        closed_filter = f"tags.`{names.CLOSED_AT}` LIKE '%'"
        for run in self.pages(self.experiment_ids(selection), closed_filter):
            closed = run.data.tags.get(names.CLOSED_AT)
            if not closed or run.info.status == "RUNNING":
                continue
            yield RunContents(
                record=self.record(run),
                closed_at=parse_time(closed),
                metrics=len(run.data.metrics),
                params=len(run.data.params),
                artifacts=self._artifact_count(run.info.run_id),
            )

    def _artifact_count(self, run_id: str) -> int | None:
        try:
            return len(self.client.list_artifacts(run_id))
        except Exception:
            return None

    def soft_delete(self, run_id: str) -> bool:
        try:
            run = self.client.get_run(run_id)
            if run.info.status == "RUNNING" or run.info.lifecycle_stage != "active":
                return False
            self.client.set_tag(run_id, names.DELETED_AT, utc_now().isoformat(timespec="seconds"))
            self.client.delete_run(run_id)
        except Exception as exc:
            raise self.translate(exc) from exc
        return True

    def link_candidates(self, run_ids: set[str], studies: set[str]) -> list[RunRef]:
        found: dict[str, Run] = {}
        try:
            for run_id in sorted(run_ids):
                run = self.get_run(run_id)
                if run is not None and run.info.lifecycle_stage == "active":
                    found[run.info.run_id] = run
            every = list(self.experiments)
            for study in sorted(studies):
                quoted = study.replace("'", "\\'")
                for key in names.STUDY_TAGS:
                    for run in self.pages(every, f"tags.`{key}` = '{quoted}'"):
                        found[run.info.run_id] = run
                named = [i for i, name in self.experiments.items() if name == study]
                if named:
                    numbered = f"tags.`{names.CALLBACK_NUMBER}` LIKE '%'"
                    for run in self.pages(named, numbered):
                        found[run.info.run_id] = run
        except StoreError:
            raise
        except Exception as exc:
            raise self.translate(exc) from exc
        return [self._run_ref(run) for run in found.values()]

    def _run_ref(self, run: Run) -> RunRef:
        experiment_id = str(run.info.experiment_id)
        return run_ref(
            self.uri,
            run.info.run_id,
            run.info.run_name,
            (experiment_id, self.experiments.get(experiment_id, experiment_id)),
            wanted_tags(run.data.tags, names.LINK_RUN_TAG_KEYS, names.LINK_RUN_TAG_PREFIXES),
        )

    def write_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        try:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception as exc:
            raise self.translate(exc) from exc


class ClientOpsBackend(Backend, Closer, RunDeclutterer, RunHistory, RunLinker, ContainerLister):
    """The capabilities of an MLflow store read and written through :class:`ClientOps` (the
    client path of file stores and tracking servers, and the library path of SQL stores): each
    is the same call on the backend's ``_ops``, made by the subclass's constructor."""

    _ops: ClientOps

    def containers(self) -> dict[str, str]:
        return dict(self._ops.experiments)

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        return self._ops.iter_active(selection)

    def read(self, record_id: str) -> Record | None:
        return self._ops.read(record_id)

    def iter_ended_runs(self, selection: Selection, since: datetime) -> Iterator[Record]:
        return self._ops.iter_ended_runs(selection, since)

    def close_record(self, request: CloseRequest) -> CloseResult:
        return self._ops.close_record(request)

    def iter_closed_runs(self, selection: Selection) -> Iterator[RunContents]:
        return self._ops.iter_closed_runs(selection)

    def soft_delete(self, run_id: str) -> bool:
        return self._ops.soft_delete(run_id)

    def link_candidates(self, run_ids: set[str], studies: set[str]) -> list[RunRef]:
        return self._ops.link_candidates(run_ids, studies)

    def write_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self._ops.write_run_tags(run_id, tags)


__all__ = [
    "ClientOps",
    "ClientOpsBackend",
    "translate_client_error",
]
