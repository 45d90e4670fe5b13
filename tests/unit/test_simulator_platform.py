"""The simulator's platform APIs: running records, paged events and task metrics, checked
against the official SDK's response models (field names and types)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import pytest
import requests
from fakes import FakeClock
from huaweicloudsdkmodelarts.v1 import model as sdk_model

from modelarts_exporter.modelarts.platform import parse_event_time
from modelarts_exporter.simulator import Simulator, demo_scenario

T0 = 1_790_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(clock=clock) as simulator:
        yield simulator


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def job_url(sim: Simulator, job_id: str) -> str:
    return f"{sim.url}/v2/{sim.project_id}/training-jobs/{job_id}"


def events(http: requests.Session, sim: Simulator, job_id: str, **query: Any) -> Any:
    response = http.get(f"{job_url(sim, job_id)}/events", params=query)
    assert response.status_code == 200, response.text
    return response.json()


_LIST = re.compile(r"list\[(.+)\]")


def conforms(value: Any, openapi_type: str, where: str = "") -> list[str]:
    """Where ``value`` breaks the SDK's type for it (field names and JSON types)."""
    if value is None:
        return []
    if match := _LIST.fullmatch(openapi_type):
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        return [p for i, v in enumerate(value) for p in conforms(v, match[1], f"{where}[{i}]")]
    simple = {"int": int, "str": str, "bool": bool, "float": (int, float)}
    if openapi_type in simple:
        ok = isinstance(value, simple[openapi_type]) and (
            openapi_type == "bool" or not isinstance(value, bool)
        )
        return [] if ok else [f"{where}: {type(value).__name__} is not {openapi_type}"]
    if openapi_type.startswith("dict(") or openapi_type == "object":
        return []
    model = getattr(sdk_model, openapi_type)
    if not isinstance(value, dict):
        return [f"{where}: not an object ({openapi_type})"]
    by_json_name = {json: attr for attr, json in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in by_json_name:
            problems.append(f"{where}.{key}: not a field of {openapi_type}")
            continue
        problems += conforms(item, model.openapi_types[by_json_name[key]], f"{where}.{key}")
    return problems


def running_job(sim: Simulator, **kwargs: Any) -> str:
    return sim.add_job("train", start_time=T0 - 600, create_time=T0 - 700, **kwargs)


# --- against the SDK --------------------------------------------------------------------------


def test_answers_have_the_sdks_fields_and_types(
    sim: Simulator, http: requests.Session, clock: FakeClock
) -> None:
    job = running_job(sim, tasks=("worker-0", "worker-1"))
    clock.advance(30)
    sim.restart_job(job, reason="exit with 137", recover="pod_reschedule", task="worker-1")
    clock.advance(30)
    sim.set_phase(job, "Failed")
    details = http.get(job_url(sim, job)).json()
    assert conforms(details["status"], "Status", "status") == []
    assert conforms(events(http, sim, job), "ListTrainingJobEventsResponse") == []
    metrics = http.get(f"{job_url(sim, job)}/metrics/worker-0").json()
    assert conforms(metrics, "ShowTrainingJobMetricsResponse") == []
    assert conforms({"status": {"running_records": [{"start_at": "1"}]}}, "JobResponse") != []


# --- running records --------------------------------------------------------------------------


def test_restarts_are_running_records(
    sim: Simulator, http: requests.Session, clock: FakeClock
) -> None:
    job = running_job(sim, tasks=("worker-0", "worker-1"))
    records = http.get(job_url(sim, job)).json()["status"]["running_records"]
    assert records == [{"start_at": int(T0 - 600), "start_type": "init_or_rescheduled"}]
    clock.advance(10)
    sim.restart_job(job, reason="exit with 137", recover="pod_reschedule", task="worker-1")
    clock.advance(10)
    sim.restart_job(job, reason="hang detected", recover="gpu_proc_restart", task="worker-0")
    clock.advance(10)
    sim.set_phase(job, "Completed")
    records = http.get(job_url(sim, job)).json()["status"]["running_records"]
    assert records == [
        {
            "start_at": int(T0 - 600),
            "end_at": int(T0 + 10),
            "start_type": "init_or_rescheduled",
            "end_reason": "exit with 137",
            "end_related_task": "worker-1",
            "end_recover": "pod_reschedule",
            "end_recover_before_downgrade": "pod_reschedule",
        },
        {
            "start_at": int(T0 + 10),
            "end_at": int(T0 + 20),
            "start_type": "init_or_rescheduled",
            "end_reason": "hang detected",
            "end_related_task": "worker-0",
            "end_recover": "gpu_proc_restart",
            "end_recover_before_downgrade": "gpu_proc_restart",
        },
        {
            "start_at": int(T0 + 20),
            "end_at": int(T0 + 30),
            "start_type": "restarted",
            "end_reason": "job completed",
        },
    ]
    with pytest.raises(ValueError, match="not running"):
        sim.restart_job(job)


# --- events -----------------------------------------------------------------------------------


def test_a_jobs_life_writes_events(
    sim: Simulator, http: requests.Session, clock: FakeClock
) -> None:
    job = running_job(sim)
    clock.advance(5)
    sim.set_phase(job, "Failed", exit_code=3)
    body = events(http, sim, job)
    assert [(e["level"], e["message"], e["source"]) for e in body["events"]] == [
        ("Error", "Training job failed.", "Job"),
        ("Info", "[worker-0] Training finished. Exit code 3.", "Task"),
        ("Info", "[worker-0] training started.", "Task"),
        ("Info", "Training job is running.", "Job"),
        ("Info", "Training job created.", "Job"),
    ]
    times = [parse_event_time(e["time"]) for e in body["events"]]
    assert times == [T0 + 5, T0 + 5, T0 - 600, T0 - 600, T0 - 700]
    assert all(e["time"].endswith("+08:00") for e in body["events"])
    assert body["total"] == 5


def test_events_are_paged_by_page_index_newest_first(
    sim: Simulator, http: requests.Session
) -> None:
    job = running_job(sim)
    for i in range(120):
        sim.add_event(job, f"event {i}", at=T0 - 10 + i // 50)  # 50 events a second
    pages = [events(http, sim, job, offset=p, limit=50)["events"] for p in range(4)]
    assert [len(p) for p in pages] == [50, 50, 23, 0]  # and 3 events of the job's start
    assert pages[0][0]["message"] == "event 119"
    assert pages[2][19]["message"] == "event 0"
    oldest_first = events(http, sim, job, order="asc", limit=100)["events"]
    assert oldest_first[0]["message"] == "Training job created."
    assert [e["message"] for e in events(http, sim, job, level="Error")["events"]] == []
    assert len(events(http, sim, job)["events"]) == 50  # the default limit


@pytest.mark.parametrize(
    "query",
    [{"limit": "101"}, {"limit": "0"}, {"offset": "-1"}, {"limit": "x"}, {"order": "up"}],
)
def test_bad_event_queries(sim: Simulator, http: requests.Session, query: dict[str, str]) -> None:
    job = running_job(sim)
    response = http.get(f"{job_url(sim, job)}/events", params=query)
    assert response.status_code == 400
    assert response.json()["error_code"] == "ModelArts.2788"


def test_events_scripted_for_later_appear_with_the_clock(
    sim: Simulator, http: requests.Session, clock: FakeClock
) -> None:
    job = running_job(sim)
    sim.add_event(job, "later", at=T0 + 60)
    assert "later" not in [e["message"] for e in events(http, sim, job)["events"]]
    clock.advance(60)
    assert events(http, sim, job)["events"][0]["message"] == "later"


def test_a_request_hook_sees_every_request(sim: Simulator, http: requests.Session) -> None:
    job = running_job(sim)
    seen: list[tuple[str, str, Mapping[str, str]]] = []
    sim.set_request_hook(lambda method, path, query: seen.append((method, path, query)))
    events(http, sim, job, offset=1)
    sim.set_request_hook(None)
    events(http, sim, job)
    assert seen == [("GET", f"/v2/{sim.project_id}/training-jobs/{job}/events", {"offset": "1"})]


# --- task metrics -----------------------------------------------------------------------------


def test_task_metrics_per_minute(sim: Simulator, http: requests.Session, clock: FakeClock) -> None:
    gpu_job = sim.add_job("gpu", start_time=T0 - 300)
    npu_job = sim.add_job("npu", start_time=T0 - 3600, flavor="modelarts.kat1.8xlarge")
    gpu = {
        m["metric"]: m["value"]
        for m in http.get(f"{job_url(sim, gpu_job)}/metrics/worker-0").json()["metrics"]
    }
    npu = {
        m["metric"]: m["value"]
        for m in http.get(f"{job_url(sim, npu_job)}/metrics/worker-0").json()["metrics"]
    }
    assert (
        set(gpu)
        == set(npu)
        == {
            "cpuUsage",
            "memUsage",
            "gpuUtil",
            "gpuMemUsage",
            "npuUtil",
            "npuMemUsage",
        }
    )
    assert all(len(values) == 15 for values in gpu.values())
    minutes_running = sum(1 for v in gpu["cpuUsage"] if v != -1)
    assert minutes_running in (5, 6)  # minutes before the start have no sample
    assert all(70 <= v <= 99 for v in gpu["gpuUtil"] if v != -1)
    assert set(gpu["npuUtil"]) == {-1}
    assert set(npu["gpuUtil"]) == {-1}
    assert all(65 <= v <= 98 for v in npu["npuUtil"])
    sim.set_task_metrics(gpu_job, "worker-0", {"gpuUtil": 1.5, "gpuMemUsage": None})
    gpu = {
        m["metric"]: m["value"]
        for m in http.get(f"{job_url(sim, gpu_job)}/metrics/worker-0").json()["metrics"]
    }
    assert gpu["gpuUtil"][-1] == 1.5
    assert set(gpu["gpuMemUsage"]) == {-1}
    assert http.get(f"{job_url(sim, gpu_job)}/metrics/worker-7").status_code == 400


# --- the demo ---------------------------------------------------------------------------------


def test_the_demo_has_restarts_a_live_one_and_scheduling_warnings(
    http: requests.Session, clock: FakeClock
) -> None:
    with Simulator(demo_scenario(), clock=clock) as sim:
        gpt = sim.job_id("gpt-pretrain-megatron")
        records = http.get(job_url(sim, gpt)).json()["status"]["running_records"]
        assert [r.get("end_recover") for r in records] == ["pod_reschedule", "proc_restart", None]
        clock.advance(21)
        records = http.get(job_url(sim, gpt)).json()["status"]["running_records"]
        assert len(records) == 4
        assert records[2]["end_recover"] == "gpu_proc_restart"
        queued = sim.job_id("llama-pretrain-queued")
        warnings = events(http, sim, queued, level="Warning")["events"]
        assert len(warnings) == 3
        assert "Insufficient nvidia.com/gpu" in warnings[0]["message"]
        assert all(isinstance(datetime.fromisoformat(e["time"]), datetime) for e in warnings)
