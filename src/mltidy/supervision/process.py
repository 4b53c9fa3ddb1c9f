"""Running the supervised command: a child process, signals passed on exactly once, and the
facts of how it ended.

The child's environment carries ``MLTIDY_SUPERVISION=<id>``, which mltidy's provenance writes on
every run and trial the job (or any process it starts) creates, and ``MLFLOW_RUN_CONTEXT`` with
the same provenance as tags, which MLflow itself writes on every run even where mltidy is not
installed (:mod:`mltidy.supervision.context`). While the child runs, a sampler notes its
descendants (:mod:`mltidy.supervision.sampling`); a SIGKILL is checked against the kernel log and
the cgroups' memory events (:mod:`mltidy.supervision.oom`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

from mltidy import names
from mltidy.durations import format_duration
from mltidy.model import utc_now
from mltidy.provenance.facts import host_name
from mltidy.redact import redact
from mltidy.supervision.context import find_command, job_context, wrapped
from mltidy.supervision.oom import with_oom
from mltidy.supervision.sampling import Seen, sample
from mltidy.supervision.scheduler import stop_reason

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
#: Exit code of a shell whose command was killed by SIGKILL (128 + 9).
SHELL_SIGKILL = 137


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
        stopped_by: who stopped the job, when a scheduler did ("cancelled by the scheduler").
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
    stopped_by: str | None = None

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
            text += f" (mltidy passed on {', '.join(self.forwarded)})"
        return text

    @property
    def maybe_oom(self) -> bool:
        """SIGKILL, or a shell's 137: what the OOM killer leaves behind."""
        return self.signal is signal.SIGKILL or self.returncode == SHELL_SIGKILL


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
    base_env = {**(env if env is not None else os.environ)}
    base_env[names.SUPERVISION_ENV] = supervision_id
    base_env[SUPERVISOR_PID_ENV] = str(os.getpid())
    shown = mask_arguments(redact(" ".join(command)))
    program = find_command(command[0], base_env)
    if program is None:
        raise CommandNotFound(f"cannot run {command[0]!r}: no such command", 127)
    if not os.access(program, os.X_OK):
        raise CommandNotFound(f"cannot run {command[0]!r}: not executable", 126)
    argv, child_env = wrapped(command, job_context(supervision_id, shown, base_env), base_env)
    own_group = not interactive()
    forwarder = _Forwarder(own_group)
    previous = forwarder.install()
    started = utc_now()
    try:
        try:
            child = subprocess.Popen(
                argv,
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
        seen = Seen()
        stop = threading.Event()
        sampler = threading.Thread(
            target=sample, args=(child.pid, seen, stop), name="mltidy-sampler", daemon=True
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
        host=host_name(),
        started_at=started,
        ended_at=ended,
        returncode=returncode,
        forwarded=tuple(forwarder.sent),
    )
    if "SIGTERM" in facts.forwarded or facts.signal is signal.SIGTERM:
        facts = dataclasses.replace(facts, stopped_by=stop_reason(base_env, ended))
    with seen.lock:
        processes = dict(seen.processes)
        cgroups = dict(seen.cgroups)
    if facts.maybe_oom:
        facts = with_oom(facts, processes, cgroups)
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


__all__ = [
    "CommandNotFound",
    "ExitFacts",
    "Supervision",
    "interactive",
    "mask_arguments",
    "supervise",
]
