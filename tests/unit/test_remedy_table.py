"""One remedy table (diagnosis.REASONS): the alert's and the README's copies equal it."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelarts_exporter.diagnosis import REASONS, readme_table, remedy_template

ROOT = Path(__file__).resolve().parents[2]


def _rule(name: str) -> dict[str, object]:
    groups = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text("utf-8"))["groups"]
    rules = [rule for group in groups for rule in group["rules"] if rule.get("alert") == name]
    assert len(rules) == 1
    return rules[0]  # type: ignore[no-any-return]


def test_the_task_failed_alert_holds_the_remedy_table() -> None:
    description = _rule("ModelArtsTaskFailed")["annotations"]["description"]  # type: ignore[index]
    folded = " ".join(line.strip() for line in remedy_template().splitlines())
    assert folded in description, (
        "prometheus/alerts.yml is out of date with diagnosis.REASONS; paste this block into "
        "ModelArtsTaskFailed's description:\n" + remedy_template(" " * 12)
    )
    for reason, entry in REASONS.items():
        assert f'eq $labels.reason "{reason}" -}}}} {entry.remedy} {{{{-' in description


def test_the_readme_holds_the_remedy_table() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert readme_table() in readme, (
        "README.md's remedy table is out of date with diagnosis.REASONS; it should read:\n"
        + readme_table()
    )
