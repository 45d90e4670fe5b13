"""``serve`` against the simulator: restarts, events, utilisation and job timing on /metrics,
with the values the simulator holds; events exactly once across pages, same-second
events, events arriving while paging, API faults and restarts of the exporter; a 403 turns
an optional API off once."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

from helpers import ExporterProcess, Samples, series, wait_for, write_config

from modelarts_exporter.simulator import Fault, SimAuth, Simulator

TOKEN = "signals-token-0123"
ENV = {"MODELARTS_AUTH_TOKEN": TOKEN}
LEVELS = ("Info", "Warning", "Error")


def one(samples: Samples, name: str, **labels: str) -> float | None:
    found = series(samples, name, **labels)
    assert len(found) <= 1, found
    return next(iter(found.values()), None)


def event_counts(samples: Samples, job: str) -> dict[str, float]:
    return {
        level: one(samples, "modelarts_training_job_events_total", training_job_id=job, level=level)
        or 0.0
        for level in LEVELS
    }


class Truth:
    """The events the simulator holds per job, by level (each distinct event once)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.counts: dict[str, dict[str, int]] = {}
        self.lock = threading.Lock()

    def add(self, job: str, message: str, level: str = "Info", at: float | None = None) -> None:
        with self.lock:
            self.sim.add_event(job, message, level=level, at=at)
            by_level = self.counts.setdefault(job, dict.fromkeys(LEVELS, 0))
            by_level[level] += 1

    def expected(self, job: str, life: Mapping[str, int]) -> dict[str, float]:
        with self.lock:
            mine = self.counts.get(job, dict.fromkeys(LEVELS, 0))
            return {level: float(mine[level] + life.get(level, 0)) for level in LEVELS}


class ShiftedClock:
    """Real time, ``shift`` seconds ahead (restarts a second apart without waiting)."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


def test_platform_signals_reach_metrics_exactly_once(tmp_path: Path) -> None:
    clock = ShiftedClock()
    with Simulator(auth=SimAuth(tokens=frozenset({TOKEN})), clock=clock) as sim:
        now = clock()
        job = sim.add_job(
            "llm-sft", tasks=("worker-0", "worker-1"), create_time=now - 700, start_time=now - 600
        )
        npu = sim.add_job("ascend", flavor="modelarts.kat1.8xlarge", start_time=now - 300)
        pending = sim.add_job("queued", phase="Pending", tasks=())
        clock.shift = -20  # two restarts, 10 s apart (identical events in one second are one)
        sim.restart_job(job, reason="exit with 137", recover="pod_reschedule", task="worker-1")
        clock.shift = -10
        sim.restart_job(job, reason="Exited with code 139", recover="gpu_proc_restart")
        clock.shift = 0
        sim.set_task_metrics(job, "worker-0", {"gpuUtil": 42.5, "cpuUsage": 3.0})
        sim.set_task_metrics(npu, "worker-0", {"npuUtil": 2.0, "npuMemUsage": 61.25})
        truth = Truth(sim)
        second = float(int(now) - 5)
        for i in range(250):  # three pages of 100, all in one second, three levels
            truth.add(job, f"[worker-{i % 2}] step {i} checkpoint", LEVELS[i % 3], at=second)
        for i in range(3):
            truth.add(pending, f"FailedScheduling {i}", "Warning", at=now - 60 + i)
        # The events the jobs' lives wrote: created, running, a started line per task,
        # and per restart a Warning and a started line per task.
        life = {
            job: {"Info": 1 + 1 + 2 + 2 * 2, "Warning": 2},
            npu: {"Info": 3},
            pending: {"Info": 1},
        }

        # Events arriving while the exporter pages: five new ones when it asks for page 1.
        arrived = threading.Event()

        def arrive(method: str, path: str, query: Mapping[str, str]) -> None:
            if (
                path.endswith(f"{job}/events")
                and query.get("offset") == "1"
                and not arrived.is_set()
            ):
                arrived.set()
                for i in range(5):
                    truth.add(job, f"arrived while paging {i}", "Warning")

        sim.set_request_hook(arrive)
        config = write_config(tmp_path, sim.url, sim.project_id)
        exporter = ExporterProcess(config, ENV, tmp_path / "exporter.log").start()
        try:

            def counted(job_id: str) -> Samples | None:
                samples = exporter.metrics()
                ok = event_counts(samples, job_id) == truth.expected(job_id, life[job_id])
                return samples if ok else None

            samples = wait_for(lambda: counted(job), 30, "every event of llm-sft")
            assert arrived.is_set()
            sim.set_request_hook(None)
            assert wait_for(lambda: counted(pending), 10, "the pending job's warnings")
            assert wait_for(lambda: counted(npu), 10, "the ascend job's events")

            # From the job details.
            assert one(samples, "modelarts_training_job_restarts_total", training_job_id=job) == 2
            assert one(samples, "modelarts_training_job_restarts_total", training_job_id=npu) == 0
            recovery = series(samples, "modelarts_training_job_last_recovery_info")
            assert list(recovery) == [
                frozenset(
                    {
                        ("training_job_id", job),
                        ("end_reason", "exit with 139"),
                        ("end_recover", "gpu_proc_restart"),
                        ("end_related_task", "worker-0"),
                    }
                )
            ]
            created = one(
                samples, "modelarts_training_job_created_timestamp_seconds", training_job_id=job
            )
            started = one(
                samples, "modelarts_training_job_start_timestamp_seconds", training_job_id=job
            )
            assert created == round((now - 700) * 1000) / 1000
            assert started == round((now - 600) * 1000) / 1000
            duration = one(samples, "modelarts_training_job_duration_seconds", training_job_id=job)
            assert duration is not None
            assert 600 <= duration <= time.time() - now + 600
            assert (
                one(
                    samples,
                    "modelarts_training_job_start_timestamp_seconds",
                    training_job_id=pending,
                )
                is None
            )

            # Task metrics: percent in the API, ratios here.
            util = {"training_job_id": job, "task_id": "worker-0"}
            assert one(samples, "modelarts_task_gpu_utilization_ratio", **util) == 0.425
            assert one(samples, "modelarts_task_cpu_utilization_ratio", **util) == 0.03
            assert one(samples, "modelarts_task_npu_utilization_ratio", **util) is None
            ascend = {"training_job_id": npu, "task_id": "worker-0"}
            assert one(samples, "modelarts_task_npu_utilization_ratio", **ascend) == 0.02
            assert one(samples, "modelarts_task_npu_memory_utilization_ratio", **ascend) == 0.6125
            assert one(samples, "modelarts_task_gpu_utilization_ratio", **ascend) is None
            other = one(
                samples,
                "modelarts_task_gpu_utilization_ratio",
                training_job_id=job,
                task_id="worker-1",
            )
            assert other is not None
            assert 0.7 <= other <= 0.99

            # A 429 and a 503 on the events calls: retried, still each event once.
            sim.inject(
                Fault(
                    "GET",
                    r"/events$",
                    status=429,
                    body=b'{"error_code":"ModelArts.2799","error_msg":"too many"}',
                    headers={"Retry-After": "1", "Content-Type": "application/json"},
                )
            )
            sim.inject(Fault("GET", r"/events$", status=503))
            truth.add(job, "after the faults", "Error")
            wait_for(lambda: counted(job), 30, "the event after the faults")
            failures = series(
                exporter.metrics(),
                "modelarts_exporter_api_request_failures_total",
                endpoint="list_events",
            )
            reasons = {dict(key)["reason"] for key in failures}
            assert {"ModelArts.2799", "http_503"} <= reasons

            # Restarts of the exporter, clean and not: nothing counted twice or lost.
            assert exporter.stop() == 0
            truth.add(job, "while the exporter was down", "Warning")
            exporter.start()
            wait_for(lambda: counted(job), 30, "the event written while down")
            exporter.kill()
            exporter.start()
            truth.add(job, "after a SIGKILL")
            wait_for(lambda: counted(job), 30, "the event after a SIGKILL")
            for _ in range(3):  # a few more cycles: still exact
                before = exporter.metrics()
                wait_for(
                    lambda before=before: (
                        (one(exporter.metrics(), "modelarts_exporter_collections_total") or 0)
                        > (one(before, "modelarts_exporter_collections_total") or 0)
                    ),
                    10,
                    "another cycle",
                )
            assert counted(job) is not None
            assert counted(pending) is not None
        finally:
            code = exporter.stop()
        assert code == 0, exporter.log()
    assert "Traceback" not in exporter.log()


def test_a_403_turns_an_optional_api_off_once(tmp_path: Path) -> None:
    denied = b'{"error_code":"ModelArts.0203","error_msg":"Insufficient permissions."}'
    with Simulator(auth=SimAuth(tokens=frozenset({TOKEN}))) as sim:
        jobs = [sim.add_job(f"job-{i}", tasks=("worker-0", "worker-1")) for i in range(3)]
        for job in jobs:
            sim.append_log(job, "worker-0", b"[Modelarts Service Log]exit with 0\n")
        sim.inject(Fault("GET", r"/metrics/", status=403, body=denied, times=10_000))
        config = write_config(tmp_path, sim.url, sim.project_id)
        exporter = ExporterProcess(config, ENV, tmp_path / "exporter.log").start()
        try:
            wait_for(
                lambda: (
                    one(
                        exporter.metrics(),
                        "modelarts_exporter_api_forbidden",
                        endpoint="task_metrics",
                    )
                    == 1
                ),
                30,
                "task_metrics marked forbidden",
            )
            asked = sum(1 for r in sim.requests if "/metrics/" in r.path)
            previews = sum(1 for r in sim.requests if r.path.endswith("/preview"))
            wait_for(
                lambda: sum(1 for r in sim.requests if r.path.endswith("/preview")) > previews + 12,
                30,
                "more previews",
            )
            assert sum(1 for r in sim.requests if "/metrics/" in r.path) == asked
            assert asked <= len(jobs) * 2  # at most the reads of the first cycle
            samples = exporter.metrics()
            assert series(samples, "modelarts_task_gpu_utilization_ratio") == {}
            assert one(samples, "modelarts_exporter_api_forbidden", endpoint="list_events") == 0
            assert len(series(samples, "modelarts_training_job_events_total", level="Info")) == 3
        finally:
            code = exporter.stop()
        assert code == 0, exporter.log()
    log = exporter.log()
    assert log.count("refused the task_metrics API") == 1
    assert "platform.task_metrics: false" in log
    assert "Traceback" not in log
