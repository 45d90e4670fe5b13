"""The state file's rows as JSON text, and back, checked field by field.

A row is one task (``encode_task``) or one job (``encode_job``). Reading is strict: a
row whose JSON is not what this version writes (a counter that is a string, a negative
offset, a missing field) raises ``RowError`` with the reason, and the store rejects that
row alone (the task starts afresh), never the whole file. Fields added by later
versions of this module are optional when read, so older state files load.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from .apitext import display_text
from .cursor import CursorState
from .events import JobEvents, decode_events, encode_events
from .evidence import decode_line, decode_marker_lines, encode_line, encode_marker_lines
from .statetypes import JobState, SeriesKey, TaskState

__all__ = ["encode_events"]


class RowError(ValueError):
    """A state row that cannot be used; the message says why."""


_MISSING: Any = object()


# --- checked reads -----------------------------------------------------------------------


def _get(data: Mapping[str, Any], key: str, default: Any) -> Any:
    if key in data:
        return data[key]
    if default is _MISSING:
        raise RowError(f"field {key} is missing")
    return default


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise RowError(f"{what} is not an object")
    return value


def _bool(data: Mapping[str, Any], key: str, default: Any = _MISSING) -> bool:
    value = _get(data, key, default)
    if not isinstance(value, bool):
        raise RowError(f"field {key} is not true or false")
    return value


def _int(data: Mapping[str, Any], key: str, default: Any = _MISSING) -> int:
    value = _get(data, key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RowError(f"field {key} is not a whole number >= 0")
    return value


def _number(value: Any, what: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RowError(f"{what} is not a number")
    return float(value)


def _count(value: Any, what: str) -> float:
    """A counter: finite and never negative."""
    number = _number(value, what)
    if not math.isfinite(number) or number < 0:
        raise RowError(f"{what} is not a finite number >= 0")
    return number


def _optional(data: Mapping[str, Any], key: str, *, finite: bool = True) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    number = _number(value, f"field {key}")
    if finite and not math.isfinite(number):
        raise RowError(f"field {key} is not finite")
    return number


def _str(data: Mapping[str, Any], key: str, default: Any = _MISSING) -> str:
    value = _get(data, key, default)
    if not isinstance(value, str):
        raise RowError(f"field {key} is not text")
    return value


def _bytes(data: Mapping[str, Any], key: str) -> bytes:
    text = _str(data, key)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RowError(f"field {key} is not base64") from None


# --- cursor -----------------------------------------------------------------------------


def encode_cursor(state: CursorState) -> dict[str, Any]:
    return {
        "started": state.started,
        "offset": state.offset,
        "slack": state.slack,
        "tail": base64.b64encode(state.tail).decode(),
        "pending": base64.b64encode(state.pending).decode(),
        "discard": state.discard,
        "full_size": state.full_size,
        "context": base64.b64encode(state.context).decode(),
        "anchors": [[end, base64.b64encode(data).decode()] for end, data in state.anchors],
        "stale": state.stale,
    }


def decode_cursor(data: Mapping[str, Any]) -> CursorState:
    """Raises RowError (a ValueError) when a field is missing or of the wrong type."""
    data = _object(data, "cursor")
    return CursorState(
        started=_bool(data, "started"),
        offset=_int(data, "offset"),
        slack=_int(data, "slack"),
        tail=_bytes(data, "tail"),
        pending=_bytes(data, "pending"),
        discard=_bool(data, "discard"),
        full_size=_int(data, "full_size"),
        context=_bytes(data, "context") if "context" in data else b"",
        anchors=_anchors(_get(data, "anchors", [])),
        stale=_int(data, "stale", 0),
    )


def _anchors(rows: Any) -> tuple[tuple[int, bytes], ...]:
    if not isinstance(rows, list):
        raise RowError("field anchors is not a list")
    anchors = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 2:
            raise RowError("field anchors holds an entry that is not [offset, bytes]")
        entry = {"offset": row[0], "bytes": row[1]}
        anchors.append((_int(entry, "offset"), _bytes(entry, "bytes")))
    return tuple(anchors)


# --- tasks --------------------------------------------------------------------------------


def _encode_series(series: Mapping[SeriesKey, tuple[float, str]]) -> list[Any]:
    return [
        [metric, [list(p) for p in labels], value, rule]
        for (metric, labels), (value, rule) in series.items()
    ]


def _decode_series(rows: Any, key: str, *, counters: bool) -> dict[SeriesKey, tuple[float, str]]:
    if not isinstance(rows, list):
        raise RowError(f"field {key} is not a list")
    series: dict[SeriesKey, tuple[float, str]] = {}
    for row in rows:
        if not isinstance(row, list) or len(row) != 4:
            raise RowError(f"field {key} holds an entry that is not [metric, labels, value, rule]")
        metric, labels, value, rule = row
        if not isinstance(metric, str) or not isinstance(rule, str) or not isinstance(labels, list):
            raise RowError(f"field {key} holds an entry of the wrong types")
        pairs: list[tuple[str, str]] = []
        for pair in labels:
            if not (
                isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
            ):
                raise RowError(f"field {key} holds a label that is not [name, value]")
            pairs.append((pair[0], pair[1]))
        what = f"a value in field {key}"
        number = _number(value, what)
        # A summary's _sum (the loss summary) may be negative; no counter is infinite.
        if counters and not math.isfinite(number):
            raise RowError(f"{what} is not finite")
        series[(metric, tuple(pairs))] = (number, rule)
    return series


def _decode_counts(data: Mapping[str, Any], key: str) -> dict[str, float]:
    counts = _object(_get(data, key, {}), f"field {key}")
    return {name: _count(value, f"field {key}.{name}") for name, value in counts.items()}


def encode_task(task: TaskState) -> str:
    data: dict[str, Any] = {}
    for f in fields(task):
        value = getattr(task, f.name)
        if f.name == "cursor":
            value = encode_cursor(value)
        elif f.name in ("gauges", "counters"):
            value = _encode_series(value)
        elif f.name == "marker_lines":
            value = encode_marker_lines(value)
        elif f.name == "exit_line":
            value = None if value is None else encode_line(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        data[f.name] = value
    # NaN (a NaN loss) is valid JSON for Python's json module, and round-trips.
    return json.dumps(data, separators=(",", ":"))


def decode_task(text: str, key: tuple[str, str] | None = None) -> TaskState:
    """The task a row holds; ``key`` is the row's (job id, task id), which it must match.

    Raises RowError (a ValueError) naming the first field that is not what
    ``encode_task`` writes.
    """
    try:
        data = _object(json.loads(text), "the row")
    except (json.JSONDecodeError, RecursionError):
        raise RowError("not JSON") from None
    job_id, task_id = _str(data, "job_id"), _str(data, "task_id")
    if key is not None and (job_id, task_id) != key:
        raise RowError("its job and task ids differ from the row's key")
    up = data.get("up")
    if up is not None and not isinstance(up, bool):
        raise RowError("field up is not true, false or null")
    context = _object(_get(data, "rule_context", {}), "field rule_context")
    try:
        cursor = decode_cursor(_get(data, "cursor", _MISSING))
    except RowError as exc:
        raise RowError(f"field cursor: {exc}") from None
    try:
        marker_lines = decode_marker_lines(data.get("marker_lines", {}))
        exit_line = data.get("exit_line")
        exit_line = None if exit_line is None else decode_line(exit_line)
    except (TypeError, ValueError) as exc:
        raise RowError(f"the kept lines: {exc}") from None
    return TaskState(
        job_id=job_id,
        task_id=task_id,
        cursor=cursor,
        processed_bytes=_count(_get(data, "processed_bytes", 0.0), "field processed_bytes"),
        skipped_bytes=_count(_get(data, "skipped_bytes", 0.0), "field skipped_bytes"),
        resets=_count(_get(data, "resets", 0.0), "field resets"),
        lines=_count(_get(data, "lines", 0.0), "field lines"),
        errors=_decode_counts(data, "errors"),
        warnings=_decode_counts(data, "warnings"),
        exit_code=_optional(data, "exit_code"),
        loss=_optional(data, "loss", finite=False),
        step=_optional(data, "step"),
        epoch=_optional(data, "epoch"),
        gauges=_decode_series(_get(data, "gauges", []), "gauges", counters=False),
        counters=_decode_series(_get(data, "counters", []), "counters", counters=True),
        log_size=_optional(data, "log_size"),
        window_bytes=_optional(data, "window_bytes"),
        last_growth=_optional(data, "last_growth"),
        up=up,
        last_poll=_optional(data, "last_poll"),
        final_done=_bool(data, "final_done", False),
        failures=_int(data, "failures", 0),
        rule_context=context,
        terminal_polls=_int(data, "terminal_polls", 0),
        marker_lines=marker_lines,
        exit_line=exit_line,
    )


# --- jobs ---------------------------------------------------------------------------------


def encode_job(job: JobState) -> str:
    return json.dumps({f.name: getattr(job, f.name) for f in fields(job)}, separators=(",", ":"))


def decode_job(text: str, key: str | None = None) -> JobState:
    """The job a row holds (``key``: the row's job id, which it must match).

    Raises RowError (a ValueError) when a field is not what ``encode_job`` writes.
    """
    try:
        data = _object(json.loads(text), "the row")
    except (json.JSONDecodeError, RecursionError):
        raise RowError("not JSON") from None
    job_id = _str(data, "id")
    if key is not None and job_id != key:
        raise RowError("its id differs from the row's key")
    tasks = _get(data, "tasks", [])
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise RowError("field tasks is not a list of names")
    recovery = data.get("last_recovery")
    if recovery is not None and not (
        isinstance(recovery, list)
        and len(recovery) == 3
        and all(isinstance(v, str) for v in recovery)
    ):
        raise RowError("field last_recovery is not [reason, recover, task]")
    return JobState(
        id=job_id,
        name=_display(data, "name"),
        phase=_display(data, "phase"),
        tasks=tuple(tasks),
        engine=_display(data, "engine", ""),
        flavor=_display(data, "flavor", ""),
        create_time=_optional(data, "create_time"),
        ended_at=_optional(data, "ended_at"),
        start_time=_optional(data, "start_time"),
        duration=_optional(data, "duration"),
        restarts=_int(data, "restarts", 0),
        last_recovery=None if recovery is None else (recovery[0], recovery[1], recovery[2]),
    )


# --- events -------------------------------------------------------------------------------


def decode_job_events(job_id: str, text: str) -> JobEvents:
    """A job's events row (``events.decode_events``), its counts checked like counters.

    Raises RowError (a ValueError) when the row is not what ``encode_events`` writes.
    """
    try:
        events = decode_events(job_id, text)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RowError(f"not an events row ({type(exc).__name__}: {exc})") from None
    for level, count in events.counts.items():
        _count(count, f"the count of {level} events")
    return events


def _display(data: Mapping[str, Any], key: str, default: Any = _MISSING) -> str:
    return display_text(_str(data, key, default))[0]
