"""Verdicts from evidence. A pure function: no I/O, no clock, no process table of its own.

Everything the judge knows comes in through its arguments: the record (with the provenance its
job wrote, or inherited from its MLflow run, and its activity), the local facts a probe
gathered, and the policy (what "stale" means, and "now"). It never says ``dead`` without
evidence, nor ``alive`` without proof of life. The rules, in order (docs/provenance.md):

1. **This host, same boot, same pid namespace**: the process with its recorded start time is
   ``alive``; gone, a zombie or another process on that pid is ``dead``; a reboot is ``dead``.
   A pid from another pid namespace is looked up in that namespace, or not used at all.
2. **A heartbeat with its interval**: fresh (within a few intervals) is ``alive``; stopped is
   ``stale``, whatever ``--stale-after`` says.
3. **Activity without proof** (a metric, an Optuna heartbeat): silence is judged against the
   record's own rhythm (its longest pause while it was logging, times a factor, with a floor)
   when it has enough history, else against ``--stale-after``: longer is ``stale``, shorter is
   ``active``.
4. **No activity at all**: older than ``--stale-after`` is ``stale``, younger ``unknown``.

A time in the future beyond a tolerance is never proof of life: it makes the verdict
``unknown`` with its own reason (a clock ahead, or a wrong time zone).

Size: one pure function and its rules: every basis a verdict can rest on is decided here, in order,
so the precedence of evidence is readable in one file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from mltidy import names
from mltidy.durations import format_duration, format_offset
from mltidy.evidence.local import LocalFacts, ProcessInfo
from mltidy.evidence.scheduler import JobEvidence, Liveness
from mltidy.model import ActivitySource, Basis, Record, RecordKind, Verdict, VerdictKind
from mltidy.provenance.facts import INITIAL_PID_NS

DEFAULT_STALE_AFTER = timedelta(hours=1)
#: A process whose start time differs from the recorded one by more is another process.
START_TIME_TOLERANCE_S = 1.0
#: A record silent for longer than this many of its longest pauses is stale by its rhythm...
RHYTHM_FACTOR = 5
#: ... but never before this much silence ...
RHYTHM_FLOOR = timedelta(minutes=2)
#: ... and only with this many distinct activity times behind it (else --stale-after rules).
RHYTHM_MIN_ACTIVITIES = 5
#: A heartbeat is fresh for this many intervals, plus one more (at most this slack) for slow
#: writes and clocks that disagree a little.
HEARTBEAT_MISSES = 3
HEARTBEAT_SLACK = timedelta(seconds=15)
#: Optuna's own heartbeat does not record its interval; a beat older than this (or than
#: --stale-after, when that is shorter) is not fresh.
OPTUNA_HEARTBEAT_GRACE = timedelta(minutes=5)
#: Clocks of different machines disagree a little; beyond this, a time in the future is wrong.
FUTURE_TOLERANCE = timedelta(minutes=2)
#: The UTC offsets in use: a naive local time of an unknown zone is this far from UTC at most.
EASTMOST_OFFSET = timedelta(hours=14)
WESTMOST_OFFSET = timedelta(hours=-12)
#: Where to read about the writer's zone of Optuna 4.x storages.
ZONE_HINT = "set optuna_utc_offset or --optuna-utc-offset (docs/provenance.md)"


@dataclass(frozen=True)
class Policy:
    """What the judge may assume.

    Attributes:
        now: the time of the scan (aware UTC).
        stale_after: silence longer than this, with no proof of life and too little history
            for a rhythm, makes a record stale.
        rhythm_floor: the least silence the rhythm rule calls stale (:data:`RHYTHM_FLOOR`);
            no option sets it: tests that measure the rule on jobs of seconds scale it down
            with the jobs' pauses, since the rule is otherwise the same at every time scale.
    """

    now: datetime
    stale_after: timedelta = DEFAULT_STALE_AFTER
    rhythm_floor: timedelta = RHYTHM_FLOOR


@dataclass(frozen=True)
class Provenance:
    """Who ran a record, read from its ``mltidy.*`` tags or system attributes."""

    host: str
    pid: int | None
    pid_start: float | None
    boot_id: str | None
    command: str | None
    pid_ns: int | None = None

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Provenance | None:
        """The provenance in a record's tags, or ``None`` when it has none."""
        host = tags.get(names.HOST)
        if not host:
            return None
        return cls(
            host=host,
            pid=_pid(tags.get(names.PID)),
            pid_start=_float(tags.get(names.PID_START)),
            boot_id=tags.get(names.BOOT_ID) or None,
            command=tags.get(names.CMD) or None,
            pid_ns=_int(tags.get(names.PID_NS)),
        )


def heartbeat_at(tags: Mapping[str, str]) -> datetime | None:
    """mltidy's own heartbeat time from a record's tags."""
    text = tags.get(names.HEARTBEAT_AT)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def heartbeat_interval(tags: Mapping[str, str]) -> timedelta | None:
    """The interval mltidy's heartbeat recorded, if any."""
    seconds = _float(tags.get(names.HEARTBEAT_INTERVAL))
    # An interval of more than a day is no heartbeat (and a huge one overflows timedelta).
    return timedelta(seconds=seconds) if seconds and 0 < seconds <= 86400 else None


#: Verdicts this host gives with certainty, which no scheduler needs to confirm.
CERTAIN_HERE = frozenset({Basis.PROCESS, Basis.REBOOT, Basis.NAMESPACE})
#: Verdicts a run's rhythm can change: recent activity without proof of life (active, or
#: stale by its rhythm), or too little evidence. Stores that read rhythms on demand
#: (``RhythmReader``) read them for these only.
RHYTHM_MATTERS = frozenset({Basis.ACTIVITY, Basis.NONE})


def judge(
    record: Record, facts: LocalFacts, policy: Policy, scheduler: JobEvidence | None = None
) -> Verdict:
    """The verdict for one unfinished record, with one sentence a person can check.

    ``scheduler`` is what the scheduler that ran the record's job says, when one was asked
    (:mod:`mltidy.evidence.scheduler`): an ended job is ``dead``, a running one ``alive``, from
    any host; undecided, its reason is added to the other evidence's.
    """
    prefix = f"its MLflow run {record.evidence_from[:8]}: " if record.evidence_from else ""
    provenance = Provenance.from_tags(record.tags)
    note = ""
    if provenance is not None and provenance.host == facts.host:
        local = _judge_local(provenance, facts)
        if isinstance(local, Verdict):
            return Verdict(local.kind, prefix + local.reason, local.basis)
        note = local
    if scheduler is not None:
        if scheduler.liveness is Liveness.ENDED:
            return Verdict(
                VerdictKind.DEAD, prefix + scheduler.reason, Basis.SCHEDULER, scheduler.ended_at
            )
        if scheduler.liveness is Liveness.RUNNING:
            return Verdict(VerdictKind.ALIVE, prefix + scheduler.reason, Basis.SCHEDULER)
        note += f" ({scheduler.reason})"
    verdict = _judge_activity(record, provenance, policy)
    return Verdict(verdict.kind, prefix + verdict.reason + note, verdict.basis)


def _judge_local(provenance: Provenance, facts: LocalFacts) -> Verdict | str:
    """A certain verdict for a record started on this host, or a note on why there is none."""
    host = provenance.host
    if provenance.boot_id and facts.boot_id and provenance.boot_id != facts.boot_id:
        return Verdict(
            VerdictKind.DEAD,
            f"host {host} rebooted since it started (boot id changed)",
            Basis.REBOOT,
        )
    if provenance.pid is None:
        return ""
    what = f"process {provenance.pid}"
    if provenance.command:
        what += f" ({short_command(provenance.command)})"
    if provenance.pid_ns is None or facts.pid_ns is None or provenance.pid_ns == facts.pid_ns:
        if provenance.pid_ns is None and facts.pid_ns is not None and not _initial(facts):
            # An older record that does not say which pid namespace its pid lives in, judged
            # from inside a container: the pid may be anyone's.
            return (
                f" (its pid {provenance.pid} cannot be checked: the record does not name its "
                "pid namespace and mltidy runs inside a container)"
            )
        return _by_process(what, provenance, facts.process(provenance.pid), host, "")
    found = facts.process_in_namespace(provenance.pid_ns, provenance.pid)
    where = f" in pid namespace {provenance.pid_ns}"
    if not found.visible:
        return (
            f" ({what} ran in another pid namespace ({provenance.pid_ns}, a container), which "
            "mltidy cannot see from here)"
        )
    if not found.exists:
        return Verdict(
            VerdictKind.DEAD,
            f"{what} is gone from {host}: its pid namespace ({provenance.pid_ns}, a container) "
            "has no process left",
            Basis.NAMESPACE,
        )
    return _by_process(what, provenance, found.process, host, where)


def _initial(facts: LocalFacts) -> bool:
    return facts.pid_ns == INITIAL_PID_NS


def _by_process(
    what: str, provenance: Provenance, proc: ProcessInfo | None, host: str, where: str
) -> Verdict:
    pid = provenance.pid
    if proc is None:
        return Verdict(VerdictKind.DEAD, f"{what} no longer exists on {host}{where}", Basis.PROCESS)
    if proc.zombie:
        return Verdict(
            VerdictKind.DEAD,
            f"{what} has exited on {host}{where} (a zombie nobody reaped)",
            Basis.PROCESS,
        )
    if provenance.pid_start is not None and proc.started_at is not None:
        if abs(proc.started_at - provenance.pid_start) > START_TIME_TOLERANCE_S:
            return Verdict(
                VerdictKind.DEAD,
                f"{what} is gone from {host}{where}: pid {pid} now belongs to another process "
                f"({proc.command}), started later",
                Basis.PROCESS,
            )
        return Verdict(VerdictKind.ALIVE, f"{what} is running on {host}{where}", Basis.PROCESS)
    if proc.started_at is None:
        reason = f"pid {pid} exists on {host}{where} (not ours to inspect)"
    else:
        reason = f"pid {pid} exists on {host}{where} (no start time recorded)"
    return Verdict(VerdictKind.ALIVE, reason, Basis.PROCESS)


def _judge_activity(record: Record, provenance: Provenance | None, policy: Policy) -> Verdict:
    """Verdicts from heartbeats, activity and age (another host's record, or no provenance)."""
    where = f" from {provenance.host}" if provenance else ""
    now = policy.now
    future = _future(record, now)
    if future is not None:
        what, ahead = future
        clock = f"the clock of {provenance.host}" if provenance else "the writer's clock"
        if what == "start" and record.assumed_utc_offset is not None:
            return Verdict(
                VerdictKind.UNKNOWN,
                f"its start reads {format_duration(ahead)} in the future: "
                f"{_zone_unknown(record.assumed_utc_offset)}; no proof of life either way",
                Basis.CLOCK,
            )
        return Verdict(
            VerdictKind.UNKNOWN,
            f"its {what} is dated {format_duration(ahead)} in the future: {clock} is ahead, or "
            "the store's time zone is not the one mltidy assumed; no proof of life either way",
            Basis.CLOCK,
        )
    beat = heartbeat_at(record.tags)
    interval = heartbeat_interval(record.tags)
    last = record.last_activity_at
    if beat is not None and (last is None or beat >= last or interval is not None):
        return _by_heartbeat(beat, interval, where, policy)
    if last is not None:
        return _by_rhythm(record, last, where, policy)
    noun = "run" if record.kind is RecordKind.MLFLOW_RUN else "trial"
    if record.started_at is None:
        return Verdict(VerdictKind.UNKNOWN, f"the {noun} records no start time and no activity")
    age = max(now - record.started_at, timedelta(0))
    never = "never logged a metric" if noun == "run" else "reported no activity"
    limit = format_duration(policy.stale_after)
    assumed = record.assumed_utc_offset
    if assumed is not None:
        # Its start is naive local time of an unknown zone: anywhere a real offset puts it.
        youngest = max(age - (assumed - WESTMOST_OFFSET), timedelta(0))
        oldest = age + (EASTMOST_OFFSET - assumed)
        if youngest > policy.stale_after:
            return Verdict(
                VerdictKind.STALE,
                f"started at least {format_duration(youngest)} ago{where} (in any time zone) "
                f"and {never}, longer than --stale-after {limit}",
                Basis.STALE_AFTER,
            )
        if oldest > policy.stale_after:
            return Verdict(
                VerdictKind.UNKNOWN,
                f"{never}, and its age depends on a time zone mltidy does not know: started "
                f"{format_duration(age)} ago if its writer's clock was at "
                f"{format_offset(assumed)}, {format_duration(youngest)} to "
                f"{format_duration(oldest)} ago at other offsets: {_zone_unknown(assumed)}",
                Basis.CLOCK,
            )
    if age > policy.stale_after:
        return Verdict(
            VerdictKind.STALE,
            f"started {format_duration(age)} ago{where} and {never}, longer than "
            f"--stale-after {limit}",
            Basis.STALE_AFTER,
        )
    return Verdict(
        VerdictKind.UNKNOWN,
        f"started {format_duration(age)} ago{where} and {never}; too young to call stale "
        f"(--stale-after {limit})",
    )


def _by_heartbeat(
    beat: datetime, interval: timedelta | None, where: str, policy: Policy
) -> Verdict:
    silent = max(policy.now - beat, timedelta(0))
    if interval is None:
        # A heartbeat from an mltidy that did not record its interval: --stale-after decides.
        limit = policy.stale_after
        rule = f"longer than --stale-after {format_duration(limit)}"
    else:
        limit = interval * HEARTBEAT_MISSES + min(HEARTBEAT_SLACK, interval)
        rule = f"it beat every {format_duration(interval)}"
    if silent <= limit:
        every = f" (every {format_duration(interval)})" if interval else ""
        return Verdict(
            VerdictKind.ALIVE,
            f"mltidy heartbeat {format_duration(silent)} ago{where}{every}",
            Basis.HEARTBEAT,
        )
    return Verdict(
        VerdictKind.STALE,
        f"its heartbeat stopped: last beat {format_duration(silent)} ago{where}, {rule}",
        Basis.HEARTBEAT,
    )


def _by_rhythm(record: Record, last: datetime, where: str, policy: Policy) -> Verdict:
    silent = max(policy.now - last, timedelta(0))
    source = activity_source(record)
    if source is ActivitySource.OPTUNA_HEARTBEAT:
        if silent <= min(OPTUNA_HEARTBEAT_GRACE, policy.stale_after):
            return Verdict(
                VerdictKind.ALIVE,
                f"Optuna heartbeat {format_duration(silent)} ago{where}",
                Basis.HEARTBEAT,
            )
        return Verdict(
            VerdictKind.STALE,
            f"its Optuna heartbeat stopped: last beat {format_duration(silent)} ago{where}",
            Basis.HEARTBEAT,
        )
    pause = record.longest_pause
    if pause is not None and record.activity_count >= RHYTHM_MIN_ACTIVITIES:
        limit = max(policy.rhythm_floor, pause * RHYTHM_FACTOR)
        if silent > limit:
            return Verdict(
                VerdictKind.STALE,
                f"silent {format_duration(silent)}{where} since its last {source.value}; its "
                f"longest pause before was {format_duration(pause)} (stale after "
                f"{RHYTHM_FACTOR}x that, at least {format_duration(policy.rhythm_floor)})",
                Basis.RHYTHM,
            )
    elif silent > policy.stale_after:
        return Verdict(
            VerdictKind.STALE,
            f"last {source.value} {format_duration(silent)} ago{where}, longer than "
            f"--stale-after {format_duration(policy.stale_after)}",
            Basis.STALE_AFTER,
        )
    return Verdict(
        VerdictKind.ACTIVE,
        f"last {source.value} {format_duration(silent)} ago{where}; no proof that its process "
        "lives",
        Basis.ACTIVITY,
    )


def _future(record: Record, now: datetime) -> tuple[str, timedelta] | None:
    """The first of the record's times that lies in the future beyond the tolerance."""
    source = activity_source(record)
    for what, value in (
        ("heartbeat", heartbeat_at(record.tags)),
        (f"last {source.value}", record.last_activity_at),
        ("start", record.started_at),
    ):
        if value is not None and value - now > FUTURE_TOLERANCE:
            return what, value - now
    return None


def _zone_unknown(assumed: timedelta) -> str:
    return (
        "its storage keeps naive local times and mltidy does not know its writer's UTC offset "
        f"(read as {format_offset(assumed)}); {ZONE_HINT}"
    )


def activity_source(record: Record) -> ActivitySource:
    """What a record's last activity is: as the backend said, else a run's metric or a trial's
    Optuna heartbeat (the only activity of their own they have)."""
    if record.activity_source is not None:
        return record.activity_source
    if record.kind is RecordKind.MLFLOW_RUN:
        return ActivitySource.METRIC
    return ActivitySource.OPTUNA_HEARTBEAT


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


#: Linux's largest possible pid (``PID_MAX_LIMIT``); a tag claiming more names no process.
PID_LIMIT = 1 << 22


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text and len(text) <= 20 else None
    except ValueError:
        return None


def _pid(text: str | None) -> int | None:
    value = _int(text)
    return value if value is not None and 0 < value <= PID_LIMIT else None


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text and len(text) <= 40 else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
