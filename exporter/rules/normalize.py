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

_ANSI = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, erase line
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: titles, hyperlinks
    rb"|\x1b[@-Z\\-_]"  # two-byte escapes
)
_CARET_ANSI = re.compile(rb"\^\[\[[0-9;>?]*[A-Za-z]")


def normalize(block: bytes) -> bytes:
    """Lines end in ``\\n`` (the last one too); escape sequences are gone."""
    if b"\r" in block:
        block = block.replace(b"\r", b"\n")
    if b"\x1b" in block:
        block = _ANSI.sub(b"", block)
    if b"^[[" in block:
        block = _CARET_ANSI.sub(b"", block)
    if block and not block.endswith(b"\n"):
        block += b"\n"
    return block


def raw_offset(block: bytes, offset: int) -> int:
    """Where in ``block`` the byte at ``offset`` of ``normalize(block)`` comes from.

    For the rare question of a line's number (``\\r`` became ``\\n`` in place; escape
    sequences were removed): the removed spans before it are added back, one Python step
    per escape sequence, so call it once in a while, not per line.
    """
    text = block.replace(b"\r", b"\n") if b"\r" in block else block
    colour = [m.span() for m in _ANSI.finditer(text)] if b"\x1b" in text else []
    if colour:
        text = _ANSI.sub(b"", text)
    caret = [m.span() for m in _CARET_ANSI.finditer(text)] if b"^[[" in text else []
    return _before_removals(_before_removals(offset, caret), colour)


def _before_removals(offset: int, removed: list[tuple[int, int]]) -> int:
    """``offset`` in a text from which the ``removed`` spans (in order) were cut, as an
    offset in the text before."""
    shift = 0
    for begin, end in removed:
        if begin - shift > offset:
            break
        shift += end - begin
    return offset + shift
