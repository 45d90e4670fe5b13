"""``analyze`` against the floor: a process that only reads, decodes and counts lines.

    python bench/analyze_floor.py [--sizes 50,200] [--pairs 3]

For each size (in MB), a child process builds a realistic log with
``rules_throughput.build_window`` (seeded: noise, tqdm frames redrawn with CR, CRLF and
ANSI colour lines, loss lines of seven frameworks, markers, a failing end) into a
temporary file. Then, interleaved, ``--pairs`` times each: the *floor* (a Python process
that reads the file in 1 MiB blocks, decodes them as UTF-8 and counts the ``\\n``) and
``python -m modelarts_exporter analyze FILE`` (start-up, imports and rule loading
included; output to a file). The other load of the machine hits both alike; bytecode is
cached, as an installed package runs, and the file is in the page cache (a warm-up run).

Printed per size: the median wall time of each, analyze's MB/s, the ratio of analyze's
wall time to the floor's (median of the pairs' ratios, and each pair's; the same for CPU
time, which the machine's other load disturbs less), and each child's peak RSS
(``os.wait4``'s ``ru_maxrss``). A child's peak counts the memory of the process that
started it (the kernel keeps the larger of the two across ``exec``), so this process
stays small: it never holds a log.

Goals (issue 15): on the 200 MB log, peak RSS <= 150 MB and ratio <= 4. The exit status
is 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GOAL_RATIO, GOAL_RSS_MB, GOAL_SIZE_MB = 4.0, 150.0, 200
BENCH = Path(__file__).resolve().parent

FLOOR = r"""
import codecs
import sys

decoder = codecs.getincrementaldecoder("utf-8")("replace")
lines = 0
with open(sys.argv[1], "rb", buffering=0) as f:
    while block := f.read(1 << 20):
        lines += decoder.decode(block).count("\n")
lines += decoder.decode(b"", final=True).count("\n")
print(lines)
"""

BUILD = r"""
import sys

sys.path.insert(0, sys.argv[1])
from rules_throughput import build_window

with open(sys.argv[2], "wb") as f:
    f.write(build_window(int(sys.argv[3])))
"""


@dataclass
class Run:
    wall: float
    """seconds"""
    cpu: float
    """user + system seconds"""
    rss: float
    """peak resident set, MB"""
    out: bytes


@dataclass
class Figures:
    floor: float
    analyze: float
    ratio: float
    ratios: list[float]
    cpu_ratio: float
    cpu_ratios: list[float]
    floor_rss: float
    analyze_rss: float


def run(argv: list[str], env: dict[str, str]) -> Run:
    """One child process, to its end."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise RuntimeError(f"{argv} exited with {child.returncode}")
        out.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        return Run(wall, cpu, usage.ru_maxrss / 1024, out.read())  # ru_maxrss: KiB on Linux


def measure(log: Path, pairs: int, env: dict[str, str], floor: Path) -> Figures:
    floor_argv = [sys.executable, str(floor), str(log)]
    analyze_argv = [sys.executable, "-m", "modelarts_exporter", "analyze", str(log)]
    run(floor_argv, env)  # warm-up: bytecode compiled, the file in the page cache
    if b"modelarts_task_exit_code" not in run(analyze_argv, env).out:
        raise RuntimeError("analyze printed no exit code")
    floors, analyzes = [], []
    for _ in range(pairs):
        floors.append(run(floor_argv, env))
        analyzes.append(run(analyze_argv, env))
    ratios = [a.wall / f.wall for f, a in zip(floors, analyzes, strict=True)]
    cpu_ratios = [a.cpu / f.cpu for f, a in zip(floors, analyzes, strict=True)]
    return Figures(
        floor=statistics.median(f.wall for f in floors),
        analyze=statistics.median(a.wall for a in analyzes),
        ratio=statistics.median(ratios),
        ratios=ratios,
        cpu_ratio=statistics.median(cpu_ratios),
        cpu_ratios=cpu_ratios,
        floor_rss=max(f.rss for f in floors),
        analyze_rss=max(a.rss for a in analyzes),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200", help="log sizes in MB (default 50,200)")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved pairs (default 3)")
    args = parser.parse_args(argv)
    met = True
    with tempfile.TemporaryDirectory(prefix="analyze-floor-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        floor = Path(tmp) / "floor.py"
        floor.write_text(FLOOR)
        build = Path(tmp) / "build.py"
        build.write_text(BUILD)
        print(f"{args.pairs} interleaved pairs per size; wall times are medians")
        for size in (int(s) for s in args.sizes.split(",")):
            log = Path(tmp) / f"worker-{size}mb.log"
            run([sys.executable, str(build), str(BENCH), str(log), str(size * 1_000_000)], env)
            got = measure(log, args.pairs, env, floor)
            megabytes = log.stat().st_size / 1e6
            print(f"{size} MB log:")
            print(
                f"  floor (read, decode, count lines)  {got.floor:6.2f} s   "
                f"peak RSS {got.floor_rss:6.1f} MB"
            )
            print(
                f"  modelarts-exporter analyze         {got.analyze:6.2f} s   "
                f"peak RSS {got.analyze_rss:6.1f} MB   {megabytes / got.analyze:6.1f} MB/s"
            )
            pairs = ", ".join(f"{r:.2f}" for r in got.ratios)
            print(f"  analyze / floor, wall time         {got.ratio:6.2f}x  (pairs: {pairs})")
            pairs = ", ".join(f"{r:.2f}" for r in got.cpu_ratios)
            print(f"  analyze / floor, CPU time          {got.cpu_ratio:6.2f}x  (pairs: {pairs})")
            log.unlink()
            if size >= GOAL_SIZE_MB:
                ok = got.ratio <= GOAL_RATIO and got.analyze_rss <= GOAL_RSS_MB
                met = met and ok
                print(
                    f"  goals: ratio <= {GOAL_RATIO:.0f}x, peak RSS <= {GOAL_RSS_MB:.0f} MB: "
                    + ("met" if ok else "NOT met")
                )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
