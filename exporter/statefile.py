"""The state file on disk: SQLite in WAL mode, private (0600), one exporter at a time.

What goes wrong with a state file, and what this module makes of it:

* **another exporter uses it**: two locks are held while the file is open, ``<file>.lock``
  next to the *resolved* path (so a symlink or a relative path to the same file finds the
  same lock) and a lock on the file itself (so does a hard link or a bind mount): a
  second exporter gets ``StateLocked``.
* **another program locks it** (SQLite's "database is locked"): ``StateLocked`` too; the
  file is never touched.
* **it is corrupt, not SQLite, or written by another schema version**: ``StateUnusable``;
  the store moves it aside and starts afresh.
* **a write fails** (a full disk, an I/O error): ``WriteFailed``; nothing is half
  written (every write is one transaction, always rolled back when it fails), and the
  store keeps the rows to write again later.
* **a row cannot be written** (text SQLite cannot encode): ``RowRejected``; the other
  rows of the same write are written.
* **it was deleted or replaced while in use**: ``changed()`` says so, and ``recreate``
  moves a replacement aside and makes a new file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("exporter.store")

SCHEMA_VERSION = 1

BUSY_TIMEOUT_SECONDS = 1.0
"""How long a write waits for another program's lock before it counts as failed."""

_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_LOCKED = ("SQLITE_BUSY", "SQLITE_LOCKED")

Statement = tuple[str, tuple[Any, ...]]
Rows = list[tuple[Any, ...]]


class StateError(Exception):
    """The state file cannot be used; the message says why."""


class StateLocked(StateError):
    """Another exporter, or another program, holds the state file."""


class StateUnusable(StateError):
    """The file is not a state file this version can read (corrupt, other version)."""


class WriteFailed(StateError):
    """A write did not reach the disk (full, I/O error, locked, closed); nothing changed."""


class RowRejected(StateError):
    """One statement's values cannot be stored (text SQLite cannot encode)."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index


def _errorname(exc: BaseException) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


class StateFile:
    """One SQLite state file. Not thread-safe: the store serialises every call."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(os.path.abspath(path)).resolve()
        """The file itself: symlinks and ``..`` resolved."""
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._file_fd: int | None = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    # --- opening -------------------------------------------------------------------

    def lock(self) -> None:
        """Take ``<file>.lock``; StateLocked when another exporter holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(f"in use by another running exporter ({self.path}.lock)") from None
        self._lock_fd = fd

    def open(self) -> tuple[Rows, Rows, Rows, Rows]:
        """Open (creating) the file and read it: (job rows, task rows, expired rows,
        events rows).

        Raises StateLocked, StateUnusable (move it aside), or WriteFailed when the file
        is readable but a new one cannot be set up (a full disk): the caller may go on
        from memory and call ``open`` again later.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created here so the mode is 0600 from the first byte.
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(
                f"in use by another running exporter (through another path to {self.path})"
            ) from None
        self._file_fd = fd
        try:
            db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_SECONDS,
                check_same_thread=False,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            self._release_file()
            raise self._classify(exc) from None
        try:
            rows = self._read(db)
        except BaseException as exc:
            db.close()
            self._release_file()
            if isinstance(exc, sqlite3.Error | OSError):
                raise self._classify(exc) from None
            raise
        self._db = db
        return rows

    def _read(self, db: sqlite3.Connection) -> tuple[Rows, Rows, Rows, Rows]:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise StateUnusable("integrity check failed")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is not None and row[0] != str(SCHEMA_VERSION):
                raise StateUnusable(f"written by schema version {row[0]}, this is {SCHEMA_VERSION}")
        statements = [
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
            "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, data TEXT)",
            "CREATE TABLE IF NOT EXISTS tasks "
            "(job_id TEXT, task_id TEXT, data TEXT, PRIMARY KEY (job_id, task_id))",
            "CREATE TABLE IF NOT EXISTS expired (job_id TEXT PRIMARY KEY, at REAL)",
            # Tables added after schema version 1 without changing it: older files simply
            # lack them, and get them here.
            "CREATE TABLE IF NOT EXISTS events (job_id TEXT PRIMARY KEY, data TEXT)",
            "CREATE TABLE IF NOT EXISTS rejected "
            "(at REAL, kind TEXT, row_key TEXT, data TEXT, reason TEXT)",
        ]
        missing = {"meta", "jobs", "tasks", "expired", "events", "rejected"} - tables
        if missing:
            try:
                db.execute("BEGIN IMMEDIATE")
                for sql in statements:
                    db.execute(sql)
                db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                db.execute("COMMIT")
            except sqlite3.Error:
                _rollback(db)
                raise
        os.chmod(self.path, 0o600)
        return (
            db.execute("SELECT job_id, data FROM jobs").fetchall(),
            db.execute("SELECT job_id, task_id, data FROM tasks").fetchall(),
            db.execute("SELECT job_id, at FROM expired ORDER BY at").fetchall(),
            db.execute("SELECT job_id, data FROM events").fetchall(),
        )

    def _classify(self, exc: BaseException) -> StateError:
        name = _errorname(exc)
        if isinstance(exc, StateError):
            return exc
        if name.startswith(_CORRUPT) or (
            isinstance(exc, sqlite3.DatabaseError) and not name and "not a database" in str(exc)
        ):
            return StateUnusable(str(exc))
        if name.startswith(_LOCKED):
            return StateLocked(f"locked by another program ({exc}); stop it and start again")
        return WriteFailed(str(exc) or type(exc).__name__)

    def move_aside(self, reason: str, kind: str = "unusable") -> Path:
        """Rename the file (and its journal) to ``<file>.<kind>-<time>``; the path is free.

        Raises StateError when it cannot be renamed.
        """
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
        aside = self.path.with_name(f"{self.path.name}.{kind}-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.{kind}-{stamp}-{n}")
        try:
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.rename(Path(f"{aside}{suffix}"))
        except OSError as exc:
            raise StateError(
                f"state file {self.path} is {kind} ({reason}) and cannot be moved aside: {exc}"
            ) from exc
        return aside

    # --- writing -------------------------------------------------------------------

    def write(self, statements: Sequence[Statement]) -> None:
        """Run ``statements`` in one transaction: all or nothing.

        Raises RowRejected (naming the statement) when one statement's values cannot be
        stored, WriteFailed when the write did not reach the disk. Either way the
        transaction is rolled back: the next write starts clean.
        """
        db = self._db
        if db is None:
            raise WriteFailed("the state file is not open")
        index = -1
        try:
            db.execute("BEGIN IMMEDIATE")
            for position, (sql, args) in enumerate(statements):
                index = position
                db.execute(sql, args)
            db.execute("COMMIT")
        except (UnicodeError, ValueError, OverflowError, TypeError, sqlite3.InterfaceError) as exc:
            _rollback(db)
            if index < 0:
                raise WriteFailed(str(exc)) from None
            raise RowRejected(index, f"{type(exc).__name__}: {exc}") from None
        except BaseException as exc:
            _rollback(db)
            if isinstance(exc, sqlite3.Error | OSError):
                raise WriteFailed(str(exc) or type(exc).__name__) from None
            raise

    # --- the file under our feet -----------------------------------------------------

    def changed(self) -> str | None:
        """``"deleted"`` or ``"replaced"`` when the path is no longer the file we opened."""
        if self._file_fd is None:
            return None
        try:
            ours = os.fstat(self._file_fd)
            now = os.stat(self.path)
        except FileNotFoundError:
            return "deleted"
        except OSError:
            return None
        if (now.st_dev, now.st_ino) != (ours.st_dev, ours.st_ino):
            return "replaced"
        return None

    def recreate(self, change: str) -> Path | None:
        """Close the file we had; move a replacement aside; the path is free to ``open``.

        Returns where the replacement went (None when the file was deleted).
        """
        self.close_db()
        for suffix in ("-wal", "-shm"):
            # Our journal, checkpointed into the file that is gone: applied to another
            # database it would corrupt it.
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").unlink()
        if change == "replaced" and self.path.exists():
            return self.move_aside("replaced while in use", kind="replaced")
        return None

    # --- closing ---------------------------------------------------------------------

    def close_db(self) -> None:
        """Close the database (checkpointing its journal) and release the file's lock."""
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._release_file()

    def close(self) -> None:
        self.close_db()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def _release_file(self) -> None:
        # Only after SQLite closed its own descriptors: closing any descriptor of a file
        # drops the process's POSIX locks on it, SQLite's included.
        if self._file_fd is not None:
            os.close(self._file_fd)
            self._file_fd = None


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
