"""Reload (``POST /-/reload``, SIGHUP): new rules and settings, every counter kept; a
broken file keeps the old ones and is counted; restart-only settings say so."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import requests
import trustme
import yaml
from helpers import ExporterProcess, free_port, parse_metrics, series, wait_for

from modelarts_exporter.app import Exporter
from modelarts_exporter.prepare import Flags, prepare
from modelarts_exporter.simulator import Fault, SimAuth, Simulator

TOKEN = "reload-test-token"
ENV = {"MODELARTS_AUTH_TOKEN": TOKEN}
RULES_V1 = """
rules:
  - name: my_marker
    kind: error
    pattern: 'MY-MARKER'
    examples: ['MY-MARKER here']
"""
RULES_V2 = (
    RULES_V1
    + """
  - name: tokens_per_second
    kind: gauge
    metric: modelarts_task_tokens_per_second_custom
    help: Throughput.
    pattern: 'tps=(?P<value>{NUM})'
    examples: ['tps=12.5']
"""
)
BROKEN_RULES = "rules:\n  - name: broken\n    kind: error\n    pattern: '(?<!a)b'\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    exporter: Exporter
    sim: Simulator
    job: str
    config: Path
    rules: Path
    clock: FakeClock
    tmp: Path

    @property
    def url(self) -> str:
        return self.exporter.http.url("127.0.0.1")

    def write_config(self, **sections: object) -> None:
        data = {
            "modelarts": {"endpoint": self.sim.url, "project_id": self.sim.project_id},
            "collect": {"interval_seconds": 30},
            "state": {"path": str(self.tmp / "state.db")},
            "rules": {"paths": [str(self.rules)]},
        }
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)  # type: ignore[attr-defined]
        self.config.write_text(yaml.safe_dump(data))

    def metrics(self, **headers: str) -> dict[str, float]:
        text = requests.get(f"{self.url}/metrics", timeout=5, headers=headers).text
        return {
            f"{name}{{{','.join(sorted(f'{k}={v}' for k, v in labels))}}}": value
            for (name, labels), value in parse_metrics(text).items()
        }

    def value(self, name: str, **labels: str) -> float | None:
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        found = series(parse_metrics(text), name, **labels)
        assert len(found) <= 1, found
        return next(iter(found.values()), None)

    def reload(self, **kwargs: object) -> requests.Response:
        return requests.post(f"{self.url}/-/reload", timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with Simulator(auth=SimAuth(tokens=frozenset({TOKEN}))) as sim:
        job = sim.add_job("reload-me", tasks=("worker-0",))
        sim.append_log(job, "worker-0", b"Traceback (most recent call last):\nMY-MARKER one\n")
        clock = FakeClock()
        s = Setup(None, sim, job, tmp_path / "cfg.yml", tmp_path / "mine.yml", clock, tmp_path)  # type: ignore[arg-type]
        s.rules.write_text(RULES_V1)
        s.write_config()
        flags = Flags(listen_address=f"127.0.0.1:{free_port()}")
        ready = prepare(s.config, flags, ENV)
        s.exporter = Exporter(
            ready.config,
            ready.credentials,
            rules=ready.rules,
            web=ready.web,
            clock=clock,
            reloader=lambda: prepare(s.config, flags, ENV),
        )
        s.exporter.store.open()
        s.exporter.http.start()
        try:
            yield s
        finally:
            s.exporter.stop()


def _task(s: Setup) -> dict[str, str]:
    return {"training_job_id": s.job, "task_id": "worker-0"}


def test_a_reload_applies_new_rules_and_settings_and_keeps_every_counter(setup: Setup) -> None:
    s = setup
    s.exporter.poller.run_cycle()
    marker = {**_task(s), "marker": "my_marker"}
    assert s.value("modelarts_task_log_errors_total", **marker) == 1.0
    lines_before = s.value("modelarts_task_log_lines_total", **_task(s))
    assert lines_before == 2.0
    assert s.value("modelarts_exporter_config_last_reload_successful") == 1.0
    started = s.value("modelarts_exporter_config_last_reload_success_timestamp_seconds")
    assert started == s.clock.now

    s.rules.write_text(RULES_V2)
    s.write_config(collect={"interval_seconds": 10, "concurrency": 2})
    s.clock.now += 60
    response = s.reload()
    assert response.status_code == 200, response.text
    assert "changed: collect.concurrency, collect.interval_seconds" in response.text
    assert response.text.count("\n") == 1
    assert s.exporter.config.collect.interval_seconds == 10
    assert s.value("modelarts_exporter_config_last_reload_successful") == 1.0
    assert s.value("modelarts_exporter_config_last_reload_success_timestamp_seconds") == (
        s.clock.now
    )

    s.sim.append_log(s.job, "worker-0", b"tps=42.0\nMY-MARKER two\n")
    s.clock.now += 10
    s.exporter.poller.run_cycle()
    assert s.value("modelarts_task_log_errors_total", **marker) == 2.0  # kept, then counted on
    assert s.value("modelarts_task_log_lines_total", **_task(s)) == 4.0
    assert s.value("modelarts_task_tokens_per_second_custom", **_task(s)) == 42.0
    errors = {**_task(s), "marker": "python_traceback"}
    assert s.value("modelarts_task_log_errors_total", **errors) == 1.0
    size = len(s.sim.log_bytes(s.job, "worker-0"))
    assert s.value("modelarts_task_log_processed_bytes_total", **_task(s)) == size
    assert s.value("modelarts_exporter_rules_loaded") == len(s.exporter.rules.rules)


def test_a_broken_file_keeps_the_old_rules_and_is_counted(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    s = setup
    s.exporter.poller.run_cycle()
    rules_before = list(s.exporter.rules.rules)
    loaded_at = s.value("modelarts_exporter_config_last_reload_success_timestamp_seconds")
    for breakage in ("rules", "config", "yaml"):
        if breakage == "rules":
            s.rules.write_text(BROKEN_RULES)
        elif breakage == "config":
            s.rules.write_text(RULES_V1)
            s.write_config(collect={"interval_seconds": "fast"})
        else:
            s.config.write_text("modelarts: [unclosed\n")
        s.clock.now += 60
        caplog.clear()
        response = s.reload()
        assert response.status_code == 500
        body = response.text
        assert body.count("\n") == 1, body
        assert "failed, keeping the old configuration and rules" in body
        assert str(s.rules if breakage == "rules" else s.config) in body
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.getMessage() for r in errors] == [body.strip()]
        assert s.value("modelarts_exporter_config_last_reload_successful") == 0.0
        assert (
            s.value("modelarts_exporter_config_last_reload_success_timestamp_seconds") == loaded_at
        )
        assert list(s.exporter.rules.rules) == rules_before
    # The old rules still count.
    s.sim.append_log(s.job, "worker-0", b"MY-MARKER again\n")
    s.exporter.poller.run_cycle()
    marker = {**_task(s), "marker": "my_marker"}
    assert s.value("modelarts_task_log_errors_total", **marker) == 2.0
    # Fixed: counted as a success again.
    s.write_config()
    assert s.reload().status_code == 200
    assert s.value("modelarts_exporter_config_last_reload_successful") == 1.0
    assert s.value("modelarts_exporter_config_last_reload_success_timestamp_seconds") == (
        s.clock.now
    )


def test_settings_that_need_a_restart_say_so_and_keep_their_value(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    s = setup
    old_state = s.exporter.config.state.path
    s.write_config(
        state={"path": str(s.tmp / "elsewhere.db")},
        web={"listen_address": "127.0.0.1:1"},  # the flag overrides it: no change
        modelarts={"endpoint": "http://127.0.0.1:9", "project_id": s.sim.project_id},
        shard={"index": 1, "count": 2},
        collect={"interval_seconds": 15},
    )
    response = s.reload()
    assert response.status_code == 200, response.text
    assert "changed: collect.interval_seconds" in response.text
    assert "needs a restart: modelarts.endpoint, shard.count, shard.index, state.path" in (
        response.text
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "modelarts.endpoint, shard.count, shard.index, state.path" in warnings[0]
    assert "only after a restart" in warnings[0]
    assert s.exporter.config.state.path == old_state
    assert s.exporter.config.shard.count == 1
    assert s.exporter.config.collect.interval_seconds == 15
    assert not (s.tmp / "elsewhere.db").exists()


def test_a_discovery_change_takes_effect_at_the_next_cycle(setup: Setup) -> None:
    """README: every key of discovery is applied at once. A reload that changes
    discovery.name_regex lists the jobs again at the next cycle, not after the old
    discovery interval (an hour here)."""
    s = setup
    s.write_config(collect={"interval_seconds": 30, "discovery_interval_seconds": 3600})
    assert s.reload().status_code == 200
    s.exporter.poller.run_cycle()
    assert s.value("modelarts_exporter_watched_jobs") == 1.0
    s.clock.now += 30
    s.write_config(
        collect={"interval_seconds": 30, "discovery_interval_seconds": 3600},
        discovery={"name_regex": "^someone-else$"},
    )
    response = s.reload()
    assert response.status_code == 200, response.text
    assert "discovery.name_regex" in response.text
    s.clock.now += 30
    s.exporter.poller.run_cycle()
    assert s.value("modelarts_exporter_watched_jobs") == 0.0
    # Back to every job: it comes back at the next cycle too.
    s.clock.now += 30
    s.write_config(collect={"interval_seconds": 30, "discovery_interval_seconds": 3600})
    assert s.reload().status_code == 200
    s.clock.now += 30
    s.exporter.poller.run_cycle()
    assert s.value("modelarts_exporter_watched_jobs") == 1.0


def test_reload_takes_post_or_put_only(setup: Setup) -> None:
    s = setup
    response = requests.get(f"{s.url}/-/reload", timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST, PUT"
    assert requests.put(f"{s.url}/-/reload", timeout=30).status_code == 200


def test_reload_sits_behind_basic_auth_and_can_change_it(setup: Setup) -> None:
    s = setup
    web = s.tmp / "web.yml"
    first = bcrypt.hashpw(b"first", bcrypt.gensalt(4)).decode()
    web.write_text(f"basic_auth_users: {{prom: '{first}'}}\n")
    s.write_config(web={"config_file": str(web)})
    assert s.reload().status_code == 200  # no auth yet: the reload turns it on
    assert s.reload().status_code == 401
    assert requests.get(f"{s.url}/metrics", timeout=5).status_code == 401
    assert s.reload(auth=("prom", "first")).status_code == 200
    second = bcrypt.hashpw(b"second", bcrypt.gensalt(4)).decode()
    web.write_text(f"basic_auth_users: {{prom: '{second}'}}\n")
    assert s.reload(auth=("prom", "first")).status_code == 200
    assert requests.get(f"{s.url}/metrics", auth=("prom", "first"), timeout=5).status_code == 401
    assert requests.get(f"{s.url}/metrics", auth=("prom", "second"), timeout=5).status_code == 200


def test_sighup_reloads_serve_and_a_broken_file_keeps_it_running(tmp_path: Path) -> None:
    """The real command: SIGHUP, POST /-/reload, one JSON log line a record."""
    with Simulator(auth=SimAuth(tokens=frozenset({TOKEN}))) as sim:
        job = sim.add_job("hup", tasks=("worker-0",))
        sim.append_log(job, "worker-0", b"MY-MARKER one\n")
        rules = tmp_path / "mine.yml"
        rules.write_text(RULES_V1)
        config = tmp_path / "cfg.yml"
        base = {
            "modelarts": {"endpoint": sim.url, "project_id": sim.project_id},
            "collect": {"interval_seconds": 1, "discovery_interval_seconds": 1},
            "state": {"path": str(tmp_path / "state.db")},
            "rules": {"paths": [str(rules)]},
        }
        config.write_text(yaml.safe_dump(base))
        exporter = ExporterProcess(
            config, ENV, tmp_path / "exporter.log", extra_args=("--log.format", "json")
        ).start()
        assert exporter.process is not None
        try:
            marker = {"training_job_id": job, "task_id": "worker-0", "marker": "my_marker"}

            def count() -> float | None:
                found = series(exporter.metrics(), "modelarts_task_log_errors_total", **marker)
                return next(iter(found.values()), None)

            wait_for(lambda: count() == 1.0, 30, "the first marker")
            rules.write_text(RULES_V2)
            exporter.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "reloaded" in exporter.log(), 30, "the reload's log line")
            exporter.check_alive()
            sim.append_log(job, "worker-0", b"tps=7.5\n")
            gauge = {"training_job_id": job, "task_id": "worker-0"}
            wait_for(
                lambda: series(
                    exporter.metrics(), "modelarts_task_tokens_per_second_custom", **gauge
                ),
                30,
                "the new rule's gauge",
            )
            assert count() == 1.0

            config.write_text("modelarts: {endpoint: 1\n")
            os.kill(exporter.process.pid, signal.SIGHUP)
            wait_for(lambda: "failed, keeping the old" in exporter.log(), 30, "the failure")
            exporter.check_alive()
            samples = exporter.metrics()
            assert series(samples, "modelarts_exporter_config_last_reload_successful") == {
                frozenset(): 0.0
            }
            response = requests.post(f"{exporter.url}/-/reload", timeout=30)
            assert response.status_code == 500
            assert str(config) in response.text
        finally:
            code = exporter.stop()
        assert code == 0, exporter.log()
    records = [json.loads(line) for line in exporter.log().splitlines()]
    messages = [r["msg"] for r in records]
    assert messages[-2:] == ["received SIGTERM: stopping", "stopped"]
    reloaded = [m for m in messages if m.startswith("reloaded ")]
    assert len(reloaded) == 1
    assert "(SIGHUP)" in reloaded[0]
    assert "listen_address" not in reloaded[0]  # the flag still overrides the file
    assert "needs a restart" not in reloaded[0]
    failed = [r for r in records if "failed, keeping the old" in r["msg"]]
    assert [r["level"] for r in failed] == ["error", "error"]
    assert "Traceback" not in exporter.log()


def test_turning_tls_on_needs_a_restart(setup: Setup) -> None:
    s = setup
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(s.tmp / "server.crt"))
    cert.private_key_pem.write_to_path(str(s.tmp / "server.key"))
    web = s.tmp / "web.yml"
    web.write_text("tls_server_config: {cert_file: server.crt, key_file: server.key}\n")
    s.write_config(web={"config_file": str(web)})
    response = s.reload()
    assert response.status_code == 200, response.text
    assert "needs a restart: tls_server_config of the web config" in response.text
    assert requests.get(f"{s.url}/-/healthy", timeout=5).status_code == 200  # still HTTP


def test_a_reload_switches_platform_apis_and_tries_a_forbidden_one_again(setup: Setup) -> None:
    s = setup
    denied = b'{"error_code":"ModelArts.0203","error_msg":"Insufficient permissions."}'
    s.sim.inject(Fault("GET", r"/events$", status=403, body=denied))
    s.exporter.poller.run_cycle()
    assert s.value("modelarts_exporter_api_forbidden", endpoint="list_events") == 1
    s.write_config(platform={"task_metrics": False})
    assert s.reload().status_code == 200
    assert s.value("modelarts_exporter_api_forbidden", endpoint="list_events") == 0
    s.sim.add_event(s.job, "permission granted", level="Warning")
    metrics_calls = sum(1 for r in s.sim.requests if "/metrics/" in r.path)
    s.clock.now += 60
    s.exporter.poller.run_cycle()
    assert s.value("modelarts_training_job_events_total", training_job_id=s.job, level="Warning")
    assert sum(1 for r in s.sim.requests if "/metrics/" in r.path) == metrics_calls
