"""Rules made from the vocabulary: the training loss and the NaN-loss marker of any line
whose pairs the vocabulary understands, with no rule written for its format.

Each is an ordinary rule to the engine: an RE2 prefilter pattern that finds candidate
lines (a loss key followed by a separator and a number), plus an ``extract`` function
that reads the line's pairs (vocabulary.py) and says what the line holds. They come after
every rule of the rule files, so a format-specific rule that matches the same line wins.

* ``kv_loss`` (kind ``loss``): the line's training loss, with its step and epoch; a line
  with only evaluation losses or loss components gives nothing, and the engine reads on
  backwards to the line before it.
* ``kv_nan_loss`` (kind ``error``, marker ``nan_loss``): a training-loss key printed as
  nan or inf, whatever the framework calls it (``loss``, ``lm loss``, ``act_loss``...),
  never ``val_loss: nan`` or ``grad_norm: nan``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from .model import Example, Rule, compile_pattern
from .vocabulary import Vocabulary, VocabularySpec, merge

SOURCE = "vocabulary"

_SEP = r"['\"]?\)?\s*(?:::|=>>?|[:=\x{FF1A}]|\s+is\b)?\s*(?:tensor\(\s*)?[\[(]?\s*['\"]?"


def _heads(vocabulary: Vocabulary, concept: str) -> str:
    """An RE2 alternation of the last token of each of the concept's keys."""
    words = sorted({entry[-1] for entry in vocabulary.keys.get(concept, ())}, key=len)
    return "|".join(re.escape(word) for word in reversed(words))


def vocabulary_rules(
    specs: Sequence[VocabularySpec], problems: list[str]
) -> tuple[Vocabulary, list[Rule]]:
    """The vocabulary of all files, and the rules it makes (none when it has no loss key)."""
    vocabulary = merge(specs)
    heads = _heads(vocabulary, "loss")
    if not heads:
        return vocabulary, []
    key = rf"(?i)(?:{heads})[\w .\-]{{0,24}}?{_SEP}"
    loss_pattern = key + r"[-+]?(?:\d|\.\d|nan|inf)"
    nan_pattern = key + r"[-+]?(?:nan|inf)"
    rules = []
    for name, kind, marker, pattern in (
        ("kv_loss", "loss", "", loss_pattern),
        ("kv_nan_loss", "error", "nan_loss", nan_pattern),
    ):
        regex, reason = compile_pattern(pattern)
        if regex is None:
            problems.append(f"{SOURCE}: {name}: the vocabulary's keys make a bad pattern: {reason}")
            continue
        given = [example for spec in specs for example in spec.examples]
        if name == "kv_loss":
            examples = tuple(
                Example(
                    line=example.line,
                    match=example.loss is not None,
                    value=example.loss,
                    step=example.step,
                    epoch=example.epoch,
                )
                for example in given
            )
        else:  # the marker: as the example says, else where its training loss is nan/inf
            examples = tuple(
                Example(
                    line=e.line,
                    match=e.nan_loss
                    if e.nan_loss is not None
                    else e.loss is not None and not math.isfinite(e.loss),
                )
                for e in given
            )
        rules.append(
            Rule(
                name=name,
                kind=kind,  # type: ignore[arg-type]
                source=SOURCE,
                pattern=pattern,
                regex=regex,
                unless=None,
                marker=marker,
                group_value=0 if kind == "loss" else None,
                examples=examples,
                extract=_loss_of(vocabulary) if kind == "loss" else vocabulary.training_loss_nan,
            )
        )
    return vocabulary, rules


LossFacts = tuple[float, float | None, float | None, int]
"""(value, step, epoch, rank of the key) of a line's training loss."""


def _loss_of(vocabulary: Vocabulary) -> Callable[[str], LossFacts | None]:
    def extract(line: str) -> LossFacts | None:
        facts = vocabulary.read_line(line)
        if facts.loss is None:
            return None
        return facts.loss.value, facts.step, facts.epoch, facts.rank

    return extract
