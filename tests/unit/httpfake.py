"""A scripted HTTP server on 127.0.0.1 for client tests: real sockets, canned replies.

Each request takes the next scripted reply (a :class:`Reply`, or a function of the
request returning one); when the script is empty, ``fallback`` answers. Every request is
recorded. Use it as a context manager so that it is always shut down.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up mid-request (timeouts) are expected here, not errors."""


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """A canned answer. ``body`` given as dict/list is sent as JSON; ``delay`` in seconds
    before the answer; ``drip`` seconds between the body's bytes, sent one at a time (a
    server that trickles); ``reason`` the status line's reason phrase."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drip: float = 0.0
    reason: str | None = None

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Step = Reply | Callable[[Recorded], Reply]


def json_reply(body: dict[str, Any] | list[Any], status: int = 200, **headers: str) -> Reply:
    return Reply(status, body, {"Content-Type": "application/json", **headers})


class FakeServer:
    """The server; ``url`` is its base URL, ``requests`` what it received, in order."""

    def __init__(self, fallback: Step | None = None) -> None:
        self.requests: list[Recorded] = []
        self.fallback: Step = fallback or Reply(599, b"unscripted request")
        self._script: deque[Step] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *steps: Step) -> None:
        with self._lock:
            self._script.extend(steps)

    def close(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _next(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            step = self._script.popleft() if self._script else self.fallback
        return step(request) if callable(step) else step

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Recorded(self.command, self.path, dict(self.headers.items()), body)
                reply = server._next(request)
                if reply.delay and server._stopping.wait(reply.delay):
                    return
                payload = b"" if reply.status in (204, 304) else reply.encoded()
                try:
                    self.send_response_only(reply.status, reply.reason)
                    if not any(k.lower() == "date" for k in reply.headers):
                        self.send_header("Date", self.date_time_string())
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if reply.status not in (204, 304):
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if not reply.drip:
                        self.wfile.write(payload)
                    for byte in payload if reply.drip else b"":
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        if server._stopping.wait(reply.drip):
                            return
                except OSError:  # the client gave up (e.g. its read timeout)
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests assert on ``requests`` instead."""

        return Handler


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
