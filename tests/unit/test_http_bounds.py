"""The HTTP listener's bounds (issue 10, item 4): slowloris clients and scrape floods.

Real sockets on 127.0.0.1; time is a fake clock that ticks at every look, and progress
is shown by events and counts, never by how long something took.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fakes import FakeModelArts
from prometheus_client import CollectorRegistry

from modelarts_exporter import collector as collector_module
from modelarts_exporter.collector import StoreCollector
from modelarts_exporter.discovery import Discovery, DiscoverySettings
from modelarts_exporter.modelarts.types import TrainingJob
from modelarts_exporter.rules import RuleSet, load_rules
from modelarts_exporter.scheduler import CollectSettings, Poller
from modelarts_exporter.selfmetrics import SelfMetrics
from modelarts_exporter.server import HTTPServer, make_app
from modelarts_exporter.store import Store


class TickingClock:
    """Moves one second forward every time it is read: a worker that keeps looking at
    the clock while a client dribbles bytes sees time pass, deterministically."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 1000.0

    def __call__(self) -> float:
        with self._lock:
            self.now += 1.0
            return self.now


def _app() -> object:
    return make_app(CollectorRegistry(), lambda **_: "", ready=lambda: True)


@pytest.fixture
def one_worker() -> Iterator[HTTPServer]:
    server = HTTPServer(
        _app(),  # type: ignore[arg-type]
        "127.0.0.1:0",
        workers=1,
        request_timeout=30.0,
        clock=TickingClock(),
        poll_seconds=0.05,
    )
    server.start()
    yield server
    server.stop()


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (without waiting for it)."""
    readable, _, _ = select.select([sock], [], [], 0.05)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_a_client_sending_its_headers_a_byte_at_a_time_loses_its_worker(
    one_worker: HTTPServer,
) -> None:
    """A plain socket timeout restarts with every byte; the request deadline does not."""
    slow = socket.create_connection(("127.0.0.1", one_worker.port))
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    sent = 0
    try:
        for byte in request:
            try:
                slow.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            if _closed_by_server(slow):
                break
        else:
            pytest.fail("the server kept the slow connection open for the whole request")
    finally:
        slow.close()
    assert sent < len(request)
    # The only worker is free again: a normal request is served.
    response = requests.get(f"http://127.0.0.1:{one_worker.port}/-/healthy", timeout=30)
    assert response.status_code == 200


def test_a_client_that_sends_nothing_loses_its_worker(one_worker: HTTPServer) -> None:
    idle = socket.create_connection(("127.0.0.1", one_worker.port))
    try:
        for _ in range(400):
            if _closed_by_server(idle):
                break
        else:
            pytest.fail("the server kept an idle connection open")
    finally:
        idle.close()
    response = requests.get(f"http://127.0.0.1:{one_worker.port}/-/healthy", timeout=30)
    assert response.status_code == 200


def test_a_normal_request_is_unaffected_by_the_deadline(one_worker: HTTPServer) -> None:
    for _ in range(3):
        response = requests.get(f"http://127.0.0.1:{one_worker.port}/metrics", timeout=30)
        assert response.status_code == 200


def test_a_scrape_flood_costs_one_render_and_never_holds_up_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 scrapers at once: the collection cycle completes while every one of them is in
    flight, at most ``workers`` threads serve them, and the store's families are
    rendered once per change of the store, not once per scrape."""
    api = FakeModelArts()
    api.jobs["a"] = TrainingJob("a", "name-a", "Running", ("worker-0",))
    api.logs[("a", "worker-0")] = b"step 1\n"
    store = Store(tmp_path / "state.db")
    store.open()
    registry = CollectorRegistry()
    poller = Poller(
        api,
        Discovery(api, store, DiscoverySettings()),
        store,
        RuleSet(load_rules()),
        SelfMetrics(registry),
        CollectSettings(interval_seconds=10, discovery_interval_seconds=10),
    )
    poller.run_cycle()
    collector = StoreCollector(store.snapshot, load_rules(), version=lambda: store.version)
    renders: list[int] = []
    rendering = threading.Event()
    release = threading.Event()
    real = collector_module.build_families

    def counted(*args: object, **kwargs: object) -> object:
        renders.append(store.version)
        rendering.set()
        assert release.wait(60)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(collector_module, "build_families", counted)
    server = HTTPServer(
        make_app(registry, collector.render, ready=lambda: True), "127.0.0.1:0", workers=4
    )
    server.start()
    statuses: list[int] = []
    lock = threading.Lock()

    def scrape() -> None:
        response = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=60)
        with lock:
            statuses.append(response.status_code)

    scrapers = [threading.Thread(target=scrape) for _ in range(50)]
    try:
        for thread in scrapers:
            thread.start()
        assert rendering.wait(30)
        # Scrapes are in flight (one rendering, the others waiting): collection goes on.
        api.logs[("a", "worker-0")] += b"step 2\n"
        report = poller.run_cycle()
        assert report.polled == 1
        assert store.task("a", "worker-0").lines == 2.0
        prefix = f"http-{server.port}-"
        workers = [t for t in threading.enumerate() if t.name.startswith(prefix)]
        assert len(workers) == 4
        release.set()
        for thread in scrapers:
            thread.join(60)
    finally:
        release.set()
        server.stop()
        poller.stop()
        store.close()
    assert statuses == [200] * 50
    # The version being scraped when the flood began, and the one the cycle made.
    assert len(renders) <= 2
