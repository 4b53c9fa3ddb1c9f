"""``doctor``: what mltidy sees here, in one place: versions, stores, provenance, configuration.

For "why does scan say unknown?": it shows whether the MLflow plugin is registered and switched
on, whether this machine has a boot id, which stores were found and how they were opened.
"""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass
from importlib import metadata

from mltidy import __version__
from mltidy.backends.session import StoreSession
from mltidy.config import Config
from mltidy.provenance.facts import read_boot_id

OFF = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Check:
    """One line of the report: a topic, what was found, and whether it is fine."""

    topic: str
    finding: str
    ok: bool = True


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _plugin_registered() -> bool:
    group = metadata.entry_points(group="mlflow.run_context_provider")
    return any(ep.value.startswith("mltidy.") for ep in group)


def diagnose(session: StoreSession, config: Config) -> list[Check]:
    """Everything doctor reports, store checks included (stores are opened read-only)."""
    checks = [
        Check("mltidy", __version__),
        Check("python", platform.python_version()),
        Check(
            "mlflow",
            _version("mlflow-skinny")
            if _version("mlflow") == "not installed"
            else _version("mlflow"),
        ),
        Check("optuna", _version("optuna")),
        Check("host", socket.gethostname()),
    ]
    boot_id = read_boot_id()
    checks.append(
        Check(
            "boot id",
            boot_id or "none on this OS: reboots cannot be detected",
            ok=boot_id is not None,
        )
    )
    registered = _plugin_registered()
    switched_off = os.environ.get("MLTIDY_PROVENANCE", "1").strip().lower() in OFF
    checks.append(
        Check(
            "MLflow plugin",
            "registered" + (", but switched off by MLTIDY_PROVENANCE" if switched_off else "")
            if registered
            else "not registered: reinstall mltidy in this environment",
            ok=registered and not switched_off,
        )
    )
    beat = os.environ.get("MLTIDY_HEARTBEAT")
    checks.append(Check("heartbeat", f"every {beat} s (MLTIDY_HEARTBEAT)" if beat else "off"))
    checks.append(Check("config file", str(config.file.path) if config.file.path else "none"))
    for spec in session.specs:
        topic = f"{spec.kind.value} store"
        shown = f"{spec.id} ({spec.source})"
        session.backend(spec.key)
        status = session.status(spec.key)
        if status.ok:
            checks.append(Check(topic, f"{shown}: {status.detail}"))
        else:
            checks.append(Check(topic, f"{shown}: {status.error}", ok=False))
    return checks
