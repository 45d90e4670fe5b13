"""Each event counted once: across pages, polls, same-second events, events arriving while
paging, late events and exporter restarts (events.py, pure)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelarts_exporter import events as ev
from modelarts_exporter.events import (
    EventCursor,
    JobEvents,
    apply_read,
    decode_events,
    encode_events,
    read_new,
)
from modelarts_exporter.modelarts.types import EventPage, JobEvent

T0 = 1_800_000_000.0


@dataclass
class FakeEvents:
    """A job's events as the API pages them: newest first, ``page_size`` a page.

    ``during_read`` runs before each page after the first (events arriving while paging).
    """

    page_size: int = 100
    events: list[tuple[JobEvent, int]] = field(default_factory=list)
    during_read: Callable[[int], None] | None = None
    ascending: bool = False
    fetched: list[int] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def add(self, time: float, message: str, level: str = "Info", source: str = "Job") -> JobEvent:
        event = JobEvent(time, level, source, message)
        self.events.append((event, next(self._seq)))
        return event

    def fetch(self, page: int) -> EventPage:
        if page > 0 and self.during_read is not None:
            self.during_read(page)
        self.fetched.append(page)
        ordered = sorted(self.events, key=lambda e: (e[0].time, e[1]), reverse=not self.ascending)
        chunk = ordered[page * self.page_size : (page + 1) * self.page_size]
        return EventPage(tuple(e for e, _ in chunk), total=len(ordered))


def read(api: FakeEvents, state: JobEvents, **kwargs: int) -> JobEvents:
    return apply_read(
        state, read_new(api.fetch, state.cursor, page_size=api.page_size, **kwargs), now=T0
    )


def distinct(api: FakeEvents) -> Counter[str]:
    return Counter(event.level for event in {e for e, _ in api.events})


# --- exactly once -------------------------------------------------------------------------------


def test_several_pages_of_same_second_events_count_once_each() -> None:
    api = FakeEvents(page_size=50)
    for i in range(230):  # five pages, every event in the same second
        api.add(T0, f"[worker-{i}] training started.", level=("Info", "Warning", "Error")[i % 3])
    state = read(api, JobEvents("job"))
    assert state.counts == {"Info": 77, "Warning": 77, "Error": 76}
    assert api.fetched == [0, 1, 2, 3, 4]
    again = read(api, state)
    assert again.counts == state.counts
    api.add(T0, "one more in the same second")
    assert read(api, again).counts["Info"] == 78


def test_events_arriving_while_paging_are_counted_once() -> None:
    api = FakeEvents(page_size=10)
    for i in range(35):
        api.add(T0 + i, f"old {i}")
    arrivals = iter(range(1000))

    def arrive(page: int) -> None:  # three new events before every page: the pages shift
        for _ in range(3):
            n = next(arrivals)
            api.add(T0 + 35 + n // 5, f"new {n}")

    api.during_read = arrive
    state = read(api, JobEvents("job"))
    api.during_read = None
    # Each old event once, though the shifting pages showed some of them twice; the new
    # ones landed on the page already read: the next read takes them.
    assert len(api.events) == 35 + 12
    assert state.counts["Info"] == 35
    state = read(api, state)
    assert state.counts["Info"] == 47


def test_the_next_poll_reads_only_back_to_the_horizon() -> None:
    api = FakeEvents(page_size=50)
    for i in range(500):
        api.add(T0 + 60 * i, f"e{i}")
    state = read(api, JobEvents("job"))
    assert state.counts["Info"] == 500
    api.fetched.clear()
    api.add(T0 + 60 * 500, "new")
    state = read(api, state)
    assert state.counts["Info"] == 501
    assert api.fetched == [0]  # the first page already reaches below the horizon


def test_a_late_event_within_the_overlap_still_counts() -> None:
    api = FakeEvents()
    api.add(T0 + 100, "a")
    state = read(api, JobEvents("job"))
    api.add(T0 + 100 - ev.OVERLAP_SECONDS + 1, "late, but within the overlap")
    api.add(T0 + 100 - ev.OVERLAP_SECONDS - 1, "too late")
    state = read(api, state)
    assert state.counts["Info"] == 2


def test_an_event_from_the_far_future_does_not_hide_the_real_ones() -> None:
    api = FakeEvents()
    api.add(T0, "real")
    api.add(T0 + 30 * 86400, "stamped a month ahead")
    api.add(T0 + 600, "ten minutes ahead: within the clock skew allowed")
    state = JobEvents("job")
    result = read_new(api.fetch, state.cursor, now=T0)
    assert [e.message for e in result.new] == [
        "real",
        "ten minutes ahead: within the clock skew allowed",
    ]
    assert result.future == 1
    assert result.cursor.horizon == T0 - ev.OVERLAP_SECONDS  # never past the clock
    state = apply_read(state, result, now=T0)
    api.add(T0 + 1, "the next real one")
    later = read_new(api.fetch, state.cursor, now=T0 + 2)
    assert [e.message for e in later.new] == ["the next real one"]


def test_identical_events_are_one_event() -> None:
    api = FakeEvents()
    api.add(T0, "same")
    api.add(T0, "same")
    api.add(T0, "same", level="Warning")
    assert read(api, JobEvents("job")).counts == {"Info": 1, "Warning": 1}


def test_a_server_ignoring_the_order_is_read_to_its_last_page() -> None:
    api = FakeEvents(page_size=10, ascending=True)
    for i in range(25):
        api.add(T0 + i, f"e{i}")
    state = read(api, JobEvents("job"))
    for i in range(25, 40):
        api.add(T0 + i, f"e{i}")
    state = read(api, state)
    assert state.counts["Info"] == 40


def test_too_many_new_events_are_capped_and_said_so() -> None:
    api = FakeEvents(page_size=10)
    for i in range(100):
        api.add(T0 + i, f"e{i}")
    result = read_new(api.fetch, EventCursor(), page_size=10, max_pages=3)
    assert result.truncated
    assert result.pages == 3
    assert [e.message for e in result.new] == [f"e{i}" for i in range(70, 100)]
    complete = read_new(api.fetch, EventCursor(), page_size=10, max_pages=10)
    assert not complete.truncated


def test_a_failed_page_changes_nothing() -> None:
    api = FakeEvents(page_size=5)
    for i in range(12):
        api.add(T0 + i, f"e{i}")

    def failing(page: int) -> EventPage:
        if page == 2:
            raise RuntimeError("HTTP 503")
        return api.fetch(page)

    with pytest.raises(RuntimeError):
        read_new(failing, EventCursor(), page_size=5)
    assert read(api, JobEvents("job")).counts["Info"] == 12


def test_what_is_remembered_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "MAX_SEEN", 50)
    api = FakeEvents(page_size=100)
    for i in range(200):
        api.add(T0 + i // 10, f"e{i}")  # 10 events a second for 20 seconds
    state = read(api, JobEvents("job"))
    assert len(state.cursor.seen) == 50
    assert state.cursor.horizon == T0 + 15  # the five newest seconds are kept whole
    assert read(api, state).counts["Info"] == 200
    for i in range(60):  # one second alone above the bound: kept whole, never recounted
        api.add(T0 + 30, f"burst {i}")
    state = read(api, state)
    assert len(state.cursor.seen) == 60
    assert read(api, state).counts["Info"] == 260


def test_the_state_survives_a_restart_of_the_exporter() -> None:
    api = FakeEvents(page_size=7)
    for i in range(40):
        api.add(T0 + i // 4, f"e{i}", level="Error" if i % 9 == 0 else "Info")
    state = read(api, JobEvents("job"))
    restored = decode_events("job", encode_events(state))
    assert restored == state
    api.add(T0 + 9, "after the restart")
    assert read(api, restored).counts == {"Info": 36, "Error": 5}


# --- what the events say ------------------------------------------------------------------------


def test_exit_codes_from_platform_events() -> None:
    api = FakeEvents()
    api.add(T0, "[worker-0] training started.", source="Task")
    api.add(T0 + 10, "[worker-0] Training finished. Exit code 1.", source="Task")
    api.add(T0 + 10, "[worker-1] Training finished. Exit code 0.", source="Task")
    api.add(T0 + 10, "[worker-1] training started.", source="Task")  # same second: finish wins
    api.add(T0 + 11, "[Pod: x] Training finished. Exit code 5.", source="K8S")  # not a task
    state = read(api, JobEvents("job"))
    assert state.exit_code("worker-0") == 1
    assert state.exit_code("worker-1") == 0
    assert state.exit_code("worker-2") is None
    api.add(T0 + 20, "[worker-0] training started.", source="Task")  # restarted
    state = read(api, state)
    assert state.exit_code("worker-0") is None


def test_the_latest_error_events_are_kept_bounded() -> None:
    api = FakeEvents()
    for i in range(25):
        api.add(T0 + i, f"error {i}", level="Error")
        api.add(T0 + i, f"info {i}")
    state = read(api, JobEvents("job"))
    assert [e.message for e in state.errors] == [f"error {i}" for i in range(15, 25)]
    api.add(T0 + 30, "newest error", level="Error")
    state = read(api, state)
    assert len(state.errors) == ev.MAX_ERROR_EVENTS
    assert state.errors[-1].message == "newest error"


# --- a property --------------------------------------------------------------------------------

Arrival = tuple[int, int, int]  # (seconds after the newest so far, maybe negative; level; copies)


@dataclass
class Arrivals:
    """Events arriving with times up to 60 s older than the newest (late) or newer."""

    api: FakeEvents
    newest: float = T0
    numbers: itertools.count[int] = field(default_factory=itertools.count)
    per_page: list[int] = field(default_factory=list)

    def arrive(self, offset: int, level: int) -> None:
        when = max(T0, self.newest + offset)
        self.newest = max(self.newest, when)
        message = f"event {next(self.numbers)}"
        self.api.add(when, message, level=("Info", "Warning", "Error")[level])

    def during_read(self, page: int) -> None:
        del page
        count = self.per_page.pop(0) if self.per_page else 0
        for i in range(count):
            self.arrive(i % 3 - 1, i % 3)


@given(
    st.lists(
        st.tuples(
            st.lists(  # arrivals before a read
                st.tuples(st.integers(-60, 5), st.integers(0, 2), st.integers(1, 3)),
                max_size=30,
            ),
            st.lists(st.integers(0, 4), max_size=4),  # arrivals during the read, per page
            st.booleans(),  # restart the exporter after this read
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(1, 12),
)
def test_every_event_counts_exactly_once(
    rounds: list[tuple[list[Arrival], list[int], bool]], page_size: int
) -> None:
    api = FakeEvents(page_size=page_size)
    arrivals = Arrivals(api)
    api.during_read = arrivals.during_read
    state = JobEvents("job")
    for before, during, restart in rounds:
        for offset, level, copies in before:
            for _ in range(copies):
                arrivals.arrive(offset, level)
        arrivals.per_page = list(during)
        state = read(api, state, max_pages=10_000)
        if restart:
            state = decode_events("job", encode_events(state))
    api.during_read = None
    state = read(api, state, max_pages=10_000)
    assert Counter({k: int(v) for k, v in state.counts.items() if v}) == distinct(api)
