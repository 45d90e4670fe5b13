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
