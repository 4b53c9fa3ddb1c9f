"""From the shared options to what a command works on: configuration, stores, selection, policy.

Every store-reading command takes the same store and selection options; :func:`with_given`
adds the ones a command offers to its signature (so each is declared once, in
:mod:`mltidy.cli.options`) and hands the command one :class:`Given` that holds them.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from mltidy.backends.session import StoreSession
from mltidy.cli import options
from mltidy.config import STALE_AFTER, Config, WriterZones, load_config
from mltidy.durations import parse_duration
from mltidy.errors import UsageError
from mltidy.judge import DEFAULT_STALE_AFTER, Policy
from mltidy.linking.urls import LinkBases
from mltidy.model import Selection, StoreSpec, utc_now
from mltidy.scope import parse_trial
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


@dataclass(frozen=True)
class Given:
    """The store and selection options as given on the command line (``None``: not given).

    Attributes are named after the options (``--experiment`` is ``experiment``); a command that
    does not offer an option leaves it ``None``.
    """

    mlflow: list[str] | None = None
    optuna: list[str] | None = None
    experiment: list[str] | None = None
    study: list[str] | None = None
    run: list[str] | None = None
    trial: list[str] | None = None
    older_than: str | None = None
    silent_for: str | None = None
    user: list[str] | None = None
    host: list[str] | None = None
    stale_after: str | None = None
    optuna_utc_offset: list[str] | None = None

    def resolve(
        self, *, mlflow_ui: str | None = None, dashboard_url: str | None = None
    ) -> Resolved:
        """Apply the documented precedence (options, environment, config file, discovery).

        Raises:
            UsageError: a bad duration, trial reference or URL, or a bad config file.
        """
        selection = Selection(
            experiments=tuple(self.experiment or ()),
            studies=tuple(self.study or ()),
            runs=tuple(r.strip() for r in self.run or () if r.strip()),
            trials=tuple(parse_trial(t) for t in self.trial or ()),
            older_than=_duration("--older-than", self.older_than),
            silent_for=_duration("--silent-for", self.silent_for),
            users=tuple(self.user or ()),
            hosts=tuple(self.host or ()),
        )
        config = load_config()
        warn_ignored(config)
        stale_after = config.value(STALE_AFTER, self.stale_after) or DEFAULT_STALE_AFTER
        return Resolved(
            config=config,
            specs=config.stores(self.mlflow or (), self.optuna or ()),
            selection=selection,
            policy=Policy(now=utc_now(), stale_after=stale_after),
            bases=config.link_bases(mlflow_ui, dashboard_url),
            zones=config.writer_zones(self.optuna_utc_offset),
        )

    def stores(self, *, mlflow_ui: str | None = None, dashboard_url: str | None = None) -> Resolved:
        """The stores only, selecting everything (a plan file names its own records)."""
        return Given(mlflow=self.mlflow, optuna=self.optuna).resolve(
            mlflow_ui=mlflow_ui, dashboard_url=dashboard_url
        )

    def refuse_with_plan(self, *others: tuple[str, bool]) -> None:
        """Check that no option but the stores' came with ``--plan``.

        Args:
            others: the command's own options, each as (flags, given).

        Raises:
            UsageError: naming the options given.
        """
        mine = [
            (_FLAGS.get(f.name, "--" + f.name.replace("_", "-")), getattr(self, f.name))
            for f in fields(self)
            if f.name not in STORES
        ]
        given = [flags for flags, value in [*mine, *others] if value]
        if given:
            raise UsageError(
                f"--plan applies the plan as it was reviewed; it takes no {', '.join(given)}",
                hint="make a new plan with those options instead",
            )


#: Flags whose name is not the attribute's with dashes.
_FLAGS = {"experiment": "-e/--experiment", "study": "-s/--study"}

#: The options of each kind of command, in the order help lists them.
STORES = ("mlflow", "optuna")
SELECTION = ("experiment", "study", "run", "trial", "older_than", "silent_for", "user", "host")
JUDGING = ("optuna_utc_offset", *SELECTION, "stale_after")


def with_given(*names: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the options ``names`` of :class:`Given` (first in its help, in this
    order), handed to it as one ``given`` argument.

    The command declares ``given: Given`` and its own options; Typer sees the command's own
    options after these.
    """
    unknown = set(names) - set(options.GIVEN_OPTIONS)
    if unknown:
        raise ValueError(f"not options of Given: {sorted(unknown)}")

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "given"]
        added = [
            inspect.Parameter(
                name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=options.GIVEN_OPTIONS[name],
                default=None,
            )
            for name in names
        ]

        def call(**values: Any) -> None:
            given = Given(**{name: values.pop(name) for name in names})
            command(given=given, **values)

        call.__name__ = command.__name__
        call.__qualname__ = command.__qualname__
        call.__module__ = command.__module__
        call.__doc__ = command.__doc__
        parameters = [*added, *own]
        call.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        call.__annotations__ = {p.name: p.annotation for p in parameters}
        return call

    return decorate


def warn_ignored(config: Config) -> None:
    """Say which config files were found but not trusted (so not used)."""
    for ignored in config.file.ignored:
        sys.stderr.write(f"mltidy: warning: ignored the config file {safe(ignored)}\n")


def _duration(option: str, text: str | None) -> timedelta | None:
    """A duration option's value, or ``None`` when not given.

    Raises:
        UsageError: not a duration; the message names the option.
    """
    if text is None:
        return None
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise UsageError(f"{option}: {exc.message}", hint=exc.hint) from None


__all__ = ["JUDGING", "SELECTION", "STORES", "Given", "Resolved", "with_given"]
