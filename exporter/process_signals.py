"""Wait for SIGTERM, SIGINT or SIGHUP in the main thread, whichever thread the kernel
hands them to.

Python runs signal handlers in the main thread only, and only when it gets back to
executing bytecode. The kernel delivers a process-directed signal to any thread that does
not block it: when that is one of the exporter's worker threads, a main thread asleep in
``threading.Event.wait()`` is never woken and the handler never runs (CPython's lock
waits are interrupted only by a signal delivered to the waiting thread). The exporter
then ignored SIGTERM until it was killed.

Here the main thread sleeps in ``select`` on a socket that ``signal.set_wakeup_fd``
writes to from the C-level handler, in whatever thread the signal lands: the select
returns at once, and the Python-level handler (it only records the signal: no lock is
taken in a handler) runs before the next bytecode. A timeout on the select bounds the
wait should a wake-up byte ever be lost.
"""

from __future__ import annotations

import collections
import contextlib
import select
import signal
import socket
from collections.abc import Iterable
from types import FrameType, TracebackType
from typing import Any

_POLL_SECONDS = 1.0
"""The longest the main thread sleeps before it looks at the recorded signals anyway."""


class SignalWaiter:
    """A context manager: inside it, ``wait()`` returns each signal of ``signals`` that
    arrives, in order; ``restore(some)`` gives some of them their previous handlers early
    (a second SIGTERM while stopping then acts as it did before). On exit every handler
    and the wake-up file descriptor are restored. Main thread only."""

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self._signals = tuple(signals)
        self._received: collections.deque[signal.Signals] = collections.deque()
        self._previous: dict[signal.Signals, Any] = {}
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._previous_fd = -1

    def __enter__(self) -> SignalWaiter:
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._reader, self._writer = reader, writer
        self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.restore(self._signals)
        signal.set_wakeup_fd(self._previous_fd)
        for end in (self._reader, self._writer):
            if end is not None:
                end.close()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self._received.append(signal.Signals(signum))

    def wait(self) -> signal.Signals:
        """Block until one of the signals has arrived; return it (the oldest first)."""
        reader = self._reader
        if reader is None:
            raise RuntimeError("SignalWaiter.wait() outside its with block")
        while not self._received:
            ready, _, _ = select.select([reader], [], [], _POLL_SECONDS)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    reader.recv(4096)
        return self._received.popleft()

    def restore(self, signals: Iterable[signal.Signals]) -> None:
        """Give ``signals`` back the handlers they had before."""
        for sig in signals:
            if sig in self._previous:
                signal.signal(sig, self._previous.pop(sig))
