"""The collector: fresh metric families from the store, built at every scrape.

It reads a snapshot of the store (memory only: a scrape never waits on ModelArts), builds
``families.build_families`` and renders them. prometheus_client serves the exporter's own
metrics and picks the format (text or OpenMetrics, by content negotiation); the store's
families are rendered by ``families.render``, which writes exactly what
prometheus_client's exposition would (a test compares them) at about three times its
speed: with hundreds of tasks, tens of thousands of series go out on every scrape.
Sample output::

    # HELP modelarts_task_exit_code The last exit code printed in the log.
    # TYPE modelarts_task_exit_code gauge
    modelarts_task_exit_code{task_id="worker-0",training_job_id="6f1c..."} 1.0
    # TYPE modelarts_task_log_errors_total counter
    modelarts_task_log_errors_total{marker="cuda_oom",task_id="worker-0",...} 1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .families import build_families, render
from .rules.model import Rule
from .store import Snapshot


class StoreCollector:
    """Every job's and task's metrics; ``snapshot`` is called once per scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot], rules: Sequence[Rule]) -> None:
        self._snapshot = snapshot
        self._rules = tuple(rules)

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Use these rules from the next scrape on (a reload)."""
        self._rules = tuple(rules)

    def render(self, *, openmetrics: bool = False) -> str:
        return render(build_families(self._snapshot(), self._rules), openmetrics=openmetrics)
