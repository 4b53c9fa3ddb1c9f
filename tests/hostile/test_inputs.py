"""Hostile input, through the installed ``mltidy`` entry point, against real stores.

A table of inputs (names and tags written by real killed jobs, server bodies, files, URIs,
clocks, config files, command-line arguments). Each row runs ``mltidy`` in a fresh copy of its
world and asserts:

* the exit code (one of the contract's; never 70, never a traceback);
* stdout and stderr hold no control character but newline and tab, no bidi control and no
  invisible format character;
* no file changed outside the ones the row allows (mltidy's state folder aside), HOME included
  (so MLflow's telemetry file is caught too);
* no secret of the row appears.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from backends.rest_fakes import Answer, fake_server, html_answer, json_answer
from hostile.inputs import (
    BIDI,
    CLEAR,
    EXPERIMENT,
    OSC52,
    RUN_NAME,
    controls,
    tree_digest,
)
from hostile.sandbox import Sandbox, Template
from receivers import HttpReceiver

EXE = Path(sys.executable).parent / "mltidy"
SECRET = "Zq7@Xv9/Kp3 Lm5%Wn2"
#: Pieces of SECRET that no output may show (a password printed "in part" is printed).
SECRET_PIECES = ("Zq7", "Xv9", "Kp3", "Lm5", "Wn2")
TOKEN = "Zq7Xv9Kp3Tok"
YEAR = timedelta(days=365)
Extra = dict[str, Any]
#: Makes a row's world hostile; may return how to undo what it started.
Prepare = Callable[[Sandbox, Extra], "Callable[[], None] | None"]
STORE_FILES = ("mlflow.db", "mlflow.db-journal", "optuna.db", "optuna.db-journal")


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str
    seconds: float


@dataclass(frozen=True)
class Case:
    """One hostile input.

    ``args`` may hold ``{root}`` (the world), ``{m}``/``{o}`` (its stores), ``{run}`` (the
    hostile run's id), ``{server}`` (the row's HTTP server), ``{receiver}`` (a notification
    receiver). ``before`` commands run first (they must not crash); ``changes`` are the paths
    (relative to the world) the row may change.
    """

    id: str
    args: tuple[str | bytes, ...]
    code: int
    world: str = "names"
    prepare: Prepare | None = None
    before: tuple[tuple[str, ...], ...] = ()
    pause: float = 0.0
    changes: tuple[str, ...] = ()
    out: tuple[str, ...] = ()
    err: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."
    server: Callable[[str, str, dict[str, Any]], Answer] | None = None
    check: Callable[[Result, Sandbox, dict[str, Any]], None] | None = None
    seconds: float = 60.0


# -- preparing worlds (rows by hand on top of what real jobs wrote) -------------------------


def _sql(path: Path, *statements: str, params: Sequence[object] = ()) -> None:
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement, params if "?" in statement else ())


def _ms(delta: timedelta) -> int:
    return int((datetime.now(timezone.utc) + delta).timestamp() * 1000)


def _elsewhere(box: Sandbox, extra: Extra) -> None:
    """The runs' provenance names another host: only their times speak for them."""
    _sql(box.mlflow_db, "UPDATE tags SET value = 'far-away-host' WHERE key = 'mltidy.host'")


def future_run(box: Sandbox, extra: Extra) -> None:
    _elsewhere(box, extra)
    ahead = _ms(YEAR)
    _sql(
        box.mlflow_db,
        "UPDATE runs SET start_time = ? WHERE status = 'RUNNING'",
        "UPDATE latest_metrics SET timestamp = ?",
        params=(ahead,),
    )


def absurd_start(value: object) -> Prepare:
    def prepare(box: Sandbox, extra: Extra) -> None:
        _elsewhere(box, extra)
        _sql(box.mlflow_db, "UPDATE runs SET start_time = ?", params=(value,))
        _sql(box.mlflow_db, "DELETE FROM latest_metrics")

    return prepare


def garbage_trial_time(box: Sandbox, extra: Extra) -> None:
    _sql(box.optuna_db, "UPDATE trials SET datetime_start = 'garbage'")


def odd_tags(box: Sandbox, extra: Extra) -> None:
    _sql(
        box.mlflow_db,
        "UPDATE tags SET value = '99999999999999999999999' WHERE key = 'mltidy.pid'",
        "INSERT INTO tags (key, value, run_uuid) SELECT 'mltidy.heartbeat_interval', '1e300', "
        "run_uuid FROM runs",
        "INSERT INTO tags (key, value, run_uuid) SELECT 'mltidy.heartbeat_at', "
        "'9999-12-31T00:00:00+00:00', run_uuid FROM runs",
        "UPDATE tags SET value = 'inf' WHERE key = 'mltidy.pid_start'",
    )


def bad_bytes(box: Sandbox, extra: Extra) -> None:
    _sql(
        box.mlflow_db,
        "UPDATE runs SET name = CAST(X'FFFE1B5B324A00' AS TEXT) WHERE status = 'RUNNING'",
        "UPDATE experiments SET name = CAST(X'1B5D35323B633B65413D3D07C3' AS TEXT) "
        "WHERE name != 'Default'",
    )


def root_artifacts(box: Sandbox, extra: Extra) -> None:
    _sql(box.mlflow_db, "UPDATE runs SET artifact_uri = '/'")


def locked_store(box: Sandbox, extra: Extra) -> Callable[[], None]:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\nprint('held', flush=True)\ntime.sleep(120)\n",
            str(box.mlflow_db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"

    def release() -> None:
        holder.kill()
        holder.wait(timeout=30)

    return release


def hot_journal(box: Sandbox, extra: Extra) -> None:
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('PRAGMA cache_size=1')\nc.execute('BEGIN IMMEDIATE')\n"
            "c.execute(\"UPDATE experiments SET name = name || '-uncommitted'\")\n"
            "c.execute('CREATE TABLE junk AS SELECT * FROM sqlite_master')\n"
            "print('ready', flush=True)\ntime.sleep(120)\n",
            str(box.mlflow_db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    assert (box.root / "mlflow.db-journal").stat().st_size > 0


def huge_meta_yaml(box: Sandbox, extra: Extra) -> None:
    folder = box.root / "big" / "1"
    folder.mkdir(parents=True)
    with (folder / "meta.yaml").open("wb") as handle:
        handle.truncate(2 << 30)  # 2 GiB, sparse: costs no disk, only whoever reads it all
        handle.seek((2 << 30) - 64)
        handle.write(b"experiment_id: '1'\nartifact_location: /x\n")


def huge_line(box: Sandbox, extra: Extra) -> None:
    with (box.root / "journal.log").open("wb") as handle:
        handle.write(b'{"op_code": 0, "pad": "')
        handle.truncate(1 << 30)


def fifo(box: Sandbox, extra: Extra) -> None:
    os.mkfifo(box.root / "pipe.db")


def link_to_root(box: Sandbox, extra: Extra) -> None:
    (box.root / "everything").symlink_to("/")


def corrupt_sqlite(box: Sandbox, extra: Extra) -> None:
    body = b"SQLite format 3\x00" + b"\xff" * 84 + b"CREATE TABLE alembic_version experiments runs"
    (box.root / "broken.db").write_bytes(body + b"\x00" * 8000)


def unknown_op(box: Sandbox, extra: Extra) -> None:
    with (box.root / "optuna.log").open("a") as handle:
        handle.write('{"op_code": 99, "worker_id": "x"}\n')


def state_link(box: Sandbox, extra: Extra) -> None:
    victim = box.root / "victim.txt"
    victim.write_text("mine\n")
    victim.chmod(0o644)
    (box.root / "state.db").symlink_to(victim)


def lock_link(box: Sandbox, extra: Extra) -> None:
    victim = box.root / "victim.txt"
    victim.write_text("mine\n")
    (box.root / "state.db.lock").symlink_to(victim)


def text_file(box: Sandbox, extra: Extra) -> None:
    (box.root / "notes.txt").write_text("my notes\n")


def config(text: str | bytes, mode: int = 0o644, where: str = "..", owner: int | None = None):  # type: ignore[no-untyped-def]
    """A config file in a folder relative to the world (``..``: the folder above it)."""

    def prepare(box: Sandbox, extra: Extra) -> None:
        path = (box.root / where / "mltidy.toml").resolve()
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        path.chmod(mode)
        if owner is not None:
            os.chown(path, owner, owner)

    return prepare


# -- HTTP servers with hostile bodies ---------------------------------------------------


def plain_error(method: str, path: str, body: dict[str, Any]) -> Answer:
    return 500, "text/plain", f"internal error {CLEAR}{OSC52}{BIDI}".encode()


def api_error(method: str, path: str, body: dict[str, Any]) -> Answer:
    message = f"bad request {OSC52}{CLEAR} {BIDI} [bold]x[/bold]"
    return json_answer({"error_code": "INVALID_PARAMETER_VALUE", "message": message}, 400)


def denied(method: str, path: str, body: dict[str, Any]) -> Answer:
    return json_answer({"error_code": "UNAUTHENTICATED", "message": f"no {OSC52}"}, 401)


def html_page(method: str, path: str, body: dict[str, Any]) -> Answer:
    status = html_answer()[0]
    return status, f"text/html{CLEAR}", f"<script>alert(1)</script>{OSC52}".encode()


def hostile_api(method: str, path: str, body: dict[str, Any]) -> Answer:
    """An MLflow-compatible server whose experiment and run carry every attack."""
    if path.endswith("experiments/search"):
        return json_answer({"experiments": [{"experiment_id": "1", "name": EXPERIMENT}]})
    if path.endswith("runs/search"):
        run = {
            "info": {
                "run_id": "abc\x1b[2J",
                "run_name": RUN_NAME,
                "experiment_id": "1",
                "status": "RUNNING",
                "start_time": _ms(-timedelta(hours=5)),
                "lifecycle_stage": "active",
                "user_id": f"root{OSC52}",
            },
            "data": {
                "tags": [
                    {"key": "mltidy.host", "value": f"gpu{CLEAR}"},
                    {"key": "mltidy.cmd", "value": f"python {OSC52}"},
                ]
            },
        }
        return json_answer({"runs": [run]})
    return json_answer({})


# -- checks ----------------------------------------------------------------------------


def json_names_exact(result: Result, box: Sandbox, extra: dict[str, Any]) -> None:
    """JSON keeps the exact text, controls and all (only human renderings escape it)."""
    payload = json.loads(result.stdout)
    records = payload.get("records") or [c for c in payload.get("changes", [])]
    names = {r["name"] for r in records}
    assert RUN_NAME in names
    assert {r["container"] for r in records} == {EXPERIMENT}


def all_unchanged(result: Result, box: Sandbox, extra: dict[str, Any]) -> None:
    pairs = json.loads(result.stdout)["pairs"]
    assert pairs and {p["status"] for p in pairs} == {"unchanged"}


def clock_verdict(result: Result, box: Sandbox, extra: dict[str, Any]) -> None:
    records = json.loads(result.stdout)["records"]
    runs = [r for r in records if r["kind"] == "mlflow_run"]
    assert runs and all(r["verdict"] == "unknown" and r["basis"] == "clock" for r in runs)
    assert all("in the future" in r["reason"] for r in runs)


def closed_one(result: Result, box: Sandbox, extra: dict[str, Any]) -> None:
    changes = json.loads(result.stdout)["changes"]
    assert [c["status"] for c in changes] == ["closed"]


def no_clock_event(result: Result, box: Sandbox, extra: dict[str, Any]) -> None:
    assert "clock-skew" not in result.stdout


def state_is_private(result: Result, box: Sandbox, extra: dict[str, Any]) -> None:
    made = box.root / "new" / "state.db"
    assert made.stat().st_mode & 0o777 == 0o600
    assert (box.state / "secret").stat().st_mode & 0o777 == 0o600
    assert box.root.joinpath("new").stat().st_mode & 0o777 == 0o700
    (delivery,) = json.loads(result.stdout)["deliveries"]
    assert delivery["ok"] and delivery["target"] == "json://***"
    keys = sqlite3.connect(made).execute("SELECT key FROM targets").fetchall()
    # Keyed with the installation's secret: not the bare hash of the URL.
    assert keys and keys[0][0] != hashlib.sha256(extra["receiver_url"].encode()).hexdigest()[:24]


def dev_null_untouched(result: Result, box: Sandbox, extra: dict[str, Any]) -> None:
    assert Path("/dev/null").stat().st_mode & 0o777 == extra["dev_null_mode"]


def delivered_clean(result: Result, box: Sandbox, extra: dict[str, Any]) -> None:
    receiver: HttpReceiver = extra["receiver"]
    (request,) = receiver.wait_for(1)
    text = json.dumps(request.body, ensure_ascii=False)
    body = f"{request.body.get('title', '')}\n{request.body.get('message', '')}"
    assert not controls(body), (text, controls(body))
    assert "\\x1b]52" in body  # the attack is shown, escaped, not dropped


def nothing_delivered(result: Result, box: Sandbox, extra: dict[str, Any]) -> None:
    time.sleep(0.5)
    assert extra["receiver"].requests == []


# -- the table ---------------------------------------------------------------------------

NOTIFY = ("--notify", "{receiver}")
CASES: list[Case] = [
    # Names, tags and experiment/study names written by real killed jobs.
    Case("scan-table", ("scan",), 0, out=("\\x1b]52", "dead")),
    Case("scan-markdown", ("scan", "-f", "markdown"), 0, out=("| dead |",)),
    Case("scan-json-exact", ("scan", "-f", "json"), 0, check=json_names_exact),
    Case("scan-jsonl", ("scan", "-f", "jsonl"), 0),
    Case("scan-fail-on-dead", ("scan", "--fail-on", "dead"), 1),
    Case("scan-select-hostile-experiment", ("scan", "-e", EXPERIMENT), 0, out=("dead",)),
    Case("close-plan", ("close",), 0, out=("planned",)),
    Case("close-plan-markdown", ("close", "-f", "markdown"), 0),
    Case("close-yes", ("close", "--yes"), 0, changes=STORE_FILES, out=("closed",)),
    Case(
        "close-yes-json-exact",
        ("close", "--yes", "-f", "json"),
        0,
        changes=STORE_FILES,
        check=json_names_exact,
    ),
    Case("close-hostile-run-id", ("close", "--run", f"{OSC52}{CLEAR}"), 0, err=("\\x1b]52",)),
    Case("declutter-plan", ("declutter",), 0, before=(("close", "--yes"),), changes=STORE_FILES),
    Case(
        "declutter-yes",
        ("declutter", "--older-than", "1s", "--yes"),
        0,
        before=(("close", "--yes"),),
        pause=1.2,
        changes=STORE_FILES,
        err=("mlflow runs restore",),
    ),
    Case("link", ("link",), 0, changes=STORE_FILES, out=("linked",)),
    Case("link-markdown", ("link", "-f", "markdown", "--dry-run"), 0),
    Case(
        "link-twice-is-a-no-op",
        ("link", "-f", "json"),
        0,
        before=(("link",), ("link",)),
        changes=STORE_FILES,
        check=all_unchanged,
    ),
    Case("watch-once", ("watch", "--once"), 0, out=("dead",)),
    Case("watch-once-markdown", ("watch", "--once", "-f", "markdown"), 0, out=("**dead**",)),
    Case("watch-notify", ("watch", "--once", *NOTIFY), 0, check=delivered_clean),
    Case("doctor", ("doctor",), 0),
    Case(
        "run-supervised",
        ("run", "--mlflow", "{m}", "--optuna", "{o}", "--", sys.executable, "-c", "exit(3)"),
        3,
    ),
    Case("names-not-utf8", ("scan",), 0, prepare=bad_bytes, out=("\\x1b",)),
    Case(
        "ascii-terminal",
        ("scan",),
        0,
        env={"PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0"},
    ),
    # Clocks.
    Case("clock-future-scan", ("scan", "-f", "json"), 0, prepare=future_run, check=clock_verdict),
    Case("clock-future-close-refuses", ("close", "--yes"), 0, prepare=future_run),
    Case(
        "clock-future-close-force",
        ("close", "--run", "{run}", "--force", "--yes", "-f", "json"),
        0,
        prepare=future_run,
        changes=STORE_FILES,
        check=closed_one,
    ),
    Case("clock-watch-reports", ("watch", "--once"), 0, prepare=future_run, out=("clock-skew",)),
    Case(
        "clock-watch-reports-once",
        ("watch", "--once"),
        0,
        prepare=future_run,
        before=(("watch", "--once"),),
        check=no_clock_event,
    ),
    Case("clock-doctor", ("doctor",), 0, prepare=future_run, out=("ahead of this host",)),
    Case("clock-beyond-calendar", ("scan",), 0, prepare=absurd_start(9 * 10**18)),
    Case("clock-before-calendar", ("scan",), 0, prepare=absurd_start(-9 * 10**18)),
    Case("clock-not-a-number", ("scan",), 0, prepare=absurd_start("soon")),
    Case("trial-time-garbage", ("scan",), 0, prepare=garbage_trial_time),
    Case("tags-out-of-range", ("scan",), 0, prepare=odd_tags),
    # Files.
    Case("discovery-locked", ("scan",), 3, prepare=locked_store, err=("locked",), seconds=45),
    Case(
        "discovery-hot-journal",
        ("scan", "--fail-on", "dead"),
        1,
        prepare=hot_journal,
        changes=STORE_FILES,
    ),
    Case("discovery-huge-meta-yaml", ("scan",), 0, prepare=huge_meta_yaml, seconds=30),
    Case("discovery-huge-first-line", ("scan",), 0, prepare=huge_line, seconds=30),
    Case("discovery-fifo", ("scan",), 0, prepare=fifo, seconds=30),
    Case("discovery-link-to-root", ("scan",), 0, prepare=link_to_root, seconds=30),
    Case("discovery-corrupt-sqlite", ("scan",), 3, prepare=corrupt_sqlite, err=("broken.db",)),
    Case("file-store-scan", ("scan",), 0, world="files", out=("dead",)),
    Case("file-store-json-exact", ("scan", "-f", "json"), 0, world="files", check=json_names_exact),
    Case(
        "file-store-close-yes",
        ("close", "--yes"),
        0,
        world="files",
        changes=("mlruns", "optuna.log"),
    ),
    Case(
        "journal-unknown-op",
        ("scan", "--optuna", "optuna.log"),
        3,
        world="files",
        prepare=unknown_op,
        err=("does not know",),
    ),
    Case(
        "declutter-artifact-uri-root",
        ("declutter", "--older-than", "1s", "--yes"),
        0,
        prepare=root_artifacts,
        before=(("close", "--yes"),),
        pause=1.2,
        changes=STORE_FILES,
        out=("not checked",),
        seconds=30,
    ),
    # The watch state.
    Case("state-is-a-tracking-store", ("watch", "--once", "--state", "mlflow.db"), 2),
    Case("state-is-a-link", ("watch", "--once", "--state", "state.db"), 2, prepare=state_link),
    Case(
        "state-lock-is-a-link",
        ("watch", "--once", "--state", "state.db"),
        2,
        prepare=lock_link,
        changes=("state.db",),  # mltidy's own new state; the lock's target stays as it was
    ),
    Case("state-is-a-text-file", ("watch", "--once", "--state", "notes.txt"), 2, prepare=text_file),
    Case(
        "state-is-dev-null",
        ("watch", "--once", "--state", "/dev/null"),
        2,
        check=dev_null_untouched,
    ),
    Case(
        "state-new-file",
        ("watch", "--once", "--state", "new/state.db", "-f", "json", *NOTIFY),
        0,
        changes=("new",),
        check=state_is_private,
    ),
    Case(
        "state-reused",
        ("watch", "--once", "--state", "new/state.db"),
        0,
        before=(("watch", "--once", "--state", "new/state.db"),),
        changes=("new",),
    ),
    # URIs and secrets.
    Case(
        "password-raw-chars",
        ("scan", "--mlflow", f"postgresql://bob:{SECRET}@127.0.0.1:1/db"),
        3,
        secrets=SECRET_PIECES,
    ),
    Case(
        "password-raw-chars-json",
        ("scan", "-f", "json", "--mlflow", f"postgresql://bob:{SECRET}@127.0.0.1:1/db"),
        3,
        secrets=SECRET_PIECES,
    ),
    Case(
        "password-env",
        ("scan",),
        3,
        env={"MLFLOW_TRACKING_URI": f"mysql://bob:{SECRET}@127.0.0.1:1/db"},
        secrets=SECRET_PIECES,
    ),
    Case(
        "password-server",
        ("scan", "--mlflow", f"http://bob:{SECRET}@127.0.0.1:1"),
        3,
        secrets=SECRET_PIECES,
    ),
    Case(
        "uri-without-scheme",
        ("scan", "--mlflow", f"bob:{TOKEN}@dbhost/mlflow"),
        2,
        secrets=(TOKEN,),
    ),
    Case(
        "notify-url-without-scheme",
        ("watch", "--once", "--notify", f"bob:{TOKEN}@hooks.example/x"),
        2,
        secrets=(TOKEN,),
    ),
    Case(
        "notify-url-unreachable",
        ("watch", "--once", "--notify", f"json://bob:{TOKEN}@127.0.0.1:1/hook"),
        4,
        secrets=(TOKEN,),
    ),
    Case(
        "redis-password",
        ("scan", "--optuna", f"redis://:{TOKEN}@127.0.0.1:1/0"),
        3,
        secrets=(TOKEN, "ExperimentalWarning"),
    ),
    Case("sqlite-missing", ("scan", "--mlflow", "sqlite:///nope/x.db"), 3),
    Case("sqlite-path-controls", ("scan", "--mlflow", f"sqlite:///{CLEAR}{BIDI}.db"), 3),
    # Tracking servers that answer with hostile text.
    Case("server-plain-error", ("scan", "--mlflow", "{server}"), 3, server=plain_error),
    Case("server-api-error", ("scan", "--mlflow", "{server}"), 3, server=api_error),
    Case("server-denied", ("scan", "--mlflow", "{server}"), 3, server=denied),
    Case("server-html", ("scan", "--mlflow", "{server}"), 3, server=html_page),
    Case(
        "server-hostile-records",
        ("scan", "--mlflow", "{server}", "--stale-after", "1h"),
        0,
        server=hostile_api,
        out=("\\x1b]52", "stale"),
    ),
    Case(
        "server-hostile-records-markdown",
        ("scan", "-f", "markdown", "--mlflow", "{server}"),
        0,
        server=hostile_api,
    ),
    # Config files.
    Case(
        "config-world-writable",
        ("watch", "--once"),
        0,
        prepare=config('notify = "{receiver}"\n', 0o666),
        err=("writable by others",),
        check=nothing_delivered,
    ),
    Case(
        "config-foreign-owner",
        ("scan",),
        0,
        prepare=config('stale_after = "bogus"\n', 0o644, owner=12345),
        err=("owned by uid 12345",),
    ),
    Case(
        "config-above-home",
        ("scan",),
        0,
        prepare=config('stale_after = "bogus"\n', 0o600),
        env={"HOME": "{root}"},
    ),
    Case(
        "config-controls-in-value",
        ("scan",),
        2,
        prepare=config(f'stale_after = "{OSC52}{BIDI}"\n'.replace("\x07", "\\u0007"), where="."),
    ),
    Case(
        "config-controls-in-key",
        ("scan",),
        2,
        prepare=config('"\\u001b]52;c;eA==\\u0007" = 1\n', where="."),
    ),
    Case("config-huge", ("scan",), 2, prepare=config("# x\n" * (600 * 1024), where=".")),
    Case("config-not-utf8", ("scan",), 2, prepare=config(b"mlflow = '\xff\xfe'\n", where=".")),
    # Command-line arguments.
    Case("stale-after-overflow", ("scan", "--stale-after", "99999999999999999999d"), 2),
    Case("since-overflow", ("watch", "--once", "--since", "1000000d"), 2),
    Case("older-than-infinite", ("declutter", "--older-than", "1e999s"), 2),
    Case("stale-after-negative", ("scan", "--stale-after", "-1s"), 2),
    Case("interval-zero", ("watch", "--interval", "0s"), 2),
    Case("experiment-not-utf8", ("scan", "-e", b"\xff\xfe"), 2),
    Case("trial-number-huge", ("close", "--trial", "s:99999999999999999999999999"), 0),
    Case("format-unknown", ("scan", "-f", f"x{CLEAR}"), 2),
    Case("budget-zero", ("watch", "--once", "--budget", "0"), 2),
]


def _fill(value: str | bytes, box: Sandbox, extra: dict[str, Any]) -> str | bytes:
    if isinstance(value, bytes):
        return value
    template = box.template
    return (
        value.replace("{root}", str(box.root))
        .replace("{m}", f"sqlite:///{box.mlflow_db}")
        .replace("{o}", f"sqlite:///{box.optuna_db}")
        .replace("{run}", template.run_id if template else "")
        .replace("{server}", str(extra.get("server", "")))
        .replace("{receiver}", str(extra.get("receiver_url", "")))
    )


def _env(box: Sandbox, case: Case, extra: dict[str, Any]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLTIDY_", "MLFLOW_", "OPTUNA_", "XDG_"))
        and k not in ("PYTEST_CURRENT_TEST", "CI", "COLUMNS")
    }
    env.update(HOME=str(box.home), MLTIDY_STATE_DIR=str(box.state), MLFLOW_ALLOW_FILE_STORE="true")
    env.update({k: str(_fill(v, box, extra)) for k, v in case.env.items()})
    return env


def _run(args: Sequence[str | bytes], box: Sandbox, case: Case, env: dict[str, str]) -> Result:
    started = time.monotonic()
    done = subprocess.run(
        [str(EXE), *args],
        cwd=box.root / case.cwd,
        env=env,
        capture_output=True,
        timeout=case.seconds + 60,
        stdin=subprocess.DEVNULL,
    )
    return Result(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
        time.monotonic() - started,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(
    case: Case,
    make_sandbox: Callable[[Template | None], Sandbox],
    names_template: Template,
    files_template: Template,
    http_receiver: HttpReceiver,
) -> None:
    template = {"names": names_template, "files": files_template}.get(case.world)
    box = make_sandbox(template)
    extra: dict[str, Any] = {
        "receiver": http_receiver,
        "receiver_url": http_receiver.url(),
        "dev_null_mode": Path("/dev/null").stat().st_mode & 0o777,
    }
    with _server(case) as url:
        extra["server"] = url
        release = case.prepare(box, extra) if case.prepare is not None else None
        try:
            env = _env(box, case, extra)
            for step in case.before:
                ran = _run([_fill(a, box, extra) for a in step], box, case, env)
                assert ran.code in (0, 1), ran.stderr
            time.sleep(case.pause)
            keep = [box.state, *(box.root / c for c in case.changes)]
            before = tree_digest(box.top, keep)
            result = _run([_fill(a, box, extra) for a in case.args], box, case, env)
            after = tree_digest(box.top, keep)
        finally:
            if release is not None:
                release()
    shown = f"exit {result.code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.code == case.code, shown
    assert "Traceback" not in result.stderr, shown
    assert not controls(result.stdout), (controls(result.stdout), shown)
    assert not controls(result.stderr), (controls(result.stderr), shown)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not changed, (changed, shown)
    for secret in case.secrets:
        assert secret not in result.stdout + result.stderr, (secret, shown)
    for text in case.out:
        assert text in result.stdout, (text, shown)
    for text in case.err:
        assert text in result.stderr, (text, shown)
    assert result.seconds < case.seconds, shown
    if case.check is not None:
        case.check(result, box, extra)


class _server:
    def __init__(self, case: Case) -> None:
        self.case = case
        self._context: Any = None

    def __enter__(self) -> str:
        if self.case.server is None:
            return ""
        self._context = fake_server(self.case.server)
        return str(self._context.__enter__().url)

    def __exit__(self, *exc: object) -> None:
        if self._context is not None:
            self._context.__exit__(*exc)


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)
