"""The ModelArts simulator: a threaded HTTP/1.1 server that stands in for ModelArts and IAM.

It serves the calls the exporter makes: the job list, job
details (with running records), the log preview, the job's events (paged), the task
metrics, and the IAM password login, with their error codes, auth checks,
optional throttling and injectable faults. Tests drive it through the control methods of
``Simulator`` and an injected clock; the demo and the benchmarks run a scripted scenario.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import socket
import socketserver
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, cast
from urllib.parse import parse_qsl, unquote

from ..modelarts.types import TERMINAL_PHASES
from .api import (
    JSON_TYPE,
    ApiError,
    Request,
    Response,
    job_not_found,
    json_response,
    modelarts_error,
    parse_search,
    search_response,
)
from .auth import Authenticator, SimAuth, credential_kind
from .logs import decode_window
from .model import (
    DEFAULT_ENGINE,
    DEFAULT_FLAVOR,
    SimJob,
    SimModel,
    TaskLog,
    validate_phase,
)
from .platform import SimRestart, events_response
from .scenario import Scenario

logger = logging.getLogger("exporter.simulator")

DEFAULT_PROJECT_ID = "0123456789abcdef0123456789abcdef"
DEFAULT_WINDOW_BYTES = 5 * 1024 * 1024
MAX_BODY_BYTES = 12 * 1024 * 1024  # the gateway's limit for AK/SK-signed bodies
MAX_RECORDS = 100_000
IDLE_CONNECTION_SECONDS = 300
STOP_JOIN_SECONDS = 5.0


@dataclass(frozen=True)
class Fault:
    """A misbehaviour injected with ``Simulator.inject``, for requests whose method matches
    (None: any) and whose path (no query) matches the regex ``path_pattern`` (``re.search``).

    Faults are tried in injection order; the first that matches is used once, and each is
    used ``times`` times. The request is then answered after ``delay_seconds`` (real time)
    with ``status``, ``headers`` and exactly ``body`` (Content-Type defaults to JSON when a
    body is given), or, with ``drop_connection``, the connection is closed without an
    answer. ``status=None`` answers normally after the delay: a slow but correct answer.
    ``drip_seconds`` > 0 sends the answer's body one byte at a time, that far apart (real
    time): a server that trickles, never tripping a read timeout.
    """

    method: str | None = None
    path_pattern: str = ""
    status: int | None = 500
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    times: int = 1
    delay_seconds: float = 0.0
    drop_connection: bool = False
    drip_seconds: float = 0.0


class RequestRecord(NamedTuple):
    """One request the simulator answered. ``status`` 0: dropped without an answer.
    ``auth_kind``: the credentials presented, ``aksk``, ``token``, ``password`` (the IAM
    login) or ``anonymous``, whether or not they were accepted."""

    method: str
    path: str
    status: int
    auth_kind: str


@dataclass
class _ActiveFault:
    fault: Fault
    pattern: re.Pattern[str]
    remaining: int


_Handler = Callable[[Request, Mapping[str, str], float], Response]
_PROJECT = r"/v2/(?P<project>[^/]+)"
_JOB = _PROJECT + r"/training-jobs/(?P<job>[^/]+)"


class Simulator:
    """ModelArts and IAM on ``host:port`` (127.0.0.1, a free port by default).

    Every control method is thread-safe and acts at the clock's current reading. Use it as
    a context manager or call ``start()`` and ``stop()``::

        with Simulator(demo_scenario()) as sim:
            requests.post(f"{sim.url}/v2/{sim.project_id}/training-job-searches", json={})
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        project_id: str = DEFAULT_PROJECT_ID,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: SimAuth | None = None,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        clock: Callable[[], float] = time.time,
        rate_limit_per_second: float | None = None,
        legacy_context_field: bool = False,
    ) -> None:
        """``auth`` None accepts anonymous requests (``SimAuth(allow_anonymous=True)``).
        The scenario's time 0 is the clock's reading here; jobs it scripted before that
        have their logs written up to it at once."""
        if window_bytes < 1:
            raise ValueError("window_bytes must be at least 1")
        if rate_limit_per_second is not None and rate_limit_per_second <= 0:
            raise ValueError("rate_limit_per_second must be positive")
        self._project_id = project_id
        self._host = host
        self._port = port
        self._authenticator = Authenticator(auth or SimAuth(allow_anonymous=True), project_id)
        self._window_bytes = window_bytes
        self._clock = clock
        self._rate = rate_limit_per_second
        self._legacy_context_field = legacy_context_field
        self._lock = threading.Lock()
        self._model = SimModel()
        self._faults: list[_ActiveFault] = []
        self._records: deque[RequestRecord] = deque(maxlen=MAX_RECORDS)
        self._request_hook: Callable[[str, str, Mapping[str, str]], None] | None = None
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._start_time = clock()
        self._bucket = max(1.0, rate_limit_per_second or 0.0)
        self._bucket_time = self._start_time
        if scenario is not None:
            scenario.install(self._model, self._start_time)
            self._model.advance(self._start_time, logs=True)

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> Simulator:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        server = _Server((self._host, self._port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},  # how long stop() may wait
            name="modelarts-simulator",
            daemon=True,
        )
        self._thread.start()
        logger.debug("ModelArts simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, and join the server's threads."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections(STOP_JOIN_SECONDS)
        if thread is not None:
            thread.join(STOP_JOIN_SECONDS)
        self._server = self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def project_id(self) -> str:
        return self._project_id

    @property
    def start_time(self) -> float:
        """The clock's reading when the simulator was created: the scenario's time 0."""
        return self._start_time

    # --- control API (tests, demo) ------------------------------------------------

    def add_job(
        self,
        name: str | None = None,
        *,
        job_id: str | None = None,
        phase: str = "Running",
        tasks: Iterable[str] = ("worker-0",),
        engine: tuple[str, str] = DEFAULT_ENGINE,
        flavor: str = DEFAULT_FLAVOR,
        create_time: float | None = None,
        start_time: float | None = None,
    ) -> str:
        """Add a job (times are Unix seconds, default now; Creating and Pending jobs have
        not started). Its tasks have no log until something is appended. Returns its id."""
        validate_phase(phase)
        with self._lock:
            now = self._advance()
            seq = self._model.next_seq()
            if start_time is None and phase not in ("Creating", "Pending"):
                start_time = now
            job = SimJob(
                id=job_id or str(uuid.uuid4()),
                name=name or f"job-{seq}",
                phase=phase,
                tasks={task: TaskLog() for task in tasks},
                create_time=now if create_time is None else create_time,
                seq=seq,
                start_time=start_time,
                engine=engine,
                flavor=flavor,
            )
            job.record_created()
            if start_time is not None and phase not in TERMINAL_PHASES:
                job.record_started(start_time)
            if phase in TERMINAL_PHASES:
                job.set_phase(phase, now)
            self._model.add(job)
        return job.id

    def set_phase(
        self,
        job_id: str,
        phase: str,
        duration_ms: int | None = None,
        *,
        exit_code: int | None = None,
        tasks: Iterable[str] | None = None,
    ) -> None:
        """Move a job to ``phase`` now. ``duration_ms`` overrides the computed duration;
        ``exit_code`` the default of a terminal phase; ``tasks`` replaces the task list
        (logs of tasks that stay are kept), e.g. when a Pending job starts running."""
        with self._lock:
            now = self._advance()
            job = self._model.get(job_id)
            if tasks is not None:
                job.tasks = {task: job.tasks.get(task) or TaskLog() for task in tasks}
            job.set_phase(phase, now, duration_ms=duration_ms, exit_code=exit_code)

    def restart_job(
        self,
        job_id: str,
        *,
        reason: str = "exit with 137",
        recover: str = "pod_reschedule",
        task: str = "worker-0",
    ) -> None:
        """End the job's current run now and recover it: a new running record, a Warning
        event and ``training started`` events. The logs are left as they are."""
        with self._lock:
            now = self._advance()
            job = self._model.get(job_id)
            if job.start_time is None or job.end_time is not None:
                raise ValueError(f"job {job_id} is not running")
            job.restart(SimRestart(now, reason, recover, task))

    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "Info",
        source: str = "Job",
        at: float | None = None,
    ) -> None:
        """Add an event to the job at ``at`` (default now; whole seconds in the answer; a
        later time appears once the clock reaches it)."""
        with self._lock:
            now = self._advance()
            self._model.get(job_id).add_event(now if at is None else at, level, message, source)

    def set_task_metrics(self, job_id: str, task: str, values: Mapping[str, float | None]) -> None:
        """Fix task metrics (percent; None: no sample) for every minute of the answer;
        the metrics not named keep their synthetic values."""
        with self._lock:
            job = self._model.get(job_id)
            job.metric_overrides.setdefault(task, {}).update(values)

    def set_request_hook(self, hook: Callable[[str, str, Mapping[str, str]], None] | None) -> None:
        """Call ``hook(method, path, query)`` before answering each request, outside the
        lock (tests use it to change the model between two pages of a read)."""
        self._request_hook = hook

    def delete_job(self, job_id: str) -> None:
        """Delete a job: it leaves the list, and its calls answer ModelArts.2775."""
        with self._lock:
            self._advance()
            self._model.get(job_id)
            del self._model.jobs[job_id]

    def job_id(self, name: str) -> str:
        """The id of the newest job called ``name`` (KeyError if none)."""
        with self._lock:
            matches = [job for job in self._model.jobs.values() if job.name == name]
        if not matches:
            raise KeyError(f"no training job named {name!r}")
        return max(matches, key=lambda job: job.seq).id

    def append_log(self, job_id: str, task: str, data: bytes) -> None:
        """Append ``data`` to the task's log (creating the log)."""
        with self._lock:
            self._task_log(job_id, task).append(data)

    def reset_log(self, job_id: str, task: str, data: bytes = b"") -> None:
        """The log restarted: its content is replaced by ``data``."""
        with self._lock:
            self._task_log(job_id, task).reset(data)

    def log_bytes(self, job_id: str, task: str) -> bytes:
        """The task's whole log as it stands now."""
        with self._lock:
            return self._task_log(job_id, task).data()

    def set_window_bytes(self, window_bytes: int) -> None:
        """How many bytes of a log's tail the preview returns."""
        if window_bytes < 1:
            raise ValueError("window_bytes must be at least 1")
        with self._lock:
            self._window_bytes = window_bytes

    def advance(self) -> None:
        """Bring the scenario up to the clock: phase changes and every task's log."""
        with self._lock:
            self._model.advance(self._clock(), logs=True)

    def inject(self, fault: Fault) -> None:
        """Queue a fault (see Fault)."""
        if fault.times < 1:
            raise ValueError("Fault.times must be at least 1")
        with self._lock:
            self._faults.append(_ActiveFault(fault, re.compile(fault.path_pattern), fault.times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """The last requests answered (at most 100000), oldest first."""
        with self._lock:
            return list(self._records)

    def _advance(self) -> float:
        now = self._clock()
        self._model.advance(now)
        return now

    def _task_log(self, job_id: str, task: str) -> TaskLog:
        now = self._advance()
        log = self._model.log(job_id, task)
        log.materialize(now)
        return log

    # --- serving ----------------------------------------------------------------------

    def _handle(self, request: Request) -> Response | None:
        """Answer one request (None: drop the connection) and record it."""
        hook = self._request_hook
        if hook is not None:
            hook(request.method, request.path, dict(request.query))
        fault = self._take_fault(request)
        response: Response | None
        if fault is not None and fault.delay_seconds > 0:
            self._stopping.wait(fault.delay_seconds)
        if fault is not None and fault.drop_connection:
            response = None
        elif fault is not None and fault.status is not None:
            response = Response(fault.status, fault.body, fault.headers)
        else:
            try:
                response = self._answer(request)
            except ApiError as error:
                response = error.response()
            except Exception:
                logger.exception("simulator failed on %s %s", request.method, request.path)
                response = modelarts_error(500, "ModelArts.0010", "Internal error.").response()
        if response is not None and fault is not None and fault.drip_seconds > 0:
            response = dataclasses.replace(response, drip_seconds=fault.drip_seconds)
        status = 0 if response is None else response.status
        with self._lock:
            self._records.append(
                RequestRecord(request.method, request.path, status, credential_kind(request))
            )
        logger.debug("%s %s -> %s", request.method, request.path, status or "dropped")
        return response

    def _take_fault(self, request: Request) -> Fault | None:
        with self._lock:
            for active in self._faults:
                method = active.fault.method
                if (method is None or method.upper() == request.method) and active.pattern.search(
                    request.path
                ):
                    active.remaining -= 1
                    if active.remaining == 0:
                        self._faults.remove(active)
                    return active.fault
        return None

    def _answer(self, request: Request) -> Response:
        now = self._clock()
        with self._lock:
            self._take_rate_token(now)
        routes: tuple[tuple[str, Mapping[str, _Handler]], ...] = (
            ("/v3/auth/tokens", {"POST": self._login}),
            (_PROJECT + "/training-job-searches", {"POST": self._list_jobs}),
            (_JOB, {"GET": self._show_job}),
            (_JOB + r"/tasks/(?P<task>[^/]+)/logs/preview", {"GET": self._preview}),
            (_JOB + r"/events", {"GET": self._events}),
            (_JOB + r"/metrics/(?P<task>[^/]+)", {"GET": self._task_metrics}),
        )
        for pattern, handlers in routes:
            match = re.fullmatch(pattern, request.path)
            if match is None:
                continue
            handler = handlers.get(request.method)
            if handler is None:
                raise modelarts_error(
                    405,
                    "ModelArts.2803",
                    f"Method {request.method} is not allowed on {request.path}.",
                    {"Allow": ", ".join(handlers)},
                )
            # Path parameters are percent-decoded, as a real gateway does (a%2Fb is "a/b").
            params = {name: unquote(value) for name, value in match.groupdict().items()}
            return handler(request, params, now)
        raise modelarts_error(404, "ModelArts.2836", f"Path {request.path} not found.")

    def _take_rate_token(self, now: float) -> None:
        """A token bucket over all requests, refilled by the simulator clock."""
        if self._rate is None:
            return
        elapsed = max(0.0, now - self._bucket_time)
        self._bucket = min(max(1.0, self._rate), self._bucket + elapsed * self._rate)
        self._bucket_time = max(self._bucket_time, now)
        if self._bucket < 1.0:
            raise modelarts_error(
                429, "ModelArts.2799", "services too many requests", {"Retry-After": "1"}
            )
        self._bucket -= 1.0

    def _admit(self, request: Request, params: Mapping[str, str], now: float) -> None:
        """Credentials, then the project in the path, then the scenario up to now."""
        self._authenticator.authenticate(request, now)
        if params["project"] != self._project_id:
            raise modelarts_error(
                404, "ModelArts.2786", "The project ID in the URL does not match the token."
            )
        self._model.advance(now)

    def _login(self, request: Request, params: Mapping[str, str], now: float) -> Response:
        with self._lock:
            token, body = self._authenticator.login(request, now)
        return json_response(201, body, {"X-Subject-Token": token})

    def _list_jobs(self, request: Request, params: Mapping[str, str], now: float) -> Response:
        with self._lock:
            self._admit(request, params, now)
            body = search_response(self._model.jobs.values(), parse_search(request.body), now)
        return json_response(200, body)

    def _show_job(self, request: Request, params: Mapping[str, str], now: float) -> Response:
        with self._lock:
            self._admit(request, params, now)
            job = self._model.jobs.get(params["job"])
            if job is None:
                raise job_not_found(params["job"])
            body = job.response(now)
        return json_response(200, body)

    def _events(self, request: Request, params: Mapping[str, str], now: float) -> Response:
        with self._lock:
            self._admit(request, params, now)
            job = self._model.jobs.get(params["job"])
            if job is None:
                raise job_not_found(params["job"])
            try:
                body = events_response(job.events, dict(request.query), now)
            except ValueError as exc:
                raise modelarts_error(400, "ModelArts.2788", str(exc)) from None
        return json_response(200, body)

    def _task_metrics(self, request: Request, params: Mapping[str, str], now: float) -> Response:
        job_id, task = params["job"], params["task"]
        with self._lock:
            self._admit(request, params, now)
            job = self._model.jobs.get(job_id)
            if job is None:
                raise job_not_found(job_id)
            if task not in job.tasks:
                raise modelarts_error(
                    400, "ModelArts.2778", f"Task {task} of training job {job_id} not found."
                )
            body = job.metrics(task, now)
        return json_response(200, body)

    def _preview(self, request: Request, params: Mapping[str, str], now: float) -> Response:
        job_id, task = params["job"], params["task"]
        with self._lock:
            self._admit(request, params, now)
            job = self._model.jobs.get(job_id)
            if job is None:
                raise job_not_found(job_id)
            log = job.tasks.get(task)
            if log is None:
                raise modelarts_error(
                    400,
                    "ModelArts.2818",
                    f"The log file of task {task} of training job {job_id} is not generated.",
                )
            log.materialize(now)
            if not log.exists:
                return Response(204)
            raw, full_size = log.tail(self._window_bytes), log.size
        content = decode_window(raw, cut=full_size > len(raw))
        key = "context" if self._legacy_context_field else "content"
        return json_response(200, {key: content, "current_size": len(raw), "full_size": full_size})


class _RequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: reads the whole body, always sends Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "ModelArtsSimulator/1.0"
    sys_version = ""
    timeout = IDLE_CONNECTION_SECONDS
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive connections
    wbufsize = -1  # headers and body leave in one write, flushed after each request

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        request_id = uuid.uuid4().hex
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._write(
                modelarts_error(411, "ModelArts.2787", "Send a Content-Length.").response(),
                request_id,
            )
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            error = modelarts_error(400, "ModelArts.2787", "Invalid Content-Length.")
            self._write(error.response(), request_id)
            return
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        request = Request(
            method=self.command,
            path=path,
            query=tuple(parse_qsl(query, keep_blank_values=True)),
            headers=self.headers,
            body=body,
            request_id=request_id,
        )
        response = cast(_Server, self.server).simulator._handle(request)
        if response is None:
            self.close_connection = True
            return
        self._write(response, request_id)

    def _write(self, response: Response, request_id: str) -> None:
        self.send_response(response.status)
        names = {name.lower() for name in response.headers}
        for name, value in response.headers.items():
            self.send_header(name, value)
        if "x-request-id" not in names:
            self.send_header("X-Request-Id", request_id)
        if response.body and "content-type" not in names:
            self.send_header("Content-Type", JSON_TYPE)
        if response.status == 204:
            self.end_headers()
            return
        if "content-length" in names:
            self.close_connection = True  # a length set by a fault may not match the body
        else:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.drip_seconds <= 0:
            self.wfile.write(response.body)
            return
        stopping = cast(_Server, self.server).simulator._stopping
        self.wfile.flush()
        for byte in response.body:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            if stopping.wait(response.drip_seconds):
                return

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are logged by ``Simulator._handle``."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s: %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """Daemon thread per connection; ``close_connections`` ends them all on stop."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        sock = cast(socket.socket, request)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(sock, client_address),
            name="modelarts-simulator-connection",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[sock] = thread
        thread.start()

    def _serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(sock, client_address)
        except Exception:
            logger.debug("connection from %s failed", client_address, exc_info=True)
        finally:
            self.shutdown_request(sock)
            with self._connections_lock:
                self._connections.pop(sock, None)

    def close_connections(self, timeout: float) -> None:
        """Shut every open connection down and wait up to ``timeout`` for their threads."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
