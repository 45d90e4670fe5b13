"""Bad input from ModelArts: one task's preview (or the list call) misbehaves.

Every test drives the real pipeline in-process (client -> discovery -> poller -> store ->
collector) against the simulator, on fake time (see ``badinput_helpers``). Two jobs with
two tasks each; ``BAD`` misbehaves. What must hold in every case:

* no exception escapes a cycle, and nothing is logged with a traceback;
* the misbehaving task gets ``modelarts_task_up`` 0 (204/not-ready: stays up, no data)
  and its counters do not move;
* the other tasks' counters equal what the simulator holds, byte for byte;
* after the fault clears, more growth and more cycles count everything exactly once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import requests
from badinput_helpers import BAD, MARKER, OTHERS, TASKS, TOKEN, FakeSleep, Key, World
from helpers import free_port, wait_for
from prometheus_client import CollectorRegistry

from modelarts_exporter.modelarts import errors
from modelarts_exporter.modelarts.auth import TokenAuth
from modelarts_exporter.modelarts.client import ModelArtsClient, RetryPolicy
from modelarts_exporter.server import metrics_body
from modelarts_exporter.simulator import Fault

MANY = 1000
"""Fault.times for a fault that lasts until clear_faults()."""
READ_TIMEOUT = 0.4
"""The client's read timeout in the timeout tests (5 s elsewhere)..."""
SLOW_ANSWER = 0.8
"""...and how late the simulator answers there."""


@pytest.fixture
def world(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    caplog.set_level(logging.INFO, logger="exporter")
    w = World(tmp_path)
    yield w
    w.close()


@pytest.fixture
def serial_world(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    """One preview at a time: the retry sleeps recorded are the misbehaving task's only
    (a 429 pauses the shared throttle, which concurrent previews would also wait on)."""
    caplog.set_level(logging.INFO, logger="exporter")
    w = World(tmp_path, concurrency=1)
    yield w
    w.close()


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """A bug met by one task is caught by the poller but logged with a traceback: none."""
    bugs = [r.getMessage() for r in caplog.records if r.exc_info]
    assert bugs == []


def start(world: World) -> dict[str, float | None]:
    """A good first cycle: every task up and exact. Returns BAD's counters."""
    world.grow()
    report = world.cycle()
    assert report.failed == 0
    for key in TASKS:
        world.assert_exact(key)
    return world.counters(BAD)


def assert_others_exact(world: World) -> None:
    for key in OTHERS:
        world.assert_exact(key)


def recover(world: World, *, seconds: float = 2.0) -> None:
    """Clear the faults, grow every log, run cycles: everything exact, nothing twice."""
    world.sim.clear_faults()
    world.grow()
    world.cycle(seconds)
    world.grow()
    world.cycle()
    for key in TASKS:
        world.assert_exact(key)


def fault_on(world: World, key: Key, **kwargs: object) -> Fault:
    return Fault(method="GET", path_pattern=world.preview_path(key), **kwargs)  # type: ignore[arg-type]


def down_for_a_cycle(
    world: World, caplog: pytest.LogCaptureFixture, fault: Fault, attempts: int
) -> None:
    """The common shape: fault on BAD's preview; BAD down and frozen; others exact."""
    before = start(world)
    requests_before = world.preview_requests(BAD)
    world.grow()
    world.sim.inject(fault)
    report = world.cycle()
    assert report.failed == 1
    assert world.up(BAD) == 0.0
    assert world.counters(BAD) == before
    # A request is recorded once answered: a delayed one shows up after the client gave up.
    wait_for(lambda: world.preview_requests(BAD) - requests_before >= attempts, 5, "the attempts")
    assert world.preview_requests(BAD) - requests_before == attempts
    assert_others_exact(world)
    recover(world)
    no_tracebacks(caplog)


# --- preview bodies that cannot be used (HTTP 200) -----------------------------------------


def _body(obj: object) -> bytes:
    return json.dumps(obj).encode()


BAD_BODIES = [
    pytest.param(b'{"content": "x\\n", "current_size": 2, "full_size":', id="malformed-json"),
    pytest.param(b"OK", id="plain-text"),
    pytest.param(b"", id="empty-200"),
    pytest.param(b"[]", id="json-array"),
    pytest.param(b"null", id="json-null"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    pytest.param(_body({"current_size": 2, "full_size": 2}), id="content-missing"),
    pytest.param(_body({"content": 12345, "current_size": 5, "full_size": 5}), id="content-number"),
    pytest.param(_body({"content": ["x\n"], "current_size": 2, "full_size": 2}), id="content-list"),
    pytest.param(
        _body({"content": "x\n", "current_size": "2", "full_size": "2"}), id="sizes-strings"
    ),
    pytest.param(
        _body({"content": "x\n", "current_size": True, "full_size": True}), id="sizes-bool"
    ),
    pytest.param(_body({"content": "x\n", "current_size": None, "full_size": 2}), id="size-null"),
    pytest.param(_body({"content": "x\n", "current_size": -2, "full_size": 2}), id="size-negative"),
    pytest.param(
        _body({"content": "x\n", "current_size": 2, "full_size": -5}), id="full-size-negative"
    ),
    pytest.param(
        _body({"content": "x\n", "current_size": 5000, "full_size": 10}), id="current-gt-full"
    ),
    pytest.param(
        _body({"content": "x\n", "current_size": 2, "full_size": 2**62}), id="full-size-2**62"
    ),
    pytest.param(
        _body({"content": "x\n", "current_size": 2**62, "full_size": 2**62}), id="both-2**62"
    ),
    pytest.param(b'{"content": "x\\n", "current_size": 2, "full_size": 1e999}', id="size-1e999"),
    pytest.param(b'{"content": "x\\n", "current_size": NaN, "full_size": 2}', id="size-NaN"),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_an_unusable_preview_body_marks_only_that_task_down(
    world: World, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    down_for_a_cycle(world, caplog, fault_on(world, BAD, status=200, body=body, times=MANY), 1)
    assert any("preview_log" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_a_truncated_preview_body_is_a_transport_failure(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Content-Length promises more than arrives: the connection closes mid-body."""
    fault = fault_on(
        world,
        BAD,
        status=200,
        body=b'{"content": "x\\n", "curr',
        headers={"Content-Length": "4000"},
        times=MANY,
    )
    down_for_a_cycle(world, caplog, fault, world.max_attempts)


def test_a_non_ascii_digit_content_length_on_a_good_preview_is_harmless(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """'²' passes str.isdigit() but is no number (it reaches the client as the latin-1
    byte 0xB2); the body is read to the end of the connection and used as usual."""
    start(world)
    world.grow()
    log = world.sim.log_bytes(world.job_id(BAD[0]), BAD[1])
    answer = {"content": log.decode(), "current_size": len(log), "full_size": len(log)}
    world.sim.inject(
        fault_on(world, BAD, status=200, body=_body(answer), headers={"Content-Length": "\u00b2"})
    )
    assert world.cycle().failed == 0
    for key in TASKS:
        world.assert_exact(key)
    recover(world)
    no_tracebacks(caplog)


def test_a_non_ascii_digit_content_length_on_a_bad_preview_marks_the_task_down(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    fault = fault_on(
        world,
        BAD,
        status=200,
        body=_body({"content": 5, "current_size": 2, "full_size": 2}),
        headers={"Content-Length": "\u00b2"},
        times=MANY,
    )
    down_for_a_cycle(world, caplog, fault, 1)


# --- error answers -------------------------------------------------------------------------

HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title><style>body{color:red}</style></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


def _error(code: str, message: str) -> bytes:
    return _body({"error_code": code, "error_msg": message})


ERRORS = [
    # (status, body, headers, attempts in the cycle)
    pytest.param(502, HTML_502, {"Content-Type": "text/html"}, 3, id="502-html-page"),
    pytest.param(500, _error("ModelArts.0010", "Internal error."), {}, 3, id="500-modelarts"),
    pytest.param(503, b"", {}, 3, id="503-empty"),
    pytest.param(504, b"upstream timed out", {"Content-Type": "text/plain"}, 3, id="504-text"),
    pytest.param(
        429, _error("ModelArts.2799", "services too many requests"), {}, 3, id="429-exhausted"
    ),
    pytest.param(
        429,
        _error("APIG.0308", "The throttling threshold has been reached"),
        {"Retry-After": "2"},
        3,
        id="429-retry-after-exhausted",
    ),
    pytest.param(400, _error("ModelArts.2819", "Log file has cleared."), {}, 1, id="400-2819"),
    pytest.param(400, _error("ModelArts.2820", "Log path not found."), {}, 1, id="400-2820"),
    pytest.param(400, _error("ModelArts.2764", "Invalid query."), {}, 1, id="400-2764"),
    pytest.param(404, _error("ModelArts.2836", "Path not found."), {}, 1, id="404-2836"),
    pytest.param(404, b"", {}, 1, id="404-empty"),
    pytest.param(405, _error("ModelArts.2803", "Method not allowed."), {}, 1, id="405-2803"),
    pytest.param(409, _error("ModelArts.2878", "Job status changed."), {}, 1, id="409-2878"),
    pytest.param(302, b"", {"Location": "http://evil.example/"}, 1, id="302-redirect"),
]


@pytest.mark.parametrize(("status", "body", "headers", "attempts"), ERRORS)
def test_an_error_answer_marks_only_that_task_down(
    world: World,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: bytes,
    headers: dict[str, str],
    attempts: int,
) -> None:
    fault = fault_on(world, BAD, status=status, body=body, headers=headers, times=MANY)
    down_for_a_cycle(world, caplog, fault, attempts)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    line = next(m for m in warnings if "preview of task worker-0 of job bravo failed" in m)
    assert f"HTTP {status}" in line
    assert "<" not in line  # an HTML page is reduced to its text
    assert "\n" not in line


def test_a_read_timeout_marks_only_that_task_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    world = World(tmp_path, read_timeout=READ_TIMEOUT)
    try:
        fault = fault_on(
            world, BAD, status=None, delay_seconds=SLOW_ANSWER, times=world.max_attempts
        )
        down_for_a_cycle(world, caplog, fault, world.max_attempts)
        assert any("read timeout" in r.getMessage() for r in caplog.records)
    finally:
        world.close()


def test_a_dropped_connection_marks_only_that_task_down(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    fault = fault_on(world, BAD, drop_connection=True, times=MANY)
    down_for_a_cycle(world, caplog, fault, world.max_attempts)


# --- retried, then answered ----------------------------------------------------------------


def _retried_then_ok(world: World, caplog: pytest.LogCaptureFixture, fault: Fault) -> list[float]:
    """BAD fails ``fault.times`` attempts, then the retry works in the same cycle."""
    start(world)
    requests_before = world.preview_requests(BAD)
    sleeps_before = len(world.sleep.sleeps)
    world.grow()
    world.sim.inject(fault)
    report = world.cycle()
    assert report.failed == 0
    wait_for(
        lambda: world.preview_requests(BAD) - requests_before >= fault.times + 1, 5, "attempts"
    )
    assert world.preview_requests(BAD) - requests_before == fault.times + 1
    sleeps = world.sleep.sleeps[sleeps_before:]
    for key in TASKS:
        world.assert_exact(key)
    recover(world)
    no_tracebacks(caplog)
    return sleeps


def test_5xx_is_retried_then_counted_once(
    serial_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world = serial_world
    fault = fault_on(world, BAD, status=503, body=_error("ModelArts.4302", "gateway"), times=2)
    sleeps = _retried_then_ok(world, caplog, fault)
    # Full jitter under the policy's caps: 0.5 s, then 1 s.
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5
    assert 0 <= sleeps[1] <= 1.0


def test_429_with_retry_after_waits_that_long(
    serial_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world = serial_world
    fault = fault_on(
        world, BAD, status=429, body=_error("ModelArts.2799", "busy"), headers={"Retry-After": "7"}
    )
    sleeps = _retried_then_ok(world, caplog, fault)
    assert sleeps == [7.0]


def test_429_with_an_http_date_retry_after_waits_until_then(
    serial_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Retry-After as an HTTP-date, measured against the response's own Date header."""
    world = serial_world
    fault = fault_on(
        world,
        BAD,
        status=429,
        body=_error("ModelArts.6101", "system busy"),
        headers={"Retry-After": formatdate(time.time() + 10, usegmt=True)},
    )
    sleeps = _retried_then_ok(world, caplog, fault)
    assert len(sleeps) == 1
    assert 8.0 <= sleeps[0] <= 11.0  # HTTP dates have whole seconds


@pytest.mark.parametrize("retry_after", ["soon", "-5", "", "inf"])
def test_429_without_a_usable_retry_after_backs_off(
    serial_world: World, caplog: pytest.LogCaptureFixture, retry_after: str
) -> None:
    world = serial_world
    headers = {"Retry-After": retry_after} if retry_after else {}
    fault = fault_on(world, BAD, status=429, body=b"", headers=headers, times=2)
    sleeps = _retried_then_ok(world, caplog, fault)
    assert len(sleeps) == 2
    assert all(0 <= s <= 1.0 for s in sleeps)


def test_a_slow_answer_within_the_read_timeout_is_fine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    world = World(tmp_path, read_timeout=2.0)
    try:
        before = start(world)
        world.grow()
        world.sim.inject(fault_on(world, BAD, status=None, delay_seconds=0.3))
        assert world.cycle().failed == 0
        for key in TASKS:
            world.assert_exact(key)
        assert world.counters(BAD) != before
        no_tracebacks(caplog)
    finally:
        world.close()


def test_one_read_timeout_then_the_retry_counts_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    world = World(tmp_path, read_timeout=READ_TIMEOUT)
    try:
        _retried_then_ok(
            world, caplog, fault_on(world, BAD, status=None, delay_seconds=SLOW_ANSWER)
        )
    finally:
        world.close()


# --- not ready: the call worked, there is nothing to read --------------------------------

NOT_READY = [
    pytest.param(204, b"", id="204-empty"),
    pytest.param(204, _error("ModelArts.2776", "not ready for fetch log"), id="204-2776-body"),
    pytest.param(400, _error("ModelArts.2818", "Log file not generated."), id="400-2818"),
]


@pytest.mark.parametrize(("status", "body"), NOT_READY)
def test_not_ready_keeps_the_counters_and_the_task_up(
    world: World, caplog: pytest.LogCaptureFixture, status: int, body: bytes
) -> None:
    before = start(world)
    world.grow()
    world.sim.inject(fault_on(world, BAD, status=status, body=body, times=MANY))
    report = world.cycle()
    assert report.failed == 0
    assert report.outcomes["not_ready"] == 1
    assert world.up(BAD) == 1.0
    assert world.counters(BAD) == before
    assert_others_exact(world)
    recover(world)
    no_tracebacks(caplog)


@pytest.mark.parametrize(("status", "body"), NOT_READY)
def test_a_task_without_a_log_yet_has_no_size_until_one_appears(
    world: World, caplog: pytest.LogCaptureFixture, status: int, body: bytes
) -> None:
    world.grow(OTHERS)
    world.sim.inject(fault_on(world, BAD, status=status, body=body, times=MANY))
    assert world.cycle().failed == 0
    assert world.up(BAD) == 1.0
    assert world.sample("modelarts_task_log_size_bytes", BAD) is None
    assert world.sample("modelarts_task_log_lines_total", BAD) in (None, 0.0)
    assert_others_exact(world)
    recover(world)
    no_tracebacks(caplog)


# --- credentials rejected: down, told once, and backed off --------------------------------

AUTH_ERRORS = [
    pytest.param(401, _error("ModelArts.0204", "Failed to parse the token."), id="401-0204"),
    pytest.param(401, _error("ModelArts.0203", "The token has expired."), id="401-0203"),
    pytest.param(
        401,
        _body(
            {"error_msg": "Incorrect IAM authentication information", "error_code": "APIGW.0301"}
        ),
        id="401-apigw",
    ),
    pytest.param(403, _error("ModelArts.0206", "Invalid AK/SK."), id="403-0206"),
]
ACCESS_DENIED = [
    pytest.param(403, _error("ModelArts.0108", "Policy denied."), id="403-0108"),
    pytest.param(403, _error("ModelArts.2785", "Authorization not found."), id="403-2785"),
]
"""Refusals of access (perhaps to one job only), not of the credential itself."""


def _never_ahead(world: World, key: Key, last: dict[str, float | None]) -> dict[str, float | None]:
    """The task's counters did not go down and are not ahead of the log; returns them."""
    got = world.counters(key)
    truth = world.truth(key)
    for name, value in truth.items():
        now = got[name]
        assert now is not None
        assert now <= value, (key, name)
        assert now >= (last.get(name) or 0.0), (key, name)
    return got


@pytest.mark.parametrize(("status", "body"), AUTH_ERRORS)
def test_a_rejected_credential_is_logged_clearly_and_backed_off(
    world: World, caplog: pytest.LogCaptureFixture, status: int, body: bytes
) -> None:
    """A rejection pauses every preview for a while (the credential is the same for all):
    the other tasks may miss a cycle, but never count wrong, and catch up exactly."""
    before = start(world)
    bad_before = world.preview_requests(BAD)
    world.sim.inject(fault_on(world, BAD, status=status, body=body, times=MANY))
    last: dict[Key, dict[str, float | None]] = {key: {} for key in OTHERS}
    for _ in range(12):  # 12 s of fake time, a cycle every second
        world.grow(OTHERS)
        world.cycle(1.0)
        assert world.up(BAD) == 0.0
        assert world.counters(BAD) == before
        for key in OTHERS:
            last[key] = _never_ahead(world, key, last[key])
    # Asked at most twice (then the backoff cap, 600 s), not once per cycle...
    assert 1 <= world.preview_requests(BAD) - bad_before <= 2
    # ...while the others are polled again.
    assert_others_exact(world)
    code = json.loads(body)["error_code"]
    told = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert 1 <= len(told) <= 2, told
    assert "rejected the credentials" in told[0]
    assert f"HTTP {status}" in told[0]
    assert code in told[0]
    assert "\n" not in told[0]
    assert TOKEN not in caplog.text
    # Once the credential works again, the task comes back within the backoff cap.
    world.sim.clear_faults()
    world.grow()
    world.cycle(601.0)
    for key in TASKS:
        world.assert_exact(key)
    no_tracebacks(caplog)


@pytest.mark.parametrize(("status", "body"), ACCESS_DENIED)
def test_access_denied_to_one_task_backs_that_task_off_only(
    world: World, caplog: pytest.LogCaptureFixture, status: int, body: bytes
) -> None:
    """A 403 that denies access (a policy) may concern one job: that task backs off
    (doubling waits), the others are polled every cycle as usual."""
    before = start(world)
    bad_before = world.preview_requests(BAD)
    others_before = {key: world.preview_requests(key) for key in OTHERS}
    world.sim.inject(fault_on(world, BAD, status=status, body=body, times=MANY))
    for _ in range(12):  # 12 s of fake time, a cycle every second
        world.grow(OTHERS)
        world.cycle(1.0)
        assert world.up(BAD) == 0.0
        assert world.counters(BAD) == before
    # Asked after 1, 2, 4, 8 s: not once per cycle.
    assert 1 <= world.preview_requests(BAD) - bad_before <= 4
    for key in OTHERS:
        assert world.preview_requests(key) - others_before[key] == 12
    assert_others_exact(world)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(json.loads(body)["error_code"] in line for line in warned)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    world.sim.clear_faults()
    world.grow()
    world.cycle(601.0)
    for key in TASKS:
        world.assert_exact(key)
    no_tracebacks(caplog)


def test_a_credential_rejected_everywhere_keeps_every_series_and_stops_hammering(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    start(world)
    befores = {key: world.counters(key) for key in TASKS}
    series_before = {alias: sorted(_job_series(world, alias)) for alias in ("a", "b")}
    previews_before = {key: world.preview_requests(key) for key in TASKS}
    calls_before = len(world.sim.requests)
    world.sim.inject(
        Fault(status=401, body=_error("ModelArts.0204", "Failed to parse the token."), times=MANY)
    )
    cycles = 12
    for _ in range(cycles):
        world.grow()
        world.cycle(1.0)
    for key in TASKS:
        assert world.up(key) == 0.0
        assert world.counters(key) == befores[key]
        assert 0 <= world.preview_requests(key) - previews_before[key] <= 2
    # Discovery keeps the jobs it knew (and their series) when ModelArts says no.
    assert {alias: sorted(_job_series(world, alias)) for alias in ("a", "b")} == series_before
    # Nothing is retried on 401: per cycle at most the two searches, one details call per
    # job, and the previews counted above.
    calls = len(world.sim.requests) - calls_before
    assert calls <= cycles * (2 + 2) + 2 * len(TASKS)
    world.sim.clear_faults()
    world.grow()
    world.cycle(601.0)
    for key in TASKS:
        world.assert_exact(key)
    no_tracebacks(caplog)


# --- the log itself holds odd bytes: processed, not failures -------------------------------

ODD_BYTES = {
    "nul-bytes": b"step 1 \x00\x00 loss\x00=0.5 BADINPUT-MARK\n",
    "gbk-mid-line": "训练 step 1 loss=0.5 BADINPUT-MARK ok\n".encode("gbk"),
    "gbk-at-line-end": "epoch 1 BADINPUT-MARK 训练完成\n".encode("gbk"),
    "invalid-ff-fe": b"bad \xff\xfe bytes\n",
    "utf16-surrogate-bytes": b"sur \xed\xa0\x80 x\n",
    "overlong-encoding": b"ov \xc0\xaf x\n",
    "truncated-utf8-sequence": b"cut \xe4\xb8 here BADINPUT-MARK\n",
    "real-replacement-char": "replacement \ufffd char\n".encode(),
    "ansi-and-bell": b"\x1b[31mred\x1b[0m \x07 bell \x1b]0;title\x07\n",
    "valid-utf8-cjk-emoji": "训练完成 \U0001f680 done\n".encode(),
}
CUT_WINDOW_CASES = {
    "nul-bytes",
    "gbk-mid-line",
    "gbk-at-line-end",
    "truncated-utf8-sequence",
    "real-replacement-char",
    "valid-utf8-cjk-emoji",
}
"""Run with a 512-byte window too: where a cut window could split or misplace them."""


def _odd_params() -> list[object]:
    params: list[object] = []
    for window in (1 << 20, 512):
        for name, data in ODD_BYTES.items():
            if window == 512 and name not in CUT_WINDOW_CASES:
                continue
            params.append(pytest.param(data, window, id=f"{name}-window-{window}"))
    return params


@pytest.mark.parametrize(("data", "window"), _odd_params())
def test_odd_bytes_in_the_log_are_processed_exactly_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, data: bytes, window: int
) -> None:
    """NUL bytes, invalid UTF-8 (GBK), escapes: ordinary log content, counted like any.

    The odd lines end each poll's growth, so the cursor sits right after them; a 512-byte
    window cuts the log (each poll's growth still fits in it). Every count is exact at
    every poll, also where a replacement character stands for 2 or 3 log bytes (a literal
    U+FFFD, a truncated sequence): offsets are counted back from the log's exact size.
    """
    caplog.set_level(logging.INFO, logger="exporter")
    world = World(tmp_path, window_bytes=window)
    try:
        start(world)
        for _ in range(4):
            world.grow(lines=3)
            world.append(*BAD, data * 3)
            report = world.cycle()
            assert report.failed == 0
            assert report.outcomes["reset"] == 0
        assert_others_exact(world)
        world.assert_exact(BAD)
        # The job ends: its tasks' final poll settles every count.
        world.sim.set_phase(world.job_id(BAD[0]), "Completed")
        world.cycle()
        assert world.store.jobs()[world.job_id(BAD[0])].phase == "Completed"
        for key in TASKS:
            world.assert_exact(key)
        no_tracebacks(caplog)
    finally:
        world.close()


_RESYNC_BUG = (
    "BUG: cursor._wide_search resyncs onto an earlier repeat of the signature. Each "
    "replacement character standing for 2-3 log bytes (literal U+FFFD, E4 B8, GBK) is taken "
    "as 1, so the cursor's offset lags more with every poll; once the window cuts the log, "
    "the exact check misses, the wide search looks around the lagging 'expected' index and, "
    "in repeated lines, takes the match one repeat too early: those lines are counted twice "
    "(no reset, no ambiguity reported)"
)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("replacement \ufffd char\n".encode(), id="real-replacement-char"),
        pytest.param(b"cut \xe4\xb8 here\n", id="truncated-utf8-sequence"),
        pytest.param("epoch 1 训练完成\n".encode("gbk"), id="gbk-at-line-end"),
    ],
)
def test_repeated_lines_with_multibyte_replacements_in_a_cut_window_count_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, data: bytes
) -> None:
    """The same two lines, over and over (a warning printed every step), one of them with
    bytes that decode to a replacement character standing for 2 or 3 log bytes; the log
    outgrows the 512-byte window. Every poll's growth fits in the window: no line may be
    skipped, none counted twice."""
    caplog.set_level(logging.INFO, logger="exporter")
    world = World(tmp_path, window_bytes=512)
    try:
        start(world)
        for _ in range(10):
            world.append(*BAD, (data + b"BADINPUT-MARK x\n") * 5)
            assert world.cycle().failed == 0
        truth, got = world.truth(BAD), world.counters(BAD)
        for name in ("modelarts_task_log_lines_total", MARKER, "modelarts_task_log_resets_total"):
            assert got[name] == truth[name], name
        no_tracebacks(caplog)
    finally:
        world.close()


def test_a_line_longer_than_the_window_is_skipped_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 10 kB line written between two polls into a 4 kB window: it scrolled out unseen
    (skipped, not counted as a line, never half); the lines after it count once."""
    caplog.set_level(logging.INFO, logger="exporter")
    world = World(tmp_path, window_bytes=4096)
    try:
        start(world)
        long_line = b"BADINPUT-MARK " + b"L" * 10_000 + b"\n"
        world.append(*BAD, long_line)
        world.grow()
        assert world.cycle().failed == 0
        world.grow()
        world.cycle()
        assert_others_exact(world)
        truth = world.truth(BAD)
        got = world.counters(BAD)
        assert world.up(BAD) == 1.0
        assert got["modelarts_task_log_skipped_bytes_total"] == len(long_line)
        assert got["modelarts_task_log_lines_total"] == truth["modelarts_task_log_lines_total"] - 1
        assert got[MARKER] == truth[MARKER] - 1
        processed = got["modelarts_task_log_processed_bytes_total"]
        skipped = got["modelarts_task_log_skipped_bytes_total"]
        assert processed is not None
        assert skipped is not None
        assert processed + skipped == truth["modelarts_task_log_size_bytes"]
        assert got["modelarts_task_log_resets_total"] == 0
        no_tracebacks(caplog)
    finally:
        world.close()


def test_a_line_growing_past_the_window_across_polls_is_skipped_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same line written in pieces: first held back as unfinished, then it outgrows the
    window (a gap), then it ends. It is never counted, nor any piece of it; the lines around
    it are."""
    caplog.set_level(logging.INFO, logger="exporter")
    world = World(tmp_path, window_bytes=4096)
    try:
        start(world)
        world.append(*BAD, b"BADINPUT-MARK " + b"L" * 2000)
        world.cycle()
        world.append(*BAD, b"L" * 6000)
        world.cycle()
        world.append(*BAD, b"L" * 2000 + b"\n")
        world.grow()
        world.cycle()
        world.grow()
        world.cycle()
        assert_others_exact(world)
        truth = world.truth(BAD)
        got = world.counters(BAD)
        assert world.up(BAD) == 1.0
        assert got["modelarts_task_log_lines_total"] == truth["modelarts_task_log_lines_total"] - 1
        assert got[MARKER] == truth[MARKER] - 1
        assert got["modelarts_task_log_skipped_bytes_total"] == 14 + 10_001
        processed = got["modelarts_task_log_processed_bytes_total"]
        skipped = got["modelarts_task_log_skipped_bytes_total"]
        assert processed is not None
        assert skipped is not None
        assert processed + skipped == truth["modelarts_task_log_size_bytes"]
        no_tracebacks(caplog)
    finally:
        world.close()


# --- the API goes away -------------------------------------------------------------------


def test_connection_refused_keeps_everything_then_resumes_exactly(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    start(world)
    befores = {key: world.counters(key) for key in TASKS}
    world.grow()
    world.stop_simulator()
    report = world.cycle()
    assert report.discovery_ok is False
    assert report.failed == len(TASKS)
    for key in TASKS:
        assert world.up(key) == 0.0
        assert world.counters(key) == befores[key]
    assert world.self_metric("modelarts_exporter_discovery_failures_total") >= 1
    assert any("connection failed" in r.getMessage() for r in caplog.records)
    # The API comes back on the same address, with the same jobs and logs.
    world.restart_simulator()
    recover(world)
    no_tracebacks(caplog)


def test_a_client_pointed_at_a_closed_port_raises_a_transport_error() -> None:
    sleep = FakeSleep()
    client = ModelArtsClient(
        f"http://127.0.0.1:{free_port()}",
        "0123456789abcdef0123456789abcdef",
        TokenAuth(TOKEN),
        connect_timeout=2.0,
        retry=RetryPolicy(max_attempts=3),
        sleep=sleep,
    )
    with client, pytest.raises(errors.TransportError) as caught:
        client.preview_log("job", "worker-0")
    assert "connection failed" in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)  # no URL in the message
    assert len(sleep.sleeps) == 2  # three attempts


# --- jobs deleted, list calls failing ------------------------------------------------------


def _job_series(world: World, alias: str) -> list[str]:
    job_id = world.job_id(alias)
    return [name for name, labels in world.samples() if ("training_job_id", job_id) in labels]


@pytest.mark.parametrize("noticed_by", ["preview", "discovery"])
def test_a_job_deleted_mid_run_loses_its_series(
    world: World, caplog: pytest.LogCaptureFixture, noticed_by: str
) -> None:
    alpha = (("a", "worker-0"), ("a", "worker-1"))
    start(world)
    assert _job_series(world, "b")
    world.sim.delete_job(world.job_id("b"))
    world.grow(alpha)
    # Less than the discovery interval: the previews meet ModelArts.2775 first.
    report = world.cycle(0.5 if noticed_by == "preview" else 2.0)
    assert report.failed == (2 if noticed_by == "preview" else 0)
    assert _job_series(world, "b") == []
    assert world.store.snapshot().jobs.keys() == {world.job_id("a")}
    for _ in range(3):
        for key in alpha:
            world.assert_exact(key)
        world.grow(alpha)
        world.cycle()
        assert _job_series(world, "b") == []
    assert any("was deleted" in r.getMessage() for r in caplog.records)
    no_tracebacks(caplog)


LIST_FAULTS = [
    pytest.param({"status": 500, "body": _error("ModelArts.0010", "Internal error.")}, id="500"),
    pytest.param(
        {"status": 502, "body": HTML_502, "headers": {"Content-Type": "text/html"}}, id="502-html"
    ),
    pytest.param({"status": 429, "body": b"", "headers": {"Retry-After": "1"}}, id="429"),
    pytest.param({"status": 401, "body": _error("ModelArts.0204", "bad token")}, id="401"),
    pytest.param({"status": 200, "body": b'{"items": [{"kind": '}, id="malformed-json"),
    pytest.param({"status": 200, "body": b'{"items": {"a": 1}}'}, id="items-not-a-list"),
    pytest.param({"status": 200, "body": b"[1, 2]"}, id="page-not-an-object"),
    pytest.param({"drop_connection": True}, id="dropped"),
    pytest.param({"status": None, "delay_seconds": SLOW_ANSWER}, id="read-timeout"),
]


@pytest.mark.parametrize("fault", LIST_FAULTS)
def test_a_failing_list_call_keeps_every_jobs_series(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: dict[str, object]
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    slow = fault.get("delay_seconds") is not None
    world = World(tmp_path, read_timeout=READ_TIMEOUT if slow else 5.0, max_attempts=2)
    try:
        start(world)
        series_before = {alias: sorted(_job_series(world, alias)) for alias in ("a", "b")}
        world.grow()
        world.sim.inject(
            Fault(method="POST", path_pattern="/training-job-searches$", times=MANY, **fault)  # type: ignore[arg-type]
        )
        report = world.cycle()
        assert report.discovery_ok is False
        assert world.self_metric("modelarts_exporter_discovery_failures_total") >= 1
        # The known jobs are kept and still polled.
        for key in TASKS:
            world.assert_exact(key)
        assert {alias: sorted(_job_series(world, alias)) for alias in ("a", "b")} == series_before
        recover(world)
        no_tracebacks(caplog)
    finally:
        world.close()


def _list_page(world: World) -> dict[str, Any]:
    """What the simulator answers to the exporter's search right now."""
    response = requests.post(
        f"{world.sim.url}/v2/{world.sim.project_id}/training-job-searches",
        json={"limit": 50},
        headers={"X-Auth-Token": TOKEN},
        timeout=5,
    )
    assert response.status_code == 200
    page: dict[str, Any] = response.json()
    return page


def test_a_list_answer_with_a_non_ascii_digit_content_length_keeps_collecting(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    start(world)
    world.grow()
    world.sim.inject(
        Fault(
            method="POST",
            path_pattern="/training-job-searches$",
            status=200,
            body=_body(_list_page(world)),
            headers={"Content-Length": "\u00b2"},
            times=MANY,
        )
    )
    report = world.cycle()
    assert report.discovery_ok is True
    for key in TASKS:
        world.assert_exact(key)
    recover(world)
    no_tracebacks(caplog)


def test_a_malformed_job_in_the_list_does_not_drop_it(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """One list item has a bad field: it is skipped, its details call keeps the job."""
    start(world)
    page = _list_page(world)
    for item in page["items"]:
        if item["metadata"]["id"] == world.job_id("b"):
            item["status"]["tasks"] = "worker-0"  # a string, not a list
    world.sim.inject(
        Fault(
            method="POST",
            path_pattern="/training-job-searches$",
            status=200,
            body=_body(page),
            times=2,
        )
    )
    world.grow()
    world.cycle()
    for key in TASKS:
        world.assert_exact(key)
    assert any("skipping a job" in r.getMessage() for r in caplog.records)
    recover(world)
    no_tracebacks(caplog)


def test_lone_surrogates_in_one_jobs_text_stay_with_that_job(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Valid JSON can carry a lone UTF-16 surrogate, which no UTF-8 file, URL or label can.
    In a name it is shown as U+FFFD; in an id the job (or task) is not watched. Either way
    it is logged once, counted, and every cycle, save and scrape keeps working."""
    start(world)
    page = _list_page(world)
    items = page["items"]
    bravo = next(i for i in items if i["metadata"]["id"] == world.job_id("b"))
    bravo["metadata"]["name"] = "bravo\ud800"
    bravo["algorithm"]["engine"]["engine_name"] = "\udfff"
    bravo["spec"]["resource"]["flavor_id"] = "gpu\ud800"
    evil = json.loads(json.dumps(bravo))
    evil["metadata"]["id"] = "evil\ud800"
    evil["metadata"]["name"] = "evil"
    items.append(evil)
    alpha = next(i for i in items if i["metadata"]["id"] == world.job_id("a"))
    alpha["status"]["tasks"] = [*alpha["status"]["tasks"], "worker-\udc00"]
    page["count"] = len(items)
    body = json.dumps(page).encode()
    assert b"\\ud800" in body  # the escape as JSON carries it
    world.sim.inject(
        Fault(
            method="POST", path_pattern="/training-job-searches$", status=200, body=body, times=MANY
        )
    )
    for _ in range(3):
        world.grow()
        report = world.cycle()
        assert report.failed == 0
        assert report.discovery_ok is True
        for key in TASKS:
            world.assert_exact(key)
    assert set(world.store.jobs()) == {world.job_id("a"), world.job_id("b")}
    info = {
        dict(labels)["training_job_id"]: dict(labels)
        for (name, labels) in world.samples()
        if name == "modelarts_training_job_info"
    }
    assert info[world.job_id("b")]["training_job_name"] == "bravo\ufffd"
    assert info[world.job_id("b")]["flavor"] == "gpu\ufffd"
    body, _ = metrics_body(CollectorRegistry(), world.collector.render, None)
    body.decode("utf-8")
    assert world.self_metric("modelarts_exporter_state_save_failures_total") == 0.0
    # Counted each time an answer carries them (the fault answers both list calls).
    for field in ("id", "task", "name", "engine", "flavor"):
        assert world.self_metric("modelarts_exporter_api_invalid_text_total", field=field) == 6.0
    assert world.self_metric("modelarts_exporter_api_invalid_text_total", field="phase") == 0.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in warnings if "evil" in m]) == 1
    assert len([m for m in warnings if world.job_id("b") in m]) == 1
    assert len([m for m in warnings if "worker-" in m]) == 1
    world.store.close()
    world.store.open()  # what was saved is all there, and readable
    for key in TASKS:
        world.assert_exact(key)
    recover(world)
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            {"content": "x\n", "current_size": 2, "full_size": 2**40}, id="full-size-2**40"
        ),
        pytest.param({"content": "x\n", "current_size": 2, "full_size": 2**33}, id="jump-8GiB"),
    ],
)
def test_an_implausible_full_size_is_a_bad_answer_not_skipped_bytes(
    world: World, caplog: pytest.LogCaptureFixture, answer: dict[str, object]
) -> None:
    """Issue 10, item 6: 2**40 is within what the client lets through; no log can be
    that big (ModelArts stops logs at 1 GiB) nor grow 8 GiB in two seconds."""
    before = start(world)
    world.grow()
    world.sim.inject(fault_on(world, BAD, status=200, body=_body(answer)))
    world.cycle()
    assert world.up(BAD) == 0.0
    assert world.counters(BAD) == before
    assert world.self_metric("modelarts_exporter_polls_total", outcome="implausible") == 1.0
    assert any("not plausible" in r.getMessage() for r in caplog.records)
    assert_others_exact(world)
    recover(world)
    no_tracebacks(caplog)


def test_a_lagging_replica_never_doubles_a_counter(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10, item 6: an answer 1 byte shorter than the last, then the last answer's
    content under a larger full_size: both stale, nothing counted twice."""
    start(world)
    key = BAD
    log = world.sim.log_bytes(world.job_id(key[0]), key[1])
    shorter = {
        "content": log[:-1].decode(),
        "current_size": len(log) - 1,
        "full_size": len(log) - 1,
    }
    world.sim.inject(fault_on(world, key, status=200, body=_body(shorter)))
    world.cycle()
    world.grow()
    larger = {"content": log.decode(), "current_size": len(log), "full_size": len(log) + 5000}
    world.sim.inject(fault_on(world, key, status=200, body=_body(larger)))
    world.cycle()
    assert world.self_metric("modelarts_exporter_polls_total", outcome="stale") == 2.0
    assert world.up(key) == 1.0
    recover(world)
    assert world.self_metric("modelarts_exporter_polls_total", outcome="reset") == 0.0
    no_tracebacks(caplog)
