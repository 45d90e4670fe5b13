"""The ``vocabulary:`` section of rule files: concepts to keys, evaluation words and lines,
ignored lines and examples; checked for shape, then merged into one Vocabulary.

.. code-block:: yaml

    vocabulary:
      loss: [objective]            # keys added to a concept (see vocabulary.CONCEPTS)
      step: [batch_idx]
      eval: [holdout]              # words that make a loss an evaluation loss
      eval_lines: ['^EVAL ']       # RE2: lines of an evaluation pass
      ignore_lines: ['summary']    # RE2: lines that hold no step's values
      examples:                    # checked by `rules test`
        - line: 'batch_idx: 120 objective=0.731'
          loss: 0.731              # null: no training loss on the line
          step: 120
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import re2

from .telemetry import GAUGES
from .vocabulary import CONCEPTS, Vocabulary

EVAL_WORDS_KEY = "eval"
EVAL_LINES_KEY = "eval_lines"
IGNORE_LINES_KEY = "ignore_lines"
EXAMPLES_KEY = "examples"
_TELEMETRY_KEYS = tuple(gauge.concept for gauge in GAUGES)
_EXAMPLE_KEYS = ("line", "loss", "step", "epoch", "nan_loss", "nan_metric", *_TELEMETRY_KEYS)


@dataclass(frozen=True, slots=True)
class VocabularyExample:
    """A line and what the vocabulary must read in it (``loss`` None: no training loss)."""

    line: str
    loss: float | None
    step: float | None = None
    epoch: float | None = None
    nan_loss: bool | None = None
    """Whether the nan_loss marker fires on the line (None: when ``loss`` is nan/inf)."""
    nan_metric: bool | None = None
    """Whether the nan_metric warning fires on the line (None: not checked)."""
    telemetry: dict[str, float | None] = field(default_factory=dict)
    """Telemetry gauge concept -> the value the line gives it in base units (None: the
    line must give it none); concepts left out are not checked."""
    where: str = ""
    """The file and index it was written at: ``file: vocabulary.examples[N]``."""


@dataclass(slots=True)
class VocabularySpec:
    """One file's ``vocabulary:`` section, checked for shape."""

    source: str
    keys: dict[str, list[str]] = field(default_factory=dict)
    eval_words: list[str] = field(default_factory=list)
    eval_lines: list[str] = field(default_factory=list)
    ignore_lines: list[str] = field(default_factory=list)
    examples: list[VocabularyExample] = field(default_factory=list)


def _texts(value: Any, where: str, problems: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"{where}: must be a list of non-empty texts")
        return []
    return [v.strip() for v in value]


def _example(raw: Any, where: str, problems: list[str]) -> VocabularyExample | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("line"), str):
        problems.append(f"{where}: an example is a mapping with `line:` and `loss:`")
        return None
    unknown = [str(k) for k in raw if k not in _EXAMPLE_KEYS]
    if unknown:
        problems.append(f"{where}: {unknown[0]}: unknown key (known: {', '.join(_EXAMPLE_KEYS)})")
        return None
    if "loss" not in raw:
        problems.append(f"{where}: loss: missing (null when the line holds no training loss)")
        return None
    numbers: dict[str, float | None] = {}
    for key in ("loss", "step", "epoch"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append(f"{where}: {key}: must be a number (.nan for NaN) or null")
            return None
        numbers[key] = None if value is None else float(value)
    flags: dict[str, bool | None] = {}
    for key in ("nan_loss", "nan_metric"):
        flag = raw.get(key)
        if flag is not None and not isinstance(flag, bool):
            problems.append(f"{where}: {key}: must be true or false")
            return None
        flags[key] = flag
    telemetry: dict[str, float | None] = {}
    for key in _TELEMETRY_KEYS:
        if key not in raw:
            continue
        value = raw[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append(f"{where}: {key}: must be a number (in base units) or null")
            return None
        telemetry[key] = None if value is None else float(value)
    return VocabularyExample(
        raw["line"],
        numbers["loss"],
        numbers["step"],
        numbers["epoch"],
        flags["nan_loss"],
        flags["nan_metric"],
        telemetry,
        where,
    )


def parse_vocabulary(data: Any, where: str, problems: list[str]) -> VocabularySpec | None:
    """A ``vocabulary:`` mapping: concept -> keys, ``eval`` words, ``eval_lines`` RE2
    patterns and ``examples``. Problems are appended, one line each, file and key named."""
    if not isinstance(data, dict):
        problems.append(f"{where}: a mapping of concepts to lists of keys")
        return None
    before = len(problems)
    spec = VocabularySpec(where)
    for key, value in data.items():
        at = f"{where}.{key}"
        if key in CONCEPTS:
            spec.keys[key] = _texts(value, at, problems)
        elif key == EVAL_WORDS_KEY:
            spec.eval_words = _texts(value, at, problems)
        elif key in (EVAL_LINES_KEY, IGNORE_LINES_KEY):
            patterns = _texts(value, at, problems)
            if key == EVAL_LINES_KEY:
                spec.eval_lines = patterns
            else:
                spec.ignore_lines = patterns
            for number, pattern in enumerate(patterns):
                reason = _re2_problem(pattern)
                if reason:
                    problems.append(f"{at}[{number}]: {reason}")
        elif key == EXAMPLES_KEY:
            if not isinstance(value, list):
                problems.append(f"{at}: must be a list")
                continue
            for number, raw in enumerate(value):
                example = _example(raw, f"{at}[{number}]", problems)
                if example is not None:
                    spec.examples.append(example)
        else:
            known = ", ".join(
                [*CONCEPTS, EVAL_WORDS_KEY, EVAL_LINES_KEY, IGNORE_LINES_KEY, EXAMPLES_KEY]
            )
            problems.append(f"{at}: unknown key (known: {known})")
    return spec if len(problems) == before else None


def _re2_problem(pattern: str) -> str:
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else b""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return f"RE2 refuses it: {detail or 'invalid pattern'}"
    return ""


def merge(specs: Sequence[VocabularySpec]) -> Vocabulary:
    """One vocabulary from every file's section (entries are added, never replaced)."""
    keys: dict[str, list[str]] = {concept: [] for concept in CONCEPTS}
    words: list[str] = []
    lines: list[str] = []
    ignored: list[str] = []
    for spec in specs:
        for concept, entries in spec.keys.items():
            keys[concept].extend(entries)
        words.extend(spec.eval_words)
        lines.extend(spec.eval_lines)
        ignored.extend(spec.ignore_lines)
    return Vocabulary.build(keys, words, lines, ignored)
