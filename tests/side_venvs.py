"""Side virtual environments for jobs that run where mltidy is not installed.

Users train in environments without mltidy (they install it with pipx, or in a venv of its
own), and many still write Optuna 4.x storages. These fixtures build such environments with
``python -m venv`` and pip, once per requirement set, and keep them between test sessions in a
cache folder (``MLTIDY_TEST_VENVS``, default ``~/.cache/mltidy-tests/venvs``):

* ``job_python``: mlflow-skinny and optuna (the versions this environment has), no mltidy;
* ``optuna4_python``: the newest Optuna 4.x and mlflow-skinny, no mltidy.

Both are built at once, on first use. When pip cannot build them (no package index), the tests
that need them are skipped, except under ``MLTIDY_REQUIRE_SERVERS=1``, where that fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from servers import REQUIRE_SERVERS_ENV, servers_required

HERE = Path(__file__).resolve().parent
#: The tutorial-style job the side environments run.
TRAIN = HERE / "field_jobs" / "train.py"
PIP_TIMEOUT = 900


@dataclass(frozen=True)
class SideVenvs:
    """The pythons of the side environments."""

    job: Path
    optuna4: Path


def _requirements() -> dict[str, list[str]]:
    mlflow = metadata.version("mlflow-skinny")
    optuna = metadata.version("optuna")
    sqlalchemy = metadata.version("sqlalchemy")
    common = [f"mlflow-skinny=={mlflow}", f"sqlalchemy=={sqlalchemy}", "alembic"]
    return {"job": [f"optuna=={optuna}", *common], "optuna4": ["optuna<5", *common]}


def _cache() -> Path:
    explicit = os.environ.get("MLTIDY_TEST_VENVS")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mltidy-tests" / "venvs"


def build(name: str, requirements: list[str]) -> Path:
    """The python of a venv with ``requirements`` and without mltidy, built once and cached.

    Raises:
        RuntimeError: venv or pip failed (with pip's last lines).
    """
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:12]
    folder = _cache() / f"{name}-{key}"
    python = folder / "bin" / "python"
    if (folder / ".complete").exists() and python.exists():
        return python
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True, timeout=300)
    done = subprocess.run(
        [str(partial / "bin" / "python"), "-m", "pip", "install", "-q", *requirements],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": ""},
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(requirements)} failed:\n{done.stderr[-2000:]}")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    # A venv records its own path in its scripts; the python binary itself moves fine.
    (folder / ".complete").write_text("\n".join(requirements) + "\n")
    return python


def without_mltidy_env() -> dict[str, str]:
    """The environment of a job in a side venv: this one's, minus what would let it import
    the mltidy under test (PYTHONPATH) or talk to a store by default."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def assert_no_mltidy(python: Path) -> None:
    """The side venv really has no mltidy (the point of it)."""
    found = subprocess.run(
        [str(python), "-c", "import mltidy"],
        capture_output=True,
        env=without_mltidy_env(),
        timeout=60,
    )
    assert found.returncode != 0, f"{python} can import mltidy"


@pytest.fixture(scope="session")
def side_venvs() -> SideVenvs:
    wanted = _requirements()
    try:
        with ThreadPoolExecutor(len(wanted)) as pool:
            built = dict(zip(wanted, pool.map(lambda n: build(n, wanted[n]), wanted), strict=True))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        reason = f"cannot build the side venvs: {exc}"
        if servers_required():
            pytest.fail(f"{reason}\n({REQUIRE_SERVERS_ENV}=1: refusing to skip)", pytrace=False)
        pytest.skip(reason)
    venvs = SideVenvs(job=built["job"], optuna4=built["optuna4"])
    for python in (venvs.job, venvs.optuna4):
        assert_no_mltidy(python)
    return venvs


@dataclass
class SideJob:
    """One tutorial job (``field_jobs/train.py``) running in a side venv."""

    process: subprocess.Popen[str]
    started: float
    log: Path
    run_id: str | None = None
    trial_number: int | None = None
    pid: int | None = None
    ready_at: float | None = None

    def wait_ready(self, timeout: float = 240.0) -> SideJob:
        """Block until the job printed its ready line.

        Raises:
            AssertionError: it exited first, or took longer than ``timeout``.
        """
        import time

        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                if self.process.poll() is not None:
                    raise AssertionError(f"job exited early:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.05)
                continue
            if line.startswith("ready "):
                _, run_id, number, pid = line.split()
                self.run_id = None if run_id == "-" else run_id
                self.trial_number, self.pid = int(number), int(pid)
                self.ready_at = time.time()
                return self
        self.process.kill()
        raise AssertionError(f"job not ready within {timeout:.0f} s:\n{self.log.read_text()}")

    def kill(self, sig: int) -> float:
        """Send a real signal to the job's process; the time it was sent."""
        import time

        sent = time.time()
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        self.process.wait(timeout=60)
        return sent


def start_side_job(
    python: Path, cwd: Path, *args: str, tz: str | None = None, prefix: list[str] | None = None
) -> SideJob:
    """Start ``field_jobs/train.py`` with a side venv's python (``prefix``: a command the job
    runs under, such as ``mltidy run --``), in time zone ``tz``."""
    import time

    env = without_mltidy_env()
    if tz is not None:
        env["TZ"] = tz
    cwd.mkdir(parents=True, exist_ok=True)
    log = cwd / f"job-{time.monotonic_ns()}.log"
    with log.open("w") as err:
        process = subprocess.Popen(
            [*(prefix or []), str(python), str(TRAIN), *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
    return SideJob(process, time.time(), log)
