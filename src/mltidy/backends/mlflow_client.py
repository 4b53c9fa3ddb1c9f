"""MLflow stores reached through MLflow's own client: ``mlruns`` file stores and tracking servers.

Tracking servers are asked with MLflow's ``MlflowClient`` so that MLflow's own authentication
variables (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``, TLS settings) apply unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltidy.backends.identity import store_id
from mltidy.backends.interface import Backend, Closer, RunDeclutterer, RunHistory
from mltidy.backends.mlflow_client_links import MlflowClientLinks
from mltidy.errors import (
    NotAStore,
    StoreAccessDenied,
    StoreError,
    StoreNotFound,
    StoreUnreachable,
)
from mltidy.model import (
    CloseRequest,
    CloseResult,
    CloseStatus,
    Record,
    RecordKind,
    RunContents,
    Selection,
    StoreKind,
    from_epoch_ms,
    utc_now,
)
from mltidy.redact import redact

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

PAGE = 1000
ENDED = ("FINISHED", "FAILED", "KILLED")
TAG_PREFIXES = ("mltidy.", "optuna.")
TAG_KEYS = ("mlflow.user", "mlflow.runName", "mlflow.parentRunId")
#: A dead server should fail a scan in seconds, not after MLflow's default minutes of retries.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    # MLflow prints "View run ... at: URL" on stdout when a run ends; stdout is mltidy's report.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def file_store_path(uri: str) -> Path:
    """The directory of a ``file:`` URI or plain path."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if uri.startswith("file:"):
        return Path(uri[len("file:") :])
    return Path(uri)


def looks_like_mlruns(path: Path) -> bool:
    """Whether a directory has the layout of an MLflow file store (experiment ``meta.yaml``s)."""
    if not path.is_dir():
        return False
    try:
        for child in path.iterdir():
            meta = child / "meta.yaml"
            if child.is_dir() and meta.is_file():
                head = meta.read_text(errors="replace")[:4096]
                # An experiment's meta.yaml, not a run's (runs also name their experiment_id).
                if (
                    "experiment_id" in head
                    and "artifact_location" in head
                    and "run_uuid" not in head
                ):
                    return True
    except OSError:
        return False
    return False


class MlflowClientBackend(Backend, Closer, RunDeclutterer, RunHistory, MlflowClientLinks):
    """An MLflow file store or tracking server, read through ``MlflowClient``."""

    kind = StoreKind.MLFLOW
    close_guarantee = (
        "re-read: the run is read fresh right before the write and skipped unless RUNNING; "
        "a run that ends in the moment between the two is overwritten (REST has no "
        "compare-and-set)"
    )

    def __init__(self, uri: str, *, writable: bool = False) -> None:
        self.uri = store_id(self.kind, uri)
        self.is_server = uri.startswith(("http://", "https://"))
        if self.is_server:
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
            self.tracking_uri = uri.rstrip("/")
        else:
            path = file_store_path(uri)
            if not path.exists():
                raise StoreNotFound(
                    f"{path} does not exist", hint="check the path; mltidy never creates a store"
                )
            if not looks_like_mlruns(path):
                raise NotAStore(
                    f"{path} is not an MLflow file store (no experiment folders with meta.yaml)"
                )
            # MLflow 3 refuses the file store unless asked; reading an existing one is the point.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            self.tracking_uri = path.resolve().as_uri()
        self._client = self._open()
        self._experiments = self._list_experiments()

    def _open(self) -> MlflowClient:
        try:
            from mlflow.tracking import MlflowClient

            return MlflowClient(tracking_uri=self.tracking_uri)
        except Exception as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: BaseException) -> StoreError:
        text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        code = str(getattr(exc, "error_code", ""))
        lowered = str(exc).lower()
        if code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or " 401" in text or " 403" in text:
            return StoreAccessDenied(
                f"{self.uri}: access denied",
                hint="set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, "
                "or MLFLOW_TRACKING_TOKEN",
            )
        if any(
            marker in lowered
            for marker in (
                "connection refused",
                "max retries exceeded",
                "timed out",
                "connectionerror",
            )
        ):
            return StoreUnreachable(f"{self.uri}: cannot connect", hint="is the server running?")
        if "404" in text or "endpoint" in lowered:
            return NotAStore(f"{self.uri} does not answer like an MLflow tracking server ({text})")
        return StoreError(f"{self.uri}: {text}")

    def _list_experiments(self) -> dict[str, str]:
        from mlflow.entities import ViewType

        names: dict[str, str] = {}
        token: str | None = None
        try:
            while True:
                page = self._client.search_experiments(
                    view_type=ViewType.ACTIVE_ONLY, max_results=PAGE, page_token=token
                )
                for experiment in page:
                    names[str(experiment.experiment_id)] = experiment.name
                token = page.token
                if not token:
                    return names
        except Exception as exc:
            raise self._translate(exc) from exc

    def describe(self) -> str:
        what = "MLflow tracking server" if self.is_server else "MLflow file store"
        return f"{what}, {len(self._experiments)} active experiments"

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        ids = [i for i, name in self._experiments.items() if selection.wants_experiment(name, i)]
        for run in self._pages(ids, "attributes.status = 'RUNNING'"):
            # Some MLflow-compatible servers ignore filter_string: check it here.
            if run.info.status == "RUNNING" and run.info.lifecycle_stage == "active":
                yield self._record(run)

    def _pages(self, experiment_ids: list[str], filter_string: str) -> Iterator[Run]:
        """Every active run matching ``filter_string``, page by page, 100 experiments a call."""
        from mlflow.entities import ViewType

        for start in range(0, len(experiment_ids), 100):
            token: str | None = None
            while True:
                try:
                    page = self._client.search_runs(
                        experiment_ids=experiment_ids[start : start + 100],
                        filter_string=filter_string,
                        run_view_type=ViewType.ACTIVE_ONLY,
                        max_results=PAGE,
                        page_token=token,
                    )
                except Exception as exc:
                    raise self._translate(exc) from exc
                yield from page
                token = page.token
                if not token:
                    break

    def iter_ended_runs(self, selection: Selection, since: datetime) -> Iterator[Record]:
        from mlflow.entities import ViewType

        since_ms = int(since.timestamp() * 1000)
        ids = [i for i, name in self._experiments.items() if selection.wants_experiment(name, i)]
        found: list[Record] = []
        for start in range(0, len(ids), 100):
            token: str | None = None
            while True:
                try:
                    page = self._client.search_runs(
                        experiment_ids=ids[start : start + 100],
                        filter_string=f"attributes.end_time >= {since_ms}",
                        run_view_type=ViewType.ACTIVE_ONLY,
                        max_results=PAGE,
                        page_token=token,
                    )
                except Exception as exc:
                    raise self._translate(exc) from exc
                for run in page:
                    end = run.info.end_time
                    # Checked here too: never trust a server to filter.
                    if run.info.status in ENDED and end is not None and end >= since_ms:
                        found.append(self._record(run))
                token = page.token
                if not token:
                    break
        yield from sorted(found, key=lambda r: r.ended_at or r.started_at or since)

    def read(self, record_id: str) -> Record | None:
        try:
            run = self._client.get_run(record_id)
        except Exception as exc:
            if str(getattr(exc, "error_code", "")) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise self._translate(exc) from exc
        return self._record(run)

    def close_record(self, request: CloseRequest) -> CloseResult:
        from mlflow.entities import RunTag

        try:
            try:
                run = self._client.get_run(request.record_id)
            except Exception as exc:
                if str(getattr(exc, "error_code", "")) == "RESOURCE_DOES_NOT_EXIST":
                    return CloseResult(CloseStatus.MISSING)
                raise
            if run.info.status != "RUNNING" or run.info.lifecycle_stage != "active":
                return CloseResult(CloseStatus.NOT_RUNNING, run.info.status)
            tags = [RunTag(k, v) for k, v in request.attributes.items()]
            if tags:
                self._client.log_batch(request.record_id, tags=tags)
            self._client.set_terminated(
                request.record_id,
                status=request.new_state,
                end_time=int(request.end_time.timestamp() * 1000),
            )
        except Exception as exc:
            raise self._translate(exc) from exc
        return CloseResult(CloseStatus.CLOSED)

    def iter_closed_runs(self, selection: Selection) -> Iterator[RunContents]:
        ids = [i for i, name in self._experiments.items() if selection.wants_experiment(name, i)]
        for run in self._pages(ids, "tags.`mltidy.closed_at` LIKE '%'"):
            closed = run.data.tags.get("mltidy.closed_at")
            if not closed or run.info.status == "RUNNING":
                continue
            yield RunContents(
                record=self._record(run),
                closed_at=_parse_time(closed),
                metrics=len(run.data.metrics),
                params=len(run.data.params),
                artifacts=self._artifact_count(run.info.run_id),
            )

    def _artifact_count(self, run_id: str) -> int | None:
        try:
            return len(self._client.list_artifacts(run_id))
        except Exception:
            return None

    def soft_delete(self, run_id: str) -> bool:
        try:
            run = self._client.get_run(run_id)
            if run.info.status == "RUNNING" or run.info.lifecycle_stage != "active":
                return False
            self._client.set_tag(
                run_id, "mltidy.deleted_at", utc_now().isoformat(timespec="seconds")
            )
            self._client.delete_run(run_id)
        except Exception as exc:
            raise self._translate(exc) from exc
        return True

    def _record(self, run: Run) -> Record:
        info, data = run.info, run.data
        metric_objs: list[Any] = list(getattr(data, "_metric_objs", []) or [])
        stamps = [m.timestamp for m in metric_objs if getattr(m, "timestamp", None)]
        tags = {k: v for k, v in data.tags.items() if k in TAG_KEYS or k.startswith(TAG_PREFIXES)}
        experiment_id = str(info.experiment_id)
        return Record(
            kind=RecordKind.MLFLOW_RUN,
            store=self.uri,
            id=info.run_id,
            name=info.run_name or tags.get("mlflow.runName") or info.run_id,
            container=self._experiments.get(experiment_id, experiment_id),
            container_id=experiment_id,
            state=info.status,
            started_at=from_epoch_ms(info.start_time),
            last_activity_at=from_epoch_ms(max(stamps)) if stamps else None,
            user=info.user_id or tags.get("mlflow.user"),
            tags=tags,
            ended_at=None if info.status == "RUNNING" else from_epoch_ms(info.end_time),
        )


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


__all__ = ["MlflowClientBackend", "file_store_path", "looks_like_mlruns"]
