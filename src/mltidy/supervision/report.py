"""The job's end as one event: what happened, the evidence, what was closed, links."""

from __future__ import annotations

from mltidy import close
from mltidy.linking.urls import LinkBases
from mltidy.model import RecordKind
from mltidy.notify.events import Event, EventKind, Severity, describe_record, when
from mltidy.supervision.cleanup import Cleanup, job_label
from mltidy.supervision.process import Supervision


def job_event(
    supervision: Supervision, cleanup: Cleanup | None, links: LinkBases, name: str | None = None
) -> Event:
    """One event for the job's end: what happened, the evidence, what was closed, links."""
    exit_ = supervision.exit
    label = name or job_label(exit_.command)
    took = f"after {exit_.duration}"
    if exit_.ok:
        headline = f"job {label} finished on {exit_.host} {took}"
    else:
        how = exit_.describe()
        how = f"was {how}" if how.startswith("killed") else how
        headline = f"job {label} {how} on {exit_.host} {took}"
        if exit_.oom_killed:
            headline += ": the OOM killer"
        elif exit_.maybe_oom and exit_.oom_killed is None:
            headline += ", likely the OOM killer"
    facts: list[tuple[str, str]] = [
        ("command", exit_.command[:300]),
        ("process", f"pid {exit_.pid} on {exit_.host}"),
        ("ran", f"{when(exit_.started_at)} ({exit_.duration} until {when(exit_.ended_at)})"),
        ("exit", f"{exit_.describe()}; mltidy run exits {exit_.exit_code}"),
    ]
    if exit_.stopped_by:
        facts.append(("stopped", exit_.stopped_by))
    if exit_.oom and exit_.maybe_oom:
        facts.append(("memory", exit_.oom))
    links_: list[tuple[str, str]] = []
    if cleanup is not None:
        for change in cleanup.report.changes:
            record = change.item.record
            what = describe_record(record)
            if change.outcome is close.Outcome.CLOSED:
                facts.append(("closed", f"{what} -> {change.new_state}"))
            else:
                facts.append(("not closed", f"{what}: {change.detail}"))
            if record.kind is RecordKind.MLFLOW_RUN:
                links_.append((f"MLflow {record.name}", links.run(record)))
            elif record.trial_number is not None:
                links_.append(
                    (
                        f"optuna-dashboard {record.container} #{record.trial_number}",
                        links.trial(record.container_id, record.trial_number),
                    )
                )
        for skip in cleanup.report.skipped:
            facts.append(("left alone", f"{skip.item.record.name}: {skip.why}"))
        for item in cleanup.alive:
            facts.append(("still running", f"{item.record.name}: {item.verdict.reason}"))
    return Event(
        kind=EventKind.JOB_SUCCEEDED if exit_.ok else EventKind.JOB_FAILED,
        key=f"job:{exit_.host}:{exit_.pid}:{exit_.started_at.timestamp():.3f}",
        at=exit_.ended_at,
        headline=headline,
        severity=Severity.SUCCESS if exit_.ok else Severity.FAILURE,
        facts=tuple(facts),
        links=tuple(links_),
    )


__all__ = ["job_event"]
