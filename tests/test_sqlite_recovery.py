"""A writer SIGKILLed inside a transaction leaves a hot journal: reading must still work.

This is the normal state of a store right after the jobs mltidy exists for were killed (the
supervisor of ``mltidy run`` reads it within milliseconds), so the test kills a real writer in
the middle of a real transaction on a real MLflow store.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from labs import Lab
from mltidy.cli.app import app

WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")  # spill: the database file itself is half-written
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE experiments SET name = name || '-uncommitted'")
conn.execute("CREATE TABLE junk AS SELECT * FROM sqlite_master")
print("ready", flush=True)
time.sleep(120)
"""


def _kill_mid_transaction(db: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == b"ready"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)


def test_a_store_left_mid_transaction_is_read_in_its_last_committed_state(lab: Lab) -> None:
    db = Path(lab.mlflow.removeprefix("sqlite:///"))
    _kill_mid_transaction(db)
    journal = db.with_name(db.name + "-journal")
    assert journal.stat().st_size > 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as plain:
        try:
            plain.execute("SELECT count(*) FROM experiments").fetchone()
            raise AssertionError("expected SQLite to refuse a read-only read of a hot journal")
        except sqlite3.OperationalError as exc:
            assert "readonly" in str(exc)

    result = CliRunner().invoke(app, ["scan", "--mlflow", lab.mlflow, "-f", "json"])
    assert result.exit_code == 0, result.stderr
    assert not journal.exists() or journal.stat().st_size == 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM experiments")]
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    assert "tuning" in names and not any(n.endswith("-uncommitted") for n in names)
    assert "junk" not in tables
