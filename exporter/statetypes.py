"""What the store holds: one immutable record per task and per job, and a snapshot of all.

Records are replaced, never changed in place, so a snapshot (two dict copies) is a
consistent view that scrapes read without holding any lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .cursor import CursorState
from .events import JobEvents
from .evidence import MarkerLine

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]

LOSS_VALUES = "modelarts_task_loss_values"
LOSS_VALUES_COUNT: tuple[str, tuple[tuple[str, str], ...]] = (LOSS_VALUES + "_count", ())
LOSS_VALUES_SUM: tuple[str, tuple[tuple[str, str], ...]] = (LOSS_VALUES + "_sum", ())
"""A task's counters under these keys hold the training-loss summary: the lines with a
finite training loss and the sum of those losses (exactly once, like every counter)."""


@dataclass(frozen=True, slots=True)
class TaskState:
    """Everything known about one task's log. Replaced, never changed in place."""

    job_id: str
    task_id: str
    cursor: CursorState = field(default_factory=CursorState)
    processed_bytes: float = 0.0
    skipped_bytes: float = 0.0
    resets: float = 0.0
    lines: float = 0.0
    errors: Mapping[str, float] = field(default_factory=dict)
    warnings: Mapping[str, float] = field(default_factory=dict)
    exit_code: float | None = None
    loss: float | None = None
    step: float | None = None
    epoch: float | None = None
    gauges: Mapping[SeriesKey, tuple[float, str]] = field(default_factory=dict)
    """Custom gauge series -> (value, rule that created it)."""
    counters: Mapping[SeriesKey, tuple[float, str]] = field(default_factory=dict)
    log_size: float | None = None
    window_bytes: float | None = None
    last_growth: float | None = None
    """Unix time the log was last seen to grow."""
    up: bool | None = None
    """Whether the last preview succeeded; None before the first one."""
    last_poll: float | None = None
    final_done: bool = False
    """The job is over and this task had its final poll."""
    failures: int = 0
    """Failed previews in a row (for backoff)."""
    terminal_polls: int = 0
    """Previews taken since the job was seen in a terminal phase (the log may still grow
    for a while after that; see ``lifecycle.final_poll_seconds``)."""
    rule_context: Mapping[str, Any] = field(default_factory=dict)
    """What context rules (a Keras ``Epoch 3/10`` header, ...) said so far, for the next
    block of the same log."""
    marker_lines: Mapping[str, tuple[MarkerLine, ...]] = field(default_factory=dict)
    """Error marker -> its first lines in the current run of the log (evidence.py)."""
    exit_line: MarkerLine | None = None
    """The line that printed ``exit_code``."""


@dataclass(frozen=True, slots=True)
class JobState:
    """A watched training job, as discovery last saw it."""

    id: str
    name: str
    phase: str
    tasks: tuple[str, ...] = ()
    engine: str = ""
    flavor: str = ""
    create_time: float | None = None
    ended_at: float | None = None
    """Unix time the job reached a terminal phase (from the API, else when we saw it)."""
    start_time: float | None = None
    """Unix time the job started running (``status.start_time``); None before."""
    duration: float | None = None
    """Seconds it has been running (``status.duration``)."""
    restarts: int = 0
    """Runs after the first in ``status.running_records``; never goes down."""
    last_recovery: tuple[str, str, str] | None = None
    """(end_reason, end_recover, end_related_task) of the last run that ended with a
    fault-tolerance action, with bounded values (see ``platform.recovery_labels``)."""


@dataclass(frozen=True, slots=True)
class TaskUsage:
    """The latest task metrics of a task: metric name (``gpuUtil``...) -> ratio 0..1."""

    ratios: Mapping[str, float]
    fetched_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a scrape reads: a consistent view of every job and task."""

    jobs: Mapping[str, JobState]
    tasks: Mapping[tuple[str, str], TaskState]
    events: Mapping[str, JobEvents] = field(default_factory=dict)
    usage: Mapping[tuple[str, str], TaskUsage] = field(default_factory=dict)
