"""From the shared selection options to store specs, a selection and a policy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mltidy.config import FileConfig, StoreSpec, load_file_config, resolve_stores
from mltidy.durations import parse_duration
from mltidy.judge import DEFAULT_STALE_AFTER, Policy
from mltidy.links import DEFAULT_DASHBOARD, LinkBases
from mltidy.model import Selection, utc_now


@dataclass(frozen=True)
class Resolved:
    """What a command reads, and how it judges."""

    specs: list[StoreSpec]
    selection: Selection
    policy: Policy
    config: FileConfig
    bases: LinkBases


def resolve(
    *,
    mlflow: list[str] | None,
    optuna: list[str] | None,
    experiments: list[str] | None,
    studies: list[str] | None,
    stale_after: str | None,
    mlflow_ui: str | None = None,
    dashboard_url: str | None = None,
) -> Resolved:
    """Apply the documented precedence: options, environment, config file, discovery.

    Raises:
        UsageError: a bad duration or a bad config file.
    """
    cwd = Path.cwd()
    config = load_file_config(cwd)
    specs = resolve_stores(
        mlflow=mlflow or (), optuna=optuna or (), env=os.environ, cwd=cwd, config=config
    )
    text = stale_after or config.get_str("stale_after")
    limit = parse_duration(text) if text else DEFAULT_STALE_AFTER
    return Resolved(
        specs=specs,
        selection=Selection(tuple(experiments or ()), tuple(studies or ())),
        policy=Policy(now=utc_now(), stale_after=limit),
        config=config,
        bases=LinkBases(
            mlflow_ui=mlflow_ui or config.get_str("mlflow_ui"),
            dashboard=dashboard_url or config.get_str("dashboard_url") or DEFAULT_DASHBOARD,
        ),
    )
