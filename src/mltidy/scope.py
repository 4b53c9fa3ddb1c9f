"""Which records a command works on: a :class:`~mltidy.model.Selection` resolved against the
stores of a session. Every command (scan, close, declutter, link, watch, run) selects through
this module, so an option means the same everywhere.

* **Containers, across kinds.** ``--study S`` selects the study's trials and the MLflow runs
  linked to them; ``--experiment E`` the experiment's runs and the Optuna trials linked to them.
  Linked means any convention :mod:`mltidy.linking.pairing` knows: a trial's ``mlflow_run_id``,
  the plugin's ``mltidy.optuna.*`` run tags, mltidy's ``optuna.study_name`` link tags, and
  optuna-integration's ``MLflowCallback`` (an experiment named after the study). Several names
  select the union; nothing outside it.
* **Names are checked.** A name that no store of its kind holds is a usage error that lists the
  close matches. (When a store of that kind could not be read, or none was given, mltidy
  cannot tell, and says nothing.)
* **Narrowing.** ``older_than`` (started at least that long ago), ``silent_for`` (no metric,
  heartbeat or start for that long), ``users`` and ``hosts`` must all hold as well.
* **Ids as tables show them.** ``runs`` are run ids or prefixes of them, ``trials`` are
  ``STUDY:N`` or ``#N``. One that matches several records is a usage error that lists them;
  one that matches none is reported by the command.
* **Stores filter what they can.** A backend is given only the part of the selection it can
  apply without losing a linked record (:meth:`Scope.for_backend`); the rest is checked here,
  after reading and before judging or planning.

Size: one meaning for every selection option in every command: containers across kinds, narrowing
filters and id resolution are applied together and must agree.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Protocol, TypeVar

from mltidy import names
from mltidy.backends.interface import ContainerLister, RunLinker, TrialLinker
from mltidy.backends.session import StoreSession
from mltidy.errors import StoreError, UsageError
from mltidy.judge import heartbeat_at
from mltidy.model import (
    Record,
    RecordKind,
    RunRef,
    Selection,
    StoreId,
    StoreKind,
    TrialName,
)

T = TypeVar("T")


def parse_trial(text: str) -> TrialName:
    """A trial as tables show it: ``STUDY:N`` (or ``STUDY:#N``), ``#N`` or ``N`` (any study).

    Raises:
        UsageError: none of these forms.
    """
    study, sep, number = text.strip().rpartition(":")
    number = number.strip().removeprefix("#")
    if not number.isdigit() or (sep and not study):
        raise UsageError(
            f"{text!r} is not a trial reference",
            hint="write STUDY:NUMBER (e.g. s1:12), or #NUMBER when one study has it",
        )
    return TrialName(study if sep else None, int(number))


class Links(Protocol):
    """What a scope looks up across kinds (a session reads it; tests hand in their own)."""

    def run_ids_of(self, studies: tuple[str, ...]) -> frozenset[str]:
        """The run ids the trials of these studies name (``mlflow_run_id``)."""

    def runs_naming(self, study: str) -> Sequence[RunRef]:
        """Runs whose tags name this study, or that ``MLflowCallback`` logged for it."""


class SessionLinks:
    """:class:`Links` read from a store session, each lookup once."""

    def __init__(self, session: StoreSession) -> None:
        self._session = session
        self._run_ids: dict[tuple[str, ...], frozenset[str]] = {}
        self._naming: dict[str, list[RunRef]] = {}

    def run_ids_of(self, studies: tuple[str, ...]) -> frozenset[str]:
        if studies not in self._run_ids:
            found: set[str] = set()
            for spec, backend in self._session.backends(StoreKind.OPTUNA):
                if not isinstance(backend, TrialLinker):
                    continue
                try:
                    for trial in backend.iter_link_trials(Selection(studies=studies)):
                        found.update(
                            i for i in (trial.run_id_user_attr, trial.run_id_system_attr) if i
                        )
                except StoreError as exc:
                    self._session.fail(spec.key, exc)
            self._run_ids[studies] = frozenset(found)
        return self._run_ids[studies]

    def runs_naming(self, study: str) -> Sequence[RunRef]:
        if study not in self._naming:
            found: list[RunRef] = []
            for spec, backend in self._session.backends(StoreKind.MLFLOW):
                if not isinstance(backend, RunLinker):
                    continue
                try:
                    found += backend.link_candidates(set(), {study})
                except StoreError as exc:
                    self._session.fail(spec.key, exc)
            self._naming[study] = found
        return self._naming[study]


class NoLinks:
    """:class:`Links` for a scope without stores to ask (pure tests, record lists)."""

    def run_ids_of(self, studies: tuple[str, ...]) -> frozenset[str]:
        return frozenset()

    def runs_naming(self, study: str) -> Sequence[RunRef]:
        return ()


def names_trial(tags: Mapping[str, str], experiment: str, trial: Record) -> bool:
    """Whether a run with these tags, in this experiment, says it trained ``trial``."""
    study, number = trial.container, str(trial.trial_number)
    if tags.get(names.RUN_STUDY) == study and (
        tags.get(names.RUN_TRIAL_ID) == trial.id or tags.get(names.RUN_TRIAL_NUMBER) == number
    ):
        return True
    if tags.get(names.LINK_STUDY) == study and tags.get(names.LINK_TRIAL_NUMBER) == number:
        return True
    return experiment == study and tags.get(names.CALLBACK_NUMBER) == number


def last_sign_of_life(record: Record) -> datetime | None:
    """The newest of a record's activity, heartbeat and start."""
    times = [
        t for t in (record.last_activity_at, heartbeat_at(record.tags), record.started_at) if t
    ]
    return max(times) if times else None


def _host_matches(recorded: str | None, hosts: tuple[str, ...]) -> bool:
    """``gpu-07`` matches a recorded ``gpu-07`` and ``gpu-07.cluster.local``."""
    if not recorded:
        return False
    return any(recorded == h or recorded.split(".", 1)[0] == h for h in hosts)


class Scope:
    """A selection, ready to select records of one command.

    Args:
        selection: what the person asked for.
        now: the command's "now" (ages and silences are measured from it).
        links: lookups across kinds (a session's, usually).
        experiment_names: the names of the experiments ``selection.experiments`` names by id
            (found when the names were checked).
    """

    def __init__(
        self,
        selection: Selection,
        now: datetime,
        links: Links | None = None,
        experiment_names: Iterable[str] = (),
    ) -> None:
        self.selection = selection
        self.now = now
        self._links: Links = links or NoLinks()
        self._experiment_names = frozenset((*selection.experiments, *experiment_names))
        self._studies_of_runs: set[str] = set()

    @classmethod
    def of(
        cls, session: StoreSession, selection: Selection, now: datetime, *, check: bool = True
    ) -> Scope:
        """The scope of a command over ``session``; with ``check``, unknown names are errors.

        Raises:
            UsageError: (with ``check``) an experiment or study that no store holds.
        """
        found = check_names(session, selection) if check else ()
        return cls(selection, now, SessionLinks(session), found)

    # -- what a store filters on its own --------------------------------------------------

    def for_backend(self, kind: StoreKind) -> Selection:
        """The part of the selection a backend of ``kind`` may apply itself: its own kind of
        container, unless the other kind is named too (then its linked records are needed)."""
        s = self.selection
        if kind is StoreKind.MLFLOW:
            return Selection(experiments=s.experiments) if not s.studies else Selection()
        return Selection(studies=s.studies) if not s.experiments else Selection()

    # -- containers ---------------------------------------------------------------------

    def in_experiments(self, name: str, experiment_id: str) -> bool:
        """Whether an experiment is one ``--experiment`` names."""
        return name in self._experiment_names or experiment_id in self.selection.experiments

    def wants_run(self, run: Record) -> bool:
        """Whether a run is in the named experiments, or linked to a named study."""
        s = self.selection
        if not s.by_container:
            return True
        if s.experiments and self.in_experiments(run.container, run.container_id):
            self._studies_of_runs.update(
                v for k in names.STUDY_TAGS if (v := run.tags.get(k)) is not None
            )
            return True
        if not s.studies:
            return False
        if run.container in s.studies:  # MLflowCallback: the experiment is named after the study
            return True
        if any(run.tags.get(k) in s.studies for k in names.STUDY_TAGS):
            return True
        return run.id in self._links.run_ids_of(s.studies)

    def wants_trial(self, trial: Record, run: Record | None = None) -> bool:
        """Whether a trial is in a named study, or linked to a run of a named experiment.

        ``run`` is the trial's run when the caller knows it (by ``mlflow_run_id`` or its tags).
        """
        s = self.selection
        if not s.by_container:
            return True
        if trial.container in s.studies:
            return True
        if not s.experiments:
            return False
        if trial.container in self._experiment_names:  # MLflowCallback
            return True
        if run is not None and self.in_experiments(run.container, run.container_id):
            return True
        return any(
            self.in_experiments(ref.experiment, ref.experiment_id)
            and names_trial(ref.tags, ref.experiment, trial)
            for ref in self._links.runs_naming(trial.container)
        )

    def wants_study(self, name: str) -> bool:
        """Whether a study's own events and health belong to the selection (a named study, one
        named after a named experiment, or one that runs of a named experiment name)."""
        s = self.selection
        if not s.by_container or name in s.studies:
            return True
        return bool(s.experiments) and (
            name in self._experiment_names or name in self._studies_of_runs
        )

    # -- narrowing ----------------------------------------------------------------------

    def narrows_to(self, record: Record) -> bool:
        """Whether a record passes ``older_than``, ``silent_for``, ``users`` and ``hosts``."""
        return self.narrows(
            started_at=record.started_at,
            last_seen=last_sign_of_life(record),
            users={record.user, record.tags.get(names.USER)},
            host=record.tags.get(names.HOST),
        )

    def narrows(
        self,
        *,
        started_at: datetime | None,
        last_seen: datetime | None,
        users: set[str | None],
        host: str | None,
    ) -> bool:
        """Whether something with these facts passes ``older_than`` (by its start),
        ``silent_for`` (by the last sign of life), ``users`` and ``hosts``."""
        s = self.selection
        if s.older_than is not None and (
            started_at is None or self.now - started_at < s.older_than
        ):
            return False
        if (
            s.silent_for is not None
            and last_seen is not None
            and self.now - last_seen < s.silent_for
        ):
            return False
        if s.users and not users & set(s.users):
            return False
        return not s.hosts or _host_matches(host, s.hosts)

    def wants(self, record: Record, run: Record | None = None) -> bool:
        """Whether a record is selected, ids aside (see :func:`select_named`)."""
        if record.kind is RecordKind.MLFLOW_RUN:
            wanted = self.wants_run(record)
        else:
            wanted = self.wants_trial(record, run)
        return wanted and self.narrows_to(record)


# -- names --------------------------------------------------------------------------------


def check_names(session: StoreSession, selection: Selection) -> tuple[str, ...]:
    """Check that every named experiment and study exists in a store of its kind.

    Returns:
        The names of the experiments named by id.

    Raises:
        UsageError: a name no store holds, with the close matches.
    """
    by_id: list[str] = []
    for kind, wanted in (
        (StoreKind.MLFLOW, selection.experiments),
        (StoreKind.OPTUNA, selection.studies),
    ):
        if not wanted:
            continue
        known = _containers(session, kind)
        if known is None:
            continue
        ids = {i for store in known.values() for i in store}
        held = {n for store in known.values() for n in store.values()}
        for name in wanted:
            if kind is StoreKind.MLFLOW and name in ids:
                by_id += [store[name] for store in known.values() if name in store]
            elif name not in held:
                raise _unknown(kind, name, held)
    return tuple(by_id)


def _containers(session: StoreSession, kind: StoreKind) -> dict[StoreId, dict[str, str]] | None:
    """Every store's containers of ``kind``; ``None`` when some store of that kind cannot say
    (it failed, or lists none) or there is no such store."""
    found: dict[StoreId, dict[str, str]] = {}
    for spec, backend in session.backends(kind):
        if not isinstance(backend, ContainerLister):
            return None
        try:
            found[spec.id] = backend.containers()
        except StoreError as exc:
            session.fail(spec.key, exc)
    if any(session.failed(s.key) for s in session.specs if s.kind is kind):
        return None
    return found or None


def _unknown(kind: StoreKind, name: str, held: set[str]) -> UsageError:
    noun, option = (
        ("experiment", "--experiment") if kind is StoreKind.MLFLOW else ("study", "--study")
    )
    where = "MLflow stores" if kind is StoreKind.MLFLOW else "Optuna storages"
    close = difflib.get_close_matches(name, sorted(held), n=3, cutoff=0.6)
    if close:
        hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    elif held:
        shown = sorted(held)
        more = f" and {len(shown) - 10} more" if len(shown) > 10 else ""
        hint = (
            f"{'experiments' if noun == 'experiment' else 'studies'}: {', '.join(shown[:10])}{more}"
        )
    else:
        hint = f"the {where} read hold no {noun} at all"
    return UsageError(f"{option} {name!r}: no {noun} of that name in the {where} read", hint=hint)


# -- ids ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Named:
    """A record as ids name it."""

    kind: RecordKind
    store: StoreId
    id: str
    container: str
    number: int | None
    label: str

    @classmethod
    def of(cls, record: Record) -> Named:
        """A record's names."""
        return cls(
            record.kind,
            record.store,
            record.id,
            record.container,
            record.trial_number,
            f"{record.container}: {record.name}",
        )

    @property
    def shown(self) -> str:
        """The record as tables show it."""
        if self.kind is RecordKind.OPTUNA_TRIAL:
            return f"{self.container}:{self.number}"
        return self.id[:8]

    @property
    def key(self) -> tuple[RecordKind, StoreId, str]:
        """What tells two records apart."""
        return (self.kind, self.store, self.id)


def _matches_run(prefix: str, named: Named) -> bool:
    return named.kind is RecordKind.MLFLOW_RUN and named.id.lower().startswith(prefix.lower())


def _matches_trial(trial: TrialName, named: Named) -> bool:
    return (
        named.kind is RecordKind.OPTUNA_TRIAL
        and named.number == trial.number
        and (trial.study is None or trial.study == named.container)
    )


@dataclass(frozen=True)
class NamedSelection:
    """What the ids of a selection picked out of some items."""

    keys: frozenset[tuple[RecordKind, StoreId, str]]
    missing: tuple[str, ...]

    def picks(self, names_of_item: Iterable[Named]) -> bool:
        """Whether an item (with these names) is selected."""
        return any(n.key in self.keys for n in names_of_item)


def resolve_ids(selection: Selection, candidates: Iterable[Named]) -> NamedSelection:
    """Resolve ``--run`` prefixes and ``--trial`` names against the records a command read.

    Raises:
        UsageError: an id that matches several records (they are listed).
    """
    given: list[tuple[str, Callable[[Named], bool], str]] = []
    for prefix in selection.runs:
        given.append((prefix, partial(_matches_run, prefix), f"--run {prefix}"))
    for trial in selection.trials:
        given.append((str(trial), partial(_matches_trial, trial), f"--trial {trial}"))
    found: dict[str, dict[tuple[RecordKind, StoreId, str], Named]] = {
        text: {} for text, _, _ in given
    }
    for named in candidates:
        for text, matches, _ in given:
            if matches(named):
                found[text][named.key] = named
    for text, _, option in given:
        hits = found[text]
        if len(hits) > 1:
            listed = ", ".join(sorted(f"{n.shown} ({n.label})" for n in hits.values()))
            if option.startswith("--run"):
                hint = "give more of the run id"
            else:
                hint = "name the study as STUDY:NUMBER"
            if len({n.store for n in hits.values()}) > 1:
                hint += ", or pass only the store that holds it with --mlflow/--optuna"
            raise UsageError(f"{option} matches {len(hits)} records: {listed}", hint=hint)
    keys = frozenset(k for hits in found.values() for k in hits)
    missing = tuple(text for text, _, _ in given if not found[text])
    return NamedSelection(keys, missing)


def select_named(
    items: Iterable[T], selection: Selection, names_of: Callable[[T], Sequence[Named]]
) -> tuple[list[T], tuple[str, ...]]:
    """The items the selection's ids name (all of them when it names none), and the ids that
    named nothing.

    Raises:
        UsageError: an id that matches several records.
    """
    listed = list(items)
    if not selection.names_records:
        return listed, ()
    picked = resolve_ids(selection, (n for item in listed for n in names_of(item)))
    return [item for item in listed if picked.picks(names_of(item))], picked.missing


def stream_named(
    events: Iterable[T],
    selection: Selection,
    names_of: Callable[[T], Sequence[Named]],
    on_missing: Callable[[tuple[str, ...]], Iterator[T]],
) -> Iterator[T]:
    """:func:`select_named` over a stream: events without names (store statuses) pass at once;
    named ones wait for the end of the stream, when every id can be resolved."""
    if not selection.names_records:
        yield from events
        return
    held: list[T] = []
    for event in events:
        if names_of(event):
            held.append(event)
        else:
            yield event
    picked, missing = select_named(held, selection, names_of)
    yield from picked
    yield from on_missing(missing)


__all__ = [
    "Links",
    "Named",
    "NamedSelection",
    "NoLinks",
    "Scope",
    "SessionLinks",
    "check_names",
    "last_sign_of_life",
    "names_trial",
    "parse_trial",
    "resolve_ids",
    "select_named",
    "stream_named",
]
