"""Exactly-once across SIGKILL: kill ``serve`` at random moments while logs grow.

The logs are written in random pieces (cut mid-line and mid-character), the exporter is
killed with SIGKILL at random moments and started again from its state file; at the end
every counter must equal the truth, and no counter Prometheus saw may ever go down.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from helpers import ExporterProcess, Samples, series, wait_for, write_config

from modelarts_exporter.simulator import SimAuth, Simulator

TOKEN = "restart-token"
COUNTERS = (
    "modelarts_task_log_processed_bytes_total",
    "modelarts_task_log_lines_total",
    "modelarts_task_log_errors_total",
    "modelarts_task_log_skipped_bytes_total",
    "modelarts_task_log_resets_total",
)


def _line(rng: random.Random, n: int) -> str:
    kind = rng.random()
    if kind < 0.1:
        return "Traceback (most recent call last):\n"
    if kind < 0.4:
        return f"epoch: 1 step: {n}, loss is {rng.uniform(0.1, 3):.6f}\n"
    return f"[{n}] data loader: 日本語 é 😀 batch {rng.randrange(10**6)} ok\n"


def _counters(samples: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {key: value for key, value in samples.items() if key[0] in COUNTERS}


def test_sigkill_at_random_moments_counts_every_line_once(tmp_path: Path) -> None:
    rng = random.Random(20261126)
    with Simulator(auth=SimAuth(tokens=frozenset({TOKEN})), window_bytes=256 * 1024) as sim:
        jobs = [sim.add_job(f"job-{i}", tasks=("worker-0", "worker-1")) for i in range(2)]
        tasks = [(job, task) for job in jobs for task in ("worker-0", "worker-1")]
        written = dict.fromkeys(tasks, b"")
        pending = dict.fromkeys(tasks, b"")
        truth_lines = dict.fromkeys(tasks, 0)
        truth_tracebacks = dict.fromkeys(tasks, 0)
        counter = 0

        def write_some() -> None:
            nonlocal counter
            for key in tasks:
                text = "".join(_line(rng, counter + i) for i in range(rng.randrange(1, 40)))
                counter += 40
                truth_lines[key] += text.count("\n")
                truth_tracebacks[key] += text.count("Traceback (most recent")
                data = pending[key] + text.encode()
                cut = rng.randrange(len(data) + 1)  # anywhere: mid-line, mid-character
                sim.append_log(key[0], key[1], data[:cut])
                written[key] += data[:cut]
                pending[key] = data[cut:]

        config = write_config(tmp_path, sim.url, sim.project_id)
        env = {"MODELARTS_AUTH_TOKEN": TOKEN}
        log = tmp_path / "exporter.log"
        exporter = ExporterProcess(config, env, log).start()
        seen: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        kills = 0
        try:
            for _ in range(12):
                write_some()
                time.sleep(rng.uniform(0.2, 1.6))
                now = _counters(exporter.metrics())
                for key, value in now.items():
                    assert value >= seen.get(key, 0.0), f"{key} went down"
                seen.update(now)
                if rng.random() < 0.5:
                    exporter.kill()
                    kills += 1
                    if rng.random() < 0.5:
                        write_some()  # written while the exporter is down
                    exporter.start()
            for key in tasks:  # the writers finish their last lines
                sim.append_log(key[0], key[1], pending[key])
                written[key] += pending[key]
            for job in jobs:
                sim.set_phase(job, "Completed", duration_ms=60_000)

            def done() -> Samples | None:
                samples = exporter.metrics()
                total = sum(series(samples, "modelarts_task_log_processed_bytes_total").values())
                return samples if total == sum(len(v) for v in written.values()) else None

            samples = wait_for(done, 30, "final polls of every task")
            for key, value in _counters(samples).items():
                assert value >= seen.get(key, 0.0), f"{key} went down"
            for job, task in tasks:
                labels = {"training_job_id": job, "task_id": task}
                assert series(samples, "modelarts_task_log_lines_total", **labels) == {
                    frozenset(labels.items()): truth_lines[(job, task)]
                }
                errors = series(
                    samples, "modelarts_task_log_errors_total", marker="python_traceback", **labels
                )
                assert list(errors.values()) == [truth_tracebacks[(job, task)]]
                for name in (
                    "modelarts_task_log_skipped_bytes_total",
                    "modelarts_task_log_resets_total",
                ):
                    assert list(series(samples, name, **labels).values()) == [0.0]
        finally:
            assert exporter.stop() == 0, exporter.log()
        assert kills >= 3
