"""Text from the ModelArts API is hostile until checked: ids, task names, job names.

JSON can carry what no UTF-8 file, URL or label can: a lone UTF-16 surrogate
(``"\\ud800"`` is valid JSON). Such a string makes SQLite, the exposition and the URL
encoder raise. Discovery checks every job it is given with these functions, so one job's
bad text stays with that job:

* an identifier (job id, task name) goes back into URLs and into the state file's keys:
  one that cannot be encoded, holds control characters or is absurdly long is unusable,
  and the job (or the task) is not watched;
* display text (job name, phase, engine, flavor) goes into labels and logs: characters
  UTF-8 cannot encode become U+FFFD, and over-long text is cut.
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 256
"""ModelArts ids are UUIDs and task names are ``worker-0``; 256 is far beyond both."""
MAX_DISPLAY_LENGTH = 512
"""Job names are at most 64 characters in the API; longer text is cut to this."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def encodable(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def usable_id(text: str) -> str | None:
    """Why ``text`` cannot serve as a job id or task name, or None when it can."""
    if not text:
        return "empty"
    if not encodable(text):
        return "not valid Unicode (a lone UTF-16 surrogate)"
    if _CONTROL.search(text):
        return "holds control characters"
    if len(text) > MAX_ID_LENGTH:
        return f"longer than {MAX_ID_LENGTH} characters"
    return None


def display_text(text: str) -> tuple[str, bool]:
    """``text`` made safe for labels and logs, and whether it had to be changed."""
    changed = False
    if not encodable(text):
        text, changed = _SURROGATE.sub("\ufffd", text), True
    if len(text) > MAX_DISPLAY_LENGTH:
        text, changed = text[: MAX_DISPLAY_LENGTH - 1] + "\u2026", True
    return text, changed


def loggable(text: str) -> str:
    """``text`` for one log line: control characters and lone surrogates escaped."""
    if not encodable(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if _CONTROL.search(text):
        text = _CONTROL.sub(_escape_control, text)
    return text


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}")
