"""Options shared by several commands, defined once (each with its environment variable)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mltidy.cli.render import OutputFormat


class FailOn(str, Enum):
    """Which findings make ``scan`` exit 1 (for CI pre-checks)."""

    DANGLING = "dangling"
    STALE = "stale"
    DEAD = "dead"
    NEVER = "never"


PlanOption = Annotated[
    Path | None,
    typer.Option(
        "--plan",
        metavar="FILE",
        help="Apply exactly the changes of a plan this command wrote with -f json (a dry run), "
        "each still only if its record did not change since; with --yes. Takes no selection "
        "options: the plan names its records and stores.",
        show_default=False,
        dir_okay=False,
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
AllOption = Annotated[
    bool,
    typer.Option(
        "--all",
        "-a",
        envvar="MLTIDY_ALL",
        help="List every record in the table, even when they do not fit the screen (by "
        "default a long table is grouped per experiment and study).",
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


def _many(*flags: str, metavar: str, help: str) -> Any:
    """A repeatable option with a value (a list, ``None`` when not given)."""
    return Annotated[
        list[str] | None, typer.Option(*flags, metavar=metavar, help=help, show_default=False)
    ]


def _one(*flags: str, metavar: str, help: str) -> Any:
    """An option with one value (``None`` when not given)."""
    return Annotated[
        str | None, typer.Option(*flags, metavar=metavar, help=help, show_default=False)
    ]


#: The store and selection options (:class:`mltidy.cli.selection.Given`), by attribute name.
GIVEN_OPTIONS: dict[str, Any] = {
    "mlflow": _many(
        "--mlflow",
        metavar="URI",
        help="MLflow tracking store: sqlite:///mlflow.db, postgresql://..., mysql://..., "
        "file:./mlruns or http(s)://server. Repeatable.",
    ),
    "optuna": _many(
        "--optuna",
        metavar="URL",
        help="Optuna storage: sqlite:///optuna.db, postgresql://..., a journal file or redis://. "
        "Repeatable.",
    ),
    "optuna_utc_offset": _many(
        "--optuna-utc-offset",
        metavar="OFFSET",
        help="The UTC offset (+09:00) or time zone (Asia/Tokyo) of the process that wrote an "
        "Optuna 4.x storage, whose times are naive local time; STORE=OFFSET for one storage. "
        "Default: inferred from trials linked to MLflow runs. Repeatable. "
        "[env: MLTIDY_OPTUNA_UTC_OFFSET]",
    ),
    "experiment": _many(
        "--experiment",
        "-e",
        metavar="NAME",
        help="Only this MLflow experiment (name or id): its runs and the Optuna trials linked "
        "to them. Repeatable.",
    ),
    "study": _many(
        "--study",
        "-s",
        metavar="NAME",
        help="Only this Optuna study: its trials and the MLflow runs linked to them. Repeatable.",
    ),
    "run": _many(
        "--run",
        metavar="RUN_ID",
        help="Only this MLflow run: its id, or the start of it as tables show it (8 "
        "characters). Repeatable.",
    ),
    "trial": _many(
        "--trial",
        metavar="STUDY:N",
        help="Only this Optuna trial: STUDY:N, or #N (N) when only one study has a trial N. "
        "Repeatable.",
    ),
    "older_than": _one(
        "--older-than",
        metavar="DURATION",
        help="Only records started at least this long ago (90s, 30m, 2h, 7d).",
    ),
    "silent_for": _one(
        "--silent-for",
        metavar="DURATION",
        help="Only records with no metric, heartbeat or start for at least this long.",
    ),
    "user": _many(
        "--user",
        metavar="NAME",
        help="Only records started by this user (MLflow's user, or the provenance's). Repeatable.",
    ),
    "host": _many(
        "--host",
        metavar="NAME",
        help="Only records whose provenance says they started on this host (gpu-07 also "
        "matches gpu-07.cluster). Repeatable.",
    ),
    "stale_after": _one(
        "--stale-after",
        metavar="DURATION",
        help="Silence longer than this, without proof of life, makes a record stale "
        "(90s, 30m, 2h, 7d). Default: MLTIDY_STALE_AFTER, else stale_after from the config "
        "file, else 1h.",
    ),
}
