"""Make a block of raw log bytes ready for the rules.

Every ``\\r`` becomes ``\\n``, so a progress bar redrawn with carriage returns is one line
per frame, and a ``\\r\\n`` line end is a ``\\n`` followed by an empty line, which no rule
matches (one byte-for-byte translation: replacing the two-byte ``\\r\\n`` first cost more
than all the rules together). ANSI/VT escape sequences and their pasted caret forms
(``^[[2;2R``) are removed. The rules then see plain ``\\n``-separated lines; they never
match across a line end.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_ANSI = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, erase line
    rb"|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)"  # OSC: titles, hyperlinks (within a line)
    rb"|\x1b[@-Z\\-_]"  # two-byte escapes
)
_CARET_ANSI = re.compile(rb"\^\[\[[0-9;>?]*[A-Za-z]")


def normalize(block: bytes) -> bytes:
    """Lines end in ``\\n`` (the last one too); escape sequences are gone."""
    if b"\r" in block:
        block = block.replace(b"\r", b"\n")
    if b"\x1b" in block:
        block = _without_escapes(block)
    if b"^[[" in block:
        block = _CARET_ANSI.sub(b"", block)
    if block and not block.endswith(b"\n"):
        block += b"\n"
    return block


_PIECE = 1 << 16


def _without_escapes(block: bytes) -> bytes:
    """``block`` without its escape sequences, a piece of lines at a time: ``re.sub``
    holds every piece it keeps, and a hostile block of escapes (one every few bytes) would
    take 30 times its size at once. No sequence spans a line end, so pieces cut at one
    give the same bytes."""
    if len(block) <= _PIECE:
        return _ANSI.sub(b"", block)
    kept = []
    start = 0
    while start < len(block):
        end = block.find(b"\n", start + _PIECE)
        end = len(block) if end < 0 else end + 1
        kept.append(_ANSI.sub(b"", block[start:end]))
        start = end
    return b"".join(kept)


def raw_offset(block: bytes, offset: int) -> int:
    """Where in ``block`` the byte at ``offset`` of ``normalize(block)`` comes from.

    For the rare question of a line's number (``\\r`` became ``\\n`` in place; escape
    sequences were removed): the removed spans before it are added back, one Python step
    per escape sequence, so call it once in a while, not per line.
    """
    text = block.replace(b"\r", b"\n") if b"\r" in block else block
    colour = b"\x1b" in text
    stripped = _without_escapes(text) if colour else text
    if b"^[[" in stripped:
        offset = _before_removals(offset, (m.span() for m in _CARET_ANSI.finditer(stripped)))
    if colour:
        offset = _before_removals(offset, (m.span() for m in _ANSI.finditer(text)))
    return offset


def _before_removals(offset: int, removed: Iterable[tuple[int, int]]) -> int:
    """``offset`` in a text from which the ``removed`` spans (in order) were cut, as an
    offset in the text before (the spans are read only up to it)."""
    shift = 0
    for begin, end in removed:
        if begin - shift > offset:
            break
        shift += end - begin
    return offset + shift
