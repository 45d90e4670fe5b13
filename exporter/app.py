"""The exporter assembled: client -> discovery -> scheduler -> store -> collector -> HTTP.

Everything is built from a validated ``Config`` and injected; nothing is global, so tests
and the demo run as many exporters in one process as they like.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from .collector import StoreCollector
from .config import Config, Credentials
from .discovery import Discovery, DiscoverySettings
from .modelarts.client import ModelArtsClient, RetryPolicy, new_session
from .modelarts.throttle import Throttle
from .pipeline import Limits
from .rules import Rule, RuleSet, load_rules
from .scheduler import CollectSettings, Poller
from .selfmetrics import SelfMetrics
from .server import HTTPServer, make_app
from .store import StateError, Store
from .webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")


class StartError(Exception):
    """The exporter cannot start: the message says what, naming the setting."""


class Exporter:
    """One running exporter. ``start``/``stop``, or ``run`` until SIGTERM/SIGINT."""

    def __init__(
        self,
        config: Config,
        credentials: Credentials,
        *,
        rules: Sequence[Rule] | None = None,
        web: WebConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``rules`` and ``web`` as loaded already (default: load them from ``config``).

        Raises StartError when the listen address cannot be bound.
        """
        self.config = config
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics = SelfMetrics(self.registry)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

        if rules is None:
            rules = load_rules(config.rules.paths, include_default=config.rules.include_default)
        self.rules = RuleSet(rules, label_value_max_length=config.rules.label_value_max_length)
        self.metrics.init_rules(rule.name for rule in rules)

        self.store = Store(config.state.path, clock=clock, on_save=self.metrics.saved)
        settings = config.modelarts
        session = new_session(pool_maxsize=max(32, 2 * config.collect.concurrency))
        auth = credentials.build_auth(
            session=session, project_id=settings.project_id, observer=self.metrics
        )
        self.client = ModelArtsClient(
            str(settings.endpoint).rstrip("/"),
            settings.project_id,
            auth,
            workspace_id=settings.workspace_id,
            session=session,
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            retry=RetryPolicy(max_attempts=settings.max_attempts),
            throttle=Throttle(settings.requests_per_second),
            observer=self.metrics,
            verify=settings.verify,
        )
        collect = config.collect
        discovery = Discovery(
            self.client,
            self.store,
            DiscoverySettings(
                phases=tuple(config.discovery.phases),
                name_regex=config.discovery.name_regex,
                job_ids=tuple(config.discovery.job_ids) if config.discovery.job_ids else None,
                grace_seconds=config.lifecycle.grace_period_seconds,
                startup_lookback_seconds=config.discovery.startup_lookback_seconds,
                interval_seconds=collect.effective_discovery_interval_seconds,
                shard_index=config.shard.index,
                shard_count=config.shard.count,
            ),
            clock=clock,
            on_failure=self.metrics.discovery_failures.inc,
        )
        self.poller = Poller(
            self.client,
            discovery,
            self.store,
            self.rules,
            self.metrics,
            CollectSettings(
                interval_seconds=collect.interval_seconds,
                discovery_interval_seconds=collect.effective_discovery_interval_seconds,
                concurrency=collect.concurrency,
                failure_backoff_max_seconds=collect.failure_backoff_max_seconds,
                limits=Limits(
                    max_line_bytes=collect.max_line_bytes,
                    max_series_per_rule=config.rules.max_series_per_rule,
                ),
            ),
            clock=clock,
        )
        self.collector = StoreCollector(self.store.snapshot, rules)

        if web is None and config.web.config_file is not None:
            web = load_web_config(config.web.config_file)
        app = make_app(
            self.registry,
            self.collector.render,
            ready=self.poller.ready.is_set,
            check_auth=web.check_basic_auth if web and web.basic_auth_users else None,
            headers=web.headers.items() if web else (),
        )
        try:
            self.http = HTTPServer(
                app,
                config.web.listen_address,
                ssl_context=web.ssl_context_provider() if web else None,
            )
        except OSError as exc:
            self.client.close()
            raise StartError(
                f"web.listen_address {config.web.listen_address}: {exc.strerror or exc}"
            ) from None
        self._stopped = threading.Event()

    def start(self) -> None:
        try:
            self.store.open()
        except (StateError, OSError, sqlite3.Error) as exc:
            raise StartError(f"state.path {self.config.state.path}: {exc}") from None
        self.http.start()
        self.poller.start()
        log.info(
            "listening on %s; watching %s (project %s) every %.0f s; %d rules; state in %s",
            self.http.url(),
            str(self.config.modelarts.endpoint).rstrip("/"),
            self.config.modelarts.project_id,
            self.config.collect.interval_seconds,
            len(self.rules.rules),
            self.config.state.path,
        )

    def stop(self) -> None:
        """Stop collecting (finishing the polls in flight), serving, and close the state."""
        self.poller.stop()
        self.http.stop()
        self.store.close()
        self.client.close()
        self._stopped.set()

    def run(self) -> None:
        """Start, then stop cleanly on SIGTERM or SIGINT."""
        stop = threading.Event()

        def handle(signum: int, frame: FrameType | None) -> None:
            del frame
            log.info("received %s: stopping", signal.Signals(signum).name)
            stop.set()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            stop.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()
        log.info("stopped")
