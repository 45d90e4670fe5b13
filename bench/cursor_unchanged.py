"""What a poll of an unchanged 5 MiB preview window costs (issue: exactly-once cursor).

A task whose log did not grow is polled every interval; that poll must do no regex work.
This measures, per poll of a full 5 MiB window: decoding the preview's JSON body (what
the client does with every answer), placing the window with the cursor, and the whole
pipeline step (``apply_preview``, which would call the rules if anything were new).

    python bench/cursor_unchanged.py
"""

from __future__ import annotations

import json
import random
import statistics
import time

from modelarts_exporter.cursor import CursorState, advance
from modelarts_exporter.modelarts.types import LogPreview
from modelarts_exporter.pipeline import Limits, apply_preview
from modelarts_exporter.rules import RuleSet, load_rules
from modelarts_exporter.store import TaskState

WINDOW = 5 * 1024 * 1024
ROUNDS = 30


def window_text() -> str:
    rng = random.Random(7)
    lines = []
    size = 0
    while size < WINDOW:
        line = (
            f"[2026-11-26 10:{rng.randrange(60):02d}:{rng.randrange(60):02d}] step {len(lines)} "
            f"loss {rng.random():.4f} lr 1.0e-05 tokens/s {rng.randrange(9000)} 训练中\n"
        )
        lines.append(line)
        size += len(line.encode())
    return "".join(lines)


def timed(fn: object, rounds: int = ROUNDS) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    text = window_text()
    size = len(text.encode())
    body = json.dumps({"content": text, "current_size": size, "full_size": size * 3}).encode()
    preview = LogPreview(text, size, size * 3)
    rules = RuleSet(load_rules())
    task, _ = apply_preview(
        TaskState("job", "worker-0"), preview, rules, final=False, now=0.0, limits=Limits()
    )
    state: CursorState = task.cursor
    parse_ms = timed(lambda: json.loads(body))
    cursor_ms = timed(lambda: advance(state, text, size, size * 3))
    scanned: list[bool] = []

    def step() -> None:
        _, stats = apply_preview(task, preview, rules, final=False, now=1.0, limits=Limits())
        scanned.append(stats.scan is not None)

    pipeline_ms = timed(step)
    scan_ms = timed(lambda: rules.scan(text.encode()), rounds=3)
    print(f"unchanged window: {size / 2**20:.1f} MiB, {len(text.splitlines())} lines")
    print(f"  JSON body decode        {parse_ms:7.2f} ms")
    print(f"  cursor (encode + find)  {cursor_ms:7.2f} ms")
    print(f"  pipeline step           {pipeline_ms:7.2f} ms  (rules run: {any(scanned)})")
    print(f"  total per poll          {parse_ms + pipeline_ms:7.2f} ms")
    print(f"for comparison, the rules over the whole window: {scan_ms:.0f} ms")


if __name__ == "__main__":
    main()
