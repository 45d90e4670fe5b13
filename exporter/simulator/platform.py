"""The simulator's platform signals: events, fault-tolerance restarts and task metrics.

Shapes follow MODELARTS_API.md §2 and the official SDK's models: events are
``{time, level, message, source}`` with ``time`` in ISO 8601 at Beijing time
(``2022-11-26T16:03:41+08:00``, whole seconds, as the documented example), paged by page
index newest first; running records carry ``start_at``/``end_at`` in Unix seconds; task
metrics are one average per minute in percent, ``-1`` where a minute has no sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .logs import PLATFORM_TZ, seeded

METRIC_MINUTES = 15
"""How many per-minute values the metrics call returns (the documented example has 15)."""

PROCESS_RECOVERIES = frozenset({"npu_proc_restart", "gpu_proc_restart", "proc_restart"})


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One platform event; ``seq`` orders events of the same second (newest last)."""

    time: float
    level: str
    message: str
    source: str
    seq: int

    def response(self) -> dict[str, str]:
        when = datetime.fromtimestamp(int(self.time), PLATFORM_TZ)
        return {
            "time": when.isoformat(timespec="seconds"),
            "level": self.level,
            "message": self.message,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class SimRestart:
    """A run of a job ended at ``at`` and ModelArts recovered it with ``recover``."""

    at: float
    reason: str = "exit with 137"
    recover: str = "pod_reschedule"
    task: str = "worker-0"

    @property
    def start_type(self) -> str:
        """How the next run starts: in place for a process restart, else rescheduled."""
        return "restarted" if self.recover in PROCESS_RECOVERIES else "init_or_rescheduled"


def running_records(
    start: float | None,
    restarts: Iterable[SimRestart],
    end: float | None,
    exit_code: int | None,
) -> list[dict[str, Any]]:
    """``status.running_records``: one record per run, the last one open while running."""
    if start is None:
        return []
    records: list[dict[str, Any]] = []
    run_start, start_type = start, "init_or_rescheduled"
    for restart in sorted(restarts, key=lambda r: r.at):
        records.append(
            {
                "start_at": int(run_start),
                "end_at": int(restart.at),
                "start_type": start_type,
                "end_reason": restart.reason,
                "end_related_task": restart.task,
                "end_recover": restart.recover,
                "end_recover_before_downgrade": restart.recover,
            }
        )
        run_start, start_type = restart.at, restart.start_type
    last: dict[str, Any] = {"start_at": int(run_start), "start_type": start_type}
    if end is not None:
        last["end_at"] = int(end)
        last["end_reason"] = "job completed" if exit_code == 0 else f"exit with {exit_code}"
    records.append(last)
    return records


# --- the events call -------------------------------------------------------------------------


def _query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"Invalid parameter {name}={text!r}: must be {low}..{high}.")
    return int(text)


def events_response(
    events: Iterable[SimEvent], query: Mapping[str, str], now: float
) -> dict[str, Any]:
    """One page of ``GET .../events``: ``offset`` is a page index, ``limit`` 1..100
    (default 50), ``order`` desc (default) or asc; ``level`` filters. Events after
    ``now`` (scripted for later) are not there yet. ValueError names a bad parameter."""
    limit = _query_int(query, "limit", 50, 1, 100)
    offset = _query_int(query, "offset", 0, 0, 2**31 - 1)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ValueError(f"Invalid parameter order={order!r}.")
    level = query.get("level")
    visible = [e for e in events if e.time <= now and (level is None or e.level == level)]
    visible.sort(key=lambda e: (e.time, e.seq), reverse=order == "desc")
    page = visible[offset * limit : (offset + 1) * limit]
    times = [e.time for e in visible]
    return {
        "total": len(visible),
        "limit": limit,
        "offset": offset,
        "order": order,
        "start_time": _iso(min(times)) if times else "",
        "end_time": _iso(max(times)) if times else "",
        "events": [event.response() for event in page],
    }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(int(t), PLATFORM_TZ).isoformat(timespec="seconds")


# --- the task metrics call ---------------------------------------------------------------------

# metric -> (accelerator it needs or "", low, high) of the synthetic percentages.
_METRIC_RANGES: dict[str, tuple[str, float, float]] = {
    "cpuUsage": ("", 20.0, 60.0),
    "memUsage": ("", 35.0, 70.0),
    "gpuUtil": ("gpu", 70.0, 99.0),
    "gpuMemUsage": ("gpu", 60.0, 92.0),
    "npuUtil": ("npu", 65.0, 98.0),
    "npuMemUsage": ("npu", 55.0, 90.0),
}


def metrics_response(
    seed: str,
    accelerator: str,
    start: float | None,
    now: float,
    overrides: Mapping[str, float | None],
) -> dict[str, Any]:
    """``{"metrics": [{"metric", "value": [15 per-minute values]}]}``, oldest minute first.

    Minutes before ``start`` and metrics of an accelerator the flavor lacks are ``-1``;
    the others are reproducible pseudo-random percentages. ``overrides`` fixes a metric
    (None: no sample, ``-1``) for every minute.
    """
    minute_now = math.floor(now / 60)
    metrics = []
    for name, (needs, low, high) in _METRIC_RANGES.items():
        values: list[float] = []
        for minute in range(minute_now - METRIC_MINUTES + 1, minute_now + 1):
            if start is None or (minute + 1) * 60 <= start:
                values.append(-1.0)
            elif name in overrides:
                override = overrides[name]
                values.append(-1.0 if override is None else float(override))
            elif needs and needs != accelerator:
                values.append(-1.0)
            else:
                rng = seeded(f"{seed}:{name}:{minute}")
                values.append(round(rng.uniform(low, high), 3))
        metrics.append({"metric": name, "value": values})
    return {"metrics": metrics}
