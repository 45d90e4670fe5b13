"""What your rules cost: measured when they are checked, so an expensive pattern is known
before it slows every poll.

Two measures, both printed by ``rules check`` as warnings (the rules still load):

* the size of the RE2 program of each of your patterns: bounded repetitions (``a.{40}Z``)
  and long alternations multiply it, and every rule's program is part of the automaton
  that prefilters each chunk of every log;
* the time the rule set takes over a synthetic 1 MiB training log (the simulator's mix of
  frameworks), with and without your rules, and your rules' own share of it; with no
  other rules (``--no-default-rules``) only your rules' speed, in MB/s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from .engine import RuleSet
from .model import Rule

PROGRAM_SIZE_WARNING = 250
"""RE2 program size (instructions) above which a pattern of yours is reported (a
format rule of the shipped files is 10 to 200; the vocabulary's generated prefilters are
larger, but are plain alternations)."""

SLOWDOWN_WARNING = 1.5
"""Your rules are reported when they make the scan this many times slower."""

_BLOCK_BYTES = 1 << 20


def _synthetic_block() -> bytes:
    from ..simulator.logs import scale_block  # noqa: PLC0415 (only when rules are checked)

    return scale_block("rule-cost", _BLOCK_BYTES, time.time()).data


def _best_seconds(
    ruleset: RuleSet, block: bytes, repeat: int = 3
) -> tuple[float, dict[str, float]]:
    best, seconds = float("inf"), {}
    for _ in range(repeat):
        started = time.perf_counter()
        result = ruleset.scan(block)
        elapsed = time.perf_counter() - started
        if elapsed < best:
            best, seconds = elapsed, result.rule_seconds
    return best, seconds


def rule_cost_warnings(
    shipped: Sequence[Rule], yours: Sequence[Rule], *, block: bytes | None = None
) -> list[str]:
    """One line per costly finding about ``yours`` (rules loaded after ``shipped``)."""
    warnings: list[str] = []
    for rule in yours:
        size = rule.regex.programsize
        if size > PROGRAM_SIZE_WARNING:
            warnings.append(
                f"{rule.source} ({rule.name}): pattern: an RE2 program of {size} instructions "
                f"(over {PROGRAM_SIZE_WARNING}); it is part of the prefilter every chunk of "
                "every log goes through. Bounded repetitions such as .{40} are the usual "
                "cause: use .* or .+ between literals instead"
            )
    if not yours:
        return warnings
    block = block if block is not None else _synthetic_block()
    megabytes = len(block) / 1e6
    if not shipped:
        # Nothing to compare with (--no-default-rules): a ratio to scanning with no rule
        # at all would only measure the scan's fixed cost.
        total, _ = _best_seconds(RuleSet(yours), block)
        warnings.append(
            f"cost: {megabytes / total:.0f} MB/s with your {len(yours)} "
            f"rule{'' if len(yours) == 1 else 's'} (and no other) on a synthetic 1 MiB "
            "training log"
        )
        return warnings
    base, _ = _best_seconds(RuleSet(shipped), block)
    total, seconds = _best_seconds(RuleSet([*shipped, *yours]), block)
    warnings.append(
        f"cost: {megabytes / total:.0f} MB/s with your {len(yours)} "
        f"rule{'' if len(yours) == 1 else 's'}, "
        f"{megabytes / base:.0f} MB/s without ({total / base:.2f}x the time) on a synthetic "
        "1 MiB training log"
    )
    if base > 0 and total > SLOWDOWN_WARNING * base:
        names = {rule.name for rule in yours}
        costly = sorted(((s, n) for n, s in seconds.items() if n in names), reverse=True)[:3]
        warnings.append(
            f"your rules make scanning {total / base:.1f}x slower: {megabytes / total:.0f} MB/s "
            f"instead of {megabytes / base:.0f} MB/s on a synthetic 1 MiB training log"
            + (
                " (slowest: " + ", ".join(f"{n} {s * 1000:.1f} ms" for s, n in costly) + ")"
                if costly
                else ""
            )
        )
    return warnings
