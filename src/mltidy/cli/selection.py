"""From the shared options to what a command works on: configuration, stores, selection, policy."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from mltidy.backends.session import StoreSession
from mltidy.config import STALE_AFTER, Config, WriterZones, load_config
from mltidy.judge import DEFAULT_STALE_AFTER, Policy
from mltidy.linking.urls import LinkBases
from mltidy.model import Selection, StoreSpec, utc_now
from mltidy.text import safe


@dataclass(frozen=True)
class Resolved:
    """What a command reads, and how it judges."""

    config: Config
    specs: list[StoreSpec]
    selection: Selection
    policy: Policy
    bases: LinkBases
    zones: WriterZones | None = None

    def session(self) -> StoreSession:
        """A session over the stores (URIs checked now; stores opened when first used).

        Raises:
            UsageError: a URI has a scheme no backend reads.
        """
        return StoreSession(self.specs, zones=self.zones)


def warn_ignored(config: Config) -> None:
    """Say which config files were found but not trusted (so not used)."""
    for ignored in config.file.ignored:
        sys.stderr.write(f"mltidy: warning: ignored the config file {safe(ignored)}\n")


def resolve(
    *,
    mlflow: list[str] | None,
    optuna: list[str] | None,
    experiments: list[str] | None,
    studies: list[str] | None,
    stale_after: str | None = None,
    mlflow_ui: str | None = None,
    dashboard_url: str | None = None,
    optuna_utc_offset: list[str] | None = None,
) -> Resolved:
    """Apply the documented precedence (options, environment, config file, discovery).

    Raises:
        UsageError: a bad duration or URL, or a bad config file.
    """
    config = load_config()
    warn_ignored(config)
    return Resolved(
        config=config,
        specs=config.stores(mlflow or (), optuna or ()),
        selection=Selection(tuple(experiments or ()), tuple(studies or ())),
        policy=Policy(
            now=utc_now(), stale_after=config.value(STALE_AFTER, stale_after) or DEFAULT_STALE_AFTER
        ),
        bases=config.link_bases(mlflow_ui, dashboard_url),
        zones=config.writer_zones(optuna_utc_offset),
    )
