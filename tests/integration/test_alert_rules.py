"""promtool over the shipped alerting rules, their unit tests and the Prometheus config.

Without promtool these tests skip, except under CI=true where they fail (.ci/run installs
it from Debian's `prometheus` package).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from promstack import (
    ALERTMANAGER_CONFIG,
    ALERTS,
    ALERTS_TEST,
    PROMETHEUS_CONFIG,
    duration_seconds,
    require_binary,
    run_tool,
    shortened_rules,
)

SEVERITIES = {"critical", "warning", "info"}


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_pass_promtool_check() -> None:
    promtool = require_binary("promtool")
    output = run_tool([promtool, "check", "rules", str(ALERTS)])
    assert f"SUCCESS: {len(_alert_rules())} rules found" in output


def test_rule_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    # Run from the file's folder: rule_files in the test file are relative to it.
    output = run_tool([promtool, "test", "rules", ALERTS_TEST.name], cwd=ALERTS_TEST.parent)
    assert "SUCCESS" in output


def test_prometheus_config_passes_promtool_check() -> None:
    promtool = require_binary("promtool")
    output = run_tool([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    # The shipped config loads the shipped rules (rule_files are relative to the config).
    assert f"SUCCESS: {len(_alert_rules())} rules found" in output


def test_alertmanager_example_passes_amtool_check() -> None:
    amtool = require_binary("amtool")
    output = run_tool([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert "SUCCESS" in output


def test_every_alert_has_severity_annotations_and_unit_tests() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text("utf-8"))["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in _alert_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        assert {"summary", "description"} <= set(annotations), name
        checked = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in checked), f"{name}: no test where it fires"
        assert any(not case["exp_alerts"] for case in checked), f"{name}: no test where it does not"


def test_per_task_alerts_name_the_training_job() -> None:
    """Every alert on per-task series joins the job's name and names it in the summary."""
    for rule in _alert_rules():
        expr = str(rule["expr"])
        if "modelarts_task_" not in expr:
            continue
        assert "group_left (training_job_name)" in expr, rule["alert"]
        annotations = rule["annotations"]
        assert "{{ $labels.training_job_name }}" in annotations["summary"], rule["alert"]
        assert "{{ $labels.training_job_name }}" in annotations["description"], rule["alert"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0m", 0), ("5s", 5), ("15m", 900), ("1h30m", 5400), ("250ms", 0.25)],
)
def test_duration_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


def test_shortened_rules_cap_every_for() -> None:
    rules = shortened_rules(ALERTS, "5s")
    durations = {
        rule["alert"]: rule.get("for") for group in rules["groups"] for rule in group["rules"]
    }
    original = {rule["alert"]: rule.get("for") for rule in _alert_rules()}
    assert durations.keys() == original.keys()
    for name, value in durations.items():
        assert duration_seconds(str(value)) <= 5, name
        if duration_seconds(str(original[name])) <= 5:
            assert value == original[name], name
