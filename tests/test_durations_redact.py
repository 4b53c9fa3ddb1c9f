"""Durations (a contract: 90s, 30m, 2h, 7d) and secret redaction."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mltidy.durations import format_duration, parse_duration
from mltidy.errors import UsageError
from mltidy.redact import redact, redact_notification_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
        (" 2H ", timedelta(hours=2)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "-1h", "0s", "2h foo", "1h-30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=45), "45 s"),
        (timedelta(minutes=12, seconds=5), "12 min"),
        (timedelta(hours=2, minutes=14), "2 h 14 min"),
        (timedelta(hours=3), "3 h"),
        (timedelta(days=3, hours=4), "3 d 4 h"),
    ],
)
def test_format_duration(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://bob:hunter2@db:5432/mlflow", "postgresql://bob:***@db:5432/mlflow"),
        ("mysql+pymysql://u:p%40ss@h/db", "mysql+pymysql://u:***@h/db"),
        ("https://server/?token=abc&x=1", "https://server/?token=***&x=1"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
    ],
)
def test_redact(uri: str, shown: str) -> None:
    assert redact(uri) == shown
    assert redact(f"cannot connect to {uri} now") == f"cannot connect to {shown} now"


def test_notification_urls_are_secret_whole() -> None:
    assert redact_notification_url("slack://T000/B000/XXXX") == "slack://***"
    assert "XXXX" not in redact_notification_url("json://hooks.local/XXXX")


def test_durations_longer_than_a_century_are_refused() -> None:
    for text in ("99999999999999999999d", "1000000d", "1e999s"):
        with pytest.raises(UsageError):
            parse_duration(text)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("bob:hunter22@db.example/mlflow", "hunter22"),
        ("cannot reach alice:s3cr3t@10.0.0.1:5432", "s3cr3t"),
    ],
)
def test_credentials_without_a_scheme_are_masked(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_a_notification_url_without_a_scheme_shows_nothing() -> None:
    assert redact_notification_url("bob:t0ken@hooks.example/x") == "***"
