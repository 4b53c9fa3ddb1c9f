"""Provenance for a supervised job's MLflow runs, even where the job's Python has no mltidy.

Every MLflow install reads extra run tags from the ``MLFLOW_RUN_CONTEXT`` environment variable
(JSON) when a run starts. The supervisor puts the job's provenance there: host, boot id, pid
namespace, user, command, scheduler ids, and the supervision id by which it finds the job's
runs afterwards. A value the user set is kept, and wins for its own keys. Where mltidy is
installed in the job's environment too, its plugin writes the same tags with the exact process.

The job's pid is not known before it starts, so the command runs through ``/bin/sh -c '... exec
"$@"'``: the shell writes its own pid (``$$``) into the variable and replaces itself with the
command, which keeps that pid.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from mltidy import names
from mltidy.provenance.facts import process_facts

SHELL = "/bin/sh"
HEAD_ENV = "MLTIDY_RUN_CONTEXT_HEAD"
TAIL_ENV = "MLTIDY_RUN_CONTEXT_TAIL"
_SCRIPT = (
    f'MLFLOW_RUN_CONTEXT="${{{HEAD_ENV}}}$$${{{TAIL_ENV}}}"; export MLFLOW_RUN_CONTEXT; '
    f'unset {HEAD_ENV} {TAIL_ENV}; exec "$@"'
)
#: Tags of the supervisor's own process that do not describe the job.
_NOT_THE_JOBS = (names.PID, names.PID_START, names.CMD, names.SUPERVISION)


def find_command(program: str, env: Mapping[str, str]) -> Path | None:
    """The executable ``program`` names (a path, or a name looked up in ``PATH``)."""
    if "/" in program:
        path = Path(program)
        return path if path.is_file() else None
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    return Path(found) if found else None


def job_context(supervision_id: str, command: str, env: Mapping[str, str]) -> dict[str, str]:
    """The tags the job's runs should carry, without its pid (the shell adds it)."""
    tags = {k: v for k, v in process_facts().items() if k not in _NOT_THE_JOBS}
    tags[names.CMD] = command[:200]
    tags[names.SUPERVISION] = supervision_id
    user = env.get(names.MLFLOW_RUN_CONTEXT_ENV)
    if user:
        try:
            given = json.loads(user)
        except ValueError:
            given = None
        if isinstance(given, dict):
            tags.update({str(k): str(v) for k, v in given.items()})
    return tags


def wrapped(
    command: Sequence[str], tags: Mapping[str, str], env: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start ``command`` with ``MLFLOW_RUN_CONTEXT``
    holding ``tags`` and the job's own pid."""
    text = json.dumps({**tags, names.PID: "\x00"})
    head, _, tail = text.partition('"\\u0000"')
    child_env = dict(env)
    child_env[HEAD_ENV] = head + '"'
    child_env[TAIL_ENV] = '"' + tail
    return [SHELL, "-c", _SCRIPT, "mltidy-run", *command], child_env


__all__ = ["find_command", "job_context", "wrapped"]
