"""Counters, last values and cursors of every watched task; saved to SQLite.

The store holds one immutable ``TaskState`` per task and one ``JobState`` per job. A poll
builds a new ``TaskState`` and ``commit``s it: the row is written to the state file in
one transaction first, and only then published to scrapes. So a counter Prometheus has
seen is always on disk: a crash at any moment loses at most the poll in flight, which
the next run redoes from the saved cursor (nothing is counted twice, no counter goes
down across a restart).

The state file (``state.path``) is SQLite in WAL mode, created with mode 0600. It holds
cursors (with the last bytes before each cursor and the held-back unfinished line),
counters and last values, and the jobs' names and phases; never credentials. A file
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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .cursor import CursorState
from .evidence import MarkerLine, decode_line, decode_marker_lines, encode_line, encode_marker_lines

log = logging.getLogger("exporter.store")

SCHEMA_VERSION = 1
"""Version 1 files of earlier releases lack ``marker_lines`` and ``exit_line`` (tasks
load without them: new keys of a task row are optional, unknown ones are ignored), so
the version stays 1 and files move freely between releases."""

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]


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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a scrape reads: a consistent view of every job and task."""

    jobs: Mapping[str, JobState]
    tasks: Mapping[tuple[str, str], TaskState]


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
            jobs = {job_id: decode_job(data) for job_id, data in db.execute("SELECT * FROM jobs")}
            tasks = {
                (job_id, task_id): decode_task(data)
                for job_id, task_id, data in db.execute("SELECT * FROM tasks")
            }
        except BaseException:
            db.close()
            raise
        os.chmod(path, 0o600)
        self._db = db
        self._jobs, self._tasks = jobs, tasks
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
            return Snapshot(dict(self._jobs), dict(self._tasks))

    def jobs(self) -> dict[str, JobState]:
        with self._lock:
            return dict(self._jobs)

    def task(self, job_id: str, task_id: str) -> TaskState:
        with self._lock:
            return self._tasks.get((job_id, task_id)) or TaskState(job_id, task_id)

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

    def put_job(self, job: JobState) -> None:
        with self._lock:
            if self._jobs.get(job.id) == job:
                return
        self._write("INSERT OR REPLACE INTO jobs VALUES (?, ?)", (job.id, encode_job(job)))
        with self._lock:
            self._jobs[job.id] = job

    def remove_job(self, job_id: str) -> None:
        """Forget a job: its series disappear, its state is deleted."""
        with self._lock:
            self._jobs.pop(job_id, None)
            for key in [k for k in self._tasks if k[0] == job_id]:
                del self._tasks[key]
        self._write_many(
            [
                ("DELETE FROM jobs WHERE job_id=?", (job_id,)),
                ("DELETE FROM tasks WHERE job_id=?", (job_id,)),
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
