"""Score failure diagnosis against hand-labelled failing and successful real logs.

    python bench/diagnosis_eval.py [FIELD_DIR]        (default: tests/field)

Each ``NAME.log`` of ``FIELD_DIR/failing`` with a ``NAME.expected.json`` that holds a
``failure_reason`` goes through the exporter's real pipeline as one final preview (the
rules, the kept evidence lines), then through ``diagnosis.explain`` as a failed task (the
runs are known to have failed: many print no exit code). Its reason must equal the label.

Each log of ``FIELD_DIR/successful`` goes through ``diagnosis.diagnose`` as the task of a
Completed job: it must give no diagnosis. Printed as well, for information: how many of
them *would* get a cause from their markers if their job had failed (a marker firing on a
healthy log).

The field labels say ``unknown`` where only a plain exception (``RuntimeError: The size
of tensor a ...``, ``ValueError: ...``, no specific marker) says why; the diagnosis names
``python_exception`` (category ``code``) there, with the exception line as evidence. The
second figure counts that as agreement.

Printed: reason accuracy on failing/ (with a confusion of the misses), the share of
successful/ with no diagnosis, and the figures the test keeps (tests/unit/test_diagnosis_field.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelarts_exporter.diagnosis import Diagnosis, diagnose, explain
from modelarts_exporter.modelarts.types import LogPreview
from modelarts_exporter.pipeline import Limits, apply_preview
from modelarts_exporter.rules import RuleSet, load_rules
from modelarts_exporter.store import TaskState

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Score:
    failing: int = 0
    failing_ok: int = 0
    failing_ok_generic: int = 0
    successful: int = 0
    successful_ok: int = 0
    successful_with_cause: int = 0
    misses: list[str] = field(default_factory=list)
    missed: dict[str, str] = field(default_factory=dict)
    """Log name -> the reason given where it differs from the label (or was diagnosed
    although successful)."""
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def accuracy(self) -> float:
        return self.failing_ok / self.failing if self.failing else 1.0

    @property
    def accuracy_generic(self) -> float:
        """Accuracy when a generic ``python_exception`` counts as ``unknown``: the field
        labels give ``unknown`` where only a plain exception (no specific marker) says why."""
        return self.failing_ok_generic / self.failing if self.failing else 1.0

    @property
    def specificity(self) -> float:
        return self.successful_ok / self.successful if self.successful else 1.0


def run_log(ruleset: RuleSet, data: bytes, name: str = "task") -> TaskState:
    """The task state after one final preview of the whole log."""
    preview = LogPreview(data.decode("utf-8", "replace"), len(data), len(data))
    task, _ = apply_preview(
        TaskState("local", name), preview, ruleset, final=True, now=0.0, limits=Limits()
    )
    return task


def _labelled(folder: Path) -> list[tuple[Path, dict[str, object]]]:
    found = []
    for log in sorted(folder.glob("*.log")):
        expected = log.with_name(log.name.removesuffix(".log") + ".expected.json")
        if expected.is_file():
            found.append((log, json.loads(expected.read_text("utf-8"))))
    return found


def score(ruleset: RuleSet, field_dir: Path) -> Score:
    result = Score()
    for log, labels in _labelled(field_dir / "failing"):
        want = labels.get("failure_reason")
        if not isinstance(want, str):
            continue
        got: Diagnosis = explain(run_log(ruleset, log.read_bytes(), log.name))
        result.failing += 1
        if got.reason == want or (got.reason, want) == ("python_exception", "unknown"):
            result.failing_ok_generic += 1
        if got.reason == want:
            result.failing_ok += 1
        else:
            result.confusion[(want, got.reason)] += 1
            result.missed[log.name] = got.reason
            line = got.evidence[0].text[:100] if got.evidence else ""
            result.misses.append(f"{log.name}: expected {want}, got {got.reason} ({line!r})")
    for log, _labels in _labelled(field_dir / "successful"):
        task = run_log(ruleset, log.read_bytes(), log.name)
        result.successful += 1
        found = diagnose(task, "Completed")
        if found is None:
            result.successful_ok += 1
        else:
            result.misses.append(f"{log.name} (successful): got {found.reason}")
            result.missed[log.name] = found.reason
        if explain(task).evidence and explain(task).reason != "unknown":
            result.successful_with_cause += 1
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("field_dir", nargs="?", type=Path, default=ROOT / "tests" / "field")
    args = parser.parse_args(argv)
    result = score(RuleSet(load_rules()), args.field_dir)
    print(f"failure reason, failing/: {result.failing_ok}/{result.failing} ({result.accuracy:.1%})")
    print(
        f"  the same, a plain python_exception taken as unknown: "
        f"{result.failing_ok_generic}/{result.failing} ({result.accuracy_generic:.1%})"
    )
    print(
        f"no diagnosis, successful/ (job Completed): {result.successful_ok}/{result.successful}"
        f" ({result.specificity:.1%})"
    )
    print(
        f"successful/ logs whose markers would name a cause had the job failed: "
        f"{result.successful_with_cause}/{result.successful}"
    )
    for (want, got), count in sorted(result.confusion.items()):
        print(f"  confused: expected {want}, got {got}: {count}")
    for miss in result.misses:
        print(f"  miss: {miss}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
