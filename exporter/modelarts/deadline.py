"""Total deadlines for HTTP calls, and calls abandoned at once when the exporter stops.

``requests`` bounds each socket operation: a connect, or a wait for the next bytes. A
server that sends one byte a second, or answers just before each read timeout, never
trips those, so a call could last for days. A :class:`Watchdog` bounds the whole call:

* a call runs inside ``watchdog.guard(seconds)``, which notes the thread's guard;
* every socket the thread then connects or reuses through a session from
  :func:`guarded_session` joins that guard (the session's connection classes report them);
* when the guard's time is up, or :meth:`Watchdog.stop` is called, the watchdog's thread
  shuts those sockets down (``shutdown(SHUT_RDWR)``), which makes the blocked read in the
  calling thread return at once with an error; the guard then says why (``cut``).

A socket is a guard's only while that guard is open: the caller closes the guard before
it gives the connection back to the pool, so a cut never reaches another call.
Connections made through a SOCKS proxy are not guarded (the deadline still ends retries).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

Cut = Literal["deadline", "stopped"]

_current = threading.local()


class Guard:
    """One call in one thread: when it must end, the sockets it uses, and whether (and
    why) the watchdog cut them."""

    def __init__(self, watchdog: Watchdog, ends_at: float) -> None:
        self.ends_at = ends_at
        self.cut: Cut | None = None
        self._watchdog = watchdog
        self._sockets: list[socket.socket] = []
        self._open = True

    def add(self, sock: socket.socket | None) -> None:
        """Guard ``sock`` too; shut it at once if the guard was cut already."""
        if sock is None:
            return
        with self._watchdog.lock:
            if not self._open:
                return
            if all(sock is not known for known in self._sockets):
                self._sockets.append(sock)
            if self.cut is None:
                return
        _shut(sock)

    def _cut(self, why: Cut) -> list[socket.socket]:
        """Mark as cut; the sockets to shut. Called with the watchdog's lock held."""
        if not self._open or self.cut is not None:
            return []
        self.cut = why
        return list(self._sockets)

    def _close(self) -> None:
        """No socket is this guard's any more. Called with the watchdog's lock held."""
        self._open = False
        self._sockets.clear()


class Watchdog:
    """Cuts the sockets of calls that passed their deadline, or of every call on stop.

    One daemon thread, started with the first guard; ``clock`` is ``time.monotonic``
    (sockets live in real time).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.Lock()
        self._clock = clock
        self._wake = threading.Condition(self.lock)
        self._heap: list[tuple[float, int, Guard]] = []
        self._order = itertools.count()
        self._open: set[Guard] = set()
        self._stopped = False
        self._thread: threading.Thread | None = None

    @property
    def stopped(self) -> bool:
        return self._stopped

    @contextlib.contextmanager
    def guard(self, seconds: float) -> Iterator[Guard]:
        """Guard the calling thread's sockets for ``seconds`` (real time) from now."""
        guard = Guard(self, self._clock() + max(0.0, seconds))
        with self.lock:
            self._open.add(guard)
            if self._stopped:
                guard._cut("stopped")
            else:
                heapq.heappush(self._heap, (guard.ends_at, next(self._order), guard))
                self._start()
                self._wake.notify()
        outer = getattr(_current, "guard", None)
        _current.guard = guard
        try:
            yield guard
        finally:
            _current.guard = outer
            with self.lock:
                guard._close()
                self._open.discard(guard)

    def stop(self) -> None:
        """Cut every open guard now, and every guard opened from now on."""
        with self.lock:
            self._stopped = True
            sockets = [sock for guard in self._open for sock in guard._cut("stopped")]
            self._heap.clear()
            self._wake.notify()
        for sock in sockets:
            _shut(sock)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self._stopped and (not self._heap or self._heap[0][0] > self._clock()):
                    timeout = self._heap[0][0] - self._clock() if self._heap else None
                    self._wake.wait(timeout)
                if self._stopped:
                    return
                sockets: list[socket.socket] = []
                while self._heap and self._heap[0][0] <= self._clock():
                    _, _, guard = heapq.heappop(self._heap)
                    sockets.extend(guard._cut("deadline"))
            for sock in sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Shut a socket down under a thread blocked on it (its read returns at once)."""
    with contextlib.suppress(OSError):
        # socket.socket's own method, also for an SSLSocket: it acts on the descriptor
        # without touching the TLS state the reading thread is using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _join_current_guard(sock: socket.socket | None) -> None:
    guard: Guard | None = getattr(_current, "guard", None)
    if guard is not None:
        guard.add(sock)


class _GuardedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _join_current_guard(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _join_current_guard(self.sock)  # a kept-alive connection, reused
        super().request(*args, **kwargs)


class _GuardedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _join_current_guard(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _join_current_guard(self.sock)
        super().request(*args, **kwargs)


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_POOL_CLASSES = {"http": _GuardedHTTPConnectionPool, "https": _GuardedHTTPSConnectionPool}


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections join the calling thread's guard."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager


def guarded_session(pool_maxsize: int) -> requests.Session:
    """A Session whose sockets a :class:`Watchdog` can cut, ``pool_maxsize`` connections
    per host."""
    session = requests.Session()
    adapter = GuardedAdapter(pool_maxsize=pool_maxsize)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
