"""The ModelArts simulator's HTTP API: list, details, preview windows, routing, control
methods and injected faults. The clock is injected; nothing sleeps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.client import HTTPConnection
from typing import Any

import pytest
import requests
from fakes import FakeClock
from hypothesis import given
from hypothesis import strategies as st

from modelarts_exporter.simulator import Fault, RequestRecord, Simulator
from modelarts_exporter.simulator.logs import decode_window

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


def list_jobs(http: requests.Session, sim: Simulator, **body: Any) -> requests.Response:
    return http.post(f"{sim.url}/v2/{sim.project_id}/training-job-searches", json=body)


def job_url(sim: Simulator, job_id: str) -> str:
    return f"{sim.url}/v2/{sim.project_id}/training-jobs/{job_id}"


def preview_url(sim: Simulator, job_id: str, task: str = "worker-0") -> str:
    return f"{job_url(sim, job_id)}/tasks/{task}/logs/preview"


def error_code(response: requests.Response) -> str:
    return str(response.json()["error_code"])


# --- list ----------------------------------------------------------------------------


def test_pagination_uses_page_indexes(sim: Simulator, http: requests.Session) -> None:
    ids = [sim.add_job(f"job-{i:03d}", create_time=T0 - 1000 + i) for i in range(120)]
    newest_first = ids[::-1]
    seen: list[str] = []
    for page, expected in enumerate([50, 50, 20, 0]):
        body = list_jobs(http, sim, offset=page, limit=50).json()
        assert (body["total"], body["count"], body["offset"], body["limit"]) == (
            120,
            120,
            page,
            50,
        )
        assert len(body["items"]) == expected
        seen += [item["metadata"]["id"] for item in body["items"]]
    assert seen == newest_first
    ascending = list_jobs(http, sim, offset=1, limit=30, order="asc").json()
    assert [i["metadata"]["id"] for i in ascending["items"]] == ids[30:60]


def test_list_defaults_and_envelope(sim: Simulator, http: requests.Session) -> None:
    sim.add_job("a")
    body = http.post(f"{sim.url}/v2/{sim.project_id}/training-job-searches").json()
    assert {k: v for k, v in body.items() if k != "items"} == {
        "total": 1,
        "count": 1,
        "limit": 50,
        "offset": 0,
        "sort_by": "create_time",
        "order": "desc",
        "group_by": "",
        "workspace_id": "0",
        "ai_project": "default-ai-project",
    }


def test_phase_and_name_filters(sim: Simulator, http: requests.Session) -> None:
    sim.add_job("resnet-a", phase="Running")
    sim.add_job("resnet-b", phase="Failed")
    sim.add_job("bert-c", phase="Pending", tasks=())
    sim.add_job("bert-d", phase="Completed")

    def names(*filters: dict[str, Any]) -> set[str]:
        body = list_jobs(http, sim, filters=list(filters)).json()
        assert body["total"] == 4
        assert body["count"] == len(body["items"])
        return {item["metadata"]["name"] for item in body["items"]}

    running = {"key": "phase", "operator": "in", "value": ["Running", "Pending"]}
    assert names(running) == {"resnet-a", "bert-c"}
    assert names({"key": "phase", "operator": "not", "value": ["Running"]}) == {
        "resnet-b",
        "bert-c",
        "bert-d",
    }
    assert names({"key": "name", "operator": "like", "value": ["resnet"]}) == {
        "resnet-a",
        "resnet-b",
    }
    assert names(running, {"key": "name", "operator": "like", "value": ["bert"]}) == {"bert-c"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"limit": 0}, "ModelArts.2788"),
        ({"limit": 51}, "ModelArts.2788"),
        ({"limit": "10"}, "ModelArts.2788"),
        ({"offset": -1}, "ModelArts.2788"),
        ({"order": "up"}, "ModelArts.2788"),
        ({"sort_by": "name"}, "ModelArts.2790"),
        ({"filters": [{"key": "kind", "operator": "in", "value": ["job"]}]}, "ModelArts.2807"),
        (
            {"filters": [{"key": "phase", "operator": "like", "value": ["Run"]}]},
            "ModelArts.2807",
        ),
        (
            {"filters": [{"key": "phase", "operator": "in", "value": "Running"}]},
            "ModelArts.2788",
        ),
    ],
)
def test_invalid_list_requests(
    sim: Simulator, http: requests.Session, body: dict[str, Any], code: str
) -> None:
    response = list_jobs(http, sim, **body)
    assert response.status_code == 400
    assert error_code(response) == code
    assert response.json()["error_msg"]


def test_malformed_json_body(sim: Simulator, http: requests.Session) -> None:
    url = f"{sim.url}/v2/{sim.project_id}/training-job-searches"
    for data in (b"{not json", b"[1, 2]"):
        response = http.post(url, data=data)
        assert (response.status_code, error_code(response)) == (400, "ModelArts.2787")


# --- details -----------------------------------------------------------------------


def test_details_job_response(sim: Simulator, http: requests.Session, clock: FakeClock) -> None:
    job_id = sim.add_job(
        "bert",
        tasks=("worker-0", "worker-1"),
        engine=("MindSpore", "MindSpore-2.2.14-python3.9-aarch64"),
        flavor="modelarts.kat1.8xlarge",
        create_time=T0 - 60,
        start_time=T0 - 30,
    )
    clock.now = T0 + 12.5
    job = http.get(job_url(sim, job_id)).json()
    assert job["kind"] == "job"
    assert job["metadata"]["id"] == job_id
    assert job["metadata"]["name"] == "bert"
    assert job["metadata"]["create_time"] == round((T0 - 60) * 1000)
    status = job["status"]
    assert (status["phase"], status["secondary_phase"]) == ("Running", "Running")
    assert status["start_time"] == round((T0 - 30) * 1000)
    assert status["duration"] == 42_500
    assert status["tasks"] == ["worker-0", "worker-1"]
    assert status["task_statuses"] == []
    engine = job["algorithm"]["engine"]
    assert (engine["engine_name"], engine["engine_version"]) == (
        "MindSpore",
        "MindSpore-2.2.14-python3.9-aarch64",
    )
    resource = job["spec"]["resource"]
    assert (resource["flavor_id"], resource["node_count"]) == ("modelarts.kat1.8xlarge", 2)
    assert resource["flavor_detail"]["flavor_type"] == "Ascend"
    list_item = list_jobs(http, sim).json()["items"][0]
    assert list_item == job


def test_unknown_and_deleted_jobs_answer_2775(sim: Simulator, http: requests.Session) -> None:
    job_id = sim.add_job("gone")
    sim.append_log(job_id, "worker-0", b"line\n")
    sim.delete_job(job_id)
    for url in (job_url(sim, job_id), preview_url(sim, job_id)):
        response = http.get(url)
        assert response.status_code == 400
        assert response.json() == {
            "error_code": "ModelArts.2775",
            "error_msg": f"Training job (ID: {job_id}) not found.",
        }
    assert list_jobs(http, sim).json()["total"] == 0


def test_phase_changes_set_duration_and_exit(
    sim: Simulator, http: requests.Session, clock: FakeClock
) -> None:
    job_id = sim.add_job("queued", phase="Pending", tasks=())
    assert http.get(job_url(sim, job_id)).json()["status"]["start_time"] == 0
    clock.now = T0 + 10
    sim.set_phase(job_id, "Running", tasks=("worker-0",))
    clock.now = T0 + 70
    sim.set_phase(job_id, "Failed")
    clock.now = T0 + 500
    status = http.get(job_url(sim, job_id)).json()["status"]
    assert status["phase"] == "Failed"
    assert status["start_time"] == round((T0 + 10) * 1000)
    assert status["duration"] == 60_000
    assert status["tasks"] == ["worker-0"]
    assert status["task_statuses"] == [
        {"task": "worker-0", "exit_code": 1, "message": "exit with 1"}
    ]
    sim.set_phase(job_id, "Completed", duration_ms=1234, exit_code=0)
    status = http.get(job_url(sim, job_id)).json()["status"]
    assert (status["duration"], status["task_statuses"][0]["exit_code"]) == (1234, 0)
    with pytest.raises(ValueError, match="unknown phase"):
        sim.set_phase(job_id, "Exploded")


# --- routing --------------------------------------------------------------------------


def test_routing_errors(sim: Simulator, http: requests.Session) -> None:
    job_id = sim.add_job("a")
    wrong_project = http.get(
        f"{sim.url}/v2/ffffffffffffffffffffffffffffffff/training-jobs/{job_id}"
    )
    assert (wrong_project.status_code, error_code(wrong_project)) == (404, "ModelArts.2786")
    unknown = http.get(f"{sim.url}/v2/{sim.project_id}/notebooks")
    assert (unknown.status_code, error_code(unknown)) == (404, "ModelArts.2836")
    wrong_method = http.get(f"{sim.url}/v2/{sim.project_id}/training-job-searches")
    assert (wrong_method.status_code, error_code(wrong_method)) == (405, "ModelArts.2803")
    assert http.delete(job_url(sim, job_id)).status_code == 405


# --- preview --------------------------------------------------------------------------


def test_preview_before_the_log_exists_is_204(sim: Simulator, http: requests.Session) -> None:
    job_id = sim.add_job("starting")
    response = http.get(preview_url(sim, job_id))
    assert response.status_code == 204
    assert response.content == b""
    assert "Content-Length" not in response.headers
    sim.append_log(job_id, "worker-0", b"")
    assert http.get(preview_url(sim, job_id)).json() == {
        "content": "",
        "current_size": 0,
        "full_size": 0,
    }


def test_preview_unknown_task_is_2818(sim: Simulator, http: requests.Session) -> None:
    job_id = sim.add_job("a")
    response = http.get(preview_url(sim, job_id, "worker-7"))
    assert (response.status_code, error_code(response)) == (400, "ModelArts.2818")


def test_preview_returns_the_tail_window(sim: Simulator, http: requests.Session) -> None:
    job_id = sim.add_job("a")
    log = b"".join(b"line %04d\n" % i for i in range(100))  # 1000 bytes
    sim.append_log(job_id, "worker-0", log)
    assert http.get(preview_url(sim, job_id)).json() == {
        "content": log.decode(),
        "current_size": 1000,
        "full_size": 1000,
    }
    sim.set_window_bytes(25)
    body = http.get(preview_url(sim, job_id)).json()
    assert body == {"content": log[-25:].decode(), "current_size": 25, "full_size": 1000}
    sim.append_log(job_id, "worker-0", b"more")
    body = http.get(preview_url(sim, job_id)).json()
    assert (body["content"], body["full_size"]) == ((log + b"more")[-25:].decode(), 1004)
    assert sim.log_bytes(job_id, "worker-0") == log + b"more"


def test_preview_cuts_inside_multibyte_characters(sim: Simulator, http: requests.Session) -> None:
    job_id = sim.add_job("utf8")
    # "€" is 3 bytes, "😀" 4; the log ends with the first 2 bytes of another "😀".
    log = "ab€cd😀ef".encode() + "😀".encode()[:2]
    sim.append_log(job_id, "worker-0", log)
    full = len(log)
    for window in range(1, full + 1):
        sim.set_window_bytes(window)
        body = http.get(preview_url(sim, job_id)).json()
        raw = log[full - window :]
        assert (body["current_size"], body["full_size"]) == (window, full)
        encoded = body["content"].encode()
        lead = raw.find(encoded) if encoded else 0
        assert 0 <= lead <= 3
        assert raw[lead : lead + len(encoded)] == encoded
        assert len(raw) - lead - len(encoded) <= 3
        assert "\ufffd" not in body["content"]
    sim.set_window_bytes(11)  # starts on the last byte of "€", ends inside "😀"
    assert http.get(preview_url(sim, job_id)).json()["content"] == "cd😀ef"


def test_preview_keeps_invalid_utf8_as_replacement(sim: Simulator, http: requests.Session) -> None:
    job_id = sim.add_job("gbk")
    sim.append_log(job_id, "worker-0", b"ok \xd6\xd0\xce\xc4 bad\nnext \xff line\n")
    body = http.get(preview_url(sim, job_id)).json()
    assert body["content"] == "ok \ufffd\ufffd\ufffd\ufffd bad\nnext \ufffd line\n"
    assert body["current_size"] == body["full_size"] == 24


def test_reset_log_restarts_it(sim: Simulator, http: requests.Session) -> None:
    job_id = sim.add_job("restarted")
    sim.append_log(job_id, "worker-0", b"x" * 500)
    sim.reset_log(job_id, "worker-0", b"fresh start\n")
    assert http.get(preview_url(sim, job_id)).json() == {
        "content": "fresh start\n",
        "current_size": 12,
        "full_size": 12,
    }


def test_legacy_context_field(clock: FakeClock, http: requests.Session) -> None:
    with Simulator(clock=clock, legacy_context_field=True) as sim:
        job_id = sim.add_job("old")
        sim.append_log(job_id, "worker-0", b"hello\n")
        body = http.get(preview_url(sim, job_id)).json()
    assert body == {"context": "hello\n", "current_size": 6, "full_size": 6}


@given(
    text=st.text(
        alphabet=st.sampled_from(["a", "\n", "é", "€", "😀", "中"]), min_size=0, max_size=40
    ),
    window=st.integers(min_value=1, max_value=200),
    torn=st.integers(min_value=0, max_value=3),
)
def test_decode_window_is_an_aligned_slice(text: str, window: int, torn: int) -> None:
    """The content is the window minus at most 3 bytes at each end, never a broken char."""
    log = text.encode() + "😀".encode()[:torn]
    raw = log[max(0, len(log) - window) :]
    content = decode_window(raw, cut=len(log) > len(raw))
    encoded = content.encode()
    assert "\ufffd" not in content
    assert encoded in raw
    if encoded:
        lead = raw.find(encoded)
        assert lead <= 3
        assert len(raw) - lead - len(encoded) <= 3
    else:  # a window holding only parts of characters
        assert len(raw) <= 6
    assert content in text


def test_decode_window_edges() -> None:
    assert decode_window("a😀".encode(), cut=False) == "a😀"
    # no cut: leading continuation bytes are data and show as replacement characters
    assert decode_window(b"\x82abc", cut=False) == "\ufffdabc"
    assert decode_window(b"\x82abc", cut=True) == "abc"
    # a lone continuation byte at the end is invalid data, not a torn character
    assert decode_window(b"abc\x82", cut=False) == "abc\ufffd"
    assert decode_window(b"", cut=True) == ""


# --- HTTP/1.1 ------------------------------------------------------------------------


def test_keep_alive_connection_serves_many_requests(sim: Simulator) -> None:
    job_id = sim.add_job("a")
    host, port = sim.url.removeprefix("http://").split(":")
    conn = HTTPConnection(host, int(port), timeout=5)
    try:
        for _ in range(3):
            conn.request(
                "GET", f"/v2/{sim.project_id}/training-jobs/{job_id}/tasks/worker-0/logs/preview"
            )
            response = conn.getresponse()
            assert (response.status, response.read()) == (204, b"")
            conn.request("POST", f"/v2/{sim.project_id}/training-job-searches", body=b"{}")
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200
            assert int(response.headers["Content-Length"]) == len(body)
            assert json.loads(body)["count"] == 1
    finally:
        conn.close()


# --- faults ---------------------------------------------------------------------------


def test_fault_answers_then_runs_out(sim: Simulator, http: requests.Session) -> None:
    sim.inject(
        Fault(
            path_pattern="training-job-searches$",
            status=503,
            body=b'{"error_code": "ModelArts.4302", "error_msg": "gateway"}',
            times=2,
        )
    )
    assert [list_jobs(http, sim).status_code for _ in range(3)] == [503, 503, 200]


def test_fault_html_page_and_malformed_json(sim: Simulator, http: requests.Session) -> None:
    sim.inject(
        Fault(
            status=502,
            body=b"<html><body>502 Bad Gateway</body></html>",
            headers={"Content-Type": "text/html"},
        )
    )
    sim.inject(Fault(status=200, body=b'{"total": 3, "items": ['))
    html = list_jobs(http, sim)
    assert (html.status_code, html.headers["Content-Type"]) == (502, "text/html")
    assert html.text.startswith("<html>")
    broken = list_jobs(http, sim)
    assert broken.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        broken.json()


def test_fault_wrong_field_types(sim: Simulator, http: requests.Session) -> None:
    job_id = sim.add_job("a")
    body = b'{"content": 42, "current_size": "big", "full_size": null}'
    sim.inject(Fault(method="GET", path_pattern=r"/logs/preview$", status=200, body=body))
    assert list_jobs(http, sim).json()["count"] == 1  # a POST: not matched
    response = http.get(preview_url(sim, job_id))
    assert response.json() == {"content": 42, "current_size": "big", "full_size": None}


def test_fault_429_with_and_without_retry_after(sim: Simulator, http: requests.Session) -> None:
    throttled = b'{"error_code": "ModelArts.2799", "error_msg": "services too many requests"}'
    sim.inject(Fault(status=429, body=throttled, headers={"Retry-After": "7"}))
    sim.inject(Fault(status=429, body=throttled))
    first, second = list_jobs(http, sim), list_jobs(http, sim)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert second.status_code == 429
    assert "Retry-After" not in second.headers


def test_fault_delay(sim: Simulator, http: requests.Session) -> None:
    sim.inject(Fault(path_pattern="searches", status=None, delay_seconds=2.0))
    with pytest.raises(requests.ReadTimeout):
        list_jobs_with_timeout(http, sim, 0.1)
    sim.inject(Fault(path_pattern="searches", status=None, delay_seconds=0.05))
    assert list_jobs_with_timeout(http, sim, 5.0).json()["count"] == 0


def list_jobs_with_timeout(
    http: requests.Session, sim: Simulator, timeout: float
) -> requests.Response:
    url = f"{sim.url}/v2/{sim.project_id}/training-job-searches"
    return http.post(url, json={}, timeout=timeout)


def test_fault_drops_the_connection(sim: Simulator, http: requests.Session) -> None:
    sim.inject(Fault(drop_connection=True))
    with pytest.raises(requests.ConnectionError):
        list_jobs(http, sim)
    assert list_jobs(http, sim).status_code == 200
    path = f"/v2/{sim.project_id}/training-job-searches"
    assert sim.requests == [
        RequestRecord("POST", path, 0, "anonymous"),
        RequestRecord("POST", path, 200, "anonymous"),
    ]


def test_faults_apply_in_injection_order(sim: Simulator, http: requests.Session) -> None:
    sim.inject(Fault(status=500))
    sim.inject(Fault(status=502))
    sim.inject(Fault(status=503))
    assert [list_jobs(http, sim).status_code for _ in range(4)] == [500, 502, 503, 200]
    sim.inject(Fault(status=500, times=5))
    sim.clear_faults()
    assert list_jobs(http, sim).status_code == 200
    with pytest.raises(ValueError, match="times"):
        sim.inject(Fault(times=0))


def test_requests_are_recorded(sim: Simulator, http: requests.Session) -> None:
    job_id = sim.add_job("a")
    http.get(job_url(sim, job_id), headers={"X-Auth-Token": "nope"})
    http.get(f"{sim.url}/nowhere")
    assert sim.requests == [
        RequestRecord("GET", f"/v2/{sim.project_id}/training-jobs/{job_id}", 401, "token"),
        RequestRecord("GET", "/nowhere", 404, "anonymous"),
    ]


def test_lifecycle(clock: FakeClock) -> None:
    sim = Simulator(clock=clock)
    with pytest.raises(RuntimeError, match="not running"):
        _ = sim.url
    sim.start()
    try:
        assert sim.url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="already running"):
            sim.start()
        with requests.Session() as session:
            assert list_jobs(session, sim).status_code == 200
    finally:
        sim.stop()
    sim.stop()
    with pytest.raises(ValueError, match="window_bytes"):
        Simulator(window_bytes=0)
