"""HTTP: ``/metrics``, a landing page at ``/``, ``/jobs`` and ``/api/v1/jobs`` (the
status page, jobspage.py), ``/-/healthy``, ``/-/ready``, ``/-/reload``.

``/metrics`` is prometheus_client's WSGI app over our own registry (text or OpenMetrics
by content negotiation, gzip when asked); it only reads memory. TLS and basic auth come
from an exporter-toolkit web config file (``--web.config.file``).
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
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


class _Handler(WSGIRequestHandler):
    """Requests are logged at debug level only; TLS handshakes happen per thread."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    ssl_context: Callable[[], ssl.SSLContext] | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            try:
                request = self.ssl_context().wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class HTTPServer:
    """The app on a listening socket, served by a background thread."""

    def __init__(
        self,
        app: WSGIApp,
        address: str,
        *,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        """``ssl_context`` gives the TLS context for each new connection (None: HTTP)."""
        host, port = parse_listen_address(address)
        host = host or "0.0.0.0"  # noqa: S104 (":PORT" listens everywhere, as documented)
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        self._server = make_server(
            host, port, app, server_class=server_class, handler_class=_Handler
        )
        self._server.ssl_context = ssl_context
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
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
