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
