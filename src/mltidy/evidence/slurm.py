"""SLURM as a scheduler source: ``squeue`` for live and recent jobs, ``sacct`` for older ones.

What one :meth:`SlurmSource.query` runs, whatever the number of jobs (each at most once):

1. ``squeue --noheader --all --array --states=all --jobs=ID,ID,... --Format=...``: every job the
   controller still holds, pending, running or finished less than ``MinJobAge`` ago, with its
   state, reason, times, node(s), restart count and raw exit status. Always.
2. ``squeue --noheader --all --steps --jobs=ID,... --Format=StepID,StepState,StartTime``: the
   running steps of the running jobs, only when a record names a step (``srun``) of a job that
   runs: a job can outlive the step a record ran in.
3. ``sacct --noheader --parsable2 --jobs=ID,... [--allocations] --format=...``: only for jobs
   the controller no longer holds (or steps that ended), and only where accounting storage is
   configured; "accounting storage is disabled" is recognised and said in the answer.

Every call shares one time bound (:attr:`SlurmSource.timeout`): a controller that is down makes
the clients retry for a minute or more, and a scan must not wait for that.

The clients run with ``TZ=UTC0`` and ``SLURM_TIME_FORMAT=standard``: SLURM prints times in the
local time of the process running the client, in a format users may change; pinning both
makes every time an unambiguous UTC ISO 8601 string (local time is ambiguous for an hour each
autumn). ``SQUEUE_*``/``SACCT_*`` variables, which would change the output or filter it, are
dropped; ``SLURM_CONF`` (and everything else) is passed on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from mltidy import names
from mltidy.evidence.scheduler import JobPhase, JobRef, JobStatus, SchedulerAnswer, SchedulerSource
from mltidy.evidence.slurm_parse import (
    _ACCOUNTING_DISABLED,
    _ARRAY_ID,
    _ERROR_PREFIXES,
    _INVALID_JOB_ID,
    _MAX_ERROR,
    _NUMERIC_ID,
    _STEP_ID,
    SACCT_FIELDS,
    SEP,
    SQUEUE_JOB_FIELDS,
    SQUEUE_STEP_FIELDS,
    SlurmRow,
    _reserved_step,
    parse_sacct,
    parse_squeue_jobs,
    parse_squeue_steps,
)
from mltidy.evidence.slurm_status import _gone_step, _Index, _runaway, _status, _step_of

#: The default time bound of one query, all commands together.
DEFAULT_TIMEOUT = 5.0


# -- the source ----------------------------------------------------------------------------------
class SlurmSource(SchedulerSource):
    """Asks SLURM's clients (``squeue``, ``sacct``) about the jobs records ran in.

    Args:
        timeout: the time bound of one :meth:`query`, all commands together (seconds).
        environ: the environment the clients run in (default: this process's, read at query
            time), e.g. to point ``SLURM_CONF`` or ``PATH`` elsewhere.
    """

    name = "slurm"
    title = "SLURM"

    def __init__(
        self, *, timeout: float = DEFAULT_TIMEOUT, environ: Mapping[str, str] | None = None
    ) -> None:
        self.timeout = timeout
        self._environ = environ

    # -- provenance ------------------------------------------------------------------------------
    def job_of(self, tags: Mapping[str, str]) -> JobRef | None:
        job = tags.get(names.SLURM_JOB_ID, "").strip()
        array_job = tags.get(names.SLURM_ARRAY_JOB_ID, "").strip()
        task = tags.get(names.SLURM_ARRAY_TASK_ID, "").strip()
        if _NUMERIC_ID.match(job):
            job_id = job
        elif _NUMERIC_ID.match(array_job) and _NUMERIC_ID.match(task):
            job_id = f"{array_job}_{task}"
        else:
            return None
        step: str | None = tags.get(names.SLURM_STEP_ID, "").strip()
        if not (step and _STEP_ID.match(step)) or _reserved_step(step):
            step = None
        restarts = tags.get(names.SLURM_RESTART_COUNT, "").strip()
        return JobRef(
            scheduler=self.name,
            job_id=job_id,
            step=step,
            cluster=tags.get(names.SLURM_CLUSTER, "").strip() or None,
            restarts=int(restarts) if restarts.isdigit() else None,
        )

    # -- cheap checks ----------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        return self._setup_problem(self._child_env())

    def _child_env(self) -> dict[str, str]:
        base = os.environ if self._environ is None else self._environ
        env = {k: v for k, v in base.items() if not k.startswith(("SQUEUE_", "SACCT_"))}
        env.update({"TZ": "UTC0", names.SLURM_TIME_FORMAT_ENV: "standard", "LC_ALL": "C"})
        return env

    @staticmethod
    def _setup_problem(env: Mapping[str, str]) -> str | None:
        if shutil.which("squeue", path=env.get("PATH")) is None:
            return "the SLURM client squeue is not installed on this host (not on PATH)"
        conf = env.get(names.SLURM_CONF_ENV)
        if conf and not Path(conf).is_file():
            return f"{names.SLURM_CONF_ENV}={conf} names no file"
        return None

    # -- the query -------------------------------------------------------------------------------
    def query(self, jobs: Collection[JobRef]) -> SchedulerAnswer:
        # An id squeue cannot parse would fail the whole call: such a job is simply unknown.
        refs = {
            ref
            for ref in jobs
            if ref.scheduler == self.name
            and (_NUMERIC_ID.match(ref.job_id) or _ARRAY_ID.match(ref.job_id))
        }
        if not refs:
            return SchedulerAnswer(self.title)
        run = _Runner(self._child_env(), self.timeout)
        problem = self._setup_problem(run.env)
        if problem is not None:
            return SchedulerAnswer(self.title, unavailable=problem)

        ids = _sorted_ids(ref.job_id for ref in refs)
        done = run(
            "squeue",
            "--noheader",
            "--all",
            "--array",
            "--states=all",
            f"--jobs={','.join(ids)}",
            f"--Format={_format(SQUEUE_JOB_FIELDS)}",
        )
        if isinstance(done, str):
            return SchedulerAnswer(self.title, unavailable=done, calls=run.calls)
        if done.returncode != 0 and _INVALID_JOB_ID not in done.stderr:
            return SchedulerAnswer(
                self.title,
                unavailable=f"squeue failed: {_error_text(done.stderr, done.returncode)}",
                calls=run.calls,
            )
        jobs_index = _Index(parse_squeue_jobs(done.stdout) if done.returncode == 0 else [])
        job_rows = {ref: row for ref in refs if (row := jobs_index.find(ref)) is not None}
        statuses: dict[JobRef, JobStatus] = {}
        notes: list[str] = []
        for ref, row in job_rows.items():
            if ref.step is None or row.phase is not JobPhase.RUNNING:
                statuses[ref] = _status(ref, row)

        step_refs = [ref for ref in job_rows if ref not in statuses]
        asking = _Asking(run, job_rows, statuses, notes)
        gone_steps = self._steps(asking, step_refs)

        missing = [ref for ref in refs if ref not in job_rows] + gone_steps
        if missing:
            self._accounting(asking, missing)
        for ref in gone_steps:
            if ref not in statuses:
                statuses[ref] = _gone_step(ref, job_rows[ref])
        return SchedulerAnswer(
            self.title,
            statuses=statuses,
            missing_hint="; ".join(notes) or None,
            calls=run.calls,
        )

    def _steps(self, asking: _Asking, step_refs: list[JobRef]) -> list[JobRef]:
        """Statuses of the steps of running jobs; returns the refs whose step is gone."""
        if not step_refs:
            return []
        run, job_rows, statuses, notes = asking
        done = run(
            "squeue",
            "--noheader",
            "--all",
            "--steps",
            f"--jobs={','.join(_sorted_ids(job_rows[ref].job_id for ref in step_refs))}",
            f"--Format={_format(SQUEUE_STEP_FIELDS)}",
        )
        if isinstance(done, str) or done.returncode != 0:
            error = done if isinstance(done, str) else _error_text(done.stderr, done.returncode)
            notes.append(f"the running steps could not be listed: {error}")
            return []
        running = {(row.job_id, row.step): row for row in parse_squeue_steps(done.stdout)}
        gone = []
        for ref in step_refs:
            job_row = job_rows[ref]
            # squeue names the steps of an array task by the task (123_4.0), others by id.
            step_row = running.get((job_row.label, ref.step)) or running.get(
                (job_row.job_id, ref.step)
            )
            if step_row is None:
                gone.append(ref)
            else:
                statuses[ref] = _status(ref, _step_of(job_row, step_row))
        return gone

    def _accounting(self, asking: _Asking, missing: list[JobRef]) -> None:
        """Ask sacct about jobs the controller no longer holds and steps that ended."""
        run, job_rows, statuses, notes = asking
        kept = "the controller keeps finished jobs only for MinJobAge"
        if shutil.which("sacct", path=run.env.get("PATH")) is None:
            notes.append(f"{kept}, and sacct is not installed here")
            return
        ids = _sorted_ids(job_rows[r].job_id if r in job_rows else r.job_id for r in missing)
        steps = any(ref.step for ref in missing)
        done = run(
            "sacct",
            "--noheader",
            "--parsable2",
            *(() if steps else ("--allocations",)),
            f"--jobs={','.join(ids)}",
            f"--format={','.join(SACCT_FIELDS)}",
        )
        if isinstance(done, str):
            notes.append(f"{kept}; {done}")
            return
        if _ACCOUNTING_DISABLED in (done.stderr + done.stdout).lower():
            notes.append(f"{kept}, and accounting storage (sacct) is disabled")
            return
        if done.returncode != 0:
            notes.append(f"{kept}; sacct failed: {_error_text(done.stderr, done.returncode)}")
            return
        index = _Index(parse_sacct(done.stdout))
        for ref in missing:
            known = job_rows.get(ref)
            if known is not None:  # a step that is gone from a running job: how did it end?
                step_row = index.step(known.job_id, ref.step or "")
                if step_row is not None and step_row.phase is JobPhase.ENDED:
                    statuses[ref] = _status(ref, _step_of(known, step_row))
                continue
            row = index.find(ref)
            if row is None:
                continue
            if row.phase in (JobPhase.PENDING, JobPhase.RUNNING):
                statuses[ref] = _runaway(ref, row)
                continue
            step_row = index.step(row.job_id, ref.step) if ref.step else None
            statuses[ref] = _status(ref, row if step_row is None else _step_of(row, step_row))
        if any(ref not in statuses for ref in missing if ref not in job_rows):
            notes.append("neither squeue nor sacct knows it: another cluster's job?")


# -- running the clients --------------------------------------------------------------------------
class _Asking(NamedTuple):
    """What one query works with: the clients' runner, the rows squeue gave for the refs, and
    what it found so far (statuses, and notes on what could not be asked)."""

    run: _Runner
    job_rows: Mapping[JobRef, SlurmRow]
    statuses: dict[JobRef, JobStatus]
    notes: list[str]


class _Runner:
    """Runs SLURM clients under one shared deadline; counts the calls."""

    def __init__(self, env: dict[str, str], timeout: float) -> None:
        self.env = env
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.calls = 0

    def __call__(self, command: str, *args: str) -> subprocess.CompletedProcess[str] | str:
        """The finished process, or why it could not answer (one phrase)."""
        exe = shutil.which(command, path=self.env.get("PATH"))
        if exe is None:
            return f"{command} is not installed on this host (not on PATH)"
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return f"{command} was not run: the {self.timeout:g}s time bound was used up"
        self.calls += 1
        try:
            return subprocess.run(
                [exe, *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=remaining,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            said = _error_text(_text(exc.stderr), None)
            conf = self.env.get(names.SLURM_CONF_ENV)
            where = f" ({names.SLURM_CONF_ENV}={conf})" if conf else ""
            return (
                f"{command} did not answer within {self.timeout:g}s: is slurmctld running and "
                f"reachable{where}?" + (f" It said: {said}" if said else "")
            )
        except OSError as exc:
            return f"{command} could not be run: {exc.strerror or exc}"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _error_text(stderr: str, returncode: int | None) -> str:
    """The telling lines of a client's stderr, short: the last one, and a munge one if any."""
    lines = []
    for line in stderr.splitlines():
        line = line.strip()
        for prefix in _ERROR_PREFIXES:
            line = line.removeprefix(prefix)
        if line and line not in lines:
            lines.append(line)
    if not lines:
        return f"exit status {returncode}" if returncode is not None else ""
    chosen = [lines[-1]]
    munge_lines = [line for line in lines if "munge" in line.lower()]
    munge = next((line for line in munge_lines if "failed" in line.lower()), None) or next(
        iter(munge_lines), None
    )
    if munge and munge not in chosen:
        chosen.append(munge)
    text = "; ".join(chosen)
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def _format(fields: Iterable[str]) -> str:
    return ",".join(f"{field}:{SEP}" for field in fields)


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    def key(job_id: str) -> tuple[int, ...]:
        return tuple(int(part) for part in job_id.split("_"))

    return sorted(set(ids), key=key)
