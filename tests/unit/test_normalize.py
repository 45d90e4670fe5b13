"""normalize.py: line ends and escape sequences, whatever the block's size."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from modelarts_exporter.rules import RuleSet, load_rules
from modelarts_exporter.rules.normalize import normalize, raw_offset

_ESCAPES = [b"\x1b[32m", b"\x1b[0m", b"\x1b]0;title\x07", b"\x1b]8;;http://x\x1b\\", b"\x1bM"]
_PIECES = st.sampled_from(
    [*_ESCAPES, b"^[[2K", b"\n", b"\r", b"\r\n", b"loss: 0.5 ", b"ok ", b"\x1b"]
)


@given(st.lists(_PIECES, min_size=1, max_size=60), st.booleans())
@settings(max_examples=200, deadline=None)
def test_a_large_block_is_cleaned_as_a_small_one(parts: list[bytes], large: bool) -> None:
    """Big blocks are cleaned a piece of lines at a time (bounded memory): the same bytes
    as one pass (no escape sequence spans a line end)."""
    unit = b"".join(parts)
    block = unit * ((200_000 // len(unit) + 1) if large else 1) + b"tail"
    expected = re.sub(
        rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]",
        b"",
        block.replace(b"\r", b"\n"),
    )
    expected = re.sub(rb"\^\[\[[0-9;>?]*[A-Za-z]", b"", expected) + b"\n"
    assert normalize(block) == expected


def test_an_unterminated_title_does_not_swallow_the_lines_after_it() -> None:
    """A stray OSC start (``ESC ]``) ran to the next BEL or ESC, lines and markers with it."""
    block = b"\x1b]0;title\nRuntimeError: CUDA out of memory. Tried to allocate 1 GiB\n\x07\n"
    assert b"CUDA out of memory" in normalize(block)
    assert RuleSet(load_rules()).scan(block).errors.get("cuda_oom") == 1


def test_raw_offset_walks_back_over_every_removal() -> None:
    block = b"\x1b[1mA\x1b[0m\r^[[2Kstep 1\nB"
    clean = normalize(block)
    for offset, char in enumerate(clean[:-1]):
        if char != ord("\n"):
            assert block.replace(b"\r", b"\n")[raw_offset(block, offset)] == char
