"""Measure the shipped rules against a labelled corpus of real training logs.

    python bench/corpus_eval.py CORPUS_DIR [--rules PATH]... [--no-default-rules]

Every ``NAME.log`` under CORPUS_DIR (subfolders included) that has a
``NAME.expected.json`` beside it goes through the real engine (``modelarts_exporter.rules``), the
whole file as one block, normalised as the exporter does (``RuleSet.scan``). Printed:

* final exit code accuracy (``final_exit_code``; "none printed" must also agree);
* last-loss accuracy: the value of the last ``loss`` record, within 1e-6 relative, NaN
  equal to NaN, "no loss" equal to "no loss"; the step (and the epoch) over the files
  whose last loss record has one: right when both the value and the step are (a step the
  record leaves out is not scored: the line gives none, or the labels chose not to say);
* marker precision / recall / F1, micro-averaged over the set of error and warning
  markers of each file;
* the misses, file by file.

Each expected file holds ``final_exit_code``, the ``loss`` records (``{step, epoch,
value}``, ``"nan"``/``"inf"`` as strings) and the sets ``errors`` and ``warnings``.
Goals: >= 98% exit codes, >= 95% last losses, marker F1 >= 0.95; the exit status is 1
when one is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelarts_exporter.rules import RuleSet, ScanResult, load_rules
from modelarts_exporter.rules.telemetry import GAUGES

_TELEMETRY_METRICS = {gauge.concept: gauge.metric for gauge in GAUGES}
_TELEMETRY_METRICS["step_duration_seconds"] = _TELEMETRY_METRICS["step_time"]
_TELEMETRY_METRICS["eta_seconds"] = _TELEMETRY_METRICS["eta"]

GOAL_EXIT, GOAL_LOSS, GOAL_F1 = 0.98, 0.95, 0.95


@dataclass
class Tally:
    files: int = 0
    exit_ok: int = 0
    loss_ok: int = 0
    loss_files: int = 0
    loss_files_ok: int = 0
    step_pairs: int = 0
    step_ok: int = 0
    epoch_pairs: int = 0
    epoch_ok: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    telemetry: dict[str, list[int]] = field(default_factory=dict)
    """Telemetry concept -> [right, labelled]."""
    misses: dict[str, list[str]] = field(default_factory=dict)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)  # "nan" / "inf" strings included


def _same(want: float | None, got: float | None, rel: float = 1e-6) -> bool:
    if want is None or got is None:
        return want is None and got is None
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    if math.isinf(want) or math.isinf(got):
        return want == got
    return math.isclose(want, got, rel_tol=rel, abs_tol=1e-12)


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def _markers(result: ScanResult) -> set[tuple[str, str]]:
    found = {("error", m) for m, n in result.errors.items() if n}
    return found | {("warning", m) for m, n in result.warnings.items() if n}


def evaluate(ruleset: RuleSet, log: Path, expected: dict[str, Any], tally: Tally) -> None:
    result = ruleset.scan(log.read_bytes())
    misses: list[str] = []
    tally.files += 1

    want_code = _number(expected.get("final_exit_code"))
    if _same(want_code, result.exit_code, rel=0.0):
        tally.exit_ok += 1
    else:
        misses.append(f"exit code: expected {_fmt(want_code)}, got {_fmt(result.exit_code)}")

    records = expected.get("loss") or []
    want = records[-1] if records else None
    got = result.loss
    want_value = _number(want["value"]) if want else None
    if _same(want_value, got.value if got else None):
        tally.loss_ok += 1
        tally.loss_files_ok += bool(want)
    else:
        misses.append(
            f"last loss: expected {_fmt(want_value)}, got {_fmt(got.value if got else None)}"
        )
    tally.loss_files += bool(want)
    if want and "step" in want:
        tally.step_pairs += 1
        want_step = _number(want.get("step"))
        got_step = got.step if got else None
        if got and _same(want_value, got.value) and _same(want_step, got_step, rel=0.0):
            tally.step_ok += 1
        else:
            misses.append(f"step: expected {_fmt(want_step)}, got {_fmt(got_step)}")
    if want and "epoch" in want:
        tally.epoch_pairs += 1
        want_epoch = _number(want.get("epoch"))
        got_epoch = got.epoch if got else None
        if got and _same(want_value, got.value) and _same(want_epoch, got_epoch):
            tally.epoch_ok += 1
        else:
            misses.append(f"epoch: expected {_fmt(want_epoch)}, got {_fmt(got_epoch)}")

    for concept, labelled in (expected.get("telemetry") or {}).items():
        metric = _TELEMETRY_METRICS.get(concept)
        if metric is None:
            continue
        want_value = _number(labelled)
        gauge = result.gauges.get((metric, ()))
        got_value = gauge[0] if gauge is not None else None
        score = tally.telemetry.setdefault(concept, [0, 0])
        score[1] += 1
        if _same(want_value, got_value, rel=1e-3):
            score[0] += 1
        else:
            misses.append(f"{concept}: expected {_fmt(want_value)}, got {_fmt(got_value)}")

    want_markers = {("error", m) for m in expected.get("errors", [])}
    want_markers |= {("warning", m) for m in expected.get("warnings", [])}
    got_markers = _markers(result)
    tally.tp += len(want_markers & got_markers)
    tally.fp += len(got_markers - want_markers)
    tally.fn += len(want_markers - got_markers)
    if want_markers - got_markers:
        missing = ", ".join(sorted(m for _, m in want_markers - got_markers))
        misses.append(f"markers missed: {missing}")
    if got_markers - want_markers:
        extra = ", ".join(sorted(m for _, m in got_markers - want_markers))
        misses.append(f"markers extra: {extra}")
    if misses:
        tally.misses[str(log)] = misses


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100.0 * part / whole:.1f}%)" if whole else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="folder of NAME.log + NAME.expected.json")
    parser.add_argument("--rules", action="append", default=[], metavar="PATH")
    parser.add_argument("--no-default-rules", action="store_true")
    args = parser.parse_args(argv)

    rules = load_rules(args.rules, include_default=not args.no_default_rules)
    ruleset = RuleSet(rules)
    tally = Tally()
    for log in sorted(args.corpus.rglob("*.log")):
        expected_file = log.with_name(log.name.removesuffix(".log") + ".expected.json")
        if expected_file.is_file():
            evaluate(ruleset, log, json.loads(expected_file.read_text("utf-8")), tally)
    if not tally.files:
        print(f"{args.corpus}: no NAME.log with a NAME.expected.json", file=sys.stderr)
        return 2

    precision = tally.tp / (tally.tp + tally.fp) if tally.tp + tally.fp else 1.0
    recall = tally.tp / (tally.tp + tally.fn) if tally.tp + tally.fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    exit_rate = tally.exit_ok / tally.files
    loss_rate = tally.loss_ok / tally.files
    print(f"corpus {args.corpus}: {tally.files} labelled logs, {len(rules)} rules")
    print(f"  final exit code      {_pct(tally.exit_ok, tally.files)}   goal >= 98%")
    print(
        f"  last loss value      {_pct(tally.loss_ok, tally.files)}   goal >= 95%"
        f"   (files with a loss: {_pct(tally.loss_files_ok, tally.loss_files)})"
    )
    print(
        f"  last loss step       {_pct(tally.step_ok, tally.step_pairs)}"
        "   (last losses that print a step: value and step right)"
    )
    print(
        f"  last loss epoch      {_pct(tally.epoch_ok, tally.epoch_pairs)}   (the same for epochs)"
    )
    print(
        f"  markers (micro)      precision {precision:.3f}  recall {recall:.3f}  F1 {f1:.3f}"
        f"   goal F1 >= 0.95   (tp {tally.tp}, fp {tally.fp}, fn {tally.fn})"
    )
    if tally.telemetry:
        right = sum(r for r, _ in tally.telemetry.values())
        labelled = sum(n for _, n in tally.telemetry.values())
        print(
            f"  telemetry (last values) {_pct(right, labelled)}: "
            + ", ".join(f"{c} {r}/{n}" for c, (r, n) in sorted(tally.telemetry.items()))
        )
    if tally.misses:
        print(f"\nmisses ({len(tally.misses)} files):")
        base = args.corpus
        for log, misses in tally.misses.items():
            name = Path(log).relative_to(base) if Path(log).is_relative_to(base) else log
            print(f"  {name}")
            for miss in misses:
                print(f"      {miss}")
    met = exit_rate >= GOAL_EXIT and loss_rate >= GOAL_LOSS and f1 >= GOAL_F1
    print("\ngoals met" if met else "\ngoals NOT met")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
