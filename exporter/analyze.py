"""``analyze``: local log files through the exporter's own cursor and rules, streamed.

A file is read in blocks (``BLOCK_BYTES``) and each block goes through the same path as
a poll of the exporter (``pipeline.apply_preview``: the cursor takes the whole lines of
the window, the rules scan them, the task's state adds them up), as if the log were
previewed while it grew. So a line cut between two blocks, ``\\r\\n`` cut between its two
bytes, invalid UTF-8 and the step/epoch context of earlier lines give what the exporter
gives, and memory stays flat whatever the file's size: a block, the unfinished line the
cursor holds back, and the counters.

Each byte is decoded once, to check that it is UTF-8 (a block of ASCII is not even
decoded); a block that is not valid UTF-8 is decoded with U+FFFD in place of the invalid
bytes and encoded back, as ModelArts' preview shows such a log. A character cut by the
end of a read waits for the next read. A gzip file (or gzip on stdin) is read
decompressed, by its first bytes.

Sizes as the cursor counts them: a U+FFFD stands for one log byte. Where the file holds
U+FFFD characters (invalid bytes, or the character itself) that differs from the file's
size; the final state gets the file's true size.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from stat import S_ISREG
from typing import IO, Any

from .pipeline import Limits, LogWindow, apply_preview
from .rules import RuleSet
from .store import TaskState

BLOCK_BYTES = 1 << 20
"""How much of a file one window holds: large enough that the per-window Python work
does not count, small enough that a few copies of it are nothing next to the process."""

GZIP_MAGIC = b"\x1f\x8b"
_REPLACEMENT = "\ufffd".encode()


@dataclass(slots=True)
class FileReport:
    """What ``analyze`` found in one file."""

    name: str
    """The file as given on the command line (``-`` for stdin)."""
    task: TaskState
    first_lines: dict[tuple[str, str], int] = field(default_factory=dict)
    """(severity, marker) -> number (from 1) of the first line where the marker counted,
    as ``grep -n`` and editors number them: each ``\n`` ends a line (a progress bar
    redrawn with ``\r`` stays on its line, though the rules read each frame)."""
    newlines: int = 0
    """``\n`` in the bytes taken so far (the numbering of ``first_lines``)."""


class LogSource:
    """A log file's bytes in blocks, decompressed when it is gzip (by its first bytes).

    ``size`` is the file's size when known (a regular file), ``consumed`` how many of
    its bytes were read so far (compressed bytes, for gzip): together the progress.
    Raises OSError, or ValueError for a ``.gz`` file that is not valid gzip.
    """

    def __init__(self, name: str, stream: IO[bytes], *, block_bytes: int = BLOCK_BYTES) -> None:
        self.name = name
        self._stream = stream
        self.block_bytes = block_bytes
        self.consumed = 0
        self.size: int | None = None
        try:
            stat: os.stat_result | None = os.fstat(stream.fileno())
        except (OSError, AttributeError, io.UnsupportedOperation):
            stat = None
        if stat is not None and S_ISREG(stat.st_mode):
            self.size = stat.st_size

    @classmethod
    def open(cls, name: str, *, block_bytes: int = BLOCK_BYTES) -> LogSource:
        """``name`` opened for reading (``-``: stdin); OSError when it cannot be."""
        if name == "-":
            return cls(name, sys.stdin.buffer, block_bytes=block_bytes)
        return cls(name, open(name, "rb", buffering=0), block_bytes=block_bytes)

    def close(self) -> None:
        if self._stream is not sys.stdin.buffer:
            self._stream.close()

    def _read(self) -> bytes:
        data = self._stream.read(self.block_bytes) or b""
        self.consumed += len(data)
        return data

    def blocks(self) -> Iterator[bytes]:
        """The log's bytes, decompressed, in blocks of at most ``block_bytes``."""
        first = self._read()
        if first.startswith(GZIP_MAGIC):
            yield from self._gunzip(first)
            return
        if self.name.endswith(".gz"):
            raise ValueError("not a gzip file, though its name ends with .gz")
        data = first
        while data:
            yield data
            data = self._read()

    def _gunzip(self, data: bytes) -> Iterator[bytes]:
        """Decompress gzip members one after another, as ``gunzip`` does (zero padding
        after the last one is allowed), never more than a block of output at a time."""
        decompressor: Any = None  # None: between members
        while True:
            if not data:
                data = self._read()
                if not data:
                    break
            if decompressor is None:
                data = data.lstrip(b"\0")
                if not data:
                    continue
                decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                out = decompressor.decompress(data, self.block_bytes)
            except zlib.error as exc:
                raise ValueError(f"not a valid gzip file ({exc})") from None
            if out:
                yield out
            if decompressor.eof:
                data, decompressor = decompressor.unused_data, None
            else:
                data = decompressor.unconsumed_tail
        if decompressor is not None:
            raise ValueError("not a valid gzip file (the compressed data ends early)")


_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}]"
_COUNTER = "{desc}: {n_fmt}B [{elapsed}, {rate_fmt}]"
"""tqdm formats: bytes done / total, MB/s, time left (ETA); without a total (stdin), no ETA."""


class Progress:
    """A progress bar on stderr (tqdm: bytes done / total, MB/s, ETA), shown only when
    stderr is a terminal and the work has lasted ``delay`` seconds; silent otherwise.

    tqdm is imported only when the bar is shown, so short runs do not pay for it.
    """

    def __init__(
        self,
        total: int | None,
        *,
        enabled: bool,
        delay: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        stream: IO[str] | None = None,
    ) -> None:
        self.total = total
        self.enabled = enabled
        self.delay = delay
        self.clock = clock
        self.stream = stream
        self.started = clock()
        self.done = 0
        self.bar: Any = None

    @classmethod
    def for_stderr(cls, total: int | None) -> Progress:
        return cls(total, enabled=sys.stderr.isatty())

    def update(self, done: int, label: str) -> None:
        """``done`` bytes (of ``total``) are processed; ``label`` names the file."""
        step, self.done = done - self.done, done
        if not self.enabled:
            return
        if self.bar is None:
            if self.clock() - self.started < self.delay:
                return
            from tqdm import tqdm  # noqa: PLC0415 (only when a bar is shown)

            self.bar = tqdm(
                total=self.total,
                initial=done,
                desc=label,
                unit="B",
                unit_scale=True,
                dynamic_ncols=True,
                leave=False,
                file=self.stream or sys.stderr,
                bar_format=_BAR if self.total else _COUNTER,
            )
            return
        self.bar.set_description_str(label, refresh=False)
        self.bar.update(step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def keep_freed_memory() -> None:
    """Ask glibc's allocator to keep freed memory for reuse (``mallopt``).

    Each block leaves a few MiB of buffers (the read, the decoded text, the lines) that
    are freed before the next block. By default glibc gives such memory back to the
    kernel and the next block faults it in again, page by page: about a third of the
    system time of a large ``analyze``. Kept, the same few MiB serve every block (the peak
    RSS does not change). Best effort: nothing happens where there is no glibc.
    """
    try:
        import ctypes  # noqa: PLC0415 (only for large inputs)

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return
    mallopt(_M_TRIM_THRESHOLD, 128 << 20)  # keep up to 128 MiB free at the heap's top
    mallopt(_M_MMAP_THRESHOLD, 16 << 20)  # allocations below 16 MiB come from the heap


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
"""glibc's ``mallopt`` parameters (malloc.h)."""


def analyze_log(
    source: LogSource,
    task_id: str,
    rules: RuleSet,
    *,
    job_id: str = "local",
    now: float,
    limits: Limits | None = None,
    on_block: Callable[[int], None] | None = None,
) -> FileReport:
    """Stream one log through the cursor and the rules; the task's final state and the
    first line of each marker. ``on_block(bytes_read)`` is called after each block."""
    limits = limits or Limits()
    task = TaskState(job_id, task_id)
    report = FileReport(source.name, task)
    unseen: set[tuple[str, str]] = {
        (r.kind, r.marker) for r in rules.rules if r.kind in ("error", "warning")
    }
    carry = b""  # the start of a character cut by the end of a read
    size = 0  # log bytes so far, as the cursor counts them
    real = 0  # log bytes so far, as they are
    for raw in source.blocks():
        real += len(raw)
        data = carry + raw if carry else raw
        new, used = _utf8(data, final=False)
        carry = data[used:]
        size += _log_len(new)
        task = _poll(task, new, size, rules, report, unseen, now=now, limits=limits)
        if on_block is not None:
            on_block(source.consumed)
    new = _utf8(carry, final=True)[0] if carry else b""
    size += _log_len(new)
    task = _poll(task, new, size, rules, report, unseen, now=now, limits=limits, final=True)
    # The whole file was the window; a U+FFFD counted one byte, the file has its own.
    report.task = replace(
        task,
        log_size=float(real),
        window_bytes=float(real),
        processed_bytes=task.processed_bytes + (real - size),
    )
    return report


def _poll(
    task: TaskState,
    new: bytes,
    size: int,
    rules: RuleSet,
    report: FileReport,
    unseen: set[tuple[str, str]],
    *,
    now: float,
    limits: Limits,
    final: bool = False,
) -> TaskState:
    """One window: the line the cursor held back, then the new bytes."""
    pending = task.cursor.pending
    window = pending + new if pending else new
    task, stats = apply_preview(
        task,
        LogWindow(window, size - task.cursor.offset, size),
        rules,
        final=final,
        now=now,
        limits=limits,
        first_line_of=unseen,
    )
    if stats.scan is not None and stats.scan.first_line_index:
        for key, index in stats.scan.first_line_index.items():
            # the scan's lines are the window's (\r ends one too); a person's end at \n
            report.first_lines[key] = report.newlines + _newlines_before(window, index) + 1
            unseen.discard(key)
    taken = len(window) - len(task.cursor.pending)  # what is held back is the window's end
    report.newlines += window.count(b"\n", 0, taken)
    return task


_LINE_END = re.compile(rb"\r\n?|\n")


def _newlines_before(window: bytes, index: int) -> int:
    """``\n`` in ``window`` before the start of its line ``index`` (from 0), its lines
    ending at ``\r\n``, ``\r`` or ``\n``."""
    if index == 0:
        return 0
    if b"\r" not in window:
        return index
    for number, end in enumerate(_LINE_END.finditer(window), 1):
        if number == index:
            return window.count(b"\n", 0, end.end())
    return window.count(b"\n")


def _utf8(data: bytes, *, final: bool) -> tuple[bytes, int]:
    """(the UTF-8 to scan, how many bytes of ``data`` it covers): ``data`` itself when
    valid (ASCII is not even decoded), else re-encoded with U+FFFD for invalid bytes.
    Unless ``final``, a character cut at the end is left for the next read."""
    if data.isascii():
        return data, len(data)
    try:
        used = codecs.utf_8_decode(data, "strict", final)[1]
    except UnicodeDecodeError:
        text, used = codecs.utf_8_decode(data, "replace", final)
        return text.encode(), used
    return (data if used == len(data) else data[:used]), used


def _log_len(data: bytes) -> int:
    """Log bytes behind ``data`` as the cursor counts them: a U+FFFD is one."""
    if b"\xef" not in data or _REPLACEMENT not in data:  # a memchr rules most blocks out
        return len(data)
    return len(data) - 2 * data.count(_REPLACEMENT)
