"""``serve`` against a ModelArts that trickles one preview and throttles another for a day:
the other tasks are collected every cycle, and SIGTERM ends the process at once, with
what was collected saved."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import ExporterProcess, series, wait_for, write_config

from modelarts_exporter.simulator import Fault, SimAuth, Simulator
from modelarts_exporter.store import Store

pytestmark = pytest.mark.timeout(120)

TOKEN = "slow-api-token-0123"
MANY = 1_000_000


def test_a_trickling_and_a_throttled_preview_hold_neither_the_others_nor_sigterm(
    tmp_path: Path,
) -> None:
    with Simulator(auth=SimAuth(tokens=frozenset({TOKEN}))) as sim:
        alpha = sim.add_job("alpha", tasks=("worker-0", "worker-1"))
        bravo = sim.add_job("bravo", tasks=("worker-0", "worker-1"))
        for job in (alpha, bravo):
            for task in ("worker-0", "worker-1"):
                sim.append_log(job, task, f"{job} {task} step 1 loss=0.5\n".encode() * 50)
        preview = "/training-jobs/{}/tasks/worker-0/logs/preview$"
        # A whole preview would take ~30 minutes at one byte every 0.5 s.
        sim.inject(
            Fault(
                method="GET",
                path_pattern=preview.format(alpha),
                status=None,
                drip_seconds=0.5,
                times=MANY,
            )
        )
        busy = json.dumps({"error_code": "ModelArts.2799", "error_msg": "busy"}).encode()
        sim.inject(
            Fault(
                method="GET",
                path_pattern=preview.format(bravo),
                status=429,
                body=busy,
                headers={"Retry-After": "100000"},
                times=MANY,
            )
        )
        config = write_config(
            tmp_path, sim.url, sim.project_id, modelarts={"request_deadline_seconds": 3600}
        )
        exporter = ExporterProcess(
            config, {"MODELARTS_AUTH_TOKEN": TOKEN}, tmp_path / "exporter.log"
        ).start()
        try:
            sizes = {
                (job, "worker-1"): float(len(sim.log_bytes(job, "worker-1")))
                for job in (alpha, bravo)
            }

            def others_collected() -> bool:
                found = {
                    (dict(k)["training_job_id"], dict(k)["task_id"]): v
                    for k, v in series(exporter.metrics(), "modelarts_task_log_size_bytes").items()
                }
                return all(found.get(key) == size for key, size in sizes.items())

            wait_for(others_collected, 30, "the other tasks on /metrics")
            wait_for(lambda: "still in flight" in exporter.log(), 30, "a cycle not held")
            for job in (alpha, bravo):
                sim.append_log(job, "worker-1", b"more\n")
                sizes[(job, "worker-1")] += 5
            wait_for(others_collected, 30, "the other tasks collected again")
            throttled = [
                r for r in sim.requests if r.path.endswith(preview.format(bravo).rstrip("$"))
            ]
            assert len(throttled) == 1  # deferred, not retried every cycle
            assert exporter.process is not None
            exporter.process.send_signal(signal.SIGTERM)
            code = exporter.process.wait(10)  # "within a few seconds", with a margin
        except subprocess.TimeoutExpired:
            code = exporter.stop()
            pytest.fail(f"SIGTERM did not stop the exporter (code {code}):\n{exporter.log()}")
        finally:
            exporter.stop()
    assert code == 0, exporter.log()
    assert "Traceback" not in exporter.log()
    store = Store(tmp_path / "state.db")
    store.open()
    try:
        for (job, task), size in sizes.items():
            assert store.task(job, task).processed_bytes == size
    finally:
        store.close()
