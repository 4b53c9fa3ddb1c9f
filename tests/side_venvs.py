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
