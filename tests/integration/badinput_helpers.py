"""An in-process exporter pipeline against the simulator, for the bad-input tests.

The pieces of ``modelarts_exporter.app.Exporter`` are built here by hand so that the tests can
inject what the app does not expose: a fake clock for the poller (backoff is measured in it), a
recording ``sleep`` for the client's retries and the throttle (no real sleeping), and a
small read timeout. Cycles are driven with ``Poller.run_cycle``; no scheduler thread runs.

Two jobs with two tasks each; ``BAD`` names the task the tests make misbehave, the other
three must keep counting exactly what the simulator holds.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from modelarts_exporter.collector import StoreCollector
from modelarts_exporter.discovery import Discovery, DiscoverySettings
from modelarts_exporter.modelarts.auth import TokenAuth
from modelarts_exporter.modelarts.client import ModelArtsClient, RetryPolicy
from modelarts_exporter.modelarts.throttle import Throttle
from modelarts_exporter.rules import RuleError, RuleSet, load_rules
from modelarts_exporter.scheduler import CollectSettings, CycleReport, Poller
from modelarts_exporter.selfmetrics import SelfMetrics
from modelarts_exporter.simulator import SimAuth, Simulator
from modelarts_exporter.store import Store, TaskState

TOKEN = "badinput-token-5b7e0c"  # the simulator's credential
MARKER = "badinput_mark"
RULES = f"""\
rules:
  - name: {MARKER}
    kind: error
    pattern: 'BADINPUT-MARK'
    examples:
      - 'BADINPUT-MARK here'
"""

Key = tuple[str, str]
"""(job alias, task id)"""

BAD: Key = ("b", "worker-0")
TASKS: tuple[Key, ...] = (
    ("a", "worker-0"),
    ("a", "worker-1"),
    ("b", "worker-0"),
    ("b", "worker-1"),
)
OTHERS: tuple[Key, ...] = tuple(key for key in TASKS if key != BAD)


class FakeClock:
    """The poller's, discovery's, store's and simulator's clock: moves only when told."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    """``sleep`` of the client and the throttle: records, advances its own clock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        with self._lock:
            return self.now

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)


_RULES: list[RuleSet] = []


def shipped_rules(attempts: int = 4) -> RuleSet:
    """The shipped rules plus the test's marker rule, compiled once per test session.

    A RuleError (someone is editing the shipped rules) is retried a few times.
    """
    if _RULES:
        return _RULES[0]
    with tempfile.TemporaryDirectory() as tmp:
        extra = Path(tmp) / "badinput-rules.yml"
        extra.write_text(RULES)
        for attempt in range(attempts):
            try:
                _RULES.append(RuleSet(load_rules([extra], include_default=True)))
                break
            except RuleError:
                if attempt == attempts - 1:
                    raise
                time.sleep(15)
    return _RULES[0]


class World:
    """Simulator + client + discovery + store + poller + collector, on fake time."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
        window_bytes: int = 1 << 20,
        concurrency: int = 4,
    ) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock(time.time())
        self.sleep = FakeSleep()
        self.sim = Simulator(
            auth=SimAuth(tokens=frozenset({TOKEN})), window_bytes=window_bytes, clock=self.clock
        ).start()
        self.ids = {
            "a": self.sim.add_job("alpha", tasks=("worker-0", "worker-1")),
            "b": self.sim.add_job("bravo", tasks=("worker-0", "worker-1")),
        }
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics = SelfMetrics(self.registry)
        self.rules = shipped_rules()
        self.store = Store(
            tmp_path / "state.db",
            clock=self.clock,
            on_save=self.metrics.saved,
            on_rejected=self.metrics.row_rejected,
        )
        self.store.open()
        self.max_attempts = max_attempts
        self.client = self.make_client(self.sim.url, read_timeout=read_timeout)
        self.discovery = Discovery(
            self.client,
            self.store,
            DiscoverySettings(interval_seconds=1.0),
            clock=self.clock,
            on_failure=self.metrics.discovery_failures.inc,
            on_bad_text=lambda field: self.metrics.invalid_api_text.labels(field).inc(),
        )
        self.poller = Poller(
            self.client,
            self.discovery,
            self.store,
            self.rules,
            self.metrics,
            CollectSettings(
                interval_seconds=1.0,
                discovery_interval_seconds=1.0,
                concurrency=concurrency,
                failure_backoff_max_seconds=600.0,
            ),
            clock=self.clock,
        )
        self.collector = StoreCollector(self.store.snapshot, self.rules.rules)
        self.registry.register(self.collector)
        self._round = 0
        self._port = 0

    def make_client(self, endpoint: str, *, read_timeout: float = 5.0) -> ModelArtsClient:
        return ModelArtsClient(
            endpoint,
            self.sim.project_id,
            TokenAuth(TOKEN),
            connect_timeout=2.0,
            read_timeout=read_timeout,
            retry=RetryPolicy(max_attempts=self.max_attempts),
            throttle=Throttle(None, clock=self.sleep.clock, sleep=self.sleep),
            observer=self.metrics,
            sleep=self.sleep,
            rng=random.Random(7),
        )

    def close(self) -> None:
        self.poller.stop()
        self.client.close()
        self.store.close()
        self.sim.stop()

    # --- driving ---------------------------------------------------------------------

    def job_id(self, alias: str) -> str:
        return self.ids[alias]

    def grow(self, keys: tuple[Key, ...] = TASKS, lines: int = 6) -> None:
        """Append a few whole lines (one with the test's error marker) to each task's log."""
        self._round += 1
        for alias, task in keys:
            text = "".join(
                f"{alias}/{task} round {self._round} step {i} loss={1.0 / (i + 1):.5f}\n"
                for i in range(lines)
            )
            text += f"BADINPUT-MARK round {self._round} of {alias}/{task}\n"
            self.append(alias, task, text.encode())

    def stop_simulator(self) -> None:
        """The API goes away: nothing listens on its address any more."""
        self._port = int(self.sim.url.rsplit(":", 1)[1])
        self.sim.stop()

    def restart_simulator(self) -> None:
        """The API comes back on the same address, with the same jobs and logs."""
        logs = {key: self.sim.log_bytes(self.job_id(key[0]), key[1]) for key in TASKS}
        self.sim = Simulator(
            auth=SimAuth(tokens=frozenset({TOKEN})), port=self._port, clock=self.clock
        ).start()
        for alias, name in (("a", "alpha"), ("b", "bravo")):
            self.sim.add_job(name, job_id=self.ids[alias], tasks=("worker-0", "worker-1"))
        for (alias, task), data in logs.items():
            self.append(alias, task, data)

    def append(self, alias: str, task: str, data: bytes) -> None:
        self.sim.append_log(self.job_id(alias), task, data)

    def cycle(self, seconds: float = 2.0) -> CycleReport:
        """Move the clock by ``seconds`` and run one collection cycle."""
        self.clock.advance(seconds)
        return self.poller.run_cycle()

    # --- reading -----------------------------------------------------------------------

    def state(self, key: Key) -> TaskState:
        return self.store.task(self.job_id(key[0]), key[1])

    def labels(self, key: Key) -> dict[str, str]:
        return {"training_job_id": self.job_id(key[0]), "task_id": key[1]}

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of the store's collector (what /metrics shows of jobs and tasks)."""
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(self.collector.render())
            for sample in family.samples
        }

    def sample(self, name: str, key: Key, **extra: str) -> float | None:
        labels = frozenset({**self.labels(key), **extra}.items())
        return self.samples().get((name, labels))

    def up(self, key: Key) -> float | None:
        return self.sample("modelarts_task_up", key)

    def counters(self, key: Key) -> dict[str, float | None]:
        """Every per-task series a fault must leave alone, as /metrics shows them."""
        names = (
            "modelarts_task_log_lines_total",
            "modelarts_task_log_processed_bytes_total",
            "modelarts_task_log_skipped_bytes_total",
            "modelarts_task_log_resets_total",
            "modelarts_task_log_size_bytes",
            "modelarts_task_log_window_bytes",
        )
        samples = self.samples()
        labels = self.labels(key)
        values = {name: samples.get((name, frozenset(labels.items()))) for name in names}
        values[MARKER] = samples.get(
            ("modelarts_task_log_errors_total", frozenset({**labels, "marker": MARKER}.items()))
        )
        return values

    def truth(self, key: Key) -> dict[str, float]:
        """What the counters must say when every byte of the log was seen once."""
        log = self.sim.log_bytes(self.job_id(key[0]), key[1])
        assert log.endswith(b"\n")
        assert b"\r" not in log
        return {
            "modelarts_task_log_lines_total": float(log.count(b"\n")),
            "modelarts_task_log_processed_bytes_total": float(len(log)),
            "modelarts_task_log_skipped_bytes_total": 0.0,
            "modelarts_task_log_resets_total": 0.0,
            "modelarts_task_log_size_bytes": float(len(log)),
            MARKER: float(log.count(b"BADINPUT-MARK")),
        }

    def assert_exact(self, key: Key) -> None:
        """The task is up and its counters equal what the simulator holds."""
        assert self.up(key) == 1.0, key
        got = self.counters(key)
        want = self.truth(key)
        assert {name: got[name] for name in want} == want, key

    def preview_path(self, key: Key) -> str:
        """A Fault.path_pattern matching exactly this task's preview."""
        return f"/training-jobs/{self.job_id(key[0])}/tasks/{key[1]}/logs/preview$"

    def self_metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def preview_requests(self, key: Key) -> int:
        suffix = f"/training-jobs/{self.job_id(key[0])}/tasks/{key[1]}/logs/preview"
        return sum(1 for r in self.sim.requests if r.method == "GET" and r.path.endswith(suffix))
