"""After the job ends: close what it left RUNNING, with the supervisor's evidence as the reason.

The supervisor saw the process die, and how: certain evidence no scan can have. It reads the
stores through one session, takes the runs and trials this supervision (or a process it saw)
left RUNNING, and closes them through :mod:`mltidy.close` (the same compare-and-set and audit
trail as ``mltidy close --yes``).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mltidy import close, names
from mltidy.backends.identity import scheme_of
from mltidy.backends.session import StoreSession
from mltidy.evidence.local import LocalFacts, LocalProbe
from mltidy.judge import Policy, short_command
from mltidy.model import (
    JudgedRecord,
    Selection,
    StoreKind,
    StoreSpec,
    StoreStatus,
    Verdict,
    VerdictKind,
    utc_now,
)
from mltidy.scan import iter_scan
from mltidy.scope import Scope
from mltidy.supervision.process import ExitFacts, Supervision


def is_ours(item: JudgedRecord, supervision: Supervision, host: str) -> bool:
    """Whether this supervision's job started the record: by the supervision id its
    provenance carries, or by a pid (with the same start time) the sampler saw on this host."""
    tags = item.record.tags
    if tags.get(names.SUPERVISION) == supervision.id:
        return True
    if tags.get(names.HOST) != host:
        return False
    try:
        pid = int(tags.get(names.PID, ""))
    except ValueError:
        return False
    if pid not in supervision.processes:
        return False
    seen, recorded = supervision.processes[pid], tags.get(names.PID_START)
    if seen is None or not recorded:
        return True
    try:
        return abs(float(recorded) - seen) <= 1.0
    except ValueError:
        return False


def job_label(command: str) -> str:
    """A command as people recognise it: ``python train.py``, ``python -m pkg``, ``python -c``."""
    words = command.split()
    if words[1:2] == ["-c"]:
        return f"{words[0].rsplit('/', 1)[-1]} -c"
    return short_command(command)


def supervisor_verdict(item: JudgedRecord, facts: ExitFacts) -> Verdict:
    """The supervisor's evidence, as the verdict a closed record carries."""
    tags = item.record.tags
    job = f"process {facts.pid} ({job_label(facts.command)})"
    reason = f"the supervisor (mltidy run) saw {job} die on {facts.host}: {facts.describe()}"
    if facts.stopped_by:
        reason = f"{facts.stopped_by}; {reason}"
    pid = tags.get(names.PID)
    if pid and pid != str(facts.pid):
        reason += f"; its process {pid} is gone too"
    if facts.oom and facts.oom_killed is not False:
        reason += f"; {facts.oom}"
    return Verdict(VerdictKind.DEAD, reason)


@dataclass(frozen=True)
class Cleanup:
    """What the supervisor found and did after the job ended."""

    report: close.CloseReport
    alive: tuple[JudgedRecord, ...] = ()
    others: int = 0
    """Unfinished records in the stores that are not this job's."""
    bare: int = 0
    """Of those, how many carry no provenance at all (they might be this job's)."""


def clean_up(
    supervision: Supervision,
    session: StoreSession,
    selection: Selection,
    *,
    facts: LocalFacts | None = None,
) -> Cleanup:
    """Close every run and trial the job left RUNNING (runs become KILLED after a signal,
    FAILED after an exit code; trials FAIL), with the supervisor's evidence as the reason.

    A record whose process still lives (a worker the job left behind) is left alone.
    """
    facts = facts or LocalProbe()
    policy = Policy(now=utc_now())
    exit_ = supervision.exit
    options = close.CloseOptions(as_failed=exit_.signal is None)
    stores: list[StoreStatus] = []
    changes: list[close.Change] = []
    alive: list[JudgedRecord] = []
    others = bare = 0
    # The job may have created its experiment or study itself: names are not checked here.
    scope = Scope.of(session, selection, policy.now, check=False)
    for event in iter_scan(session, selection, policy, facts, scope=scope):
        if isinstance(event, StoreStatus):
            stores.append(event)
            continue
        if not isinstance(event, JudgedRecord):
            continue
        if not is_ours(event, supervision, facts.host):
            others += 1
            bare += not event.record.tags.get(names.HOST)
            continue
        if event.verdict.kind is VerdictKind.ALIVE:
            alive.append(event)
            continue
        item = JudgedRecord(event.record, supervisor_verdict(event, exit_), event.url)
        changes.append(close.planned_change(item, options, policy.now))
    report = close.CloseReport(tuple(stores), tuple(changes), (), dry_run=True)
    if changes:
        report = close.annotate(session, close.apply(session, report, options))
    return Cleanup(report, tuple(alive), others, bare)


#: Which library opening a store of each scheme imports (what the warm-up imports ahead).
_LIBRARIES = {"http": "requests", "https": "requests", "file": "mlflow", "": "mlflow"}


@contextlib.contextmanager
def warmed_up(specs: Sequence[StoreSpec]) -> Iterator[None]:
    """Import the backends' libraries in the background while the job runs, so that closing
    after its death takes a fraction of a second instead of the imports' seconds."""

    def work() -> None:
        with contextlib.suppress(Exception):
            for spec in specs:
                scheme = scheme_of(spec.secret_uri)
                if spec.kind is StoreKind.OPTUNA and scheme in ("", "file", "journal", "redis"):
                    library = "optuna"
                else:
                    library = _LIBRARIES.get(scheme, "sqlalchemy")
                importlib.import_module(library)

    thread = threading.Thread(target=work, name="mltidy-warm-up", daemon=True)
    thread.start()
    yield


__all__ = [
    "Cleanup",
    "clean_up",
    "is_ours",
    "job_label",
    "supervisor_verdict",
    "warmed_up",
]
