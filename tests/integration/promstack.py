"""Run the exporter's demo, Prometheus and Alertmanager on free local ports, for tests.

Everything binds to 127.0.0.1 and lives in a temporary directory. Each process is a
context manager that always stops it (SIGTERM, then SIGKILL) and keeps its output in a
log file, quoted when a wait times out. Waits poll with short sleeps up to a deadline.

The configs the tests run are generated from the shipped files (prometheus/alerts.yml,
prometheus/prometheus.yml), so there is one copy of each to maintain.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = REPO / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = REPO / "prometheus" / "alertmanager.yml"
DASHBOARD = REPO / "grafana" / "modelarts-exporter.json"
EXPORTER_JOB = "modelarts-exporter"
"""The scrape job name of prometheus/prometheus.yml, which the alerts select on."""

T = TypeVar("T")


# --- binaries -----------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_binary(name: str) -> str:
    """The path of ``name``; a missing binary fails the test under CI=true, else skips it."""
    path = shutil.which(name)
    if path is None:
        reason = (
            f"{name} is not installed (Debian/Ubuntu: apt-get install prometheus "
            "prometheus-alertmanager; .ci/run does it in CI)"
        )
        if in_ci():
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return path


def run_tool(
    args: Sequence[str],
    *,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> str:
    """Run a command to completion; return its combined output, fail the test if it fails."""
    result = subprocess.run(
        list(args),
        input=stdin,
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited with {result.returncode}:\n{output}")
    return output


# --- waiting and HTTP ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    logs: Sequence[Process] = (),
) -> T:
    """Call ``probe`` until it returns something other than None (or False); return it.

    On timeout the test fails with ``what`` and the tail of each process log in ``logs``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            tails = "".join(f"\n--- {p.name} log (tail) ---\n{p.log_tail()}" for p in logs)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{tails}")
        time.sleep(interval)


def http_get(url: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body); (0, b"") when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()
        return exc.code, body
    except OSError:
        return 0, b""


def is_ready(url: str) -> bool:
    return http_get(url, timeout=2.0)[0] == 200


# --- processes ----------------------------------------------------------------------------


@dataclass
class Process:
    """A child process whose output goes to ``log_path``."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def running(process: Process, ready_url: str, *, timeout: float = 30.0) -> Iterator[Process]:
    """Start ``process``, wait until ``ready_url`` answers 200, always stop it."""
    try:
        process.start()

        def ready() -> bool | None:
            if not process.running():
                pytest.fail(f"{process.name} exited early:\n{process.log_tail()}")
            return is_ready(ready_url)

        wait_for(ready, timeout=timeout, what=f"{process.name} at {ready_url}", logs=[process])
        yield process
    finally:
        process.stop()


# --- webhook receiver ---------------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that keeps the JSON bodies POSTed to it."""

    payloads: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/alerts"

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.payloads)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification received so far."""
        return [alert for payload in self.received() for alert in payload.get("alerts", [])]


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.payloads.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.server = server
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- generated configs --------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "y": 31536000,
}


def duration_seconds(text: str) -> float:
    """A Prometheus duration ("1h30m", "5m", "0s") in seconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def shortened_rules(source: Path, max_for: str) -> dict[str, Any]:
    """``source``'s rule groups with every ``for:`` capped at ``max_for``."""
    rules: dict[str, Any] = yaml.safe_load(source.read_text("utf-8"))
    cap = duration_seconds(max_for)
    for group in rules["groups"]:
        group.pop("interval", None)  # the test's evaluation_interval applies
        for rule in group["rules"]:
            if "for" in rule and duration_seconds(str(rule["for"])) > cap:
                rule["for"] = max_for
    return rules


def prometheus_config(
    source: Path,
    *,
    exporter: str,
    alertmanager: str,
    rules_file: Path,
    interval: str = "1s",
) -> dict[str, Any]:
    """The shipped Prometheus config, pointed at the test's exporter, rules and Alertmanager."""
    config: dict[str, Any] = yaml.safe_load(source.read_text("utf-8"))
    config["global"].update(
        scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval
    )
    config["rule_files"] = [str(rules_file)]
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == EXPORTER_JOB]
    assert len(jobs) == 1, f"{source} has no scrape job {EXPORTER_JOB!r}, which the alerts use"
    job = jobs[0]
    job.update(scrape_interval=interval, scrape_timeout=interval)
    job["static_configs"] = [{"targets": [exporter]}]
    config["scrape_configs"] = [job]
    return config


def alertmanager_config(source: Path, webhook_url: str) -> dict[str, Any]:
    """The shipped Alertmanager config with every webhook sent to ``webhook_url`` and every
    route's waits cut to a second (the routing, grouping and inhibitions stay)."""
    config: dict[str, Any] = yaml.safe_load(source.read_text("utf-8"))
    webhooks = 0
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = webhook_url
            webhooks += 1
        assert set(receiver) <= {"name", "webhook_configs"}, f"{source}: {receiver['name']}"
    assert webhooks, f"{source} has no webhook receiver to point at the test"

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route or route is config["route"]:
                route[key] = "1s"
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    return config


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    return path


# --- the stack ----------------------------------------------------------------------------


@dataclass
class Stack:
    exporter_url: str
    prometheus_url: str
    alertmanager_url: str
    webhook: WebhookReceiver
    processes: list[Process]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result; fails the test on a PromQL error."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url)
        if status != 200:
            pytest.fail(f"query failed ({status}): {expr}\n{body.decode('utf-8', 'replace')}")
        reply = json.loads(body)
        assert reply["status"] == "success", reply
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def api(self, path: str) -> Any:
        status, body = http_get(f"{self.prometheus_url}{path}")
        assert status == 200, f"GET {path}: {status} {body[:500]!r}"
        return json.loads(body)["data"]


def exporter_command() -> list[str]:
    """The installed console script next to this Python, else ``python -m modelarts_exporter``."""
    script = shutil.which("modelarts-exporter", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "modelarts_exporter"]


@contextmanager
def demo_stack(tmp: Path, *, max_for: str = "5s") -> Iterator[Stack]:
    """The demo exporter, Alertmanager (to a webhook receiver) and Prometheus with the
    shipped alerts (``for:`` capped at ``max_for``), scraping and evaluating every second.
    """
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    exporter_addr = f"127.0.0.1:{free_port()}"
    am_addr = f"127.0.0.1:{free_port()}"
    prom_addr = f"127.0.0.1:{free_port()}"
    exporter = Process(
        "modelarts-exporter demo",
        [*exporter_command(), "demo", "--web.listen-address", exporter_addr],
        tmp / "exporter.log",
    )
    (tmp / "alertmanager").mkdir()
    (tmp / "prometheus").mkdir()
    with webhook_receiver() as webhook:
        am_config = write_yaml(
            tmp / "alertmanager.yml", alertmanager_config(ALERTMANAGER_CONFIG, webhook.url)
        )
        am = Process(
            "alertmanager",
            [
                alertmanager,
                f"--config.file={am_config}",
                f"--storage.path={tmp / 'alertmanager'}",
                f"--web.listen-address={am_addr}",
                "--cluster.listen-address=",
            ],
            tmp / "alertmanager.log",
        )
        rules = write_yaml(tmp / "alerts.yml", shortened_rules(ALERTS, max_for))
        config = prometheus_config(
            PROMETHEUS_CONFIG, exporter=exporter_addr, alertmanager=am_addr, rules_file=rules
        )
        prom = Process(
            "prometheus",
            [
                prometheus,
                f"--config.file={write_yaml(tmp / 'prometheus.yml', config)}",
                f"--storage.tsdb.path={tmp / 'prometheus'}",
                f"--web.listen-address={prom_addr}",
            ],
            tmp / "prometheus.log",
        )
        with (
            running(exporter, f"http://{exporter_addr}/-/ready"),
            running(am, f"http://{am_addr}/-/ready"),
            running(prom, f"http://{prom_addr}/-/ready"),
        ):
            yield Stack(
                exporter_url=f"http://{exporter_addr}",
                prometheus_url=f"http://{prom_addr}",
                alertmanager_url=f"http://{am_addr}",
                webhook=webhook,
                processes=[exporter, am, prom],
            )


# --- the Grafana dashboard ----------------------------------------------------------------

_GRAFANA_REGEX_SPECIAL = re.compile(r"[\\$^*{}\[\]'+?.()|]")


def grafana_regex_value(values: Sequence[str]) -> str:
    """A multi-value variable in a PromQL regex matcher, escaped as Grafana does it."""
    escaped = [_GRAFANA_REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title / refId, expr) of every Prometheus query in the dashboard."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(text: str, values: dict[str, str], *, rate_interval: str) -> str:
    """``text`` with Grafana's variables replaced: the dashboard's from ``values``, and the
    built-in interval variables with ``rate_interval``."""
    builtins = {"__rate_interval": rate_interval, "__interval": rate_interval}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in values:
            return values[name]
        if name in builtins:
            return builtins[name]
        raise AssertionError(f"unknown Grafana variable ${name} in {text!r}")

    return _VARIABLE.sub(replace, text)


_LABEL_VALUES = re.compile(r"label_values\((?:(.+),\s*)?(\w+)\)", re.DOTALL)
_QUERY_RESULT = re.compile(r"query_result\((.+)\)", re.DOTALL)


def variable_values(stack: Stack, variable: dict[str, Any], query: str) -> list[str]:
    """The values Grafana's Prometheus data source would offer for a query variable."""
    query = query.strip()
    if match := _LABEL_VALUES.fullmatch(query):
        selector, label = match.groups()
        assert selector, f"label_values without a metric is not supported here: {query}"
        result = stack.query(f"count by ({label}) ({selector})")
        return sorted({r["metric"][label] for r in result if label in r["metric"]})
    if match := _QUERY_RESULT.fullmatch(query):
        pattern = re.compile(variable.get("regex", "").strip("/") or "(.*)")
        found = set()
        for r in stack.query(match.group(1)):
            metric = dict(r["metric"])
            name = metric.pop("__name__", "")
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
            line = f"{name}{{{labels}}} {r['value'][1]} {int(float(r['value'][0]) * 1000)}"
            if m := pattern.search(line):
                found.add(m.group(1) if m.groups() else m.group(0))
        return sorted(found)
    raise AssertionError(f"variable query not understood: {query}")
