"""``modelarts-exporter serve`` as a process, against the simulator, with each credential."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ExporterProcess, series, wait_for, write_config

from modelarts_exporter.simulator import SimAuth, Simulator

TOKEN = "test-token-0123"
AK, SK = "QTWAOYTTINDUT2QVKYUC", "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"

MEGATRON = (
    " iteration {i:8d}/  250000 | consumed samples: {s:12d} | lm loss: {loss:.6E} | "
    "loss scale: 1.0 | grad norm: 0.231 | number of skipped iterations:   0 |\n"
)


def _jobs(sim: Simulator) -> dict[tuple[str, str], int]:
    """Three jobs, five tasks, fixed logs: what the exporter must end up reporting."""
    sizes = {}
    a = sim.add_job("sft-run", tasks=("worker-0", "worker-1"))
    b = sim.add_job("pretrain", tasks=("worker-0", "worker-1", "worker-2"))
    c = sim.add_job("oom-run", tasks=("worker-0",))
    for job, tasks in ((a, 2), (b, 3)):
        for n in range(tasks):
            text = "".join(MEGATRON.format(i=i, s=i * 64, loss=3.0 / i) for i in range(1, 200))
            sim.append_log(job, f"worker-{n}", text.encode())
    sim.append_log(
        c,
        "worker-0",
        b"step 1\nTraceback (most recent call last):\n"
        b"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n"
        b"[Modelarts Service Log]Training end with return code: 1\n",
    )
    sim.set_phase(c, "Failed", duration_ms=5000)
    for job, tasks in ((a, 2), (b, 3), (c, 1)):
        for n in range(tasks):
            sizes[(job, f"worker-{n}")] = len(sim.log_bytes(job, f"worker-{n}"))
    return sizes


@pytest.mark.parametrize("credential", ["token", "aksk"])
def test_serve_reports_every_task_of_the_simulator(tmp_path: Path, credential: str) -> None:
    if credential == "token":
        auth, env = SimAuth(tokens=frozenset({TOKEN})), {"MODELARTS_AUTH_TOKEN": TOKEN}
    else:
        auth = SimAuth(aksk={AK: SK})
        env = {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK}
    with Simulator(auth=auth, window_bytes=64 * 1024) as sim:
        sizes = _jobs(sim)
        config = write_config(tmp_path, sim.url, sim.project_id)
        exporter = ExporterProcess(config, env, tmp_path / "exporter.log").start()
        try:

            def all_sizes() -> dict[tuple[str, str], float] | None:
                found = {
                    (dict(k)["training_job_id"], dict(k)["task_id"]): v
                    for k, v in series(exporter.metrics(), "modelarts_task_log_size_bytes").items()
                }
                return found if len(found) == len(sizes) else None

            reported = wait_for(all_sizes, 30, "every task on /metrics")
            assert reported == {key: float(size) for key, size in sizes.items()}
            samples = exporter.metrics()
            oom = sim.job_id("oom-run")
            assert series(samples, "modelarts_task_exit_code", training_job_id=oom)
            assert list(
                series(samples, "modelarts_task_exit_code", training_job_id=oom).values()
            ) == [1.0]
            assert series(
                samples, "modelarts_task_log_errors_total", training_job_id=oom, marker="cuda_oom"
            ) == {
                frozenset(
                    {("training_job_id", oom), ("task_id", "worker-0"), ("marker", "cuda_oom")}
                ): 1.0
            }
            ups = series(samples, "modelarts_task_up")
            assert set(ups.values()) == {1.0}
            assert len(ups) == len(sizes)
            # Windows are 64 KiB, logs larger: the lines that scrolled out before the first
            # poll are skipped, everything else processed, nothing twice.
            for (job, task), size in sizes.items():
                labels = {"training_job_id": job, "task_id": task}
                processed = series(samples, "modelarts_task_log_processed_bytes_total", **labels)
                skipped = series(samples, "modelarts_task_log_skipped_bytes_total", **labels)
                assert sum(processed.values()) + sum(skipped.values()) == size
            kinds = {record.auth_kind for record in sim.requests}
            assert kinds == {credential}
        finally:
            code = exporter.stop()
        assert code == 0, exporter.log()
    assert "Traceback" not in exporter.log()
    assert TOKEN not in exporter.log()
    assert SK not in exporter.log()
