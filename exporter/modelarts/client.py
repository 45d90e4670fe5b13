"""HTTP client for the ModelArts v2 training-job API: list, details, log preview, events
and task metrics.

One pooled ``requests.Session``; every attempt is throttled, authenticated (signed or
token), timed out, reported to an observer, and retried when that is safe: 429 after
``Retry-After``, 5xx and transport failures with capped exponential backoff and full
jitter. All failures surface as the typed errors of :mod:`modelarts_exporter.modelarts.errors`.

Every call has a total deadline (``deadline`` seconds: connect, the whole answer, an IAM
login on the way, retries and their waits included; a listing of several pages has four
times that): a server that trickles its answer is cut off (:mod:`.deadline`), and a wait
that would end past the deadline is not started: the call fails at once, so that the
caller can try again later (a ``Retry-After`` of a day defers one task, it does not hold a
thread). :meth:`ModelArtsClient.stop` ends every call in flight within moments.
"""

from __future__ import annotations

import contextlib
import enum
import html
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote, urlsplit

import requests
from urllib3.exceptions import ReadTimeoutError

from .. import __version__
from . import errors
from .deadline import Cut, Watchdog, guarded_session
from .platform import parse_events_page, parse_running_records, parse_task_metrics
from .types import EventPage, LogPreview, TrainingJob

if TYPE_CHECKING:
    from .auth import Auth
    from .throttle import Throttle

logger = logging.getLogger("exporter.modelarts")

DEFAULT_USER_AGENT = f"modelarts-exporter/{__version__}"
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_PAGES = 1_000
LISTING_DEADLINES = 4
"""A listing of several pages must end within this many call deadlines."""
MAX_PAGE_SIZE = 50
MAX_EVENTS_PAGE_SIZE = 100
MAX_LOG_SIZE = 2**40
POOL_MAXSIZE = 32
SNIPPET_CHARS = 200

JOB_NOT_FOUND = "ModelArts.2775"
LOG_NOT_READY = frozenset({"ModelArts.2776", "ModelArts.2818"})
LOG_UNAVAILABLE = frozenset({"ModelArts.2819", "ModelArts.2820", "ModelArts.2822"})

_ERROR_FIELDS = (("error_code", "error_msg"), ("errorCode", "errorMsg"), ("code", "message"))
_SCRIPT_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]*>")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class RequestObserver(Protocol):
    """Told about every HTTP attempt, e.g. to count requests and failures per endpoint."""

    def observe(
        self, endpoint: str, duration_seconds: float, error: errors.ModelArtsError | None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry 429, 5xx and transport failures.

    ``retry_after_max`` caps a server's ``Retry-After`` (what a ThrottledError reports);
    ``pause_max`` caps how long a 429 answered to one call pauses every other call.
    """

    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 300.0
    pause_max: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        limits = (self.backoff_initial, self.backoff_max, self.retry_after_max, self.pause_max)
        if min(limits) < 0:
            raise ValueError("backoff and retry_after limits must be >= 0")

    def backoff(self, failed_attempts: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(backoff_max, initial * 2**(failed_attempts-1))]."""
        exponent = min(max(failed_attempts - 1, 0), 64)
        return rng.uniform(0.0, min(self.backoff_max, self.backoff_initial * 2.0**exponent))


class _NoResult(enum.Enum):
    """A call that succeeded without a body: 204, or an error code that means "not yet"."""

    TOKEN = 0


NO_RESULT = _NoResult.TOKEN


@dataclass(frozen=True, slots=True)
class Outcome:
    """One HTTP attempt: the parsed body (or NO_RESULT), else the error and its Retry-After.

    ``login_failed``: the IAM login before the request failed (already counted by auth).
    """

    data: object
    error: errors.ModelArtsError | None = None
    retry_after: float | None = None
    login_failed: bool = False


class _InvalidJob(ValueError):
    """A JobResponse field is missing or has the wrong type; the message names it."""


def default_deadline(connect_timeout: float, read_timeout: float) -> float:
    """The total deadline of one call when none is configured: two attempts' worth."""
    return 2.0 * (connect_timeout + read_timeout)


class ModelArtsClient:
    """The ModelArts calls the exporter needs, with retries and typed errors.

    ``auth`` is a :class:`modelarts_exporter.modelarts.auth.Auth`. ``sleep`` and ``rng`` drive the
    retry delays and are injectable for tests (the default sleep ends early on
    :meth:`stop`); ``clock`` measures the deadline (``deadline`` seconds per call, default
    :func:`default_deadline`). ``throttle`` (shared by all threads using this client)
    limits the request rate and is paused briefly on HTTP 429. Sockets are cut at the
    deadline only on a session from :func:`new_session` (the default).
    """

    def __init__(
        self,
        endpoint: str,
        project_id: str,
        auth: Auth,
        *,
        workspace_id: str | None = None,
        session: requests.Session | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        throttle: Throttle | None = None,
        observer: RequestObserver | None = None,
        sleep: Callable[[float], object] | None = None,
        rng: random.Random | None = None,
        verify: bool | str = True,
        page_size: int = MAX_PAGE_SIZE,
        user_agent: str = DEFAULT_USER_AGENT,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("endpoint must be an http:// or https:// URL")
        if not project_id or "/" in project_id or project_id in _DOT_SEGMENTS:
            raise ValueError("project_id must be a non-empty path segment")
        self.endpoint = endpoint.rstrip("/")
        self.project_id = project_id
        self.workspace_id = workspace_id
        self._auth = auth
        self._owns_session = session is None
        self._session = session if session is not None else new_session()
        self._timeout = (connect_timeout, read_timeout)
        self._retry = retry if retry is not None else RetryPolicy()
        self._throttle = throttle
        self._observer = observer
        self._stopping = threading.Event()
        self._sleep = sleep if sleep is not None else self._stopping.wait
        self._clock = clock
        self._deadline = (
            deadline if deadline is not None else default_deadline(connect_timeout, read_timeout)
        )
        if not self._deadline > 0:
            raise ValueError("deadline must be > 0")
        self._watchdog = Watchdog()
        self.answered = threading.Event()
        """Set once ModelArts answered a call (the credentials work, the endpoint is right)."""
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter, not crypto)
        self._verify = verify
        self.page_size = min(max(int(page_size), 1), MAX_PAGE_SIZE)
        self._user_agent = user_agent
        self._base = f"{self.endpoint}/v2/{quote(project_id, safe='')}"

    def __repr__(self) -> str:
        return f"ModelArtsClient(endpoint={self.endpoint!r}, auth={self._auth.kind})"

    @property
    def deadline(self) -> float:
        """Seconds a call may take, retries included."""
        return self._deadline

    def stop(self) -> None:
        """End every call in flight now (StoppedError) and refuse new ones."""
        self._stopping.set()
        self._watchdog.stop()

    def close(self) -> None:
        """Stop, and close the session if this client created it."""
        self.stop()
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> ModelArtsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the API --------------------------------------------------------------------------

    def iter_jobs(
        self,
        phases: Sequence[str] | None = None,
        *,
        sort_by: str = "create_time",
        order: str = "desc",
    ) -> Iterator[TrainingJob]:
        """Training jobs, optionally only those in ``phases``, fetched lazily page by page.

        A job that moves between pages while we page is yielded once. Paging stops at a
        short page, at ``count``, at a page with nothing new, or after MAX_PAGES pages.
        """
        if isinstance(phases, str):
            phases = [phases]
        if phases is not None and not phases:
            return
        limit = self.page_size
        body: dict[str, object] = {"offset": 0, "limit": limit, "sort_by": sort_by, "order": order}
        if phases is not None:
            body["filters"] = [{"key": "phase", "operator": "in", "value": list(phases)}]
        if self.workspace_id is not None:
            body["workspace_id"] = self.workspace_id
        seen: set[str] = set()
        ends_at = self._clock() + LISTING_DEADLINES * self._deadline
        for offset in range(MAX_PAGES):
            body["offset"] = offset
            if offset and self._clock() >= ends_at:
                raise errors.DeadlineError(
                    "list_jobs",
                    f"listing not done after {offset} pages and "
                    f"{LISTING_DEADLINES * self._deadline:g} s; stopped",
                )
            data = self._call("list_jobs", "POST", "/training-job-searches", body, ends_at=ends_at)
            items, count = _page(data)
            jobs = [job for job in map(_job_or_none, items) if job is not None]
            new = [job for job in jobs if job.id not in seen]
            if jobs and not new:
                logger.warning("list_jobs: page %d repeats earlier jobs; stopping", offset)
                return
            seen.update(job.id for job in new)
            yield from new
            if len(items) < limit or (count is not None and (offset + 1) * limit >= count):
                return
        logger.warning("list_jobs: stopped after %d pages", MAX_PAGES)

    def list_jobs(
        self,
        phases: Sequence[str] | None = None,
        *,
        sort_by: str = "create_time",
        order: str = "desc",
    ) -> list[TrainingJob]:
        """All pages of :meth:`iter_jobs` as a list."""
        return list(self.iter_jobs(phases, sort_by=sort_by, order=order))

    def get_job(self, job_id: str) -> TrainingJob:
        """One job's details. Raises JobNotFoundError when it was deleted (ModelArts.2775)."""
        data = self._call("get_job", "GET", f"/training-jobs/{_segment(job_id, 'get_job')}")
        try:
            return parse_job(data)
        except _InvalidJob as exc:
            raise errors.BadResponseError("get_job", str(exc)) from None

    def preview_log(self, job_id: str, task_id: str) -> LogPreview | None:
        """The latest window of a task's log; None while the log does not exist yet.

        Raises LogUnavailableError when the log is gone (ModelArts.2819/2820/2822).
        """
        job, task = _segment(job_id, "preview_log"), _segment(task_id, "preview_log")
        path = f"/training-jobs/{job}/tasks/{task}/logs/preview"
        data = self._call("preview_log", "GET", path, not_ready=LOG_NOT_READY)
        if data is NO_RESULT:
            return None
        return _preview(data)

    def list_events(
        self, job_id: str, *, page: int = 0, limit: int = MAX_EVENTS_PAGE_SIZE
    ) -> EventPage:
        """One page of a job's events, newest first (``order=desc``); ``page`` is the page
        index the API calls ``offset``, ``limit`` 1..100. Events without a usable time or
        of another shape are left out (logged at debug)."""
        limit = min(max(int(limit), 1), MAX_EVENTS_PAGE_SIZE)
        path = (
            f"/training-jobs/{_segment(job_id, 'list_events')}/events"
            f"?offset={max(int(page), 0)}&limit={limit}&order=desc"
        )
        data = self._call("list_events", "GET", path)
        result, unusable = parse_events_page(data, self._auth.secrets())
        if unusable:
            logger.debug("list_events: job %s: %d unusable events skipped", job_id, unusable)
        return result

    def task_metrics(self, job_id: str, task_id: str) -> dict[str, float]:
        """The latest per-minute averages of a task's metrics (``cpuUsage`` ...
        ``npuMemUsage``) as ratios 0..1; metrics without a recent sample are left out."""
        job, task = _segment(job_id, "task_metrics"), _segment(task_id, "task_metrics")
        path = f"/training-jobs/{job}/metrics/{task}"
        return parse_task_metrics(self._call("task_metrics", "GET", path))

    # -- one call, several attempts ---------------------------------------------------------

    def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        payload: object = None,
        *,
        not_ready: frozenset[str] = frozenset(),
        ends_at: float | None = None,
    ) -> object:
        """Send with retries; the parsed JSON body, or NO_RESULT for 204 / ``not_ready``.

        Ends by ``ends_at`` (``clock`` time), at the latest ``deadline`` seconds from now.
        """
        url = self._base + path
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        content_type = "application/json;charset=utf-8" if body else "application/json"
        deadline = self._clock() + self._deadline
        if ends_at is not None:
            deadline = min(deadline, ends_at)
        attempt = 0
        reauthenticated = False
        last: errors.ModelArtsError | None = None
        while True:
            remaining = deadline - self._clock()
            if self._stopping.is_set():
                raise errors.StoppedError(endpoint, "the exporter is stopping")
            if remaining <= 0:
                raise self._deadline_error(endpoint, last)
            attempt += 1
            if self._throttle is not None and not self._throttle.acquire(
                timeout=remaining, stop=self._stopping
            ):
                if self._stopping.is_set():
                    raise errors.StoppedError(endpoint, "the exporter is stopping")
                raise self._deadline_error(endpoint, last, "waiting for the request rate limit")
            started = time.perf_counter()
            outcome = self._guarded_attempt(
                endpoint, method, url, body, content_type, not_ready, deadline
            )
            error = outcome.error
            if isinstance(error, errors.StoppedError):
                raise error
            if error is None:
                self.answered.set()
            elif not outcome.login_failed:
                errors.redact(error, self._auth.secrets())
            if self._observer is not None and not outcome.login_failed:
                self._observer.observe(endpoint, time.perf_counter() - started, error)
            if error is None:
                return outcome.data
            if outcome.login_failed or isinstance(error, errors.DeadlineError):
                raise error
            last = error

            if isinstance(error, errors.AuthenticationError):
                if error.status == 401 and not reauthenticated and self._auth.invalidate():
                    reauthenticated = True
                    attempt -= 1
                    logger.debug("%s; retrying once with a fresh credential", error)
                    continue
                raise error
            if not isinstance(
                error, errors.ThrottledError | errors.ServerError | errors.TransportError
            ):
                raise error

            if outcome.retry_after is not None:
                delay = min(outcome.retry_after, self._retry.retry_after_max)
            else:
                delay = self._retry.backoff(attempt, self._rng)
            if isinstance(error, errors.ThrottledError):
                error.retry_after = delay
                if self._throttle is not None:
                    self._throttle.pause(min(delay, self._retry.pause_max))
            if attempt >= self._retry.max_attempts:
                raise error
            if self._clock() + delay >= deadline:
                # Waiting would pass the deadline: give up now, the caller tries later.
                logger.debug("%s; not retried: the wait of %.2fs passes the deadline", error, delay)
                raise error
            logger.debug(
                "%s; retry %d of %d in %.2fs", error, attempt, self._retry.max_attempts - 1, delay
            )
            self._sleep(delay)

    def _deadline_error(
        self, endpoint: str, last: errors.ModelArtsError | None, doing: str = ""
    ) -> errors.DeadlineError:
        detail = f" ({doing})" if doing else ""
        if last is not None:
            detail += f"; last: {last.error_msg or last.reason}"
        return errors.DeadlineError(
            endpoint, f"call not done within its deadline of {self._deadline:g} s{detail}"
        )

    def _guarded_attempt(
        self,
        endpoint: str,
        method: str,
        url: str,
        body: bytes,
        content_type: str,
        not_ready: frozenset[str],
        deadline: float,
    ) -> Outcome:
        """One attempt (an IAM login included) whose sockets are cut at ``deadline``."""
        headers = {
            "Content-Type": content_type,
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        responses: list[requests.Response] = []
        with contextlib.ExitStack() as stack:
            # Closing a response gives its connection back to the pool: only after the
            # guard is closed (exit callbacks run last-in first-out).
            stack.callback(_close_all, responses)
            guard = stack.enter_context(self._watchdog.guard(deadline - self._clock()))
            try:
                self._auth.apply(method, url, headers, body)
            except errors.ModelArtsError as exc:  # an IAM login that failed
                if guard.cut is not None:
                    return Outcome(None, self._cut_error(endpoint, guard.cut, "IAM login"))
                error = errors.redact(exc, self._auth.secrets())
                return Outcome(None, error, login_failed=True)
            outcome = self._attempt(endpoint, method, url, headers, body, not_ready, responses)
            if guard.cut is not None:
                return Outcome(None, self._cut_error(endpoint, guard.cut))
            return outcome

    def _cut_error(self, endpoint: str, cut: Cut, doing: str = "") -> errors.ModelArtsError:
        if cut == "stopped":
            return errors.StoppedError(endpoint, "the exporter is stopping")
        return self._deadline_error(endpoint, None, doing or "answer not complete")

    def _attempt(
        self,
        endpoint: str,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        not_ready: frozenset[str],
        responses: list[requests.Response],
    ) -> Outcome:
        try:
            response = self._session.request(
                method,
                url,
                data=body or None,
                headers=headers,
                timeout=self._timeout,
                verify=self._verify,
                allow_redirects=False,
                stream=True,
                auth=passthrough_auth,
            )
            responses.append(response)
            return interpret_response(endpoint, response, not_ready, self._auth.secrets())
        except errors.ModelArtsError as exc:
            return Outcome(None, exc)
        except requests.RequestException as exc:
            return Outcome(None, transport_error(endpoint, exc))


def _close_all(responses: list[requests.Response]) -> None:
    for response in responses:
        response.close()


def passthrough_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """Explicit no-op auth: stops requests from adding ~/.netrc credentials over ours."""
    return request


def new_session(pool_maxsize: int = POOL_MAXSIZE) -> requests.Session:
    """A Session whose connection pools hold ``pool_maxsize`` connections per host, and
    whose sockets a call's deadline (or :meth:`ModelArtsClient.stop`) can cut."""
    return guarded_session(pool_maxsize)


_DOT_SEGMENTS = frozenset({".", ".."})


def _segment(value: str, endpoint: str) -> str:
    """``value`` (a job or task id from the API) as one percent-encoded URL path segment.

    Everything but letters, digits and ``-._~`` is encoded (``/`` -> ``%2F``, ``%`` ->
    ``%25``, ``?`` -> ``%3F``, ``#`` -> ``%23``), so an id always names itself. ``.`` and
    ``..`` cannot be sent as a segment: clients and proxies resolve them to another URL
    (RFC 3986 5.2.4), and servers may decode ``%2E`` first, so such an id is refused with a
    BadResponseError and no request is made. ValueError for an empty id (a bug).
    """
    if not value:
        raise ValueError("path segments (job and task ids) must not be empty")
    if value in _DOT_SEGMENTS:
        raise errors.BadResponseError(
            endpoint, f"id {value!r} cannot be requested: it is not a usable URL path segment"
        )
    return quote(value, safe="")


# -- responses --------------------------------------------------------------------------------


def read_body(endpoint: str, response: requests.Response, limit: int | None = None) -> bytes:
    """The (decoded) body of a streamed response; BadResponseError beyond ``limit`` bytes."""
    if limit is None:
        limit = MAX_BODY_BYTES
    declared = response.headers.get("Content-Length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise errors.BadResponseError(
            endpoint,
            f"response body of {declared} bytes exceeds {limit}",
            status=response.status_code,
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > limit:
            raise errors.BadResponseError(
                endpoint, f"response body exceeds {limit} bytes", status=response.status_code
            )
        chunks.append(chunk)
    return b"".join(chunks)


def interpret_response(
    endpoint: str,
    response: requests.Response,
    not_ready: frozenset[str] = frozenset(),
    secrets: tuple[str, ...] = (),
) -> Outcome:
    """Turn one HTTP response into data or a typed error (raised for unusable bodies).

    ``secrets`` are removed from an error body before anything of it is kept: a server
    that echoes the credential must not put it in our messages and logs.
    """
    status = response.status_code
    if status == 204:
        return Outcome(NO_RESULT)
    body = read_body(endpoint, response)
    header_request_id = _clean(
        errors.redact_text(response.headers.get("X-Request-Id", ""), secrets), 128
    )
    if 200 <= status < 300:
        try:
            return Outcome(json.loads(body))
        except (ValueError, RecursionError):
            raise errors.BadResponseError(
                endpoint,
                f"response is not JSON: {snippet(body, secrets)}",
                status=status,
                request_id=header_request_id,
            ) from None

    body = errors.redact_bytes(body, secrets)
    code, message, body_request_id = parse_error_body(body, secrets)
    if code in not_ready:
        return Outcome(NO_RESULT)
    reason = _clean(errors.redact_text(response.reason or "", secrets), SNIPPET_CHARS)
    message = message or reason or "no message"
    if 300 <= status < 400:
        message = "unexpected redirect"
    request_id = header_request_id or body_request_id
    retry_after = parse_retry_after(
        response.headers.get("Retry-After"), response.headers.get("Date")
    )
    error: errors.ModelArtsError
    if status == 429:
        error = errors.ThrottledError(
            endpoint,
            message,
            status=status,
            error_code=code,
            request_id=request_id,
            retry_after=retry_after,
        )
    else:
        error = _error_class(status, code)(
            endpoint, message, status=status, error_code=code, request_id=request_id
        )
    return Outcome(None, error, retry_after)


def _error_class(status: int, code: str) -> type[errors.ModelArtsError]:
    if status in (401, 403):
        return errors.AuthenticationError
    if status >= 500:
        return errors.ServerError
    if code == JOB_NOT_FOUND:
        return errors.JobNotFoundError
    if code in LOG_UNAVAILABLE:
        return errors.LogUnavailableError
    return errors.ModelArtsError


def parse_error_body(body: bytes, secrets: tuple[str, ...] = ()) -> tuple[str, str, str]:
    """(error code, message, request id) from an error body; a text snippet if not JSON.

    Understands ``error_code/error_msg``, ``errorCode/errorMsg`` and ``code/message``, at
    the top level or one level down (IAM: ``{"error": {"code": 401, "message": ...}}``).
    ``secrets`` are removed from the decoded values (a token escaped as ``\\u004d...`` in
    the JSON is only recognisable once decoded) before they are cleaned and cut.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return "", snippet(body, secrets), ""
    if not isinstance(data, dict):
        return "", snippet(body, secrets), ""
    request_id = _text(data.get("request_id"))
    code, message = _error_fields(data)
    if not (code or message):
        for value in data.values():
            if isinstance(value, dict):
                code, message = _error_fields(value)
                request_id = request_id or _text(value.get("request_id"))
                if code or message:
                    break
    return (
        _safe_text(code, secrets, 64),
        _safe_text(message, secrets, SNIPPET_CHARS),
        _safe_text(request_id, secrets, 128),
    )


def _safe_text(text: str, secrets: tuple[str, ...], limit: int) -> str:
    """Server text made fit for messages: secrets removed, one clean line, cut to ``limit``."""
    text = errors.redact_text(text, secrets, limit=8 * limit)
    return _clean(errors.redact_text(_clean(text, 8 * limit), secrets), limit)


def _error_fields(data: Mapping[str, object]) -> tuple[str, str]:
    for code_key, message_key in _ERROR_FIELDS:
        code, message = _text(data.get(code_key)), _text(data.get(message_key))
        if code or message:
            return code, message
    return "", ""


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def _clean(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters, without control characters."""
    text = " ".join(_CONTROL_RE.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def snippet(body: bytes, secrets: tuple[str, ...] = ()) -> str:
    """A short, single-line, tag-free excerpt of a non-JSON body (e.g. an HTML error page),
    without ``secrets`` (looked for in the raw and in the unescaped text)."""
    text = errors.redact_bytes(body, secrets)[:65536].decode("utf-8", errors="replace")
    text = _TAG_RE.sub(" ", _SCRIPT_RE.sub(" ", errors.redact_text(text, secrets)))
    text = _safe_text(html.unescape(text), secrets, SNIPPET_CHARS)
    return text or f"{len(body)} bytes of non-JSON data"


def parse_retry_after(value: str | None, date: str | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    An HTTP-date is measured against the response's ``Date`` header when there is one, so
    that a skewed local clock does not matter; else against the local clock.
    """
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value)
        reference = parsedate_to_datetime(date) if date else datetime.now(when.tzinfo)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None or reference.tzinfo is None:
        return None
    return max(0.0, (when - reference).total_seconds())


def transport_error(endpoint: str, exc: requests.RequestException) -> errors.TransportError:
    """A TransportError whose message names the failure but no URL, header or credential."""
    chain = _exception_chain(exc)
    detail = next(
        (e.strerror for e in reversed(chain) if isinstance(e, OSError) and e.strerror),
        type(chain[-1]).__name__,
    )
    if isinstance(exc, requests.ConnectTimeout):
        message = "connect timeout"
    elif any(isinstance(e, requests.ReadTimeout | ReadTimeoutError) for e in chain):
        message = "read timeout"
    elif isinstance(exc, requests.exceptions.SSLError):
        message = f"TLS error: {detail}"
    elif isinstance(exc, requests.ConnectionError):
        message = f"connection failed: {detail}"
    else:
        message = f"request failed: {type(exc).__name__}"
    return errors.TransportError(endpoint, _clean(message, SNIPPET_CHARS))


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it wraps (urllib3 ``reason``, args, causes), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        reason = getattr(current, "reason", None)
        nested = next((a for a in current.args if isinstance(a, BaseException)), None)
        if isinstance(reason, BaseException):
            current = reason
        else:
            current = nested or current.__cause__ or current.__context__
    return chain


# -- JSON -> records ------------------------------------------------------------------------


def _page(data: object) -> tuple[list[object], int | None]:
    if not isinstance(data, dict):
        raise errors.BadResponseError("list_jobs", "page is not a JSON object")
    items = data.get("items")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise errors.BadResponseError("list_jobs", "field items is not a list")
    count = data.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        count = None
    return items, count


def _job_or_none(item: object) -> TrainingJob | None:
    try:
        return parse_job(item)
    except _InvalidJob as exc:
        logger.warning("list_jobs: skipping a job: %s", exc)
        return None


def parse_job(item: object) -> TrainingJob:
    """A JobResponse (list item or details) as a TrainingJob; _InvalidJob names a bad field."""
    if not isinstance(item, dict):
        raise _InvalidJob("job is not a JSON object")
    metadata = _object(item, "metadata", required=True)
    status = _object(item, "status", required=True)
    job_id = metadata.get("id")
    if not isinstance(job_id, str) or not job_id:
        raise _InvalidJob("field metadata.id is missing or not a string")
    phase = status.get("phase")
    if not isinstance(phase, str) or not phase:
        raise _InvalidJob(f"job {job_id}: field status.phase is missing or not a string")
    tasks = status.get("tasks")
    if tasks is None:
        tasks = []
    if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
        raise _InvalidJob(f"job {job_id}: field status.tasks is not a list of names")
    engine = _object(_object(item, "algorithm"), "engine")
    resource = _object(_object(item, "spec"), "resource")
    try:
        return TrainingJob(
            id=job_id,
            name=_optional_str(metadata, "name"),
            phase=phase,
            tasks=tuple(tasks),
            create_time_ms=_optional_int(metadata, "create_time"),
            start_time_ms=_optional_int(status, "start_time"),
            duration_ms=_optional_int(status, "duration"),
            engine=" ".join(
                (_optional_str(engine, "engine_name"), _optional_str(engine, "engine_version"))
            ).strip(),
            flavor=_optional_str(resource, "flavor_id"),
            running_records=parse_running_records(status),
        )
    except _InvalidJob as exc:
        raise _InvalidJob(f"job {job_id}: {exc}") from None


def _object(parent: Mapping[str, object], key: str, *, required: bool = False) -> dict[str, object]:
    value = parent.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise _InvalidJob(f"field {key} is {'missing or ' if required else ''}not an object")
    return value


def _optional_str(parent: Mapping[str, object], key: str) -> str:
    value = parent.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _InvalidJob(f"field {key} is not a string")
    return value


def _optional_int(parent: Mapping[str, object], key: str) -> int:
    value = parent.get(key)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _InvalidJob(f"field {key} is not an integer")
    return value


def _preview(data: object) -> LogPreview:
    if not isinstance(data, dict):
        raise errors.BadResponseError("preview_log", "response is not a JSON object")
    content = data.get("content")
    if content is None:
        content = data.get("context")  # the field's name before 2022-03
    if not isinstance(content, str):
        raise errors.BadResponseError("preview_log", "field content is missing or not a string")
    current_size = _size(data, "current_size")
    full_size = _size(data, "full_size")
    if current_size > full_size:
        raise errors.BadResponseError(
            "preview_log", f"field current_size ({current_size}) exceeds full_size ({full_size})"
        )
    return LogPreview(content=content, current_size=current_size, full_size=full_size)


def _size(data: Mapping[str, object], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_LOG_SIZE:
        raise errors.BadResponseError(
            "preview_log", f"field {key} is not an integer in 0..{MAX_LOG_SIZE}"
        )
    return value
