"""``run``: supervise a training command, and clean up the moment it dies.

The supervisor starts the command as a child (in a batch job, in a process group of its own;
at a terminal, in the foreground group, so the job can read it), passes signals on exactly once
(see :class:`_Forwarder`), and waits. The child's environment carries
``MLTIDY_SUPERVISION=<id>``, which mltidy's provenance writes on every run and trial the job (or
any process it starts) creates, so they can be found afterwards even if the job forked workers.
While the child runs, a sampler notes its descendants (pid and start time) and their cgroups.

When the child ends, the supervisor has certain evidence no scan can have: it saw the process
die, and how. It reads the stores, takes the runs and trials that this supervision (or one of
the processes it saw) left RUNNING, and closes them at once through :mod:`mltidy.close` (the same
compare-and-set and audit trail as ``mltidy close --yes``), with the exit facts as the reason.
A SIGKILL is often the OOM killer: the supervisor checks the kernel log and the cgroup's memory
events where it may read them, and says what it found.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from mltidy import close
from mltidy.config import StoreSpec
from mltidy.durations import format_duration
from mltidy.events import Event, EventKind, LinkSettings, Severity, describe_record, when
from mltidy.judge import Policy, short_command
from mltidy.model import JudgedRecord, RecordKind, Selection, Verdict, VerdictKind, utc_now
from mltidy.probe import LocalFacts, LocalProbe
from mltidy.provenance import facts as keys
from mltidy.redact import redact
from mltidy.scan import iter_scan

SUPERVISION_ENV = keys.SUPERVISION_ENV
SUPERVISOR_PID_ENV = "MLTIDY_SUPERVISOR_PID"
FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
#: Ctrl-Z: passed to the job, then the supervisor stops itself too; SIGCONT resumes both.
SUSPENDING = (signal.SIGTSTP,)
SAMPLE_EVERY_S = 0.5
#: Exit code of a shell whose command was killed by SIGKILL (128 + 9).
SHELL_SIGKILL = 137
KMSG = Path("/dev/kmsg")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_KMSG_KILLED = re.compile(r"Killed process (\d+) \(([^)]*)\)")
_KMSG_OOM = re.compile(r"oom-kill:.*?\bpid=(\d+)")


# -- the child's end --------------------------------------------------------------------


@dataclass(frozen=True)
class ExitFacts:
    """How the supervised command ended, as the supervisor saw it.

    Attributes:
        command: the command line (secrets redacted).
        pid: the child's pid.
        host: this host.
        started_at, ended_at: aware UTC.
        returncode: ``Popen`` convention: ``-N`` when killed by signal ``N``.
        oom: one sentence of OOM evidence (kernel log, cgroup memory events), if any applies.
        oom_killed: ``True`` when the evidence shows the OOM killer, ``False`` when it rules
            it out, ``None`` when nothing could be checked.
        forwarded: the signals passed on to the child.
    """

    command: str
    pid: int
    host: str
    started_at: datetime
    ended_at: datetime
    returncode: int
    oom: str | None = None
    oom_killed: bool | None = None
    forwarded: tuple[str, ...] = ()

    @property
    def signal(self) -> signal.Signals | None:
        """The signal that killed the child, if one did."""
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode)
        except ValueError:
            return None

    @property
    def exit_code(self) -> int:
        """The code ``mltidy run`` exits with: the child's, or 128 + N for signal N (as shells)."""
        return 128 - self.returncode if self.returncode < 0 else self.returncode

    @property
    def ok(self) -> bool:
        """Whether the child exited with code 0."""
        return self.returncode == 0

    @property
    def duration(self) -> str:
        """How long it ran, for people."""
        return format_duration(self.ended_at - self.started_at)

    def describe(self) -> str:
        """``killed by SIGKILL (signal 9)``, ``exited with code 1``, ..."""
        sig = self.signal
        if sig is not None:
            text = f"killed by {sig.name} (signal {int(sig)})"
        elif self.returncode < 0:
            text = f"killed by signal {-self.returncode}"
        else:
            text = f"exited with code {self.returncode}"
            if self.returncode > 128 and self.returncode - 128 < signal.NSIG:
                with contextlib.suppress(ValueError):
                    inner = signal.Signals(self.returncode - 128).name
                    text += f" (128 + {self.returncode - 128}: a process inside died of {inner})"
        if self.forwarded:
            text += f" after mltidy passed on {', '.join(self.forwarded)}"
        return text

    @property
    def maybe_oom(self) -> bool:
        """SIGKILL, or a shell's 137: what the OOM killer leaves behind."""
        return self.signal is signal.SIGKILL or self.returncode == SHELL_SIGKILL


@dataclass
class _Seen:
    """What the sampler saw while the child ran (shared with its thread under a lock)."""

    processes: dict[int, float | None] = field(default_factory=dict)
    cgroups: dict[str, int | None] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Supervision:
    """A finished supervision: the exit facts, and who the child was.

    Attributes:
        id: the value of ``MLTIDY_SUPERVISION`` the job's records carry.
        exit: how the child ended.
        processes: ``pid -> start time`` of the child and every descendant the sampler saw.
    """

    id: str
    exit: ExitFacts
    processes: Mapping[int, float | None]


class CommandNotFound(Exception):
    """The command could not be started (exit 127 or 126, as shells do)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def supervise(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
) -> Supervision:
    """Run ``command`` to its end, passing signals on; returns how it ended.

    Must be called from the main thread (it installs signal handlers, and restores them).
    ``stdout``/``stderr`` default to the supervisor's own (the job's output is untouched);
    ``on_start`` gets the child as soon as it exists.

    Raises:
        CommandNotFound: the command does not exist or is not executable.
    """
    supervision_id = uuid.uuid4().hex
    child_env = {**(env if env is not None else os.environ)}
    child_env[SUPERVISION_ENV] = supervision_id
    child_env[SUPERVISOR_PID_ENV] = str(os.getpid())
    shown = mask_arguments(redact(" ".join(command)))
    own_group = not interactive()
    forwarder = _Forwarder(own_group)
    previous = forwarder.install()
    started = utc_now()
    try:
        try:
            child = subprocess.Popen(
                list(command),
                env=child_env,
                stdout=stdout,
                stderr=stderr,
                text=True,
                **(_own_group() if own_group else {}),
            )
        except FileNotFoundError:
            raise CommandNotFound(f"cannot run {command[0]!r}: no such command", 127) from None
        except PermissionError:
            raise CommandNotFound(f"cannot run {command[0]!r}: not executable", 126) from None
        except OSError as exc:
            raise CommandNotFound(f"cannot run {command[0]!r}: {exc.strerror}", 126) from None
        forwarder.attach(child.pid)
        if on_start is not None:
            on_start(child)
        seen = _Seen()
        stop = threading.Event()
        sampler = threading.Thread(
            target=_sample, args=(child.pid, seen, stop), name="mltidy-sampler", daemon=True
        )
        sampler.start()
        returncode = child.wait()
        ended = utc_now()
        stop.set()
        sampler.join(timeout=2)
    finally:
        forwarder.restore(previous)
    facts = ExitFacts(
        command=shown,
        pid=child.pid,
        host=socket.gethostname(),
        started_at=started,
        ended_at=ended,
        returncode=returncode,
        forwarded=tuple(forwarder.sent),
    )
    with seen.lock:
        processes = dict(seen.processes)
        cgroups = dict(seen.cgroups)
    if facts.maybe_oom:
        facts = _with_oom(facts, processes, cgroups)
    return Supervision(supervision_id, facts, processes)


_SECRET_ARG = re.compile(
    r"(?P<opt>--?[\w-]*(?:password|passwd|token|secret|api[_-]?key|credentials?)[\w-]*)"
    r"(?P<sep>[= ])(?P<val>\S+)",
    re.IGNORECASE,
)


def mask_arguments(command: str) -> str:
    """``--api-key abc`` / ``--password=abc`` -> ``--api-key ***``: a command line goes into
    messages, and people pass secrets as options."""
    return _SECRET_ARG.sub(lambda m: f"{m['opt']}{m['sep']}***", command)


def _own_group() -> dict[str, Any]:
    """Popen arguments that put the child in a process group of its own: a signal to the
    supervisor reaches the job once (passed on), not twice (terminal + passed on)."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}  # pragma: no cover - Python 3.10


#: Signals a terminal sends to its whole foreground process group (Ctrl-C, Ctrl-\\, hangup).
TERMINAL = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def interactive() -> bool:
    """Whether the supervisor runs in the foreground of a terminal (a person typed the command)."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


class _Forwarder:
    """Signal handlers that pass signals on to the job.

    In a batch job the child has a process group of its own and every signal is passed to that
    group, once. At a terminal the child stays in the foreground group, so that it can read the
    terminal (``input()``, ``pdb``) and Ctrl-Z works as usual; the terminal's own signals then
    reach it directly and are not passed on again (the supervisor just survives them, to clean
    up); the others (``kill``) are passed to the child.

    Installed before the child starts, so a signal arriving in between is kept and passed on as
    soon as the child exists, instead of killing the supervisor and orphaning the job.
    """

    def __init__(self, own_group: bool) -> None:
        self.own_group = own_group
        self.child: int | None = None
        self.early: list[int] = []
        self.sent: list[str] = []

    def install(self) -> dict[int, Any]:
        wanted = (*FORWARDED, *SUSPENDING, signal.SIGCONT) if self.own_group else FORWARDED
        previous: dict[int, Any] = {}
        for sig in wanted:
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue  # ignored on entry (`cmd &`, nohup): the job inherits that, as without us
            with contextlib.suppress(OSError, ValueError):
                previous[sig] = signal.signal(sig, self._handle)
        return previous

    def attach(self, pid: int) -> None:
        self.child = pid
        for signum in self.early:
            self._pass(signum)
        self.early.clear()

    def restore(self, previous: Mapping[int, Any]) -> None:
        for sig, handler in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.child is None:
            self.early.append(signum)
            return
        self._pass(signum)

    def _pass(self, signum: int) -> None:
        assert self.child is not None
        if not self.own_group:
            if signum in (int(s) for s in TERMINAL):
                return  # the terminal sent it to the job too
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signum)
                self.sent.append(signal.Signals(signum).name)
            return
        try:
            os.killpg(self.child, signum)
        except ProcessLookupError:
            return
        except PermissionError:  # pragma: no cover - the job changed its own user
            with contextlib.suppress(OSError):
                os.kill(self.child, signum)
        if signum in (int(s) for s in SUSPENDING):
            os.kill(os.getpid(), signal.SIGSTOP)
        elif signum != signal.SIGCONT:
            self.sent.append(signal.Signals(signum).name)


def _sample(pid: int, seen: _Seen, stop: threading.Event) -> None:
    """Note the child's descendants and cgroups until it ends (best effort)."""
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root]
    except psutil.Error:
        return
    while True:
        with contextlib.suppress(psutil.Error):
            family = [root, *root.children(recursive=True)]
        for proc in family:
            with contextlib.suppress(psutil.Error):
                with seen.lock:
                    if proc.pid not in seen.processes:
                        seen.processes[proc.pid] = float(proc.create_time())
                for path in _cgroup_files(proc.pid):
                    with seen.lock:
                        if str(path) not in seen.cgroups:
                            seen.cgroups[str(path)] = _oom_kills(path)
        if stop.wait(SAMPLE_EVERY_S):
            return


# -- OOM evidence -------------------------------------------------------------------------


def _cgroup_files(pid: int) -> list[Path]:
    """The memory-event files of a process's cgroups (v2 ``memory.events``, v1
    ``memory.oom_control``) that exist and can be read."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    found: list[Path] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":
            for base in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
                found.append(base / rel / "memory.events")
        elif "memory" in controllers.split(","):
            found.append(CGROUP_ROOT / "memory" / rel / "memory.oom_control")
    return [p for p in found if _oom_kills(p) is not None]


def _oom_kills(path: Path) -> int | None:
    """The ``oom_kill`` counter of a memory-events file, or ``None`` when unreadable."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def _kernel_log_kills(pids: set[int]) -> dict[int, str]:
    """``pid -> name`` of the given processes the kernel log says the OOM killer killed.

    Reads ``/dev/kmsg`` without blocking (root, or ``kernel.dmesg_restrict=0``); ``{}`` when it
    cannot be read.
    """
    killed: dict[int, str] = {}
    try:
        fd = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return killed
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == 32:  # EPIPE: the ring buffer moved on under us; keep reading
                    continue
                break
            if not chunk:
                break
            text = chunk.decode("utf-8", "replace")
            for match in _KMSG_KILLED.finditer(text):
                if int(match.group(1)) in pids:
                    killed[int(match.group(1))] = match.group(2)
            for match in _KMSG_OOM.finditer(text):
                if int(match.group(1)) in pids:
                    killed.setdefault(int(match.group(1)), "?")
    finally:
        os.close(fd)
    return killed


def _with_oom(
    facts: ExitFacts, processes: Mapping[int, float | None], cgroups: Mapping[str, int | None]
) -> ExitFacts:
    pids = {facts.pid, *processes}
    killed = _kernel_log_kills(pids)
    if killed:
        which = ", ".join(f"{pid} ({name})" for pid, name in sorted(killed.items()))
        return _replace_oom(
            facts, f"the kernel log says the OOM killer killed process {which}", True
        )
    grew: list[str] = []
    readable = False
    for path, before in cgroups.items():
        after = _oom_kills(Path(path))
        if after is None or before is None:
            continue
        readable = True
        if after > before:
            grew.append(f"{Path(path).parent} ({after - before} OOM kill(s) while the job ran)")
    if grew:
        return _replace_oom(facts, "the cgroup's memory events count " + "; ".join(grew), True)
    if readable:
        return _replace_oom(
            facts,
            "not the OOM killer: the cgroup's memory events count no OOM kill while the job "
            "ran, so something else sent SIGKILL (a scheduler, a person, a timeout)",
            False,
        )
    return _replace_oom(
        facts,
        "likely the OOM killer (SIGKILL / exit 137), but neither the kernel log nor the "
        "cgroup's memory events could be read to confirm it",
        None,
    )


def _replace_oom(facts: ExitFacts, text: str, killed: bool | None) -> ExitFacts:
    return dataclasses.replace(facts, oom=text, oom_killed=killed)


# -- after the end: close what the job left RUNNING ---------------------------------------


def is_ours(item: JudgedRecord, supervision: Supervision, host: str) -> bool:
    """Whether this supervision's job started the record: by the supervision id its
    provenance carries, or by a pid (with the same start time) the sampler saw on this host."""
    tags = item.record.tags
    if tags.get(keys.SUPERVISION) == supervision.id:
        return True
    if tags.get(keys.HOST) != host:
        return False
    try:
        pid = int(tags.get(keys.PID, ""))
    except ValueError:
        return False
    if pid not in supervision.processes:
        return False
    seen, recorded = supervision.processes[pid], tags.get(keys.PID_START)
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
    pid = tags.get(keys.PID)
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


def clean_up(
    supervision: Supervision,
    specs: Sequence[StoreSpec],
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
    stores = []
    changes: list[close.Change] = []
    alive: list[JudgedRecord] = []
    for event in iter_scan(specs, selection, policy, facts):
        if not isinstance(event, JudgedRecord):
            stores.append(event)
            continue
        if not is_ours(event, supervision, facts.host):
            continue
        if event.verdict.kind is VerdictKind.ALIVE:
            alive.append(event)
            continue
        item = JudgedRecord(event.record, supervisor_verdict(event, exit_), event.url)
        if event.record.kind is RecordKind.MLFLOW_RUN:
            state = "KILLED" if exit_.signal is not None else "FAILED"
        else:
            state = "FAIL"
        changes.append(close.Change(item, state, close.end_time_of(event.record, policy.now)))
    report = close.CloseReport(tuple(stores), tuple(changes), (), dry_run=True)
    if changes:
        report = close.apply(report, specs, close.CloseOptions(as_failed=exit_.signal is None))
    return Cleanup(report, tuple(alive))


# -- the notification ---------------------------------------------------------------------


def job_event(
    supervision: Supervision, cleanup: Cleanup | None, links: LinkSettings, name: str | None = None
) -> Event:
    """One event for the job's end: what happened, the evidence, what was closed, links."""
    exit_ = supervision.exit
    label = name or job_label(exit_.command)
    took = f"after {exit_.duration}"
    if exit_.ok:
        headline = f"job {label} finished on {exit_.host} {took}"
    else:
        how = exit_.describe()
        how = f"was {how}" if how.startswith("killed") else how
        headline = f"job {label} {how} on {exit_.host} {took}"
        if exit_.oom_killed:
            headline += ": the OOM killer"
        elif exit_.maybe_oom and exit_.oom_killed is None:
            headline += ", likely the OOM killer"
    facts: list[tuple[str, str]] = [
        ("command", exit_.command[:300]),
        ("process", f"pid {exit_.pid} on {exit_.host}"),
        ("ran", f"{when(exit_.started_at)} ({exit_.duration} until {when(exit_.ended_at)})"),
        ("exit", f"{exit_.describe()}; mltidy run exits {exit_.exit_code}"),
    ]
    if exit_.oom and exit_.maybe_oom:
        facts.append(("memory", exit_.oom))
    links_: list[tuple[str, str]] = []
    if cleanup is not None:
        for change in cleanup.report.changes:
            record = change.item.record
            what = describe_record(record)
            if change.outcome is close.Outcome.CLOSED:
                facts.append(("closed", f"{what} -> {change.new_state}"))
            else:
                facts.append(("not closed", f"{what}: {change.detail}"))
            if record.kind is RecordKind.MLFLOW_RUN:
                links_.append((f"MLflow {record.name}", links.run(record)))
            elif record.trial_number is not None:
                links_.append(
                    (
                        f"optuna-dashboard {record.container} #{record.trial_number}",
                        links.trial(record.container_id, record.trial_number),
                    )
                )
        for skip in cleanup.report.skipped:
            facts.append(("left alone", f"{skip.item.record.name}: {skip.why}"))
        for item in cleanup.alive:
            facts.append(("still running", f"{item.record.name}: {item.verdict.reason}"))
    return Event(
        kind=EventKind.JOB_SUCCEEDED if exit_.ok else EventKind.JOB_FAILED,
        key=f"job:{exit_.host}:{exit_.pid}:{exit_.started_at.timestamp():.3f}",
        at=exit_.ended_at,
        headline=headline,
        severity=Severity.SUCCESS if exit_.ok else Severity.FAILURE,
        facts=tuple(facts),
        links=tuple(links_),
    )


@contextlib.contextmanager
def warmed_up(specs: Sequence[StoreSpec]) -> Iterator[None]:
    """Import the backends' libraries in the background while the job runs, so that closing
    after its death takes a fraction of a second instead of the imports' seconds."""

    def work() -> None:
        from mltidy.backends.registry import backend_factory

        with contextlib.suppress(Exception):
            for spec in specs:
                name = backend_factory(spec.kind, spec.uri).__name__
                if name.startswith("MlflowClient"):
                    import mlflow  # noqa: F401
                elif name.startswith("OptunaJournal"):
                    import optuna  # noqa: F401
                else:
                    import sqlalchemy  # noqa: F401

    thread = threading.Thread(target=work, name="mltidy-warm-up", daemon=True)
    thread.start()
    yield


__all__ = [
    "SUPERVISION_ENV",
    "Cleanup",
    "CommandNotFound",
    "ExitFacts",
    "Supervision",
    "clean_up",
    "is_ours",
    "job_event",
    "job_label",
    "mask_arguments",
    "supervise",
    "supervisor_verdict",
    "warmed_up",
]
