"""The scripted scenarios: the demo's timeline and realism, determinism, and the cheap
scale scenario. The clock is injected; "6 seconds later" is one assignment."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fakes import FakeClock

from modelarts_exporter.modelarts.types import TERMINAL_PHASES
from modelarts_exporter.simulator import Simulator, demo_scenario, scale_scenario

T0 = 1_790_000_000.0
DEMO_JOBS = {
    "llm-sft-qwen2-7b": ("Running", ["worker-0", "worker-1"]),
    "resnet50-imagenet-ascend": ("Running", ["worker-0"]),
    "gpt-pretrain-megatron": ("Running", ["worker-0", "worker-1"]),
    "bert-large-finetune": ("Running", ["worker-0"]),
    "yolov8-detect-coco": ("Completed", ["worker-0"]),
    "llama-pretrain-queued": ("Pending", []),
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def demo(clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(demo_scenario(), clock=clock) as simulator:
        yield simulator


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def jobs_by_name(http: requests.Session, sim: Simulator) -> dict[str, dict[str, Any]]:
    body = http.post(f"{sim.url}/v2/{sim.project_id}/training-job-searches", json={}).json()
    return {item["metadata"]["name"]: item for item in body["items"]}


def preview(http: requests.Session, sim: Simulator, job_id: str, task: str) -> requests.Response:
    url = f"{sim.url}/v2/{sim.project_id}/training-jobs/{job_id}/tasks/{task}/logs/preview"
    return http.get(url)


def test_demo_jobs_at_start(demo: Simulator, http: requests.Session) -> None:
    jobs = jobs_by_name(http, demo)
    assert {name: (j["status"]["phase"], j["status"]["tasks"]) for name, j in jobs.items()} == {
        name: (phase, tasks) for name, (phase, tasks) in DEMO_JOBS.items()
    }
    assert jobs["resnet50-imagenet-ascend"]["algorithm"]["engine"]["engine_name"] == "MindSpore"
    assert jobs["llm-sft-qwen2-7b"]["algorithm"]["engine"]["engine_name"] == "PyTorch"
    assert all(j["metadata"]["create_time"] < T0 * 1000 for j in jobs.values())


def test_demo_running_tasks_have_lines_within_two_seconds(
    demo: Simulator, http: requests.Session, clock: FakeClock
) -> None:
    bert = demo.job_id("bert-large-finetune")
    assert preview(http, demo, bert, "worker-0").status_code == 204  # starts at t=0
    clock.now = T0 + 2
    for name, item in jobs_by_name(http, demo).items():
        for task in item["status"]["tasks"]:
            body = preview(http, demo, item["metadata"]["id"], task).json()
            assert body["full_size"] > 0, (name, task)
            assert body["content"].count("\n") >= 5, (name, task)


def test_demo_oom_job_fails_and_completed_job_is_terminal(
    demo: Simulator, http: requests.Session, clock: FakeClock
) -> None:
    bert, yolo = demo.job_id("bert-large-finetune"), demo.job_id("yolov8-detect-coco")
    clock.now = T0 + 4.9
    assert jobs_by_name(http, demo)["bert-large-finetune"]["status"]["phase"] == "Running"
    clock.now = T0 + 6
    jobs = jobs_by_name(http, demo)
    failed = jobs["bert-large-finetune"]["status"]
    assert failed["phase"] == "Failed"
    assert failed["duration"] == 5000
    assert failed["task_statuses"][0]["exit_code"] == 1
    log = preview(http, demo, bert, "worker-0").json()["content"]
    assert "Traceback (most recent call last):" in log
    assert (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has" in log
    )
    assert "[Modelarts Service Log]Training end with return code: 1\n" in log
    assert log.endswith("[Modelarts Service Log]exit with 1\n")
    assert log.index("Epoch: [0]") < log.index("Traceback") < log.index("exit with 1")

    completed = jobs["yolov8-detect-coco"]["status"]
    assert completed["phase"] in TERMINAL_PHASES
    ended = (completed["start_time"] + completed["duration"]) / 1000
    assert T0 - 3600 < ended <= T0 - 300
    log = preview(http, demo, yolo, "worker-0").json()["content"]
    assert log.endswith("[Modelarts Service Log]exit with 0\n")
    assert "Ultralytics YOLOv8" in log
    clock.now = T0 + 600
    assert preview(http, demo, yolo, "worker-0").json()["content"] == log


def test_demo_log_formats(demo: Simulator, clock: FakeClock) -> None:
    clock.now = T0 + 30
    demo.advance()
    hf = demo.log_bytes(demo.job_id("llm-sft-qwen2-7b"), "worker-0").decode()
    losses = [ast.literal_eval(m)["loss"] for m in re.findall(r"\{'loss': [^{}]*\}", hf)]
    assert len(losses) > 100
    assert sum(losses[:20]) > sum(losses[-20:])
    assert re.search(r"\r +\d+%\|[█▏▎▍▌▋▊▉ ]{10}\| \d+/60000 \[", hf)
    assert "[ModelArts Service Log][INFO][" in hf
    assert "Platform=ModelArts-Service" in hf
    assert "NCCL INFO" in hf
    worker1 = demo.log_bytes(demo.job_id("llm-sft-qwen2-7b"), "worker-1").decode()
    assert "'loss'" not in worker1
    resnet = demo.log_bytes(demo.job_id("resnet50-imagenet-ascend"), "worker-0").decode()
    assert re.search(r"^epoch: \d+ step: \d+, loss is \d+\.\d+$", resnet, re.MULTILINE)
    assert re.search(r"^epoch time: [\d.]+ ms, per step time: [\d.]+ ms$", resnet, re.MULTILINE)
    megatron = demo.log_bytes(demo.job_id("gpt-pretrain-megatron"), "worker-1").decode()
    iterations = re.findall(r"^ iteration +(\d+)/ +250000 \|.*\| lm loss: ", megatron, re.MULTILINE)
    assert len(iterations) > 1000
    assert "number of skipped iterations:   1 |" in megatron


def test_demo_logs_grow_with_the_clock(demo: Simulator, clock: FakeClock) -> None:
    job_id = demo.job_id("llm-sft-qwen2-7b")
    before = demo.log_bytes(job_id, "worker-0")
    clock.now = T0 + 10
    after = demo.log_bytes(job_id, "worker-0")
    assert after.startswith(before)
    assert len(after) > len(before)
    stamps = re.findall(rb'time="([^"]+)"', after)
    assert stamps == sorted(stamps)


def test_demo_is_deterministic(http: requests.Session) -> None:
    """Same seed and clock readings: same bytes, however often the logs were read."""
    readings: list[dict[tuple[str, str], bytes]] = []
    for polls in ([T0 + 1, T0 + 4, T0 + 5.5, T0 + 20], [T0 + 20]):
        clock = FakeClock()
        with Simulator(demo_scenario(), clock=clock) as sim:
            for now in polls:
                clock.now = now
                for item in jobs_by_name(http, sim).values():
                    for task in item["status"]["tasks"]:
                        preview(http, sim, item["metadata"]["id"], task)
            readings.append(
                {
                    (item["metadata"]["id"], task): sim.log_bytes(item["metadata"]["id"], task)
                    for item in jobs_by_name(http, sim).values()
                    for task in item["status"]["tasks"]
                }
            )
    assert readings[0] == readings[1]
    other = Simulator(demo_scenario(seed=1), clock=FakeClock())
    job_id = other.job_id("llm-sft-qwen2-7b")
    assert (job_id, "worker-0") not in readings[0]


def test_scale_scenario_builds_cheaply_and_grows(clock: FakeClock, http: requests.Session) -> None:
    scenario = scale_scenario(jobs=500, tasks_per_job=2, initial_bytes=200_000)
    first, last = scenario.jobs[0].tasks[0], scenario.jobs[-1].tasks[1]
    assert first.prefix is not None
    assert last.prefix is not None
    assert first.prefix(T0) is last.prefix(T0)  # one shared block for all 1000 logs
    with Simulator(scenario, clock=clock) as sim:
        body = http.post(
            f"{sim.url}/v2/{sim.project_id}/training-job-searches",
            json={"filters": [{"key": "phase", "operator": "in", "value": ["Running"]}]},
        ).json()
        assert body["count"] == 500
        job_id = body["items"][0]["metadata"]["id"]
        start = preview(http, sim, job_id, "worker-1").json()
        assert 200_000 <= start["full_size"] < 201_000
        clock.now = T0 + 10
        grown = preview(http, sim, job_id, "worker-1").json()
        assert 19_000 < grown["full_size"] - start["full_size"] <= 20_000
        assert grown["content"].startswith(start["content"])
        assert "lm loss:" in grown["content"][-20_000:]
    with pytest.raises(ValueError, match="growth_bytes_per_second"):
        scale_scenario(growth_bytes_per_second=0)
