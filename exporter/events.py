"""What is new in a job's events, each event exactly once (pure, but for the page fetch).

The events API pages by page index (``offset``) and stamps events with whole seconds, so
many events share one second, and new events arrive while we page. The exporter reads
newest first (``order=desc``) and keeps, per job, an :class:`EventCursor`:

* ``horizon``: events older than this were dealt with for good (counted, or too late);
* ``seen``: the (time, digest) of every event counted at or after the horizon.

A read pages from the newest event back until a page reaches below the horizon (or the
last page). An event newer than the horizon whose digest is not in ``seen`` is new. Events
arriving while we page push the others to later pages: an event may then show twice, never
not at all, and the digest keeps the second sight from counting. After a read the horizon
moves to ``newest - OVERLAP_SECONDS`` (never back), so an event that reaches the API up to
that late, with its own earlier time, still counts once; ``seen`` keeps only what is at or
after the horizon (at most MAX_SEEN entries: whole seconds are dropped oldest first, the
horizon moving up with them). The cursor is saved with the counts in one write, so an
exporter restart neither loses nor repeats an event.

Two events with the same time, level, source and message are one event (the API gives
events no id). Events older than the horizon when they first appear, events stamped more
than FUTURE_SECONDS ahead of the exporter's clock, and beyond MAX_PAGES pages of new events
in one read, are not counted (logged by the caller). The horizon never passes the
exporter's clock minus OVERLAP_SECONDS either.

``apply_read`` then adds the new events to the job's :class:`JobEvents`: counts by level,
the latest Error events (bounded) for the diagnosis page, and the exit codes platform
events report per task (``[worker-0] Training finished. Exit code 1.``; a later
``[worker-0] training started.`` clears it: a new run has not ended yet).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from .modelarts.types import EventPage, JobEvent

OVERLAP_SECONDS = 300.0
FUTURE_SECONDS = 3600.0
"""Events stamped further ahead of the exporter's clock than this are not taken: a bogus
time must not move the horizon past every real event to come."""
MAX_SEEN = 2000
MAX_PAGES = 20
PAGE_SIZE = 100
MAX_ERROR_EVENTS = 10

_FINISHED_RE = re.compile(
    r"^\[(?P<task>[A-Za-z0-9_.-]{1,64})\]\s*Training finished\.?\s*"
    r"Exit code:?\s*(?P<code>-?\d{1,6})",
    re.IGNORECASE,
)
_STARTED_RE = re.compile(r"^\[(?P<task>[A-Za-z0-9_.-]{1,64})\]\s*Training started", re.IGNORECASE)

SeenKey = tuple[float, str]


@dataclass(frozen=True, slots=True)
class EventCursor:
    """Where a job's events were read up to (see the module docstring)."""

    horizon: float | None = None
    seen: frozenset[SeenKey] = frozenset()


@dataclass(frozen=True, slots=True)
class EventRead:
    """One read: the new events (oldest first), the cursor after them, pages fetched,
    whether MAX_PAGES stopped the read before it reached the horizon, and how many events
    were left out for a time too far in the future."""

    new: tuple[JobEvent, ...]
    cursor: EventCursor
    pages: int
    truncated: bool = False
    future: int = 0


@dataclass(frozen=True, slots=True)
class JobEvents:
    """Everything kept from one job's events. Replaced, never changed in place."""

    job_id: str
    cursor: EventCursor = field(default_factory=EventCursor)
    counts: Mapping[str, float] = field(default_factory=dict)
    """Level -> events counted."""
    errors: tuple[JobEvent, ...] = ()
    """The latest Error events, oldest first, at most MAX_ERROR_EVENTS."""
    exit_codes: Mapping[str, tuple[float, int | None]] = field(default_factory=dict)
    """Task -> (time of its latest lifecycle event, the exit code it reported; None when
    the task started again since)."""
    last_read: float | None = None
    final_done: bool = False
    """The job is over and its events were read after it settled: no more reads."""

    def exit_code(self, task_id: str) -> int | None:
        entry = self.exit_codes.get(task_id)
        return None if entry is None else entry[1]


def digest(event: JobEvent) -> str:
    """A short stable fingerprint of an event's content (the API gives no id)."""
    data = json.dumps([event.time, event.level, event.source, event.message])
    return hashlib.sha256(data.encode("utf-8", "replace")).hexdigest()[:16]


def _descending(page: EventPage) -> bool:
    times = [event.time for event in page.events]
    return all(a >= b for a, b in itertools.pairwise(times))


def read_new(
    fetch: Callable[[int], EventPage],
    cursor: EventCursor,
    *,
    now: float | None = None,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
) -> EventRead:
    """Page through ``fetch(page_index)`` (newest first) and return what is new; ``now``
    is the exporter's clock (None: trust every event's time).

    Exceptions of ``fetch`` propagate: a read is all or nothing, so a failed page leaves
    the cursor as it was and the next read repeats the whole read.
    """
    found: dict[SeenKey, JobEvent] = {}
    pages = 0
    future: set[SeenKey] = set()
    truncated = True
    for index in range(max_pages):
        page = fetch(index)
        pages += 1
        below_horizon = False
        for event in page.events:
            if cursor.horizon is not None and event.time < cursor.horizon:
                below_horizon = True
                continue
            if now is not None and event.time > now + FUTURE_SECONDS:
                future.add((event.time, digest(event)))
                continue
            key = (event.time, digest(event))
            if key not in cursor.seen:
                found.setdefault(key, event)
        # Below the horizon on a page sorted newest first: the rest is older still. (A
        # server that ignores the order is read to its last page instead.)
        last_page = page.size < page_size or (
            page.total is not None and (index + 1) * page_size >= page.total
        )
        if last_page or (below_horizon and _descending(page)):
            truncated = False
            break
    new = tuple(sorted(found.values(), key=lambda e: e.time))
    return EventRead(new, advance(cursor, found.keys(), now=now), pages, truncated, len(future))


def advance(
    cursor: EventCursor, counted: Iterable[SeenKey], *, now: float | None = None
) -> EventCursor:
    """The cursor after ``counted`` more events (see the module docstring)."""
    seen = set(cursor.seen) | set(counted)
    if not seen:
        return cursor
    newest = max(time for time, _ in seen)
    if now is not None:
        newest = min(newest, now)
    horizon = newest - OVERLAP_SECONDS
    if cursor.horizon is not None:
        horizon = max(horizon, cursor.horizon)
    kept = {key for key in seen if key[0] >= horizon}
    if len(kept) > MAX_SEEN:
        by_time = sorted({time for time, _ in kept}, reverse=True)
        total = 0
        floor = by_time[0]
        for time in by_time:
            count = sum(1 for key in kept if key[0] == time)
            if total and total + count > MAX_SEEN:
                break
            total += count
            floor = time
        horizon = floor
        kept = {key for key in kept if key[0] >= horizon}
    return EventCursor(horizon=horizon, seen=frozenset(kept))


def apply_read(state: JobEvents, read: EventRead, *, now: float) -> JobEvents:
    """``state`` with the new events of ``read`` counted and its cursor taken."""
    counts = dict(state.counts)
    errors = list(state.errors)
    exit_codes = dict(state.exit_codes)
    for event in read.new:
        counts[event.level] = counts.get(event.level, 0.0) + 1
        if event.level == "Error":
            errors.append(event)
        _lifecycle(event, exit_codes)
    errors.sort(key=lambda e: e.time)
    return replace(
        state,
        cursor=read.cursor,
        counts=counts,
        errors=tuple(errors[-MAX_ERROR_EVENTS:]),
        exit_codes=exit_codes,
        last_read=now,
    )


def _lifecycle(event: JobEvent, exit_codes: dict[str, tuple[float, int | None]]) -> None:
    if match := _FINISHED_RE.match(event.message):
        task, code = match["task"], int(match["code"])
    elif match := _STARTED_RE.match(event.message):
        task, code = match["task"], None
    else:
        return
    old = exit_codes.get(task)
    # The later event wins; at the same second a finish outranks a start.
    if old is None or event.time > old[0] or (event.time == old[0] and code is not None):
        exit_codes[task] = (event.time, code)


# --- the state file ------------------------------------------------------------------------


def encode_events(state: JobEvents) -> str:
    """JSON for the state file (no credentials: messages were redacted when read)."""
    return json.dumps(
        {
            "horizon": state.cursor.horizon,
            "seen": sorted([time, key] for time, key in state.cursor.seen),
            "counts": dict(state.counts),
            "errors": [[e.time, e.level, e.source, e.message] for e in state.errors],
            "exit_codes": {task: [t, code] for task, (t, code) in state.exit_codes.items()},
            "last_read": state.last_read,
            "final_done": state.final_done,
        },
        separators=(",", ":"),
    )


def decode_events(job_id: str, text: str) -> JobEvents:
    """The inverse of encode_events; ValueError/KeyError/TypeError on a bad row."""
    data = json.loads(text)
    horizon = data["horizon"]
    if horizon is not None and not math.isfinite(float(horizon)):
        raise ValueError("horizon is not finite")
    return JobEvents(
        job_id=job_id,
        cursor=EventCursor(
            horizon=None if horizon is None else float(horizon),
            seen=frozenset((float(t), str(k)) for t, k in data["seen"]),
        ),
        counts={str(level): float(count) for level, count in data["counts"].items()},
        errors=tuple(
            JobEvent(float(t), str(level), str(source), str(message))
            for t, level, source, message in data["errors"]
        ),
        exit_codes={
            str(task): (float(t), None if code is None else int(code))
            for task, (t, code) in data["exit_codes"].items()
        },
        last_read=None if data.get("last_read") is None else float(data["last_read"]),
        final_done=bool(data.get("final_done", False)),
    )
