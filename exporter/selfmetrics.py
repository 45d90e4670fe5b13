"""The exporter's own metrics, all in one place (prefix ``modelarts_exporter_``).

These instrument the exporter's work directly (calls it made, rules it ran), which the
Prometheus guidelines allow for an exporter's own operation; the metrics about training
jobs are built fresh on every scrape by ``collector.py``.

Each is documented by its HELP text below and in the README's metrics table: build
info; API requests, failures (by error code or kind) and latency per endpoint, optional
APIs turned off by a 403; collection cycles (duration, count, last end); discovery
failures; configuration reloads (Prometheus' names); watched jobs and tasks; previews by
cursor outcome and cursor ambiguities; per rule: matches, unusable values, time, custom
series dropped by the cardinality cap; rules loaded; state file writes and failures.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from . import __version__
from .modelarts.errors import ModelArtsError
from .rules.engine import ScanResult

ENDPOINTS = ("list_jobs", "get_job", "preview_log", "list_events", "task_metrics")
POLL_OUTCOMES = (
    "first",
    "continued",
    "unchanged",
    "gap",
    "reset",
    "stale",
    "implausible",
    "not_ready",
    "failed",
)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_CYCLE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class SelfMetrics:
    """Instruments registered on ``registry``; also the client's request observer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # No `*_created` series: they double the exporter's own series for nothing a
        # dashboard or alert here uses (a setting of prometheus_client, process-wide).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        prefix = "modelarts_exporter"
        self.build_info = Gauge(
            f"{prefix}_build_info",
            "Always 1; the exporter's version.",
            ["version", "python_version"],
            registry=registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.web_info = Gauge(
            f"{prefix}_web_info",
            "Always 1; the URL users reach the exporter at (--web.external-url), which "
            "alerts use to link to /jobs.",
            ["external_url"],
            registry=registry,
        )
        self.requests = Counter(
            f"{prefix}_api_requests",
            "HTTP attempts made to the ModelArts and IAM APIs.",
            ["endpoint"],
            registry=registry,
        )
        self.request_failures = Counter(
            f"{prefix}_api_request_failures",
            "Failed HTTP attempts, by ModelArts error code or failure kind.",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.request_duration = Histogram(
            f"{prefix}_api_request_duration_seconds",
            "Duration of HTTP attempts to the ModelArts and IAM APIs.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        for endpoint in ENDPOINTS:
            self.requests.labels(endpoint)
            self.request_duration.labels(endpoint)
        self.api_forbidden = Gauge(
            f"{prefix}_api_forbidden",
            "1 when ModelArts answered 403 to an optional API (events, task metrics) and the "
            "exporter stopped calling it.",
            ["endpoint"],
            registry=registry,
        )
        for endpoint in ("list_events", "task_metrics"):
            self.api_forbidden.labels(endpoint).set(0)
        self.collection_duration = Histogram(
            f"{prefix}_collection_duration_seconds",
            "Duration of a collection cycle: discovery plus the previews of due tasks.",
            buckets=_CYCLE_BUCKETS,
            registry=registry,
        )
        self.collections = Counter(
            f"{prefix}_collections", "Collection cycles run.", registry=registry
        )
        self.last_collection = Gauge(
            f"{prefix}_last_collection_timestamp_seconds",
            "Unix time the last collection cycle ended.",
            registry=registry,
        )
        self.discovery_failures = Counter(
            f"{prefix}_discovery_failures",
            "Job list or details calls that failed; the last known jobs are kept.",
            registry=registry,
        )
        self.invalid_api_text = Counter(
            f"{prefix}_api_invalid_text",
            "Text fields of job answers that could not be used as sent (a lone UTF-16 "
            "surrogate, control characters in an id, over-long): a job or task with such an "
            "id is not watched, a name is shown with U+FFFD.",
            ["field"],
            registry=registry,
        )
        for text_field in ("id", "task", "name", "phase", "engine", "flavor"):
            self.invalid_api_text.labels(text_field)
        self.watched_jobs = Gauge(
            f"{prefix}_watched_jobs", "Training jobs being exported.", registry=registry
        )
        self.watched_tasks = Gauge(
            f"{prefix}_watched_tasks", "Training tasks being exported.", registry=registry
        )
        self.polls = Counter(
            f"{prefix}_polls",
            "Log previews taken, by what the cursor found (stale: older than what was already "
            "taken, ignored; implausible: sizes no log can have, ignored).",
            ["outcome"],
            registry=registry,
        )
        for outcome in POLL_OUTCOMES:
            self.polls.labels(outcome)
        self.ambiguities = Counter(
            f"{prefix}_cursor_ambiguities",
            "Previews where the cursor's position could not be told exactly (taken at most once).",
            registry=registry,
        )
        self.misplaced = Counter(
            f"{prefix}_previews_placed_by_content",
            "Previews whose sizes put the window elsewhere than its content showed the "
            "cursor: the content decided what was new.",
            registry=registry,
        )
        self.rule_matches = Counter(
            f"{prefix}_rule_matches",
            "Log lines a rule matched. Rules keeping only the last value (exit code, loss, "
            "unlabelled gauges) read back from the end of each block and count the lines they "
            "read.",
            ["rule"],
            registry=registry,
        )
        self.rule_errors = Counter(
            f"{prefix}_rule_errors",
            "Lines a rule matched whose value or label could not be used.",
            ["rule"],
            registry=registry,
        )
        self.rule_seconds = Counter(
            f"{prefix}_rule_seconds", "Time spent running a rule.", ["rule"], registry=registry
        )
        self.prefilter_seconds = Counter(
            f"{prefix}_rule_prefilter_seconds",
            "Time spent in the combined prefilter that picks the rules to run.",
            registry=registry,
        )
        self.series_dropped = Counter(
            f"{prefix}_rule_series_dropped",
            "Custom series a rule could not create (rules.max_series_per_rule).",
            ["rule"],
            registry=registry,
        )
        self.rules_loaded = Gauge(f"{prefix}_rules_loaded", "Rules in use.", registry=registry)
        self.state_saves = Counter(
            f"{prefix}_state_saves", "Writes of the state file.", registry=registry
        )
        self.state_save_failures = Counter(
            f"{prefix}_state_save_failures",
            "Failed writes of the state file (a full disk, an I/O error, a lock): the state "
            "stays in memory and the write is tried again every cycle.",
            registry=registry,
        )
        # Prometheus' own names for the same thing.
        self.reload_successful = Gauge(
            f"{prefix}_config_last_reload_successful",
            "Whether the last configuration reload attempt was successful (1) or not (0).",
            registry=registry,
        )
        self.reload_success_time = Gauge(
            f"{prefix}_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load (the start, or a reload).",
            registry=registry,
        )
        self.state_unsaved = Gauge(
            f"{prefix}_state_unsaved_changes",
            "Changes (job, task and expired-job rows) in memory that are not in the state "
            "file yet; above 0 after a cycle, a crash would count those lines again.",
            registry=registry,
        )
        self.state_rows_rejected = Counter(
            f"{prefix}_state_rows_rejected",
            "Rows of the state file that were not what this version writes (rejected at load: "
            "that task starts afresh) or could not be written.",
            ["kind"],
            registry=registry,
        )
        for kind in ("job", "task", "expired"):
            self.state_rows_rejected.labels(kind)

    def init_rules(self, names: Iterable[str]) -> None:
        count = 0
        for name in names:
            self.rule_matches.labels(name)
            self.rule_errors.labels(name)
            self.rule_seconds.labels(name)
            count += 1
        self.rules_loaded.set(count)

    # exporter.modelarts.client.RequestObserver
    def observe(self, endpoint: str, duration_seconds: float, error: ModelArtsError | None) -> None:
        self.requests.labels(endpoint).inc()
        self.request_duration.labels(endpoint).observe(duration_seconds)
        if error is not None:
            self.request_failures.labels(endpoint, error.reason).inc()

    def observe_scan(self, scan: ScanResult) -> None:
        for rule, count in scan.rule_matches.items():
            self.rule_matches.labels(rule).inc(count)
        for rule, count in scan.rule_failures.items():
            self.rule_errors.labels(rule).inc(count)
        for rule, seconds in scan.rule_seconds.items():
            self.rule_seconds.labels(rule).inc(seconds)
        self.prefilter_seconds.inc(scan.prefilter_seconds)

    def loaded(self, ok: bool, now: float) -> None:
        """A configuration (re)load at ``now`` (Unix time) succeeded or failed."""
        self.reload_successful.set(1 if ok else 0)
        if ok:
            self.reload_success_time.set(now)

    def forbidden(self, endpoint: str, forbidden: bool = True) -> None:
        """An optional API was found forbidden (403), or allowed again (a reload)."""
        self.api_forbidden.labels(endpoint).set(1 if forbidden else 0)

    def saved(self, ok: bool) -> None:
        (self.state_saves if ok else self.state_save_failures).inc()

    def row_rejected(self, kind: str) -> None:
        self.state_rows_rejected.labels(kind).inc()
