"""Counters, last values and cursors of every watched task; saved to SQLite.

The store holds one immutable ``TaskState`` per task and one ``JobState`` per job. A poll
builds a new ``TaskState`` and ``commit``s it: the row is written to the state file in
one transaction first, and only then published to scrapes. So while the disk works, a
counter Prometheus has seen is on disk: a crash loses at most the poll in flight, which
the next run redoes from the saved cursor (nothing is counted twice, no counter goes
down across a restart).

When a write fails (a full disk, an I/O error, another program locking the file), the
exporter goes on from memory: the new state is published, the rows that could not be
written are kept, and ``flush`` (at the end of every cycle, and at shutdown) writes them
again until it works. Failures are counted (``on_save(False)``) and logged once when
they start and once when saving works again. A crash while saves fail loses what was
not saved: those lines are counted again after the restart.

The state file (``state.path``, see ``statefile``) holds cursors (with the last bytes
before each cursor and the held-back unfinished line), counters and last values, the
jobs' names, phases and restarts, per job the events cursor with the event counts and
latest Error events (redacted), and the ids of jobs that ended and expired (so that a
job the API keeps listing is not exported again with its counters from zero); never
credentials. Task metrics (utilisation) stay in memory: they are re-read within a
minute. Only a file that is corrupt or of another version is moved aside; a row
that is not what this version writes is rejected alone (its task starts afresh, the row
is kept in the file's ``rejected`` table); a file deleted or replaced while in use is
written anew from memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .events import JobEvents
from .modelarts.types import JobEvent
from .statecodec import (
    RowError,
    decode_cursor,
    decode_job,
    decode_job_events,
    decode_task,
    encode_cursor,
    encode_events,
    encode_job,
    encode_task,
)
from .statefile import (
    SCHEMA_VERSION,
    RowRejected,
    Rows,
    StateError,
    StateFile,
    StateLocked,
    Statement,
    StateUnusable,
    WriteFailed,
)
from .statetypes import (
    LOSS_VALUES,
    LOSS_VALUES_COUNT,
    LOSS_VALUES_SUM,
    JobState,
    Labels,
    SeriesKey,
    Snapshot,
    TaskState,
    TaskUsage,
)

__all__ = [
    "LOSS_VALUES",
    "LOSS_VALUES_COUNT",
    "LOSS_VALUES_SUM",
    "SCHEMA_VERSION",
    "JobState",
    "Labels",
    "SeriesKey",
    "Snapshot",
    "StateError",
    "StateLocked",
    "Store",
    "TaskState",
    "TaskUsage",
    "decode_cursor",
    "decode_job",
    "decode_task",
    "encode_cursor",
    "encode_job",
    "encode_task",
]

log = logging.getLogger("exporter.store")

EXPIRED_LIMIT = 10_000
"""How many expired job ids are remembered (the oldest are forgotten first)."""

TaskKey = tuple[str, str]

_PUT_TASK = "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?)"
_PUT_JOB = "INSERT OR REPLACE INTO jobs VALUES (?, ?)"
_PUT_EXPIRED = "INSERT OR REPLACE INTO expired VALUES (?, ?)"
_PUT_EVENTS = "INSERT OR REPLACE INTO events VALUES (?, ?)"
_FORGET_EXPIRED = "DELETE FROM expired WHERE job_id=?"


class Store:
    """Jobs and tasks in memory, mirrored to SQLite (``path``) or memory only (None).

    Thread-safe: pollers commit concurrently, scrapes take snapshots. A snapshot only
    copies two dicts under a lock that no disk write holds.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        clock: Callable[[], float] = time.time,
        on_save: Callable[[bool], None] | None = None,
        on_rejected: Callable[[str], None] | None = None,
        expired_limit: int = EXPIRED_LIMIT,
    ) -> None:
        """``on_save(ok)`` is called for every write of the state file;
        ``on_rejected(kind)`` for every row (``job``, ``task``) rejected at load or write."""
        self.path = path
        self._file = StateFile(path, clock=clock) if path is not None else None
        self._clock = clock
        self._on_save = on_save
        self._on_rejected = on_rejected
        self._expired_limit = expired_limit
        self._lock = threading.Lock()
        """Guards memory; held only for dict operations, never across I/O."""
        self._write_lock = threading.RLock()
        """Guards the file and the unsaved rows; a commit holds it from write to publish."""
        self._jobs: dict[str, JobState] = {}
        self._tasks: dict[TaskKey, TaskState] = {}
        self._events: dict[str, JobEvents] = {}
        self._usage: dict[TaskKey, TaskUsage] = {}
        self._expired: OrderedDict[str, float] = OrderedDict()
        self._version = 0
        self._unsaved_jobs: set[str] = set()
        self._unsaved_tasks: set[TaskKey] = set()
        self._unsaved_events: set[str] = set()
        self._removed_jobs: set[str] = set()
        self._unsaved_expired: set[str] = set()
        self._everything = False
        """Every row in memory must be written (the file is new)."""
        self._failing: str | None = None
        """Why writes fail, while they do."""
        self._opened = False

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the state file and load it.

        Raises StateError: StateLocked when another exporter or program holds the file,
        StateError when it can neither be read nor moved aside.
        """
        if self._file is None:
            return
        file = self._file
        file.lock()
        try:
            try:
                rows = file.open()
            except StateUnusable as exc:
                aside = file.move_aside(str(exc))
                log.warning(
                    "state file %s unusable (%s); moved it to %s and starting afresh",
                    file.path,
                    exc,
                    aside,
                )
                rows = file.open()
        except WriteFailed as exc:
            if _has_data(file.path):
                file.close()
                raise StateError(f"cannot read it: {exc}") from None
            self._fail(str(exc))
            self._everything = True
            self._opened = True
            return
        except BaseException:
            file.close()
            raise
        self._load(*rows)
        self._opened = True

    def _load(self, job_rows: Rows, task_rows: Rows, expired_rows: Rows, event_rows: Rows) -> None:
        jobs: dict[str, JobState] = {}
        tasks: dict[TaskKey, TaskState] = {}
        events: dict[str, JobEvents] = {}
        rejected: list[tuple[str, tuple[Any, ...], Any, str]] = []
        for job_id, data in job_rows:
            try:
                jobs[job_id] = decode_job(data, job_id)
            except (RowError, TypeError, ValueError) as exc:
                rejected.append(("job", (job_id,), data, str(exc)))
        for job_id, task_id, data in task_rows:
            try:
                tasks[(job_id, task_id)] = decode_task(data, (job_id, task_id))
            except (RowError, TypeError, ValueError) as exc:
                rejected.append(("task", (job_id, task_id), data, str(exc)))
        for job_id, data in event_rows:
            try:
                if not isinstance(job_id, str) or not isinstance(data, str):
                    raise RowError("its key or data is not text")
                events[job_id] = decode_job_events(job_id, data)
            except RowError as exc:
                rejected.append(("events", (job_id,), data, str(exc)))
        expired = OrderedDict(
            (job_id, float(at))
            for job_id, at in expired_rows
            if isinstance(job_id, str) and isinstance(at, int | float)
        )
        with self._lock:
            self._jobs, self._tasks, self._expired = jobs, tasks, expired
            self._events = events
            self._version += 1
        for kind, key, data, reason in rejected:
            self._reject_loaded(kind, key, data, reason)
        if jobs:
            log.info(
                "state loaded from %s: %d jobs, %d tasks", self._path_text(), len(jobs), len(tasks)
            )

    def _reject_loaded(self, kind: str, key: tuple[Any, ...], data: Any, reason: str) -> None:
        """A row that is not what this version writes: that task (or job) starts afresh.
        The row moves to the file's ``rejected`` table, for a person to look at."""
        shown = key if kind == "task" else key[0]
        log.warning(
            "state file %s: the saved %s %r is unusable (%s); it starts afresh (the row is "
            "kept in the table 'rejected')",
            self._path_text(),
            kind,
            shown,
            reason,
        )
        if self._on_rejected:
            self._on_rejected(kind)
        if self._file is None:
            return
        text = data if isinstance(data, str) else repr(data)
        delete: Statement = {
            "task": ("DELETE FROM tasks WHERE job_id IS ? AND task_id IS ?", key),
            "job": ("DELETE FROM jobs WHERE job_id IS ?", key),
            "events": ("DELETE FROM events WHERE job_id IS ?", key),
        }[kind]
        try:
            self._file.write(
                [
                    (
                        "INSERT INTO rejected VALUES (?, ?, ?, ?, ?)",
                        (self._clock(), kind, repr(shown), text, reason),
                    ),
                    delete,
                ]
            )
        except StateError as exc:
            log.debug("could not move the rejected row: %s", exc)

    def close(self) -> None:
        """Write what is unsaved, then close the file and release its locks."""
        if self._file is None or not self._opened:
            return
        with self._write_lock:
            self._opened = False
            if not self._flush():
                log.error(
                    "state file %s: %d changes could not be saved before stopping (%s)",
                    self._path_text(),
                    self.unsaved,
                    self._failing,
                )
            self._file.close()

    # --- reads ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                dict(self._jobs), dict(self._tasks), dict(self._events), dict(self._usage)
            )

    @property
    def version(self) -> int:
        """Changes whenever what ``snapshot`` returns may have changed."""
        with self._lock:
            return self._version

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

    def is_expired(self, job_id: str) -> bool:
        """Whether the job ended, was exported for its grace period and was dropped."""
        with self._lock:
            return job_id in self._expired

    @property
    def unsaved(self) -> int:
        """Changes in memory that are not in the state file yet."""
        with self._write_lock:
            if self._everything:
                with self._lock:
                    return (
                        len(self._jobs) + len(self._tasks) + len(self._events) + len(self._expired)
                    )
            return (
                len(self._unsaved_jobs)
                + len(self._unsaved_tasks)
                + len(self._unsaved_events)
                + len(self._removed_jobs)
                + len(self._unsaved_expired)
            )

    # --- writes: disk first, then memory ----------------------------------------------------

    def commit(self, task: TaskState) -> None:
        """Save one task's new state, then publish it (unless its job was dropped)."""
        key = (task.job_id, task.task_id)
        with self._write_lock:
            with self._lock:
                if task.job_id not in self._jobs:
                    return
            self._save(
                lambda: [(_PUT_TASK, (*key, encode_task(task)))],
                tasks=[key],
            )
            with self._lock:
                if task.job_id in self._jobs:
                    self._tasks[key] = task
                    self._version += 1

    def put_events(self, events: JobEvents) -> None:
        """Save a job's event counts and cursor together, then publish them (unless the
        job was dropped meanwhile)."""
        with self._write_lock:
            with self._lock:
                if events.job_id not in self._jobs:
                    return
            self._save(
                lambda: [(_PUT_EVENTS, (events.job_id, encode_events(events)))],
                events=[events.job_id],
            )
            with self._lock:
                if events.job_id in self._jobs:
                    self._events[events.job_id] = events
                    self._version += 1

    def put_usage(self, job_id: str, task_id: str, usage: TaskUsage) -> None:
        """Publish a task's latest metrics (memory only: they are re-read within a minute)."""
        with self._lock:
            if job_id in self._jobs:
                self._usage[(job_id, task_id)] = usage
                self._version += 1

    def drop_usage(self, job_id: str, task_id: str) -> None:
        with self._lock:
            if self._usage.pop((job_id, task_id), None) is not None:
                self._version += 1

    def put_job(self, job: JobState) -> None:
        """Save and publish a job (it is no longer expired, if it was). A change of its
        running duration alone (every discovery of a running job) is published without a
        write: it is re-read at the next one."""
        with self._write_lock:
            with self._lock:
                old = self._jobs.get(job.id)
                if old == job:
                    return
                if old is not None and replace(old, duration=job.duration) == job:
                    self._jobs[job.id] = job
                    self._version += 1
                    return
                was_expired = job.id in self._expired

            def statements() -> list[Statement]:
                out: list[Statement] = [(_PUT_JOB, (job.id, encode_job(job)))]
                if was_expired:
                    out.append((_FORGET_EXPIRED, (job.id,)))
                return out

            self._save(statements, jobs=[job.id], expired=[job.id] if was_expired else [])
            with self._lock:
                self._jobs[job.id] = job
                self._expired.pop(job.id, None)
                self._version += 1

    def remove_job(self, job_id: str, *, expired_at: float | None = None) -> None:
        """Forget a job: its series disappear, its state is deleted. With ``expired_at``,
        remember that it expired (``is_expired``), bounded to the latest ids."""
        with self._write_lock:
            pruned: list[str] = []
            with self._lock:
                self._jobs.pop(job_id, None)
                self._events.pop(job_id, None)
                for key in [k for k in self._tasks if k[0] == job_id]:
                    del self._tasks[key]
                for key in [k for k in self._usage if k[0] == job_id]:
                    del self._usage[key]
                if expired_at is not None:
                    self._expired[job_id] = expired_at
                    self._expired.move_to_end(job_id)
                    while len(self._expired) > self._expired_limit:
                        pruned.append(self._expired.popitem(last=False)[0])
                self._version += 1

            def statements() -> list[Statement]:
                out: list[Statement] = [
                    ("DELETE FROM jobs WHERE job_id=?", (job_id,)),
                    ("DELETE FROM tasks WHERE job_id=?", (job_id,)),
                    ("DELETE FROM events WHERE job_id=?", (job_id,)),
                ]
                if expired_at is not None:
                    out.append((_PUT_EXPIRED, (job_id, expired_at)))
                out.extend((_FORGET_EXPIRED, (old,)) for old in pruned)
                return out

            changed = [job_id, *pruned] if expired_at is not None else pruned
            self._save(statements, removed=[job_id], expired=changed)

    def flush(self) -> bool:
        """Write what earlier writes could not, and notice a state file that was deleted or
        replaced (it is written anew from memory). True when memory is all on disk."""
        with self._write_lock:
            return self._flush() if self._opened else True

    def _flush(self) -> bool:
        file = self._file
        if file is None:
            return True
        with self._write_lock:
            change = file.changed()
            if change is not None:
                try:
                    aside = file.recreate(change)
                except StateError as exc:
                    self._fail(str(exc))
                    return False
                log.warning(
                    "state file %s was %s while in use%s: writing it anew from memory",
                    self._path_text(),
                    change,
                    f" (the new file was moved to {aside})" if aside else "",
                )
                self._everything = True
            if not file.is_open and not self._reopen(file):
                return False
            for _ in range(100):  # each round drops one row that cannot be stored
                statements, owners = self._unsaved_statements()
                if not statements:
                    return True
                try:
                    file.write(statements)
                except RowRejected as exc:
                    self._drop_row(owners[exc.index], str(exc))
                    continue
                except WriteFailed as exc:
                    self._fail(str(exc))
                    return False
                self._saved_all()
                return True
            return False

    # --- saving -------------------------------------------------------------------------------

    def _save(
        self,
        statements: Callable[[], list[Statement]],
        *,
        jobs: Iterable[str] = (),
        tasks: Iterable[TaskKey] = (),
        removed: Iterable[str] = (),
        expired: Iterable[str] = (),
        events: Iterable[str] = (),
    ) -> None:
        """Write now, or remember the rows as unsaved (retried by ``flush``)."""
        file = self._file
        if file is None:
            return
        if self._failing is None and file.is_open and not self._everything:
            try:
                file.write(statements())
            except RowRejected as exc:
                self._drop_row(_owner(jobs, tasks, removed, events), str(exc))
                return
            except (WriteFailed, ValueError, TypeError) as exc:
                self._fail(str(exc))
            else:
                self._report(ok=True)
                return
        self._unsaved_jobs.update(jobs)
        self._unsaved_tasks.update(tasks)
        self._unsaved_events.update(events)
        self._removed_jobs.update(removed)
        self._unsaved_expired.update(expired)

    def _unsaved_statements(self) -> tuple[list[Statement], list[str]]:
        """What ``flush`` writes, and for each statement the row it belongs to."""
        statements: list[Statement] = []
        owners: list[str] = []

        def add(statement: Statement, owner: str) -> None:
            statements.append(statement)
            owners.append(owner)

        with self._lock:
            if self._everything:
                jobs: Collection[str] = set(self._jobs)
                tasks: Collection[TaskKey] = set(self._tasks)
                events: Collection[str] = set(self._events)
                expired: Collection[str] = set(self._expired)
                removed: Collection[str] = ()
            else:
                jobs, tasks = set(self._unsaved_jobs), set(self._unsaved_tasks)
                events = set(self._unsaved_events)
                expired, removed = set(self._unsaved_expired), set(self._removed_jobs)
            for job_id in removed:
                add(("DELETE FROM jobs WHERE job_id=?", (job_id,)), f"job:{job_id}")
                add(("DELETE FROM tasks WHERE job_id=?", (job_id,)), f"job:{job_id}")
                add(("DELETE FROM events WHERE job_id=?", (job_id,)), f"job:{job_id}")
            for job_id in jobs:
                job = self._jobs.get(job_id)
                if job is not None:
                    add(
                        (_PUT_JOB, (job_id, encode_job(job))),
                        f"job:{job_id}",
                    )
            for key in tasks:
                task = self._tasks.get(key)
                if task is not None and key[0] in self._jobs:
                    add(
                        (
                            _PUT_TASK,
                            (*key, encode_task(task)),
                        ),
                        f"task:{key[0]}\0{key[1]}",
                    )
            for job_id in events:
                kept = self._events.get(job_id)
                if kept is not None and job_id in self._jobs:
                    add((_PUT_EVENTS, (job_id, encode_events(kept))), f"events:{job_id}")
            for job_id in expired:
                at = self._expired.get(job_id)
                if at is None:
                    add((_FORGET_EXPIRED, (job_id,)), f"expired:{job_id}")
                else:
                    add(
                        (_PUT_EXPIRED, (job_id, at)),
                        f"expired:{job_id}",
                    )
        return statements, owners

    def _drop_row(self, owner: str, reason: str) -> None:
        """A row SQLite cannot store (text it cannot encode): never retried."""
        kind, _, key = owner.partition(":")
        log.warning(
            "state: cannot save the %s %r (%s); it is kept in memory only", kind, key, reason
        )
        if self._on_rejected:
            self._on_rejected(kind)
        if kind == "task":
            job_id, _, task_id = key.partition("\0")
            self._unsaved_tasks.discard((job_id, task_id))
            if self._everything:
                with self._lock:
                    self._tasks.pop((job_id, task_id), None)
        elif kind == "events":
            self._unsaved_events.discard(key)
            if self._everything:
                with self._lock:
                    self._events.pop(key, None)
        elif kind == "job":
            self._unsaved_jobs.discard(key)
            self._removed_jobs.discard(key)
            if self._everything:
                with self._lock:
                    self._jobs.pop(key, None)
        else:
            self._unsaved_expired.discard(key)
            with self._lock:
                self._expired.pop(key, None)

    def _saved_all(self) -> None:
        self._unsaved_jobs.clear()
        self._unsaved_tasks.clear()
        self._unsaved_events.clear()
        self._removed_jobs.clear()
        self._unsaved_expired.clear()
        self._everything = False
        if self._failing is not None:
            log.info("state file %s is written again: everything is saved", self._path_text())
            self._failing = None
        self._report(ok=True)

    def _reopen(self, file: StateFile) -> bool:
        """Open the state file again after it was deleted, replaced or never set up."""
        try:
            file.open()
        except StateUnusable as exc:
            try:
                file.move_aside(str(exc))
            except StateError as aside_exc:
                self._fail(str(aside_exc))
            else:
                self._fail(str(exc))
            return False
        except StateError as exc:
            self._fail(str(exc))
            return False
        self._everything = True
        return True

    def _fail(self, reason: str) -> None:
        self._report(ok=False)
        if self._failing is None:
            log.error(
                "state file %s cannot be written (%s): going on from memory and trying again "
                "every cycle; a crash now would count again what was not saved",
                self._path_text(),
                reason,
            )
        self._failing = reason

    def _report(self, *, ok: bool) -> None:
        if self._on_save:
            self._on_save(ok)

    def _path_text(self) -> str:
        return str(self._file.path if self._file is not None else self.path)


def _owner(
    jobs: Iterable[str], tasks: Iterable[TaskKey], removed: Iterable[str], events: Iterable[str]
) -> str:
    for job_id, task_id in tasks:
        return f"task:{job_id}\0{task_id}"
    for job_id in events:
        return f"events:{job_id}"
    for job_id in (*jobs, *removed):
        return f"job:{job_id}"
    return "expired:"


def _has_data(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
