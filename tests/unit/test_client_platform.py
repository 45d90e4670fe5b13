"""The platform APIs in the client: running records, events and task metrics.

Field names and request shapes are checked against the official SDK
(``huaweicloudsdkmodelarts``, a test-only dependency): its request builder gives the path
and query parameter names, its response models the field names and types.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from httpfake import FakeServer, Reply, json_reply
from huaweicloudsdkmodelarts.v1.model.event import Event
from huaweicloudsdkmodelarts.v1.model.list_training_job_events_request import (
    ListTrainingJobEventsRequest,
)
from huaweicloudsdkmodelarts.v1.model.metric_object import MetricObject
from huaweicloudsdkmodelarts.v1.model.running_record import RunningRecord as SdkRecord
from huaweicloudsdkmodelarts.v1.model.show_training_job_metrics_request import (
    ShowTrainingJobMetricsRequest,
)
from huaweicloudsdkmodelarts.v1.modelarts_client import ModelArtsClient as SdkClient
from hypothesis import given
from hypothesis import strategies as st
from test_client import DOC_ITEM, JOB, JOBS, PROJECT, Harness, Observer, SpyThrottle, error_reply

from modelarts_exporter.modelarts import errors
from modelarts_exporter.modelarts.auth import TokenAuth
from modelarts_exporter.modelarts.platform import (
    clean_text,
    event_level,
    parse_event_time,
    parse_events_page,
    parse_running_records,
    parse_task_metrics,
    redact,
)
from modelarts_exporter.modelarts.types import EVENT_LEVELS, JobEvent, RunningRecord
from modelarts_exporter.signals import recovery_labels


@pytest.fixture
def harness() -> Iterator[Harness]:
    with FakeServer() as server:
        yield Harness(server, [], Observer(), SpyThrottle())


# The details document's running_records example (MODELARTS_API.md §2).
DOC_RECORDS = [
    {
        "start_at": 1701327093,
        "end_at": 1701322341,
        "start_type": "init_or_rescheduled",
        "end_recover": "job_reschedule",
        "end_reason": "exit with 127",
        "end_related_task": "worker-2",
        "end_recover_before_downgrade": "npu_proc_restart",
    },
    {
        "start_at": 1701323345,
        "end_at": 1701325432,
        "start_type": "init_or_rescheduled",
        "end_reason": "job completed",
    },
]

# The events document's example answer (abridged: 4 of its 10 events).
DOC_EVENTS = {
    "total": 27,
    "limit": 10,
    "offset": 0,
    "order": "desc",
    "start_time": "2022-11-26T16:01:36+08:00",
    "end_time": "2022-11-29T16:53:11+08:00",
    "events": [
        {
            "time": "2022-11-26T16:03:41+08:00",
            "level": "Error",
            "message": "Training job failed.",
            "source": "Job",
        },
        {
            "time": "2022-11-26T16:03:11+08:00",
            "level": "Info",
            "message": "[worker-0] Training finished. Exit code 1.",
            "source": "Task",
        },
        {
            "time": "2022-11-26T16:02:06+08:00",
            "level": "Info",
            "message": "[Pod: modelarts-job-5bd6-worker-0] Started: Started container",
            "source": "K8S",
        },
        {
            "time": "2022-11-26T16:02:06+08:00",
            "level": "Info",
            "message": "[Pod: modelarts-job-5bd6-worker-0] SuccessfulCreate: Created container",
            "source": "K8S",
        },
    ],
}

# The task metrics document's example answer (ShowTrainingJobMetrics).
DOC_METRICS = {
    "metrics": [
        {
            "metric": "cpuUsage",
            "value": [
                *(-1, -1, 2.43, 4.524, 6.714, 12.422, 9.214, 5.36),
                *(7.5, 10.088, 8.975, 11.423, 11.548, 14.563, 16.833),
            ],
        },
        {
            "metric": "memUsage",
            "value": [
                *(-1, -1, 0.04, 0.521, 1.652, 4.252, 6.433, 7.384),
                *(7.982, 8.718, 9.365, 9.881, 10.192, 9.994, 9.005),
            ],
        },
        {"metric": "gpuUtil", "value": [-1] * 15},
        {"metric": "gpuMemUsage", "value": [-1] * 15},
        {"metric": "npuUtil", "value": [-1] * 15},
        {"metric": "npuMemUsage", "value": [-1] * 15},
    ]
}
T_1603_41 = 1669449821.0  # 2022-11-26T16:03:41+08:00


# --- the SDK says so --------------------------------------------------------------------------


def test_the_sdk_requests_the_same_paths_and_parameters(harness: Harness) -> None:
    harness.server.fallback = json_reply({"events": [], "metrics": []})
    client = harness.client()
    client.list_events(JOB, page=2, limit=100)
    client.task_metrics(JOB, "worker-0")
    sdk = SdkClient()
    events = sdk._list_training_job_events_http_info(
        ListTrainingJobEventsRequest(training_job_id=JOB, offset=2, limit=100, order="desc")
    )
    metrics = sdk._show_training_job_metrics_http_info(
        ShowTrainingJobMetricsRequest(training_job_id=JOB, task_id="worker-0")
    )
    sent_events, sent_metrics = (urlsplit(r.path) for r in harness.server.requests)
    expected = events["resource_path"].format(project_id=PROJECT, training_job_id=JOB)
    assert sent_events.path == expected
    assert dict(parse_qsl(sent_events.query)) == {
        k: str(v) for k, v in events["query_params"] if v is not None
    }
    assert sent_metrics.path == metrics["resource_path"].format(
        project_id=PROJECT, training_job_id=JOB, task_id="worker-0"
    )
    assert all(r.method == "GET" for r in harness.server.requests)
    assert events["method"] == metrics["method"] == "GET"


def test_parsed_fields_are_the_sdk_models_fields() -> None:
    ours = {"start_at", "end_at", "start_type", "end_reason", "end_related_task", "end_recover"}
    assert ours <= set(SdkRecord.attribute_map.values())
    assert {k for k in SdkRecord.openapi_types if k in ours and k.endswith("_at")} == {
        "start_at",
        "end_at",
    }
    assert SdkRecord.openapi_types["start_at"] == SdkRecord.openapi_types["end_at"] == "int"
    assert set(Event.attribute_map.values()) == {"time", "level", "message", "source"}
    assert Event.openapi_types["time"] == "str"
    assert MetricObject.openapi_types == {"metric": "str", "value": "list[float]"}


# --- running records ------------------------------------------------------------------------


def test_running_records_of_the_documented_example(harness: Harness) -> None:
    body = {**DOC_ITEM, "status": {**DOC_ITEM["status"], "running_records": DOC_RECORDS}}
    harness.server.script(json_reply(body))
    job = harness.client().get_job(JOB)
    assert job.restarts == 1
    assert job.running_records[0] == RunningRecord(
        start_at=1701327093,
        end_at=1701322341,
        start_type="init_or_rescheduled",
        end_reason="exit with 127",
        end_related_task="worker-2",
        end_recover="job_reschedule",
    )
    assert job.running_records[1].end_recover == ""


@pytest.mark.parametrize(
    ("raw", "restarts"),
    [
        (None, 0),
        ("nonsense", 0),
        ([], 0),
        ([{}], 0),
        ([{}, "bad", 3, None], 3),  # every element is a run; unusable ones are empty
    ],
)
def test_odd_running_records_never_fail_the_job(raw: object, restarts: int) -> None:
    records = parse_running_records({"running_records": raw})
    assert max(0, len(records) - 1) == restarts


def test_running_record_fields_are_cleaned_and_typed() -> None:
    (record,) = parse_running_records(
        {
            "running_records": [
                {
                    "start_at": "1701327093",
                    "end_at": 1e300,
                    "end_reason": "exit\nwith \ud800 1" + "x" * 500,
                    "end_recover": 42,
                    "end_related_task": "worker-1\x00",
                }
            ]
        }
    )
    assert record.start_at == 0
    assert record.end_at == 0
    assert record.end_reason.startswith("exit with ? 1xxx")
    assert len(record.end_reason) == 64
    assert record.end_recover == ""
    assert record.end_related_task == "worker-1"


# --- events ------------------------------------------------------------------------------------


def test_events_of_the_documented_example(harness: Harness) -> None:
    harness.server.script(json_reply(DOC_EVENTS))
    page = harness.client().list_events(JOB)
    assert page.total == 27
    assert page.size == 4
    assert page.events[0] == JobEvent(T_1603_41, "Error", "Job", "Training job failed.")
    assert page.events[1].time == T_1603_41 - 30
    assert [e.time for e in page.events[2:]] == [T_1603_41 - 95] * 2


def test_events_request_asks_newest_first_with_a_page_index(harness: Harness) -> None:
    harness.server.script(json_reply({"events": []}))
    harness.client().list_events(JOB, page=3, limit=500)
    query = dict(parse_qsl(urlsplit(harness.server.requests[0].path).query))
    assert query == {"offset": "3", "limit": "100", "order": "desc"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2022-11-26T16:03:41+08:00", T_1603_41),
        ("2022-11-26T08:03:41Z", T_1603_41),
        ("2022-11-26T08:03:41", T_1603_41),  # no offset: UTC
        ("1669449821", T_1603_41),
        ("1669449821000", T_1603_41),  # milliseconds, as the request's start_time
        (1669449821000, T_1603_41),
        ("yesterday", None),
        ("", None),
        (None, None),
        (True, None),
        (float("nan"), None),
        (-5, None),
    ],
)
def test_event_times(value: object, expected: float | None) -> None:
    assert parse_event_time(value) == expected


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("Error", "Error"),
        ("ERROR", "Error"),
        ("fatal", "Error"),
        ("Warning", "Warning"),
        ("warn", "Warning"),
        ("Info", "Info"),
        ("Normal", "Info"),
        (None, "Info"),
        (7, "Info"),
    ],
)
def test_event_levels_are_a_closed_set(value: object, level: str) -> None:
    assert event_level(value) == level


def test_unusable_events_are_skipped_but_counted_in_the_page_size() -> None:
    page, unusable = parse_events_page(
        {
            "total": "3",  # the OTC document types it as a string
            "events": [
                {"time": "bad", "level": "Error", "message": "m"},
                "not an object",
                {"time": "2022-11-26T16:03:41+08:00", "message": "ok"},
            ],
        }
    )
    assert unusable == 2
    assert page.size == 3
    assert page.total == 3
    assert page.events == (JobEvent(T_1603_41, "Info", "", "ok"),)


@pytest.mark.parametrize(
    ("body", "match"),
    [([], "not a JSON object"), ({"events": {}}, "events is not a list")],
)
def test_malformed_event_pages(harness: Harness, body: Any, match: str) -> None:
    harness.server.script(json_reply(body))
    with pytest.raises(errors.BadResponseError, match=match):
        harness.client().list_events(JOB)


def test_event_messages_lose_credentials_and_control_characters(harness: Harness) -> None:
    token = "MIIsecret-token-value"
    message = (
        f"pull failed for token {token}\x1b[31m: url http://obs/x?AccessKeyId=AKIA123"
        "&Signature=abc%2Bdef&Expires=1 password=hunter2 Authorization: Bearer xyz\n" + "y" * 2000
    )
    harness.server.script(
        json_reply({"events": [{"time": "1669449821", "level": "Error", "message": message}]})
    )
    (event,) = harness.client(TokenAuth(token)).list_events(JOB).events
    for secret in (token, "AKIA123", "abc%2Bdef", "hunter2", "xyz", "\x1b", "\n"):
        assert secret not in event.message
    assert "Expires=1" in event.message
    assert len(event.message) <= 512


def test_redact_and_clean_text() -> None:
    assert redact("ak=AKX sk: SKY token=t1 x=1", ("SECRETVALUE",)) == (
        "ak=<redacted> sk: <redacted> token=<redacted> x=1"
    )
    assert redact("see SECRETVALUE here", ("SECRETVALUE",)) == "see <redacted> here"
    assert clean_text("a\x00b\tc\u2028d", 10) == "a b c d"  # Unicode line breaks too
    assert clean_text(5, 10) == ""
    assert clean_text("abcdef", 4) == "abc\u2026"


def test_events_are_retried_and_throttled_like_the_other_calls(harness: Harness) -> None:
    harness.server.script(
        error_reply(429, "ModelArts.2799", retry_after="3"),
        error_reply(503, "ModelArts.0010"),
        json_reply(DOC_EVENTS),
    )
    assert len(harness.client().list_events(JOB).events) == 4
    assert harness.sleeps == [3.0, 1.0]  # Retry-After, then backoff (max jitter)
    assert harness.throttle.pauses == [2.0]  # the other calls pause at most 2 s
    assert harness.throttle.acquired == 3
    assert harness.observer.summary() == [
        ("list_events", "ThrottledError"),
        ("list_events", "ServerError"),
        ("list_events", None),
    ]


def test_a_403_on_events_is_final(harness: Harness) -> None:
    harness.server.fallback = error_reply(403, "ModelArts.0203", "no permission")
    with pytest.raises(errors.AuthenticationError) as info:
        harness.client().list_events(JOB)
    assert info.value.status == 403
    assert not errors.credential_rejected(info.value)
    assert len(harness.server.requests) == 1


# --- task metrics -------------------------------------------------------------------------------


def test_task_metrics_of_the_documented_example(harness: Harness) -> None:
    harness.server.script(json_reply(DOC_METRICS))
    ratios = harness.client().task_metrics(JOB, "worker-0")
    assert ratios == {"cpuUsage": 0.16833, "memUsage": 0.09005}
    assert harness.server.requests[0].path == f"{JOBS}/{JOB}/metrics/worker-0"


def test_task_metrics_take_the_latest_real_sample() -> None:
    ratios = parse_task_metrics(
        {
            "metrics": [
                {"metric": "gpuUtil", "value": [50, 40, 30, -1, -1]},  # last sample 2 min ago
                {"metric": "npuUtil", "value": [90, -1, -1, -1]},  # too old
                {"metric": "cpuUsage", "value": [10, 250]},  # capped
                {"metric": "memUsage", "value": [10, "x", True, None]},  # none usable in the last 3
                {"metric": "gpuMemUsage", "value": [0]},
                {"metric": "unknownMetric", "value": [5]},
                {"metric": "npuMemUsage", "value": "7"},
                "junk",
            ]
        }
    )
    assert ratios == {"gpuUtil": 0.3, "cpuUsage": 1.0, "gpuMemUsage": 0.0}


def test_task_metrics_without_a_list_are_a_bad_response(harness: Harness) -> None:
    harness.server.script(json_reply({"metrics": None}))
    with pytest.raises(errors.BadResponseError, match="metrics"):
        harness.client().task_metrics(JOB, "worker-0")


def test_task_metrics_retry_on_server_errors(harness: Harness) -> None:
    harness.server.script(Reply(502), json_reply(DOC_METRICS))
    assert harness.client().task_metrics(JOB, "worker-0")["cpuUsage"] == 0.16833
    assert harness.observer.summary() == [("task_metrics", "ServerError"), ("task_metrics", None)]


# --- hostile input -------------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(
        ["worker-1", "proc_restart", "exit with 9", "\ud800", "2022-11-26T16:03:41Z"]
    ),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "start_at",
                    "end_at",
                    "end_reason",
                    "end_recover",
                    "end_related_task",
                    "time",
                    "level",
                    "message",
                    "source",
                    "metric",
                    "value",
                    "events",
                    "metrics",
                    "total",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@given(JSON)
def test_hostile_answers_never_break_parsing_and_labels_stay_bounded(value: Any) -> None:
    records = parse_running_records({"running_records": value})
    labels = recovery_labels(records, ("worker-0",))
    if labels is not None:
        reason, recover, task = labels
        assert len(reason) <= 64
        assert set(reason) <= set("abcdefghijklmnopqrstuvwxyz0123456789 _.:-")
        assert recover in {
            "npu_proc_restart",
            "gpu_proc_restart",
            "proc_restart",
            "pod_reschedule",
            "job_reschedule",
            "job_reschedule_with_taint",
            "npu_step_retry",
            "other",
        }
        assert len(task) <= 64
        task.encode("utf-8")  # no lone surrogates
    for parse in (parse_events_page, parse_task_metrics):
        try:
            result = parse(value)
        except errors.BadResponseError:
            continue
        if isinstance(result, dict):
            assert all(0 <= ratio <= 1 for ratio in result.values())
        else:
            page, _ = result
            for event in page.events:
                assert event.level in EVENT_LEVELS
                assert len(event.message) <= 512
                event.message.encode("utf-8")  # no lone surrogates
                event.source.encode("utf-8")
