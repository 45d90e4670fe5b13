"""Platform signals beside the log: job events and task metrics, read on a schedule.

* **Events** of every watched job are read on discovery's cadence (the scheduler calls
  ``events_due`` in cycles where discovery ran); a finished job keeps being read for
  SETTLE_SECONDS after the exporter saw it end (ModelArts writes its last events just
  after the phase changes), then once more at most, then never again. ``events.py`` makes
  each event count once.
* **Task metrics** (``cpuUsage`` ... ``npuMemUsage``) of the tasks of Running jobs, at
  most once per ``task_metrics_interval_seconds`` (>= 60 s: the API averages per minute)
  per task. Tasks of jobs that stop running lose their utilisation series.

Both go through the same client as the previews: one global rate limit, ``Retry-After``
on 429, retries with backoff on 5xx. A job or task whose read fails backs off like a
preview (doubling up to ``failure_backoff_max_seconds``). A 403 that is not a rejected
credential means the account lacks the permission for that API: it is logged once as an
error and the API is not called again until the exporter restarts (config switches
``platform.events`` / ``platform.task_metrics`` turn them off up front).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from .events import apply_read, read_new
from .modelarts.errors import (
    AuthenticationError,
    JobNotFoundError,
    ModelArtsError,
    credential_rejected,
)
from .modelarts.types import TERMINAL_PHASES, EventPage, RunningRecord, TrainingJob
from .store import JobState, Store, TaskUsage

log = logging.getLogger("exporter.signals")

SETTLE_SECONDS = 120.0
"""How long a finished job's events are still read after the exporter saw it end."""

RECOVER_KINDS = frozenset(
    {
        "npu_proc_restart",
        "gpu_proc_restart",
        "proc_restart",
        "pod_reschedule",
        "job_reschedule",
        "job_reschedule_with_taint",
        "npu_step_retry",
    }
)
"""``end_recover`` values the SDK documents; anything else is exported as ``other``."""

_TASK_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}-\d{1,4}")
_EXIT_REASON_RE = re.compile(r"exit(?:ed)? with(?: code)? (-?\d{1,3})\b", re.IGNORECASE)

API_EVENTS = "list_events"
API_TASK_METRICS = "task_metrics"


# --- the info metric's labels --------------------------------------------------------------


def recovery_labels(
    records: tuple[RunningRecord, ...], tasks: tuple[str, ...]
) -> tuple[str, str, str] | None:
    """(end_reason, end_recover, end_related_task) of the last run that ended with a
    fault-tolerance action; None when no run did.

    Bounded values, whatever the server sends: ``end_recover`` is one of RECOVER_KINDS or
    ``other``; ``end_related_task`` one of the job's tasks, a task-like name
    (``worker-12``), ``other``, or empty; ``end_reason`` ``exit with N`` for an exit code
    (N in -999..999), else the reason as sent, lower-cased, at most 64 characters of
    letters, digits, spaces and ``-_.:``.
    """
    record = next((r for r in reversed(records) if r.end_recover), None)
    if record is None:
        return None
    recover = record.end_recover if record.end_recover in RECOVER_KINDS else "other"
    task = record.end_related_task
    if task and task not in tasks and not _TASK_NAME_RE.fullmatch(task):
        task = "other"
    return (_reason(record.end_reason), recover, task)


def _reason(text: str) -> str:
    if match := _EXIT_REASON_RE.search(text):
        return f"exit with {int(match.group(1))}"
    cleaned = re.sub(r"[^a-z0-9 _.:-]+", " ", text.lower())
    return " ".join(cleaned.split())[:64]


def job_timing(job: TrainingJob) -> tuple[float | None, float | None]:
    """(start time in Unix seconds, running duration in seconds) from the API's ms; None
    before the job started."""
    if job.start_time_ms <= 0:
        return None, None
    return job.start_time_ms / 1000.0, max(job.duration_ms, 0) / 1000.0


# --- reading events and metrics --------------------------------------------------------------


class SignalSource(Protocol):
    """The part of the ModelArts client this module uses."""

    def list_events(self, job_id: str, *, page: int = ..., limit: int = ...) -> EventPage: ...

    def task_metrics(self, job_id: str, task_id: str) -> dict[str, float]: ...


@dataclass(frozen=True, slots=True)
class SignalSettings:
    events: bool = True
    task_metrics: bool = True
    task_metrics_interval_seconds: float = 60.0
    interval_seconds: float = 30.0
    """The collection interval: the first backoff step after a failure."""
    failure_backoff_max_seconds: float = 600.0


class ApiSwitch(Protocol):
    """Told when an API is found forbidden, or allowed again (a self-metric)."""

    def __call__(self, endpoint: str, forbidden: bool = ...) -> None: ...


class SignalReader:
    """Reads events and task metrics into the store; thread-safe (calls run in a pool)."""

    def __init__(
        self,
        source: SignalSource,
        store: Store,
        settings: SignalSettings,
        *,
        clock: Callable[[], float] = time.time,
        on_forbidden: ApiSwitch | None = None,
    ) -> None:
        self._source = source
        self._store = store
        self._settings = settings
        self._clock = clock
        self._on_forbidden = on_forbidden
        self._lock = threading.Lock()
        self._forbidden: set[str] = set()
        self._next_events: dict[str, float] = {}
        self._event_failures: dict[str, int] = {}
        self._terminal_seen: dict[str, float] = {}
        self._next_metrics: dict[tuple[str, str], float] = {}
        self._metric_failures: dict[tuple[str, str], int] = {}

    def reconfigure(self, settings: SignalSettings) -> None:
        """Use these settings from the next read on (a reload). APIs found forbidden are
        tried again: the reload may follow a change of permissions."""
        with self._lock:
            self._settings = settings
            forbidden, self._forbidden = self._forbidden, set()
        for api in sorted(forbidden):
            log.info("reload: the %s API will be tried again", api)
            if self._on_forbidden is not None:
                self._on_forbidden(api, False)

    def enabled(self, api: str) -> bool:
        with self._lock:
            forbidden = api in self._forbidden
        if api == API_EVENTS:
            return self._settings.events and not forbidden
        return self._settings.task_metrics and not forbidden

    # --- what is due ------------------------------------------------------------------

    def events_due(self, now: float) -> list[JobState]:
        """The jobs whose events to read now (call it when discovery has just run)."""
        if not self.enabled(API_EVENTS):
            return []
        due = []
        jobs = self._store.jobs()
        with self._lock:
            for known in (self._terminal_seen, self._next_events, self._event_failures):
                for job_id in [job_id for job_id in known if job_id not in jobs]:
                    del known[job_id]
            for job in jobs.values():
                if self._next_events.get(job.id, 0.0) > now:
                    continue
                if job.phase in TERMINAL_PHASES:
                    if self._store.events(job.id).final_done:
                        continue
                    self._terminal_seen.setdefault(job.id, now)
                due.append(job)
        return due

    def metrics_due(self, now: float) -> list[tuple[JobState, str]]:
        """The tasks of Running jobs whose metrics are due; forgets the others' metrics."""
        jobs = self._store.jobs()
        running = {
            (job.id, task): job
            for job in jobs.values()
            if job.phase == "Running"
            for task in job.tasks
        }
        for key in [key for key in self._store.snapshot().usage if key not in running]:
            self._store.drop_usage(*key)
        if not self.enabled(API_TASK_METRICS):
            return []
        with self._lock:
            for key in [key for key in self._next_metrics if key not in running]:
                del self._next_metrics[key]
                self._metric_failures.pop(key, None)
            return [
                (job, task)
                for (job_id, task), job in running.items()
                if self._next_metrics.get((job_id, task), 0.0) <= now
            ]

    # --- one job / one task --------------------------------------------------------------

    def read_events(self, job: JobState) -> str:
        """Read what is new in one job's events; returns ``ok``, ``failed`` or ``skipped``."""
        if not self.enabled(API_EVENTS):
            return "skipped"
        state = self._store.events(job.id)
        try:
            read = read_new(
                lambda page: self._source.list_events(job.id, page=page),
                state.cursor,
                now=self._clock(),
            )
        except JobNotFoundError:
            return "failed"  # discovery drops it
        except ModelArtsError as exc:
            self._failed(API_EVENTS, job.id, None, exc)
            return "failed"
        now = self._clock()
        if read.future:
            log.warning(
                "events of job %s (%s): %d events stamped over an hour ahead of this "
                "exporter's clock were left out",
                job.name,
                job.id,
                read.future,
            )
        if read.truncated:
            log.warning(
                "events of job %s (%s): more new events than %d pages; older ones not counted",
                job.name,
                job.id,
                read.pages,
            )
        updated = apply_read(state, read, now=now)
        if job.phase in TERMINAL_PHASES:
            with self._lock:
                seen_at = self._terminal_seen.get(job.id, now)
            if now - seen_at >= SETTLE_SECONDS or _settled(job, now):
                updated = replace(updated, final_done=True)
        try:
            self._store.put_events(updated)
        except Exception:
            log.exception("saving the events of job %s failed", job.id)
            return "failed"
        with self._lock:
            if self._event_failures.pop(job.id, 0):
                log.info("events of job %s (%s) are read again", job.name, job.id)
            self._next_events.pop(job.id, None)
        return "ok"

    def read_metrics(self, job: JobState, task_id: str) -> str:
        """Read one task's latest metrics; returns ``ok``, ``failed`` or ``skipped``."""
        if not self.enabled(API_TASK_METRICS):
            return "skipped"
        try:
            ratios = self._source.task_metrics(job.id, task_id)
        except JobNotFoundError:
            return "failed"
        except ModelArtsError as exc:
            self._failed(API_TASK_METRICS, job.id, task_id, exc)
            return "failed"
        now = self._clock()
        self._store.put_usage(job.id, task_id, TaskUsage(ratios, now))
        with self._lock:
            self._metric_failures.pop((job.id, task_id), None)
            self._next_metrics[(job.id, task_id)] = (
                now + self._settings.task_metrics_interval_seconds
            )
        return "ok"

    def _failed(self, api: str, job_id: str, task_id: str | None, exc: ModelArtsError) -> None:
        if isinstance(exc, AuthenticationError) and not credential_rejected(exc):
            with self._lock:
                first = api not in self._forbidden
                self._forbidden.add(api)
            if first:
                switch = "platform.events" if api == API_EVENTS else "platform.task_metrics"
                log.error(
                    "ModelArts refused the %s API (%s): not calling it again; grant the "
                    "permission, or set %s: false",
                    api,
                    exc,
                    switch,
                )
                if self._on_forbidden is not None:
                    self._on_forbidden(api)
            return
        now = self._clock()
        with self._lock:
            if task_id is None:
                failures = self._event_failures.get(job_id, 0) + 1
                self._event_failures[job_id] = failures
            else:
                failures = self._metric_failures.get((job_id, task_id), 0) + 1
                self._metric_failures[(job_id, task_id)] = failures
            backoff = min(
                self._settings.interval_seconds * 2 ** (failures - 1),
                self._settings.failure_backoff_max_seconds,
            )
            if task_id is None:
                self._next_events[job_id] = now + backoff
            else:
                self._next_metrics[(job_id, task_id)] = now + max(
                    backoff, self._settings.task_metrics_interval_seconds
                )
        what = f"events of job {job_id}" if task_id is None else f"metrics of task {task_id}"
        if task_id is not None:
            what += f" of job {job_id}"
        level = logging.WARNING if failures == 1 else logging.DEBUG
        log.log(level, "reading the %s failed (%s); retrying in %.0f s", what, exc, backoff)


def _settled(job: JobState, now: float) -> bool:
    """A job that ended long before we first read it has all its events already."""
    return job.ended_at is not None and now - job.ended_at >= SETTLE_SECONDS
