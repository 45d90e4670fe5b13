"""The exporter assembled: client -> discovery -> scheduler -> store -> collector -> HTTP.

Everything is built from a validated ``Config`` and injected; nothing is global, so tests
and the demo run as many exporters in one process as they like.

A reload (SIGHUP, ``POST /-/reload``) loads everything again through the injected
``reloader`` (``prepare.prepare`` for ``serve``) and swaps in the new rules and settings
between polls: the store, and with it every counter, cursor and series, stays. A broken
file keeps the old rules and settings. See ``config.changes`` for what needs a restart.
"""

from __future__ import annotations

import logging
import signal
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from .collector import StoreCollector
from .config import Config, ConfigError, Credentials
from .config.changes import changed_keys, keep_restart_only, restart_only
from .discovery import Discovery, DiscoverySettings
from .modelarts.client import ModelArtsClient, RetryPolicy, new_session
from .modelarts.throttle import Throttle
from .pipeline import Limits
from .prepare import Prepared, problems_text
from .process_signals import SignalWaiter
from .rules import Rule, RuleError, RuleSet, load_rules
from .scheduler import CollectSettings, Poller
from .selfmetrics import SelfMetrics
from .server import HTTPServer, make_app
from .signals import SignalReader, SignalSettings
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
        reloader: Callable[[], Prepared] | None = None,
    ) -> None:
        """``rules`` and ``web`` as loaded already (default: load them from ``config``).
        ``reloader`` loads everything again for a reload, raising ConfigError with every
        problem (default: the rules again, with the same configuration).

        Raises StartError when the listen address cannot be bound.
        """
        self.config = config
        self.credentials = credentials
        self._clock = clock
        self._reloader = reloader or self._reload_rules
        self._reload_lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics = SelfMetrics(self.registry)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

        if rules is None:
            rules = load_rules(config.rules.paths, include_default=config.rules.include_default)
        self.rules = RuleSet(
            rules,
            label_value_max_length=config.rules.label_value_max_length,
            max_series_per_rule=config.rules.max_series_per_rule,
        )
        self.metrics.init_rules(rule.name for rule in rules)
        self.metrics.loaded(True, clock())

        self.store = Store(
            config.state.path,
            clock=clock,
            on_save=self.metrics.saved,
            on_rejected=self.metrics.row_rejected,
        )
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
            deadline=settings.deadline_seconds,
            retry=RetryPolicy(max_attempts=settings.max_attempts),
            throttle=Throttle(settings.requests_per_second),
            observer=self.metrics,
            verify=settings.verify,
        )
        self.discovery = Discovery(
            self.client,
            self.store,
            _discovery_settings(config),
            clock=clock,
            on_failure=self.metrics.discovery_failures.inc,
            on_bad_text=lambda field: self.metrics.invalid_api_text.labels(field).inc(),
        )
        self.signals = SignalReader(
            self.client,
            self.store,
            _signal_settings(config),
            clock=clock,
            on_forbidden=self.metrics.forbidden,
        )
        self.poller = Poller(
            self.client,
            self.discovery,
            self.store,
            self.rules,
            self.metrics,
            _collect_settings(config),
            signals=self.signals,
            clock=clock,
            secrets=auth.secrets,
        )
        store = self.store
        self.collector = StoreCollector(store.snapshot, rules, version=lambda: store.version)

        if web is None and config.web.config_file is not None:
            web = load_web_config(
                config.web.config_file, given_by=f"{config.path or 'config'}: web.config_file"
            )
        self.web = web
        self._tls = web.ssl_context_provider() if web else None
        app = make_app(
            self.registry,
            self.collector.render,
            ready=self.ready,
            check_auth=self._check_auth,
            headers=self._headers,
            reload=lambda: self.reload("/-/reload"),
            snapshot=self.store.snapshot,
            clock=clock,
        )
        try:
            self.http = HTTPServer(
                app,
                config.web.listen_address,
                ssl_context=self._ssl_context if self._tls else None,
                workers=config.web.workers,
                request_timeout=config.web.request_timeout_seconds,
            )
        except OSError as exc:
            self.client.close()
            raise StartError(
                f"web.listen_address {config.web.listen_address}: {exc.strerror or exc}"
            ) from None
        self.external_url = config.web.external_url or _default_external_url(
            self.http, config.web.listen_host
        )
        """Where users reach the exporter: links to /jobs in alerts start with it."""
        self.metrics.web_info.labels(self.external_url).set(1)
        self._stopped = threading.Event()

    def ready(self) -> bool:
        """A collection cycle has run and ModelArts answered a call (so the endpoint and
        the credentials work): what ``/-/ready`` says."""
        return self.poller.ready.is_set() and self.client.answered.is_set()

    def start(self) -> None:
        try:
            self.store.open()
        except (StateError, OSError, sqlite3.Error) as exc:
            raise StartError(f"state.path {self.config.state.path}: {exc}") from None
        self.http.start()
        self.poller.start()
        log.info(
            "listening on %s (external URL %s); watching %s (project %s) every %.0f s; "
            "%d rules; state in %s",
            self.http.url(),
            self.external_url,
            str(self.config.modelarts.endpoint).rstrip("/"),
            self.config.modelarts.project_id,
            self.config.collect.interval_seconds,
            len(self.rules.rules),
            self.config.state.path,
        )

    def stop(self) -> None:
        """Stop collecting, serving, and close the state. ModelArts calls in flight end at
        once (whatever they already committed is kept), so this takes moments."""
        self.client.stop()
        self.poller.stop()
        self.http.stop()
        self.store.close()
        self.client.close()
        self._stopped.set()

    def run(self) -> None:
        """Start; reload on SIGHUP; stop cleanly on SIGTERM or SIGINT."""
        started = False
        with SignalWaiter((signal.SIGTERM, signal.SIGINT, signal.SIGHUP)) as signals:
            try:
                self.start()
                started = True
                while (received := signals.wait()) == signal.SIGHUP:
                    self.reload("SIGHUP")
                log.info("received %s: stopping", received.name)
            finally:
                # A second SIGTERM/SIGINT while stopping acts as it did before; a SIGHUP
                # while stopping is ignored rather than killing the process mid-save.
                signals.restore((signal.SIGTERM, signal.SIGINT))
                self.stop()
                if started:  # one that could not start (StartError) never says it stopped
                    log.info("stopped")

    # --- reload ---------------------------------------------------------------------------

    def reload(self, cause: str) -> tuple[bool, str]:
        """Load the configuration and rules again and use them; (ok, one line saying what
        happened). A broken file keeps the old ones and counts a failed reload."""
        with self._reload_lock:
            try:
                return True, self._apply(self._reloader(), cause)
            except ConfigError as exc:
                reason = problems_text(exc.problems)
            except Exception as exc:  # a reload never stops the exporter
                log.debug("reload failed", exc_info=True)
                reason = f"{type(exc).__name__}: {exc}"
            self.metrics.loaded(False, self._clock())
            message = (
                f"reload ({cause}) of {self.config.path or 'the configuration'} failed, "
                f"keeping the old configuration and rules: {reason}"
            )
            log.error("%s", message)
            return False, message

    def _apply(self, ready: Prepared, cause: str) -> str:
        """Use what ``ready`` holds; ConfigError (nothing changed) if its TLS files cannot
        be used."""
        old = self.config
        changed = changed_keys(old, ready.config)
        later = [key for key in changed if restart_only(key)]
        config = keep_restart_only(old, ready.config)
        web = ready.web
        if (self._tls is None) != (web is None or web.tls_server_config is None):
            later.append("tls_server_config of the web config")
            web = self.web
        tls = self._tls
        if web is not self.web:
            tls = web.ssl_context_provider() if web else None
        rules = RuleSet(
            ready.rules,
            label_value_max_length=config.rules.label_value_max_length,
            max_series_per_rule=config.rules.max_series_per_rule,
        )
        self.metrics.init_rules(rule.name for rule in ready.rules)
        self.collector.set_rules(ready.rules)
        discovery = _discovery_settings(config)
        rediscover = discovery != _discovery_settings(old)
        self.discovery.reconfigure(discovery)
        self.poller.reconfigure(rules, _collect_settings(config), rediscover=rediscover)
        self.signals.reconfigure(_signal_settings(config))
        self._tls = tls
        self.web = web
        before = len(self.rules.rules)
        self.rules = rules
        self.config = config
        self.metrics.loaded(True, self._clock())
        applied = [key for key in changed if not restart_only(key)]
        message = (
            f"reloaded {config.path or 'the configuration'} ({cause}): {len(rules.rules)} rules "
            f"(were {before}); changed: {', '.join(applied) or 'no settings'}"
        )
        log.info("%s", message)
        if later:
            log.warning(
                "reload: %s changed, which takes effect only after a restart; the old "
                "value stays in use until then",
                ", ".join(later),
            )
            message += f"; needs a restart: {', '.join(later)}"
        return message

    def _reload_rules(self) -> Prepared:
        """The default reloader: the same configuration, its rule files read again."""
        rules = self.config.rules
        try:
            loaded = load_rules(rules.paths, include_default=rules.include_default)
        except RuleError as exc:
            raise ConfigError(None, exc.problems) from None
        return Prepared(self.config, self.credentials, tuple(loaded), self.web)

    # --- HTTP hooks -----------------------------------------------------------------------

    def _check_auth(self, authorization: str | None) -> bool:
        web = self.web
        return web is None or not web.basic_auth_users or web.check_basic_auth(authorization)

    def _headers(self) -> Iterable[tuple[str, str]]:
        web = self.web
        return web.headers.items() if web else ()

    def _ssl_context(self) -> ssl.SSLContext:
        provider = self._tls
        if provider is None:  # not reached: TLS stays on until a restart
            raise ssl.SSLError("TLS is off")
        return provider()


def _collect_settings(config: Config) -> CollectSettings:
    collect = config.collect
    return CollectSettings(
        interval_seconds=collect.interval_seconds,
        discovery_interval_seconds=collect.effective_discovery_interval_seconds,
        concurrency=collect.concurrency,
        failure_backoff_max_seconds=collect.failure_backoff_max_seconds,
        final_poll_seconds=config.lifecycle.final_poll_seconds,
        limits=Limits(
            max_line_bytes=collect.max_line_bytes,
            max_series_per_rule=config.rules.max_series_per_rule,
        ),
        cycle_wait_seconds=collect.interval_seconds,
    )


def _signal_settings(config: Config) -> SignalSettings:
    platform = config.platform
    return SignalSettings(
        events=platform.events,
        task_metrics=platform.task_metrics,
        task_metrics_interval_seconds=platform.task_metrics_interval_seconds,
        interval_seconds=config.collect.interval_seconds,
        failure_backoff_max_seconds=config.collect.failure_backoff_max_seconds,
    )


def _discovery_settings(config: Config) -> DiscoverySettings:
    discovery = config.discovery
    return DiscoverySettings(
        phases=tuple(discovery.phases),
        name_regex=discovery.name_regex,
        job_ids=tuple(discovery.job_ids) if discovery.job_ids else None,
        grace_seconds=config.lifecycle.grace_period_seconds,
        startup_lookback_seconds=discovery.startup_lookback_seconds,
        interval_seconds=config.collect.effective_discovery_interval_seconds,
        shard_index=config.shard.index,
        shard_count=config.shard.count,
    )


def _default_external_url(http: HTTPServer, listen_host: str) -> str:
    """``http(s)://HOST:PORT`` as Prometheus derives its ``--web.external-url``: the listen
    host, or this machine's host name when listening on every interface."""
    wildcard = listen_host in ("", "0.0.0.0", "::")  # noqa: S104 (compared, not bound)
    return http.url(socket.gethostname() if wildcard else listen_host)
