"""The store: what is committed survives a restart; bad state files are moved aside."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import stat
from pathlib import Path

import pytest

from modelarts_exporter.cursor import CursorState
from modelarts_exporter.store import (
    JobState,
    StateError,
    StateLocked,
    Store,
    TaskState,
    decode_task,
    encode_task,
)


def _task() -> TaskState:
    return TaskState(
        "job-1",
        "worker-0",
        cursor=CursorState(True, 120, 2, b"tail \xe4\xb8\xad\n", b"pend\xff", False, 130),
        processed_bytes=100.0,
        skipped_bytes=20.0,
        resets=1.0,
        lines=7.0,
        errors={"cuda_oom": 1.0},
        warnings={"nan_grad": 2.0},
        exit_code=137.0,
        loss=math.nan,
        step=10.0,
        epoch=None,
        gauges={("modelarts_task_rank_tokens_per_second", (("rank", "0"),)): (1520.5, "tps")},
        counters={("modelarts_task_samples", ()): (64.0, "samples")},
        log_size=130.0,
        window_bytes=130.0,
        last_growth=1700000000.5,
        up=True,
        last_poll=1700000001.0,
        final_done=False,
        failures=0,
    )


def _same(a: TaskState, b: TaskState) -> bool:
    """Equality with NaN == NaN."""
    return encode_task(a) == encode_task(b)


def test_task_round_trips_through_json() -> None:
    task = _task()
    back = decode_task(encode_task(task))
    assert _same(back, task)
    assert back.cursor == task.cursor
    assert math.isnan(back.loss or 0.0)


def test_committed_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.open()
    store.put_job(JobState("job-1", "train", "Running", ("worker-0",)))
    store.commit(_task())
    store.close()

    again = Store(path)
    again.open()
    snapshot = again.snapshot()
    assert snapshot.jobs == {"job-1": JobState("job-1", "train", "Running", ("worker-0",))}
    assert _same(snapshot.tasks[("job-1", "worker-0")], _task())
    again.close()


def test_state_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.db"
    store = Store(path)
    store.open()
    store.put_job(JobState("job-1", "train", "Running"))
    store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_task_of_an_unknown_job_is_not_saved(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.open()
    store.commit(_task())
    assert store.snapshot().tasks == {}
    store.close()


def test_removing_a_job_drops_its_tasks_on_disk_too(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.open()
    store.put_job(JobState("job-1", "train", "Running"))
    store.commit(_task())
    store.remove_job("job-1")
    store.close()
    again = Store(path)
    again.open()
    assert again.snapshot().tasks == {}
    assert again.snapshot().jobs == {}
    again.close()


def test_corrupt_state_file_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    store = Store(path, clock=lambda: 0.0)
    store.open()
    store.put_job(JobState("job-1", "train", "Running"))
    store.close()
    aside = tmp_path / "state.db.unusable-19700101T000000"
    assert aside.read_bytes().startswith(b"this is not a database")
    assert "unusable" in caplog.text
    assert "moved it to" in caplog.text


def test_state_of_another_schema_version_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    db.commit()
    db.close()
    store = Store(path, clock=lambda: 0.0)
    store.open()
    assert store.snapshot().jobs == {}
    store.close()
    assert (tmp_path / "state.db.unusable-19700101T000000").exists()


def test_undecodable_rows_are_rejected_not_a_crash_loop(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.open()
    store.put_job(JobState("job-1", "train", "Running"))
    store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE jobs SET data='{\"broken\": true}'")
    db.commit()
    db.close()
    for _ in range(2):  # rejected once; the row no longer comes back
        again = Store(path)
        again.open()
        assert again.snapshot().jobs == {}
        again.close()
    assert list(tmp_path.glob("state.db.unusable-*")) == []


def test_saves_are_reported(tmp_path: Path) -> None:
    results: list[bool] = []
    store = Store(tmp_path / "state.db", on_save=results.append)
    store.open()
    store.put_job(JobState("job-1", "train", "Running"))
    store.put_job(JobState("job-1", "train", "Running"))  # unchanged: no write
    store.commit(_task())
    store.close()
    assert results == [True, True]


def test_memory_only_store_needs_no_file() -> None:
    store = Store(None)
    store.open()
    store.put_job(JobState("job-1", "train", "Running"))
    store.commit(_task())
    assert ("job-1", "worker-0") in store.snapshot().tasks
    store.close()


def test_one_state_file_serves_one_exporter(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = Store(path)
    first.open()
    second = Store(path)
    with pytest.raises(StateError, match="another running exporter"):
        second.open()
    first.close()
    second.open()  # free again
    second.close()


def test_a_row_sqlite_cannot_store_never_poisons_the_next_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lone surrogate in an id (valid JSON from the API) cannot be written: that row is
    refused and counted, the transaction is rolled back, and the next write works."""
    path = tmp_path / "state.db"
    results: list[bool] = []
    rejected: list[str] = []
    store = Store(path, on_save=results.append, on_rejected=rejected.append)
    store.open()
    store.put_job(JobState("bad\ud800", "train", "Running", ("worker-0",)))
    store.put_job(JobState("job-1", "train", "Running", ("worker-0",)))
    store.commit(_task())
    assert store.flush()
    store.close()
    assert rejected == ["job"]
    assert results.count(False) == 0
    assert "cannot save the job" in caplog.text
    again = Store(path)
    again.open()
    assert set(again.snapshot().jobs) == {"job-1"}
    assert _same(again.snapshot().tasks[("job-1", "worker-0")], _task())
    again.close()


# --- issue 10, item 5: a healthy state file is never thrown away -------------------------


def _two_tasks(path: Path) -> None:
    store = Store(path)
    store.open()
    store.put_job(JobState("job-1", "train", "Running", ("worker-0", "worker-1")))
    store.commit(_task())
    store.commit(TaskState("job-1", "worker-1", processed_bytes=5.0, lines=1.0))
    store.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("processed_bytes", '"12"'),
        ("lines", "-1"),
        ("errors", '["cuda_oom"]'),
        ("up", '"yes"'),
        ("cursor", '{"started": true}'),
        ("gauges", '[["m", [["rank"]], 1.0, "r"]]'),
    ],
)
def test_a_row_of_the_wrong_type_is_rejected_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, field: str, value: str
) -> None:
    path = tmp_path / "state.db"
    _two_tasks(path)
    db = sqlite3.connect(path)
    [text] = db.execute("SELECT data FROM tasks WHERE task_id='worker-0'").fetchone()
    data = json.loads(text)
    data[field] = json.loads(value)
    db.execute("UPDATE tasks SET data=? WHERE task_id='worker-0'", (json.dumps(data),))
    db.commit()
    db.close()
    rejected: list[str] = []
    store = Store(path, on_rejected=rejected.append)
    store.open()
    tasks = store.snapshot().tasks
    assert set(tasks) == {("job-1", "worker-1")}  # worker-0 starts afresh
    assert tasks[("job-1", "worker-1")].processed_bytes == 5.0
    assert set(store.snapshot().jobs) == {"job-1"}
    store.close()
    assert rejected == ["task"]
    assert f"field {field}" in caplog.text
    assert list(tmp_path.glob("state.db.unusable-*")) == []
    db = sqlite3.connect(path)
    assert db.execute("SELECT kind, row_key FROM rejected").fetchall() == [
        ("task", "('job-1', 'worker-0')")
    ]
    db.close()


def test_a_state_file_locked_by_another_program_is_refused_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _two_tasks(path)
    before = path.read_bytes()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO meta VALUES ('other', 'program')")
    try:
        store = Store(path)
        with pytest.raises(StateError) as info:
            store.open()
        assert "locked by another program" in str(info.value)
        assert "\n" not in str(info.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "unusable" in p.name) == []
    assert path.read_bytes() == before
    again = Store(path)  # the refused start left no lock behind
    again.open()
    assert set(again.snapshot().tasks) == {("job-1", "worker-0"), ("job-1", "worker-1")}
    again.close()


def test_a_full_disk_keeps_going_from_memory_and_saves_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's max_page_count makes writes fail with SQLITE_FULL, as a full disk does."""
    caplog.set_level(logging.INFO, logger="exporter")
    path = tmp_path / "state.db"
    results: list[bool] = []
    store = Store(path, on_save=results.append)
    store.open()
    store.put_job(JobState("job-1", "train", "Running", ("worker-0",)))
    store.commit(_task())
    db = store._file._db  # type: ignore[union-attr]
    assert db is not None
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")
    bigger = TaskState("job-1", "worker-0", processed_bytes=500.0, rule_context={"x": "y" * 20000})
    store.commit(bigger)  # does not raise: memory goes on
    assert results[-1] is False
    assert store.snapshot().tasks[("job-1", "worker-0")].processed_bytes == 500.0
    assert store.unsaved == 1
    assert not store.flush()  # still full
    assert "cannot be written" in caplog.text
    # What was saved before is still there, untouched.
    reader = sqlite3.connect(path)
    saved = reader.execute("SELECT data FROM tasks").fetchone()[0]
    reader.close()
    assert decode_task(saved).processed_bytes == 100.0
    db.execute("PRAGMA max_page_count=1073741823")  # space again
    assert store.flush()
    assert store.unsaved == 0
    assert results[-1] is True
    assert "written again" in caplog.text
    store.close()
    again = Store(path)
    again.open()
    assert again.snapshot().tasks[("job-1", "worker-0")].processed_bytes == 500.0
    again.close()
    assert list(tmp_path.glob("state.db.unusable-*")) == []


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_state_file_deleted_or_replaced_while_running_is_written_anew(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.open()
    store.put_job(JobState("job-1", "train", "Running", ("worker-0",)))
    store.commit(_task())
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        other = tmp_path / "other"
        other.write_bytes(b"someone else's file")
        other.replace(path)
    assert store.flush()
    assert f"was {how} while in use" in caplog.text
    store.put_job(JobState("job-2", "more", "Running"))
    store.close()
    again = Store(path)
    again.open()
    assert set(again.snapshot().jobs) == {"job-1", "job-2"}
    assert _same(again.snapshot().tasks[("job-1", "worker-0")], _task())
    again.close()
    if how == "replaced":
        [aside] = tmp_path.glob("state.db.replaced-*")
        assert aside.read_bytes() == b"someone else's file"


@pytest.mark.parametrize("alias", ["symlink", "hardlink", "dotdot"])
def test_one_state_file_serves_one_exporter_whatever_the_path(tmp_path: Path, alias: str) -> None:
    path = tmp_path / "state.db"
    first = Store(path)
    first.open()
    other = tmp_path / "other.db"
    if alias == "symlink":
        other.symlink_to(path)
    elif alias == "hardlink":
        other.hardlink_to(path)
    else:
        (tmp_path / "sub").mkdir()
        other = tmp_path / "sub" / ".." / "state.db"
    second = Store(other)
    with pytest.raises(StateLocked, match="another running exporter"):
        second.open()
    first.close()
