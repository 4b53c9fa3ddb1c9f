"""Delivery through apprise to real receivers on 127.0.0.1, grouping, and secrets kept out."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mltidy.config import Config, FileConfig, load_file_config
from mltidy.errors import UsageError
from mltidy.linking.urls import LinkBases
from mltidy.model import JudgedRecord, Record, RecordKind, Verdict, VerdictKind
from mltidy.notify.delivery import Target, deliver, resolve_targets, scrub, validate
from mltidy.notify.events import Event, EventKind, Severity
from mltidy.notify.messages import compose
from mltidy.notify.store_events import verdict_event
from receivers import HttpReceiver, SmtpReceiver, free_port

NOW = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
SECRET = "T0KEN-9f8e7d6c5b4a"


def _run(run_id: str, name: str = "trial-0", trial: int | None = 0) -> JudgedRecord:
    tags = {"mltidy.host": "gpu-07", "mltidy.pid": "4121", "mltidy.cmd": "python3 /x/train.py"}
    if trial is not None:
        tags |= {"mltidy.optuna.study": "tuning", "mltidy.optuna.trial_number": str(trial)}
    record = Record(
        kind=RecordKind.MLFLOW_RUN,
        store="sqlite:///mlflow.db",
        id=run_id,
        name=name,
        container="tuning",
        container_id="1",
        state="RUNNING",
        started_at=NOW - timedelta(minutes=30),
        last_activity_at=NOW - timedelta(minutes=5),
        tags=tags,
    )
    reason = "process 4121 (python3 train.py) no longer exists on gpu-07"
    return JudgedRecord(record, Verdict(VerdictKind.DEAD, reason))


def _trial(trial_id: str, number: int, run_id: str) -> JudgedRecord:
    record = Record(
        kind=RecordKind.OPTUNA_TRIAL,
        store="sqlite:///optuna.db",
        id=trial_id,
        name=f"trial {number}",
        container="tuning",
        container_id="3",
        state="RUNNING",
        started_at=NOW - timedelta(minutes=30),
        trial_number=number,
        evidence_from=run_id,
    )
    reason = f"its MLflow run {run_id[:8]}: process 4121 no longer exists on gpu-07"
    return JudgedRecord(record, Verdict(VerdictKind.DEAD, reason))


def _events() -> list[Event]:
    links = LinkBases(mlflow_ui="http://mlflow.example:5000", dashboard="http://dash:8080")
    run_id = "a" * 32
    return [
        verdict_event(_run(run_id), links, NOW),
        verdict_event(_trial("7", 0, run_id), links, NOW),
    ]


def test_json_and_form_receivers_get_one_grouped_message(http_receiver: HttpReceiver) -> None:
    targets = [Target(http_receiver.url("json", "/j")), Target(http_receiver.url("form", "/f"))]
    done = deliver(compose(_events()), targets)
    assert [d.ok for d in done] == [True, True]
    got = {r.path: r for r in http_receiver.wait_for(2)}
    as_json, as_form = got["/j"].body, got["/f"].body
    assert as_json["type"] == as_form["type"] == "failure"
    # A run and the trial it trained are one job: one entry, and the title is its headline.
    assert as_json["title"].startswith("mltidy: run trial-0 (aaaaaaaa) in experiment tuning is")
    message = as_json["message"]
    assert as_form["message"] == message
    # One line saying what happened, then the facts, then the links; the trial is folded in.
    first, *rest = message.splitlines()
    assert first.startswith("run trial-0 (aaaaaaaa) in experiment tuning is dead: process 4121")
    assert "  store: sqlite:///mlflow.db" in rest
    assert "  Optuna trial: tuning #0" in rest
    assert "  trial store: sqlite:///optuna.db" in rest
    assert "  MLflow: http://mlflow.example:5000/#/experiments/1/runs/" + "a" * 32 in rest
    assert "  optuna-dashboard: http://dash:8080/dashboard/studies/3/trials?numbers=0" in rest
    assert message.count("is dead") == 1


def test_mailto_reaches_a_real_smtp_server(smtp_receiver: SmtpReceiver) -> None:
    (done,) = deliver(compose(_events()), [Target(smtp_receiver.url())])
    assert done.ok, done.error
    (mail,) = smtp_receiver.wait_for(1)
    assert smtp_receiver.envelopes == [("mltidy@example.org", ["researcher@example.org"])]
    assert mail["Subject"].startswith("mltidy: run trial-0 (aaaaaaaa) in experiment tuning is dead")
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert "is dead: process 4121 (python3 train.py) no longer exists on gpu-07" in text
    assert "  command: python3 train.py" in text.replace("\r\n", "\n")


def test_many_events_make_one_message_with_a_count(http_receiver: HttpReceiver) -> None:
    links = LinkBases()
    events = [verdict_event(_run(f"{i:032x}", f"trial-{i}", None), links, NOW) for i in range(30)]
    message = compose(events)
    assert message.title == "mltidy: 30 runs dead"
    assert message.body.count("\n  store: ") == 10  # the first ten in full
    assert "And 20 more:\n- run trial-10 " in message.body
    grouped = compose([*events[:2], *_events()])
    assert grouped.title == "mltidy: 3 runs dead, 1 trial dead"
    deliver(message, [Target(http_receiver.url())])
    assert len(http_receiver.wait_for(1)) == 1


def test_a_failed_delivery_says_why_without_the_url(caplog: pytest.LogCaptureFixture) -> None:
    url = f"json://127.0.0.1:{free_port()}/hooks/{SECRET}"
    with caplog.at_level(logging.DEBUG):
        (done,) = deliver(compose(_events()), [Target(url)])
    assert not done.ok
    assert done.target == "json://***"
    assert done.error and SECRET not in done.error
    assert SECRET not in caplog.text  # apprise's own log lines were kept off every handler


def test_unusable_urls_are_usage_errors_without_the_secret() -> None:
    for url in (f"nope://{SECRET}", f"slack://{SECRET}"):
        with pytest.raises(UsageError) as raised:
            validate([Target(url, "--notify")])
        text = raised.value.message + (raised.value.hint or "")
        assert SECRET not in text
        assert url.split("://")[0] + "://***" in text


def test_scrub_masks_every_url_and_every_piece_of_the_target() -> None:
    url = f"slack://{SECRET}/B0000/xoxb-{SECRET}"
    text = f"Failed to send to https://hooks.slack.com/{SECRET} with token xoxb-{SECRET}."
    cleaned = scrub(text, url)
    assert SECRET not in cleaned
    assert "https://***" in cleaned


def test_targets_come_from_options_else_the_config_file(tmp_path: Path) -> None:
    file = FileConfig(tmp_path / "mltidy.toml", {"notify": ["ntfy://a", "json://b json://c"]})
    config = Config(file, {}, tmp_path)
    from_config = resolve_targets(None, config)
    assert [t.url for t in from_config] == ["ntfy://a", "json://b", "json://c"]
    assert {t.source for t in from_config} == {"mltidy.toml"}
    assert [t.url for t in resolve_targets(["json://x"], config)] == ["json://x"]
    assert repr(from_config[0]).count("ntfy://a") == 0  # never in a repr either
    (tmp_path / "mltidy.toml").write_text("notify = 5\n")
    with pytest.raises(UsageError, match="notify"):
        load_file_config(tmp_path)


def test_severity_is_the_worst_of_the_group() -> None:
    def event(severity: Severity) -> Event:
        return Event(EventKind.RUN_FINISHED, severity.value, NOW, "x", severity)

    assert compose([event(Severity.SUCCESS), event(Severity.WARNING)]).severity is Severity.WARNING
    assert compose([event(Severity.INFO)]).severity is Severity.INFO


def test_notify_when_done_reports_optimize_from_inside_the_process(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    import optuna

    from mltidy.notify.optuna import notify_when_done

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="inproc", storage=f"sqlite:///{tmp_path / 'o.db'}")
    url = http_receiver.url()
    with notify_when_done(study, url):
        study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.25) ** 2, n_trials=4)
    best = study.best_trial

    def boom(trial: optuna.Trial) -> float:
        raise ValueError("the data loader broke")

    with pytest.raises(ValueError), notify_when_done(study, url):
        study.optimize(boom, n_trials=1)
    with notify_when_done(study, url, on="failure"):
        pass  # a success is not reported with on="failure"
    done, failed = http_receiver.wait_for(2)
    assert done.body["type"] == "success"
    assert done.body["title"].startswith("mltidy: study inproc: optimize completed after ")
    assert done.body["title"].endswith(f", best value {best.value:.6g} (trial {best.number})")
    assert "  trials: 4 in the study (4 complete)" in done.body["message"]
    assert (
        f"dashboard/studies/{study._study_id}/trials?numbers={best.number}" in done.body["message"]
    )
    assert failed.body["type"] == "failure"
    assert "optimize raised ValueError: the data loader broke after " in failed.body["title"]
    assert "5 in the study (4 complete, 1 fail)" in failed.body["message"]
    time.sleep(0.2)
    assert len(http_receiver.requests) == 2
