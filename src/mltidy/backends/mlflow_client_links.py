"""Linking for MLflow file stores and tracking servers, through ``MlflowClient``.

A mix-in of :class:`~mltidy.backends.mlflow_client.MlflowClientBackend`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from mltidy.backends.interface import RunLinker
from mltidy.errors import StoreError
from mltidy.model import RunRef, StoreId

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

LINK_TAG_KEYS = ("number", "datetime_start", "mlflow.note.content", "mlflow.runName")
LINK_TAG_PREFIXES = ("mltidy.optuna.", "optuna.")


class MlflowClientLinks(RunLinker):
    """Run-side linking through MLflow's client."""

    uri: StoreId
    _client: MlflowClient
    _experiments: dict[str, str]

    def _translate(self, exc: BaseException) -> StoreError:
        raise NotImplementedError  # provided by the backend

    def _pages(self, experiment_ids: list[str], filter_string: str) -> Iterator[Run]:
        raise NotImplementedError  # provided by the backend

    def link_candidates(self, run_ids: set[str], studies: set[str]) -> list[RunRef]:
        found: dict[str, Run] = {}
        try:
            for run_id in sorted(run_ids):
                try:
                    run = self._client.get_run(run_id)
                except Exception as exc:
                    if str(getattr(exc, "error_code", "")) == "RESOURCE_DOES_NOT_EXIST":
                        continue
                    raise
                if run.info.lifecycle_stage == "active":
                    found[run.info.run_id] = run
            every = list(self._experiments)
            for study in sorted(studies):
                quoted = study.replace("'", "\\'")
                for key in ("mltidy.optuna.study", "optuna.study_name"):
                    for run in self._pages(every, f"tags.`{key}` = '{quoted}'"):
                        found[run.info.run_id] = run
                named = [i for i, name in self._experiments.items() if name == study]
                if named:
                    for run in self._pages(named, "tags.`number` LIKE '%'"):
                        found[run.info.run_id] = run
        except StoreError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc
        return [self._run_ref(run) for run in found.values()]

    def _run_ref(self, run: Run) -> RunRef:
        tags: dict[str, Any] = {
            k: v
            for k, v in run.data.tags.items()
            if k in LINK_TAG_KEYS or k.startswith(LINK_TAG_PREFIXES)
        }
        experiment_id = str(run.info.experiment_id)
        return RunRef(
            store=self.uri,
            run_id=run.info.run_id,
            name=run.info.run_name or run.info.run_id,
            experiment_id=experiment_id,
            experiment=self._experiments.get(experiment_id, experiment_id),
            tags=tags,
        )

    def write_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        try:
            self._client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception as exc:
            raise self._translate(exc) from exc
