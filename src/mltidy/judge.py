"""Verdicts from evidence. A pure function: no I/O, no clock, no process table of its own.

Everything the judge knows comes in through its arguments: the record (with the provenance the
job wrote), the local facts a probe gathered, and the policy (what "stale" means, and "now").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mltidy.durations import format_duration
from mltidy.model import Record, RecordKind, Verdict, VerdictKind

DEFAULT_STALE_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class Policy:
    """What the judge may assume.

    Attributes:
        now: the time of the scan (aware UTC).
        stale_after: silence longer than this, with no proof of life, makes a record stale.
    """

    now: datetime
    stale_after: timedelta = DEFAULT_STALE_AFTER


def judge(record: Record, policy: Policy) -> Verdict:
    """The verdict for one unfinished record, with one sentence a person can check."""
    noun = "run" if record.kind is RecordKind.MLFLOW_RUN else "trial"
    limit = format_duration(policy.stale_after)
    if record.last_activity_at is not None:
        silence = policy.now - record.last_activity_at
        what = _activity_word(record)
        if silence > policy.stale_after:
            return Verdict(
                VerdictKind.STALE,
                f"no activity for {format_duration(silence)} (last {what}), "
                f"longer than --stale-after {limit}",
            )
        return Verdict(
            VerdictKind.UNKNOWN,
            f"last {what} {format_duration(silence)} ago, within --stale-after {limit}; "
            "no provenance to tell whether its process lives",
        )
    if record.started_at is None:
        return Verdict(VerdictKind.UNKNOWN, f"the {noun} records no start time and no activity")
    age = policy.now - record.started_at
    never = "never logged a metric" if noun == "run" else "has no heartbeat"
    if age > policy.stale_after:
        return Verdict(
            VerdictKind.STALE,
            f"started {format_duration(age)} ago and {never}, longer than --stale-after {limit}",
        )
    return Verdict(
        VerdictKind.UNKNOWN,
        f"started {format_duration(age)} ago and {never}; too young to call stale "
        f"(--stale-after {limit})",
    )


def _activity_word(record: Record) -> str:
    return "metric" if record.kind is RecordKind.MLFLOW_RUN else "heartbeat"
