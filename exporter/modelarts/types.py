"""What the ModelArts API tells us, as small frozen records (parsed from JSON by the client)."""

from __future__ import annotations

from dataclasses import dataclass

PHASES: tuple[str, ...] = (
    "Creating",
    "Pending",
    "Running",
    "Failed",
    "Completed",
    "Terminating",
    "Terminated",
    "Abnormal",
)
TERMINAL_PHASES: frozenset[str] = frozenset({"Completed", "Failed", "Terminated", "Abnormal"})
ACTIVE_PHASES: tuple[str, ...] = tuple(p for p in PHASES if p not in TERMINAL_PHASES)


@dataclass(frozen=True, slots=True)
class RunningRecord:
    """One run of a job in ``status.running_records`` (the SDK's ``RunningRecord``).

    Times are Unix seconds (0: not given). ``start_type`` is ``init_or_rescheduled`` or
    ``restarted``; ``end_recover`` the fault-tolerance action taken when the run ended
    (``npu_proc_restart``, ``gpu_proc_restart``, ``proc_restart``, ``pod_reschedule``,
    ``job_reschedule``, ``job_reschedule_with_taint``); ``end_reason`` free text such as
    ``exit with 127``; ``end_related_task`` the task that ended the run (``worker-2``).
    Strings are as the API sent them (cleaned of control characters, capped).
    """

    start_at: int = 0
    end_at: int = 0
    start_type: str = ""
    end_reason: str = ""
    end_related_task: str = ""
    end_recover: str = ""


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """One training job, from a list item or the details call (same JobResponse shape)."""

    id: str
    name: str
    phase: str
    tasks: tuple[str, ...]
    create_time_ms: int = 0
    start_time_ms: int = 0
    duration_ms: int = 0
    engine: str = ""
    flavor: str = ""
    running_records: tuple[RunningRecord, ...] = ()

    @property
    def restarts(self) -> int:
        """Runs after the first in ``status.running_records``."""
        return max(0, len(self.running_records) - 1)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def end_time(self) -> float | None:
        """Unix seconds when a terminal job ended, from ``start_time + duration``.

        A job that never started ends at its creation time. None while it is not terminal
        or when the API gave no times at all.
        """
        if not self.terminal:
            return None
        if self.start_time_ms > 0:
            return (self.start_time_ms + max(self.duration_ms, 0)) / 1000.0
        if self.create_time_ms > 0:
            return self.create_time_ms / 1000.0
        return None


@dataclass(frozen=True, slots=True)
class LogPreview:
    """The preview call: the latest window of a task's log.

    ``content`` is the window as text; ``current_size`` the bytes the window covers in the
    log and ``full_size`` the log's length, both as the API reports them.
    """

    content: str
    current_size: int
    full_size: int


EVENT_LEVELS: tuple[str, ...] = ("Info", "Warning", "Error")


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of the training-job events API (the SDK's ``Event``).

    ``time`` in Unix seconds (the API sends ISO 8601 with an offset, second resolution);
    ``level`` one of EVENT_LEVELS; ``source`` (``Job``, ``Task``, ``K8S``...) and
    ``message`` cleaned of control characters and credentials, and capped.
    """

    time: float
    level: str
    source: str
    message: str


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of events as sent (newest first when asked so). ``size`` counts the items
    on the page, unusable ones included (a full page means there may be more); ``total``
    is the number of events the server says it has, if it said."""

    events: tuple[JobEvent, ...]
    total: int | None = None
    size: int = -1

    def __post_init__(self) -> None:
        if self.size < 0:
            object.__setattr__(self, "size", len(self.events))


TASK_METRICS: tuple[str, ...] = (
    "cpuUsage",
    "memUsage",
    "gpuUtil",
    "gpuMemUsage",
    "npuUtil",
    "npuMemUsage",
)
"""The metrics of ``GET .../metrics/{task_id}``: per-minute averages in percent."""
