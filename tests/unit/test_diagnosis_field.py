"""Failure diagnosis on the hand-labelled field corpus stays at its level.

``tests/field/failing/*.expected.json`` carry a ``failure_reason`` written by reading each
log (tests/field/LABELLING.md); ``bench/diagnosis_eval.py`` scores the diagnosis against
them and checks that no successful run is diagnosed. The levels are today's figures
(``python bench/diagnosis_eval.py`` prints them with every miss): a change that loses one
fails here, with the misses named.
"""

from __future__ import annotations

import sys
from pathlib import Path

from modelarts_exporter.rules import RuleSet, load_rules

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import diagnosis_eval  # noqa: E402

ACCURACY = 1.0
"""Share of failing/ logs whose reason equals the label."""
SPECIFICITY = 1.0
"""Share of successful/ logs (job Completed) given no diagnosis."""


def test_failure_reasons_of_the_field_corpus_stay_at_their_level() -> None:
    score = diagnosis_eval.score(RuleSet(load_rules()), ROOT / "tests" / "field")
    misses = "\n".join(score.misses)
    assert score.failing >= 20
    assert score.successful >= 20
    assert score.accuracy >= ACCURACY - 1e-9, f"{score.accuracy:.3f}:\n{misses}"
    assert score.specificity >= SPECIFICITY - 1e-9, f"{score.specificity:.3f}:\n{misses}"
