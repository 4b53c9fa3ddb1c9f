"""MLflow stores reached through MLflow's own client: ``mlruns`` file stores and tracking servers.

Tracking servers are asked with MLflow's ``MlflowClient`` so that MLflow's own authentication
variables (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``, TLS settings) apply unchanged.
This module checks and opens the store; the reads and writes are :class:`ClientOps`.
"""

from __future__ import annotations

import os
from pathlib import Path

from mltidy import names
from mltidy.backends.identity import FILE_STORE_PREFIXES, store_id, strip_scheme
from mltidy.backends.interface import (
    MakesWritable,
)
from mltidy.backends.mlflow.client_ops import ClientOps, ClientOpsBackend
from mltidy.bounded import read_head
from mltidy.errors import NotAStore, StoreNotFound
from mltidy.model import (
    StoreKind,
)

#: A dead server should fail a scan in seconds, not after MLflow's default minutes of retries.
HTTP_DEFAULTS = {
    names.MLFLOW_HTTP_MAX_RETRIES_ENV: "1",
    names.MLFLOW_HTTP_TIMEOUT_ENV: "15",
    # MLflow prints "View run ... at: URL" on stdout when a run ends; stdout is mltidy's report.
    names.MLFLOW_SUPPRESS_URL_ENV: "true",
}


def file_store_path(uri: str) -> Path:
    """The directory of a ``file:`` URI or plain path."""
    return strip_scheme(uri, FILE_STORE_PREFIXES)


#: How many entries of a folder discovery looks at before it gives up on it being ``mlruns``.
MLRUNS_ENTRIES = 200


def looks_like_mlruns(path: Path, entries: int = MLRUNS_ENTRIES) -> bool:
    """Whether a directory has the layout of an MLflow file store (experiment ``meta.yaml``s),
    judged from the first few KB of at most ``entries`` children's ``meta.yaml``."""
    if not path.is_dir():
        return False
    try:
        with os.scandir(path) as found:
            for seen, entry in enumerate(found):
                if seen >= entries:
                    break
                if not entry.is_dir(follow_symlinks=False):
                    continue
                head = read_head(Path(entry.path) / "meta.yaml")
                if head is None:
                    continue
                text = head.decode("utf-8", "replace")
                # An experiment's meta.yaml, not a run's (runs also name their experiment_id).
                if (
                    "experiment_id" in text
                    and "artifact_location" in text
                    and "run_uuid" not in text
                ):
                    return True
    except OSError:
        return False
    return False


class MlflowClientBackend(ClientOpsBackend, MakesWritable):
    """An MLflow file store or tracking server, read through ``MlflowClient``.

    Closing re-reads the run right before the write and skips it unless RUNNING; a run that
    ends in the moment between the two is overwritten (REST has no compare-and-set).
    """

    kind = StoreKind.MLFLOW

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
            os.environ.setdefault(names.MLFLOW_ALLOW_FILE_STORE_ENV, "true")
            self.tracking_uri = path.resolve().as_uri()
        self._ops = ClientOps(self.tracking_uri, self.uri)

    def make_writable(self) -> None:
        """Nothing to do: MlflowClient opens no read-only session."""

    def describe(self) -> str:
        what = "MLflow tracking server" if self.is_server else "MLflow file store"
        return f"{what}, {len(self._ops.experiments)} active experiments"


__all__ = ["MlflowClientBackend", "file_store_path", "looks_like_mlruns"]
