"""Running ``modelarts-exporter serve`` as a real process against the simulator."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import yaml

T = TypeVar("T")

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def get(url: str, timeout: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())
    except OSError:
        return None


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        labels = frozenset(LABEL.findall(match["labels"] or ""))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def series(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of one metric whose labels include ``labels``."""
    want = set(labels.items())
    return {key: value for (n, key), value in samples.items() if n == name and want <= key}


def write_config(directory: Path, endpoint: str, project_id: str, **sections: object) -> Path:
    config = {
        "modelarts": {"endpoint": endpoint, "project_id": project_id},
        "collect": {"interval_seconds": 1, "discovery_interval_seconds": 1},
        "state": {"path": str(directory / "state.db")},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)  # type: ignore[attr-defined]
    path = directory / "cfg.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class ExporterProcess:
    """``modelarts-exporter serve`` in a subprocess on 127.0.0.1; always stopped."""

    def __init__(
        self,
        config: Path,
        env: Mapping[str, str],
        log_path: Path,
        *,
        extra_args: tuple[str, ...] = (),
        log_level: str = "info",
        scheme: str = "http",
    ) -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MODELARTS_", "HUAWEICLOUD_SDK_", "OS_"))
        }
        self.env.update(env)
        self.argv = [
            sys.executable,
            "-m",
            "modelarts_exporter",
            "--log.level",
            log_level,
            "serve",
            "--config.file",
            str(config),
            "--web.listen-address",
            f"127.0.0.1:{self.port}",
            *extra_args,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> ExporterProcess:
        """Start, and (unless ``wait`` is False) wait until /-/ready answers."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log)
        if wait:
            wait_for(
                lambda: get(f"{self.url}/-/ready", 1) is not None or not self.check_alive(),
                30,
                "ready",
            )
        return self

    def check_alive(self) -> bool:
        """True while running; an AssertionError with the log once it exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"exporter exited with {self.process.returncode}:\n{self.log()}")
        return True

    def metrics(self) -> Samples:
        text = get(f"{self.url}/metrics")
        assert text is not None, self.log()
        return parse_metrics(text)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no chance to save anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM, and the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)
