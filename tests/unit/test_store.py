"""The store: what is committed survives a restart; bad state files are moved aside."""

from __future__ import annotations

import math
import sqlite3
import stat
from pathlib import Path

import pytest

from modelarts_exporter.cursor import CursorState
from modelarts_exporter.store import (
    JobState,
    StateError,
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


def test_undecodable_rows_are_moved_aside_not_a_crash_loop(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.open()
    store.put_job(JobState("job-1", "train", "Running"))
    store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE jobs SET data='{\"broken\": true}'")
    db.commit()
    db.close()
    again = Store(path)
    again.open()
    assert again.snapshot().jobs == {}
    again.close()


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
