"""Options shared by several commands, defined once (each with its environment variable)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from mltidy.cli.render import OutputFormat


class FailOn(str, Enum):
    """Which findings make ``scan`` exit 1 (for CI pre-checks)."""

    DANGLING = "dangling"
    STALE = "stale"
    DEAD = "dead"
    NEVER = "never"


MlflowOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mlflow",
        metavar="URI",
        help="MLflow tracking store: sqlite:///mlflow.db, postgresql://..., mysql://..., "
        "file:./mlruns or http(s)://server. Repeatable.",
        show_default=False,
    ),
]
OptunaOption = Annotated[
    list[str] | None,
    typer.Option(
        "--optuna",
        metavar="URL",
        help="Optuna storage: sqlite:///optuna.db, postgresql://..., a journal file or redis://. "
        "Repeatable.",
        show_default=False,
    ),
]
OptunaUtcOffsetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--optuna-utc-offset",
        metavar="OFFSET",
        help="The UTC offset (+09:00) or time zone (Asia/Tokyo) of the process that wrote an "
        "Optuna 4.x storage, whose times are naive local time; STORE=OFFSET for one storage. "
        "Default: inferred from trials linked to MLflow runs. Repeatable. "
        "[env: MLTIDY_OPTUNA_UTC_OFFSET]",
        show_default=False,
    ),
]
ExperimentOption = Annotated[
    list[str] | None,
    typer.Option(
        "--experiment",
        "-e",
        metavar="NAME",
        help="Only this MLflow experiment (name or id). Repeatable.",
        show_default=False,
    ),
]
StudyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--study",
        "-s",
        metavar="NAME",
        help="Only this Optuna study. Repeatable.",
        show_default=False,
    ),
]
StaleAfterOption = Annotated[
    str | None,
    typer.Option(
        "--stale-after",
        metavar="DURATION",
        help="Silence longer than this, without proof of life, makes a record stale "
        "(90s, 30m, 2h, 7d). Default: MLTIDY_STALE_AFTER, else stale_after from the config "
        "file, else 1h.",
        show_default=False,
    ),
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        "-f",
        envvar="MLTIDY_FORMAT",
        help="table for people, json or jsonl for programs, markdown for reports.",
        case_sensitive=False,
    ),
]
FailOnOption = Annotated[
    FailOn,
    typer.Option(
        "--fail-on",
        envvar="MLTIDY_FAIL_ON",
        help="Exit 1 when records are found: dangling = dead, stale or unknown (not alive, not "
        "active); "
        "stale = dead or stale; dead = dead only; never = always exit 0 on findings.",
        case_sensitive=False,
    ),
]
ThisHostOption = Annotated[
    bool,
    typer.Option(
        "--this-host",
        envvar="MLTIDY_THIS_HOST",
        help="Judge only records whose provenance says they started on this host (for clusters "
        "where every node reaps its own dead from cron).",
    ),
]
YesOption = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Apply the changes. Without it the command prints the plan and changes nothing.",
    ),
]
MlflowUiOption = Annotated[
    str | None,
    typer.Option(
        "--mlflow-ui",
        metavar="URL",
        help="Base URL of the MLflow UI for links. Default: MLTIDY_MLFLOW_UI, else mlflow_ui "
        "from the config file, else the tracking server when it is http(s), else "
        "http://127.0.0.1:5000.",
        show_default=False,
    ),
]
DashboardUrlOption = Annotated[
    str | None,
    typer.Option(
        "--dashboard-url",
        metavar="URL",
        help="Base URL of optuna-dashboard for links. Default: MLTIDY_DASHBOARD_URL, else "
        "dashboard_url from the config file, else http://127.0.0.1:8080.",
        show_default=False,
    ),
]
NotifyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--notify",
        metavar="URL",
        help="Send notifications to this apprise URL (slack://, mailto://, ntfy://, discord://, "
        "json://, workflows:// ...). Repeatable. Default: MLTIDY_NOTIFY (several, "
        "space-separated), else notify in the config file. URLs are secrets: mltidy prints only "
        "their scheme.",
        show_default=False,
    ),
]
