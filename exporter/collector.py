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

import threading
from collections.abc import Callable, Sequence

from .families import build_families, render
from .rules.model import Rule
from .store import Snapshot


class StoreCollector:
    """Every job's and task's metrics, rendered from a snapshot of the store.

    With ``version`` (the store's change counter), the text is rendered once per change
    and format and shared by every scrape until the next change: a flood of scrapers
    costs one render, not one each. Rendering holds a lock of its own (scrapes of a new
    version wait for the first one's render), never one the collection takes.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        rules: Sequence[Rule],
        *,
        version: Callable[[], int] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._rules = tuple(rules)
        self._version = version
        self._lock = threading.Lock()
        self._cache: dict[bool, tuple[int, str]] = {}

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Use these rules from the next scrape on (a reload)."""
        with self._lock:
            self._rules = tuple(rules)
            self._cache.clear()

    def render(self, *, openmetrics: bool = False) -> str:
        if self._version is None:
            return render(build_families(self._snapshot(), self._rules), openmetrics=openmetrics)
        with self._lock:
            version = self._version()
            cached = self._cache.get(openmetrics)
            if cached is not None and cached[0] == version:
                return cached[1]
            text = render(build_families(self._snapshot(), self._rules), openmetrics=openmetrics)
            self._cache[openmetrics] = (version, text)
            return text
