"""The shipped rules on real logs, labelled by hand: each corpus stays at its level.

``tests/field/`` holds real training logs from public bug reports and forums, labelled
before any rule ran over them (tests/field/LABELLING.md). ``../shared/corpus`` (the
documented formats) and ``../shared/field/cases`` (small inputs of the kinds of fault
found on real logs) come with the project's design material: CI has them, a user's clone
does not, so they are scored when present (and must be, under ``CI=true``).

The levels are the scores the rules reach today (``python bench/corpus_eval.py DIR``
prints them with every miss): a change that loses one fails here, with the misses named.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from modelarts_exporter.rules import RuleSet, load_rules

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import corpus_eval  # noqa: E402

SHARED = ROOT.parent / "shared"

# corpus -> (exit code, last loss, its step, marker F1, telemetry), each a minimum
LEVELS = {
    ROOT / "tests/field/failing": (1.0, 1.0, 1.0, 0.98, 0.85),
    ROOT / "tests/field/successful": (1.0, 0.96, 0.97, 0.9, 0.85),
    SHARED / "corpus": (1.0, 1.0, 1.0, 1.0, 1.0),
    SHARED / "field/cases": (1.0, 1.0, 1.0, 1.0, 1.0),
}


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return RuleSet(load_rules())


@pytest.mark.parametrize("corpus", list(LEVELS), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_each_corpus_stays_at_its_level(ruleset: RuleSet, corpus: Path) -> None:
    if not corpus.is_dir():
        if os.environ.get("CI") == "true" or corpus.is_relative_to(ROOT):
            pytest.fail(f"{corpus} is missing")
        pytest.skip(f"{corpus} is not here (the design material is not part of a clone)")
    tally = corpus_eval.Tally()
    for log in sorted(corpus.rglob("*.log")):
        expected = log.with_name(log.name.removesuffix(".log") + ".expected.json")
        if expected.is_file():
            corpus_eval.evaluate(ruleset, log, json.loads(expected.read_text("utf-8")), tally)
    assert tally.files > 0
    precision = tally.tp / (tally.tp + tally.fp) if tally.tp + tally.fp else 1.0
    recall = tally.tp / (tally.tp + tally.fn) if tally.tp + tally.fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    right = sum(r for r, _ in tally.telemetry.values())
    labelled = sum(n for _, n in tally.telemetry.values())
    scores = (
        tally.exit_ok / tally.files,
        tally.loss_ok / tally.files,
        tally.step_ok / tally.step_pairs if tally.step_pairs else 1.0,
        f1,
        right / labelled if labelled else 1.0,
    )
    misses = "\n".join(f"{log}: {'; '.join(found)}" for log, found in tally.misses.items())
    names = ("exit code", "loss", "step", "F1", "telemetry")
    for name, score, level in zip(names, scores, LEVELS[corpus], strict=True):
        assert score >= level - 1e-9, f"{name} {score:.3f} < {level} on {corpus}:\n{misses}"


def test_the_field_corpus_is_big_enough_and_half_of_it_healthy() -> None:
    failing = list((ROOT / "tests/field/failing").glob("*.expected.json"))
    successful = list((ROOT / "tests/field/successful").glob("*.expected.json"))
    assert len(failing) + len(successful) >= 40
    assert len(successful) >= len(failing) * 0.8
    for path in failing + successful:
        data = json.loads(path.read_text("utf-8"))
        assert data["final_exit_code"] == (data["exit_codes"][-1] if data["exit_codes"] else None)
        assert path.with_name(path.name.replace(".expected.json", ".log")).is_file()
