"""The REST backend for MLflow tracking servers, against real ``mlflow server`` subprocesses.

It must return exactly what ``MlflowClientBackend`` returns for the same server (records made by
real jobs killed with real signals), change runs only after a fresh re-read, honour MLflow's
auth and TLS variables, translate every failure into mltidy's errors, and never import mlflow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from killed_jobs import KilledJobs, make_killed_jobs
from mlflow_server_options import ADMIN, ConfiguredMlflowServer
from mltidy import names
from mltidy.backends.identity import store_id
from mltidy.backends.interface import Backend
from mltidy.backends.mlflow.client import MlflowClientBackend
from mltidy.backends.mlflow.rest import (
    PAGE,
    SMALL_PAGE,
    MlflowRestBackend,
    needs_mlflow_client,
)
from mltidy.backends.mlflow.rest_client import HttpSettings, server_text
from mltidy.errors import (
    ExitCode,
    NotAStore,
    StoreAccessDenied,
    StoreError,
    StoreUnreachable,
)
from mltidy.model import CloseRequest, CloseResult, CloseStatus, Selection, StoreKind, utc_now
from servers import MlflowServer, ServerUnavailable, servers_required

from .rest_fakes import (
    Answer,
    fake_server,
    html_answer,
    json_answer,
    self_signed,
    silent_server,
    tls_context,
)

MISSING_RUN = "0" * 32
ENV_KEYS = (
    names.MLFLOW_TRACKING_USERNAME_ENV,
    names.MLFLOW_TRACKING_PASSWORD_ENV,
    names.MLFLOW_TRACKING_TOKEN_ENV,
    names.MLFLOW_TRACKING_INSECURE_TLS_ENV,
    names.MLFLOW_TRACKING_SERVER_CERT_PATH_ENV,
    names.MLFLOW_TRACKING_CLIENT_CERT_PATH_ENV,
    names.MLFLOW_HTTP_TIMEOUT_ENV,
    names.MLFLOW_WORKSPACE_ENV,
)


@pytest.fixture(autouse=True)
def _no_mlflow_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the MLflow variables it means; none leak in from the shell."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)


# -- servers and worlds -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server() -> Iterator[ConfiguredMlflowServer]:
    """A real ``mlflow server --app-name basic-auth`` (admin, and READ for other users)."""
    try:
        import flask_wtf  # noqa: F401 - the basic-auth app refuses to start without it
    except ImportError:
        if servers_required():
            pytest.fail("mlflow[auth] (Flask-WTF) is not installed", pytrace=False)
        pytest.skip("mlflow[auth] (Flask-WTF) is not installed")
    server = ConfiguredMlflowServer(basic_auth=True)
    try:
        server.start()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        server.create_user("reader", "reader-pass-1234")
        yield server
    finally:
        server.stop()


def _admin(server: ConfiguredMlflowServer) -> dict[str, str]:
    return {
        names.MLFLOW_TRACKING_USERNAME_ENV: ADMIN,
        names.MLFLOW_TRACKING_PASSWORD_ENV: server.admin_password,
    }


@pytest.fixture(scope="module")
def auth_world(
    auth_server: ConfiguredMlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> KilledJobs:
    """Jobs killed while training against the basic-auth server (the writes happen here, so
    the session's shared ``server_world`` stays as the contract suite expects it)."""
    root = tmp_path_factory.mktemp("rest-world")
    env = _admin(auth_server)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return make_killed_jobs(
            auth_server.url, f"sqlite:///{root / 'optuna.db'}", root / "work", name="rest", env=env
        )


@pytest.fixture
def as_admin(auth_server: ConfiguredMlflowServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """MLflow's credential variables set to the admin's; the server's URL."""
    for key, value in _admin(auth_server).items():
        monkeypatch.setenv(key, value)
    return auth_server.url


def _client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url)


# -- the same records as the client path ----------------------------------------------------


def _job_ids(jobs: KilledJobs) -> set[str]:
    return {str(job.run_id) for job in (*jobs.killed, jobs.finished, jobs.other)}


def assert_same_reads(url: str, jobs: KilledJobs) -> None:
    """Every read capability of the two backends agrees, record for record, field for field."""
    now = utc_now()
    with MlflowRestBackend(url) as rest, MlflowClientBackend(url) as client:
        assert rest.uri == client.uri == store_id(StoreKind.MLFLOW, url)
        active = {r.id: r for r in rest.iter_active(Selection())}
        assert active == {r.id: r for r in client.iter_active(Selection())}
        assert {str(job.run_id) for job in (*jobs.killed, jobs.other)} <= set(active)
        assert str(jobs.finished.run_id) not in active
        sigkilled = active[str(jobs.sigkilled.run_id)]
        assert sigkilled.last_activity_at is not None and sigkilled.tags.get(names.PID)

        other = Selection(experiments=(jobs.other_name,))
        assert [r.id for r in rest.iter_active(other)] == [str(jobs.other.run_id)]
        assert list(rest.iter_active(other)) == list(client.iter_active(other))

        for run_id in [*sorted(_job_ids(jobs)), MISSING_RUN]:
            assert rest.read(run_id) == client.read(run_id), run_id
        assert rest.read(MISSING_RUN) is None

        since = now - timedelta(hours=1)
        ended = list(rest.iter_ended_runs(Selection(), since))
        assert ended == list(client.iter_ended_runs(Selection(), since))
        assert str(jobs.finished.run_id) in {r.id for r in ended}

        wanted = _job_ids(jobs) | {MISSING_RUN}
        studies = {jobs.name, jobs.other_name, "no such study", "it's quoted"}
        refs = {r.run_id: r for r in rest.link_candidates(wanted, studies)}
        assert refs == {r.run_id: r for r in client.link_candidates(wanted, studies)}
        assert _job_ids(jobs) <= set(refs)

        closed = {c.record.id: c for c in rest.iter_closed_runs(Selection())}
        assert closed == {c.record.id: c for c in client.iter_closed_runs(Selection())}


@pytest.mark.mlflow_server
def test_reads_the_same_records_as_the_client_path(server_world: KilledJobs) -> None:
    assert_same_reads(server_world.mlflow_uri, server_world)


@pytest.mark.mlflow_server
def test_reads_the_same_records_through_basic_auth(auth_world: KilledJobs, as_admin: str) -> None:
    assert_same_reads(as_admin, auth_world)


@pytest.mark.mlflow_server
def test_describe_and_contract_fields(server_world: KilledJobs) -> None:
    with MlflowRestBackend(server_world.mlflow_uri) as rest:
        assert "MLflow tracking server" in rest.describe()
        record = rest.read(str(server_world.sigkilled.run_id))
    assert record is not None
    assert record.state == "RUNNING" and record.container == server_world.name
    assert record.started_at is not None and record.started_at.tzinfo is not None
    assert record.name == f"trial-{server_world.sigkilled.trial_number}"
    assert record.user


# -- writes: re-read, write, check --------------------------------------------------------


@pytest.mark.mlflow_server
def test_close_writes_state_true_end_and_audit_tags(auth_world: KilledJobs, as_admin: str) -> None:
    run_id = str(auth_world.sigkilled.run_id)
    with MlflowRestBackend(as_admin, writable=True) as rest:
        record = rest.read(run_id)
        assert record is not None and record.last_activity_at is not None
        request = CloseRequest(
            run_id,
            "KILLED",
            record.last_activity_at,
            {
                names.CLOSED_AT: utc_now().isoformat(),
                names.CLOSED_BY: "test",
                names.PREVIOUS_STATE: "RUNNING",
            },
        )
        assert rest.close_record(request) == CloseResult(CloseStatus.CLOSED)
        assert rest.close_record(request) == CloseResult(CloseStatus.NOT_RUNNING, "KILLED")
        missing = dataclasses.replace(request, record_id=MISSING_RUN)
        assert rest.close_record(missing) == CloseResult(CloseStatus.MISSING)
        finished = dataclasses.replace(request, record_id=str(auth_world.finished.run_id))
        assert rest.close_record(finished) == CloseResult(CloseStatus.NOT_RUNNING, "FINISHED")
    run = _client(as_admin).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.info.end_time == int(record.last_activity_at.timestamp() * 1000)
    assert run.data.tags[names.CLOSED_BY] == "test"
    assert names.CLOSED_AT in run.data.tags
    finished_tags = _client(as_admin).get_run(str(auth_world.finished.run_id)).data.tags
    assert names.CLOSED_BY not in finished_tags


@pytest.mark.mlflow_server
def test_a_run_that_ends_between_tags_and_state_is_left_alone(
    auth_world: KilledJobs, as_admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second re-read: the job ends right after the audit tags are written; the close backs
    off and gives the run its tags back (old values restored, new keys removed)."""
    client = _client(as_admin)
    run_id = str(auth_world.sigtermed.run_id)
    client.set_tag(run_id, names.CLOSED_BY, "set before")
    with MlflowRestBackend(as_admin, writable=True) as rest:
        write = rest._log_tags
        ended = threading.Event()

        def write_then_end(run: str, tags: Mapping[str, str]) -> None:
            write(run, tags)
            if not ended.is_set():
                ended.set()
                client.set_terminated(run, "FINISHED")

        monkeypatch.setattr(rest, "_log_tags", write_then_end)
        request = CloseRequest(
            run_id, "KILLED", utc_now(), {names.CLOSED_AT: "now", names.CLOSED_BY: "mltidy"}
        )
        assert rest.close_record(request) == CloseResult(CloseStatus.NOT_RUNNING, "FINISHED")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[names.CLOSED_BY] == "set before"
    assert names.CLOSED_AT not in run.data.tags


@pytest.mark.mlflow_server
def test_declutter_finds_closed_runs_and_soft_deletes_empty_ones(
    auth_world: KilledJobs, as_admin: str
) -> None:
    client = _client(as_admin)
    experiment = client.get_experiment_by_name(auth_world.name).experiment_id
    empty = client.create_run(experiment, run_name="empty-leftover").info.run_id
    kept = client.create_run(experiment, run_name="with-an-artifact").info.run_id
    client.log_text(kept, "notes", "notes.txt")
    with MlflowRestBackend(as_admin, writable=True) as rest:
        for run_id in (empty, kept):
            request = CloseRequest(
                run_id, "FAILED", utc_now(), {names.CLOSED_AT: utc_now().isoformat()}
            )
            assert rest.close_record(request).status is CloseStatus.CLOSED
        closed = {c.record.id: c for c in rest.iter_closed_runs(Selection())}
        with MlflowClientBackend(as_admin) as library:
            assert closed == {c.record.id: c for c in library.iter_closed_runs(Selection())}
        assert closed[empty].is_empty and closed[empty].closed_at is not None
        assert closed[kept].artifacts == 1 and not closed[kept].is_empty

        assert rest.soft_delete(empty) is True
        assert rest.soft_delete(empty) is False
        assert rest.soft_delete(str(auth_world.other.run_id)) is False  # still RUNNING
        assert rest.soft_delete(MISSING_RUN) is False
        assert empty not in {c.record.id for c in rest.iter_closed_runs(Selection())}
    gone = client.get_run(empty)
    assert gone.info.lifecycle_stage == "deleted"
    assert names.DELETED_AT in gone.data.tags
    assert client.get_run(str(auth_world.other.run_id)).info.lifecycle_stage == "active"


@pytest.mark.mlflow_server
def test_link_tags_are_written_and_found(
    auth_world: KilledJobs, as_admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(as_admin)
    run_id = str(auth_world.other.run_id)
    tags = {names.LINK_STUDY: auth_world.other_name, names.LINK_TRIAL_NUMBER: "0"}
    many = {f"{names.LINK_DASHBOARD}.{n}": str(n) for n in range(150)}  # more than one batch
    experiment = client.get_experiment_by_name(auth_world.name).experiment_id
    callback_run = client.create_run(experiment, tags={names.CALLBACK_NUMBER: "7"}).info.run_id
    with MlflowRestBackend(as_admin, writable=True) as rest:
        rest.write_run_tags(run_id, {**tags, **many})
        refs = {r.run_id: r for r in rest.link_candidates(set(), {auth_world.other_name})}
        assert refs[run_id].tags[names.LINK_STUDY] == auth_world.other_name
        named = {r.run_id: r for r in rest.link_candidates(set(), {auth_world.name})}
        assert named[callback_run].tags[names.CALLBACK_NUMBER] == "7"
        # Run ids are found by one search over the experiments; only the unknown id is read
        # on its own.
        reads: list[str] = []
        read = rest._get_run
        monkeypatch.setattr(rest, "_get_run", lambda i: reads.append(i) or read(i))
        by_id = rest.link_candidates({run_id, callback_run, MISSING_RUN}, set())
        assert {r.run_id for r in by_id} == {run_id, callback_run}
        assert reads == [MISSING_RUN]
    written = client.get_run(run_id).data.tags
    assert {k: written[k] for k in {**tags, **many}} == {**tags, **many}
    with pytest.raises(StoreError), MlflowRestBackend(as_admin, writable=True) as rest:
        rest.write_run_tags(MISSING_RUN, tags)


# -- basic auth ---------------------------------------------------------------------------


@pytest.mark.mlflow_server
def test_credentials_from_the_environment_or_the_uri(
    auth_world: KilledJobs, auth_server: ConfiguredMlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _admin(auth_server).items():
        monkeypatch.setenv(key, value)
    with MlflowRestBackend(auth_server.url) as rest:
        assert str(auth_world.other.run_id) in {r.id for r in rest.iter_active(Selection())}
    for key in _admin(auth_server):
        monkeypatch.delenv(key)
    uri = auth_server.url_with(ADMIN, auth_server.admin_password)
    with MlflowRestBackend(uri) as rest:
        assert rest.uri == f"http://{ADMIN}@127.0.0.1:{auth_server.port}"
        record = rest.read(str(auth_world.other.run_id))
    assert record is not None and record.store == rest.uri
    assert auth_server.admin_password not in repr(record)


@pytest.mark.mlflow_server
@pytest.mark.parametrize("where", ["env", "uri", "none"])
def test_wrong_credentials_are_access_denied(
    auth_server: ConfiguredMlflowServer, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    wrong = "wrong-" + auth_server.admin_password
    uri = auth_server.url
    if where == "env":
        monkeypatch.setenv(names.MLFLOW_TRACKING_USERNAME_ENV, ADMIN)
        monkeypatch.setenv(names.MLFLOW_TRACKING_PASSWORD_ENV, wrong)
    elif where == "uri":
        uri = auth_server.url_with(ADMIN, wrong)
    began = time.monotonic()
    with pytest.raises(StoreAccessDenied) as caught:
        MlflowRestBackend(uri)
    assert time.monotonic() - began < 5
    error = caught.value
    assert error.exit_code is ExitCode.STORE
    assert "HTTP 401" in error.message
    assert error.hint is not None and names.MLFLOW_TRACKING_TOKEN_ENV in error.hint
    assert wrong not in error.message + error.hint


@pytest.mark.mlflow_server
def test_a_reader_may_read_but_not_close(
    auth_world: KilledJobs, auth_server: ConfiguredMlflowServer
) -> None:
    with MlflowRestBackend(auth_server.url_with("reader", "reader-pass-1234")) as rest:
        run_id = str(auth_world.other.run_id)
        assert rest.read(run_id) is not None
        with pytest.raises(StoreAccessDenied) as caught:
            rest.close_record(CloseRequest(run_id, "KILLED", utc_now(), {names.CLOSED_BY: "x"}))
    assert "HTTP 403" in caught.value.message
    assert _client_status(auth_server, run_id) == "RUNNING"


def _client_status(server: ConfiguredMlflowServer, run_id: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server.url_with(ADMIN, server.admin_password))
    return str(client.get_run(run_id).info.status)


@pytest.mark.mlflow_server
def test_denied_scan_exits_3_with_the_hint(
    auth_server: ConfiguredMlflowServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Through the CLI, with the REST backend put where the registry will put it."""
    import mltidy.scan
    from mltidy.cli.app import app

    opened = mltidy.scan.open_backend

    def open_backend(kind: StoreKind, uri: str, *, writable: bool = False) -> Backend:
        if uri.startswith("http"):
            return MlflowRestBackend(uri, writable=writable)
        return opened(kind, uri, writable=writable)

    monkeypatch.setattr(mltidy.scan, "open_backend", open_backend)
    monkeypatch.chdir(tmp_path)
    wrong = "wrong-" + auth_server.admin_password
    uri = auth_server.url_with(ADMIN, wrong)
    result = CliRunner().invoke(app, ["scan", "--format", "json", "--mlflow", uri])
    assert result.exit_code == ExitCode.STORE, result.output
    report = json.loads(result.stdout)
    [status] = report["stores"]
    assert not status["ok"] and "refused the credentials" in status["error"]
    assert names.MLFLOW_TRACKING_USERNAME_ENV in status["error"]
    assert wrong not in result.output


# -- failures: unreachable, not MLflow ----------------------------------------------------


@pytest.mark.mlflow_server
@pytest.mark.slow
def test_a_stopped_server_is_unreachable_within_seconds() -> None:
    server = MlflowServer()
    server.start()
    try:
        rest = MlflowRestBackend(server.url)
    finally:
        server.stop()
    began = time.monotonic()
    with pytest.raises(StoreUnreachable) as caught:
        list(rest.iter_active(Selection()))
    assert time.monotonic() - began < 5
    assert "connection refused" in caught.value.message
    began = time.monotonic()
    with pytest.raises(StoreUnreachable):
        MlflowRestBackend(server.url)
    assert time.monotonic() - began < 5
    rest.close()


def test_a_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(names.MLFLOW_HTTP_TIMEOUT_ENV, "1")
    with silent_server() as url:
        began = time.monotonic()
        with pytest.raises(StoreUnreachable) as caught:
            MlflowRestBackend(url)
    assert time.monotonic() - began < 4
    assert "within 1 s" in caught.value.message


def test_a_web_server_that_is_not_mlflow() -> None:
    """A real static web server (404 pages, 501 for POST), and a site answering every path."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(NotAStore):
            MlflowRestBackend(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    with fake_server(lambda *_: html_answer(200)) as site, pytest.raises(NotAStore) as caught:
        MlflowRestBackend(site.url)
    assert "text/html" in caught.value.message
    with fake_server(lambda *_: html_answer(404)) as site, pytest.raises(NotAStore):
        MlflowRestBackend(site.url + "/prefix/")


# -- an MLflow-compatible server that does not filter, and paging ---------------------------


def _run(run_id: str, experiment: str, status: str, stage: str = "active") -> dict[str, Any]:
    return {
        "info": {
            "run_id": run_id,
            "run_name": f"name-{run_id}",
            "experiment_id": experiment,
            "user_id": "someone",
            "status": status,
            "start_time": "1767261600000",  # int64 as a string, as proto3's JSON mapping has it
            "lifecycle_stage": stage,
        },
        "data": {
            "metrics": [{"key": "loss", "value": 1.0, "timestamp": 1767261660000, "step": 1}],
            "tags": [
                {"key": names.MLFLOW_USER, "value": "someone"},
                {"key": names.HOST, "value": "gpu-01"},
                {"key": "mlflow.source.name", "value": "not passed on"},
            ],
        },
    }


class CompatibleServer:
    """Answers like a lax MLflow-compatible server: ``filter`` ignored, pages of two runs."""

    def __init__(self, experiments: int = 1, limit: int | None = None) -> None:
        self.experiments = experiments
        self.limit = limit
        self.runs = [
            _run("a", "1", "RUNNING"),
            _run("b", "1", "FINISHED"),
            _run("c", "1", "RUNNING", stage="deleted"),
            _run("d", "1", "RUNNING"),
        ]

    def __call__(self, method: str, path: str, body: dict[str, Any]) -> Answer:
        size = int(body.get("max_results", 0))
        if self.limit is not None and size > self.limit:
            message = f"Invalid value {size} for parameter 'max_results' supplied."
            return json_answer({"error_code": "INVALID_PARAMETER_VALUE", "message": message}, 400)
        if path.endswith("/experiments/search"):
            found = [
                {"experiment_id": str(n), "name": f"exp-{n}", "lifecycle_stage": "active"}
                for n in range(1, self.experiments + 1)
            ]
            found.append({"experiment_id": "99", "name": "gone", "lifecycle_stage": "deleted"})
            return json_answer({"experiments": found})
        if path.endswith("/runs/search"):
            start = int(body.get("page_token") or 0)
            page: dict[str, Any] = {"runs": self.runs[start : start + 2]}
            if start + 2 < len(self.runs):
                page["next_page_token"] = str(start + 2)
            return json_answer(page)
        return json_answer({"error_code": "ENDPOINT_NOT_FOUND", "message": path}, 404)


def test_the_server_filter_is_never_trusted() -> None:
    with fake_server(CompatibleServer()) as site, MlflowRestBackend(site.url) as rest:
        records = list(rest.iter_active(Selection()))
    assert [r.id for r in records] == ["a", "d"]
    record = records[0]
    assert record.container == "exp-1" and record.user == "someone"
    assert record.started_at is not None and record.started_at.year == 2026
    assert record.last_activity_at is not None
    assert dict(record.tags) == {names.MLFLOW_USER: "someone", names.HOST: "gpu-01"}
    searches = [s for s in site.seen if s.path.endswith("/runs/search")]
    assert len(searches) == 2 and searches[1].body["page_token"] == "2"
    assert all(s.body["max_results"] == PAGE for s in site.seen)
    assert searches[0].body["filter"] == "attributes.status = 'RUNNING'"
    assert "99" not in searches[0].body["experiment_ids"]


def test_experiments_are_asked_for_in_chunks_and_pages_shrink_when_refused() -> None:
    server = CompatibleServer(experiments=1201, limit=SMALL_PAGE)
    with fake_server(server) as site, MlflowRestBackend(site.url) as rest:
        assert len(list(rest.iter_active(Selection()))) == 3 * 2
    searches = [s for s in site.seen if s.path.endswith("/runs/search")]
    chunks = [len(s.body["experiment_ids"]) for s in searches if "page_token" not in s.body]
    assert chunks == [500, 500, 201]
    assert site.seen[0].body["max_results"] == PAGE
    assert {s.body["max_results"] for s in site.seen[1:]} == {SMALL_PAGE}


# -- MLflow's auth and TLS variables ------------------------------------------------------


def _experiments(*_: object) -> Answer:
    return json_answer({"experiments": [{"experiment_id": "0", "name": "Default"}]})


@pytest.mark.parametrize(
    ("env", "userinfo", "expected"),
    [
        ({"MLFLOW_TRACKING_TOKEN": "tok-123"}, "", "Bearer tok-123"),
        (
            {"MLFLOW_TRACKING_USERNAME": "ann", "MLFLOW_TRACKING_PASSWORD": "pässwörd"},
            "",
            "Basic YW5uOnDDpHNzd8O2cmQ=",  # UTF-8, as MLflow encodes it
        ),
        (
            {
                "MLFLOW_TRACKING_USERNAME": "ann",
                "MLFLOW_TRACKING_PASSWORD": "pw",
                "MLFLOW_TRACKING_TOKEN": "t",
            },
            "bob:s%40cret@",
            "Basic Ym9iOnNAY3JldA==",  # credentials in the URI first, as requests does for MLflow
        ),
        ({"MLFLOW_TRACKING_USERNAME": "ann"}, "", None),
    ],
)
def test_auth_headers_follow_mlflow(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], userinfo: str, expected: str | None
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(names.MLFLOW_WORKSPACE_ENV, "team-a")
    with fake_server(_experiments) as site:
        url = site.url.replace("http://", f"http://{userinfo}")
        with MlflowRestBackend(url + "/?ignored=1") as rest:
            assert "1 active" in rest.describe()
    [seen] = site.seen
    assert seen.path == "/api/2.0/mlflow/experiments/search"
    assert seen.headers.get("Authorization") == expected
    assert seen.headers.get("X-MLFLOW-WORKSPACE") == "team-a"
    assert seen.headers["User-Agent"].startswith("mltidy/")


def test_tls_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = tls_context(cert, key)
    with fake_server(_experiments, tls=context) as site:
        with pytest.raises(StoreError) as caught:
            MlflowRestBackend(site.url)
        assert not isinstance(caught.value, StoreUnreachable)
        assert "certificate verify failed" in caught.value.message
        assert caught.value.hint and names.MLFLOW_TRACKING_SERVER_CERT_PATH_ENV in caught.value.hint

        monkeypatch.setenv(names.MLFLOW_TRACKING_SERVER_CERT_PATH_ENV, str(cert))
        MlflowRestBackend(site.url).close()
        monkeypatch.setenv(names.MLFLOW_TRACKING_INSECURE_TLS_ENV, "true")
        with pytest.raises(StoreError, match="both set"):
            MlflowRestBackend(site.url)
        monkeypatch.delenv(names.MLFLOW_TRACKING_SERVER_CERT_PATH_ENV)
        with pytest.warns(Warning):  # urllib3 says the request is unverified
            MlflowRestBackend(site.url).close()
        monkeypatch.setenv(names.MLFLOW_TRACKING_INSECURE_TLS_ENV, "maybe")
        with pytest.raises(StoreError, match="not true, false"):
            MlflowRestBackend(site.url)


def test_client_certificate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = tls_context(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cert)
    both = tmp_path / "client.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    monkeypatch.setenv(names.MLFLOW_TRACKING_SERVER_CERT_PATH_ENV, str(cert))
    with fake_server(_experiments, tls=context) as site:
        with pytest.raises(StoreError):
            MlflowRestBackend(site.url)
        monkeypatch.setenv(names.MLFLOW_TRACKING_CLIENT_CERT_PATH_ENV, str(both))
        MlflowRestBackend(site.url).close()


def test_settings_from_the_uri() -> None:
    store = store_id(StoreKind.MLFLOW, "https://u:p@Host:8443/mlflow/?x=1#y")
    settings = HttpSettings.from_env("https://u:p@Host:8443/mlflow/?x=1#y", store, {})
    assert settings.base_url == "https://Host:8443/mlflow"
    assert settings.verify is True and settings.cert is None
    assert (settings.connect_timeout, settings.read_timeout, settings.retries) == (5, 15, 1)
    quick = HttpSettings.from_env(
        "http://h",
        store,
        {"MLFLOW_HTTP_REQUEST_TIMEOUT": "3", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
    )
    assert (quick.read_timeout, quick.retries) == (3, 0)
    assert (
        HttpSettings.from_env("http://h", store, {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "9"}).retries
        == 1
    )
    with pytest.raises(StoreError):
        HttpSettings.from_env("ftp://h", store, {})


def test_library_only_auth_goes_to_the_client_path() -> None:
    assert needs_mlflow_client({}) is None
    assert needs_mlflow_client({"MLFLOW_TRACKING_AWS_SIGV4": "false"}) is None
    reason = needs_mlflow_client({"MLFLOW_TRACKING_AUTH": "my_plugin"})
    assert reason is not None and "MLFLOW_TRACKING_AUTH" in reason


def test_server_text_is_one_short_line_without_secrets() -> None:
    text = server_text("line one\nline\ttwo postgresql://u:hunter22@db/x " + "y" * 500)
    assert "\n" not in text and "\t" not in text and len(text) <= 300
    assert "hunter22" not in text


# -- no mlflow ----------------------------------------------------------------------------

PROBE = """
import json, sys
import mltidy.backends.mlflow.rest as rest
light = sorted({m.split(".")[0] for m in sys.modules} & {"mlflow", "requests"})
found = []
if len(sys.argv) > 1:
    with rest.MlflowRestBackend(sys.argv[1]) as backend:
        found = [r.id for r in backend.iter_active(rest.Selection())]
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"mlflow", "sqlalchemy", "optuna"})
print(json.dumps({"on_import": light, "after_scan": heavy, "found": found}))
"""


def _probe(*args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_importing_the_backend_imports_neither_mlflow_nor_requests() -> None:
    assert _probe()["on_import"] == []


@pytest.mark.mlflow_server
def test_a_scan_through_rest_never_imports_mlflow(server_world: KilledJobs) -> None:
    result = _probe(server_world.mlflow_uri)
    assert result["after_scan"] == []
    assert str(server_world.sigkilled.run_id) in result["found"]
