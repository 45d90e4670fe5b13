"""ModelArtsClient against a scripted local HTTP server; Throttle with a fake clock."""

from __future__ import annotations

import dataclasses
import io
import logging
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from httpfake import FakeServer, Recorded, Reply, json_reply, refused_url
from urllib3.exceptions import ReadTimeoutError

from modelarts_exporter.modelarts import client as client_module
from modelarts_exporter.modelarts import errors
from modelarts_exporter.modelarts.auth import AkSkAuth, PasswordAuth, TokenAuth
from modelarts_exporter.modelarts.client import ModelArtsClient, RetryPolicy, parse_retry_after
from modelarts_exporter.modelarts.throttle import Throttle
from modelarts_exporter.modelarts.types import LogPreview, TrainingJob

PROJECT = "0123456789abcdef0123456789abcdef"
TOKEN = "MIIclient-test-token"
JOB = "3faf5c03-aaa1-4cbe-879d-24b05d997347"
JOBS = f"/v2/{PROJECT}/training-jobs"
SEARCH = f"/v2/{PROJECT}/training-job-searches"
PREVIEW = f"{JOBS}/{JOB}/tasks/worker-0/logs/preview"

# An abridged list item, as the API documentation shows one.
DOC_ITEM: dict[str, Any] = {
    "kind": "job",
    "metadata": {
        "id": JOB,
        "name": "trainjob--py14_mem06-byd-108",
        "description": "",
        "create_time": 1636447346315,
        "workspace_id": "0",
        "user_name": "ei_modelarts_q00357245_01",
    },
    "status": {
        "phase": "Abnormal",
        "secondary_phase": "CreateFailed",
        "duration": 0,
        "start_time": 0,
        "node_count_metrics": [[1636447746000, 0], [1636447755000, 0]],
        "tasks": ["worker-0"],
    },
    "algorithm": {
        "code_dir": "obs://bucket/",
        "engine": {
            "engine_id": "pytorch-cp36-1.4.0-v2",
            "engine_name": "PyTorch",
            "engine_version": "PyTorch-1.4.0-python3.6-v2",
        },
    },
    "spec": {"resource": {"policy": "economic", "flavor_id": "modelarts.vm.pnt1.large.eco"}},
}


def item(job_id: str, phase: str = "Running", tasks: list[str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"id": job_id, "name": f"name-{job_id}", "create_time": 1700000000000},
        "status": {"phase": phase, "tasks": ["worker-0"] if tasks is None else tasks},
    }


class MaxRng(random.Random):
    """Full jitter drawn at its maximum, so that backoff delays are exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, errors.ModelArtsError | None]] = []

    def observe(
        self, endpoint: str, duration_seconds: float, error: errors.ModelArtsError | None
    ) -> None:
        self.calls.append((endpoint, duration_seconds, error))

    def summary(self) -> list[tuple[str, str | None]]:
        return [(e, None if err is None else type(err).__name__) for e, _, err in self.calls]


class SpyThrottle(Throttle):
    def __init__(self) -> None:
        super().__init__(None)
        self.acquired = 0
        self.pauses: list[float] = []

    def acquire(self, timeout: float | None = None, stop: Any = None) -> bool:
        self.acquired += 1
        return True

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


@dataclasses.dataclass
class Harness:
    server: FakeServer
    sleeps: list[float]
    observer: Observer
    throttle: SpyThrottle

    def client(
        self, auth: Any = None, *, endpoint: str | None = None, **kwargs: Any
    ) -> ModelArtsClient:
        """A client with fake sleep, maximal jitter, a spy throttle and an observer."""
        options: dict[str, Any] = {
            "sleep": self.sleeps.append,
            "rng": MaxRng(),
            "observer": self.observer,
            "throttle": self.throttle,
            **kwargs,
        }
        return ModelArtsClient(
            endpoint or self.server.url, PROJECT, auth or TokenAuth(TOKEN), **options
        )


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


@pytest.fixture
def harness(server: FakeServer) -> Harness:
    return Harness(server, [], Observer(), SpyThrottle())


def error_reply(
    status: int, code: str, message: str = "msg", retry_after: str | None = None
) -> Reply:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return json_reply({"error_code": code, "error_msg": message}, status, **headers)


# -- listing ----------------------------------------------------------------------------------


def paged(jobs: list[dict[str, Any]]) -> Any:
    def handler(request: Recorded) -> Reply:
        body = request.json()
        start = body["offset"] * body["limit"]
        page = jobs[start : start + body["limit"]]
        return json_reply({"total": len(jobs), "count": len(jobs), "items": page})

    return handler


def test_pagination_uses_page_indexes(harness: Harness) -> None:
    harness.server.fallback = paged([item(f"job-{i}") for i in range(120)])
    jobs = harness.client().list_jobs()

    assert [job.id for job in jobs] == [f"job-{i}" for i in range(120)]
    bodies = [r.json() for r in harness.server.requests]
    assert [(b["offset"], b["limit"]) for b in bodies] == [(0, 50), (1, 50), (2, 50)]
    assert all(r.method == "POST" and r.path == SEARCH for r in harness.server.requests)
    assert harness.throttle.acquired == 3
    assert harness.observer.summary() == [("list_jobs", None)] * 3


def test_pagination_stops_at_count_and_is_lazy(harness: Harness) -> None:
    harness.server.fallback = paged([item(f"job-{i}") for i in range(100)])
    jobs = harness.client().iter_jobs()
    assert next(jobs).id == "job-0"
    assert len(harness.server.requests) == 1
    assert len(list(jobs)) == 99
    assert len(harness.server.requests) == 2  # (1+1)*50 >= count: no empty third page


def test_phase_filter_and_workspace_in_body(harness: Harness) -> None:
    harness.server.script(json_reply({"count": 0, "items": []}))
    client = harness.client(workspace_id="ws-1", page_size=500)
    assert client.list_jobs(["Running", "Pending"], sort_by="name", order="asc") == []
    assert harness.server.requests[0].json() == {
        "offset": 0,
        "limit": 50,
        "sort_by": "name",
        "order": "asc",
        "filters": [{"key": "phase", "operator": "in", "value": ["Running", "Pending"]}],
        "workspace_id": "ws-1",
    }


def test_no_filter_without_phases_and_nothing_for_no_phases(harness: Harness) -> None:
    harness.server.script(json_reply({"items": []}), json_reply({"items": []}))
    client = harness.client(page_size=0)
    client.list_jobs()
    client.list_jobs("Running")
    assert client.list_jobs([]) == []
    first, second = (r.json() for r in harness.server.requests)
    assert "filters" not in first
    assert first["limit"] == 1
    assert second["filters"][0]["value"] == ["Running"]


def test_a_server_repeating_its_page_is_not_followed_forever(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    page = json_reply({"items": [item(f"job-{i}") for i in range(50)]})
    harness.server.fallback = page
    assert len(harness.client().list_jobs()) == 50
    assert len(harness.server.requests) == 2
    assert "repeats" in caplog.text


def test_a_job_shifting_to_the_next_page_is_yielded_once(harness: Harness) -> None:
    harness.server.script(
        json_reply({"count": 4, "items": [item("a"), item("b")]}),
        json_reply({"count": 4, "items": [item("b"), item("c")]}),
    )
    assert [job.id for job in harness.client(page_size=2).list_jobs()] == ["a", "b", "c"]


def test_endless_pages_are_capped(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_PAGES", 3)
    harness.server.fallback = lambda r: json_reply({"items": [item(f"p{r.json()['offset']}")]})
    assert len(harness.client(page_size=1).list_jobs()) == 3
    assert len(harness.server.requests) == 3


def test_job_parsing_from_the_documented_item(harness: Harness) -> None:
    harness.server.script(json_reply({"count": 1, "items": [DOC_ITEM]}))
    [job] = harness.client().list_jobs()
    assert job == TrainingJob(
        id=JOB,
        name="trainjob--py14_mem06-byd-108",
        phase="Abnormal",
        tasks=("worker-0",),
        create_time_ms=1636447346315,
        start_time_ms=0,
        duration_ms=0,
        engine="PyTorch PyTorch-1.4.0-python3.6-v2",
        flavor="modelarts.vm.pnt1.large.eco",
    )


def test_bad_items_are_skipped_with_a_warning(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    minimal = {"metadata": {"id": "min"}, "status": {"phase": "Pending", "tasks": None}}
    partial_engine = {**item("eng"), "algorithm": {"engine": {"engine_version": "v2"}}}
    bad = [
        "not an object",
        {"metadata": {"name": "no id"}, "status": {"phase": "Running"}},
        {"metadata": {"id": "no-phase"}, "status": {}},
        {"metadata": {"id": "int-phase"}, "status": {"phase": 3}},
        {"metadata": {"id": "no-status"}},
        {**item("bad-tasks"), "status": {"phase": "Running", "tasks": [1]}},
        {**item("bad-time"), "metadata": {"id": "bad-time", "create_time": "yesterday"}},
        {**item("bad-flavor"), "spec": {"resource": {"flavor_id": 7}}},
    ]
    harness.server.script(json_reply({"items": [item("ok"), *bad, minimal, partial_engine]}))
    with caplog.at_level(logging.WARNING, logger="exporter.modelarts"):
        jobs = harness.client().list_jobs()
    assert [job.id for job in jobs] == ["ok", "min", "eng"]
    assert jobs[1] == TrainingJob(id="min", name="", phase="Pending", tasks=())
    assert jobs[2].engine == "v2"
    assert len(caplog.records) == len(bad)
    assert "bad-time: field create_time is not an integer" in caplog.text
    assert "status.phase" in caplog.text


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "not a JSON object"),
        ({"items": {"a": 1}}, "items is not a list"),
    ],
)
def test_malformed_pages_are_bad_responses(harness: Harness, body: Any, match: str) -> None:
    harness.server.script(json_reply(body))
    with pytest.raises(errors.BadResponseError, match=match):
        harness.client().list_jobs()


# -- details ---------------------------------------------------------------------------------


def test_get_job(harness: Harness) -> None:
    harness.server.script(json_reply(DOC_ITEM))
    job = harness.client().get_job(JOB)
    assert job.id == JOB
    assert job.terminal
    [request] = harness.server.requests
    assert (request.method, request.path) == ("GET", f"{JOBS}/{JOB}")
    assert request.header("X-Auth-Token") == TOKEN
    assert request.header("Content-Type") == "application/json"
    assert (request.header("User-Agent") or "").startswith("modelarts-exporter/")
    assert request.body == b""


def test_deleted_job(harness: Harness) -> None:
    harness.server.script(
        error_reply(400, "ModelArts.2775", f"Training job (ID: {JOB}) not found.")
    )
    with pytest.raises(errors.JobNotFoundError) as info:
        harness.client().get_job(JOB)
    assert info.value.error_code == "ModelArts.2775"
    assert info.value.status == 400
    assert len(harness.server.requests) == 1


def test_unusable_details_name_the_field(harness: Harness) -> None:
    harness.server.script(json_reply({"metadata": {"id": JOB}, "status": {"phase": None}}))
    with pytest.raises(errors.BadResponseError, match=r"status\.phase"):
        harness.client().get_job(JOB)


def test_ids_are_quoted_in_paths(harness: Harness) -> None:
    harness.server.script(json_reply(item("x")), Reply(204))
    client = harness.client()
    client.get_job("a/b?c")
    client.preview_log("100%", "worker#0")
    assert [r.path for r in harness.server.requests] == [
        f"{JOBS}/a%2Fb%3Fc",
        f"{JOBS}/100%25/tasks/worker%230/logs/preview",
    ]
    with pytest.raises(ValueError, match="empty"):
        client.preview_log(JOB, "")
    for dots in (".", ".."):
        with pytest.raises(errors.BadResponseError, match="not a usable URL path segment"):
            client.preview_log(JOB, dots)
        with pytest.raises(errors.BadResponseError, match="not a usable URL path segment"):
            client.get_job(dots)
    assert len(harness.server.requests) == 2


# -- log preview ----------------------------------------------------------------------------


def test_preview(harness: Harness) -> None:
    harness.server.script(json_reply({"content": "a\nb\n", "current_size": 4, "full_size": 10}))
    preview = harness.client().preview_log(JOB, "worker-0")
    assert preview == LogPreview(content="a\nb\n", current_size=4, full_size=10)
    assert harness.server.requests[0].path == PREVIEW
    assert harness.observer.summary() == [("preview_log", None)]


def test_preview_accepts_the_old_field_name_context(harness: Harness) -> None:
    harness.server.script(json_reply({"context": "old\n", "current_size": 4, "full_size": 4}))
    preview = harness.client().preview_log(JOB, "worker-0")
    assert preview is not None
    assert preview.content == "old\n"


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(204), id="204"),
        pytest.param(Reply(204, headers={"Content-Type": "application/json"}), id="204-json"),
        pytest.param(error_reply(400, "ModelArts.2818", "log file not generated"), id="2818"),
    ],
)
def test_preview_not_ready_is_none(harness: Harness, reply: Reply) -> None:
    harness.server.script(reply)
    assert harness.client().preview_log(JOB, "worker-0") is None
    assert harness.observer.summary() == [("preview_log", None)]
    assert harness.sleeps == []


@pytest.mark.parametrize("code", ["ModelArts.2819", "ModelArts.2820", "ModelArts.2822"])
def test_preview_log_unavailable(harness: Harness, code: str) -> None:
    harness.server.script(error_reply(400, code, "LogFileHasCleared"))
    with pytest.raises(errors.LogUnavailableError) as info:
        harness.client().preview_log(JOB, "worker-0")
    assert info.value.error_code == code
    assert harness.observer.summary() == [("preview_log", "LogUnavailableError")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"current_size": 1, "full_size": 1}, "content"),
        ({"content": 5, "current_size": 1, "full_size": 1}, "content"),
        ({"content": "", "full_size": 1}, "current_size"),
        ({"content": "", "current_size": "1", "full_size": 1}, "current_size"),
        ({"content": "", "current_size": True, "full_size": 1}, "current_size"),
        ({"content": "", "current_size": 1.0, "full_size": 1}, "current_size"),
        ({"content": "", "current_size": 0, "full_size": -1}, "full_size"),
        ({"content": "", "current_size": 0, "full_size": 2**40 + 1}, "full_size"),
        ({"content": "", "current_size": 5, "full_size": 4}, "current_size"),
        (["content"], "JSON object"),
    ],
)
def test_preview_bad_fields(harness: Harness, body: Any, field: str) -> None:
    harness.server.script(json_reply(body))
    with pytest.raises(errors.BadResponseError, match=field) as info:
        harness.client().preview_log(JOB, "worker-0")
    assert info.value.endpoint == "preview_log"
    assert len(harness.server.requests) == 1


def test_preview_sizes_at_the_limits(harness: Harness) -> None:
    harness.server.script(json_reply({"content": "", "current_size": 0, "full_size": 2**40}))
    assert harness.client().preview_log(JOB, "worker-0") == LogPreview("", 0, 2**40)


# -- error bodies -----------------------------------------------------------------------------


ERROR_BODIES = [
    (
        {"error_code": "ModelArts.2787", "error_msg": "Invalid JSON"},
        ("ModelArts.2787", "Invalid JSON"),
    ),
    ({"errorCode": "ModelArts.2764", "errorMsg": "bad query"}, ("ModelArts.2764", "bad query")),
    ({"code": "ModelArts.2788", "message": "bad param"}, ("ModelArts.2788", "bad param")),
    ({"error": {"code": 400, "message": "IAM style"}}, ("400", "IAM style")),
    ({"error": {"error_code": "APIGW.0101", "error_msg": "nested"}}, ("APIGW.0101", "nested")),
    ({"error_msg": "no code"}, ("", "no code")),
    ({"unrelated": True}, ("", "Bad Request")),
    ({"error_code": "X", "error_msg": "line\nbreak\x00" + "y" * 500}, ("X", "line break y")),
]


@pytest.mark.parametrize(("body", "expected"), ERROR_BODIES)
def test_error_body_variants(
    harness: Harness, body: dict[str, Any], expected: tuple[str, str]
) -> None:
    harness.server.script(json_reply(body, 400))
    with pytest.raises(errors.ModelArtsError) as info:
        harness.client().get_job(JOB)
    error = info.value
    assert type(error) is errors.ModelArtsError
    assert error.status == 400
    assert error.error_code == expected[0]
    assert error.error_msg.startswith(expected[1])
    assert len(error.error_msg) <= 200
    assert len(harness.server.requests) == 1  # other 4xx are not retried
    assert harness.sleeps == []


@pytest.mark.parametrize(
    ("body", "headers", "request_id"),
    [
        ({"error_code": "APIGW.0101", "request_id": "body-rid"}, {}, "body-rid"),
        ({"error_code": "APIGW.0101", "request_id": "body-rid"}, {"X-Request-Id": "hdr"}, "hdr"),
        ({"error_code": "APIGW.0101"}, {}, ""),
    ],
)
def test_request_id_from_header_or_body(
    harness: Harness, body: dict[str, Any], headers: dict[str, str], request_id: str
) -> None:
    harness.server.script(json_reply(body, 400, **headers))
    with pytest.raises(errors.ModelArtsError) as info:
        harness.client().get_job(JOB)
    assert info.value.request_id == request_id
    if request_id:
        assert f"(request id {request_id})" in str(info.value)


def test_html_error_page_becomes_a_short_snippet(harness: Harness) -> None:
    page = (
        "<html><head><title>404 Not Found</title><style>body{color:red}</style>"
        "<script>var secret = 1;</script></head><body><h1>Not&nbsp;Found</h1>"
        + "<p>filler text</p>" * 100
        + "</body></html>"
    )
    harness.server.script(Reply(404, page, {"Content-Type": "text/html"}))
    with pytest.raises(errors.ModelArtsError) as info:
        harness.client().get_job(JOB)
    message = info.value.error_msg
    assert message.startswith("404 Not Found Not Found filler text")
    assert len(message) <= 200
    assert "<" not in message
    assert "color" not in message
    assert "secret" not in message


def test_malformed_json_on_success_is_not_retried(harness: Harness) -> None:
    harness.server.script(Reply(200, b'{"content": "trunc', {"Content-Type": "application/json"}))
    with pytest.raises(errors.BadResponseError, match="not JSON") as info:
        harness.client().preview_log(JOB, "worker-0")
    assert info.value.status == 200
    assert len(harness.server.requests) == 1
    assert harness.observer.summary() == [("preview_log", "BadResponseError")]


def test_redirects_are_not_followed(harness: Harness) -> None:
    harness.server.script(Reply(302, b"", {"Location": "http://elsewhere.invalid/"}))
    with pytest.raises(errors.ModelArtsError, match="unexpected redirect"):
        harness.client().get_job(JOB)
    assert len(harness.server.requests) == 1


def test_oversized_bodies_are_refused(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_BODY_BYTES", 1000)
    harness.server.script(json_reply({"content": "x" * 2000, "current_size": 1, "full_size": 1}))
    with pytest.raises(errors.BadResponseError, match="exceeds 1000"):
        harness.client().preview_log(JOB, "worker-0")


def test_read_body_bounds_a_stream_without_length() -> None:
    response = requests.Response()
    response.status_code = 200
    response.raw = io.BytesIO(b"x" * 5000)
    with pytest.raises(errors.BadResponseError, match="exceeds 1000"):
        client_module.read_body("preview_log", response, 1000)


# -- 429 -----------------------------------------------------------------------------------------


def test_429_waits_retry_after_seconds_and_pauses_the_throttle(harness: Harness) -> None:
    harness.server.script(error_reply(429, "ModelArts.2799", retry_after="7"), Reply(204))
    assert harness.client().preview_log(JOB, "worker-0") is None
    assert harness.sleeps == [7.0]
    assert harness.throttle.pauses == [2.0]  # others pause at most RetryPolicy.pause_max
    assert harness.throttle.acquired == 2
    assert harness.observer.summary() == [("preview_log", "ThrottledError"), ("preview_log", None)]


def test_429_with_an_http_date(harness: Harness) -> None:
    headers = {
        "Date": "Wed, 21 Oct 2026 07:28:00 GMT",
        "Retry-After": "Wed, 21 Oct 2026 07:28:09 GMT",
    }
    harness.server.script(Reply(429, b"", headers), Reply(204))
    harness.client().preview_log(JOB, "worker-0")
    assert harness.sleeps == [9.0]
    assert harness.throttle.pauses == [2.0]


def test_429_without_retry_after_backs_off_and_caps_long_waits(harness: Harness) -> None:
    harness.server.script(
        Reply(429), error_reply(429, "APIG.0308", retry_after="100000"), Reply(204)
    )
    harness.client(retry=RetryPolicy(retry_after_max=60)).preview_log(JOB, "worker-0")
    assert harness.sleeps == [0.5, 60.0]
    assert harness.throttle.pauses == [0.5, 2.0]


def test_429_exhausted(harness: Harness) -> None:
    harness.server.fallback = error_reply(429, "ModelArts.2799", "too many", retry_after="5")
    with pytest.raises(errors.ThrottledError) as info:
        harness.client().get_job(JOB)
    assert info.value.retry_after == 5.0
    assert info.value.error_code == "ModelArts.2799"
    assert len(harness.server.requests) == 4
    assert harness.sleeps == [5.0, 5.0, 5.0]
    assert harness.throttle.pauses == [2.0] * 4


@pytest.mark.parametrize(
    ("value", "date", "expected"),
    [
        ("12", None, 12.0),
        (" 1.5 ", None, 1.5),
        ("-3", None, None),
        ("soon", None, None),
        ("", None, None),
        (None, None, None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:28:30 GMT", 0.0),
        ("Wed, 21 Oct 2026 07:29:00 GMT", "Wed, 21 Oct 2026 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None, 0.0),
    ],
)
def test_parse_retry_after(value: str | None, date: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, date) == expected


# -- 5xx and transport failures --------------------------------------------------------------


def test_server_errors_are_retried_with_backoff(harness: Harness) -> None:
    harness.server.script(
        error_reply(503, "ModelArts.4302"),
        Reply(502, "<html>Bad Gateway</html>"),
        json_reply(item("x")),
    )
    assert harness.client().get_job("x").id == "x"
    assert harness.sleeps == [0.5, 1.0]
    assert harness.observer.summary() == [
        ("get_job", "ServerError"),
        ("get_job", "ServerError"),
        ("get_job", None),
    ]


def test_server_errors_exhausted(harness: Harness) -> None:
    harness.server.fallback = error_reply(500, "ModelArts.0010", "internal")
    with pytest.raises(errors.ServerError, match=r"HTTP 500 ModelArts\.0010: internal"):
        harness.client().list_jobs()
    assert len(harness.server.requests) == 4
    assert harness.sleeps == [0.5, 1.0, 2.0]


def test_backoff_is_capped_and_jittered(harness: Harness) -> None:
    harness.server.fallback = Reply(500)
    policy = RetryPolicy(max_attempts=6, backoff_initial=1.0, backoff_max=3.0)
    with pytest.raises(errors.ServerError):
        harness.client(retry=policy).get_job(JOB)
    assert harness.sleeps == [1.0, 2.0, 3.0, 3.0, 3.0]

    harness.sleeps.clear()
    with pytest.raises(errors.ServerError):
        harness.client(retry=policy, rng=random.Random(7)).get_job(JOB)
    caps = [1.0, 2.0, 3.0, 3.0, 3.0]
    assert all(0 <= delay <= cap for delay, cap in zip(harness.sleeps, caps, strict=True))
    assert harness.sleeps != caps


def test_read_timeout_is_retried(harness: Harness) -> None:
    harness.server.script(Reply(200, b"{}", delay=2.0), json_reply(item("x")))
    job = harness.client(read_timeout=0.5).get_job("x")
    assert job.id == "x"
    assert harness.sleeps == [0.5]
    [(_, _, first), (_, _, second)] = harness.observer.calls
    assert isinstance(first, errors.TransportError)
    assert "read timeout" in str(first)
    assert second is None


def test_connection_refused(harness: Harness) -> None:
    client = harness.client(endpoint=refused_url())
    with pytest.raises(errors.TransportError, match=r"connection failed: .*refused") as info:
        client.preview_log(JOB, "worker-0")
    assert info.value.endpoint == "preview_log"
    assert harness.sleeps == [0.5, 1.0, 2.0]
    assert harness.observer.summary() == [("preview_log", "TransportError")] * 4
    assert harness.throttle.acquired == 4


def test_retries_are_logged_at_debug(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.server.script(error_reply(503, "ModelArts.4302"), json_reply(item("x")))
    with caplog.at_level(logging.DEBUG, logger="exporter.modelarts"):
        harness.client().get_job("x")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "retry 1 of 3 in 0.50s" in caplog.text


# -- authentication failures ------------------------------------------------------------------


def test_401_with_a_fixed_token_is_final(harness: Harness) -> None:
    harness.server.script(error_reply(401, "ModelArts.0203", "token expired"))
    with pytest.raises(errors.AuthenticationError) as info:
        harness.client().get_job(JOB)
    assert TOKEN not in str(info.value)
    assert len(harness.server.requests) == 1


def test_403_is_final(harness: Harness) -> None:
    harness.server.script(error_reply(403, "ModelArts.0206", "Invalid AK/SK"))
    auth = AkSkAuth("AK123", "SK-secret", PROJECT)
    with pytest.raises(errors.AuthenticationError, match=r"HTTP 403 ModelArts\.0206"):
        harness.client(auth).get_job(JOB)
    assert len(harness.server.requests) == 1


def iam_and_modelarts(modelarts: list[Reply]) -> Any:
    """IAM logins hand out t1, t2, ...; other paths take the scripted ModelArts replies."""
    logins = iter(range(1, 100))

    def handler(request: Recorded) -> Reply:
        if request.path.startswith("/v3/auth/tokens"):
            body = {"token": {"expires_at": "2999-01-01T00:00:00.000000Z"}}
            return json_reply(body, 201, **{"X-Subject-Token": f"t{next(logins)}"})
        return modelarts.pop(0)

    return handler


def test_401_with_password_auth_logs_in_again_once(harness: Harness) -> None:
    harness.server.fallback = iam_and_modelarts(
        [error_reply(401, "ModelArts.0203", "token expired"), json_reply(item("x"))]
    )
    auth = PasswordAuth(harness.server.url, "u", "pw", "dom", project_name="eu-de")
    assert harness.client(auth).get_job("x").id == "x"
    tokens = [(r.path.split("?")[0], r.header("X-Auth-Token")) for r in harness.server.requests]
    assert tokens == [
        ("/v3/auth/tokens", None),
        (f"{JOBS}/x", "t1"),
        ("/v3/auth/tokens", None),
        (f"{JOBS}/x", "t2"),
    ]
    assert harness.sleeps == []
    assert harness.observer.summary() == [("get_job", "AuthenticationError"), ("get_job", None)]


def test_repeated_401_with_password_auth_gives_up(harness: Harness) -> None:
    harness.server.fallback = iam_and_modelarts([error_reply(401, "ModelArts.0203")] * 3)
    auth = PasswordAuth(harness.server.url, "u", "pw", "dom", project_name="eu-de")
    with pytest.raises(errors.AuthenticationError):
        harness.client(auth).get_job("x")
    assert sum(1 for r in harness.server.requests if r.path.startswith(JOBS)) == 2


# -- construction --------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["modelarts.example.com", "ftp://x", "https://"])
def test_bad_endpoint(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        ModelArtsClient(endpoint, PROJECT, TokenAuth(TOKEN))


def test_repr_and_trailing_slash(harness: Harness) -> None:
    harness.server.script(Reply(204))
    client = harness.client(endpoint=harness.server.url + "/")
    client.preview_log(JOB, "worker-0")
    assert harness.server.requests[0].path == PREVIEW
    assert TOKEN not in repr(client)
    assert "token" in repr(client)


def test_retry_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


# -- Throttle ------------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_throttle_unlimited() -> None:
    fake = FakeTime()
    for rate in (None, 0):
        throttle = Throttle(rate, fake.clock, fake.sleep)
        for _ in range(100):
            throttle.acquire()
    assert fake.sleeps == []


def test_throttle_token_bucket() -> None:
    fake = FakeTime()
    throttle = Throttle(2.0, fake.clock, fake.sleep)
    for _ in range(4):
        throttle.acquire()
    assert fake.sleeps == [0.5, 0.5]  # a burst of 2, then one every 0.5 s
    fake.now += 10  # idle time refills at most a burst
    for _ in range(3):
        throttle.acquire()
    assert fake.sleeps == [0.5, 0.5, 0.5]


def test_throttle_slow_rate_has_a_burst_of_one() -> None:
    fake = FakeTime()
    throttle = Throttle(0.25, fake.clock, fake.sleep)
    throttle.acquire()
    throttle.acquire()
    assert fake.sleeps == [4.0]


def test_throttle_pause_keeps_the_later_end() -> None:
    fake = FakeTime()
    throttle = Throttle(None, fake.clock, fake.sleep)
    throttle.pause(5)
    throttle.pause(2)
    throttle.pause(0)
    throttle.acquire()
    assert fake.sleeps == [5.0]
    throttle.pause(3)
    fake.now += 1
    throttle.pause(1)
    throttle.acquire()
    assert fake.sleeps == [5.0, 2.0]


def test_throttle_rejects_negative_rates() -> None:
    with pytest.raises(ValueError, match="rate"):
        Throttle(-1)


def test_throttle_is_shared_safely_between_threads() -> None:
    lock = threading.Lock()
    fake = FakeTime()

    def sleep(seconds: float) -> None:
        with lock:
            fake.sleep(seconds)

    throttle = Throttle(10.0, fake.clock, sleep)
    threads = [
        threading.Thread(target=lambda: [throttle.acquire() for _ in range(25)]) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # 100 requests at 10/s with a burst of 10: at least 9 seconds of waiting in total.
    assert fake.now - 100.0 >= 9.0 - 1e-6


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (requests.ConnectTimeout(), "connect timeout"),
        (requests.ReadTimeout(), "read timeout"),
        (  # a timeout while streaming the body arrives wrapped in a ConnectionError
            requests.ConnectionError(ReadTimeoutError(None, "/x", "Read timed out.")),
            "read timeout",
        ),
        (requests.exceptions.SSLError(OSError(1, "CERTIFICATE_VERIFY_FAILED")), "TLS error: "),
        (requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer")), "reset"),
        (requests.exceptions.ChunkedEncodingError("secret-bearing text"), "request failed: "),
    ],
)
def test_transport_error_messages(exc: requests.RequestException, message: str) -> None:
    error = client_module.transport_error("get_job", exc)
    assert message in str(error)
    assert "secret" not in str(error)


def test_netrc_credentials_are_never_added(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login user password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    harness.server.script(Reply(204))
    harness.client().preview_log(JOB, "worker-0")
    assert harness.server.requests[0].header("Authorization") is None


def test_503_with_retry_after_is_honoured_without_pausing(harness: Harness) -> None:
    harness.server.script(error_reply(503, "ModelArts.4302", retry_after="3"), Reply(204))
    harness.client().preview_log(JOB, "worker-0")
    assert harness.sleeps == [3.0]
    assert harness.throttle.pauses == []


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (errors.TransportError("list_jobs", "connection failed"), "list_jobs: connection failed"),
        (
            errors.ServerError("list_jobs", "busy", status=503, error_code="ModelArts.0001"),
            "list_jobs: HTTP 503 ModelArts.0001: busy",
        ),
        (errors.ServerError("get_job", "", status=502), "get_job: HTTP 502"),
        (
            errors.BadResponseError("preview_log", "not JSON", request_id="r-1"),
            "preview_log: not JSON (request id r-1)",
        ),
    ],
)
def test_error_lines_read_as_one_sentence(error: errors.ModelArtsError, text: str) -> None:
    assert str(error) == text
