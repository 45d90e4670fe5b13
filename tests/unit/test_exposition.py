"""From the store to /metrics: families, the collector, the text renderer, the HTTP app."""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector

from modelarts_exporter.collector import StoreCollector
from modelarts_exporter.families import Family, build_families, render, render_text
from modelarts_exporter.modelarts.errors import ServerError
from modelarts_exporter.rules import load_rules
from modelarts_exporter.rules.model import Rule, compile_pattern
from modelarts_exporter.selfmetrics import SelfMetrics
from modelarts_exporter.server import make_app
from modelarts_exporter.store import (
    LOSS_VALUES_COUNT,
    LOSS_VALUES_SUM,
    JobState,
    Snapshot,
    TaskState,
)

JOB = JobState("job-1", "llm-sft", "Running", ("worker-0",), "PyTorch 2.1", "gpu.8v100")


def _custom_rule() -> Rule:
    regex, _ = compile_pattern(r"tokens/s: (?P<value>\d+) rank (?P<rank>\d+)")
    return Rule(
        name="tps",
        kind="gauge",
        source="custom.yml: rules[0]",
        pattern="",
        regex=regex,
        unless=None,
        metric="modelarts_task_rank_tokens_per_second",
        help='Tokens per "second"\nby rank.',
        labels=("rank",),
    )


def _snapshot() -> Snapshot:
    task = TaskState(
        "job-1",
        "worker-0",
        processed_bytes=10.0,
        errors={"cuda_oom": 2.0},
        exit_code=1.0,
        loss=math.nan,
        step=5.0,
        log_size=10.0,
        up=True,
        gauges={("modelarts_task_rank_tokens_per_second", (("rank", 'a"b\\c'),)): (99.5, "tps")},
        counters={LOSS_VALUES_COUNT: (4.0, "loss_values"), LOSS_VALUES_SUM: (9.5, "loss_values")},
    )
    return Snapshot({"job-1": JOB}, {("job-1", "worker-0"): task})


class _AsPrometheusClient(Collector):
    """The same families through prometheus_client's own metric families."""

    def __init__(self, families: list[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            if family.type == "summary":
                summary = SummaryMetricFamily(family.name, family.help, labels=family.labels)
                pairs = zip(family.samples[::2], family.samples[1::2], strict=True)
                for (values, count), (_, total) in pairs:
                    summary.add_metric(list(values), count_value=count, sum_value=total)
                yield summary
                continue
            kind = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
            metric = kind(family.name, family.help, labels=family.labels)
            for values, value in family.samples:
                metric.add_metric(list(values), value)
            yield metric


def test_renderer_writes_what_prometheus_client_writes() -> None:
    rules = [*load_rules(), _custom_rule()]
    families = build_families(_snapshot(), rules)
    registry = CollectorRegistry()
    registry.register(_AsPrometheusClient(families))
    assert render_text(families) == generate_latest(registry).decode()
    openmetrics = openmetrics_latest(registry).decode()
    assert render(families, openmetrics=True) + "# EOF\n" == openmetrics
    assert StoreCollector(_snapshot, rules).render(openmetrics=True) + "# EOF\n" == openmetrics


def test_families_carry_the_contract() -> None:
    families = {f.name: f for f in build_families(_snapshot(), [*load_rules(), _custom_rule()])}
    errors = dict(families["modelarts_task_log_errors"].samples)
    assert errors[("job-1", "worker-0", "cuda_oom")] == 2.0
    assert errors[("job-1", "worker-0", "python_traceback")] == 0.0  # known markers start at 0
    assert families["modelarts_task_exit_code"].samples == [(("job-1", "worker-0"), 1.0)]
    assert math.isnan(families["modelarts_task_loss"].samples[0][1])
    assert "modelarts_task_epoch" not in families  # absent until printed
    phases = dict(families["modelarts_training_job_phase"].samples)
    assert phases[("job-1", "Running")] == 1.0
    assert sum(phases.values()) == 1.0
    assert len(phases) == 8
    assert families["modelarts_training_job_info"].samples == [
        (("job-1", "llm-sft", "Running", "PyTorch 2.1", "gpu.8v100"), 1.0)
    ]
    loss_values = families["modelarts_task_loss_values"]
    assert loss_values.type == "summary"
    assert list(zip(loss_values.suffixes, loss_values.samples, strict=True)) == [
        ("_count", (("job-1", "worker-0"), 4.0)),
        ("_sum", (("job-1", "worker-0"), 9.5)),
    ]
    custom = families["modelarts_task_rank_tokens_per_second"]
    assert custom.labels == ("training_job_id", "task_id", "rank")


def _call(
    app: Any, path: str, headers: dict[str, str] | None = None
) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path, "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    for key, value in (headers or {}).items():
        environ["HTTP_" + key.upper().replace("-", "_")] = value
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], *_: Any) -> None:
        seen["status"], seen["headers"] = status, dict(response_headers)

    body: Iterable[bytes] = app(environ, start_response)
    return seen["status"], seen["headers"], b"".join(body)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


STORE = StoreCollector(_snapshot, load_rules()).render


def test_http_endpoints(registry: CollectorRegistry) -> None:
    ready = [False]
    app = make_app(registry, STORE, ready=lambda: ready[0], headers=[("X-Frame-Options", "deny")])
    status, headers, body = _call(app, "/")
    assert status.startswith("200")
    assert b'href="/metrics"' in body
    assert _call(app, "/-/healthy")[0].startswith("200")
    assert _call(app, "/-/ready")[0].startswith("503")
    ready[0] = True
    assert _call(app, "/-/ready")[0].startswith("200")
    assert _call(app, "/nope")[0].startswith("404")
    status, headers, body = _call(app, "/metrics")
    assert headers["X-Frame-Options"] == "deny"
    assert b"modelarts_task_exit_code" in body
    status, headers, body = _call(
        app, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    status, headers, body = _call(app, "/metrics", {"Accept-Encoding": "gzip"})
    assert b"modelarts_task_exit_code" in gzip.decompress(body)


def test_basic_auth_guards_everything(registry: CollectorRegistry) -> None:
    app = make_app(
        registry, STORE, ready=lambda: True, check_auth=lambda header: header == "Basic ok"
    )
    status, headers, _ = _call(app, "/metrics")
    assert status.startswith("401")
    assert headers["WWW-Authenticate"].startswith("Basic")
    assert _call(app, "/metrics", {"Authorization": "Basic ok"})[0].startswith("200")


def test_a_label_value_utf8_cannot_encode_does_not_break_metrics(
    registry: CollectorRegistry,
) -> None:
    """A lone surrogate (valid JSON) that reached the store must not make /metrics a 500."""
    job = JobState("job-1", "bad\ud800name", "Running", ("worker-0",), "\udfff", "gpu")
    snapshot = Snapshot({"job-1": job}, {("job-1", "worker-0"): TaskState("job-1", "worker-0")})
    app = make_app(
        registry, StoreCollector(lambda: snapshot, load_rules()).render, ready=lambda: True
    )
    status, _, body = _call(app, "/metrics")
    assert status.startswith("200")
    assert b'training_job_name="bad?name"' in body


def test_the_rendered_text_is_shared_until_the_store_or_the_rules_change() -> None:
    version = [1]
    snapshots: list[int] = []

    def snapshot() -> Snapshot:
        snapshots.append(version[0])
        return _snapshot()

    collector = StoreCollector(snapshot, load_rules(), version=lambda: version[0])
    first = collector.render()
    assert collector.render() == first
    assert collector.render(openmetrics=True) != first
    assert snapshots == [1, 1]
    version[0] = 2
    collector.render()
    assert snapshots == [1, 1, 2]
    custom = _custom_rule()
    assert custom.metric not in first
    collector.set_rules([*load_rules(), custom])
    assert custom.metric in collector.render()
    assert snapshots == [1, 1, 2, 2]


def test_an_error_code_utf8_cannot_encode_does_not_break_metrics(
    registry: CollectorRegistry,
) -> None:
    metrics = SelfMetrics(registry)
    metrics.observe(
        "preview_log", 0.1, ServerError("preview_log", "x", status=500, error_code="E\ud800")
    )
    app = make_app(registry, STORE, ready=lambda: True)
    status, _, body = _call(app, "/metrics")
    assert status.startswith("200")
    assert b'reason="http_500"' in body  # a closed set: never the server's text
