"""One poll of one task, as a pure function: preview + old state -> new state.

    preview --cursor--> new bytes --rules--> findings --> new TaskState (+ stats)

No I/O here: the scheduler fetches the preview and commits the result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace

from .cursor import Advance, CursorState, advance, advance_bytes
from .evidence import make_line, merge_first_lines
from .modelarts.types import LogPreview
from .rules.engine import RuleSet, ScanResult, SeriesKey
from .store import LOSS_VALUES_COUNT, LOSS_VALUES_SUM, TaskState


@dataclass(frozen=True, slots=True)
class Limits:
    max_line_bytes: int = 64 * 1024
    max_series_per_rule: int = 100
    max_log_bytes: int = 2**34
    """A ``full_size`` above this is a bad answer: ModelArts stops a log at 1 GiB
    (``log length overflow(max:1073741824)``, MODELARTS_API.md §7.3); 16 GiB leaves room."""
    max_growth_bytes_per_second: float = 16 * 2**20
    growth_allowance_bytes: int = 16 * 2**20
    """A log that grew by more than ``allowance + rate * seconds`` since the last answer
    (or since the job was created, for a first one) is a bad answer, not skipped bytes."""


@dataclass(frozen=True, slots=True)
class LogWindow:
    """A window of a log already as UTF-8 bytes (``analyze`` reads files so): what a
    ``LogPreview`` holds, with ``content`` encoded, invalid bytes replaced by U+FFFD."""

    content: bytes
    current_size: int
    full_size: int


@dataclass(slots=True)
class PollStats:
    """What one poll did, for the exporter's own metrics and logs."""

    outcome: str = ""
    new_bytes: int = 0
    scan: ScanResult | None = None
    series_dropped: Counter[str] = field(default_factory=Counter)
    ambiguous: bool = False
    resynced: bool = False
    misplaced: bool = False
    reset_reason: str = ""
    reason: str = ""
    """Why an answer was stale or implausible."""


def apply_preview(
    task: TaskState,
    preview: LogPreview | LogWindow,
    rules: RuleSet,
    *,
    final: bool,
    now: float,
    limits: Limits,
    secrets: Iterable[str] = (),
    first_line_of: Collection[tuple[str, str]] = (),
    elapsed: float | None = None,
) -> tuple[TaskState, PollStats]:
    """Take what is new in ``preview`` through the rules into the task's state.

    ``secrets``: credential values to keep out of the log lines kept as evidence.
    ``first_line_of``: markers whose first line in the new block the scan reports
    (``ScanResult.first_line_index``).
    ``elapsed``: seconds since the last answer this state took (since the job was
    created, for a first one), which bounds how much the log can have grown; None: no
    bound but ``limits.max_log_bytes``. A stale or implausible answer changes nothing but
    ``up`` (stale: 1, implausible: 0) and ``last_poll``.
    """
    max_growth = None
    if elapsed is not None:
        max_growth = limits.growth_allowance_bytes + int(
            max(0.0, elapsed) * limits.max_growth_bytes_per_second
        )
    adv = _advance(
        task.cursor,
        preview,
        final=final,
        max_line_bytes=limits.max_line_bytes,
        max_full_size=limits.max_log_bytes,
        max_growth=max_growth,
    )
    stats = PollStats(
        outcome=adv.outcome,
        new_bytes=adv.processed_bytes,
        ambiguous=adv.ambiguous,
        resynced=adv.resynced,
        misplaced=adv.misplaced,
        reset_reason=adv.reset_reason,
        reason=adv.reason,
    )
    if adv.outcome in ("stale", "implausible"):
        stale = adv.outcome == "stale"
        kept = replace(
            task,
            cursor=adv.state,
            up=stale,
            last_poll=now,
            failures=0 if stale else task.failures,
        )
        return kept, stats
    grew = preview.full_size > task.cursor.full_size or adv.outcome in ("first", "reset")
    updated = replace(
        task,
        cursor=adv.state,
        processed_bytes=task.processed_bytes + adv.processed_bytes,
        skipped_bytes=task.skipped_bytes + adv.skipped_bytes,
        resets=task.resets + (adv.outcome == "reset"),
        lines=task.lines + adv.lines,
        log_size=float(preview.full_size),
        window_bytes=float(preview.current_size),
        last_growth=now if grew and preview.full_size > 0 else task.last_growth,
        up=True,
        last_poll=now,
        final_done=final,
        failures=0,
    )
    if adv.outcome == "reset":
        # The values printed by the old log do not describe the new one (counters go on).
        # A new run: its failure is diagnosed from its own lines.
        updated = replace(
            updated,
            exit_code=None,
            loss=None,
            step=None,
            epoch=None,
            rule_context={},
            gauges={},
            marker_lines={},
            exit_line=None,
        )
    if adv.block:
        scan = rules.scan(
            adv.block,
            context=updated.rule_context,
            first_line_of=first_line_of,
            known_series=(updated.gauges, updated.counters),
        )
        stats.scan = scan
        updated = _apply_scan(updated, scan, limits, stats)
        updated = _keep_lines(updated, scan, int(task.processed_bytes), now, tuple(secrets))
        if scan.context != updated.rule_context:
            updated = replace(updated, rule_context=scan.context)
    return updated, stats


def _advance(
    cursor: CursorState,
    preview: LogPreview | LogWindow,
    *,
    final: bool,
    max_line_bytes: int,
    max_full_size: int | None,
    max_growth: int | None,
) -> Advance:
    if isinstance(preview, LogWindow):
        # A file read by analyze: its own bytes, nothing stale or implausible about it.
        return advance_bytes(
            cursor,
            preview.content,
            preview.current_size,
            preview.full_size,
            final=final,
            max_line_bytes=max_line_bytes,
            trusted=True,
        )
    return advance(
        cursor,
        preview.content,
        preview.current_size,
        preview.full_size,
        final=final,
        max_line_bytes=max_line_bytes,
        max_full_size=max_full_size,
        max_growth=max_growth,
    )


def _apply_scan(task: TaskState, scan: ScanResult, limits: Limits, stats: PollStats) -> TaskState:
    changes: dict[str, object] = {}
    stats.series_dropped.update(scan.series_dropped)
    if scan.errors:
        changes["errors"] = _add(task.errors, scan.errors)
    if scan.warnings:
        changes["warnings"] = _add(task.warnings, scan.warnings)
    if scan.exit_code is not None:
        changes["exit_code"] = scan.exit_code
    if scan.loss is not None:
        changes["loss"] = scan.loss.value
        changes["step"] = scan.loss.step
        changes["epoch"] = scan.loss.epoch
    if scan.gauges:
        gauges = dict(task.gauges)
        for key, (value, rule) in scan.gauges.items():
            if _admit(gauges, key, rule, limits, stats):
                gauges[key] = (value, rule)
        changes["gauges"] = gauges
    if scan.counters or scan.loss_count:
        counters = dict(task.counters)
        if scan.loss_count:
            for key, add in (
                (LOSS_VALUES_COUNT, scan.loss_count),
                (LOSS_VALUES_SUM, scan.loss_sum),
            ):
                counters[key] = (counters.get(key, (0.0, ""))[0] + add, "loss_values")
        for key, (increment, rule) in scan.counters.items():
            if _admit(counters, key, rule, limits, stats):
                counters[key] = (counters.get(key, (0.0, rule))[0] + increment, rule)
        changes["counters"] = counters
    return replace(task, **changes) if changes else task  # type: ignore[arg-type]


def _keep_lines(
    task: TaskState, scan: ScanResult, base: int, now: float, secrets: tuple[str, ...]
) -> TaskState:
    """The scan's first error lines and exit code line into the task's evidence; ``base``
    is where the scanned block starts in the log (bytes processed before it)."""
    if not scan.first_lines and scan.exit_code_line is None:
        return task
    changes: dict[str, object] = {}
    if scan.first_lines:
        changes["marker_lines"] = merge_first_lines(
            task.marker_lines,
            scan.first_lines,
            base=base,
            step=task.step,
            seen_at=now,
            secrets=secrets,
        )
    if scan.exit_code_line is not None:
        changes["exit_line"] = make_line(
            scan.exit_code_line, base=base, step=task.step, seen_at=now, secrets=secrets
        )
    return replace(task, **changes)  # type: ignore[arg-type]


def _add(old: Mapping[str, float], new: Mapping[str, int]) -> dict[str, float]:
    total = dict(old)
    for key, count in new.items():
        total[key] = total.get(key, 0.0) + count
    return total


def _admit(
    series: Mapping[SeriesKey, tuple[float, str]],
    key: SeriesKey,
    rule: str,
    limits: Limits,
    stats: PollStats,
) -> bool:
    """Whether a custom series may exist: a rule creates at most ``max_series_per_rule``."""
    if key in series:
        return True
    if sum(1 for _, owner in series.values() if owner == rule) < limits.max_series_per_rule:
        return True
    stats.series_dropped[rule] += 1
    return False


def failed_poll(task: TaskState, *, now: float) -> TaskState:
    """A preview that failed: the task is down, the rest stays as it was."""
    return replace(task, up=False, last_poll=now, failures=task.failures + 1)


def no_log_yet(task: TaskState, *, now: float, final: bool) -> TaskState:
    """The call worked but the task has no log yet (204 / ModelArts.2818)."""
    return replace(task, up=True, last_poll=now, failures=0, final_done=final)
