"""Parsing the platform signals: running records, events and task metrics.

Sources (see MODELARTS_API.md §1-2 and the official SDK's models ``RunningRecord``,
``ListTrainingJobEventsResponse``/``Event`` and ``ShowTrainingJobMetricsResponse``/
``MetricObject``, huaweicloudsdkmodelarts 3.1.219):

* ``status.running_records[]``: ``{start_at, end_at`` (Unix seconds), ``start_type,
  end_reason, end_related_task, end_recover, ...}``.
* ``GET /v2/{project}/training-jobs/{id}/events?offset&limit&order``: ``{total, limit,
  offset, order, start_time, end_time, events[{time, level, message, source}]}``;
  ``offset`` is a page index, ``limit`` 1..100, ``time`` ISO 8601 with an offset and
  whole seconds (``2022-11-26T16:03:41+08:00``). The OTC document types ``total``,
  ``limit`` and ``offset`` as strings, the SDK as integers: both are accepted.
* ``GET /v2/{project}/training-jobs/{id}/metrics/{task}``: ``{metrics[{metric, value[]}]}``,
  one average per minute in percent, oldest first; ``-1`` where the minute has no sample
  (the documented example: a CPU job's ``gpuUtil`` is all ``-1``).

Everything here is hostile text: strings are cleaned of control characters and lone
surrogates, capped, and cleared of the credentials in use before they are kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from . import errors
from .types import TASK_METRICS, EventPage, JobEvent, RunningRecord

MAX_MESSAGE_CHARS = 512
MAX_FIELD_CHARS = 64
METRIC_LOOKBACK = 3
"""How many of the newest per-minute values are searched for the latest real sample: an
older one no longer describes the task."""

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# key=value / key: value pairs whose value looks like a credential, and presigned URLs.
_SECRET_PAIR_RE = re.compile(
    r"(?i)\b((?:[\w-]*(?:password|passwd|secret|token|signature|credential|"
    r"access[_-]?key(?:[_-]?id)?|secret[_-]?key|\bak|\bsk))\s*[=:]\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^\s&,;\"']+)"
)
_AUTHORIZATION_RE = re.compile(r"(?i)\b(authorization\s*[=:]\s*)(?:\S+\s+)?[^\s,;]+")


def clean_text(value: object, limit: int) -> str:
    """One line of at most ``limit`` characters: no control characters, no lone
    surrogates (they cannot be encoded), whitespace collapsed. Non-strings give ``""``."""
    if not isinstance(value, str):
        return ""
    text = value.encode("utf-8", "replace").decode("utf-8")
    text = " ".join(_CONTROL_RE.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without the credentials in use and without values of ``password=``,
    ``token:``, ``Signature=``, ``AccessKeyId=``... pairs (as in presigned OBS URLs)."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "<redacted>")
    text = _AUTHORIZATION_RE.sub(r"\1<redacted>", text)
    return _SECRET_PAIR_RE.sub(r"\1<redacted>", text)


# --- running records ---------------------------------------------------------------------


def parse_running_records(status: Mapping[str, object]) -> tuple[RunningRecord, ...]:
    """``status.running_records`` as records; anything unusable gives an empty record.

    Every element counts as one run (restarts are derived from the length), but only
    well-typed fields are taken. A missing or non-list field means no records.
    """
    raw = status.get("running_records")
    if not isinstance(raw, list):
        return ()
    return tuple(_record(item) for item in raw)


def _record(item: object) -> RunningRecord:
    if not isinstance(item, dict):
        return RunningRecord()
    return RunningRecord(
        start_at=_seconds(item.get("start_at")),
        end_at=_seconds(item.get("end_at")),
        start_type=clean_text(item.get("start_type"), MAX_FIELD_CHARS),
        end_reason=clean_text(item.get("end_reason"), MAX_FIELD_CHARS),
        end_related_task=clean_text(item.get("end_related_task"), MAX_FIELD_CHARS),
        end_recover=clean_text(item.get("end_recover"), MAX_FIELD_CHARS),
    )


def _seconds(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if not math.isfinite(value) or not 0 <= value < 2**40:
        return 0
    return int(value)


# --- events -------------------------------------------------------------------------------


def parse_event_time(value: object) -> float | None:
    """Unix seconds from an event's ``time``: ISO 8601 (an offset, or UTC when none), or
    a number of seconds or milliseconds since the epoch. None when unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                when = datetime.fromisoformat(text)
            except ValueError:
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return when.timestamp()
    else:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return number / 1000.0 if number >= 1e11 else number


def event_level(value: object) -> str:
    """One of EVENT_LEVELS: ``Info``, ``Warning`` or ``Error`` in any case; ``warn``,
    ``fatal``, ``critical`` map to their kin; anything else counts as ``Info``."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text.startswith(("err", "fatal", "crit")):
        return "Error"
    if text.startswith("warn"):
        return "Warning"
    return "Info"


def parse_events_page(data: object, secrets: tuple[str, ...] = ()) -> tuple[EventPage, int]:
    """(the page, how many events were unusable). BadResponseError if it is no page."""
    if not isinstance(data, dict):
        raise errors.BadResponseError("list_events", "response is not a JSON object")
    raw = data.get("events")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise errors.BadResponseError("list_events", "field events is not a list")
    events: list[JobEvent] = []
    unusable = 0
    for item in raw:
        event = _event(item, secrets)
        if event is None:
            unusable += 1
        else:
            events.append(event)
    return EventPage(tuple(events), _count(data.get("total")), len(raw)), unusable


def _event(item: object, secrets: tuple[str, ...]) -> JobEvent | None:
    if not isinstance(item, dict):
        return None
    when = parse_event_time(item.get("time"))
    if when is None:
        return None
    message = redact(clean_text(item.get("message"), 4 * MAX_MESSAGE_CHARS), secrets)
    return JobEvent(
        time=when,
        level=event_level(item.get("level")),
        source=clean_text(item.get("source"), MAX_FIELD_CHARS),
        message=clean_text(message, MAX_MESSAGE_CHARS),
    )


def _count(value: object) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


# --- task metrics -------------------------------------------------------------------------


def parse_task_metrics(data: object) -> dict[str, float]:
    """The latest real per-minute average of each known metric, as a ratio 0..1.

    A metric whose newest METRIC_LOOKBACK values are all ``-1`` (no sample), or that is
    missing, is left out; values above 100 % are capped at 1. BadResponseError if the
    answer has no ``metrics`` list.
    """
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), list):
        raise errors.BadResponseError("task_metrics", "field metrics is missing or not a list")
    latest: dict[str, float] = {}
    for item in data["metrics"]:
        if not isinstance(item, dict):
            continue
        name, values = item.get("metric"), item.get("value")
        if name not in TASK_METRICS or not isinstance(values, list):
            continue
        for value in reversed(values[-METRIC_LOOKBACK:]):
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value) and value >= 0:
                latest[str(name)] = round(min(float(value), 100.0) / 100.0, 9)
                break
    return latest
