"""Verdicts from evidence. A pure function: no I/O, no clock, no process table of its own.

Everything the judge knows comes in through its arguments: the record (with the provenance its
job wrote, or inherited from its MLflow run), the local facts a probe gathered, and the policy
(what "stale" means, and "now"). It never says ``dead`` without evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from mltidy.durations import format_duration
from mltidy.model import Record, RecordKind, Verdict, VerdictKind
from mltidy.probe import LocalFacts
from mltidy.provenance import facts as keys

DEFAULT_STALE_AFTER = timedelta(hours=1)
#: A process whose start time differs from the recorded one by more is another process.
START_TIME_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class Policy:
    """What the judge may assume.

    Attributes:
        now: the time of the scan (aware UTC).
        stale_after: silence longer than this, with no proof of life, makes a record stale.
    """

    now: datetime
    stale_after: timedelta = DEFAULT_STALE_AFTER


@dataclass(frozen=True)
class Provenance:
    """Who ran a record, read from its ``mltidy.*`` tags or system attributes."""

    host: str
    pid: int | None
    pid_start: float | None
    boot_id: str | None
    command: str | None

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Provenance | None:
        """The provenance in a record's tags, or ``None`` when it has none."""
        host = tags.get(keys.HOST)
        if not host:
            return None
        return cls(
            host=host,
            pid=_int(tags.get(keys.PID)),
            pid_start=_float(tags.get(keys.PID_START)),
            boot_id=tags.get(keys.BOOT_ID) or None,
            command=tags.get(keys.CMD) or None,
        )


def heartbeat_at(tags: Mapping[str, str]) -> datetime | None:
    """mltidy's own heartbeat time from a record's tags."""
    text = tags.get(keys.HEARTBEAT_AT)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def judge(record: Record, facts: LocalFacts, policy: Policy) -> Verdict:
    """The verdict for one unfinished record, with one sentence a person can check."""
    prefix = f"its MLflow run {record.evidence_from[:8]}: " if record.evidence_from else ""
    provenance = Provenance.from_tags(record.tags)
    if provenance is not None and provenance.host == facts.host:
        local = _judge_local(provenance, facts)
        if local is not None:
            kind, reason = local
            return Verdict(kind, prefix + reason)
    kind, reason = _judge_activity(record, provenance, policy)
    return Verdict(kind, prefix + reason)


def _judge_local(provenance: Provenance, facts: LocalFacts) -> tuple[VerdictKind, str] | None:
    """Certain verdicts for a record started on this host; ``None`` when the facts are too thin."""
    host = provenance.host
    if provenance.boot_id and facts.boot_id and provenance.boot_id != facts.boot_id:
        return VerdictKind.DEAD, f"host {host} rebooted since it started (boot id changed)"
    if provenance.pid is None:
        return None
    what = f"process {provenance.pid}"
    if provenance.command:
        what += f" ({short_command(provenance.command)})"
    proc = facts.process(provenance.pid)
    if proc is None:
        return VerdictKind.DEAD, f"{what} no longer exists on {host}"
    if proc.zombie:
        return VerdictKind.DEAD, f"{what} has exited on {host} (a zombie nobody reaped)"
    if provenance.pid_start is not None and proc.started_at is not None:
        if abs(proc.started_at - provenance.pid_start) > START_TIME_TOLERANCE_S:
            return (
                VerdictKind.DEAD,
                f"{what} is gone from {host}: pid {provenance.pid} now belongs to another "
                f"process ({proc.command}), started later",
            )
        return VerdictKind.ALIVE, f"{what} is running on {host}"
    if proc.started_at is None:
        return VerdictKind.ALIVE, f"pid {provenance.pid} exists on {host} (not ours to inspect)"
    return VerdictKind.ALIVE, f"pid {provenance.pid} exists on {host} (no start time recorded)"


def _judge_activity(
    record: Record, provenance: Provenance | None, policy: Policy
) -> tuple[VerdictKind, str]:
    """Verdicts from activity and age alone (another host's record, or no provenance)."""
    limit = format_duration(policy.stale_after)
    where = f" from {provenance.host}" if provenance else ""
    beat = heartbeat_at(record.tags)
    candidates: list[tuple[datetime, str]] = []
    if beat is not None:
        candidates.append((beat, "heartbeat"))
    if record.last_activity_at is not None:
        word = "metric" if record.kind is RecordKind.MLFLOW_RUN else "heartbeat"
        candidates.append((record.last_activity_at, word))
    if candidates:
        last, word = max(candidates)
        silence = max(policy.now - last, timedelta(0))
        if silence > policy.stale_after:
            return (
                VerdictKind.STALE,
                f"last {word} {format_duration(silence)} ago{where}, longer than "
                f"--stale-after {limit}",
            )
        return VerdictKind.ALIVE, f"last {word} {format_duration(silence)} ago{where}"
    noun = "run" if record.kind is RecordKind.MLFLOW_RUN else "trial"
    if record.started_at is None:
        return VerdictKind.UNKNOWN, f"the {noun} records no start time and no activity"
    age = max(policy.now - record.started_at, timedelta(0))
    never = "never logged a metric" if noun == "run" else "has no heartbeat"
    if age > policy.stale_after:
        return (
            VerdictKind.STALE,
            f"started {format_duration(age)} ago{where} and {never}, longer than "
            f"--stale-after {limit}",
        )
    return (
        VerdictKind.UNKNOWN,
        f"started {format_duration(age)} ago{where} and {never}; too young to call stale "
        f"(--stale-after {limit})",
    )


def short_command(command: str) -> str:
    """``python3 /long/path/train.py --lr 0.1 ...`` -> ``python3 train.py``."""
    words = command.split()
    if not words:
        return command
    short = [words[0].rsplit("/", 1)[-1]]
    rest = words[1:]
    if rest[:1] == ["-m"] and len(rest) > 1:
        return " ".join([*short, "-m", rest[1]])
    script = next((w for w in rest if not w.startswith("-") and w != ""), None)
    if script:
        short.append(script.rsplit("/", 1)[-1])
    return " ".join(short)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
