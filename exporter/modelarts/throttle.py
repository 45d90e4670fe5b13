"""Client-side rate limiting: a token bucket plus a global pause after HTTP 429."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol


class _Event(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


_EPSILON = 1e-9  # float slack, so that sleeping exactly the computed wait always suffices


class Throttle:
    """Thread-safe token bucket shared by every request of a client.

    ``rate_per_second`` None or 0 means unlimited (only :meth:`pause` then delays callers).
    The bucket holds at most ``max(1, rate)`` tokens, so short bursts up to one second's
    worth of requests pass without waiting. ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        rate_per_second: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if rate_per_second is not None and (math.isnan(rate_per_second) or rate_per_second < 0):
            raise ValueError("rate_per_second must be >= 0 or None")
        self._rate = rate_per_second or None
        self._burst = max(1.0, self._rate or 1.0)
        self._clock = clock
        self._sleep = sleep
        """None: real time, waiting on the caller's ``stop`` event when it gives one."""
        self._lock = threading.Lock()
        self._tokens = self._burst
        self._refilled_at = clock()
        self._paused_until = -math.inf

    @property
    def rate_per_second(self) -> float | None:
        return self._rate

    def acquire(self, timeout: float | None = None, stop: _Event | None = None) -> bool:
        """Block until any pause has passed and a token is available, then take it: True.

        False, without taking a token, as soon as it is clear that this would take more
        than ``timeout`` seconds, or when ``stop`` (a ``threading.Event``) is set.
        """
        ends_at = None if timeout is None else self._clock() + timeout
        while True:
            if stop is not None and stop.is_set():
                return False
            with self._lock:
                now = self._clock()
                wait = self._wait_or_take(now)
            if wait <= 0:
                return True
            if ends_at is not None and now + wait > ends_at:
                return False
            if self._sleep is not None:
                self._sleep(wait)
            elif stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Make every caller of :meth:`acquire` wait until ``seconds`` from now.

        Of two overlapping pauses the one ending later wins.
        """
        if not seconds > 0:
            return
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _wait_or_take(self, now: float) -> float:
        """Seconds still to wait, or 0 after taking a token. Called with the lock held."""
        if now < self._paused_until:
            return self._paused_until - now
        if self._rate is None:
            return 0.0
        elapsed = max(0.0, now - self._refilled_at)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._refilled_at = now
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self._rate
