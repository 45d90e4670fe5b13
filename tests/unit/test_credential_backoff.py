"""Credentials ModelArts rejects at the first start are loud and never hammer the API.

No job is known yet, so only discovery calls: one error line names the rejection (the
HTTP status and the API's code), listing backs off doubling up to the configured maximum,
and every cycle's summary counts the failed listings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeClock, FakeModelArts
from prometheus_client import CollectorRegistry

from modelarts_exporter.discovery import Discovery, DiscoverySettings
from modelarts_exporter.modelarts.errors import AuthenticationError, ServerError
from modelarts_exporter.modelarts.types import TrainingJob
from modelarts_exporter.rules import RuleSet, load_rules
from modelarts_exporter.scheduler import CollectSettings, Poller
from modelarts_exporter.selfmetrics import SelfMetrics
from modelarts_exporter.store import Store

INTERVAL = 10.0
BACKOFF_MAX = 600.0


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.start = self.clock.now
        self.api = FakeModelArts()
        self.store = Store(tmp_path / "state.db", clock=self.clock)
        self.store.open()
        self.poller = Poller(
            self.api,
            Discovery(self.api, self.store, DiscoverySettings(), clock=self.clock),
            self.store,
            RuleSet(load_rules()),
            SelfMetrics(CollectorRegistry()),
            CollectSettings(
                interval_seconds=INTERVAL,
                discovery_interval_seconds=INTERVAL,
                failure_backoff_max_seconds=BACKOFF_MAX,
            ),
            clock=self.clock,
        )
        self.listed_at: list[float] = []
        real = self.api.list_jobs

        def list_jobs(phases: object = None) -> list[TrainingJob]:
            self.listed_at.append(self.clock.now - self.start)
            return real(phases)  # type: ignore[arg-type]

        self.api.list_jobs = list_jobs  # type: ignore[method-assign]

    def reject(self, status: int = 401, code: str = "ModelArts.0203") -> None:
        for call in ("list_jobs", "iter_jobs"):
            self.api.fail[call] = AuthenticationError(
                call, "The token has expired.", status=status, error_code=code
            )

    def cycles(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.poller.run_cycle()
            self.clock.advance(INTERVAL)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.poller.stop()
    w.store.close()


def doubling(until: float) -> list[float]:
    """When listing is tried: at 0, then after pauses of INTERVAL, 2*INTERVAL, ... capped."""
    times, at, pause = [], 0.0, INTERVAL
    while at < until:
        times.append(at)
        at += pause
        pause = min(2 * pause, BACKOFF_MAX)
    return times


@pytest.mark.parametrize(("status", "code"), [(401, "ModelArts.0203"), (403, "ModelArts.0108")])
def test_rejected_credentials_at_first_start_are_one_error_line_and_back_off(
    world: World, caplog: pytest.LogCaptureFixture, status: int, code: str
) -> None:
    caplog.set_level(logging.DEBUG)
    world.reject(status, code)
    world.cycles(3000)
    assert world.listed_at == doubling(3000)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "rejected the credentials" in errors[0]
    assert f"HTTP {status}" in errors[0]
    assert code in errors[0]
    cycle_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cycle:")]
    assert "2 failed (2 listings, 0 previews)" in cycle_lines[0]
    assert "listings paused" in cycle_lines[1]


def test_listing_resumes_when_the_credentials_work_again(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.reject()
    world.cycles(40)  # listed at 0, 10, 30; paused until 70
    world.api.fail.clear()
    world.api.jobs["a"] = TrainingJob(
        "a", "alpha", "Running", ("worker-0",), create_time_ms=int(world.clock.now * 1000)
    )
    world.cycles(40)  # 40, 50, 60 paused; 70 lists
    assert world.listed_at == [0.0, 10.0, 30.0, 70.0]
    assert "a" in world.store.jobs()
    assert "accepts the credentials again" in caplog.text
    world.cycles(20)
    assert world.listed_at == [0.0, 10.0, 30.0, 70.0, 80.0, 90.0]  # every interval again


def test_other_listing_failures_are_counted_but_not_backed_off(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.api.fail["list_jobs"] = ServerError("list_jobs", "boom", status=503)
    world.cycles(50)
    assert world.listed_at == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "1 failed (1 listings, 0 previews)" in caplog.text
