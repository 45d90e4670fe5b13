"""The log lines a failure diagnosis rests on: kept per task, bounded, capped and redacted.

A scan reports the first lines of each error marker in a block (``ScanResult.first_lines``,
offsets in that block). A task keeps, for the current run of its log (a reset starts a new
run), the first ``LINES_PER_MARKER`` lines of each error marker across polls, each placed
by its byte position in the run so that "which error came first" survives polls and
restarts (the lines live in the state file), plus the line of the last exit code.

Every kept line is cut to ``LINE_CHARS`` characters and redacted: the exporter's own
credentials (as ``modelarts.errors.redact`` does for server messages) and values that look
like secrets (``password=...``, ``token: ...``, ``Authorization: Bearer ...``, the password
of a ``scheme://user:password@host`` URL) become ``<redacted>``. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LINES_PER_MARKER = 3
"""First lines kept per error marker (a launcher's wrapper exception may come first)."""
LINE_CHARS = 300
"""A kept line is cut to this many characters (an ellipsis marks the cut)."""
MIN_SECRET_CHARS = 4
"""Shorter credential values are not looked for (they would match ordinary words)."""
REDACTED = "<redacted>"

_SECRET_VALUE = re.compile(
    r"(?i)(\b(?:password|passwd|pwd|secret(?:[_-]?access)?[_-]?key|secret|access[_-]?key(?:[_-]?id)?"
    r"|api[_-]?key|private[_-]?key|token|auth[_-]?token|security[_-]?token|credentials?"
    r"|authorization)\b['\"]?\s*[:=]\s*(?:bearer\s+|basic\s+)?['\"]?)([^\s'\",;&]+)"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/=-]{8,})")
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s:/@]+:)([^\s@/]+)(@)")
_PRINTED_TIME = re.compile(
    r"\b(\d{4}[-/]\d{2}[-/]\d{2}[ T_-]\d{2}:\d{2}:\d{2}(?:[.,:]\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?)"
)


@dataclass(frozen=True, slots=True)
class MarkerLine:
    """One kept log line.

    ``position``: bytes of the log processed before the poll that saw the line plus the
    line's offset in that poll's block; it orders lines within a run. ``step``: the last
    training step the log had printed by the end of that poll (None if none). ``seen_at``:
    Unix time of that poll.
    """

    position: int
    text: str
    step: float | None = None
    seen_at: float | None = None

    def printed_time(self) -> str | None:
        """The date and time printed on the line (``2025-03-18 20:50:24``), as printed."""
        match = _PRINTED_TIME.search(self.text)
        return match.group(1) if match else None


def redact_line(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials and secret-looking values replaced by ``<redacted>``."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET_CHARS and secret in text:
            text = text.replace(secret, REDACTED)
    text = _SECRET_VALUE.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)


def clean_line(text: str, secrets: Iterable[str] = ()) -> str:
    """A log line as kept: control characters removed, redacted, cut to LINE_CHARS.

    Redaction runs on the whole line before the cut, so a cut never leaves a secret's head.
    """
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    text = redact_line(text, secrets)
    if len(text) > LINE_CHARS:
        text = text[: LINE_CHARS - 1] + "…"
    return text


def merge_first_lines(
    kept: Mapping[str, tuple[MarkerLine, ...]],
    found: Mapping[str, Iterable[tuple[int, str]]],
    *,
    base: int,
    step: float | None,
    seen_at: float,
    secrets: Iterable[str] = (),
) -> dict[str, tuple[MarkerLine, ...]]:
    """``kept`` with the first lines a scan ``found`` (offsets in its block, which starts at
    byte ``base`` of the run) added, at most LINES_PER_MARKER per marker, earliest first."""
    secrets = tuple(secrets)
    merged = dict(kept)
    for marker, lines in found.items():
        have = list(merged.get(marker, ()))
        for offset, text in lines:
            if len(have) >= LINES_PER_MARKER:
                break
            have.append(MarkerLine(base + offset, clean_line(text, secrets), step, seen_at))
        have.sort(key=lambda line: line.position)
        merged[marker] = tuple(have[:LINES_PER_MARKER])
    return merged


def make_line(
    found: tuple[int, str],
    *,
    base: int,
    step: float | None,
    seen_at: float,
    secrets: Iterable[str] = (),
) -> MarkerLine:
    """One line a scan found (offset in its block, text) as kept."""
    offset, text = found
    return MarkerLine(base + offset, clean_line(text, secrets), step, seen_at)


# --- state file encoding ----------------------------------------------------------------


def encode_line(line: MarkerLine) -> list[Any]:
    return [line.position, line.text, line.step, line.seen_at]


def decode_line(data: Any) -> MarkerLine:
    """A line from the state file; TypeError/ValueError if it is not one."""
    if not isinstance(data, list) or len(data) != 4:
        raise TypeError("a kept line is [position, text, step, seen_at]")
    position, text, step, seen_at = data
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise ValueError("a kept line's position must be a non-negative integer")
    if not isinstance(text, str):
        raise TypeError("a kept line's text must be a string")
    return MarkerLine(position, text[:LINE_CHARS], _number(step), _number(seen_at))


def encode_marker_lines(lines: Mapping[str, tuple[MarkerLine, ...]]) -> dict[str, Any]:
    return {marker: [encode_line(line) for line in kept] for marker, kept in lines.items()}


def decode_marker_lines(data: Any) -> dict[str, tuple[MarkerLine, ...]]:
    if not isinstance(data, dict):
        raise TypeError("marker_lines must be an object")
    return {
        str(marker): tuple(decode_line(line) for line in lines[:LINES_PER_MARKER])
        for marker, lines in data.items()
        if isinstance(lines, list)
    }


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isinf(value):
        raise ValueError("a kept line's step and time are numbers or null")
    return float(value)
