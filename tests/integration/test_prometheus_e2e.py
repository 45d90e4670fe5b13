"""End to end: `modelarts-exporter demo` -> Prometheus (the shipped alerts) -> Alertmanager
-> a webhook, plus every query of the Grafana dashboard against the live Prometheus.

One stack serves the module (scrape and rule evaluation every second, `for:` capped at
5 s); it starts in a few seconds and is always stopped. The demo's job
"bert-large-finetune" hits a CUDA OOM and prints exit code 1 about 5 s after the start.
Without the Prometheus binaries the stack tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from browser import Page, dump_dom
from promstack import (
    ALERTS,
    DASHBOARD,
    EXPORTER_JOB,
    Stack,
    demo_stack,
    grafana_regex_value,
    http_get,
    panel_queries,
    panels,
    require_binary,
    run_tool,
    substitute,
    variable_values,
    wait_for,
)

from modelarts_exporter.diagnosis import REASONS

FAILED_JOB = "bert-large-finetune"
COMPLETED_JOB = "yolov8-detect-coco"  # exit code 0
RATE_INTERVAL = "15s"  # for $__rate_interval: 15 scrapes at the test's 1 s interval


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with demo_stack(tmp_path_factory.mktemp("promstack")) as running_stack:
        yield running_stack


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text("utf-8"))
    return dashboard


def _firing(stack: Stack) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = stack.api("/api/v1/alerts")["alerts"]
    return [a for a in alerts if a["state"] == "firing"]


# --- without the stack --------------------------------------------------------------------


def test_dashboard_is_importable() -> None:
    """Fixed uid, a Prometheus datasource variable used by every panel and query."""
    dashboard = _dashboard()
    assert dashboard["uid"] == "modelarts-exporter"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"training_job", "task"} <= variables.keys()
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}", variable["name"]


# --- with the stack -----------------------------------------------------------------------


def test_exporter_metrics_pass_promtool_check(stack: Stack) -> None:
    promtool = require_binary("promtool")
    status, body = http_get(f"{stack.exporter_url}/metrics")
    assert status == 200
    assert b"modelarts_training_job_info{" in body
    assert run_tool([promtool, "check", "metrics"], stdin=body) == ""


def test_every_rule_evaluates_without_error(stack: Stack) -> None:
    """On the demo's real series: no rule fails (e.g. a join that is not one-to-one)."""

    def evaluated() -> list[dict[str, Any]] | None:
        groups = stack.api("/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        # Every rule evaluated, and an alert firing (bert failed: the most series exist).
        done = all(not rule["lastEvaluation"].startswith("0001-") for rule in rules)
        return rules if done and _firing(stack) else None

    rules = wait_for(evaluated, timeout=30, what="rule evaluations", logs=stack.processes)
    shipped = yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
    assert len(rules) == sum(len(group["rules"]) for group in shipped)
    problems = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert problems == []


def test_dashboard_queries_return_data(stack: Stack) -> None:
    dashboard = _dashboard()
    values: dict[str, str] = {}
    resolved: dict[str, list[str]] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = substitute(variable["query"], values, rate_interval=RATE_INTERVAL)
        options = wait_for(
            lambda q=query, v=variable: variable_values(stack, v, q) or None,
            timeout=30,
            what=f"values of the dashboard variable ${variable['name']}",
            logs=stack.processes,
        )
        resolved[variable["name"]] = options
        values[variable["name"]] = grafana_regex_value(options)
    assert resolved["exporter"] == [EXPORTER_JOB]
    assert FAILED_JOB in resolved["training_job"]
    assert "worker-0" in resolved["task"]

    queries = [
        (where, substitute(expr, values, rate_interval=RATE_INTERVAL))
        for where, expr in panel_queries(dashboard)
    ]
    assert len(queries) >= 20

    def empty() -> list[str]:
        return [f"{where}: {expr}" for where, expr in queries if not stack.query(expr)]

    # Rates need a few scrapes, the failed job's exit code about 5 s of demo time.
    deadline = time.monotonic() + 30
    while (missing := empty()) and time.monotonic() < deadline:
        time.sleep(1)
    assert missing == []


def test_failed_job_alert_reaches_webhook_with_job_name(stack: Stack) -> None:
    def failed_alerts() -> list[dict[str, Any]] | None:
        found = [
            alert
            for alert in stack.webhook.alerts()
            if alert["labels"].get("alertname") == "ModelArtsTaskFailed"
        ]
        return found or None

    alerts = wait_for(
        failed_alerts, timeout=40, what="ModelArtsTaskFailed at the webhook", logs=stack.processes
    )
    assert {a["labels"].get("training_job_name") for a in alerts} == {FAILED_JOB}
    alert = alerts[0]
    assert alert["status"] == "firing"
    assert alert["labels"]["training_job_name"] == FAILED_JOB
    assert alert["labels"]["task_id"] == "worker-0"
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["job"] == EXPORTER_JOB
    assert FAILED_JOB in alert["annotations"]["summary"]
    assert FAILED_JOB in alert["annotations"]["description"]
    # The whole notification as Alertmanager sent it names the job too.
    payload = next(p for p in stack.webhook.received() if alert in p["alerts"])
    assert payload["commonLabels"]["training_job_name"] == FAILED_JOB


def test_the_delivered_alert_says_why_and_links_to_the_evidence(stack: Stack) -> None:
    """The demo's job dies of a CUDA OOM: the alert Alertmanager delivers names the root
    cause (labels and summary), carries its remedy, and links to the task on /jobs, where
    the OOM's line is shown."""

    def delivered() -> dict[str, Any] | None:
        for alert in stack.webhook.alerts():
            if alert["labels"].get("alertname") == "ModelArtsTaskFailed":
                return alert
        return None

    alert = wait_for(delivered, timeout=40, what="ModelArtsTaskFailed", logs=stack.processes)
    assert alert["labels"]["reason"] == "cuda_oom"
    assert alert["labels"]["category"] == "resource"
    assert alert["annotations"]["summary"].endswith("exited with code 1: cuda_oom.")
    description = alert["annotations"]["description"]
    assert "Root cause: cuda_oom (resource)." in description
    assert REASONS["cuda_oom"].remedy in description
    job_id = alert["labels"]["training_job_id"]
    link = f"{stack.exporter_url}/jobs?" + urlencode(
        {"training_job_id": job_id, "task_id": "worker-0"}
    )
    assert description.endswith(link)
    status, body = http_get(link)
    assert status == 200
    assert b"Tried to allocate" in body


def test_the_demos_failed_job_in_chromium(stack: Stack) -> None:
    """What a person opening /jobs sees: the failed task, its reason, remedy and the OOM's
    line, and the healthy jobs without a diagnosis."""

    def failed_page() -> Page | None:
        # The OOM line can be read a cycle before discovery sees the job as Failed.
        page = Page(dump_dom(f"{stack.exporter_url}/jobs"))
        seen = page.visible()
        return page if "Tried to allocate" in seen and f"{FAILED_JOB} Failed" in seen else None

    page = wait_for(failed_page, timeout=40, what="the OOM on /jobs", logs=stack.processes)
    failed = [
        key for key in page.by_id if key.startswith("task-") and "cuda_oom" in page.visible(key)
    ]
    assert len(failed) == 1
    task = page.visible(failed[0])
    assert "cuda_oom (resource)" in task
    assert REASONS["cuda_oom"].remedy in task
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in task
    assert "exit with 1" in task
    assert "6 watched jobs" in page.visible()
    assert f"{FAILED_JOB} Failed" in page.visible()


def test_demo_fires_exactly_the_expected_alerts(stack: Stack) -> None:
    """The failed job fires its exit code, its OOM and its platform Error event
    ("Training job failed."); nothing else fires, in particular not the completed job's
    exit code 0, the restarted job's Warning events, the pending job's scheduling warnings
    (and not the exporter or its polling)."""
    expected = {
        ("ModelArtsTaskFailed", FAILED_JOB, None),
        ("ModelArtsTaskFatalErrors", FAILED_JOB, "cuda_oom"),
        ("ModelArtsTrainingJobErrorEvents", FAILED_JOB, None),
    }

    def firing() -> set[tuple[str, str | None, str | None]]:
        return {
            (
                a["labels"]["alertname"],
                a["labels"].get("training_job_name"),
                a["labels"].get("marker"),
            )
            for a in _firing(stack)
        }

    wait_for(
        lambda: expected <= firing(), timeout=40, what=f"{expected} firing", logs=stack.processes
    )
    assert firing() == expected
    completed = [
        a for a in stack.webhook.alerts() if a["labels"].get("training_job_name") == COMPLETED_JOB
    ]
    assert completed == []
