"""Every ModelArts call ends by its deadline, and at once when the client is stopped.

Hostile servers on 127.0.0.1: one that trickles its body (one byte at a time, never
tripping the read timeout), one that trickles its headers, one that answers just after
each read timeout, one that pages forever, one that asks to retry in a day. Each test
states what must happen (the error, how many requests), never how long it took: a
client without deadlines would hang here until the per-test timeout fails it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from httpfake import FakeServer, Recorded, Reply, json_reply

from modelarts_exporter.modelarts import errors
from modelarts_exporter.modelarts.auth import PasswordAuth, TokenAuth
from modelarts_exporter.modelarts.client import ModelArtsClient, RetryPolicy, new_session
from modelarts_exporter.modelarts.throttle import Throttle

pytestmark = pytest.mark.timeout(60)

PROJECT = "0123456789abcdef0123456789abcdef"
PREVIEW = {"content": "x" * 2000, "current_size": 2000, "full_size": 2000}
DRIP = 0.02  # seconds between bytes: 2000 bytes take 40 s, the deadline is 0.5 s


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


def client(server_url: str, **options: Any) -> ModelArtsClient:
    settings: dict[str, Any] = {
        "retry": RetryPolicy(max_attempts=4, backoff_initial=0.0),
        "deadline": 0.5,
        "read_timeout": 5.0,
        **options,
    }
    return ModelArtsClient(server_url, PROJECT, TokenAuth("token-1234"), **settings)


def dripping(body: object) -> Reply:
    return Reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, drip=DRIP)


def test_a_body_that_trickles_is_cut_at_the_deadline(server: FakeServer) -> None:
    server.fallback = dripping(PREVIEW)
    with client(server.url) as c, pytest.raises(errors.DeadlineError) as caught:
        c.preview_log("job", "worker-0")
    assert "deadline of 0 s" not in str(caught.value)
    assert caught.value.reason == "DeadlineError"
    assert len(server.requests) == 1  # no retry after the deadline


def test_answers_just_after_each_read_timeout_end_by_the_deadline(server: FakeServer) -> None:
    """Each attempt times out after 0.2 s; four of them would take 0.8 s, the deadline is
    0.5 s: the third attempt is cut, the fourth never made."""
    server.fallback = Reply(200, json.dumps(PREVIEW), delay=0.3)
    sleeps: list[float] = []
    with (
        client(server.url, read_timeout=0.2, sleep=sleeps.append) as c,
        pytest.raises(errors.DeadlineError),
    ):
        c.preview_log("job", "worker-0")
    assert len(server.requests) == 3


def _header_dripper(stop: threading.Event) -> tuple[socket.socket, threading.Thread]:
    """A server that sends its status line, then one header byte every DRIP seconds."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(DRIP):
                try:
                    connection.sendall(b"X")
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_headers_that_trickle_are_cut_at_the_deadline() -> None:
    stop = threading.Event()
    listener, thread = _header_dripper(stop)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with (
            client(url, retry=RetryPolicy(max_attempts=1)) as c,
            pytest.raises(errors.DeadlineError),
        ):
            c.get_job("job")
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_an_iam_login_that_trickles_is_cut_by_the_calls_deadline(server: FakeServer) -> None:
    token = {"token": {"expires_at": "2999-01-01T00:00:00Z"}}

    def iam(request: Recorded) -> Reply:
        if request.path.startswith("/v3/auth/tokens"):
            reply = dripping(token)
            return Reply(201, reply.body, {**reply.headers, "X-Subject-Token": "t"}, drip=DRIP)
        return json_reply({"metadata": {"id": "job"}, "status": {"phase": "Running"}})

    server.fallback = iam
    session = new_session()
    auth = PasswordAuth(
        server.url, "user", "pw-123456", "domain", project_id=PROJECT, session=session
    )
    c = ModelArtsClient(server.url, PROJECT, auth, session=session, deadline=0.5)
    with c, pytest.raises(errors.DeadlineError, match="IAM login"):
        c.get_job("job")
    session.close()


def test_a_retry_after_of_a_day_fails_at_once_and_says_when_to_come_back(
    server: FakeServer,
) -> None:
    server.fallback = Reply(429, {"error_code": "ModelArts.2799"}, {"Retry-After": "100000"})
    sleeps: list[float] = []
    pauses: list[float] = []

    class Recording(Throttle):
        def pause(self, seconds: float) -> None:
            pauses.append(seconds)

    c = client(server.url, deadline=70.0, sleep=sleeps.append, throttle=Recording(None))
    with c, pytest.raises(errors.ThrottledError) as caught:
        c.preview_log("job", "worker-0")
    assert sleeps == []  # no thread waits for it
    assert len(server.requests) == 1
    assert caught.value.retry_after == RetryPolicy().retry_after_max  # capped
    assert pauses == [RetryPolicy().pause_max]  # the other calls pause only briefly


def test_pages_that_never_end_are_bounded_by_the_listing_deadline(server: FakeServer) -> None:
    """A full page of new jobs, every time, without a count."""

    def page(request: Recorded) -> Reply:
        offset = request.json()["offset"]
        items = [
            {"metadata": {"id": f"job-{offset}-{n}"}, "status": {"phase": "Running"}}
            for n in range(50)
        ]
        return Reply(200, {"items": items}, delay=0.02)

    server.fallback = page
    with client(server.url, deadline=0.1) as c, pytest.raises(errors.DeadlineError):
        c.list_jobs()
    assert 1 < len(server.requests) < 100


def _stopped_in_flight(c: ModelArtsClient, server: FakeServer, call: Any) -> BaseException:
    """Start ``call`` in a thread, stop the client once the server has the request."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            caught.append(exc)

    thread = threading.Thread(target=run)
    arrived = threading.Event()
    fallback = server.fallback

    def noting(request: Recorded) -> Reply:
        arrived.set()
        return fallback(request) if callable(fallback) else fallback

    server.fallback = noting
    thread.start()
    assert arrived.wait(10)
    c.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert len(caught) == 1
    return caught[0]


def test_stop_ends_a_call_in_flight(server: FakeServer) -> None:
    server.fallback = dripping(PREVIEW)
    with client(server.url, deadline=3600.0) as c:
        error = _stopped_in_flight(c, server, lambda: c.preview_log("job", "worker-0"))
        assert isinstance(error, errors.StoppedError)
        with pytest.raises(errors.StoppedError):  # and no new call is made
            c.get_job("job")
    assert len(server.requests) == 1


def test_stop_ends_a_wait_for_retry_after(server: FakeServer) -> None:
    server.fallback = Reply(503, {"error_code": "ModelArts.4302"}, {"Retry-After": "1000"})
    with client(server.url, deadline=3600.0) as c:
        error = _stopped_in_flight(c, server, lambda: c.get_job("job"))
        assert isinstance(error, errors.StoppedError)
    assert len(server.requests) == 1


def test_a_deadline_cut_leaves_the_connection_pool_usable(server: FakeServer) -> None:
    server.script(dripping(PREVIEW))
    server.fallback = json_reply(PREVIEW)
    with client(server.url) as c:
        with pytest.raises(errors.DeadlineError):
            c.preview_log("job", "worker-0")
        preview = c.preview_log("job", "worker-0")
        assert preview is not None
        assert preview.full_size == 2000
