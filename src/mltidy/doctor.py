"""``doctor``: what mltidy sees here, in one place: versions, stores, provenance, configuration.

For "why does scan say unknown?": it shows whether the MLflow plugin is registered and switched
on, whether this machine has a boot id, which stores were found and how they were opened.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata

from mltidy import __version__, names
from mltidy.backends.interface import Backend, NaiveTimes, StoreClock
from mltidy.backends.session import StoreSession
from mltidy.config import Config
from mltidy.durations import format_duration
from mltidy.errors import StoreError
from mltidy.judge import FUTURE_TOLERANCE
from mltidy.model import ActivitySource, JudgedRecord, Record, Selection, StoreKey, utc_now
from mltidy.notify.events import when
from mltidy.provenance.facts import host_name, read_boot_id

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
        Check("host", host_name()),
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
    for ignored in config.file.ignored:
        checks.append(Check("config file", f"ignored {ignored}", ok=False))
    checks.append(Check("clock", f"this host: {when(utc_now())}"))
    for spec in session.specs:
        topic = f"{spec.kind.value} store"
        shown = f"{spec.id} ({spec.source})"
        backend = session.backend(spec.key)
        status = session.status(spec.key)
        if status.ok:
            checks.append(Check(topic, f"{shown}: {status.detail}"))
        else:
            checks.append(Check(topic, f"{shown}: {status.error}", ok=False))
        if backend is not None and status.ok:
            checks.append(_clock_check(spec.id, backend))
    evidence = running_evidence(session)
    for spec in session.specs:
        backend = session.backend(spec.key)
        if backend is None:
            continue
        if isinstance(backend, NaiveTimes):
            known = backend.writer_zone_known()
            checks.append(Check("times", f"{spec.id}: {backend.describe_times()}", known))
        counts = evidence.get(spec.key, Evidence())
        checks.append(Check("RUNNING records", f"{spec.id}: {counts.describe()}", not counts.bare))
    return checks


@dataclass
class Evidence:
    """What a store's RUNNING records carry to be judged by: provenance (their own, or their
    MLflow run's), a heartbeat (mltidy's, or Optuna's own), or neither (age and rhythm only)."""

    running: int = 0
    provenance: int = 0
    heartbeat: int = 0
    bare: int = 0

    def add(self, record: Record) -> None:
        self.running += 1
        has_provenance = bool(record.tags.get(names.HOST))
        has_heartbeat = bool(record.tags.get(names.HEARTBEAT_AT)) or (
            record.activity_source is ActivitySource.OPTUNA_HEARTBEAT
        )
        self.provenance += has_provenance
        self.heartbeat += has_heartbeat
        self.bare += not (has_provenance or has_heartbeat)

    def describe(self) -> str:
        if not self.running:
            return "no RUNNING records"
        text = (
            f"{self.running} RUNNING: {self.provenance} with provenance, {self.heartbeat} with a "
            f"heartbeat, {self.bare} with neither"
        )
        if self.bare:
            text += (
                " (judged by age and rhythm only: install mltidy in the training environment "
                "or start jobs with mltidy run; see docs/provenance.md)"
            )
        return text


def running_evidence(session: StoreSession) -> dict[StoreKey, Evidence]:
    """Per store, what its RUNNING records carry, read the way scan reads them (a trial takes
    its MLflow run's provenance). A store that fails is left out (its check says why)."""
    from mltidy.evidence.local import LocalProbe
    from mltidy.judge import Policy
    from mltidy.scan import iter_scan

    found: dict[StoreKey, Evidence] = {}
    events = iter_scan(session, Selection(), Policy(now=utc_now()), LocalProbe(), schedulers=())
    for event in events:
        if isinstance(event, JudgedRecord):
            found.setdefault(event.record.store_key, Evidence()).add(event.record)
    return found


def _clock_check(store: str, backend: Backend) -> Check:
    """How far the store's server clock and its newest record time are from this host's."""
    topic = "store clock"
    if not isinstance(backend, StoreClock):
        return Check(topic, f"{store}: this kind of store has no clock to compare")
    try:
        before = utc_now()
        reading = backend.clock()
        after = utc_now()
    except StoreError as exc:
        return Check(topic, f"{store}: {exc.message}", ok=False)
    here = before + (after - before) / 2
    parts: list[str] = []
    ok = True
    if reading.server_now is not None:
        skew = reading.server_now - here
        ok = ok and abs(skew) <= FUTURE_TOLERANCE
        parts.append(f"server clock {_offset(skew, reading.resolution)} this host")
    else:
        parts.append("server clock unknown")
    if reading.newest is not None:
        ahead = reading.newest - here
        if ahead > FUTURE_TOLERANCE:
            ok = False
            parts.append(
                f"newest record time ({reading.newest_what}, {when(reading.newest)}) is "
                f"{format_duration(ahead)} ahead of this host: a writer's clock is ahead or a "
                "time zone is wrong"
            )
        else:
            parts.append(f"newest record time {when(reading.newest)} ({reading.newest_what})")
    else:
        parts.append("no record times yet")
    return Check(topic, f"{store}: " + "; ".join(parts), ok=ok)


def _offset(delta: timedelta, resolution: timedelta) -> str:
    """``within 0.3 s of``, ``2 min ahead of``: what a clock reading says, given how coarse it
    is (and about a second of request time)."""
    seconds = delta.total_seconds()
    noise = resolution.total_seconds() + 1
    if abs(seconds) < noise:
        return f"within {max(abs(seconds), resolution.total_seconds()):.1f} s of"
    word = "ahead of" if seconds > 0 else "behind"
    return f"{format_duration(delta)} {word}"
