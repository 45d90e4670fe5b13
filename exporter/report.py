"""What ``analyze`` prints: the Prometheus text (``--format prometheus``, the default), a
readable block per file (``summary``) or JSON for scripts (``json``).

The summary and the JSON are built from the metric families (families.py), the same ones
``/metrics`` serves, plus each marker's first line: a value the exporter learns to read
(a telemetry gauge, a failure reason, a rule of yours) shows up here with no change to
this module. A family named ``..._info`` shows its labels (its value is always 1).

The JSON document (one object, ``files`` in the order given)::

    {"files": [{
        "file": "logs/worker-0.log",        # as given; "-" for stdin
        "task_id": "worker-0.log",          # the task_id label of its series
        "markers": [{"severity": "error", "marker": "cuda_oom",
                     "count": 1, "first_line": 4711}],           # markers that counted
        "metrics": {"modelarts_task_exit_code": 1, "modelarts_task_loss": 0.31, ...},
        "series": [{"name": "modelarts_task_failure_info",
                    "labels": {"reason": "cuda_oom", ...}, "value": 1}],
        "possible_failure": null            # or the reason, see below
    }]}

``metrics`` holds the series that have only the task's labels, by sample name as
``/metrics`` prints it (counters end in ``_total``, a summary gives ``_count`` and
``_sum``); ``series`` the ones with more labels (``training_job_id`` and ``task_id`` left
out); what only a poll of ModelArts can say (``modelarts_task_up``, window and skipped
bytes ...) is left out. ``possible_failure`` is the reason a file that printed no exit code
would get had its job failed (``analyze --failed`` gives it as ``failure_info``), else
null. Numbers are JSON numbers; NaN and infinities are the strings
``"NaN"``, ``"+Inf"`` and ``"-Inf"`` (as in the Prometheus text format). Line numbers
count from 1 as ``grep -n`` counts them: each ``\\n`` ends a line (a progress bar
redrawn with ``\\r`` stays on its line).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .analyze import FileReport
from .diagnosis import explain
from .families import TASK_LABELS, Family

MARKER_FAMILIES = {
    "modelarts_task_log_errors": "error",
    "modelarts_task_log_warnings": "warning",
}

_POLL_ONLY = frozenset(
    {
        "modelarts_task_up",
        "modelarts_task_last_log_growth_timestamp_seconds",
        "modelarts_task_log_window_bytes",
        "modelarts_task_log_skipped_bytes",
        "modelarts_task_log_resets",
    }
)
"""What a poll of ModelArts reports and a file cannot say (a file is one whole window)."""

_FIRST = (
    "modelarts_task_exit_code",
    "modelarts_task_failure_info",
    "modelarts_task_loss",
    "modelarts_task_step",
    "modelarts_task_epoch",
)
"""Shown first in the summary, in this order; every other family follows in its order."""

_PREFIX = "modelarts_task_"


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of one task."""

    family: Family
    name: str
    """The sample's name as ``/metrics`` prints it (``_total``, a summary's ``_count``)."""
    labels: dict[str, str]
    """Its labels beyond the task's own."""
    value: float


def task_samples(families: Iterable[Family], task_id: str, job_id: str = "local") -> list[Sample]:
    """Every series of one task, in the families' order."""
    found: list[Sample] = []
    for family in families:
        if family.labels[: len(TASK_LABELS)] != TASK_LABELS:
            continue  # not a per-task family
        base = family.name + "_total" if family.type == "counter" else family.name
        suffixes = family.suffixes or [""] * len(family.samples)
        for (values, value), suffix in zip(family.samples, suffixes, strict=True):
            if values[:2] == (job_id, task_id):
                labels = dict(zip(family.labels[2:], values[2:], strict=True))
                found.append(Sample(family, base + suffix, labels, value))
    return found


def possible_failures(reports: Sequence[FileReport]) -> dict[str, str]:
    """task_id -> the failure reason a file would get had its job failed, for the files
    that printed no exit code and whose markers name a cause (not ``unknown``): a log
    downloaded from a failed job often ends before any exit code is printed."""
    found = {}
    for report in reports:
        if report.task.exit_code is None:
            reason = explain(report.task).reason
            if reason != "unknown":
                found[report.task.task_id] = reason
    return found


def render_summary(
    reports: Sequence[FileReport],
    families: Sequence[Family],
    possible: Mapping[str, str] | None = None,
) -> str:
    """One readable block per file; ``possible``: possible_failures, shown as a hint."""
    blocks = []
    for report in reports:
        samples = task_samples(families, report.task.task_id)
        rank = {name: n for n, name in enumerate(_FIRST)}
        values = sorted(
            (
                s
                for s in samples
                if s.family.name not in _POLL_ONLY and s.family.name not in MARKER_FAMILIES
            ),
            key=lambda s: rank.get(s.family.name, len(rank)),
        )
        lines = [_title(report)]
        rows = [(_label(sample), _shown(sample)) for sample in values]
        reason = (possible or {}).get(report.task.task_id)
        if reason is not None:
            hint = f"{reason} (no exit code printed; --failed if the job failed)"
            rows.insert(0, ("possible failure", hint))
        width = max((len(label) for label, _ in rows), default=0)
        lines += [f"  {label:<{width}}  {text}" for label, text in rows]
        lines += _marker_lines(report, samples)
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _title(report: FileReport) -> str:
    name = "stdin" if report.name == "-" else report.name
    task_id = report.task.task_id
    plain = Path(name.removesuffix(".gz")).name == task_id
    return name if plain else f"{name} (task_id {task_id})"


def _label(sample: Sample) -> str:
    """``modelarts_task_log_lines_total`` -> ``log lines``; an info metric by its name."""
    name = sample.name.removeprefix(_PREFIX)
    if sample.family.name.endswith("_info"):
        return name.removesuffix("_info").replace("_", " ")
    name = name.removesuffix("_total").replace("_", " ")
    if sample.labels:
        name += "{" + ", ".join(f"{k}={v}" for k, v in sample.labels.items()) + "}"
    return name


def _shown(sample: Sample) -> str:
    if sample.family.name.endswith("_info"):
        return ", ".join(f"{k}={v}" for k, v in sample.labels.items()) or number(sample.value)
    return number(sample.value)


def _marker_lines(report: FileReport, samples: Sequence[Sample]) -> list[str]:
    """Each marker that counted: its count and first line, in the order they first came."""
    found: dict[str, list[tuple[int, str, int]]] = {"error": [], "warning": []}
    for sample in samples:
        severity = MARKER_FAMILIES.get(sample.family.name)
        if severity is not None and sample.value > 0:
            marker = sample.labels.get("marker", "")
            first = report.first_lines.get((severity, marker), 0)
            found[severity].append((first, marker, int(sample.value)))
    width = max((len(m) for rows in found.values() for _, m, _ in rows), default=0)
    out = []
    for severity, title in (("error", "errors"), ("warning", "warnings")):
        if not found[severity]:
            out.append(f"  {title}: none")
            continue
        out.append(f"  {title} (lines, first line):")
        for first, marker, count in sorted(found[severity]):
            where = f"line {first:,}" if first else "line unknown"
            out.append(f"    {marker:<{width}}  {count:>9,}  {where}")
    return out


def number(value: float) -> str:
    """A value for a person: thousands separators, at most 12 significant digits (a sum
    of floats prints ``4.1971``, not ``4.197100000000001``), whole numbers without a
    fraction, NaN and infinities as Prometheus does."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.12g}"


def render_json(
    reports: Sequence[FileReport],
    families: Sequence[Family],
    possible: Mapping[str, str] | None = None,
) -> str:
    """The JSON document described in the module's docstring, with a final newline."""
    files = []
    for report in reports:
        metrics: dict[str, float | str] = {}
        series: list[dict[str, object]] = []
        markers: list[dict[str, object]] = []
        for sample in task_samples(families, report.task.task_id):
            severity = MARKER_FAMILIES.get(sample.family.name)
            value = _json_number(sample.value)
            if severity is not None:
                if sample.value > 0:
                    marker = sample.labels.get("marker", "")
                    markers.append(
                        {
                            "severity": severity,
                            "marker": marker,
                            "count": int(sample.value),
                            "first_line": report.first_lines.get((severity, marker)),
                        }
                    )
            elif sample.family.name in _POLL_ONLY:
                continue
            elif sample.labels:
                series.append({"name": sample.name, "labels": sample.labels, "value": value})
            else:
                metrics[sample.name] = value
        files.append(
            {
                "file": report.name,
                "task_id": report.task.task_id,
                "markers": markers,
                "metrics": metrics,
                "series": series,
                "possible_failure": (possible or {}).get(report.task.task_id),
            }
        )
    return json.dumps({"files": files}, indent=2, allow_nan=False) + "\n"


def _json_number(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return int(value) if value.is_integer() and abs(value) < 2**53 else value
