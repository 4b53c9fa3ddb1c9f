"""The SLURM source's parsers and provenance reading, on output captured from a real SLURM 22.05.

The captures come from the test fixtures' clusters (tests/slurm_cluster.py), with the exact
``--Format``/``--format`` fields the source asks for. tests/evidence/test_slurm.py runs the same
parsers against a live cluster.
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from mltidy import names
from mltidy.evidence import JobPhase, JobRef
from mltidy.evidence.slurm import SlurmSource
from mltidy.evidence.slurm_parse import (
    PHASES,
    exit_code_text,
    parse_sacct,
    parse_squeue_jobs,
    parse_squeue_steps,
    parse_time,
    phase_of,
    wait_status_text,
)

# squeue --noheader --all --array --states=all --Format=JobID:|,JobArrayID:|,State:|,Reason:|,
# SubmitTime:|,StartTime:|,EndTime:|,NodeList:|,RestartCnt:|,exit_code:|,Cluster:|
# run with TZ=Europe/Berlin (UTC+1) and a requeued job (10) held until its BeginTime.
SQUEUE_BERLIN = """\
4|4|CANCELLED|None|2026-11-30T03:48:03|2026-11-30T03:48:05|2026-11-30T03:48:05|vm|0|15|gpu|
2|2|COMPLETED|None|2026-11-30T03:48:03|2026-11-30T03:48:05|2026-11-30T03:48:05|vm|0|0|gpu|
3|3|FAILED|NonZeroExitCode|2026-11-30T03:48:03|2026-11-30T03:48:05|2026-11-30T03:48:05|vm|0|256|gpu|
6|6_0|PENDING|JobHeldUser|2026-11-30T03:48:03|N/A|N/A||0|0|gpu|
6|6_1|PENDING|JobHeldUser|2026-11-30T03:48:03|N/A|N/A||0|0|gpu|
1|1|RUNNING|None|2026-11-30T03:48:03|2026-11-30T03:48:05|NONE|vm|0|0|gpu|
8|5_0|RUNNING|None|2026-11-30T03:48:03|2026-11-30T03:48:05|NONE|vm|0|0|gpu|
10|10|PENDING|BeginTime|2026-11-30T03:48:08|2026-11-30T03:50:09|NONE||1|0|gpu|
"""
# Same fields, TZ=UTC0 (as the source runs it): cgroup OOM kill, preemption, node down.
SQUEUE_ENDINGS = """\
1|1|OUT_OF_MEMORY|OutOfMemory|2026-11-30T02:52:44|2026-11-30T02:52:46|2026-11-30T02:52:47|vm|0|253|oom|
3|3|NODE_FAIL|NodeDown|2026-11-30T02:52:52|2026-11-30T02:52:53|2026-11-30T02:52:53|vm|0|15|doom|
1|1|PREEMPTED|None|2026-11-30T02:52:49|2026-11-30T02:52:51|2026-11-30T02:52:52|vm|0|15|doom|
"""
# squeue --noheader --all --steps --Format=StepID:|,StepState:|,StartTime:|
SQUEUE_STEPS = """\
3.1|RUNNING|2026-11-30T02:53:01|
3.batch|RUNNING|2026-11-30T02:53:00|
4_1.batch|RUNNING|2026-11-30T02:53:01|
"""
# sacct --noheader --parsable2 --format=JobIDRaw,JobID,State,Reason,Submit,Start,End,NodeList,
# ExitCode,Cluster (slurmdbd over MariaDB)
SACCT = """\
1|1|FAILED|None|2026-11-30T02:52:58|2026-11-30T02:53:00|2026-11-30T02:53:00|vm|3:0|acct
1.batch|1.batch|FAILED||2026-11-30T02:53:00|2026-11-30T02:53:00|2026-11-30T02:53:00|vm|3:0|acct
2|2|CANCELLED by 0|None|2026-11-30T02:52:58|2026-11-30T02:53:00|2026-11-30T02:53:01|vm|0:0|acct
3|3|RUNNING|None|2026-11-30T02:52:58|2026-11-30T02:53:00|Unknown|vm|0:0|acct
3.0|3.0|FAILED||2026-11-30T02:53:00|2026-11-30T02:53:00|2026-11-30T02:53:01|vm|1:0|acct
5|4_0|RUNNING|None|2026-11-30T02:52:58|2026-11-30T02:53:00|Unknown|vm|0:0|acct
5.batch|4_0.batch|RUNNING||2026-11-30T02:53:00|2026-11-30T02:53:00|Unknown|vm|0:0|acct
"""


def _utc(hour: int, minute: int, second: int) -> datetime:
    return datetime(2026, 11, 30, hour, minute, second, tzinfo=timezone.utc)


def test_squeue_local_times_become_utc() -> None:
    rows = {row.label: row for row in parse_squeue_jobs(SQUEUE_BERLIN, ZoneInfo("Europe/Berlin"))}
    cancelled = rows["4"]
    assert (cancelled.submitted_at, cancelled.started_at, cancelled.ended_at) == (
        _utc(2, 48, 3),
        _utc(2, 48, 5),
        _utc(2, 48, 5),
    )
    assert cancelled.ended_at is not None and cancelled.ended_at.tzinfo is timezone.utc


def test_squeue_rows_in_slurms_words() -> None:
    rows = {row.label: row for row in parse_squeue_jobs(SQUEUE_BERLIN)}
    assert [(r.label, r.state, r.phase, r.reason, r.exit) for r in rows.values()] == [
        ("4", "CANCELLED", JobPhase.ENDED, None, "signal 15 SIGTERM"),
        ("2", "COMPLETED", JobPhase.ENDED, None, None),
        ("3", "FAILED", JobPhase.ENDED, None, "exit code 1"),  # NonZeroExitCode: said by exit
        ("6_0", "PENDING", JobPhase.PENDING, "JobHeldUser", None),
        ("6_1", "PENDING", JobPhase.PENDING, "JobHeldUser", None),
        ("1", "RUNNING", JobPhase.RUNNING, None, None),
        ("5_0", "RUNNING", JobPhase.RUNNING, None, None),
        ("10", "PENDING", JobPhase.PENDING, "BeginTime", None),
    ]
    task = rows["5_0"]
    assert (task.job_id, task.node, task.cluster, task.ended_at) == ("8", "vm", "gpu", None)
    requeued = rows["10"]
    # A pending job's StartTime is a forecast: not a start.
    assert (requeued.restarts, requeued.started_at, requeued.node) == (1, None, None)


def test_squeue_endings_that_need_cgroups_preemption_or_a_lost_node() -> None:
    rows = parse_squeue_jobs(SQUEUE_ENDINGS)
    assert [(r.state, r.phase, r.reason, r.exit) for r in rows] == [
        ("OUT_OF_MEMORY", JobPhase.ENDED, None, None),  # 253: SLURM's own OOM marker
        ("NODE_FAIL", JobPhase.ENDED, "NodeDown", "signal 15 SIGTERM"),
        ("PREEMPTED", JobPhase.ENDED, None, "signal 15 SIGTERM"),
    ]


def test_lines_that_are_not_rows_are_skipped() -> None:
    text = "CLUSTER: gpu\n" + SQUEUE_ENDINGS.splitlines()[0] + "\ngarbage|\n\n"
    assert [row.state for row in parse_squeue_jobs(text)] == ["OUT_OF_MEMORY"]


def test_squeue_steps_name_array_tasks_by_task() -> None:
    rows = parse_squeue_steps(SQUEUE_STEPS)
    assert [(r.job_id, r.step, r.state) for r in rows] == [
        ("3", "1", "RUNNING"),
        ("3", "batch", "RUNNING"),
        ("4_1", "batch", "RUNNING"),
    ]
    assert rows[0].started_at == _utc(2, 53, 1)


def test_sacct_rows() -> None:
    rows = parse_sacct(SACCT)
    by_key = {(r.job_id, r.step): r for r in rows}
    assert by_key[("1", None)].exit == "exit code 3"
    cancelled = by_key[("2", None)]
    assert (cancelled.state, cancelled.reason, cancelled.phase) == (
        "CANCELLED",
        "by uid 0",
        JobPhase.ENDED,
    )
    step = by_key[("3", "0")]
    assert (step.state, step.exit, step.ended_at) == ("FAILED", "exit code 1", _utc(2, 53, 1))
    task = by_key[("5", None)]
    assert (task.label, task.ended_at, task.answered_by) == ("4_0", None, "sacct")
    assert by_key[("5", "batch")].label == "4_0"


@pytest.mark.parametrize(
    ("raw", "words"),
    [("0", None), ("256", "exit code 1"), ("9", "signal 9 SIGKILL"), ("253", None), ("x", None)],
)
def test_wait_status_text(raw: str, words: str | None) -> None:
    assert wait_status_text(raw) == words


@pytest.mark.parametrize(
    ("text", "words"),
    [("0:0", None), ("3:0", "exit code 3"), ("0:9", "signal 9 SIGKILL"), ("0:125", None)],
)
def test_exit_code_text(text: str, words: str | None) -> None:
    assert exit_code_text(text) == words


def test_times_without_a_time() -> None:
    for text in ("Unknown", "NONE", "N/A", "None", "", "Tomorr 14:02"):
        assert parse_time(text) is None
    assert parse_time("2026-11-30T14:02:05") == _utc(14, 2, 5)


def test_every_job_state_of_the_squeue_manual_has_a_phase() -> None:
    documented = [
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "CONFIGURING",
        "COMPLETING",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PENDING",
        "PREEMPTED",
        "RUNNING",
        "RESV_DEL_HOLD",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "REQUEUED",
        "RESIZING",
        "SIGNALING",
        "SPECIAL_EXIT",
        "STAGE_OUT",
        "STOPPED",
        "SUSPENDED",
        "TIMEOUT",
    ]
    assert sorted(PHASES) == sorted(documented)
    assert phase_of("REVOKED") is JobPhase.UNKNOWN  # federation: it runs on another cluster


# -- provenance -----------------------------------------------------------------------------------
SOURCE = SlurmSource()


@pytest.mark.parametrize(
    ("tags", "ref"),
    [
        ({names.SLURM_JOB_ID: "4211"}, JobRef("slurm", "4211")),
        (
            {
                names.SLURM_JOB_ID: "4211",
                names.SLURM_STEP_ID: "3",
                names.SLURM_CLUSTER: "gpu",
                names.SLURM_RESTART_COUNT: "2",
            },
            JobRef("slurm", "4211", step="3", cluster="gpu", restarts=2),
        ),
        (
            {names.SLURM_ARRAY_JOB_ID: "4200", names.SLURM_ARRAY_TASK_ID: "7"},
            JobRef("slurm", "4200_7"),
        ),
        (
            {names.SLURM_JOB_ID: "4211", names.SLURM_ARRAY_JOB_ID: "4200"},
            JobRef("slurm", "4211"),
        ),
        ({names.SLURM_JOB_ID: "4211", names.SLURM_STEP_ID: "4294967294"}, JobRef("slurm", "4211")),
        ({names.SLURM_JOB_ID: "4211", names.SLURM_STEP_ID: "0; rm"}, JobRef("slurm", "4211")),
        ({names.SLURM_JOB_ID: "4211", names.SLURM_STEP_ID: "batch"}, JobRef("slurm", "4211")),
        ({names.SLURM_JOB_ID: "4211,4212"}, None),
        ({names.SLURM_JOB_ID: ""}, None),
        ({names.HOST: "gpu07"}, None),
    ],
)
def test_job_of_reads_the_provenance(tags: dict[str, str], ref: JobRef | None) -> None:
    assert SOURCE.job_of(tags) == ref
