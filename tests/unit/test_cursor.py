"""The cursor over the sliding preview window: examples first, then properties.

The property tests generate log streams (lines with markers, multi-byte characters,
\\n / \\r\\n / \\r endings, cut at arbitrary byte offsets), poll them through windows of
random sizes with random growth, restarts (visible and silent), gaps, lost polls and
exporter restarts, and compare every byte the cursor hands to the rules with an oracle
that knows the true offsets.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from modelarts_exporter.cursor import (
    ANCHOR_BYTES,
    MAX_ANCHORS,
    MIN_MATCH,
    STRONG_MATCH,
    TAIL_BYTES,
    Advance,
    CursorState,
    advance,
    advance_bytes,
    count_lines,
)
from modelarts_exporter.store import decode_cursor, encode_cursor


def _incomplete_tail(data: bytes) -> int:
    """Bytes of an unfinished UTF-8 character at the end of ``data``."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue
        need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
        return back if back < need else 0
    return 0


def _head_drop(data: bytes) -> int:
    drop = 0
    while drop < 3 and drop < len(data) and data[drop] & 0xC0 == 0x80:
        drop += 1
    return drop


def preview(log: bytes, window: int) -> tuple[str, int, int]:
    """What ModelArts answers: the tail window, partial characters at its edges dropped."""
    start = max(0, len(log) - window)
    raw = log[start:]
    head = _head_drop(raw) if start else 0
    body = raw[head:]
    body = body[: len(body) - _incomplete_tail(body)]
    return body.decode("utf-8", "replace"), len(raw), len(log)


def poll(state: CursorState, log: bytes, window: int, **kw: object) -> Advance:
    content, current, full = preview(log, window)
    return advance(state, content, current, full, **kw)  # type: ignore[arg-type]


# --- examples -------------------------------------------------------------------------


def test_first_poll_takes_whole_lines_and_holds_the_unfinished_one() -> None:
    adv = poll(CursorState(), b"a 1\nb 2\nc", 100)
    assert adv.outcome == "first"
    assert adv.block == b"a 1\nb 2\n"
    assert adv.lines == 2
    assert adv.processed_bytes == 8
    assert adv.skipped_bytes == 0
    assert adv.state.pending == b"c"
    assert adv.state.offset == 8


def test_growth_is_taken_once() -> None:
    s1 = poll(CursorState(), b"a 1\nb", 100).state
    adv = poll(s1, b"a 1\nb 2\nc 3\n", 100)
    assert adv.outcome == "continued"
    assert adv.block == b"b 2\nc 3\n"
    assert adv.lines == 2
    again = poll(adv.state, b"a 1\nb 2\nc 3\n", 100)
    assert again.outcome == "unchanged"
    assert again.block == b""


def test_window_cut_skips_the_partial_first_line() -> None:
    log = b"first line\nsecond line\nthird\n"
    adv = poll(CursorState(), log, 16)  # window starts inside "second line"
    assert adv.block == b"third\n"
    assert adv.skipped_bytes == len(log) - len(b"third\n")
    assert adv.lines == 1


def test_gap_counts_skipped_bytes() -> None:
    s = poll(CursorState(), b"aa\n", 100).state
    log = b"aa\n" + b"x" * 50 + b"\n" + b"new\n"
    adv = poll(s, log, 10)
    assert adv.outcome == "gap"
    assert adv.block == b"new\n"
    assert adv.skipped_bytes == 51
    assert adv.processed_bytes + adv.skipped_bytes == len(log) - 3


def test_shrink_is_a_reset_and_flushes_the_old_unfinished_line() -> None:
    s = poll(CursorState(), b"one\ntwo\nSegmentation fault", 100).state
    adv = poll(s, b"new\n", 100)
    assert adv.outcome == "reset"
    assert adv.block == b"Segmentation fault\nnew\n"
    assert adv.lines == 2


def test_silent_restart_that_regrew_is_a_reset() -> None:
    s = poll(CursorState(), b"run 1 line a\nrun 1 line b\n", 100).state
    adv = poll(s, b"run 2 line a\nrun 2 line b\nrun 2 line c\n", 100)
    assert adv.outcome == "reset"
    assert adv.reset_reason == "content changed"
    assert adv.block == b"run 2 line a\nrun 2 line b\nrun 2 line c\n"


def test_crlf_and_cr_endings() -> None:
    s = poll(CursorState(), b"a\r\nb\rc\r", 100)
    # The trailing \r may be half of \r\n: held back.
    assert s.block == b"a\r\nb\r"
    assert s.lines == 2
    adv = poll(s.state, b"a\r\nb\rc\r\nd", 100)
    assert adv.block == b"c\r\n"
    assert adv.lines == 1


def test_final_poll_takes_the_unfinished_line() -> None:
    s = poll(CursorState(), b"a\nexit with 1", 100).state
    adv = poll(s, b"a\nexit with 1", 100, final=True)
    assert adv.block == b"exit with 1"
    assert adv.lines == 1
    assert adv.state.offset == len(b"a\nexit with 1")


def test_long_line_is_processed_in_pieces() -> None:
    adv = poll(CursorState(), b"x" * 25, 100, max_line_bytes=10)
    assert adv.block == b"x" * 20
    assert adv.lines == 0
    assert adv.state.pending == b"x" * 5
    done = poll(adv.state, b"x" * 25 + b"yz\n", 100, max_line_bytes=10)
    assert done.block == b"xxxxxyz\n"
    assert done.lines == 1


def test_piece_cut_never_splits_a_character() -> None:
    text = ("é" * 20).encode()
    adv = poll(CursorState(), text, 100, max_line_bytes=7)
    adv.block.decode("utf-8")  # whole characters only
    assert adv.processed_bytes + len(adv.state.pending) == len(text)


def test_utf8_cut_at_both_edges_keeps_exact_offsets() -> None:
    log = "ääää\nééé\n中文 line\n".encode()
    s = poll(CursorState(), log[:-3], 100).state  # writer flushed half of "\n"? no: of a char
    grown = log + "more 中\n".encode()
    adv = poll(s, grown, 15)
    assert adv.state.offset + len(adv.state.pending) <= len(grown)
    assert adv.block.decode().endswith("more 中\n")


def test_unchanged_window_does_no_work() -> None:
    log = b"line\n" * 1000
    s = poll(CursorState(), log, 1 << 20).state
    adv = poll(s, log, 1 << 20)
    assert adv.outcome == "unchanged"
    assert adv.processed_bytes == adv.skipped_bytes == 0


def test_invalid_utf8_in_the_middle_does_not_break_a_poll() -> None:
    log = b"gbk \xd6\xd0\xce\xc4 line\n" * 3
    s = poll(CursorState(), log, 1000).state
    more = log + b"next \x00 line\n"
    adv = poll(s, more, 1000)
    assert adv.outcome == "continued"
    assert adv.block == b"next \x00 line\n"


def test_count_lines() -> None:
    assert count_lines(b"a\r\nb\rc\nd") == 3
    assert count_lines(b"") == count_lines(b"a") == 0
    assert count_lines(b"\r\r\n\n") == 3
    assert count_lines(b"a\r\nb\rc\r") == 3
    assert count_lines(b"x\ry\nz\r\nw") == 3


@given(
    text=st.text(alphabet=st.sampled_from("ab é中\r\n"), max_size=60),
    window=st.integers(1, 80),
    final=st.booleans(),
)
def test_advance_bytes_is_advance_on_the_encoded_window(
    text: str, window: int, final: bool
) -> None:
    log = text.encode()
    content, current, full = preview(log, window)
    first = advance(CursorState(), content, current, full, final=final, max_line_bytes=8)
    same = advance_bytes(
        CursorState(), content.encode(), current, full, final=final, max_line_bytes=8
    )
    assert first == same
    later = log + b"more\r\nlines \xc3\xa9\n"
    content, current, full = preview(later, window + 10)
    assert advance(first.state, content, current, full, max_line_bytes=8) == advance_bytes(
        first.state, content.encode(), current, full, max_line_bytes=8
    )


# --- properties ------------------------------------------------------------------------


@dataclass
class Oracle:
    """The cursor with perfect knowledge of offsets, written from the specification."""

    cap: int
    started: bool = False
    pos: int = 0
    tail_lo: int = 0
    pending_len: int = 0
    discard: bool = False
    log: bytes = b""
    incarnation: int = -1
    blocks: bytearray = field(default_factory=bytearray)
    lines: int = 0
    processed: int = 0
    skipped: int = 0
    resets: int = 0

    def poll(self, log: bytes, incarnation: int, window: int, final: bool) -> None:
        full = len(log)
        start = max(0, full - window)
        head = _head_drop(log[start:]) if start else 0
        end = full - _incomplete_tail(log[start + head :])
        if not self.started:
            kind = "first"
        elif incarnation != self.incarnation:
            if full < self.pos:
                kind = "reset"
            elif start > self.pos:
                kind = "gap"
            else:
                # What the window shows around the cursor must be unchanged; where the
                # window's start cut a character, the cut bytes are continuation bytes.
                lo = max(start, self.tail_lo)
                hi = self.pos + self.pending_len
                visible = max(lo, start + head)
                cut = self.log[lo:visible]
                same = (
                    hi <= end
                    and self.log[visible:hi] == log[visible:hi]
                    and all(byte & 0xC0 == 0x80 for byte in cut)
                )
                kind = "continue" if same else "reset"
        else:
            kind = "gap" if start > self.pos else "continue"

        if kind == "reset":
            self.resets += 1
            if self.pending_len and not self.discard:
                self.blocks += self.log[self.pos : self.pos + self.pending_len] + b"\n"
                self.lines += 1
                self.processed += self.pending_len
        base = self.pos if kind in ("continue", "gap") else 0
        processed_before = self.processed
        if kind == "continue":
            begin = self.pos
            if self.discard:
                line_end = self._line_end(log, begin, end)
                begin, self.discard = (
                    (max(begin, end), True) if line_end == -1 else (line_end, False)
                )
        else:
            begin, self.discard = start + head, False
            if start > 0:
                line_end = self._line_end(log, begin, end)
                begin, self.discard = (end, True) if line_end == -1 else (line_end, False)
        cut = self._take(log, begin, end, final)
        new_pos = full if final else cut
        self.skipped += new_pos - base - (self.processed - processed_before)
        self.tail_lo = max(start + head, new_pos - TAIL_BYTES)
        self.pending_len = 0 if (final or self.discard) else end - cut
        self.pos = new_pos
        self.started = True
        self.log = log
        self.incarnation = incarnation

    @staticmethod
    def _line_end(log: bytes, begin: int, end: int) -> int:
        for i in range(begin, end):
            if log[i] == 0x0A:
                return i + 1
            if log[i] == 0x0D:
                return i + 2 if log[i + 1 : i + 2] == b"\n" and i + 1 < end else i + 1
        return -1

    def _take(self, log: bytes, begin: int, end: int, final: bool) -> int:
        if final:
            cut = end
        else:
            cut = begin
            for i in range(begin, end):
                if log[i] == 0x0A or (log[i] == 0x0D and i + 1 < end):
                    cut = i + 1
            rest = end - cut
            if rest >= self.cap:
                cut += (rest // self.cap) * self.cap
                while begin < cut < end and log[cut] & 0xC0 == 0x80:
                    cut -= 1
        chunk = log[begin:cut]
        if chunk:
            self.blocks += chunk
            self.processed += len(chunk)
            self.lines += count_lines(chunk)
            if final and chunk[-1:] not in (b"\n", b"\r"):
                self.lines += 1
        return cut


TEXT = st.text(alphabet=st.sampled_from("abc xyz0123:=.é中😀\t"), max_size=30)
ENDING = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r", ""])


@st.composite
def records(draw: st.DrawFn, incarnation: int, first: int) -> bytes:
    """A stream of lines that carry their incarnation and number (as real logs do)."""
    out = []
    for n in range(first, first + draw(st.integers(0, 12))):
        marker = draw(st.sampled_from(["", "Traceback (most recent call last):", "loss: 1.5"]))
        out.append(f"[{incarnation}.{n}] {draw(TEXT)}{marker}{draw(ENDING)}")
    return "".join(out).encode()


OPS = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 120)),
    st.tuples(st.just("poll"), st.integers(1, 160)),
    st.tuples(st.just("lost_poll"), st.integers(1, 160)),
    st.tuples(st.just("restart_exporter"), st.just(0)),
    st.tuples(st.just("restart_log"), st.integers(0, 80)),
    st.tuples(st.just("stale_poll"), st.integers(0, 10**6)),
    st.tuples(st.just("lagging_content_poll"), st.integers(0, 10**6)),
)
"""``stale_poll``: a lagging replica answers with the log as an earlier poll saw it (up to
MAX_ANCHORS polls back), perhaps a few bytes short of that, and perhaps under the
current ``full_size``: the cursor must take nothing from it. ``lagging_content_poll``:
content newer than the cursor but older than the ``full_size`` it comes with: the content
decides (as a poll of the log as long as the content shows)."""


@dataclass
class _Seen:
    """What one applied poll saw, for ``stale_poll`` to answer with later."""

    log: bytes
    incarnation: int
    recognisable: bool
    """The cursor kept enough of it to tell a stale answer (see ``_recognisable``)."""
    strong: bool
    """Enough for one whose sizes put it after the cursor."""


def _spans_lines(data: bytes) -> bool:
    return len(data) >= MIN_MATCH and max(data.rfind(b"\n", 0, -1), data.rfind(b"\r", 0, -1)) >= 0


def _recognisable(state: CursorState, *, strong: bool = False) -> bool:
    """The cursor keeps enough of what it saw to tell an answer that ends up to 6 bytes
    short of it (3 shaved, 3 of a cut character): MIN_MATCH bytes that hold more than one
    line's end (see ``cursor``'s docstring), in what an anchor keeps; ``strong``:
    STRONG_MATCH of them, as an answer whose sizes put it after the cursor needs."""
    known = (state.context or state.tail + state.pending)[-ANCHOR_BYTES:]
    head = known[: len(known) - 6]
    return _spans_lines(head) and (not strong or len(head) >= STRONG_MATCH)


def stale_answer(
    seen: list[_Seen], log: bytes, incarnation: int, arg: int, offset: int
) -> tuple[str, int, int] | None:
    """A lagging replica's answer (content, current_size, full_size), or None."""
    usable = [s for s in seen[-MAX_ANCHORS:] if s.incarnation == incarnation]
    if not usable:
        return None
    snap = usable[-1 - arg % len(usable)]
    behind = (arg // 8) % 4
    if not snap.recognisable or behind > len(snap.log):
        return None
    old = snap.log[: len(snap.log) - behind]
    window = max(len(old), 2 * TAIL_BYTES) + arg % 64 if snap is not usable[-1] else 256 + arg % 64
    content, current, full = preview(old, window)
    if not content:
        return None  # an empty window shows nothing to tell it by
    if (arg // 32) % 2 and len(log) - full > 3:
        # Old content under the newest full_size. (Misplaced by 3 bytes or fewer, it is
        # within what the window's edges leave uncertain: a cut character's bytes.)
        full = len(log)
    if full - current > offset and not snap.strong:
        return None  # its sizes put it after the cursor: too little to tell it from a gap
    return content, current, full


_RECORD_ID = re.compile(rb"\[\d+\.\d+\] ")


def run_history(
    ops: list[tuple[str, int]],
    writer: Callable[[int], bytes],
    cap: int,
    final_window: int,
) -> str:
    """Play a history against the cursor and the oracle; return "exact" or "ambiguous".

    ``writer(incarnation)`` gives more of the writer's output for that log incarnation:
    for the first log, when a write needs more, and for each restarted log.
    """
    incarnation = 0
    stream = writer(incarnation)
    log = b""
    state = CursorState()
    oracle = Oracle(cap=cap)
    blocks = bytearray()
    seen: list[_Seen] = []
    totals = {"lines": 0, "processed": 0, "skipped": 0, "resets": 0}
    ambiguous = False

    def apply(adv: Advance) -> None:
        nonlocal state, ambiguous
        ambiguous |= adv.ambiguous
        blocks.extend(adv.block)
        totals["lines"] += adv.lines
        totals["processed"] += adv.processed_bytes
        totals["skipped"] += adv.skipped_bytes
        totals["resets"] += adv.outcome == "reset"
        assert adv.processed_bytes >= 0
        assert adv.skipped_bytes >= 0
        state = adv.state

    for op, arg in ops:
        if op == "write":
            if len(stream) < arg:
                stream += writer(incarnation)
            log, stream = log + stream[:arg], stream[arg:]
        elif op in ("poll", "lost_poll"):
            adv = poll(state, log, arg, max_line_bytes=cap)
            if op == "poll":
                apply(adv)
                oracle.poll(log, incarnation, arg, final=False)
                seen.append(
                    _Seen(log, incarnation, _recognisable(state), _recognisable(state, strong=True))
                )
        elif op == "lagging_content_poll":
            # Content ending at m (past what the cursor saw) under the log's full_size.
            # Where the sizes put the window, it must still cover the cursor's signature
            # (as 5 MB windows always do): a window the sizes put at or past the cursor
            # shows nothing to check the content by.
            seen_end = state.offset + len(state.pending)
            m = seen_end + 1 + arg % max(1, len(log) - seen_end)
            signature_start = state.offset - len(state.tail)
            window = len(log) - signature_start + 3 + arg % 16
            content, current, _ = preview(log[:m], window)
            if (
                oracle.started
                and oracle.incarnation == incarnation
                and not ambiguous
                and _recognisable(state)
                and _spans_lines(state.tail + state.pending)
                and state.slack == 0
                and len(log) - m > 3
                and len(log) - current <= signature_start
            ):
                adv = advance(state, content, current, len(log), max_line_bytes=cap)
                # (A content cut in a character may show nothing new: stale.)
                assert adv.outcome in ("continued", "stale"), adv
                event("lagging content")
                apply(adv)
                oracle.poll(log[:m], incarnation, window, final=False)
        elif op == "stale_poll":
            answer = stale_answer(seen, log, oracle.incarnation, arg, state.offset)
            # A cursor that knows only a few bytes around it (the last window showed
            # just those) cannot tell an old window from a new one: 5 MB windows always
            # show enough; the tiny windows here do not. And an answer whose sizes put
            # its window after the cursor reads as a gap.
            if answer is not None and oracle.started and _recognisable(state):
                before = state
                adv = advance(state, *answer, max_line_bytes=cap)
                # An answer that ends exactly where the last one did may be taken as a
                # plain one ("nothing new"); either way nothing is taken or skipped.
                assert adv.outcome in ("stale", "unchanged", "continued"), adv
                event(f"stale answer: {adv.outcome}")
                assert adv.block == b""
                assert adv.processed_bytes == 0
                # It may settle where a cut character lay (the lower bound catches up).
                assert adv.skipped_bytes <= before.slack
                assert before.offset <= adv.state.offset <= before.offset + before.slack
                apply(adv)
        elif op == "restart_exporter":
            state = decode_cursor(encode_cursor(state))
        else:
            incarnation += 1
            stream = writer(incarnation)
            log, stream = stream[:arg], stream[arg:]
        if not ambiguous:
            assert bytes(blocks) == bytes(oracle.blocks)
            assert state.offset <= oracle.pos <= state.offset + state.slack

    apply(poll(state, log, final_window, max_line_bytes=cap, final=True))
    oracle.poll(log, incarnation, final_window, final=True)

    if ambiguous:
        # Only content that repeats every few bytes, or windows showing too little of the
        # cursor's signature, make positions ambiguous: then nothing is taken twice.
        ids = _RECORD_ID.findall(bytes(blocks))
        assert len(ids) == len(set(ids))
        return "ambiguous"
    assert bytes(blocks) == bytes(oracle.blocks)
    assert totals["lines"] == oracle.lines
    assert totals["processed"] == oracle.processed
    assert totals["resets"] == oracle.resets
    # The skipped count is exact, except that a restart can leave up to 3 bytes of an
    # unresolved UTF-8 cut of the old log uncounted (no window of it will ever show them).
    assert totals["skipped"] <= oracle.skipped <= totals["skipped"] + 3 * totals["resets"]
    return "exact"


@given(data=st.data(), ops=st.lists(OPS, max_size=40), cap=st.integers(8, 64))
def test_every_byte_the_window_showed_is_taken_exactly_once(
    data: st.DataObject, ops: list[tuple[str, int]], cap: int
) -> None:
    numbers = iter(range(0, 10**6, 100))

    def writer(incarnation: int) -> bytes:
        return data.draw(records(incarnation, next(numbers)))

    final_window = data.draw(st.integers(1, 400))
    event(run_history(ops, writer, cap, final_window))


@given(
    lines=st.lists(TEXT.map(lambda t: t + "\n"), min_size=1, max_size=30),
    windows=st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
def test_counts_never_go_down_and_bytes_add_up(lines: list[str], windows: list[int]) -> None:
    payload = "".join(lines).encode()
    state = CursorState()
    processed = skipped = 0
    step = max(1, len(payload) // len(windows))
    for i, window in enumerate(windows):
        adv = poll(state, payload[: (i + 1) * step], window)
        processed += adv.processed_bytes
        skipped += adv.skipped_bytes
        state = adv.state
        assert processed + skipped <= state.offset + state.slack
    adv = poll(state, payload, 10_000, final=True)
    processed += adv.processed_bytes
    skipped += adv.skipped_bytes
    assert processed + skipped == len(payload)


def test_oracle_helpers() -> None:
    assert _incomplete_tail("aé".encode()[:-1]) == 1
    assert _incomplete_tail("a中".encode()[:-1]) == 2
    assert _incomplete_tail("a中".encode()) == 0
    assert _head_drop("中a".encode()[1:]) == 2
    assert preview("中文".encode(), 4) == ("文", 4, 6)


@pytest.mark.parametrize("window", [1, 2, 3, 5, 8])
def test_tiny_windows_never_double_count(window: int) -> None:
    log = "é1\n中2\n😀3\nabc4\n".encode()
    state = CursorState()
    seen = bytearray()
    for n in range(len(log) + 1):
        adv = poll(state, log[:n], window)
        seen += adv.block
        state = adv.state
    # Every taken line is a whole line of the log, in order, never twice.
    text = bytes(seen).decode()
    assert all(line in log.decode() for line in text.splitlines())
    assert len(text.splitlines()) == len(set(text.splitlines()))


# --- issue 10, item 6: stale and implausible answers are not restarts ------------------

LOG = b"".join(b"2026-11-26T10:00:%02d step %d loss 0.%d\n" % (n, n, n) for n in range(40))


def test_an_answer_one_byte_shorter_than_the_last_is_stale() -> None:
    state = poll(CursorState(), LOG, 4096).state
    adv = poll(state, LOG[:-1], 4096)  # a replica one byte behind
    assert adv.outcome == "stale"
    assert adv.block == b""
    assert adv.processed_bytes == adv.skipped_bytes == 0
    assert adv.state.offset == state.offset
    more = LOG + b"next line\n"
    adv = poll(adv.state, more, 4096)
    assert adv.outcome == "continued"
    assert adv.block == b"next line\n"


def test_a_stale_window_with_a_larger_full_size_is_not_a_restart() -> None:
    state = poll(CursorState(), LOG, 4096).state
    content, current, _ = preview(LOG, 4096)
    adv = advance(state, content, current, len(LOG) + 500)  # old content, newer size
    assert adv.outcome == "stale"
    assert adv.block == b""
    grown = LOG + b"x" * 499 + b"\n"
    adv = poll(adv.state, grown, 4096)
    assert adv.outcome == "continued"
    assert adv.block == b"x" * 499 + b"\n"
    assert adv.skipped_bytes == 0


def test_an_answer_several_polls_old_is_stale() -> None:
    state = CursorState()
    sizes = [400, 700, 1000, len(LOG)]
    for size in sizes:
        state = poll(state, LOG[:size], 4096).state
    for size in sizes[:-1]:
        for behind in (0, 1, 7):
            adv = poll(state, LOG[: size - behind], 4096)
            assert adv.outcome == "stale", (size, behind)
            assert adv.state.offset == state.offset
            assert adv.block == b""


def test_a_stale_answer_survives_an_exporter_restart() -> None:
    state = CursorState()
    for size in (400, 700, len(LOG)):
        state = poll(state, LOG[:size], 4096).state
    state = decode_cursor(encode_cursor(state))
    assert poll(state, LOG[:400], 4096).outcome == "stale"


def test_content_that_lags_its_full_size_is_placed_by_the_content() -> None:
    state = poll(CursorState(), LOG[:700], 4096).state
    content, current, _ = preview(LOG[:1000], 4096)
    adv = advance(state, content, current, len(LOG))  # content older than full_size says
    assert adv.outcome == "continued"
    assert adv.misplaced
    start = LOG.rindex(b"\n", 0, 700) + 1
    assert adv.block == LOG[start : LOG.rindex(b"\n", 0, 1000) + 1]
    adv = poll(adv.state, LOG + b"more\n", 4096)
    assert adv.block == LOG[LOG.rindex(b"\n", 0, 1000) + 1 :] + b"more\n"
    assert adv.skipped_bytes == 0


def test_a_restarted_log_is_still_a_restart() -> None:
    state = poll(CursorState(), LOG, 4096).state
    restarted = b"2026-11-26T11:00:00 restarted\n"
    adv = poll(state, restarted, 4096)
    assert adv.outcome == "reset"
    assert adv.block.endswith(restarted)


def test_repeated_lines_do_not_make_a_gap_look_stale() -> None:
    line = b"WARNING: the same thing again\n"
    state = poll(CursorState(), line * 10, 4096).state
    adv = poll(state, line * 400, 100)  # the window moved past the cursor
    assert adv.outcome == "gap"


@pytest.mark.parametrize(
    ("current", "full", "bounds", "reason"),
    [
        (100, 2**40, {"max_full_size": 2**34}, "more than a log holds"),
        (100, 10**9, {"max_growth": 10**6}, "more than the 1000000 time allows"),
        (5000, 100, {}, "exceeds full_size"),
    ],
)
def test_implausible_sizes_are_a_bad_answer_not_skipped_bytes(
    current: int, full: int, bounds: dict[str, int], reason: str
) -> None:
    state = poll(CursorState(), LOG, 4096).state
    adv = advance(state, "x\n", current, full, **bounds)  # type: ignore[arg-type]
    assert adv.outcome == "implausible"
    assert reason in adv.reason
    assert adv.state == state
    assert adv.skipped_bytes == adv.processed_bytes == 0
    fresh = advance(CursorState(), "x\n", current, full, **bounds)  # type: ignore[arg-type]
    assert fresh.outcome == "implausible"
    assert not fresh.state.started


def test_a_restarted_log_that_ends_with_the_same_lines_is_a_restart() -> None:
    """ModelArts ends every run with the same platform lines: a shorter log ending with
    them is a new run, not an old answer."""
    trailer = (
        b"[ModelArts Service Log]Training end with return code: 1\n"
        b"[ModelArts Service Log]exit with 1\n"
    )
    state = poll(CursorState(), LOG + trailer, 4096, final=True).state
    again = b"ModuleNotFoundError: No module named 'apex'\n" + trailer
    adv = poll(state, again, 4096, final=True)
    assert adv.outcome == "reset"
    assert adv.block == again
