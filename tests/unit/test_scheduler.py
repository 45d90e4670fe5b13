"""The collection cycle: polls, final polls, failures and backoff, without sleeping."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeClock, FakeModelArts
from prometheus_client import CollectorRegistry

from modelarts_exporter.discovery import Discovery, DiscoverySettings
from modelarts_exporter.modelarts.errors import AuthenticationError, ServerError
from modelarts_exporter.modelarts.types import TrainingJob
from modelarts_exporter.rules import RuleSet, load_rules
from modelarts_exporter.scheduler import SUMMARY_EVERY_CYCLES, CollectSettings, Poller
from modelarts_exporter.selfmetrics import SelfMetrics
from modelarts_exporter.store import Store


def running(job_id: str, *tasks: str, phase: str = "Running", now: float) -> TrainingJob:
    return TrainingJob(
        job_id,
        f"name-{job_id}",
        phase,
        tasks or ("worker-0",),
        create_time_ms=int((now - 600) * 1000),
        start_time_ms=int((now - 500) * 1000),
        duration_ms=400_000 if phase != "Running" else 0,
    )


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.api = FakeModelArts()
        self.registry = CollectorRegistry()
        self.metrics = SelfMetrics(self.registry)
        self.store = Store(tmp_path / "state.db", clock=self.clock, on_save=self.metrics.saved)
        self.store.open()
        self.poller = Poller(
            self.api,
            Discovery(self.api, self.store, DiscoverySettings(), clock=self.clock),
            self.store,
            RuleSet(load_rules()),
            self.metrics,
            CollectSettings(interval_seconds=10, discovery_interval_seconds=10, concurrency=4),
            clock=self.clock,
        )

    def task(self, job: str, task: str = "worker-0") -> object:
        return self.store.snapshot().tasks.get((job, task))

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.poller.stop()
    w.store.close()


def test_a_cycle_polls_every_task_and_takes_new_lines_once(world: World) -> None:
    now = world.clock.now
    world.api.jobs["a"] = running("a", "worker-0", "worker-1", now=now)
    world.api.logs[("a", "worker-0")] = b"Traceback (most recent call last):\nhalf"
    world.api.logs[("a", "worker-1")] = b"[Modelarts Service Log]exit with 0\n"
    report = world.poller.run_cycle()
    assert report.polled == 2
    assert world.poller.ready.is_set()
    t0 = world.store.task("a", "worker-0")
    assert t0.errors == {"python_traceback": 1.0}
    assert t0.lines == 1
    assert world.store.task("a", "worker-1").exit_code == 0
    world.clock.advance(10)
    world.api.logs[("a", "worker-0")] += b" line\nTraceback (most recent call last):\n"
    world.poller.run_cycle()
    t0 = world.store.task("a", "worker-0")
    assert t0.errors == {"python_traceback": 2.0}
    assert t0.lines == 3
    assert world.value("modelarts_exporter_polls_total", outcome="continued") == 1.0
    assert world.value("modelarts_exporter_polls_total", outcome="unchanged") == 1.0


def _ended_now(job_id: str, now: float, phase: str = "Failed") -> TrainingJob:
    return TrainingJob(
        job_id,
        f"name-{job_id}",
        phase,
        ("worker-0",),
        create_time_ms=int((now - 120) * 1000),
        start_time_ms=int((now - 60) * 1000),
        duration_ms=60_000,
    )


def test_a_finished_jobs_log_is_read_until_it_stops_growing(world: World) -> None:
    """Issue 10, item 7: the exit code and the OOM came seconds after the phase change."""
    now = world.clock.now
    world.api.jobs["a"] = running("a", now=now)
    world.api.logs[("a", "worker-0")] = b"step 1\n"
    world.poller.run_cycle()
    world.clock.advance(10)
    world.api.jobs["a"] = _ended_now("a", world.clock.now)
    world.poller.run_cycle()  # the log lags the phase: nothing new yet
    assert not world.store.task("a", "worker-0").final_done
    world.api.logs[("a", "worker-0")] += (
        b"RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
        b"[Modelarts Service Log]exit with 137"
    )
    world.clock.advance(10)
    world.poller.run_cycle()  # it grew: not the last poll yet
    task = world.store.task("a", "worker-0")
    assert task.errors.get("cuda_oom") == 1.0
    assert task.exit_code is None  # the unfinished last line waits
    assert not task.final_done
    world.clock.advance(10)
    world.poller.run_cycle()  # no growth since the poll before: the final poll
    task = world.store.task("a", "worker-0")
    assert task.exit_code == 137
    assert task.final_done
    assert task.lines == 3
    calls = len(list(world.api.previews()))
    world.clock.advance(10)
    world.poller.run_cycle()
    assert len(list(world.api.previews())) == calls  # not polled again


def test_a_finished_jobs_log_that_keeps_growing_is_read_for_a_bounded_time(world: World) -> None:
    world.api.jobs["a"] = _ended_now("a", world.clock.now)
    world.api.logs[("a", "worker-0")] = b"step 0\n"
    polls = 0
    while not world.store.task("a", "worker-0").final_done:
        world.poller.run_cycle()
        polls += 1
        world.api.logs[("a", "worker-0")] += b"step %d\n" % polls
        world.clock.advance(10)
        assert polls <= 13
    # final_poll_seconds (120 s by default) after the job ended, polling every 10 s.
    assert polls == 13
    calls = len(list(world.api.previews()))
    world.poller.run_cycle()
    assert len(list(world.api.previews())) == calls


def test_a_job_that_ended_long_ago_gets_one_poll(world: World) -> None:
    now = world.clock.now
    world.api.jobs["a"] = running("a", phase="Completed", now=now - 3 * 60)
    world.api.logs[("a", "worker-0")] = b"step 1\n[Modelarts Service Log]exit with 0"
    world.poller.run_cycle()
    task = world.store.task("a", "worker-0")
    assert task.final_done
    assert task.exit_code == 0


def test_one_failing_task_does_not_stop_the_others_and_backs_off(world: World) -> None:
    now = world.clock.now
    world.api.jobs["a"] = running("a", "worker-0", "worker-1", now=now)
    world.api.logs[("a", "worker-0")] = b"ok\n"
    world.api.logs[("a", "worker-1")] = b"ok\n"
    world.api.fail["preview_log:a/worker-1"] = ServerError("preview_log", "boom", status=503)
    world.poller.run_cycle()
    assert world.store.task("a", "worker-0").up is True
    assert world.store.task("a", "worker-1").up is False
    assert world.value("modelarts_exporter_polls_total", outcome="failed") == 1.0
    # The failed task waits one interval (doubling after each failure); the other is polled.
    world.clock.advance(10)
    world.poller.run_cycle()
    previews = list(world.api.previews())
    assert previews.count("a/worker-1") == 2
    world.clock.advance(10)
    world.poller.run_cycle()
    assert list(world.api.previews()).count("a/worker-1") == 2  # backing off: 20 s now
    del world.api.fail["preview_log:a/worker-1"]
    world.clock.advance(20)
    world.poller.run_cycle()
    assert world.store.task("a", "worker-1").up is True


def test_rejected_credentials_back_off_to_the_maximum(world: World) -> None:
    world.api.jobs["a"] = running("a", now=world.clock.now)
    world.api.fail["preview_log"] = AuthenticationError("preview_log", "bad token", status=401)
    for _ in range(3):
        world.poller.run_cycle()
        world.clock.advance(10)
    assert list(world.api.previews()).count("a/worker-0") == 2


def test_not_ready_logs_and_deleted_jobs(world: World) -> None:
    now = world.clock.now
    world.api.jobs["a"] = running("a", now=now)
    world.api.jobs["b"] = running("b", now=now)
    world.api.logs[("b", "worker-0")] = b"x\n"
    world.poller.run_cycle()
    assert world.store.task("a", "worker-0").up is True
    assert world.store.task("a", "worker-0").log_size is None
    del world.api.jobs["b"]
    world.clock.advance(10)
    world.poller.run_cycle()
    assert "b" not in world.store.jobs()


def test_a_bug_in_one_poll_is_contained(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    now = world.clock.now
    world.api.jobs["a"] = running("a", "worker-0", "worker-1", now=now)
    world.api.logs[("a", "worker-0")] = b"ok\n"
    world.api.logs[("a", "worker-1")] = b"ok\n"
    real = world.api.preview_log

    def broken(job_id: str, task_id: str) -> object:
        if task_id == "worker-1":
            raise RuntimeError("unexpected")
        return real(job_id, task_id)

    monkeypatch.setattr(world.api, "preview_log", broken)
    report = world.poller.run_cycle()
    assert report.failed == 1
    assert world.store.task("a", "worker-0").up is True


def test_a_rejected_credential_pauses_every_preview(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.api.jobs["a"] = running("a", *(f"worker-{n}" for n in range(12)), now=world.clock.now)
    world.api.fail["preview_log"] = AuthenticationError("preview_log", "bad token", status=401)
    for _ in range(4):
        world.poller.run_cycle()
        world.clock.advance(10)
    calls = len(list(world.api.previews()))
    # At most what was in flight when the first rejection came back, per pause.
    assert calls <= 2 * 4
    assert all(task.up is False for task in world.store.snapshot().tasks.values())
    assert "rejected the credentials" in caplog.text


def test_a_full_disk_never_stops_collection_and_the_save_is_retried(
    world: World, tmp_path: Path
) -> None:
    """Issue 10, item 5: writes fail (SQLITE_FULL, as on a full disk); cycles go on from
    memory, failures are counted, and the next cycle with space saves everything."""
    now = world.clock.now
    world.api.jobs["a"] = running("a", now=now)
    world.api.logs[("a", "worker-0")] = b""
    world.poller.run_cycle()
    db = world.store._file._db  # type: ignore[union-attr]
    assert db is not None
    db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")
    for _ in range(3):
        world.clock.advance(10)
        # An unfinished line that grows: the task's row (which holds it) needs new pages.
        world.api.logs[("a", "worker-0")] += b"Traceback (most recent call last):\n" + b"x" * 5000
        report = world.poller.run_cycle()
        assert report.failed == 0
    assert world.store.task("a", "worker-0").errors == {"python_traceback": 3.0}
    assert (world.value("modelarts_exporter_state_save_failures_total") or 0) >= 3
    assert world.value("modelarts_exporter_state_unsaved_changes") == 1.0
    db.execute("PRAGMA max_page_count=1073741823")
    world.clock.advance(10)
    world.poller.run_cycle()
    assert world.value("modelarts_exporter_state_unsaved_changes") == 0.0
    in_memory = world.store.task("a", "worker-0")
    world.poller.stop()
    world.store.close()
    again = Store(tmp_path / "state.db")
    again.open()
    assert again.task("a", "worker-0") == in_memory
    again.close()
    world.store.open()  # for the fixture's close


def test_a_cycle_that_overruns_its_interval_is_not_started_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real scheduling (APScheduler, 0.1 s interval) against a preview that takes 0.5 s."""
    api = FakeModelArts()
    api.jobs["a"] = running("a", now=time.time())
    api.logs[("a", "worker-0")] = b"ok\n"
    store = Store(tmp_path / "state.db")
    store.open()
    poller = Poller(
        api,
        Discovery(api, store, DiscoverySettings()),
        store,
        RuleSet(load_rules()),
        SelfMetrics(CollectorRegistry()),
        CollectSettings(interval_seconds=0.1, discovery_interval_seconds=0.1),
    )
    slow = api.preview_log

    def preview(job_id: str, task_id: str) -> object:
        time.sleep(0.5)
        return slow(job_id, task_id)

    monkeypatch.setattr(api, "preview_log", preview)
    running_now = [0]
    most = [0]
    cycles = [0]
    lock = threading.Lock()
    real_cycle = poller.run_cycle

    def counted() -> object:
        with lock:
            running_now[0] += 1
            most[0] = max(most[0], running_now[0])
        try:
            return real_cycle()
        finally:
            with lock:
                running_now[0] -= 1
                cycles[0] += 1

    monkeypatch.setattr(poller, "run_cycle", counted)
    poller.start()
    try:
        time.sleep(1.3)
    finally:
        poller.stop()
        store.close()
    assert most[0] == 1
    assert 1 <= cycles[0] <= 3


def _cycle_lines(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [r.levelno for r in caplog.records if r.getMessage().startswith("cycle: ")]


def test_a_quiet_cycle_logs_its_summary_only_every_few_cycles(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter")
    world.api.jobs["a"] = running("a", now=world.clock.now)
    world.api.logs[("a", "worker-0")] = b"step 1\n"
    for n in range(SUMMARY_EVERY_CYCLES + 1):
        world.api.logs[("a", "worker-0")] += f"step {n}\n".encode()  # the log keeps growing
        world.poller.run_cycle()
        world.clock.advance(10)
    levels = _cycle_lines(caplog)
    assert len(levels) == SUMMARY_EVERY_CYCLES + 1
    assert levels[0] == levels[-1] == logging.INFO
    assert set(levels[1:-1]) == {logging.DEBUG}


def test_a_cycle_where_something_changed_logs_its_summary(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter")
    world.api.jobs["a"] = running("a", now=world.clock.now)
    world.poller.run_cycle()
    world.clock.advance(10)
    world.poller.run_cycle()  # nothing new
    world.clock.advance(10)
    world.api.jobs["b"] = running("b", now=world.clock.now)  # a new job
    world.poller.run_cycle()
    world.clock.advance(10)
    world.api.fail["preview_log"] = ServerError("preview_log", "boom", status=503)
    world.poller.run_cycle()  # previews fail
    world.clock.advance(600)
    world.poller.run_cycle()  # still failing: nothing changed
    assert _cycle_lines(caplog) == [
        logging.INFO,
        logging.DEBUG,
        logging.INFO,
        logging.INFO,
        logging.DEBUG,
    ]


def test_apschedulers_overrun_warning_is_worded_as_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Real scheduling: a cycle blocks until the scheduler has skipped a run because of it."""
    caplog.set_level(logging.DEBUG)
    api = FakeModelArts()
    api.jobs["a"] = running("a", now=time.time())
    api.logs[("a", "worker-0")] = b"ok\n"
    store = Store(tmp_path / "state.db")
    store.open()
    poller = Poller(
        api,
        Discovery(api, store, DiscoverySettings()),
        store,
        RuleSet(load_rules()),
        SelfMetrics(CollectorRegistry()),
        CollectSettings(interval_seconds=0.05, discovery_interval_seconds=0.05),
    )
    release = threading.Event()
    real = api.preview_log

    def blocked(job_id: str, task_id: str) -> object:
        release.wait(30)
        return real(job_id, task_id)

    monkeypatch.setattr(api, "preview_log", blocked)

    def overrun_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "longer than collect.interval_seconds" in r.message]

    poller.start()
    try:
        deadline = time.monotonic() + 30
        while len(overrun_lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        release.set()
        poller.stop()
        store.close()
    lines = overrun_lines()
    assert len(lines) >= 2
    assert lines[0].name == "exporter.scheduler"
    assert lines[0].levelno == logging.WARNING
    assert {r.levelno for r in lines[1:]} == {logging.DEBUG}  # once per overrunning cycle
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in warned if r.name.startswith("apscheduler")]
    assert not [r for r in caplog.records if "maximum number of running instances" in r.message]
