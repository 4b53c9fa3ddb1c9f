"""MLflow tracking servers read and changed through MLflow's documented REST API, without mlflow.

Importing mlflow costs seconds and hundreds of MiB; a scan of a server needs a handful of HTTP
calls. This backend makes them itself (``rest_client.py``: one kept-alive session, MLflow's own
auth and TLS variables) and returns the same records as ``MlflowClientBackend``:

* opening lists the active experiments (``experiments/search``), which also proves the URI is
  an MLflow server that lets us in;
* ``iter_active`` asks ``runs/search`` for ``attributes.status = 'RUNNING'`` in the active
  experiments, :data:`IDS_PER_CALL` experiment ids a call, with the largest page MLflow
  accepts (:data:`PAGE`; :data:`SMALL_PAGE` for servers that refuse it), and checks the status
  and lifecycle of every run itself: some MLflow-compatible servers ignore ``filter``;
* a run's last activity is its newest latest-metric timestamp, as in the client path;
* a RUNNING run's rhythm is the history of its most recently logged metric, read for up to
  :data:`HISTORY_RUNS_PER_CALL` runs at once through the endpoint MLflow's UI uses
  (``ajax-api/.../metrics/get-history-bulk``), or ``metrics/get-history`` per run on servers
  without it.

Writes have no compare-and-set over REST. Each one reads the run fresh right before it writes,
and re-reads once more between the audit tags and the state change: a run that ended in that
moment gets its previous tags back and is left alone (see :attr:`close_guarantee`).

Size: one backend class over one API: reads, closes, declutter, links, history and the clock of a
tracking server, each a few REST calls.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from mltidy import names
from mltidy.backends.identity import store_id
from mltidy.backends.interface import (
    Backend,
    Closer,
    ContainerLister,
    MakesWritable,
    RunDeclutterer,
    RunHistory,
    RunLinker,
    StoreClock,
)
from mltidy.backends.mlflow.rest_client import AJAX_API, MlflowApiError, RestClient, server_text
from mltidy.backends.mlflow.runs import NO_RHYTHM, Rhythm, latest_key, with_rhythm
from mltidy.errors import NotAStore, StoreError
from mltidy.model import (
    ClockReading,
    CloseRequest,
    CloseResult,
    CloseStatus,
    Record,
    RecordKind,
    RunContents,
    RunRef,
    Selection,
    StoreKind,
    from_epoch_ms,
    utc_now,
)

#: MLflow's largest ``max_results`` for ``runs/search`` and ``experiments/search``.
PAGE = 50_000
#: MLflow's default page, which every MLflow-compatible server accepts.
SMALL_PAGE = 1_000
#: Experiment ids per ``runs/search`` call (MLflow's own SQL store chunks id lists by 500).
IDS_PER_CALL = 500
#: Run ids per ``attributes.run_id IN (...)`` filter.
RUN_IDS_PER_CALL = 100
#: MLflow's limit of tags per ``runs/log-batch``.
TAGS_PER_BATCH = 100
#: MLflow's limits of ``metrics/get-history-bulk``: run ids per call, and points per answer
#: (all runs together; an answer that long may be cut).
HISTORY_RUNS_PER_CALL = 100
HISTORY_POINTS = 25_000
ENDED = ("FINISHED", "FAILED", "KILLED")
RUNNING = "RUNNING"
ACTIVE = "active"

Run = dict[str, Any]


def needs_mlflow_client(environ: Mapping[str, str] | None = None) -> str | None:
    """Why a tracking server must be read through ``MlflowClient`` instead, or ``None``.

    MLflow's auth plugins (``MLFLOW_TRACKING_AUTH``) and AWS SigV4 signing exist only inside
    mlflow; the registry sends servers to the client path while either is set.
    """
    env = os.environ if environ is None else environ
    for key in (names.MLFLOW_TRACKING_AUTH_ENV, names.MLFLOW_TRACKING_AWS_SIGV4_ENV):
        value = env.get(key, "").strip()
        if value and value.lower() not in ("false", "0"):
            return f"{key} is set: only MLflow's own client can authenticate that way"
    return None


class MlflowRestBackend(
    Backend,
    Closer,
    RunDeclutterer,
    RunHistory,
    RunLinker,
    MakesWritable,
    StoreClock,
    ContainerLister,
):
    """An MLflow tracking server, through its REST API (``/api/2.0/mlflow/``)."""

    kind = StoreKind.MLFLOW
    close_guarantee = (
        "re-read: the run is read fresh right before the audit tags are written and again "
        "right before its state is; a run that ended in between gets its previous tags back "
        "and is left alone, and only one ending within the last request is overwritten (REST "
        "has no compare-and-set)"
    )

    def __init__(
        self, uri: str, *, writable: bool = False, environ: Mapping[str, str] | None = None
    ) -> None:
        self.uri = store_id(self.kind, uri)
        self._http = RestClient(uri, self.uri, environ)
        self._page = PAGE
        self._bulk_history = True
        self._history = True
        try:
            self._experiments = self._list_experiments()
        except BaseException:
            self._http.close()
            raise

    def close(self) -> None:
        self._http.close()

    def make_writable(self) -> None:
        """Nothing to do: the HTTP session is the same for reads and writes."""

    def describe(self) -> str:
        return f"MLflow tracking server (REST API), {len(self._experiments)} active experiments"

    def clock(self) -> ClockReading:
        """The server's clock from its ``Date`` header (second resolution), and the newest run
        start among the active experiments' runs."""
        newest: datetime | None = None
        ids = list(self._experiments)
        for start in range(0, len(ids), IDS_PER_CALL):
            page = self._http.post(
                "runs/search",
                {
                    "experiment_ids": ids[start : start + IDS_PER_CALL],
                    "order_by": ["attributes.start_time DESC"],
                    "run_view_type": "ACTIVE_ONLY",
                    "max_results": 1,
                },
            )
            for run in page.get("runs") or []:
                started = from_epoch_ms(_int(_info(run).get("start_time"))) if run else None
                if started is not None and (newest is None or started > newest):
                    newest = started
        if not ids:
            self._http.post("experiments/search", {"max_results": 1})
        server = None
        if self._http.server_date:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                server = parsedate_to_datetime(self._http.server_date).astimezone(timezone.utc)
        return ClockReading(
            server, newest, "run start" if newest else "", resolution=timedelta(seconds=1)
        )

    # -- reading ----------------------------------------------------------------------------

    def containers(self) -> dict[str, str]:
        return dict(self._experiments)

    def _list_experiments(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for experiment in self._paged("experiments/search", {"view_type": "ACTIVE_ONLY"}):
            if experiment.get("lifecycle_stage", ACTIVE) == ACTIVE:
                found[str(experiment.get("experiment_id", ""))] = str(experiment.get("name", ""))
        return found

    def _paged(self, endpoint: str, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a paged search (``experiments`` or ``runs``), page by page."""
        key = "experiments" if endpoint.startswith("experiments/") else "runs"
        token: str | None = None
        seen: set[str] = set()
        while True:
            page = self._search_page(endpoint, {**body, **({"page_token": token} if token else {})})
            items = page.get(key) or []
            if not isinstance(items, list):
                raise StoreError(f"{self.uri}: {endpoint} answered without a list of {key}")
            yield from (item for item in items if isinstance(item, dict))
            token = page.get("next_page_token") or None
            if token is None:
                return
            if token in seen:
                raise StoreError(f"{self.uri}: {endpoint} returned the same page twice")
            seen.add(token)

    def _search_page(self, endpoint: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One page, at the largest size the server accepts (found on the first refusal)."""
        while True:
            try:
                return self._http.post(endpoint, {**body, "max_results": self._page})
            except MlflowApiError as exc:
                refused = exc.error_code == "INVALID_PARAMETER_VALUE" and "max_results" in (
                    exc.detail
                )
                if not refused or self._page <= SMALL_PAGE:
                    raise
                self._page = SMALL_PAGE

    def _runs(self, experiment_ids: Sequence[str], filter_string: str) -> Iterator[Run]:
        """Active runs of these experiments matching ``filter_string`` (as far as the server
        filters: callers check), :data:`IDS_PER_CALL` experiments a call."""
        for start in range(0, len(experiment_ids), IDS_PER_CALL):
            yield from self._paged(
                "runs/search",
                {
                    "experiment_ids": list(experiment_ids[start : start + IDS_PER_CALL]),
                    "filter": filter_string,
                    "run_view_type": "ACTIVE_ONLY",
                },
            )

    def _selected(self, selection: Selection) -> list[str]:
        return [i for i, name in self._experiments.items() if selection.wants_experiment(name, i)]

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        batch: list[Run] = []
        for run in self._runs(self._selected(selection), f"attributes.status = '{RUNNING}'"):
            info = _info(run)
            if info.get("status") == RUNNING and info.get("lifecycle_stage") == ACTIVE:
                batch.append(run)
            if len(batch) >= HISTORY_RUNS_PER_CALL:
                yield from self._with_rhythms(batch)
                batch = []
        yield from self._with_rhythms(batch)

    def _with_rhythms(self, runs: Sequence[Run]) -> Iterator[Record]:
        rhythms = self._rhythms(runs)
        for run in runs:
            yield with_rhythm(self._record(run), rhythms.get(_run_id(_info(run)), NO_RHYTHM))

    def _rhythms(self, runs: Sequence[Run]) -> dict[str, Rhythm]:
        """The rhythm of RUNNING runs from the history of each one's latest metric key."""
        by_key: dict[str, list[str]] = {}
        for run in runs:
            metrics = _data(run).get("metrics") or ()
            key = latest_key(
                (str(m.get("key", "")), _stamp(m)) for m in metrics if isinstance(m, dict)
            )
            if key is not None:
                by_key.setdefault(key, []).append(_run_id(_info(run)))
        found: dict[str, Rhythm] = {}
        for key, run_ids in by_key.items():
            stamps: dict[str, list[int]] = {}
            left = sorted(run_ids)
            if self._bulk_history:
                left = self._bulk_stamps(key, left, stamps)
            for run_id in left:
                history = self._history_stamps(run_id, key) if self._history else None
                if history is not None:
                    stamps[run_id] = history
            found.update((run_id, Rhythm.of(values)) for run_id, values in stamps.items())
        return found

    def _bulk_stamps(self, key: str, run_ids: list[str], into: dict[str, list[int]]) -> list[str]:
        """Fill ``into`` through ``get-history-bulk``; returns the run ids it could not read
        (all of them on a server without the endpoint, which is then not asked again)."""
        left = list(run_ids)
        while left:
            chunk = left[:HISTORY_RUNS_PER_CALL]
            try:
                answer = self._http.call(
                    "GET",
                    "metrics/get-history-bulk",
                    params={"run_id": chunk, "metric_key": key, "max_results": str(HISTORY_POINTS)},
                    prefix=AJAX_API,
                )
            except (NotAStore, MlflowApiError):
                self._bulk_history = False
                return left
            points = (answer or {}).get("metrics") or []
            seen: list[str] = []
            for point in points if isinstance(points, list) else ():
                run_id = str(point.get("run_id", "")) if isinstance(point, dict) else ""
                stamp = _stamp(point)
                if run_id in chunk and stamp is not None:
                    into.setdefault(run_id, []).append(stamp)
                    if not seen or seen[-1] != run_id:
                        seen.append(run_id)
            done = chunk
            if len(points) >= HISTORY_POINTS and seen:
                # Cut at the limit: the answer is ordered by run id, so the runs before the
                # last one it reached are whole; that one and the rest are asked again.
                last = seen[-1]
                into.pop(last, None)
                done = [run_id for run_id in chunk if run_id < last]
                if not done:
                    return left  # one run longer than an answer: read it page by page
            for run_id in done:
                into.setdefault(run_id, [])
            left = left[len(done) :] if done == chunk else [r for r in left if r not in done]
        return []

    def _history_stamps(self, run_id: str, key: str) -> list[int] | None:
        """One run's timestamps of one metric, page by page (``metrics/get-history``); ``None``
        from a server without that endpoint (its runs carry no rhythm, and it is not asked
        again)."""
        stamps: list[int] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            params = {"run_id": run_id, "run_uuid": run_id, "metric_key": key}
            if token:
                params["page_token"] = token
            try:
                answer = self._http.get("metrics/get-history", params)
            except (NotAStore, MlflowApiError):
                self._history = False
                return None
            for point in answer.get("metrics") or ():
                stamp = _stamp(point)
                if stamp is not None:
                    stamps.append(stamp)
            token = answer.get("next_page_token") or None
            if token is None or token in seen:
                return stamps
            seen.add(token)

    def iter_ended_runs(self, selection: Selection, since: datetime) -> Iterator[Record]:
        since_ms = int(since.timestamp() * 1000)
        found: list[Record] = []
        for run in self._runs(self._selected(selection), f"attributes.end_time >= {since_ms}"):
            info = _info(run)
            end = _int(info.get("end_time"))
            if (
                info.get("status") in ENDED
                and info.get("lifecycle_stage") == ACTIVE
                and end is not None
                and end >= since_ms
            ):
                found.append(self._record(run))
        yield from sorted(found, key=lambda r: r.ended_at or r.started_at or since)

    def read(self, record_id: str) -> Record | None:
        run = self._get_run(record_id)
        if run is None:
            return None
        if _running(run):
            return next(self._with_rhythms([run]))
        return self._record(run)

    def _get_run(self, run_id: str) -> Run | None:
        answer = self._http.call(
            "GET", "runs/get", params={"run_id": run_id, "run_uuid": run_id}, missing_ok=True
        )
        if answer is None:
            return None
        run = answer.get("run")
        if not isinstance(run, dict):
            raise StoreError(f"{self.uri}: runs/get answered without a run")
        return run

    def _record(self, run: Run) -> Record:
        info = _info(run)
        tags = _tags(run)
        kept = {
            k: v
            for k, v in tags.items()
            if k in names.RUN_TAG_KEYS or k.startswith(names.RUN_TAG_PREFIXES)
        }
        stamps = [stamp for metric in _data(run).get("metrics") or () if (stamp := _stamp(metric))]
        run_id = _run_id(info)
        experiment_id = str(info.get("experiment_id", ""))
        status = str(info.get("status", ""))
        return Record(
            kind=RecordKind.MLFLOW_RUN,
            store=self.uri,
            id=run_id,
            name=str(info.get("run_name") or "") or kept.get(names.MLFLOW_RUN_NAME) or run_id,
            container=self._experiments.get(experiment_id, experiment_id),
            container_id=experiment_id,
            state=status,
            started_at=from_epoch_ms(_int(info.get("start_time"))),
            last_activity_at=from_epoch_ms(max(stamps)) if stamps else None,
            user=str(info.get("user_id") or "") or kept.get(names.MLFLOW_USER),
            tags=kept,
            ended_at=None if status == RUNNING else from_epoch_ms(_int(info.get("end_time"))),
        )

    # -- closing ----------------------------------------------------------------------------

    def close_record(self, request: CloseRequest) -> CloseResult:
        run_id = request.record_id
        run = self._get_run(run_id)
        if run is None:
            return CloseResult(CloseStatus.MISSING)
        if not _running(run):
            return CloseResult(CloseStatus.NOT_RUNNING, str(_info(run).get("status", "")))
        if request.attributes:
            self._log_tags(run_id, request.attributes)
            again = self._get_run(run_id)
            if again is None:
                return CloseResult(CloseStatus.MISSING)
            if not _running(again):
                self._restore_tags(run_id, request.attributes, _tags(run))
                return CloseResult(CloseStatus.NOT_RUNNING, str(_info(again).get("status", "")))
        answer = self._http.post(
            "runs/update",
            {
                "run_id": run_id,
                "run_uuid": run_id,
                "status": request.new_state,
                "end_time": int(request.end_time.timestamp() * 1000),
            },
        )
        written = answer.get("run_info")
        if isinstance(written, dict) and written.get("status") != request.new_state:
            raise StoreError(
                f"{self.uri}: run {run_id} is {server_text(written.get('status'))} after the "
                f"server accepted {request.new_state}"
            )
        return CloseResult(CloseStatus.CLOSED)

    def _log_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        items = [{"key": k, "value": v} for k, v in tags.items()]
        for start in range(0, len(items), TAGS_PER_BATCH):
            self._http.post(
                "runs/log-batch", {"run_id": run_id, "tags": items[start : start + TAGS_PER_BATCH]}
            )

    def _restore_tags(self, run_id: str, written: Iterable[str], before: Mapping[str, str]) -> None:
        """Undo tags just written on a run that ended meanwhile: old values back, new keys gone."""
        old = {key: before[key] for key in written if key in before}
        if old:
            self._log_tags(run_id, old)
        for key in written:
            if key not in before:
                self._http.call(
                    "POST", "runs/delete-tag", body={"run_id": run_id, "key": key}, missing_ok=True
                )

    # -- declutter --------------------------------------------------------------------------

    def iter_closed_runs(self, selection: Selection) -> Iterator[RunContents]:
        closed_filter = f"tags.`{names.CLOSED_AT}` LIKE '%'"
        for run in self._runs(self._selected(selection), closed_filter):
            tags = _tags(run)
            closed = tags.get(names.CLOSED_AT)
            info = _info(run)
            if not closed or info.get("status") == RUNNING or info.get("lifecycle_stage") != ACTIVE:
                continue
            data = _data(run)
            yield RunContents(
                record=self._record(run),
                closed_at=_parse_time(closed),
                metrics=len(_keys(data.get("metrics"))),
                params=len(_keys(data.get("params"))),
                artifacts=self._artifact_count(_run_id(info)),
            )

    def _artifact_count(self, run_id: str) -> int | None:
        """Entries at the top of the run's artifacts (``None`` when the server cannot say)."""
        try:
            answer = self._http.get("artifacts/list", {"run_id": run_id, "run_uuid": run_id})
        except StoreError:
            return None
        files = answer.get("files") or []
        if not isinstance(files, list):
            return None
        # A listing that goes on over more pages has more than nothing: enough to keep the run.
        return len(files) + (1 if answer.get("next_page_token") else 0)

    def soft_delete(self, run_id: str) -> bool:
        run = self._get_run(run_id)
        if run is None or not _deletable(run):
            return False
        self._http.post(
            "runs/set-tag",
            {
                "run_id": run_id,
                "run_uuid": run_id,
                "key": names.DELETED_AT,
                "value": utc_now().isoformat(timespec="seconds"),
            },
        )
        again = self._get_run(run_id)
        if again is None or not _deletable(again):
            self._restore_tags(run_id, [names.DELETED_AT], _tags(run))
            return False
        self._http.post("runs/delete", {"run_id": run_id})
        return True

    # -- linking ----------------------------------------------------------------------------

    def link_candidates(self, run_ids: set[str], studies: set[str]) -> list[RunRef]:
        found: dict[str, Run] = {}
        by_id = self._runs_by_id(sorted(run_ids))
        for run_id in sorted(run_ids):
            if run_id in by_id:
                found[run_id] = by_id[run_id]
        every = list(self._experiments)
        for study in sorted(studies):
            quoted = study.replace("'", "\\'")
            for key in names.STUDY_TAGS:
                for run in self._runs(every, f"tags.`{key}` = '{quoted}'"):
                    if _tags(run).get(key) == study and _active(run):
                        found[_run_id(_info(run))] = run
            named = [i for i, name in self._experiments.items() if name == study]
            number_filter = f"tags.`{names.CALLBACK_NUMBER}` LIKE '%'"
            for run in self._runs(named, number_filter):
                if names.CALLBACK_NUMBER in _tags(run) and _active(run):
                    found[_run_id(_info(run))] = run
        return [self._run_ref(run) for run in found.values()]

    def _runs_by_id(self, run_ids: Sequence[str]) -> dict[str, Run]:
        """The active runs among ``run_ids``, in any experiment: one search per
        :data:`RUN_IDS_PER_CALL` ids over the active experiments, then ``runs/get`` for the ids
        it did not find (runs of deleted experiments, deleted or missing runs)."""
        found: dict[str, Run] = {}
        wanted = set(run_ids)
        if self._experiments:
            try:
                for start in range(0, len(run_ids), RUN_IDS_PER_CALL):
                    chunk = ", ".join(
                        "'" + i.replace("'", "\\'") + "'"
                        for i in run_ids[start : start + RUN_IDS_PER_CALL]
                    )
                    for run in self._runs(
                        list(self._experiments), f"attributes.run_id IN ({chunk})"
                    ):
                        run_id = _run_id(_info(run))
                        if run_id in wanted and _active(run):
                            found[run_id] = run
            except MlflowApiError:
                pass  # a server without IN on run ids: each is read on its own below
        for run_id in run_ids:
            if run_id not in found:
                fresh = self._get_run(run_id)
                if fresh is not None and _active(fresh):
                    found[run_id] = fresh
        return found

    def _run_ref(self, run: Run) -> RunRef:
        info = _info(run)
        tags = {
            k: v
            for k, v in _tags(run).items()
            if k in names.LINK_RUN_TAG_KEYS or k.startswith(names.LINK_RUN_TAG_PREFIXES)
        }
        run_id = _run_id(info)
        experiment_id = str(info.get("experiment_id", ""))
        return RunRef(
            store=self.uri,
            run_id=run_id,
            name=str(info.get("run_name") or "") or run_id,
            experiment_id=experiment_id,
            experiment=self._experiments.get(experiment_id, experiment_id),
            tags=tags,
        )

    def write_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        if tags:
            self._log_tags(run_id, tags)


# -- MLflow's run JSON ----------------------------------------------------------------------


def _info(run: Run) -> dict[str, Any]:
    info = run.get("info")
    return info if isinstance(info, dict) else {}


def _data(run: Run) -> dict[str, Any]:
    data = run.get("data")
    return data if isinstance(data, dict) else {}


def _run_id(info: Mapping[str, Any]) -> str:
    return str(info.get("run_id") or info.get("run_uuid") or "")


def _tags(run: Run) -> dict[str, str]:
    """A run's tags as a dict (the last of a repeated key wins, as in MLflow's ``RunData``)."""
    return {
        str(tag["key"]): str(tag.get("value", ""))
        for tag in _data(run).get("tags") or ()
        if isinstance(tag, dict) and "key" in tag
    }


def _keys(items: object) -> set[str]:
    if not isinstance(items, list):
        return set()
    return {str(item["key"]) for item in items if isinstance(item, dict) and "key" in item}


def _int(value: object) -> int | None:
    """An int64 field: a number, or a string where a server follows proto3's JSON mapping."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _stamp(metric: object) -> int | None:
    return _int(metric.get("timestamp")) if isinstance(metric, dict) else None


def _active(run: Run) -> bool:
    return _info(run).get("lifecycle_stage") == ACTIVE


def _running(run: Run) -> bool:
    return _info(run).get("status") == RUNNING and _active(run)


def _deletable(run: Run) -> bool:
    """Finished and not yet deleted."""
    return _info(run).get("status") != RUNNING and _active(run)


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


__all__ = ["MlflowRestBackend", "needs_mlflow_client"]
