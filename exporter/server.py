"""HTTP: ``/metrics``, a landing page at ``/``, ``/jobs`` and ``/api/v1/jobs`` (the
status page, jobspage.py), ``/-/healthy``, ``/-/ready``, ``/-/reload``.

``/metrics`` is prometheus_client's WSGI app over our own registry (text or OpenMetrics
by content negotiation, gzip when asked); it only reads memory. TLS and basic auth come
from an exporter-toolkit web config file (``--web.config.file``).

The server is the standard library's WSGI server with bounds a production listener
needs and it lacks:

* a fixed number of worker threads (``web.workers``) serve requests; connections beyond
  them wait in a bounded queue (16 per worker), and past that are closed at once. A
  flood of scrapers costs the exporter at most that many threads;
* each connection has ``web.request_timeout_seconds`` in all to complete its TLS
  handshake and send its request (line, headers and body), and as long again to take
  the response: a client that sends its headers a byte at a time (slowloris), or reads
  the response that slowly, loses its connection and frees its worker;
* one request per connection (HTTP/1.0 style): no idle keep-alive holds a worker.

Scrapes read a snapshot of the store, and its exposition is rendered once per change of
the store (see ``collector``): the collection never waits on a scrape.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import io
import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from . import __version__
from .config import parse_listen_address
from .jobspage import JobsPage, jobs_document
from .store import Snapshot

log = logging.getLogger("exporter.server")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>ModelArts exporter</title></head>
<body>
<h1>ModelArts exporter</h1>
<p>Prometheus exporter and log analyzer for ModelArts training jobs, version {version}.</p>
<ul>
<li><a href="/metrics">Metrics</a></li>
<li><a href="/jobs">Training jobs</a>: every watched job and task, and why a failed one failed
(<a href="/api/v1/jobs">JSON</a>)</li>
<li><a href="/-/healthy">Health</a></li>
<li><a href="/-/ready">Readiness</a></li>
</ul>
</body></html>
"""


_EOF = b"# EOF\n"


def metrics_body(
    registry: CollectorRegistry, store: Callable[..., str], accept: str | None
) -> tuple[bytes, str]:
    """/metrics: the registry (the exporter's own metrics) and the store's families, in
    the format the client asked for; (body, content type)."""
    encoder, content_type = choose_encoder(accept or "")
    openmetrics = content_type.startswith("application/openmetrics-text")
    body = encoder(registry)
    if openmetrics:
        body = body.removesuffix(_EOF)
    # "replace": a label value that slipped past discovery's checks with a character UTF-8
    # cannot encode must not turn every scrape into a 500.
    body += store(openmetrics=openmetrics).encode("utf-8", "replace")
    if openmetrics:
        body += _EOF
    return body, content_type


def make_app(
    registry: CollectorRegistry,
    store: Callable[..., str],
    *,
    ready: Callable[[], bool],
    check_auth: Callable[[str | None], bool] | None = None,
    headers: Iterable[tuple[str, str]] | Callable[[], Iterable[tuple[str, str]]] = (),
    reload: Callable[[], tuple[bool, str]] | None = None,
    snapshot: Callable[[], Snapshot] | None = None,
    clock: Callable[[], float] = time.time,
) -> WSGIApp:
    """The exporter's WSGI app. ``store(openmetrics=...)`` renders the jobs' and tasks'
    metrics; ``check_auth`` gets the Authorization header; ``headers`` (or a function
    giving them, asked at each request) go on every response. ``reload`` serves
    ``POST /-/reload`` (also PUT, as Prometheus): (ok, one line) -> 200 or 500.
    ``snapshot`` gives the store's jobs and tasks for ``/jobs`` and ``/api/v1/jobs``
    (404 without it)."""
    fixed = () if callable(headers) else tuple(headers)
    current_headers = headers if callable(headers) else lambda: fixed
    landing = _LANDING.format(version=html.escape(__version__)).encode()
    page = JobsPage() if snapshot is not None else None

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        extra = list(current_headers())

        def respond(
            status: str, body: bytes, content_type: str = "text/plain; charset=utf-8"
        ) -> list[bytes]:
            start_response(status, [("Content-Type", content_type), *extra])
            return [body]

        if check_auth is not None and not check_auth(environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="modelarts-exporter"'), *extra],
            )
            return [b"Unauthorized\n"]
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            body, content_type = metrics_body(registry, store, environ.get("HTTP_ACCEPT"))
            response_headers = [("Content-Type", content_type), *extra]
            if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
                body = gzip.compress(body, compresslevel=5)
                response_headers.append(("Content-Encoding", "gzip"))
            start_response("200 OK", response_headers)
            return [body]
        if path == "/":
            return respond("200 OK", landing, "text/html; charset=utf-8")
        if path in ("/jobs", "/api/v1/jobs") and snapshot is not None and page is not None:
            query = parse_qs(environ.get("QUERY_STRING", ""))
            job_id = query.get("training_job_id", [None])[0]
            task_id = query.get("task_id", [None])[0]
            document = jobs_document(snapshot(), now=clock(), job_id=job_id, task_id=task_id)
            if path == "/jobs":
                text = page.render(
                    document, version=__version__, filtered=job_id is not None or bool(task_id)
                )
                return respond("200 OK", text.encode(), "text/html; charset=utf-8")
            payload = json.dumps({"status": "success", "data": document}, allow_nan=False)
            return respond("200 OK", payload.encode(), "application/json")
        if path == "/-/healthy":
            return respond("200 OK", b"Healthy.\n")
        if path == "/-/ready":
            if ready():
                return respond("200 OK", b"Ready.\n")
            return respond(
                "503 Service Unavailable",
                b"Not ready: no collection from ModelArts has succeeded yet (see the log).\n",
            )
        if path == "/-/reload" and reload is not None:
            if environ.get("REQUEST_METHOD") not in ("POST", "PUT"):
                start_response(
                    "405 Method Not Allowed",
                    [("Allow", "POST, PUT"), ("Content-Type", "text/plain; charset=utf-8"), *extra],
                )
                return [b"Only POST or PUT requests allowed.\n"]
            ok, message = reload()
            status = "200 OK" if ok else "500 Internal Server Error"
            return respond(status, (message + "\n").encode())
        return respond("404 Not Found", b"Not found.\n")

    return app


DEFAULT_WORKERS = 4
DEFAULT_REQUEST_TIMEOUT = 10.0
QUEUE_PER_WORKER = 16


class _Deadline:
    """A point in time (on ``clock``) by which something must be done."""

    def __init__(self, seconds: float, clock: Callable[[], float], poll: float) -> None:
        self._clock = clock
        self._at = clock() + seconds
        self._poll = poll

    def wait(self) -> float:
        """Seconds one socket operation may block before the deadline is checked again;
        TimeoutError when it has passed."""
        remaining = self._at - self._clock()
        if remaining <= 0:
            raise TimeoutError("the client did not keep up with the deadline")
        return min(remaining, self._poll)


class _DeadlineSocket(io.RawIOBase):
    """A connection's reads and writes, all before one deadline (a byte at a time does
    not extend it, unlike a plain socket timeout)."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self._sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            self._sock.settimeout(self.deadline.wait())
            try:
                return self._sock.recv_into(buffer)
            except TimeoutError:
                continue

    def write(self, data: Any) -> int:
        while True:
            self._sock.settimeout(self.deadline.wait())
            try:
                return self._sock.send(data)
            except TimeoutError:
                continue


class _Handler(WSGIRequestHandler):
    """One request per connection, read and answered before deadlines; requests are
    logged at debug level only."""

    server: _BoundedServer

    def setup(self) -> None:
        server = self.server
        raw = _DeadlineSocket(self.request, server.deadline())
        self._raw = raw
        self.rfile = io.BufferedReader(raw)
        self.wfile = _Writer(raw)

    def handle(self) -> None:
        try:
            super().handle()
        except (TimeoutError, OSError, ValueError) as exc:
            log.debug("connection from %s dropped: %s", self.client_address[0], exc)
            self.close_connection = True

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def get_stderr(self) -> Any:
        # wsgiref prints the traceback of a failed response here (a client that went
        # away, or missed its deadline): that is the client's problem, debug level.
        return _DebugLog()

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        # The response gets a deadline of its own, from when the request was read.
        self._raw.deadline = self.server.deadline()
        return environ

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _DebugLog(io.StringIO):
    def write(self, text: str) -> int:
        if text.strip():
            log.debug("response failed: %s", text.rstrip())
        return len(text)


class _Writer(io.BufferedWriter):
    """Unbuffered enough for wsgiref (it writes the status line and headers, then the
    body, and flushes), bounded by the connection's deadline."""

    def __init__(self, raw: _DeadlineSocket) -> None:
        super().__init__(raw, buffer_size=64 * 1024)


class _BoundedServer(WSGIServer):
    """The WSGI server with a fixed pool of worker threads and a bounded queue."""

    ssl_context: Callable[[], ssl.SSLContext] | None = None
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    clock: Callable[[], float] = time.monotonic
    poll_seconds: float | None = None
    """How often a blocked worker looks at ``clock`` (None: only at the deadline; tests
    with a fake clock make it short)."""

    def start_workers(self, workers: int) -> None:
        self._queue: queue.Queue[tuple[Any, Any] | None] = queue.Queue(
            maxsize=workers * QUEUE_PER_WORKER
        )
        self._workers = [
            threading.Thread(
                target=self._work, name=f"http-{self.server_address[1]}-{n}", daemon=True
            )
            for n in range(workers)
        ]
        for thread in self._workers:
            thread.start()

    def deadline(self) -> _Deadline:
        poll = self.poll_seconds if self.poll_seconds is not None else self.request_timeout
        return _Deadline(self.request_timeout, self.clock, poll)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Runs on the accepting thread: queue the connection for a worker, or close it."""
        try:
            self._queue.put_nowait((request, client_address))
        except queue.Full:
            log.debug("too many connections waiting: closing one from %s", client_address[0])
            self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request, client_address = item
            try:
                self._serve(request, client_address)
            except Exception:
                log.exception("serving %s failed", client_address[0])
            finally:
                self.shutdown_request(request)

    def _serve(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            request.settimeout(self.request_timeout)  # the handshake's bound
            try:
                request = self.ssl_context().wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
        self.finish_request(request, client_address)

    def stop_workers(self) -> None:
        for _ in self._workers:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.shutdown_request(item[0])


class _BoundedServer6(_BoundedServer):
    address_family = socket.AF_INET6


class HTTPServer:
    """The app on a listening socket: an accepting thread and ``workers`` worker threads."""

    def __init__(
        self,
        app: WSGIApp,
        address: str,
        *,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        workers: int = DEFAULT_WORKERS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        poll_seconds: float | None = None,
    ) -> None:
        """``ssl_context`` gives the TLS context for each new connection (None: HTTP).
        ``request_timeout``: seconds (on ``clock``) a connection has to send its request,
        and again to take the response."""
        host, port = parse_listen_address(address)
        host = host or "0.0.0.0"  # noqa: S104 (":PORT" listens everywhere, as documented)
        server_class = _BoundedServer6 if ":" in host else _BoundedServer
        self._server = make_server(
            host, port, app, server_class=server_class, handler_class=_Handler
        )
        self._server.ssl_context = ssl_context
        self._server.request_timeout = request_timeout
        self._server.clock = clock
        self._server.poll_seconds = poll_seconds
        self._workers = workers
        self._tls = ssl_context is not None
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, host: str | None = None) -> str:
        address = host or str(self._server.server_address[0])
        if ":" in address:
            address = f"[{address}]"
        return f"{'https' if self._tls else 'http'}://{address}:{self.port}"

    def start(self) -> None:
        self._server.start_workers(self._workers)
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._server.stop_workers()
        self._server.server_close()
