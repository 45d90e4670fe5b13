"""The collection cycle, run by APScheduler every ``collect.interval_seconds``.

A cycle refreshes discovery (when due), previews every due task with bounded
concurrency, reads the platform signals that are due (each job's events when discovery
ran, running tasks' metrics once a minute; see ``signals.py``) in the same pool, and
drops jobs whose grace period is over. One task's failure never stops
another: it marks that task down and backs it off (doubling up to
``collect.failure_backoff_max_seconds``; at least as long as a 429's ``Retry-After``).
Credentials ModelArts rejects (a 401, a 403 that is not about one job, any 401/403 to
a listing) pause every call, discovery included, doubling up to the same maximum, with
one error line when it starts. One task's slow call never holds a cycle: a cycle waits
for its previews at most ``cycle_wait_seconds`` (the exporter sets the interval), and a
preview still in flight then (every call has a deadline) finishes on its own and is not
started again before.
A cycle that overruns its interval is not started twice: the next one waits
(APScheduler ``max_instances=1``, ``coalesce``). ``run_cycle`` is a plain method, so
tests drive cycles without the scheduler or sleeps.

Each cycle's summary line is logged at info level when something changed (jobs or tasks
watched, polls failing or recovering, discovery failing, a gap or reset) and otherwise
every ``SUMMARY_EVERY_CYCLES`` cycles, at debug level in between, so that the lines that
matter ("job ... is Failed") do not scroll away. APScheduler's own log lines go through
``SchedulerLog``, which words an overrunning cycle as ours.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler

from .discovery import Discovery
from .modelarts.errors import (
    AuthenticationError,
    JobNotFoundError,
    ModelArtsError,
    StoppedError,
    ThrottledError,
    credential_rejected,
)
from .modelarts.types import TERMINAL_PHASES, LogPreview
from .pipeline import Limits, apply_preview, failed_poll, no_log_yet
from .rules.engine import RuleSet
from .selfmetrics import SelfMetrics
from .signals import SignalReader
from .store import JobState, Store, TaskState

log = logging.getLogger("exporter.scheduler")

SUMMARY_EVERY_CYCLES = 10
"""A quiet cycle's summary is logged at info level once in this many cycles."""


class PreviewSource(Protocol):
    def preview_log(self, job_id: str, task_id: str) -> LogPreview | None: ...


@dataclass(frozen=True, slots=True)
class CollectSettings:
    interval_seconds: float = 30.0
    discovery_interval_seconds: float = 30.0
    concurrency: int = 8
    failure_backoff_max_seconds: float = 600.0
    final_poll_seconds: float = 120.0
    """How long after a job ended its logs may still be polled (see ``Poller.poll``)."""
    limits: Limits = field(default_factory=Limits)
    cycle_wait_seconds: float | None = None
    """How long a cycle waits for its previews (None: until all are done)."""


@dataclass(slots=True)
class CycleReport:
    """What one cycle did (logged, and returned for tests)."""

    polled: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    new_bytes: int = 0
    failed: int = 0
    in_flight: int = 0
    """Previews still running when the cycle ended (started by this or earlier cycles)."""
    failed_listings: int = 0
    """Discovery calls (list, details) that failed."""
    discovery_ok: bool | None = None
    """None: discovery was not due, or paused for rejected credentials."""
    events_read: Counter[str] = field(default_factory=Counter)
    metrics_read: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


class Poller:
    """Discovery, previews and lifecycle, one cycle at a time."""

    def __init__(
        self,
        source: PreviewSource,
        discovery: Discovery,
        store: Store,
        rules: RuleSet,
        metrics: SelfMetrics,
        settings: CollectSettings,
        *,
        signals: SignalReader | None = None,
        clock: Callable[[], float] = time.time,
        secrets: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        """``secrets`` gives the credential values in use, kept out of evidence lines."""
        self._source = source
        self._signals = signals
        self._secrets = secrets
        self._discovery = discovery
        self._store = store
        self._rules = rules
        self._metrics = metrics
        self._settings = settings
        self._clock = clock
        self._next_discovery = 0.0
        self._next_poll: dict[tuple[str, str], float] = {}
        self._auth_lock = threading.Lock()
        self._paused_until = {"listing": 0.0, "preview": 0.0}
        """Until when each kind of call waits after the credentials were rejected."""
        self._auth_rejections = 0
        self._pool_size = 0
        self._pool = self._new_pool()
        self._flight_lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], Future[tuple[str, int]]] = {}
        self._scheduler: BackgroundScheduler | None = None
        self._cycles = 0
        self._last_summary: tuple[int, int, bool, bool, bool] | None = None
        self._cycle_started: float | None = None
        """time.monotonic() when the cycle in flight started; None between cycles."""
        self._overrun_warned = False
        self.ready = threading.Event()
        """Set once the first cycle has run: the exporter is ready to be scraped."""

    def _new_pool(self) -> ThreadPoolExecutor:
        self._pool_size = self._settings.concurrency
        return ThreadPoolExecutor(max_workers=self._pool_size, thread_name_prefix="poll")

    def reconfigure(
        self, rules: RuleSet, settings: CollectSettings, *, rediscover: bool = False
    ) -> None:
        """Use these rules and settings from the next poll on (a reload). The cycle in
        flight finishes as it started (a new concurrency applies from the next one); a new
        interval counts from now. ``rediscover`` (the discovery settings changed) makes the
        next cycle list the jobs, whenever discovery was due: jobs no longer selected go
        then, newly selected ones come (unless listings are paused for rejected
        credentials)."""
        old = self._settings
        self._rules = rules
        self._settings = settings
        if rediscover:
            self._next_discovery = 0.0
        scheduler = self._scheduler
        if scheduler is not None and settings.interval_seconds != old.interval_seconds:
            scheduler.reschedule_job(
                "collect", trigger="interval", seconds=settings.interval_seconds
            )

    # --- one cycle ----------------------------------------------------------------------

    def run_cycle(self) -> CycleReport:
        """One cycle: discovery when due, every due task's preview, expiry."""
        started = time.perf_counter()
        if self._pool_size != self._settings.concurrency:  # changed by a reload
            pool, self._pool = self._pool, self._new_pool()
            pool.shutdown(wait=False)
        now = self._clock()
        report = CycleReport()
        discovered = False
        if now >= self._next_discovery and now >= self._paused_until["listing"]:
            report.discovery_ok = self._discovery.refresh()
            report.failed_listings = len(self._discovery.errors)
            rejection = next(
                (
                    exc
                    for exc in self._discovery.errors
                    if isinstance(exc, AuthenticationError) and _rejects_credentials(exc)
                ),
                None,
            )
            if rejection is not None:
                self._pause_for_credentials(rejection, "listing")
            elif report.discovery_ok:
                self._credentials_work()
            self._next_discovery = max(
                now + self._settings.discovery_interval_seconds, self._paused_until["listing"]
            )
            discovered = True
        futures = [self._submit(job, task_id) for job, task_id in self._due(now)]
        event_reads, metric_reads = [], []
        signals = self._signals
        if signals is not None and self._clock() >= self._paused_until["preview"]:
            if discovered:
                event_reads = [
                    self._pool.submit(self._safe_signal, signals.read_events, job)
                    for job in signals.events_due(now)
                ]
            metric_reads = [
                self._pool.submit(self._safe_signal, signals.read_metrics, job, task)
                for job, task in signals.metrics_due(now)
            ]
        done, _ = wait(futures, timeout=self._settings.cycle_wait_seconds)
        for future in done:
            outcome, new_bytes = future.result()
            report.polled += 1
            report.outcomes[outcome] += 1
            report.new_bytes += new_bytes
            report.failed += outcome == "failed"
        with self._flight_lock:
            report.in_flight = len(self._in_flight)
        signals_done, _ = wait(
            [*event_reads, *metric_reads], timeout=self._settings.cycle_wait_seconds
        )
        for read in event_reads:
            if read in signals_done:
                report.events_read[read.result()] += 1
        for read in metric_reads:
            if read in signals_done:
                report.metrics_read[read.result()] += 1
        self._discovery.expire()
        ok_discovery = report.discovery_ok is not False
        # What a write could not save (a full disk), or a state file that was deleted.
        self._store.flush()
        self._metrics.state_unsaved.set(self._store.unsaved)
        snapshot = self._store.snapshot()
        self._metrics.watched_jobs.set(len(snapshot.jobs))
        self._metrics.watched_tasks.set(len(snapshot.tasks))
        report.seconds = time.perf_counter() - started
        self._metrics.collection_duration.observe(report.seconds)
        self._metrics.collections.inc()
        self._metrics.last_collection.set(self._clock())
        self.ready.set()
        signals_read = ""
        if report.events_read or report.metrics_read:
            signals_read = (
                f"; events of {sum(report.events_read.values())} jobs"
                f" ({report.events_read['failed']} failed),"
                f" metrics of {sum(report.metrics_read.values())} tasks"
                f" ({report.metrics_read['failed']} failed)"
            )
        signals_failed = bool(report.events_read["failed"] or report.metrics_read["failed"])
        summary = (
            len(snapshot.jobs),
            len(snapshot.tasks),
            report.failed > 0,
            not ok_discovery,
            signals_failed,
        )
        notable = summary != self._last_summary or bool(report.outcomes.keys() & _NOTABLE)
        self._last_summary = summary
        self._cycles += 1
        log.log(
            logging.INFO if notable or self._cycles % SUMMARY_EVERY_CYCLES == 1 else logging.DEBUG,
            "cycle: %d jobs, %d tasks polled (%s), %d new bytes, %d failed (%d listings, "
            "%d previews), %s%s%.2f s%s",
            len(snapshot.jobs),
            report.polled,
            ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())) or "none",
            report.new_bytes,
            report.failed_listings + report.failed,
            report.failed_listings,
            report.failed,
            f"{report.in_flight} still in flight, " if report.in_flight else "",
            self._paused_note(),
            report.seconds,
            signals_read,
        )
        return report

    def _paused_note(self) -> str:
        now = self._clock()
        paused = [f"{kind}s" for kind, until in self._paused_until.items() if now < until]
        return f"{' and '.join(paused)} paused (credentials rejected), " if paused else ""

    def _submit(self, job: JobState, task_id: str) -> Future[tuple[str, int]]:
        """Start one preview; it counts as in flight until it is done."""
        key = (job.id, task_id)
        future = self._pool.submit(self._safe_poll, job, task_id)
        with self._flight_lock:
            self._in_flight[key] = future
        future.add_done_callback(lambda _: self._landed(key, future))
        return future

    def _landed(self, key: tuple[str, str], future: Future[tuple[str, int]]) -> None:
        with self._flight_lock:
            if self._in_flight.get(key) is future:
                del self._in_flight[key]

    def _safe_signal(self, read: Callable[..., str], *args: object) -> str:
        """A signal read; a bug met by one job or task is logged and stops nothing else."""
        try:
            return read(*args)
        except Exception:
            log.exception("reading platform signals failed (%s)", read.__name__)
            return "failed"

    def _due(self, now: float) -> list[tuple[JobState, str]]:
        due = []
        with self._flight_lock:
            in_flight = set(self._in_flight)
        for job in self._store.jobs().values():
            for task_id in job.tasks:
                if self._next_poll.get((job.id, task_id), 0.0) > now:
                    continue
                if (job.id, task_id) in in_flight:
                    continue
                if job.phase in TERMINAL_PHASES and self._store.task(job.id, task_id).final_done:
                    continue
                due.append((job, task_id))
        return due

    # --- one task -----------------------------------------------------------------------

    def _safe_poll(self, job: JobState, task_id: str) -> tuple[str, int]:
        """``poll``, but a bug met by one task is logged and never stops the others."""
        try:
            return self.poll(job, task_id)
        except Exception:
            log.exception("polling task %s of job %s failed", task_id, job.name)
            self._metrics.polls.labels("failed").inc()
            return "failed", 0

    def poll(self, job: JobState, task_id: str) -> tuple[str, int]:
        """Preview one task and commit what is new; returns (outcome, new bytes).

        A task of a finished job is polled on until its log stops growing: the log can
        lag the phase change by seconds, and its last lines (the exit code, the OOM) are
        the ones that matter. The final poll, which also takes the unfinished last line,
        is the first one that sees no growth since the poll before it (also made after
        the job ended), or any poll ``final_poll_seconds`` after the job ended.
        """
        terminal = job.phase in TERMINAL_PHASES
        task = self._store.task(job.id, task_id)
        if self._clock() < self._paused_until["preview"]:
            # The credentials were rejected: don't ask again until the pause is over.
            self._commit(failed_poll(task, now=self._clock()))
            self._metrics.polls.labels("failed").inc()
            return "failed", 0
        try:
            preview = self._source.preview_log(job.id, task_id)
        except StoppedError:
            return "stopped", 0  # the exporter is stopping: nothing to record
        except JobNotFoundError:
            log.info("job %s (%s) was deleted: dropping its series", job.name, job.id)
            self._store.remove_job(job.id)
            return "failed", 0
        except AuthenticationError as exc:
            if credential_rejected(exc):
                self._pause_for_credentials(exc, "preview")
            return self._failed(job, task, exc), 0
        except ModelArtsError as exc:
            return self._failed(job, task, exc), 0
        self._credentials_work()
        now = self._clock()
        final = terminal and self._settled(job, task, preview, now)
        if preview is None:
            updated = no_log_yet(task, now=now, final=final)
            if terminal:
                updated = replace(updated, terminal_polls=task.terminal_polls + 1)
            self._commit(updated)
            self._metrics.polls.labels("not_ready").inc()
            return "not_ready", 0
        updated, stats = apply_preview(
            task,
            preview,
            self._rules,
            final=final,
            now=now,
            limits=self._settings.limits,
            secrets=self._secrets(),
            elapsed=_elapsed(job, task, now),
        )
        if terminal:
            updated = replace(updated, terminal_polls=task.terminal_polls + 1)
        if not self._commit(updated):
            return "failed", 0
        self._next_poll.pop((job.id, task_id), None)
        self._metrics.polls.labels(stats.outcome).inc()
        if stats.outcome == "stale":
            level = logging.INFO if task.cursor.stale == 0 else logging.DEBUG
            log.log(
                level,
                "preview of task %s of job %s is older than what was taken (%s): ignored",
                task_id,
                job.name,
                stats.reason,
            )
            return stats.outcome, 0
        if stats.outcome == "implausible":
            level = logging.WARNING if task.up is not False else logging.DEBUG
            log.log(
                level,
                "preview of task %s of job %s is not plausible (%s): ignored",
                task_id,
                job.name,
                stats.reason,
            )
            return stats.outcome, 0
        if task.up is False:
            log.info("task %s of job %s recovered", task_id, job.name)
        if stats.outcome == "reset":
            log.info(
                "log of task %s of job %s was restarted (%s)", task_id, job.name, stats.reset_reason
            )
        if stats.ambiguous:
            self._metrics.ambiguities.inc()
        if stats.misplaced:
            self._metrics.misplaced.inc()
        if stats.scan is not None:
            self._metrics.observe_scan(stats.scan)
        for rule, dropped in stats.series_dropped.items():
            self._metrics.series_dropped.labels(rule).inc(dropped)
        return stats.outcome, stats.new_bytes

    def _settled(
        self, job: JobState, task: TaskState, preview: LogPreview | None, now: float
    ) -> bool:
        """Whether this poll of a finished job's task is its last (see ``poll``)."""
        ended = job.ended_at if job.ended_at is not None else now
        if now - ended >= self._settings.final_poll_seconds:
            return True
        if task.terminal_polls == 0:
            return False
        if preview is None:
            return task.log_size is None  # still no log, a poll after the job ended
        return task.cursor.started and preview.full_size == task.cursor.full_size

    def _pause_for_credentials(self, exc: AuthenticationError, kind: str) -> None:
        """A rejected credential pauses every call of its ``kind`` (``listing``: discovery,
        ``preview``), doubling while the rejections go on, so it never hammers the API;
        one error line says so when it starts."""
        with self._auth_lock:
            now = self._clock()
            if now < self._paused_until[kind]:
                return
            self._auth_rejections += 1
            pause = min(
                self._settings.interval_seconds * 2 ** (self._auth_rejections - 1),
                self._settings.failure_backoff_max_seconds,
            )
            self._paused_until[kind] = now + pause
            first = self._auth_rejections == 1
        if first:
            log.error(
                "ModelArts rejected the credentials (%s): %ss paused for %.0f s, doubling "
                "up to %.0f s while they are rejected; check the token, AK/SK or IAM user, "
                "its project and permissions",
                exc,
                kind,
                pause,
                self._settings.failure_backoff_max_seconds,
            )
        else:
            log.warning(
                "the credentials are still rejected (%s): %ss paused for %.0f s",
                exc,
                kind,
                pause,
            )

    def _credentials_work(self) -> None:
        with self._auth_lock:
            if self._auth_rejections:
                log.info("ModelArts accepts the credentials again")
            self._auth_rejections = 0

    def _commit(self, task: TaskState) -> bool:
        try:
            self._store.commit(task)
        except Exception:
            log.exception("saving the state of task %s of job %s failed", task.task_id, task.job_id)
            return False
        return True

    def _failed(self, job: JobState, task: TaskState, exc: ModelArtsError) -> str:
        updated = failed_poll(task, now=self._clock())
        backoff = min(
            self._settings.interval_seconds * 2 ** (updated.failures - 1),
            self._settings.failure_backoff_max_seconds,
        )
        if isinstance(exc, AuthenticationError):
            backoff = (
                self._settings.failure_backoff_max_seconds if updated.failures > 1 else backoff
            )
        if isinstance(exc, ThrottledError) and exc.retry_after is not None:
            # Asked to come back later: this task waits, no thread does.
            backoff = max(backoff, min(exc.retry_after, self._settings.failure_backoff_max_seconds))
        self._next_poll[(job.id, task.task_id)] = self._clock() + backoff
        level = logging.WARNING if task.up is not False else logging.DEBUG
        log.log(
            level,
            "preview of task %s of job %s failed (%s); retrying in %.0f s",
            task.task_id,
            job.name,
            exc,
            backoff,
        )
        self._commit(updated)
        self._metrics.polls.labels("failed").inc()
        return "failed"

    # --- scheduling -----------------------------------------------------------------------

    def start(self) -> None:
        """Run cycles every interval in the background, the first one now."""
        scheduler = BackgroundScheduler(timezone=UTC, logger=SchedulerLog(self))
        scheduler.add_job(
            self._safe_cycle,
            "interval",
            seconds=self._settings.interval_seconds,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            id="collect",
        )
        scheduler.start()
        self._scheduler = scheduler

    def _safe_cycle(self) -> None:
        self._cycle_started = time.monotonic()
        self._overrun_warned = False
        try:
            self.run_cycle()
        except Exception:
            log.exception("collection cycle failed")
        finally:
            self._cycle_started = None

    def overrun_message(self) -> tuple[int, str]:
        """(level, line) for a run skipped because the cycle in flight overran its
        interval: a warning once per overrunning cycle, then debug lines."""
        running = time.monotonic() - (self._cycle_started or time.monotonic())
        level = logging.DEBUG if self._overrun_warned else logging.WARNING
        self._overrun_warned = True
        return level, (
            f"the collection cycle has been running for {running:.0f} s, longer than "
            f"collect.interval_seconds ({self._settings.interval_seconds:g} s): the next "
            "cycle starts when it ends; raise collect.interval_seconds or "
            "collect.concurrency, or watch fewer jobs"
        )

    def stop(self) -> None:
        """Stop scheduling and wait for the cycle and the previews in flight (stop the
        client first, so that they end at once)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self._pool.shutdown(wait=True, cancel_futures=True)


_NOTABLE = frozenset({"gap", "reset"})
"""Poll outcomes that make a cycle's summary worth an info line."""


class SchedulerLog:
    """The logger APScheduler is given: its lines in our words, on ``exporter.scheduler``.

    A run skipped because the cycle in flight overran its interval ("maximum number of
    running instances reached") says what that means and what to do, once per cycle;
    APScheduler's info lines (job added, scheduler started) go to debug; its warnings and
    errors keep their level, marked as the scheduler's.
    """

    def __init__(self, poller: Poller) -> None:
        self._poller = poller

    def log(self, level: int, msg: str, *args: object, **kwargs: Any) -> None:
        if "maximum number of running instances reached" in msg:
            level, line = self._poller.overrun_message()
            log.log(level, "%s", line)
            return
        if level < logging.WARNING:
            level = logging.DEBUG
        log.log(level, "scheduler: " + msg, *args, **kwargs)

    def debug(self, msg: str, *args: object, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: str, *args: object, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: str, *args: object, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: str, *args: object, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: str, *args: object, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=True, **kwargs)

    def critical(self, msg: str, *args: object, **kwargs: Any) -> None:
        self.log(logging.CRITICAL, msg, *args, **kwargs)


def _rejects_credentials(exc: AuthenticationError) -> bool:
    """Whether a failed discovery call says the credentials do not work: any 401/403 to
    the job list (no job in particular), else as for previews."""
    return exc.endpoint == "list_jobs" or credential_rejected(exc)


def _elapsed(job: JobState, task: TaskState, now: float) -> float | None:
    """Seconds the log had to grow since the answer the task's state took; None: unknown."""
    if not task.cursor.started:
        return now - job.create_time if job.create_time else None
    if task.last_poll is None or task.failures or task.cursor.stale or task.up is False:
        return None
    return now - task.last_poll
