"""A prometheus_client Collector that builds fresh metric families on every scrape.

It reads a snapshot of the store (memory only: a scrape never waits on ModelArts) and
turns ``families.build_families`` into prometheus_client families. Sample output::

    # HELP modelarts_task_exit_code The last exit code printed in the log.
    # TYPE modelarts_task_exit_code gauge
    modelarts_task_exit_code{task_id="worker-0",training_job_id="6f1c..."} 1.0
    # TYPE modelarts_task_log_errors_total counter
    modelarts_task_log_errors_total{marker="cuda_oom",task_id="worker-0",...} 1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter.families import Family, build_families
from exporter.rules.model import Rule
from exporter.store import Snapshot


def to_metric(family: Family) -> Metric:
    metric: CounterMetricFamily | GaugeMetricFamily
    if family.type == "counter":
        metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
    else:
        metric = GaugeMetricFamily(family.name, family.help, labels=family.labels)
    for values, value in family.samples:
        metric.add_metric(list(values), value)
    return metric


class StoreCollector(Collector):
    """Exposes the store's jobs and tasks; ``snapshot`` is called once per scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot], rules: Sequence[Rule]) -> None:
        self._snapshot = snapshot
        self._rules = tuple(rules)

    def collect(self) -> Iterator[Metric]:
        for family in build_families(self._snapshot(), self._rules):
            yield to_metric(family)

    def describe(self) -> Iterator[Metric]:
        # Nothing up front: the families depend on the jobs found at scrape time.
        return iter(())
