"""Platform signals in the collection cycle: restarts and timing from discovery, events on
discovery's cadence, task metrics once a minute for running tasks, 403 turns an API off."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FakeClock, FakeModelArts
from prometheus_client import CollectorRegistry

from modelarts_exporter.discovery import Discovery, DiscoverySettings
from modelarts_exporter.events import JobEvents
from modelarts_exporter.families import build_families
from modelarts_exporter.modelarts.errors import AuthenticationError, ServerError
from modelarts_exporter.modelarts.types import JobEvent, RunningRecord, TrainingJob
from modelarts_exporter.rules import RuleSet, load_rules
from modelarts_exporter.scheduler import CollectSettings, Poller
from modelarts_exporter.selfmetrics import SelfMetrics
from modelarts_exporter.signals import (
    SETTLE_SECONDS,
    SignalReader,
    SignalSettings,
    recovery_labels,
)
from modelarts_exporter.store import JobState, Store

FORBIDDEN = AuthenticationError("list_events", "denied", status=403, error_code="ModelArts.0203")


def job(
    job_id: str,
    *tasks: str,
    phase: str = "Running",
    now: float,
    records: tuple[RunningRecord, ...] = (),
) -> TrainingJob:
    return TrainingJob(
        job_id,
        f"name-{job_id}",
        phase,
        tasks or ("worker-0",),
        create_time_ms=int((now - 600) * 1000),
        start_time_ms=int((now - 500) * 1000),
        duration_ms=500_000 if phase == "Running" else 400_000,
        running_records=records,
    )


class World:
    def __init__(self, tmp_path: Path, **signal_settings: bool | float) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock()
        self.api = FakeModelArts()
        self.registry = CollectorRegistry()
        self.metrics = SelfMetrics(self.registry)
        self.signal_settings = SignalSettings(interval_seconds=10, **signal_settings)  # type: ignore[arg-type]
        self.open()

    def open(self) -> None:
        self.store = Store(self.tmp_path / "state.db", clock=self.clock)
        self.store.open()
        self.signals = SignalReader(
            self.api,
            self.store,
            self.signal_settings,
            clock=self.clock,
            on_forbidden=self.metrics.forbidden,
        )
        self.poller = Poller(
            self.api,
            Discovery(self.api, self.store, DiscoverySettings(), clock=self.clock),
            self.store,
            RuleSet(load_rules()),
            self.metrics,
            CollectSettings(interval_seconds=10, discovery_interval_seconds=30, concurrency=4),
            signals=self.signals,
            clock=self.clock,
        )

    def close(self) -> None:
        self.poller.stop()
        self.store.close()

    def cycles(self, count: int, seconds: float = 10) -> None:
        for _ in range(count):
            self.poller.run_cycle()
            self.clock.advance(seconds)

    def event(self, job_id: str, offset: float, message: str, level: str = "Info") -> None:
        self.api.events.setdefault(job_id, []).append(
            JobEvent(self.clock.now + offset, level, "Job", message)
        )

    def sample(self, name: str, **labels: str) -> float | None:
        families = build_families(self.store.snapshot(), [])
        for family in families:
            sample_name = family.name + ("_total" if family.type == "counter" else "")
            if sample_name != name:
                continue
            for values, value in family.samples:
                if dict(zip(family.labels, values, strict=True)) == labels:
                    return value
        return None


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


# --- from the job details ----------------------------------------------------------------------

DOC_RECORD = RunningRecord(1701327093, 1701322341, "init_or_rescheduled", "exit with 127")


def test_recovery_labels_are_bounded() -> None:
    def labels(**fields: str) -> tuple[str, str, str] | None:
        record = replace(DOC_RECORD, **fields)
        return recovery_labels((record, RunningRecord()), ("worker-0",))

    assert labels(end_recover="job_reschedule", end_related_task="worker-2") == (
        "exit with 127",
        "job_reschedule",
        "worker-2",
    )
    assert labels(end_recover="teleport", end_related_task="../../etc/passwd") == (
        "exit with 127",
        "other",
        "other",
    )
    assert labels(end_recover="proc_restart", end_reason="Exited with code 137 (OOMKilled)") == (
        "exit with 137",
        "proc_restart",
        "",
    )
    reason = labels(end_recover="pod_reschedule", end_reason="Node NotReady: <b>kubelet</b> " * 9)
    assert reason is not None
    assert reason[0].startswith("node notready: b kubelet b node")
    assert len(reason[0]) <= 64
    assert set(reason[0]) <= set("abcdefghijklmnopqrstuvwxyz0123456789 _.:-")
    assert recovery_labels((DOC_RECORD, RunningRecord()), ()) is None
    assert recovery_labels((), ()) is None


def test_restarts_timing_and_recovery_come_from_discovery(world: World) -> None:
    now = world.clock.now
    records = (
        RunningRecord(1, 2, "init_or_rescheduled", "exit with 137", "worker-1", "pod_reschedule"),
        RunningRecord(2, 3, "init_or_rescheduled", "hang", "worker-0", "proc_restart"),
        RunningRecord(3, 0, "restarted"),
    )
    world.api.jobs["a"] = job("a", "worker-0", "worker-1", now=now, records=records)
    world.cycles(1)
    assert world.sample("modelarts_training_job_restarts_total", training_job_id="a") == 2
    info = world.store.jobs()["a"]
    assert info.last_recovery == ("hang", "proc_restart", "worker-0")
    assert world.sample("modelarts_training_job_start_timestamp_seconds", training_job_id="a") == (
        now - 500
    )
    assert world.sample(
        "modelarts_training_job_created_timestamp_seconds", training_job_id="a"
    ) == (now - 600)
    assert world.sample("modelarts_training_job_duration_seconds", training_job_id="a") == 500
    assert (
        world.sample(
            "modelarts_training_job_last_recovery_info",
            training_job_id="a",
            end_reason="hang",
            end_recover="proc_restart",
            end_related_task="worker-0",
        )
        == 1
    )
    # The API trims its history: the counter never goes down, the last recovery stays.
    world.api.jobs["a"] = job("a", now=now, records=records[2:])
    world.cycles(3)
    assert world.sample("modelarts_training_job_restarts_total", training_job_id="a") == 2
    assert world.store.jobs()["a"].last_recovery == ("hang", "proc_restart", "worker-0")


def test_a_job_that_has_not_started_has_no_start_or_duration(world: World) -> None:
    world.api.jobs["p"] = TrainingJob("p", "queued", "Pending", (), create_time_ms=1_000)
    world.cycles(1)
    assert (
        world.sample("modelarts_training_job_created_timestamp_seconds", training_job_id="p") == 1
    )
    assert (
        world.sample("modelarts_training_job_start_timestamp_seconds", training_job_id="p") is None
    )
    assert world.sample("modelarts_training_job_duration_seconds", training_job_id="p") is None
    assert world.sample("modelarts_training_job_restarts_total", training_job_id="p") == 0


# --- events -------------------------------------------------------------------------------------


def test_events_are_read_on_discoverys_cadence_not_every_cycle(world: World) -> None:
    world.api.jobs["a"] = job("a", now=world.clock.now)
    world.event("a", -5, "Training job is running.")
    world.cycles(6)  # 60 s of 10 s cycles; discovery every 30 s
    assert world.api.count("list_events") == 2
    assert world.api.count("preview_log") == 6
    assert (
        world.sample("modelarts_training_job_events_total", training_job_id="a", level="Info") == 1
    )
    assert (
        world.sample("modelarts_training_job_events_total", training_job_id="a", level="Error") == 0
    )


def test_a_finished_job_is_read_until_it_settled_then_never(world: World) -> None:
    world.api.jobs["a"] = job("a", now=world.clock.now)
    world.cycles(3)
    world.api.jobs["a"] = job("a", phase="Failed", now=world.clock.now)
    world.event("a", 0, "Training job failed.", "Error")
    world.cycles(3)
    world.event("a", 0, "[worker-0] Upload of the output failed.", "Error")  # just after
    reads = world.api.count("list_events")
    world.cycles(int(SETTLE_SECONDS / 10) + 12)
    assert (
        world.sample("modelarts_training_job_events_total", training_job_id="a", level="Error") == 2
    )
    assert world.store.events("a").final_done
    assert world.api.count("list_events") - reads <= SETTLE_SECONDS / 30 + 1
    before = world.api.count("list_events")
    world.cycles(6)
    assert world.api.count("list_events") == before


def test_event_counts_survive_a_restart_of_the_exporter(world: World) -> None:
    world.api.jobs["a"] = job("a", now=world.clock.now)
    for i in range(150):
        world.event("a", -1, f"[worker-{i}] training started.")
    world.cycles(1)
    world.close()
    world.open()
    world.event("a", 0, "one more")
    world.cycles(1)
    assert (
        world.sample("modelarts_training_job_events_total", training_job_id="a", level="Info")
        == 151
    )


def test_the_exit_code_of_a_platform_event_fills_in_for_the_log(world: World) -> None:
    world.api.jobs["a"] = job("a", "worker-0", "worker-1", now=world.clock.now)
    world.api.logs[("a", "worker-0")] = b"training...\n"
    world.api.logs[("a", "worker-1")] = b"[Modelarts Service Log]exit with 2\n"
    world.event("a", 0, "[worker-0] Training finished. Exit code 137.")
    world.event("a", 0, "[worker-1] Training finished. Exit code 3.")
    world.event("a", 0, "[worker-9] Training finished. Exit code 4.")  # no such task
    world.cycles(1)
    code = "modelarts_task_exit_code"
    assert world.sample(code, training_job_id="a", task_id="worker-0") == 137
    assert world.sample(code, training_job_id="a", task_id="worker-1") == 2  # the log wins
    assert world.sample(code, training_job_id="a", task_id="worker-9") is None


def test_the_latest_error_events_are_in_the_store(world: World) -> None:
    world.api.jobs["a"] = job("a", now=world.clock.now)
    world.event("a", -3, "ImagePullBackOff: image not found", "Error")
    world.event("a", -2, "pulling", "Info")
    world.cycles(1)
    (error,) = world.store.error_events("a")
    assert error.message == "ImagePullBackOff: image not found"
    assert error.level == "Error"


def test_a_403_turns_the_events_api_off_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.api.jobs["a"] = job("a", now=world.clock.now)
    world.api.jobs["b"] = job("b", now=world.clock.now)
    world.api.fail["list_events"] = FORBIDDEN
    with caplog.at_level(logging.WARNING, "exporter"):
        world.cycles(9)
    refusals = [r for r in caplog.records if "refused the list_events API" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.ERROR
    assert "platform.events: false" in refusals[0].getMessage()
    assert world.api.count("list_events") <= 2  # the first read of each job, in parallel
    assert (
        world.registry.get_sample_value(
            "modelarts_exporter_api_forbidden", {"endpoint": "list_events"}
        )
        == 1
    )
    assert world.api.count("task_metrics") == 4  # the other API goes on
    assert (
        world.sample(
            "modelarts_task_cpu_utilization_ratio", training_job_id="a", task_id="worker-0"
        )
        is None
    )


def test_a_rejected_credential_does_not_turn_an_api_off(world: World) -> None:
    world.api.jobs["a"] = job("a", now=world.clock.now)
    world.api.fail["list_events"] = AuthenticationError("list_events", "bad token", status=401)
    world.cycles(1)
    del world.api.fail["list_events"]
    world.cycles(9)
    assert world.signals.enabled("list_events")
    assert world.store.events("a").last_read is not None


def test_failed_reads_back_off_like_previews(world: World) -> None:
    world.api.jobs["a"] = job("a", now=world.clock.now)
    world.api.fail["task_metrics"] = ServerError("task_metrics", "down", status=503)
    world.poller._settings = replace(world.poller._settings, discovery_interval_seconds=10)
    world.cycles(30)  # 300 s
    # Metrics: at 0, then after max(doubling backoff, the 60 s interval): 60, 120, 180, 260.
    # Events (discovery every 10 s now): after 0, 10, 20, 40, 80 s: 300, 310, 330, 370, 450.
    assert world.api.count("task_metrics") == 5
    world.api.fail["list_events"] = ServerError("list_events", "down", status=503)
    before = world.api.count("list_events")
    world.cycles(31)
    assert world.api.count("list_events") - before == 5


def test_switched_off_apis_are_never_called(tmp_path: Path) -> None:
    world = World(tmp_path, events=False, task_metrics=False)
    try:
        world.api.jobs["a"] = job("a", now=world.clock.now)
        world.cycles(12)
        assert world.api.count("list_events") == 0
        assert world.api.count("task_metrics") == 0
        assert (
            world.sample("modelarts_training_job_events_total", training_job_id="a", level="Info")
            is None
        )
    finally:
        world.close()


# --- task metrics --------------------------------------------------------------------------------


def test_task_metrics_once_a_minute_for_running_tasks_only(world: World) -> None:
    now = world.clock.now
    world.api.jobs["a"] = job("a", "worker-0", "worker-1", now=now)
    world.api.jobs["p"] = TrainingJob("p", "queued", "Pending", ("worker-0",))
    world.api.jobs["c"] = job("c", phase="Completed", now=now)
    world.api.metrics[("a", "worker-0")] = {"gpuUtil": 0.93, "gpuMemUsage": 0.5, "cpuUsage": 0.2}
    world.api.metrics[("a", "worker-1")] = {"npuUtil": 0.04}
    world.cycles(12)  # 120 s
    assert sorted(key for call, key in world.api.calls if call == "task_metrics") == [
        "a/worker-0",
        "a/worker-0",
        "a/worker-1",
        "a/worker-1",
    ]
    gpu = "modelarts_task_gpu_utilization_ratio"
    assert world.sample(gpu, training_job_id="a", task_id="worker-0") == 0.93
    assert (
        world.sample(
            "modelarts_task_gpu_memory_utilization_ratio", training_job_id="a", task_id="worker-0"
        )
        == 0.5
    )
    assert (
        world.sample(
            "modelarts_task_cpu_utilization_ratio", training_job_id="a", task_id="worker-0"
        )
        == 0.2
    )
    assert (
        world.sample(
            "modelarts_task_npu_utilization_ratio", training_job_id="a", task_id="worker-1"
        )
        == 0.04
    )
    assert world.sample(gpu, training_job_id="a", task_id="worker-1") is None
    # The job stops running: its utilisation goes, and it is not asked again.
    world.api.jobs["a"] = job("a", "worker-0", "worker-1", phase="Completed", now=now)
    calls = world.api.count("task_metrics")
    world.cycles(12)
    assert world.api.count("task_metrics") == calls
    assert world.sample(gpu, training_job_id="a", task_id="worker-0") is None


def test_a_403_turns_task_metrics_off(world: World) -> None:
    world.api.jobs["a"] = job("a", "worker-0", "worker-1", "worker-2", now=world.clock.now)
    world.api.fail["task_metrics"] = AuthenticationError(
        "task_metrics", "denied", status=403, error_code="ModelArts.0203"
    )
    world.cycles(20)
    assert world.api.count("task_metrics") <= 3
    assert not world.signals.enabled("task_metrics")
    assert (
        world.registry.get_sample_value(
            "modelarts_exporter_api_forbidden", {"endpoint": "task_metrics"}
        )
        == 1
    )


# --- the state file ---------------------------------------------------------------------------


def test_platform_state_survives_a_restart_and_old_files_load(tmp_path: Path) -> None:
    saves: list[bool] = []
    path = tmp_path / "state.db"
    store = Store(path, on_save=saves.append)
    store.open()
    running = JobState(
        "a",
        "n",
        "Running",
        ("worker-0",),
        start_time=10.0,
        duration=5.0,
        restarts=2,
        last_recovery=("exit with 137", "pod_reschedule", "worker-1"),
    )
    store.put_job(running)
    store.put_job(replace(running, duration=35.0))  # a running job's duration: no write
    assert saves == [True]
    assert store.jobs()["a"].duration == 35.0
    store.put_events(JobEvents("a", counts={"Error": 2.0}))
    store.close()
    again = Store(path)
    again.open()
    assert again.jobs()["a"] == running
    assert again.events("a").counts == {"Error": 2.0}
    again.close()
    # A state file written before the events table existed loads as it is.
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE events")
    old = Store(path)
    old.open()
    assert old.jobs()["a"] == running
    assert old.events("a") == JobEvents("a")
    old.close()
