"""One task's slow or throttled preview holds neither a cycle nor the other tasks.

Driven with ``run_cycle`` and a fake clock; the slow preview blocks on an event the test
releases, so nothing sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeClock, FakeModelArts
from prometheus_client import CollectorRegistry

from modelarts_exporter.discovery import Discovery, DiscoverySettings
from modelarts_exporter.modelarts.errors import StoppedError, ThrottledError
from modelarts_exporter.modelarts.types import LogPreview, TrainingJob
from modelarts_exporter.rules import RuleSet, load_rules
from modelarts_exporter.scheduler import CollectSettings, Poller
from modelarts_exporter.selfmetrics import SelfMetrics
from modelarts_exporter.store import Store

pytestmark = pytest.mark.timeout(60)
TASKS = ("worker-0", "worker-1", "worker-2")
SLOW = ("a", "worker-0")


class SlowModelArts(FakeModelArts):
    """The SLOW task's preview blocks until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def preview_log(self, job_id: str, task_id: str) -> LogPreview | None:
        if (job_id, task_id) == SLOW:
            self.entered.set()
            assert self.release.wait(30)
        return super().preview_log(job_id, task_id)


class World:
    def __init__(self, tmp_path: Path, api: FakeModelArts, cycle_wait: float | None) -> None:
        self.clock = FakeClock()
        self.api = api
        now = self.clock.now
        api.jobs["a"] = TrainingJob(
            "a", "alpha", "Running", TASKS, create_time_ms=int((now - 60) * 1000)
        )
        for task in TASKS:
            api.logs[("a", task)] = f"{task} line 1\n".encode()
        self.store = Store(tmp_path / "state.db", clock=self.clock)
        self.store.open()
        self.poller = Poller(
            api,
            Discovery(api, self.store, DiscoverySettings(), clock=self.clock),
            self.store,
            RuleSet(load_rules()),
            SelfMetrics(CollectorRegistry()),
            CollectSettings(
                interval_seconds=10,
                discovery_interval_seconds=10,
                concurrency=4,
                failure_backoff_max_seconds=600,
                cycle_wait_seconds=cycle_wait,
            ),
            clock=self.clock,
        )

    def lines(self, task: str) -> float:
        return self.store.task("a", task).lines

    def polls_of(self, task: str) -> int:
        return list(self.api.previews()).count(f"a/{task}")


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path, SlowModelArts(), cycle_wait=0.2)
    yield world
    assert isinstance(world.api, SlowModelArts)
    world.api.release.set()
    world.poller.stop()
    world.store.close()


def test_a_slow_preview_does_not_hold_the_cycle_or_the_other_tasks(slow: World) -> None:
    api = slow.api
    assert isinstance(api, SlowModelArts)
    report = slow.poller.run_cycle()
    assert api.entered.is_set()
    assert report.polled == 2
    assert report.in_flight == 1
    assert (slow.lines("worker-1"), slow.lines("worker-2")) == (1.0, 1.0)

    for n in range(2, 4):  # the others keep being polled; the slow one is not started again
        for task in TASKS:
            api.logs[("a", task)] += f"{task} line {n}\n".encode()
        slow.clock.advance(10)
        report = slow.poller.run_cycle()
        assert report.polled == 2
        assert report.in_flight == 1
        assert (slow.lines("worker-1"), slow.lines("worker-2")) == (n, n)
    assert slow.polls_of("worker-0") == 0  # counted when it returns: it never did yet

    api.release.set()
    slow.poller.stop()  # waits for the preview in flight, which lands and commits
    assert slow.lines("worker-0") == 3.0


def test_without_a_cycle_wait_the_cycle_waits_for_every_preview(tmp_path: Path) -> None:
    api = SlowModelArts()
    api.release.set()
    world = World(tmp_path, api, cycle_wait=None)
    try:
        report = world.poller.run_cycle()
        assert (report.polled, report.in_flight) == (3, 0)
    finally:
        world.poller.stop()
        world.store.close()


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path, FakeModelArts(), cycle_wait=None)
    yield world
    world.poller.stop()
    world.store.close()


def test_a_retry_after_defers_only_that_task(plain: World) -> None:
    plain.api.fail["preview_log:a/worker-0"] = ThrottledError(
        "preview_log", "busy", status=429, error_code="ModelArts.2799", retry_after=300.0
    )
    plain.poller.run_cycle()
    assert plain.polls_of("worker-0") == 1
    del plain.api.fail["preview_log:a/worker-0"]
    for _ in range(29):  # 290 s: the other tasks every cycle, worker-0 not before 300 s
        plain.clock.advance(10)
        plain.poller.run_cycle()
    assert plain.polls_of("worker-0") == 1
    assert plain.polls_of("worker-1") == 30
    plain.clock.advance(10)
    plain.poller.run_cycle()
    assert plain.polls_of("worker-0") == 2
    assert plain.store.task("a", "worker-0").up is True


def test_a_retry_after_longer_than_the_backoff_cap_waits_for_the_cap(plain: World) -> None:
    plain.api.fail["preview_log:a/worker-0"] = ThrottledError(
        "preview_log", "busy", status=429, retry_after=100000.0
    )
    plain.poller.run_cycle()
    del plain.api.fail["preview_log:a/worker-0"]
    plain.clock.advance(599)
    plain.poller.run_cycle()
    assert plain.polls_of("worker-0") == 1
    plain.clock.advance(1)
    plain.poller.run_cycle()
    assert plain.polls_of("worker-0") == 2


def test_a_preview_abandoned_on_stop_records_nothing(plain: World) -> None:
    plain.poller.run_cycle()
    before = plain.store.task("a", "worker-0")
    plain.api.logs[("a", "worker-0")] += b"more\n"
    plain.api.fail["preview_log"] = StoppedError("preview_log", "the exporter is stopping")
    plain.api.fail["list_jobs"] = StoppedError("list_jobs", "the exporter is stopping")
    plain.clock.advance(10)
    report = plain.poller.run_cycle()
    assert report.outcomes["stopped"] == 3
    assert report.failed == 0
    assert plain.store.task("a", "worker-0") == before  # not marked down, nothing lost
