"""The per-task and per-job metrics, built from a store snapshot (pure, no prometheus_client).

``collector.py`` turns these families into prometheus_client ones for ``serve``;
``render_text`` prints them in the Prometheus text format for ``analyze``, which thereby
starts without importing prometheus_client and its HTTP stack. A test checks that both
print the same text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .diagnosis import diagnose
from .modelarts.types import EVENT_LEVELS, PHASES
from .rules.model import Rule
from .store import LOSS_VALUES, LOSS_VALUES_COUNT, LOSS_VALUES_SUM, Snapshot, TaskState

TASK_LABELS = ("training_job_id", "task_id")


@dataclass(slots=True)
class Family:
    """One metric family: ``name`` without ``_total`` for counters."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)
    """A summary's samples: the suffix of each (``_count``, ``_sum``); empty otherwise."""


@dataclass(frozen=True, slots=True)
class _TaskMetric:
    name: str
    type: str
    help: str
    attr: str


_TASK_METRICS = (
    _TaskMetric(
        "modelarts_task_log_size_bytes",
        "gauge",
        "full_size of the task's log at the last successful preview.",
        "log_size",
    ),
    _TaskMetric(
        "modelarts_task_log_window_bytes",
        "gauge",
        "current_size: bytes the last preview returned.",
        "window_bytes",
    ),
    _TaskMetric(
        "modelarts_task_log_processed_bytes",
        "counter",
        "Log bytes run through the rules, each byte once.",
        "processed_bytes",
    ),
    _TaskMetric(
        "modelarts_task_log_skipped_bytes",
        "counter",
        "Log bytes written that no preview showed whole (they scrolled out between polls).",
        "skipped_bytes",
    ),
    _TaskMetric(
        "modelarts_task_log_resets",
        "counter",
        "Times the log was found restarted or replaced.",
        "resets",
    ),
    _TaskMetric("modelarts_task_log_lines", "counter", "Complete log lines processed.", "lines"),
    _TaskMetric(
        "modelarts_task_exit_code",
        "gauge",
        "The last exit code printed in the log.",
        "exit_code",
    ),
    _TaskMetric(
        "modelarts_task_loss",
        "gauge",
        "The last training loss printed in the log (NaN when it printed nan).",
        "loss",
    ),
    _TaskMetric("modelarts_task_step", "gauge", "The training step of the last loss line.", "step"),
    _TaskMetric("modelarts_task_epoch", "gauge", "The epoch of the last loss line.", "epoch"),
    _TaskMetric(
        "modelarts_task_last_log_growth_timestamp_seconds",
        "gauge",
        "Unix time the log was last seen to grow.",
        "last_growth",
    ),
)


UTILIZATION_METRICS = (
    ("cpuUsage", "modelarts_task_cpu_utilization_ratio", "CPU"),
    ("memUsage", "modelarts_task_memory_utilization_ratio", "memory"),
    ("gpuUtil", "modelarts_task_gpu_utilization_ratio", "GPU"),
    ("gpuMemUsage", "modelarts_task_gpu_memory_utilization_ratio", "GPU memory"),
    ("npuUtil", "modelarts_task_npu_utilization_ratio", "NPU"),
    ("npuMemUsage", "modelarts_task_npu_memory_utilization_ratio", "NPU memory"),
)
"""(task metrics API name, metric, what) of the utilisation gauges."""


def build_families(
    snapshot: Snapshot,
    rules: Sequence[Rule],
    *,
    markers: Iterable[tuple[str, str]] | None = None,
) -> list[Family]:
    """Every per-task and per-job family for ``snapshot``.

    Error and warning counters start at 0 for every marker a loaded rule can raise
    (``markers``: (severity, marker) pairs; default: those of ``rules``), so a first
    error is an increase Prometheus can see.
    """
    known = sorted(set(markers) if markers is not None else _markers(rules))
    families = {m.name: Family(m.name, m.type, m.help, TASK_LABELS) for m in _TASK_METRICS}
    up = Family(
        "modelarts_task_up",
        "gauge",
        "1 if the last preview of this task succeeded, else 0.",
        TASK_LABELS,
    )
    errors = Family(
        "modelarts_task_log_errors",
        "counter",
        "Log lines where the error marker's rules matched.",
        (*TASK_LABELS, "marker"),
    )
    warnings = Family(
        "modelarts_task_log_warnings",
        "counter",
        "Log lines where the warning marker's rules matched.",
        (*TASK_LABELS, "marker"),
    )
    failure = Family(
        "modelarts_task_failure_info",
        "gauge",
        "Always 1 for a failed task (non-zero exit code, or its job ended Failed or "
        "Abnormal): the root cause (a marker name, or unknown) and its category.",
        (*TASK_LABELS, "reason", "category"),
    )
    custom = _custom_families(rules)
    loss_values = Family(
        LOSS_VALUES,
        "summary",
        "Every finite training loss printed, each line once: rate(_sum)/rate(_count) is the "
        "mean training loss over any range.",
        TASK_LABELS,
    )
    for (job_id, task_id), task in sorted(snapshot.tasks.items()):
        if job_id not in snapshot.jobs:
            continue
        key = (job_id, task_id)
        diagnosis = diagnose(task, snapshot.jobs[job_id].phase)
        if diagnosis is not None:
            failure.samples.append(((*key, diagnosis.reason, diagnosis.category), 1.0))
        for metric in _TASK_METRICS:
            value = getattr(task, metric.attr)
            if value is None and metric.attr == "exit_code" and job_id in snapshot.events:
                # The log printed none: take the one a platform event reported.
                value = snapshot.events[job_id].exit_code(task_id)
            if value is not None:
                families[metric.name].samples.append((key, float(value)))
        if task.up is not None:
            up.samples.append((key, 1.0 if task.up else 0.0))
        _marker_samples(task, known, errors, warnings)
        count = task.counters.get(LOSS_VALUES_COUNT)
        if count is not None:
            total = task.counters.get(LOSS_VALUES_SUM, (0.0, ""))[0]
            loss_values.samples += [(key, count[0]), (key, total)]
            loss_values.suffixes += ["_count", "_sum"]
        for series, target in ((task.gauges, "gauge"), (task.counters, "counter")):
            for (metric_name, labels), (value, _rule) in sorted(series.items()):
                family = custom.get(metric_name)
                if family is None or family.type != target:
                    continue  # the rule was removed since the value was stored
                by_name = dict(labels)
                family.samples.append(
                    ((job_id, task_id, *(by_name.get(n, "") for n in family.labels[2:])), value)
                )
    info = Family(
        "modelarts_training_job_info",
        "gauge",
        "Always 1: a watched training job, with its name, phase, engine and flavor.",
        ("training_job_id", "training_job_name", "phase", "engine", "flavor"),
    )
    phase = Family(
        "modelarts_training_job_phase",
        "gauge",
        "1 for the job's current phase, 0 for the others.",
        ("training_job_id", "phase"),
    )
    for job_id, job in sorted(snapshot.jobs.items()):
        info.samples.append(((job_id, job.name, job.phase, job.engine, job.flavor), 1.0))
        for name in PHASES:
            phase.samples.append(((job_id, name), 1.0 if job.phase == name else 0.0))
    ordered = [
        *families.values(),
        up,
        errors,
        warnings,
        loss_values,
        failure,
        *_usage_families(snapshot),
        info,
        phase,
        *_platform_job_families(snapshot),
        *custom.values(),
    ]
    return [f for f in ordered if f.samples or f.name in _ALWAYS]


def _usage_families(snapshot: Snapshot) -> list[Family]:
    families = []
    for source, name, what in UTILIZATION_METRICS:
        family = Family(
            name,
            "gauge",
            f"{what} utilisation of the task, 0..1: the latest per-minute average of the "
            f"task metrics API ({source}).",
            TASK_LABELS,
        )
        for (job_id, task_id), usage in sorted(snapshot.usage.items()):
            if job_id in snapshot.jobs and source in usage.ratios:
                family.samples.append(((job_id, task_id), usage.ratios[source]))
        families.append(family)
    return families


def _platform_job_families(snapshot: Snapshot) -> list[Family]:
    restarts = Family(
        "modelarts_training_job_restarts",
        "counter",
        "Runs of the job after the first in status.running_records (fault-tolerance restarts "
        "and reschedules).",
        ("training_job_id",),
    )
    recovery = Family(
        "modelarts_training_job_last_recovery_info",
        "gauge",
        "Always 1: why the job's last run that ModelArts recovered ended (running_records: "
        "end_reason, end_recover, end_related_task; bounded values).",
        ("training_job_id", "end_reason", "end_recover", "end_related_task"),
    )
    created = Family(
        "modelarts_training_job_created_timestamp_seconds",
        "gauge",
        "Unix time the job was created (metadata.create_time).",
        ("training_job_id",),
    )
    started = Family(
        "modelarts_training_job_start_timestamp_seconds",
        "gauge",
        "Unix time the job started running (status.start_time).",
        ("training_job_id",),
    )
    duration = Family(
        "modelarts_training_job_duration_seconds",
        "gauge",
        "How long the job has run, or ran (status.duration).",
        ("training_job_id",),
    )
    events = Family(
        "modelarts_training_job_events",
        "counter",
        "Events of the job's events API by level, each counted once.",
        ("training_job_id", "level"),
    )
    for job_id, job in sorted(snapshot.jobs.items()):
        key = (job_id,)
        restarts.samples.append((key, float(job.restarts)))
        if job.last_recovery is not None:
            recovery.samples.append(((job_id, *job.last_recovery), 1.0))
        if job.create_time is not None:
            created.samples.append((key, job.create_time))
        if job.start_time is not None:
            started.samples.append((key, job.start_time))
        if job.duration is not None:
            duration.samples.append((key, job.duration))
        if job_id in snapshot.events:
            counts = snapshot.events[job_id].counts
            for level in EVENT_LEVELS:
                events.samples.append(((job_id, level), counts.get(level, 0.0)))
    return [restarts, recovery, created, started, duration, events]


_ALWAYS = frozenset({"modelarts_task_up", "modelarts_training_job_info"})


def _markers(rules: Sequence[Rule]) -> set[tuple[str, str]]:
    return {(r.kind, r.marker) for r in rules if r.kind in ("error", "warning")}


def _marker_samples(
    task: TaskState, known: Sequence[tuple[str, str]], errors: Family, warnings: Family
) -> None:
    key = (task.job_id, task.task_id)
    seen_errors = dict.fromkeys((m for s, m in known if s == "error"), 0.0) | dict(task.errors)
    seen_warnings = dict.fromkeys((m for s, m in known if s == "warning"), 0.0) | dict(
        task.warnings
    )
    for marker, count in sorted(seen_errors.items()):
        errors.samples.append(((*key, marker), count))
    for marker, count in sorted(seen_warnings.items()):
        warnings.samples.append(((*key, marker), count))


def _custom_families(rules: Sequence[Rule]) -> dict[str, Family]:
    families: dict[str, Family] = {}
    for rule in rules:
        if rule.kind not in ("gauge", "counter") or rule.metric in families:
            continue
        help_text = rule.help or f"Defined by rule {rule.name} ({rule.source})."
        families[rule.metric] = Family(
            rule.metric, rule.kind, help_text, (*TASK_LABELS, *sorted(rule.labels))
        )
    return families


# --- exposition ------------------------------------------------------------------------


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if openmetrics else text


def _escape_label(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def format_value(value: float) -> str:
    """A sample value as prometheus_client prints it."""
    if value != value:  # noqa: PLR0124 (NaN)
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(families: Iterable[Family], *, openmetrics: bool = False) -> str:
    """The families in the Prometheus text format (0.0.4) or in OpenMetrics (without the
    final ``# EOF``), byte for byte as prometheus_client writes them, only faster: at
    hundreds of tasks the scrape is dominated by this."""
    out: list[str] = []
    for family in families:
        name = family.name
        sample_name = name + "_total" if family.type == "counter" else name
        header_name = name if openmetrics else sample_name
        out.append(f"# HELP {header_name} {_escape_help(family.help, openmetrics)}\n")
        out.append(f"# TYPE {header_name} {family.type}\n")
        suffixes = family.suffixes or [""] * len(family.samples)
        if family.labels:
            order = sorted(range(len(family.labels)), key=family.labels.__getitem__)
            names = [family.labels[i] for i in order]
            for (values, value), suffix in zip(family.samples, suffixes, strict=True):
                pairs = ",".join(
                    f'{label}="{_escape_label(values[i])}"'
                    for label, i in zip(names, order, strict=True)
                )
                out.append(f"{sample_name}{suffix}{{{pairs}}} {format_value(value)}\n")
        else:
            for (_, value), suffix in zip(family.samples, suffixes, strict=True):
                out.append(f"{sample_name}{suffix} {format_value(value)}\n")
    return "".join(out)


def render_text(families: Iterable[Family]) -> str:
    """The Prometheus text format (0.0.4), for ``analyze``."""
    return render(families)
