"""Where a task's log preview window sits in the log, and which of its bytes are new.

The preview call returns the *tail* of a task's log: ``content`` (the window, as text),
``current_size`` (how many log bytes the window covers) and ``full_size`` (the log's
length). A cursor marks how far the log has been consumed; each poll the window is
placed in the log, the cursor is found in it, and only the bytes after the cursor go on
to the rules. This module is pure: bytes in, bytes and counts out, no I/O.

Placing the window:
    The window covers log bytes ``[full_size - current_size, full_size)``. A cut can split a
    UTF-8 character at either end (at the start, where the window cuts the log; at the
    end, where the writer flushed half a character); ModelArts drops those partial
    characters, so ``content`` may encode to up to 3 bytes less at each end. The cursor
    is therefore found by its *signature*: the bytes just before it (``tail``) and the
    unfinished line just after it (``pending``), tried at the few positions the drops
    allow.

What a poll can find (``Advance.outcome``):
    ``continued``  the signature is where it should be: the bytes after it are new.
    ``gap``        the window no longer reaches the cursor: the bytes in between scrolled
                   out unseen and are counted as skipped, and so is the first (cut) line.
    ``reset``      the log shrank, or the signature is not there (the log was restarted and
                   regrew, or replaced): the old unfinished line is processed as the last
                   line of the old log, and the new log is processed from its start.
    ``first``      the first poll of a task: everything the window shows is new.
    ``stale``      an answer older than what was already taken (a lagging replica: shorter
                   than the last one, or old content under a newer ``full_size``): the
                   cursor stays where it is, nothing is taken.
    ``implausible`` sizes no log can have (``current_size`` above ``full_size``, a
                   ``full_size`` above ``max_full_size``, or grown by more than
                   ``max_growth`` since the last poll): a bad answer, nothing is taken and
                   nothing counted as skipped.

Stale or restarted? Both show a log that no longer continues at the cursor; the content
tells them apart. A window is stale when what it shows was already seen: it ends inside
the last bytes the last poll saw (``CONTEXT_BYTES``) or one of the ``MAX_ANCHORS`` polls
before saw at its end, or it shows such bytes once with nothing unseen after them; and
its ``full_size`` does not put the log's end before where those bytes are in ours (a
restarted run that ends with the same platform lines is shorter: a restart). The bytes
that tell must be at least ``MIN_MATCH`` (``STRONG_MATCH`` for a window whose sizes put it
after the cursor, else a gap), show once in the window and hold more than one line's
end: a log that repeats a line proves nothing. A window that shows the cursor's whole
signature followed by new bytes, but not where its sizes put it, is taken by its content
(``Advance.misplaced``).
What cannot be told: a lagging answer older than every remembered position, or showing
too little of them, looks like a restart; a restarted log that prints the very same
bytes again looks stale until it differs.

Lines end at ``\\r\\n``, ``\\n`` or ``\\r``. The unfinished last line is held back until a
later poll finishes it, or until the job is over (``final=True``). A line that grows past
``max_line_bytes`` is processed in pieces of that size, never dropped.

Accounting, per log incarnation: ``processed + skipped + (full_size - offset)`` is the
log's size, where ``full_size - offset`` is what is still pending or unseen. Where the
window's edges make the exact position uncertain by up to 3 bytes (``slack``), the
skipped count takes the lower bound and catches up when a later window settles it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

TAIL_BYTES = 64
"""How many bytes before the cursor are kept as its signature."""

_MAX_EDGE_DROP = 3

_REPLACEMENT = "\ufffd".encode()

CONTEXT_BYTES = 256
"""How many of the last bytes a window showed are kept (``context``), to tell a stale
answer by."""
ANCHOR_BYTES = 128
"""How many of those bytes are kept for each of the last polls (``anchors``)."""
MAX_ANCHORS = 8
"""How many earlier polls a stale answer is recognised against."""
STRONG_MATCH = 64
"""As many, for a window whose sizes put it after the cursor (which is else a gap)."""
MIN_MATCH = 48
"""How many known bytes a window must end with (or show) to be recognised as stale: a
log shorter than this is never taken for stale."""

_WEAK_SIGNATURE = 8
"""A cursor found with fewer signature bytes than this, where the window's edges allow
several positions, is reported as ambiguous."""
"""A UTF-8 character is at most 4 bytes: at most 3 of them can be cut off at an edge."""

Outcome = Literal["first", "continued", "gap", "reset", "unchanged", "stale", "implausible"]


@dataclass(frozen=True, slots=True)
class CursorState:
    """What the next poll of one task needs to know; persisted after every poll."""

    started: bool = False
    """False until a preview has placed the cursor."""
    offset: int = 0
    """Absolute log offset of the first byte not yet consumed (a lower bound, see slack)."""
    slack: int = 0
    """The true offset may be up to this many bytes higher (UTF-8 cuts at window edges)."""
    tail: bytes = b""
    """The last bytes before the cursor, as a window showed them."""
    pending: bytes = b""
    """The unfinished line after the cursor, as last seen: held back, not yet processed."""
    discard: bool = False
    """True while inside a line whose start scrolled out: skip up to its end."""
    full_size: int = 0
    """The log's size at the last poll."""
    context: bytes = b""
    """The last bytes (up to ``CONTEXT_BYTES``) of the last window, which end where the
    log had got to: a stale answer ends inside them."""
    anchors: tuple[tuple[int, bytes], ...] = ()
    """(end offset, the ``ANCHOR_BYTES`` before it) of what the earlier polls saw at
    their end, oldest first: a stale answer ends there, or shows them."""
    stale: int = 0
    """Stale answers in a row."""


@dataclass(frozen=True, slots=True)
class Advance:
    """The result of one poll: the bytes to run through the rules and the counts."""

    state: CursorState
    outcome: Outcome
    block: bytes = b""
    """New log content, whole lines only (plus pieces of over-long lines, and the last
    unfinished line when the job is over or the log was reset)."""
    lines: int = 0
    """Lines that ended in this block."""
    processed_bytes: int = 0
    skipped_bytes: int = 0
    resynced: bool = False
    """The cursor was found only by a wider search (the window lost bytes)."""
    ambiguous: bool = False
    """Several cursor positions fit the window equally (see ``_find_cursor``)."""
    reset_reason: str = ""
    misplaced: bool = False
    """The window's sizes put it elsewhere than its content shows the cursor: the content
    decided (a server whose ``full_size`` lags or leads its content)."""
    reason: str = ""
    """Why an answer was ``implausible``, or what made it ``stale``."""


def _last_terminator(data: bytes, start: int, end: int) -> int:
    """Index of the last line terminator in ``data[start:end]``, or -1."""
    return max(data.rfind(b"\n", start, end), data.rfind(b"\r", start, end))


def _first_line_end(data: bytes, start: int) -> int:
    """Index just after the first line terminator at or after ``start``, or -1."""
    nl = data.find(b"\n", start)
    cr = data.find(b"\r", start)
    if cr != -1 and (nl == -1 or cr < nl):
        return cr + 2 if data[cr + 1 : cr + 2] == b"\n" else cr + 1
    return -1 if nl == -1 else nl + 1


def count_lines(block: bytes) -> int:
    """Line terminators in ``block``: ``\\r\\n`` counts once.

    One C-level pass: a count of ``\\n`` when the block holds no ``\\r`` (a membership
    test), else ``bytes.splitlines``, which cuts at the same three endings (counting the
    three kinds apart takes three passes, and ``\\r\\n`` is a slow one).
    """
    if b"\r" not in block:
        return block.count(b"\n")
    return len(block.splitlines()) - (block[-1:] not in (b"\n", b"\r"))


def _char_boundary(data: bytes, index: int) -> int:
    """The largest index <= ``index`` that does not split a UTF-8 character."""
    lowest = max(0, index - _MAX_EDGE_DROP)
    while index > lowest and index < len(data) and (data[index] & 0xC0) == 0x80:
        index -= 1
    return index


@dataclass(slots=True)
class _Take:
    """Bytes taken from the window in this poll, with their accounting."""

    parts: list[bytes] = field(default_factory=list)
    lines: int = 0
    processed: int = 0

    def block(self) -> bytes:
        """The parts as one block; a single part is returned as it is, not copied."""
        return b"".join(self.parts)


def _take_lines(win: _Window, start: int, *, final: bool, max_line_bytes: int, take: _Take) -> int:
    """Move the finished lines of ``cb[start:]`` into ``take``; return the new cursor index.

    The unfinished last line stays behind unless ``final``; when it is at least
    ``max_line_bytes`` long, whole pieces of that size are taken from it.
    """
    cb = win.cb
    end = len(cb)
    if final:
        cut = end
    else:
        last = _last_terminator(cb, start, end)
        if last >= start and last == end - 1 and cb[last] == 0x0D:
            # A trailing \r may be the first half of \r\n: wait for the next byte.
            last = _last_terminator(cb, start, end - 1)
        cut = last + 1 if last >= start else start
        rest = end - cut
        if rest >= max_line_bytes:
            piece_end = cut + (rest // max_line_bytes) * max_line_bytes
            cut = max(cut, _char_boundary(cb, piece_end))
    if cut > start:
        chunk = cb if (start, cut) == (0, end) else cb[start:cut]
        take.lines += count_lines(chunk)
        if final and chunk[-1:] not in (b"\n", b"\r"):
            take.lines += 1
        take.processed += win.log_len(start, cut)
        take.parts.append(chunk)
    return cut


def _signature_at(cb: bytes, idx: int, drop: int, state: CursorState) -> int:
    """How many signature bytes ``cb`` shows with the cursor at ``idx``; -1 on a mismatch.

    ``drop`` bytes before the content were cut off as parts of a character: where the
    signature's ``tail`` reaches back over them, they must be continuation bytes.
    """
    if idx < 0 or idx > len(cb):
        return -1
    tail = state.tail
    k = min(len(tail), idx)
    if k and cb[idx - k : idx] != tail[len(tail) - k :]:
        return -1
    hidden = tail[max(0, len(tail) - k - drop) : len(tail) - k]
    if any(byte & 0xC0 != 0x80 for byte in hidden):
        return -1
    if state.pending and cb[idx : idx + len(state.pending)] != state.pending:
        return -1
    return k + len(state.pending)


@dataclass(frozen=True, slots=True)
class _Window:
    """One preview placed in the log."""

    cb: bytes
    """The window's content, UTF-8 encoded."""
    start: int
    """Log offset where the window starts (before any dropped partial character)."""
    head_drop: int
    """How many bytes may have been dropped at the start (0 when it starts the log)."""
    missing: int
    """``current_size`` minus the content's length in log bytes."""
    full_size: int
    replaced: bool
    """The content holds replacement characters (invalid UTF-8 in the log)."""

    def log_len(self, begin: int, end: int) -> int:
        """Log bytes behind ``cb[begin:end]``: a replacement character stands for one byte."""
        if not self.replaced:
            return end - begin
        return end - begin - 2 * self.cb.count(_REPLACEMENT, begin, end)

    def index(self, relative: int) -> int:
        """The content index ``relative`` log bytes after the content's start.

        Each replacement character before that point takes 3 content bytes for (we
        assume) 1 log byte; they are walked in order, so the index never lands inside one.
        """
        idx = relative
        if self.replaced and relative > 0:
            at = self.cb.find(_REPLACEMENT)
            while at != -1 and at < idx:
                idx += 2
                at = self.cb.find(_REPLACEMENT, at + 3)
        return idx


def advance(
    state: CursorState,
    content: str,
    current_size: int,
    full_size: int,
    *,
    final: bool = False,
    max_line_bytes: int = 64 * 1024,
    max_full_size: int | None = None,
    max_growth: int | None = None,
) -> Advance:
    """Place one preview window against ``state`` and take what is new.

    ``final`` says the job is over: the unfinished last line is processed too, and the
    whole log counts as consumed. ``max_full_size`` (bytes a log can hold) and
    ``max_growth`` (bytes it can have grown since the last poll, or since it began for a
    first poll) bound what is plausible; None: no bound.
    """
    if max_line_bytes < 1:
        raise ValueError("max_line_bytes must be positive")
    if _unchanged(
        state, full_size, final=final, max_line_bytes=max_line_bytes
    ) and not _implausible(state, current_size, full_size, max_full_size, max_growth):
        # Nothing written since the last poll: the window must still end with the
        # signature (a whole one: a shorter one could still learn from this window).
        # Checking that costs a few bytes, not the whole window.
        signature = state.tail + state.pending
        suffix = content[len(content) - len(signature) :] if signature else ""
        if suffix.encode("utf-8", "surrogatepass").endswith(signature):
            return Advance(state=replace(state, stale=0), outcome="unchanged")
    return advance_bytes(
        state,
        content.encode("utf-8", "surrogatepass"),
        current_size,
        full_size,
        final=final,
        max_line_bytes=max_line_bytes,
        max_full_size=max_full_size,
        max_growth=max_growth,
    )


def _unchanged(state: CursorState, full_size: int, *, final: bool, max_line_bytes: int) -> bool:
    """Whether the log may be as the last poll left it (same size, a whole signature),
    and nothing is due from it (a held-back line that backed off a cut character can be
    a whole piece long: it is taken even though nothing was written)."""
    return (
        state.started
        and not final
        and full_size == state.full_size
        and (len(state.tail) == TAIL_BYTES or state.offset <= len(state.tail))
        and len(state.pending) < max_line_bytes
    )


def advance_bytes(
    state: CursorState,
    cb: bytes,
    current_size: int,
    full_size: int,
    *,
    final: bool = False,
    max_line_bytes: int = 64 * 1024,
    max_full_size: int | None = None,
    max_growth: int | None = None,
    trusted: bool = False,
) -> Advance:
    """``advance`` for a window already UTF-8 encoded (``cb``), as ``analyze`` reads a
    file: invalid bytes replaced by U+FFFD as ModelArts does, ``current_size`` the log
    bytes it covers. The new block is ``cb`` itself when the window is all new whole
    lines, and otherwise one slice of it: no other copy of the window is made.
    ``trusted``: the window is the file itself (``analyze``), not an answer that could be
    stale or implausible: neither is looked for.
    """
    if max_line_bytes < 1:
        raise ValueError("max_line_bytes must be positive")
    why = "" if trusted else _implausible(state, current_size, full_size, max_full_size, max_growth)
    if why:
        return Advance(state=state, outcome="implausible", reason=why)
    if _unchanged(state, full_size, final=final, max_line_bytes=max_line_bytes) and cb.endswith(
        state.tail + state.pending
    ):
        return Advance(state=replace(state, stale=0), outcome="unchanged")
    start = max(0, full_size - current_size)
    # U+FFFD starts with 0xEF: a memchr for that byte usually rules it out at once.
    replaced = b"\xef" in cb and _REPLACEMENT in cb
    missing = current_size - (len(cb) - 2 * cb.count(_REPLACEMENT) if replaced else len(cb))
    win = _Window(
        cb=cb,
        start=start,
        head_drop=0 if start == 0 else max(0, min(_MAX_EDGE_DROP, missing)),
        missing=missing,
        full_size=full_size,
        replaced=replaced,
    )
    if not state.started:
        return _restart(state, win, "first", final=final, max_line_bytes=max_line_bytes)

    found = _find_cursor(state, win)
    if found is None and full_size >= state.offset and start <= state.offset:
        found = _wide_search(state, win)
    misplaced = False
    if found is not None and found.shown < MIN_MATCH and not found.resynced and not trusted:
        # Found by a few bytes only (the sizes put the cursor at the window's start): an
        # old window under a newer full_size can show them too. Its end tells.
        view = _by_content(state, win, final=final)
        if view is not None and view.found is None and not view.unchanged:
            return Advance(
                state=replace(state, stale=state.stale + 1), outcome="stale", reason=view.reason
            )
    if found is None and not trusted:
        # A window whose sizes put it after the cursor is a gap unless it shows a lot of
        # what was seen (a log that repeats a line must not pass for an old answer).
        gap = start > state.offset and full_size >= state.offset
        view = _by_content(state, win, final=final, strong=gap)
        if view is not None and view.unchanged:
            return Advance(state=replace(state, stale=0), outcome="unchanged")
        if view is not None and view.found is None:
            return Advance(
                state=replace(state, stale=state.stale + 1), outcome="stale", reason=view.reason
            )
        if view is not None and view.window is not None:
            win, found, misplaced = view.window, view.found, True
            start, full_size = win.start, win.full_size
    if found is None:
        if full_size < state.offset:
            return _reset(state, win, "log shrank", final=final, max_line_bytes=max_line_bytes)
        if start > state.offset:
            # The cursor (or part of its range) lies before the window: it scrolled out.
            # When part of the range lies inside it, a restarted log fits too: a gap
            # takes nothing twice.
            return _restart(
                state,
                win,
                "gap",
                final=final,
                max_line_bytes=max_line_bytes,
                ambiguous=start <= state.offset + state.slack,
            )
        return _reset(state, win, "content changed", final=final, max_line_bytes=max_line_bytes)

    idx, drops = found.idx, found.drops
    take = _Take()
    begin, discard = idx, state.discard
    if discard:
        line_end = _first_line_end(cb, idx)
        begin, discard = (len(cb), True) if line_end == -1 else (line_end, False)
    cursor = _take_lines(win, begin, final=final, max_line_bytes=max_line_bytes, take=take)
    if final:
        new_offset, slack = full_size, 0
    elif win.replaced or found.resynced:
        # Invalid UTF-8 makes positions counted from the window's start estimates; the
        # log's end is exact, and only the unfinished line lies between it and the cursor.
        new_offset, slack = _from_end(win, cursor), 0
    else:
        # The head drop decides where the window sits; the cursor cannot have moved back.
        at_cursor = win.log_len(0, cursor)
        new_offset = max(start + min(drops) + at_cursor, state.offset + win.log_len(idx, cursor))
        slack = max(0, start + max(drops) + at_cursor - new_offset)
    processed = take.processed
    if not win.replaced and not found.resynced:
        skipped = max(0, new_offset - state.offset - take.processed)
    else:
        # Invalid UTF-8 makes positions in the window estimates (a replacement character
        # stands for 1 to 3 log bytes): the offsets, counted from the log's end, are what
        # the processed bytes follow; only the rest of a line being skipped is skipped.
        skipped = win.log_len(idx, begin) if state.discard else 0
        if take.processed or final:
            processed = max(0, new_offset - state.offset - skipped)
    changed = processed or skipped or final or full_size != state.full_size
    pending = b"" if final else cb[cursor:]
    # Only what this window showed: older bytes of the signature may be stale.
    tail = cb[max(idx if found.clamped else 0, cursor - TAIL_BYTES) : cursor]
    return Advance(
        state=CursorState(
            started=True,
            offset=new_offset,
            slack=slack,
            tail=tail,
            pending=pending,
            discard=discard and not final,
            full_size=full_size,
            context=cb[-CONTEXT_BYTES:],
            anchors=_remember(state, cb[-CONTEXT_BYTES:]),
        ),
        outcome="continued" if changed else "unchanged",
        block=take.block(),
        lines=take.lines,
        processed_bytes=processed,
        skipped_bytes=skipped,
        resynced=found.resynced,
        ambiguous=found.ambiguous,
        misplaced=misplaced,
    )


def _find_cursor(state: CursorState, win: _Window) -> _Found | None:
    """Where the cursor's signature shows in the window.

    The true offset is ``offset .. offset+slack``; the window's content starts at
    ``start + drop`` in the log for a ``drop`` of ``0 .. head_drop``. Of the positions
    that show the signature, those showing most of it win (near the window's start less
    of ``tail`` is visible). Positions that still tie (content that repeats every few
    bytes, or a signature too short to tell) are ambiguous: the latest is taken, so
    nothing is taken twice. The drops of all ties stay possible, so the new offset keeps
    a range (``slack``), settled by a later window.
    """
    if win.full_size < state.offset:
        return None
    ties: dict[int, list[int]] = {}
    consistent: set[int] = set()
    clamped: set[int] = set()
    best_seen = -1
    for true_offset in range(state.offset, state.offset + state.slack + 1):
        for drop in range(win.head_drop + 1):
            idx = win.index(true_offset - win.start - drop)
            exact = 0 <= idx <= len(win.cb)
            if not exact and not state.tail and not state.pending:
                # A cursor placed with nothing seen around it (in a line being skipped)
                # may sit in a character that the window's start or end cut off.
                if idx > len(win.cb):
                    if idx - len(win.cb) > max(0, win.missing - drop):
                        continue
                    idx = len(win.cb)
                else:
                    if -idx > drop:
                        continue
                    idx = 0
            seen = _signature_at(win.cb, idx, drop, state)
            if seen < 0:
                continue
            consistent.add(drop)
            if seen > best_seen:
                ties, clamped, best_seen = {}, set(), seen
            if seen == best_seen:
                ties.setdefault(idx, []).append(drop)
                if not exact:
                    clamped.add(idx)
    if not ties:
        return None
    # A few bytes of signature cannot tell a shifted match from the true one, a restarted
    # log, or (when part of the cursor's range lies before the window) a gap: then every
    # drop that fits stays possible, and the new offset keeps the whole range.
    weak = best_seen < _WEAK_SIGNATURE and (win.head_drop > 0 or state.slack > 0)
    if (weak or best_seen == 0) and state.offset < win.start:
        drops = list(range(win.head_drop + 1))
    elif weak or best_seen == 0:
        drops = sorted(consistent)
    else:
        drops = [drop for drops in ties.values() for drop in drops]
    idx = max(ties)
    return _Found(
        idx, drops, ambiguous=len(ties) > 1 or weak, clamped=idx in clamped, shown=best_seen
    )


@dataclass(frozen=True, slots=True)
class _Found:
    """Where the cursor was found in a window."""

    idx: int
    """Its index in the content; the latest of the candidates, so nothing is taken twice."""
    drops: list[int]
    """The head drops that stay possible: the new offset keeps their range."""
    ambiguous: bool = False
    clamped: bool = False
    """The cursor may lie in a character cut off at the window's edge: what the content
    shows before ``idx`` is not known to precede it."""
    resynced: bool = False
    shown: int = TAIL_BYTES
    """How many bytes of the signature the window shows there."""


def _wide_search(state: CursorState, win: _Window) -> _Found | None:
    """Find the signature near where it should be, when invalid UTF-8 moved it.

    A server that drops invalid bytes shortens the content; a replacement character may
    stand for 1 to 3 log bytes (a literal U+FFFD in the log is 3). Either shifts the
    positions counted from the window's start. Counted from the log's end (exact), the
    cursor is only the new bytes away, and only replacements among those shift it: the
    search looks there, within that uncertainty, and takes the closest match, so content
    that repeats is not mistaken for an earlier copy of itself. Only used when the window
    shows replacements or its size does not add up; valid logs keep the exact check.
    """
    if not win.replaced and 0 <= win.missing <= 2 * _MAX_EDGE_DROP:
        return None
    signature = state.tail + state.pending
    if len(signature) < 16:
        return None
    after = win.full_size - state.offset  # log bytes from the cursor to the end
    cursor = len(win.cb) - after
    replaced = 0
    if win.replaced:
        for _ in range(3):  # each replacement after the cursor takes 2 more content bytes
            replaced = win.cb.count(_REPLACEMENT, max(0, cursor), len(win.cb))
            cursor = len(win.cb) - after - 2 * replaced
        spread = 2 * replaced + 2 * _MAX_EDGE_DROP
    else:
        cursor = win.index(state.offset - win.start)
        spread = abs(win.missing) + 2 * _MAX_EDGE_DROP
    expected = cursor - len(state.tail)
    lo = max(0, expected - spread)
    hi = min(len(win.cb), expected + spread + len(signature))
    best = at = win.cb.find(signature, lo, hi)
    if at == -1:
        return None
    while at != -1:
        if abs(at - expected) < abs(best - expected):
            best = at
        at = win.cb.find(signature, at + 1, hi)
    return _Found(best + len(state.tail), [0], resynced=True)


def _from_end(win: _Window, cursor: int) -> int:
    """The cursor's log offset counted back from the log's end (exact, unless the
    unfinished line itself holds invalid UTF-8)."""
    return max(0, win.full_size - win.log_len(cursor, len(win.cb)))


def _restart(
    state: CursorState,
    win: _Window,
    outcome: Outcome,
    *,
    final: bool,
    max_line_bytes: int,
    take: _Take | None = None,
    reason: str = "",
    ambiguous: bool = False,
) -> Advance:
    """Take a window with no usable cursor: the first poll, a gap, or a new log after a reset.

    When the window cuts the log, its first line is partial and is skipped.
    """
    take = take or _Take()
    flushed = take.processed
    cb = win.cb
    begin, discard = 0, False
    if win.start > 0:
        line_end = _first_line_end(cb, 0)
        begin, discard = (len(cb), True) if line_end == -1 else (line_end, False)
    cursor = _take_lines(win, begin, final=final, max_line_bytes=max_line_bytes, take=take)
    if final:
        new_offset, slack = win.full_size, 0
    elif win.replaced:
        new_offset, slack = _from_end(win, cursor), 0
    else:
        new_offset, slack = win.start + win.log_len(0, cursor), win.head_drop
    # A gap continues the same log; the first poll and a reset count from its start.
    base = state.offset if outcome == "gap" else 0
    skipped = max(0, new_offset - base - (take.processed - flushed))
    pending = b"" if (final or discard) else cb[cursor:]
    tail = cb[max(0, cursor - TAIL_BYTES) : cursor]
    return Advance(
        state=CursorState(
            started=True,
            offset=new_offset,
            slack=slack,
            tail=tail,
            pending=pending,
            discard=discard and not final,
            full_size=win.full_size,
            # What the old log's polls saw says nothing about a new log.
            context=cb[-CONTEXT_BYTES:],
            anchors=_remember(state, cb[-CONTEXT_BYTES:]) if outcome == "gap" else (),
        ),
        outcome=outcome,
        block=take.block(),
        lines=take.lines,
        processed_bytes=take.processed,
        skipped_bytes=skipped,
        reset_reason=reason,
        ambiguous=ambiguous,
    )


def _reset(
    state: CursorState, win: _Window, reason: str, *, final: bool, max_line_bytes: int
) -> Advance:
    """The log was restarted or replaced: finish the old one, take the new from its start."""
    take = _Take()
    if state.pending and not state.discard:
        # The old log's unfinished last line ended with the old log: process it.
        take.parts += (state.pending, b"\n")
        take.lines += 1
        take.processed += len(state.pending) - 2 * state.pending.count(_REPLACEMENT)
    return _restart(
        state, win, "reset", final=final, max_line_bytes=max_line_bytes, take=take, reason=reason
    )


# --- stale and implausible answers ------------------------------------------------------


def _implausible(
    state: CursorState,
    current_size: int,
    full_size: int,
    max_full_size: int | None,
    max_growth: int | None,
) -> str:
    """Why no log can look like this answer; "" when one can."""
    if current_size < 0 or full_size < 0:
        return "negative sizes"
    if current_size > full_size:
        return f"current_size {current_size} exceeds full_size {full_size}"
    if max_full_size is not None and full_size > max_full_size:
        return f"full_size {full_size} is more than a log holds ({max_full_size})"
    grown = full_size - (state.full_size if state.started else 0)
    if max_growth is not None and grown > max_growth:
        return f"full_size grew by {grown} bytes, more than the {max_growth} time allows"
    return ""


def _known(state: CursorState) -> bytes:
    """The bytes known to end where the last poll's window ended."""
    return state.context or state.tail + state.pending


def _remember(state: CursorState, new: bytes) -> tuple[tuple[int, bytes], ...]:
    """The anchors after a poll whose window ended with ``new``: the last poll's end joins
    them, unless the new one repeats it."""
    if not state.started:
        return ()
    # Where it ended, at most: a later window may settle a cut character upwards, and an
    # anchor that put it too low would make the answer that shows it look older.
    end = state.offset + state.slack + len(state.pending)
    known = _known(state)[-ANCHOR_BYTES:]
    if not known or new[-ANCHOR_BYTES:] == known:
        return state.anchors
    for at, data in state.anchors:
        if at == end and len(data) > len(known) and data.endswith(known):
            known = data  # a window that showed less of the same end: keep the more
    kept = tuple(anchor for anchor in state.anchors if anchor[0] != end)
    return (*kept, (end, known))[-MAX_ANCHORS:]


def _spans_lines(data: bytes) -> bool:
    """Whether ``data`` holds a line end before its last byte (it is not one line's end:
    logs repeat whole lines, the same two lines in a row much less)."""
    return max(data.rfind(b"\n", 0, len(data) - 1), data.rfind(b"\r", 0, len(data) - 1)) >= 0


@dataclass(frozen=True, slots=True)
class _View:
    """What a window's content says when its sizes do not place the cursor."""

    reason: str = ""
    window: _Window | None = None
    """The window placed by its content (where it shows the cursor)."""
    found: _Found | None = None
    """None: stale (or ``unchanged``)."""
    unchanged: bool = False
    """It shows just what the last poll saw, where its sizes agree."""


def _by_content(
    state: CursorState, win: _Window, *, final: bool, strong: bool = False
) -> _View | None:
    """Whether the window shows only what was already seen (stale), or the cursor at
    another place than its sizes say (placed by content); None: neither.

    Known bytes (the signature, the anchors) found in the window tell where its content
    ends in the log (``end``). It is stale when that is before the end of what the last
    poll saw, or right there while ``full_size`` claims more. ``strong``: STRONG_MATCH
    known bytes are needed (and the window is never placed by content), for a window its
    sizes put after the cursor. Only the part of the window after its last replacement
    character is looked at, so that positions counted back from its end are exact.
    """
    cb = win.cb
    n = len(cb)
    lo = cb.rfind(_REPLACEMENT) + len(_REPLACEMENT) if win.replaced else 0
    signature = state.tail + state.pending
    seen_end = state.offset + len(state.pending)
    known = _known(state)
    least = STRONG_MATCH if strong else MIN_MATCH

    def older(end: int) -> bool:
        # A log shorter than where the window's content would end in ours is another
        # log that happens to end the same way (a restarted run printing the same
        # platform lines): not stale, not ours.
        if win.full_size + _MAX_EDGE_DROP < end:
            return False
        return end < seen_end or (
            end <= seen_end + state.slack and win.full_size > end + _MAX_EDGE_DROP
        )

    # The cursor's whole signature, once: what follows it is new, wherever the sizes
    # put the window. With nothing after it, the window shows what the last poll saw:
    # stale when the sizes claim more, else nothing new (the final poll takes the rest).
    if not strong and len(signature) >= MIN_MATCH and _spans_lines(signature):
        at = cb.find(signature, lo)
        if at != -1 and cb.find(signature, at + 1) == -1:
            idx = at + len(state.tail)
            content_end = state.offset + (n - idx)
            if win.full_size + _MAX_EDGE_DROP < content_end:
                return None  # another, shorter log that shows the same bytes
            if at + len(signature) == n and not final:
                if older(seen_end):
                    return _View("it ends where the last poll ended")
                return _View("", None, None, unchanged=True)
            placed = _Window(
                cb=cb,
                start=max(0, content_end - win.log_len(0, n)),
                head_drop=0,
                missing=0,
                full_size=content_end,
                replaced=win.replaced,
            )
            return _View("", placed, _Found(idx, [0], resynced=True))
    # The window ends inside what this or an earlier poll saw at its end.
    spans = [(seen_end - len(known), known)]
    spans += [(end - len(data), data) for end, data in reversed(state.anchors)]
    for span_start, data in spans:
        k = _ends_inside(cb, lo, data, least)
        if k and older(span_start + k):
            return _View("it ends inside what was already seen")
    # It shows what an earlier poll saw at its end, and nothing after that is unseen.
    for end, data in reversed(state.anchors):
        if len(data) < least or not _spans_lines(data):
            continue
        at = cb.find(data, lo)
        if at != -1 and cb.find(data, at + 1) == -1 and older(end + (n - at - len(data))):
            return _View("it shows what an earlier poll saw, and nothing newer")
    return None


def _ends_inside(cb: bytes, lo: int, data: bytes, least: int = MIN_MATCH) -> int:
    """The largest k such that ``cb`` ends with ``data[:k]``, showing at least ``least``
    of those bytes; 0: none.

    Content that repeats (the same line again and again) proves nothing: the bytes that
    match must show only once in the window, and hold more than one line's end.
    """
    n = len(cb)
    visible = n - lo
    if visible < least or len(data) < least:
        return 0
    probe = cb[n - least :]
    best = shown = 0
    at = data.find(probe)
    while at != -1:
        k = at + least
        m = min(k, visible)
        if cb[n - m :] == data[k - m : k] and m >= shown:
            best, shown = k, m
        at = data.find(probe, at + 1)
    # Where the last bytes show once in the window, so does every longer end of it.
    if best and _spans_lines(cb[n - shown :]) and cb.find(probe, lo) == n - least:
        return best
    return 0
