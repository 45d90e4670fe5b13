"""The rules on hostile or odd log blocks, against a realistic one: nothing may be far slower
per MB, hold much more memory, or raise.

    python bench/hostile_scan.py [--mib 1] [--repeat 3]

Each block (``--mib`` MiB, lines at most 64 KiB as the cursor passes them) is scanned by
the shipped rules (``RuleSet.scan``, one RuleSet for all: its caches are shared as in the
exporter), best of ``--repeat``. Printed per block: MB/s, the ratio of its time per MB to
the realistic block's (``bench/rules_throughput.build_window``), and the peak of Python's
allocations during one scan (tracemalloc). A block that raises is printed with the
exception. Goal: every ratio <= 200 and every peak <= 32 MiB (the exit status is 1
otherwise). A realistic log's lines repeat a few shapes, whose reading is remembered; a log
whose every line is new to the vocabulary is read line by line in Python (about 100 us a
line), which is the worst ratio here. Before the fixes below, the worst blocks took hours
(quadratic), raised, or held gigabytes.

The blocks are the kinds an adversarial review found slow or large (2026-11-30): runs of
spaces after a key (a regex split them two ways: quadratic), a key with a digit glued to
it (it poisoned the line-shape cache), odd tqdm frames (``[00:01<:, 1it/s]`` raised),
thousands of frames on one line, an escape every few bytes, 64 KiB lines of pairs.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules_throughput import build_window

from modelarts_exporter.rules import RuleSet, load_rules

LINE = 64 * 1024 - 1
"""The longest line the cursor hands to the rules whole (``max_line_bytes``)."""


def _fill(size: int, line: Callable[[int], bytes]) -> bytes:
    parts, total, i = [], 0, 0
    while total < size:
        part = line(i)
        parts.append(part)
        total += len(part)
        i += 1
    return b"".join(parts)[:size]


def _word(i: int, letters: int = 6) -> str:
    out = []
    for _ in range(letters):
        i, r = divmod(i, 26)
        out.append(string.ascii_lowercase[r])
    return "".join(out)


def _frames(i: int, separator: str) -> bytes:
    frames, n = [], 0
    while n < LINE - 80:
        frame = f"{n % 100:3d}%|██   | {n % 100}/100 [00:01<00:09, 9.9it/s, loss={i % 97 / 100}]"
        frames.append(frame)
        n += len(frame) + 1
    return separator.join(frames).encode() + b"\n"


def blocks(size: int) -> dict[str, bytes]:
    rng = random.Random(20261130)
    return {
        "realistic (rules_throughput)": build_window(size),
        "spaces after a key, 64 KiB lines": _fill(
            size, lambda i: f"loss: 1 {_word(i)}".encode() + b" " * (LINE - 20) + b"x\n"
        ),
        "padded metric table": _fill(
            size, lambda i: f"| {_word(i)}_loss: {i % 7}.5 | note".encode() + b" " * 200 + b"|\n"
        ),
        "a nan loss on every line (diverged)": _fill(
            size,
            lambda i: f" iteration {i:8d}/  500000 | lm loss: nan | loss scale: 1.0 |\n".encode(),
        ),
        "a distinct key on every line": _fill(
            size, lambda i: f"{_word(i)}_loss: 0.{i % 1000} step {i}\n".encode()
        ),
        "digits glued to keys": _fill(
            size, lambda i: f"{{'{i % 10}loss': 0.5, 'loss': 0.{i}, 'epoch': 1}}\n".encode()
        ),
        "odd tqdm frames": _fill(
            size, lambda i: f"{i % 9}/9 [00:01<:, {i % 3}.?it/s, loss=0.5]\n".encode()
        ),
        "frames on one line": _fill(size, lambda i: _frames(i, " ")),
        "frames glued with CR": _fill(size, lambda i: _frames(i, "\r")),
        "an escape every few bytes": _fill(
            size, lambda i: b"\x1b[32mok\x1b[0m " * 12 + f"step {i} loss 0.5\n".encode()
        ),
        "64 KiB lines of loss pairs": _fill(size, lambda i: b"loss: 1 " * (LINE // 8) + b"\n"),
        "random bytes": bytes(rng.getrandbits(8) for _ in range(size)),
    }


def measure(rules: RuleSet, block: bytes, repeat: int) -> tuple[float, int]:
    """(best seconds of ``repeat`` scans, peak bytes allocated during one)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        rules.scan(block)
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    rules.scan(block)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = int(args.mib * (1 << 20))
    rules = RuleSet(load_rules())
    baseline = None
    worst_ratio, worst_peak = 0.0, 0.0
    print(f"{'block':38} {'MB/s':>8} {'x time/MB':>10} {'peak MiB':>9}")
    for name, block in blocks(size).items():
        try:
            seconds, peak = measure(rules, block, args.repeat)
        except Exception as exc:  # noqa: BLE001 - printed: a raise is a finding
            print(f"{name:38} raised {type(exc).__name__}: {exc}")
            worst_ratio = float("inf")
            continue
        per_mb = seconds / (len(block) / 1e6)
        baseline = baseline or per_mb
        ratio = per_mb / baseline
        worst_ratio = max(worst_ratio, ratio)
        worst_peak = max(worst_peak, peak / (1 << 20))
        rate = len(block) / 1e6 / seconds
        print(f"{name:38} {rate:8.1f} {ratio:10.1f} {peak / (1 << 20):9.1f}")
    met = worst_ratio <= 200 and worst_peak <= 32
    print(
        f"worst: {worst_ratio:.1f}x the realistic block's time per MB, peak "
        f"{worst_peak:.1f} MiB: {'met' if met else 'NOT met'} (<= 200x, <= 32 MiB)"
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
