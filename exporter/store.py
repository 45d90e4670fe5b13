"""Counters, last values and cursors of every watched task; saved to SQLite.

The store holds one immutable ``TaskState`` per task and one ``JobState`` per job. A poll
builds a new ``TaskState`` and ``commit``s it: the row is written to the state file in
one transaction first, and only then published to scrapes. So a counter Prometheus has
seen is always on disk: a crash at any moment loses at most the poll in flight, which
the next run redoes from the saved cursor (nothing is counted twice, no counter goes
down across a restart).

The state file (``state.path``) is SQLite in WAL mode, created with mode 0600. It holds
cursors (with the last bytes before each cursor and the held-back unfinished line),
counters and last values, the jobs' names, phases and restarts, and per job the events
cursor with the event counts and latest Error events (redacted); never credentials.
Task metrics (utilisation) stay in memory: they are re-read within a minute. A file
that is corrupt, or written by an incompatible version, is moved aside with a warning
and the exporter starts afresh.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .cursor import CursorState
from .events import JobEvents, decode_events, encode_events
from .evidence import MarkerLine, decode_line, decode_marker_lines, encode_line, encode_marker_lines
from .modelarts.types import JobEvent

log = logging.getLogger("exporter.store")

SCHEMA_VERSION = 1
"""Version 1 files of earlier releases lack ``marker_lines`` and ``exit_line`` (tasks
load without them: new keys of a task row are optional, unknown ones are ignored), so
the version stays 1 and files move freely between releases."""

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]


LOSS_VALUES = "modelarts_task_loss_values"
LOSS_VALUES_COUNT: tuple[str, tuple[tuple[str, str], ...]] = (LOSS_VALUES + "_count", ())
LOSS_VALUES_SUM: tuple[str, tuple[tuple[str, str], ...]] = (LOSS_VALUES + "_sum", ())
"""A task's counters under these keys hold the training-loss summary: the lines with a
finite training loss and the sum of those losses (exactly once, like every counter)."""


@dataclass(frozen=True, slots=True)
class TaskState:
    """Everything known about one task's log. Replaced, never changed in place."""

    job_id: str
    task_id: str
    cursor: CursorState = field(default_factory=CursorState)
    processed_bytes: float = 0.0
    skipped_bytes: float = 0.0
    resets: float = 0.0
    lines: float = 0.0
    errors: Mapping[str, float] = field(default_factory=dict)
    warnings: Mapping[str, float] = field(default_factory=dict)
    exit_code: float | None = None
    loss: float | None = None
    step: float | None = None
    epoch: float | None = None
    gauges: Mapping[SeriesKey, tuple[float, str]] = field(default_factory=dict)
    """Custom gauge series -> (value, rule that created it)."""
    counters: Mapping[SeriesKey, tuple[float, str]] = field(default_factory=dict)
    log_size: float | None = None
    window_bytes: float | None = None
    last_growth: float | None = None
    """Unix time the log was last seen to grow."""
    up: bool | None = None
    """Whether the last preview succeeded; None before the first one."""
    last_poll: float | None = None
    final_done: bool = False
    """The job is over and this task had its final poll."""
    failures: int = 0
    """Failed previews in a row (for backoff)."""
    rule_context: Mapping[str, Any] = field(default_factory=dict)
    """What context rules (a Keras ``Epoch 3/10`` header, ...) said so far, for the next
    block of the same log."""
    marker_lines: Mapping[str, tuple[MarkerLine, ...]] = field(default_factory=dict)
    """Error marker -> its first lines in the current run of the log (evidence.py)."""
    exit_line: MarkerLine | None = None
    """The line that printed ``exit_code``."""


@dataclass(frozen=True, slots=True)
class JobState:
    """A watched training job, as discovery last saw it."""

    id: str
    name: str
    phase: str
    tasks: tuple[str, ...] = ()
    engine: str = ""
    flavor: str = ""
    create_time: float | None = None
    ended_at: float | None = None
    """Unix time the job reached a terminal phase (from the API, else when we saw it)."""
    start_time: float | None = None
    """Unix time the job started running (``status.start_time``); None before."""
    duration: float | None = None
    """Seconds it has been running (``status.duration``)."""
    restarts: int = 0
    """Runs after the first in ``status.running_records``; never goes down."""
    last_recovery: tuple[str, str, str] | None = None
    """(end_reason, end_recover, end_related_task) of the last run that ended with a
    fault-tolerance action, with bounded values (see ``platform.recovery_labels``)."""


@dataclass(frozen=True, slots=True)
class TaskUsage:
    """The latest task metrics of a task: metric name (``gpuUtil``...) -> ratio 0..1."""

    ratios: Mapping[str, float]
    fetched_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a scrape reads: a consistent view of every job and task."""

    jobs: Mapping[str, JobState]
    tasks: Mapping[tuple[str, str], TaskState]
    events: Mapping[str, JobEvents] = field(default_factory=dict)
    usage: Mapping[tuple[str, str], TaskUsage] = field(default_factory=dict)


# --- encoding --------------------------------------------------------------------------


def encode_cursor(state: CursorState) -> dict[str, Any]:
    return {
        "started": state.started,
        "offset": state.offset,
        "slack": state.slack,
        "tail": base64.b64encode(state.tail).decode(),
        "pending": base64.b64encode(state.pending).decode(),
        "discard": state.discard,
        "full_size": state.full_size,
    }


def decode_cursor(data: Mapping[str, Any]) -> CursorState:
    return CursorState(
        started=bool(data["started"]),
        offset=int(data["offset"]),
        slack=int(data["slack"]),
        tail=base64.b64decode(data["tail"]),
        pending=base64.b64decode(data["pending"]),
        discard=bool(data["discard"]),
        full_size=int(data["full_size"]),
    )


def _encode_series(series: Mapping[SeriesKey, tuple[float, str]]) -> list[Any]:
    return [
        [metric, [list(p) for p in labels], value, rule]
        for (metric, labels), (value, rule) in series.items()
    ]


def _decode_series(rows: Iterable[Any]) -> dict[SeriesKey, tuple[float, str]]:
    return {
        (str(metric), tuple((str(k), str(v)) for k, v in labels)): (float(value), str(rule))
        for metric, labels, value, rule in rows
    }


def encode_task(task: TaskState) -> str:
    data: dict[str, Any] = {}
    for f in fields(task):
        value = getattr(task, f.name)
        if f.name == "cursor":
            value = encode_cursor(value)
        elif f.name in ("gauges", "counters"):
            value = _encode_series(value)
        elif f.name == "marker_lines":
            value = encode_marker_lines(value)
        elif f.name == "exit_line":
            value = None if value is None else encode_line(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        data[f.name] = value
    # NaN (a NaN loss) is valid JSON for Python's json module, and round-trips.
    return json.dumps(data, separators=(",", ":"))


def decode_task(text: str) -> TaskState:
    data = json.loads(text)
    data["cursor"] = decode_cursor(data["cursor"])
    data["gauges"] = _decode_series(data["gauges"])
    data["counters"] = _decode_series(data["counters"])
    data["marker_lines"] = decode_marker_lines(data.get("marker_lines", {}))
    exit_line = data.get("exit_line")
    data["exit_line"] = None if exit_line is None else decode_line(exit_line)
    known = {f.name for f in fields(TaskState)}
    return TaskState(**{k: v for k, v in data.items() if k in known})


def encode_job(job: JobState) -> str:
    return json.dumps({f.name: getattr(job, f.name) for f in fields(job)}, separators=(",", ":"))


def decode_job(text: str) -> JobState:
    data = json.loads(text)
    data["tasks"] = tuple(data["tasks"])
    if data.get("last_recovery") is not None:
        reason, recover, task = data["last_recovery"]
        data["last_recovery"] = (str(reason), str(recover), str(task))
    known = {f.name for f in fields(JobState)}
    return JobState(**{k: v for k, v in data.items() if k in known})


# --- the store --------------------------------------------------------------------------


class StateError(Exception):
    """The state file cannot be used (and could not be moved aside)."""


class Store:
    """Jobs and tasks in memory, mirrored to SQLite (``path``) or memory only (None).

    Thread-safe: pollers commit concurrently, scrapes take snapshots.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        clock: Callable[[], float] = time.time,
        on_save: Callable[[bool], None] | None = None,
    ) -> None:
        self.path = path
        self._clock = clock
        self._on_save = on_save
        self._lock = threading.Lock()
        self._jobs: dict[str, JobState] = {}
        self._tasks: dict[tuple[str, str], TaskState] = {}
        self._events: dict[str, JobEvents] = {}
        self._usage: dict[tuple[str, str], TaskUsage] = {}
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    # lifecycle

    def open(self) -> None:
        """Open (or create) the state file and load it."""
        if self.path is None:
            return
        self._lock_file(self.path)
        try:
            self._open_db(self.path)
        except (sqlite3.DatabaseError, StateError, ValueError, KeyError, TypeError) as exc:
            aside = self._move_aside(self.path, str(exc))
            log.warning(
                "state file %s unusable (%s); moved it to %s and starting afresh",
                self.path,
                exc,
                aside,
            )
            self._jobs.clear()
            self._tasks.clear()
            self._events.clear()
            self._open_db(self.path)

    def _lock_file(self, path: Path) -> None:
        """Hold ``<state>.lock``: two exporters on one state file would both count."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError("in use by another running exporter") from None
        self._lock_fd = fd

    def _open_db(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Created here so the mode is 0600 from the first byte.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise StateError("integrity check failed")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise StateError(f"written by schema version {row[0]}, this is {SCHEMA_VERSION}")
            db.execute("CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, data TEXT)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS tasks "
                "(job_id TEXT, task_id TEXT, data TEXT, PRIMARY KEY (job_id, task_id))"
            )
            # Added after schema version 1 without changing it: older files simply lack it.
            db.execute("CREATE TABLE IF NOT EXISTS events (job_id TEXT PRIMARY KEY, data TEXT)")
            jobs = {job_id: decode_job(data) for job_id, data in db.execute("SELECT * FROM jobs")}
            tasks = {
                (job_id, task_id): decode_task(data)
                for job_id, task_id, data in db.execute("SELECT * FROM tasks")
            }
            events = {
                job_id: decode_events(job_id, data)
                for job_id, data in db.execute("SELECT * FROM events")
            }
        except BaseException:
            db.close()
            raise
        os.chmod(path, 0o600)
        self._db = db
        self._jobs, self._tasks, self._events = jobs, tasks, events
        if jobs:
            log.info("state loaded from %s: %d jobs, %d tasks", self.path, len(jobs), len(tasks))

    def _move_aside(self, path: Path, reason: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
        aside = path.with_name(f"{path.name}.unusable-{stamp}")
        try:
            for suffix in ("", "-wal", "-shm"):
                source = Path(str(path) + suffix)
                if source.exists():
                    source.rename(Path(str(aside) + suffix))
        except OSError as exc:
            raise StateError(
                f"state file {path} is unusable ({reason}) and cannot be moved aside: {exc}"
            ) from exc
        return aside

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()
                self._db = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None

    # reads

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                dict(self._jobs), dict(self._tasks), dict(self._events), dict(self._usage)
            )

    def jobs(self) -> dict[str, JobState]:
        with self._lock:
            return dict(self._jobs)

    def task(self, job_id: str, task_id: str) -> TaskState:
        with self._lock:
            return self._tasks.get((job_id, task_id)) or TaskState(job_id, task_id)

    def events(self, job_id: str) -> JobEvents:
        """What was read of a job's events (empty before the first read)."""
        with self._lock:
            return self._events.get(job_id) or JobEvents(job_id)

    def error_events(self, job_id: str) -> tuple[JobEvent, ...]:
        """The job's latest Error events, oldest first (bounded, redacted): for pages
        that show why a job failed."""
        return self.events(job_id).errors

    def usage(self, job_id: str, task_id: str) -> TaskUsage | None:
        with self._lock:
            return self._usage.get((job_id, task_id))

    # writes: disk first, then memory

    def commit(self, task: TaskState) -> None:
        """Save one task's new state, then publish it (unless its job was dropped)."""
        with self._lock:
            if task.job_id not in self._jobs:
                return
        self._write(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?)",
            (task.job_id, task.task_id, encode_task(task)),
        )
        with self._lock:
            if task.job_id in self._jobs:
                self._tasks[(task.job_id, task.task_id)] = task

    def put_events(self, events: JobEvents) -> None:
        """Save a job's event counts and cursor together, then publish them (unless the
        job was dropped meanwhile)."""
        with self._lock:
            if events.job_id not in self._jobs:
                return
        self._write(
            "INSERT OR REPLACE INTO events VALUES (?, ?)", (events.job_id, encode_events(events))
        )
        with self._lock:
            if events.job_id in self._jobs:
                self._events[events.job_id] = events

    def put_usage(self, job_id: str, task_id: str, usage: TaskUsage) -> None:
        """Publish a task's latest metrics (memory only: they are re-read within a minute)."""
        with self._lock:
            if job_id in self._jobs:
                self._usage[(job_id, task_id)] = usage

    def drop_usage(self, job_id: str, task_id: str) -> None:
        with self._lock:
            self._usage.pop((job_id, task_id), None)

    def put_job(self, job: JobState) -> None:
        """Save and publish a job. A change of its running duration alone (every discovery
        of a running job) is published without a write: it is re-read at the next one."""
        with self._lock:
            old = self._jobs.get(job.id)
            if old == job:
                return
            if old is not None and replace(old, duration=job.duration) == job:
                self._jobs[job.id] = job
                return
        self._write("INSERT OR REPLACE INTO jobs VALUES (?, ?)", (job.id, encode_job(job)))
        with self._lock:
            self._jobs[job.id] = job

    def remove_job(self, job_id: str) -> None:
        """Forget a job: its series disappear, its state is deleted."""
        with self._lock:
            self._jobs.pop(job_id, None)
            self._events.pop(job_id, None)
            for key in [k for k in self._tasks if k[0] == job_id]:
                del self._tasks[key]
            for key in [k for k in self._usage if k[0] == job_id]:
                del self._usage[key]
        self._write_many(
            [
                ("DELETE FROM jobs WHERE job_id=?", (job_id,)),
                ("DELETE FROM tasks WHERE job_id=?", (job_id,)),
                ("DELETE FROM events WHERE job_id=?", (job_id,)),
            ]
        )

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        self._write_many([(sql, args)])

    def _write_many(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        if self.path is None:
            return
        with self._lock:
            if self._db is None:
                raise StateError("state file is closed")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except sqlite3.Error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if self._on_save:
                    self._on_save(False)
                raise
        if self._on_save:
            self._on_save(True)
