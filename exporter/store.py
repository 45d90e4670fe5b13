"""Per-task counters, last values and cursors; saved to SQLite after every poll."""

from __future__ import annotations

import base64
from typing import Any

from exporter.cursor import CursorState


def encode_cursor(state: CursorState) -> dict[str, Any]:
    return {
        "started": state.started,
        "offset": state.offset,
        "slack": state.slack,
        "tail": base64.b64encode(state.tail).decode(),
        "pending": base64.b64encode(state.pending).decode(),
        "discard": state.discard,
        "full_size": state.full_size,
    }


def decode_cursor(data: dict[str, Any]) -> CursorState:
    return CursorState(
        started=bool(data["started"]),
        offset=int(data["offset"]),
        slack=int(data["slack"]),
        tail=base64.b64decode(data["tail"]),
        pending=base64.b64decode(data["pending"]),
        discard=bool(data["discard"]),
        full_size=int(data["full_size"]),
    )
