"""``mltidy scan`` end to end: every format, every exit code, bad input, and the entry point."""

from __future__ import annotations

import ast
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from killed_jobs import KilledJobs
from mltidy.backends.identity import sqlite_file
from mltidy.cli.app import app

RECORD_KEYS = [
    "kind",
    "store",
    "id",
    "name",
    "container",
    "state",
    "started_at",
    "last_activity_at",
    "verdict",
    "basis",
    "reason",
    "url",
    "trial_number",
]
STORE_KEYS = ["uri", "kind", "ok", "error"]


@pytest.fixture
def lab(sqlite_world: KilledJobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding copies of a killed tutorial job's stores, under names that hide them."""
    for uri, name in (
        (sqlite_world.mlflow_uri, "tracking.sqlite"),
        (sqlite_world.optuna_url, "hpo.bin"),
    ):
        source = sqlite_file(uri)
        assert source is not None
        shutil.copy(source, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    # The killed jobs' last metrics must be older than the 1 s stale limit used below.
    time.sleep(1.2)
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_table_lists_killed_run_and_trial_with_reasons(lab: Path, sqlite_world: KilledJobs) -> None:
    code, out, err = invoke("scan", "--stale-after", "1s")
    assert code == 0
    assert "tracking.sqlite" in err and "hpo.bin" in err  # says which stores it scanned
    assert "found" in err
    assert "dead" in out
    assert "no longer exists on" in out
    assert "Traceback" not in out + err
    for job in sqlite_world.killed:
        assert str(job.run_id)[:8] in out


def test_json_is_the_contract_and_stderr_stays_clean(lab: Path, sqlite_world: KilledJobs) -> None:
    code, out, err = invoke("scan", "--format", "json", "--stale-after", "1s")
    assert code == 0
    assert err == ""
    payload = json.loads(out)
    assert list(payload) == ["version", "stores", "records"]
    assert payload["version"] == 2
    assert [list(s) for s in payload["stores"]] == [STORE_KEYS, STORE_KEYS]
    assert {s["kind"] for s in payload["stores"]} == {"mlflow", "optuna"}
    assert all(s["ok"] and s["error"] is None for s in payload["stores"])
    by_id = {r["id"]: r for r in payload["records"]}
    for record in payload["records"]:
        assert list(record) == RECORD_KEYS
        assert record["verdict"] in {"dead", "stale", "alive", "unknown"}
        assert record["started_at"].endswith("+00:00")
    run = by_id[str(sqlite_world.sigkilled.run_id)]
    assert run["kind"] == "mlflow_run"
    assert run["state"] == "RUNNING"
    assert run["container"] == sqlite_world.name
    assert run["verdict"] == "dead"
    assert f"process {sqlite_world.sigkilled.pid} " in run["reason"]
    assert run["trial_number"] is None
    trials = [r for r in payload["records"] if r["kind"] == "optuna_trial"]
    numbers = {(r["container"], r["trial_number"]) for r in trials}
    assert (sqlite_world.name, sqlite_world.sigkilled.trial_number) in numbers
    assert (sqlite_world.name, sqlite_world.finished.trial_number) not in numbers


def test_jsonl_streams_one_record_per_line(lab: Path) -> None:
    code, out, err = invoke("scan", "-f", "jsonl")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 6  # 3 killed runs + 3 killed trials
    assert all(list(json.loads(line)) == RECORD_KEYS for line in lines)


def test_markdown_report(lab: Path) -> None:
    code, out, _ = invoke("scan", "-f", "markdown", "--stale-after", "1s")
    assert code == 0
    assert out.startswith("## mltidy scan")
    assert "| dead | run |" in out


def test_selection_options(lab: Path, sqlite_world: KilledJobs) -> None:
    _, out, _ = invoke("scan", "-f", "json", "-e", sqlite_world.other_name)
    records = json.loads(out)["records"]
    # the experiment's run and the trial linked to it
    assert sorted(r["kind"] for r in records) == ["mlflow_run", "optuna_trial"]
    assert {r["container"] for r in records} == {sqlite_world.other_name}
    code, _, err = invoke("scan", "-e", sqlite_world.other_name, "-s", "nope")
    assert code == 2
    assert "--study 'nope': no study of that name" in err


@pytest.mark.parametrize(
    ("fail_on", "selection", "expected"),
    [
        ("never", [], 0),
        ("stale", [], 1),
        ("dead", [], 1),
        ("dangling", [], 1),
        ("dangling", ["--host", "nothing-here"], 0),
        ("dangling", ["-e", "nothing-here"], 2),
    ],
)
def test_fail_on(lab: Path, fail_on: str, selection: list[str], expected: int) -> None:
    code, _, _ = invoke("scan", "--fail-on", fail_on, *selection)
    assert code == expected


def test_nothing_found_is_exit_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    code, _, err = invoke("scan", "--fail-on", "dangling")
    assert code == 0
    assert "no stores found" in err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _neither_store(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE things (x INTEGER)")
    return path


@pytest.mark.parametrize(
    ("make_args", "expected", "message"),
    [
        (lambda d: ["--mlflow", f"sqlite:///{d}/does/not/exist.db"], 3, "does not exist"),
        (lambda d: ["--optuna", f"sqlite:///{d}/nope.db"], 3, "does not exist"),
        (lambda d: ["--optuna", f"{d}/nope.log"], 3, "does not exist"),
        (lambda d: ["--mlflow", f"http://127.0.0.1:{_closed_port()}"], 3, "cannot connect"),
        (lambda d: ["--mlflow", "ftp://example/x"], 2, "ftp://"),
        (lambda d: ["--optuna", "mongodb://localhost/x"], 2, "mongodb://"),
        (lambda d: ["--mlflow", f"sqlite:///{_neither_store(d / 'n.db')}"], 3, "not an MLflow"),
        (lambda d: ["--optuna", f"sqlite:///{_neither_store(d / 'n.db')}"], 3, "not an Optuna"),
        (lambda d: ["--mlflow", f"file:{d}"], 3, "not an MLflow file store"),
        (lambda d: ["--mlflow", str(d)], 3, "not an MLflow file store"),
        (lambda d: ["--format", "xml"], 2, "xml"),
        (lambda d: ["--stale-after", "soon"], 2, "not a duration"),
        (lambda d: ["--fail-on", "maybe"], 2, "maybe"),
    ],
)
def test_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_args: object, expected: int, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    args = make_args(tmp_path)  # type: ignore[operator]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = invoke("scan", *args)
    assert code == expected, (out, err)
    assert message in err
    assert "Traceback" not in out + err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created


def test_a_corrupt_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    code, _, err = invoke("scan", "--mlflow", f"sqlite:///{path}")
    assert code == 3
    assert err.startswith("mltidy: error:")


def test_mixed_up_kinds_get_a_hint(lab: Path) -> None:
    code, _, err = invoke("scan", "--optuna", "sqlite:///tracking.sqlite")
    assert code == 3
    assert "--mlflow" in err


def test_one_bad_store_does_not_stop_the_others(lab: Path) -> None:
    code, out, err = invoke(
        "scan",
        "-f",
        "json",
        "--mlflow",
        "sqlite:///tracking.sqlite",
        "--optuna",
        "sqlite:///gone.db",
    )
    assert code == 3
    payload = json.loads(out)
    assert [s["ok"] for s in payload["stores"]] == [True, False]
    assert "gone.db does not exist" in payload["stores"][1]["error"]
    assert len(payload["records"]) == 3
    assert err.count("\n") == 1 and "gone.db" in err


def test_passwords_are_never_printed(tmp_path: Path) -> None:
    url = f"postgresql://bob:hunter2@127.0.0.1:{_closed_port()}/mlflow"
    code, out, err = invoke("scan", "-f", "json", "--mlflow", url)
    assert code == 3
    assert "hunter2" not in out + err
    assert "postgresql://bob@127.0.0.1" in out  # the identity: no password at all


def test_usage_errors_in_json_mode_are_json(tmp_path: Path) -> None:
    code, out, err = invoke("scan", "-f", "json", "--mlflow", "ftp://x")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "usage"
    assert err.startswith("mltidy: error:")


def test_environment_variables_are_used(lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:///hpo.bin")
    code, _, err = invoke("scan")
    assert code == 0
    assert "OPTUNA_STORAGE" in err


def test_installed_entry_point_and_module(lab: Path) -> None:
    exe = Path(sys.executable).parent / "mltidy"
    done = subprocess.run(
        [str(exe), "scan", "-f", "json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["records"]) == 6
    version = subprocess.run(
        [sys.executable, "-m", "mltidy", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("mltidy ")


def _imported_by_a_json_scan(modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a ``mltidy scan -f json`` of the lab imports (in a fresh
    interpreter); the scan's six records are checked on the way."""
    program = (
        "import sys\n"
        "from mltidy.cli.app import main\n"
        "sys.argv = ['mltidy', 'scan', '-f', 'json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"found = sorted(m for m in {modules!r} if m in sys.modules)\n"
        "sys.stderr.write(f'IMPORTED={found}\\n')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False
    )
    assert len(json.loads(done.stdout)["records"]) == 6
    line = next(x for x in done.stderr.splitlines() if x.startswith("IMPORTED="))
    return list(ast.literal_eval(line.removeprefix("IMPORTED=")))


def test_a_scan_of_sqlite_stores_does_not_import_sqlalchemy(lab: Path) -> None:
    """SQLite stores are scanned through sqlite3 alone: SQLAlchemy's import would cost more
    than the scan (docs/performance.md)."""
    assert _imported_by_a_json_scan(("sqlalchemy", "mlflow", "optuna")) == []


def test_a_scan_in_json_imports_no_rendering(lab: Path) -> None:
    """JSON needs neither Rich nor the tables: their import was about a sixth of the CPU of a
    scan."""
    shown = ("rich", "mltidy.cli.console", "mltidy.cli.tables", "mltidy.close")
    assert _imported_by_a_json_scan(shown) == []


def test_no_colour_when_not_a_terminal(lab: Path) -> None:
    exe = Path(sys.executable).parent / "mltidy"
    done = subprocess.run(
        [str(exe), "scan", "--stale-after", "1s"], capture_output=True, text=True, check=False
    )
    assert "\x1b[" not in done.stdout + done.stderr


@pytest.mark.postgres
def test_wrong_password_is_a_clear_store_error(postgres_server: object) -> None:
    url = postgres_server.wrong_password_url("postgres")  # type: ignore[attr-defined]
    secret = url.split(":")[2].split("@")[0]
    code, out, err = invoke("scan", "--mlflow", url, "--optuna", url)
    assert code == 3
    assert "access denied" in err
    assert secret not in out + err
    assert err.count("mltidy: error:") == 2


@pytest.mark.postgres
def test_an_empty_postgres_database_is_not_a_store_and_stays_empty(postgres_url: str) -> None:
    from sqlalchemy import create_engine, inspect

    code, _, err = invoke("scan", "--mlflow", postgres_url)
    assert code == 3
    assert "not an MLflow tracking database" in err
    engine = create_engine(postgres_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_corrupt_file_message(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    _, _, err = invoke("scan", "--optuna", f"sqlite:///{path}")
    assert "broken.db" in err
    assert len(err.strip().splitlines()) <= 2
