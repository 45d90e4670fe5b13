"""Rules made from the vocabulary: the training loss, the NaN-loss marker and the training
telemetry of any line whose pairs the vocabulary understands, with no rule written for
its format.

Each is an ordinary rule to the engine: an RE2 prefilter pattern that finds candidate
lines (a key of the concept followed by a separator and a number), plus an ``extract``
function that reads the line's pairs (vocabulary.py) and says what the line holds, or
None (then the engine reads on to another line). They come after every rule of the rule
files, so a format-specific loss rule that matches the same line wins.

* ``kv_loss`` (kind ``loss``): the line's training loss, with its step and epoch; a line
  with only evaluation losses or loss components gives nothing. Every line's loss counts
  in ``ScanResult.loss_count``/``loss_sum``; ``extract_fast`` reads the value alone.
* ``kv_nan_loss`` (kind ``error``, marker ``nan_loss``): a training-loss key printed as
  nan or inf, whatever the framework calls it (``loss``, ``lm loss``, ``act_loss``...),
  never ``val_loss: nan`` or ``grad_norm: nan``.
* ``kv_nan_metric`` (kind ``warning``, marker ``nan_metric``): a nan on a line of an
  evaluation pass (the vocabulary's ``eval_lines``, no training loss on the line): a
  metric that could not be computed.
* one gauge per telemetry concept (telemetry.GAUGES): ``kv_eval_loss``,
  ``kv_learning_rate``, ``kv_grad_norm``, ``kv_loss_scale``, ``kv_step_time``,
  ``kv_total_steps``, ``kv_eta``, ``kv_samples_per_second``, ``kv_tokens_per_second``,
  ``kv_device_flops``, ``kv_mfu``: the last value printed, in base units.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence

from .model import Example, Rule, compile_pattern
from .telemetry import GAUGES
from .vocabfile import VocabularySpec, merge
from .vocabulary import Vocabulary

SOURCE = "vocabulary"

_SEP = r"['\"]?\)?\s*(?:::|=>>?|[:=,\x{FF1A}]|\s+is\b)?\s*(?:tensor\(\s*)?[\[(]?\s*['\"]?"
_VALUE = r"[-+]?(?:\d|\.\d|nan|inf)"
_FRAME = r"\d+(?:/\d+)?[a-z]* ?(?:\[[\d:]+(?:<[\d:?]+)?,\s*[\d.?]+\s*(?:s/it|it/s)|━)"
"""A progress frame counting iterations: tqdm's ``n/total [elapsed<left, 1.5s/it``
(not ``900 examples/s``: a dataset bar), Keras 3's ``n/total ━``."""

_BY_UNIT = {
    "step_time": r"\d\s?(?:us|ms|s)/(?:step|iter|batch)|\d\s?(?:steps?|it|iters?|batch(?:es)?)/s\b|"
    + _FRAME,
    "samples_per_second": r"\d[kKM]?\s?(?:samples?|imgs?|images?|examples?|seqs?)/s(?:[^\]\w]|$)",
    "tokens_per_second": r"\d[kKM]?\s?(?:tokens?|toks?|words?)/s(?:[^\]\w]|$)",
    "device_flops": r"(?i)throughput[\w .\-/]*?" + _SEP + r"[-+]?\d[\d.]*\s?[TPG](?:[^\w]|$)",
    "eta": _FRAME,
    "total_steps": _FRAME,
}
"""Candidates found by a unit or a progress frame rather than a key (a rate that ends a
tqdm frame, ``900 examples/s]``, is the bar's: the frame candidates cover it)."""

_KEY_CONCEPTS = {
    "learning_rate": ("learning_rate",),
    "grad_norm": ("grad_norm",),
    "loss_scale": ("loss_scale",),
    "step_time": ("step_time", "step_rate"),
    "samples_per_second": ("samples_per_second",),
    "tokens_per_second": ("tokens_per_second",),
    "device_flops": ("device_flops",),
    "mfu": ("mfu",),
    "eta": ("eta",),
    "total_steps": ("step",),
}
"""The vocabulary concepts whose keys can feed each gauge."""


def _words(vocabulary: Vocabulary, concepts: Iterable[str], *, bounded: bool = True) -> str:
    """An RE2 alternation of the concepts' keys, as they may be printed: tokens joined by
    an optional separator (``samples_per_second``, ``SamplesPerSec``); when ``bounded``,
    a short single word must not follow a letter (``lr`` is not the end of ``ctrl``)."""
    alternatives = set()
    for concept in concepts:
        for entry in vocabulary.keys.get(concept, ()):
            text = r"[ _.\-/]?".join(re.escape(token) for token in entry)
            short = bounded and len(entry) == 1 and len(entry[0]) <= 4 and entry[0].isascii()
            alternatives.add(rf"(?:^|[^a-z]){text}" if short else text)
    return "|".join(sorted(alternatives, key=len, reverse=True))


def _candidates(keys: str, value: str = _VALUE) -> str:
    """A key, then (after at most a few more key characters) a separator and a value."""
    return rf"(?i)(?:{keys})[\w .\-/]{{0,24}}?(?:\s?\([A-Za-z%/]{{1,12}}\))?{_SEP}{value}"


def vocabulary_rules(
    specs: Sequence[VocabularySpec], problems: list[str]
) -> tuple[Vocabulary, list[Rule]]:
    """The vocabulary of all files, and the rules it makes (none when it has no loss key)."""
    vocabulary = merge(specs)
    losses = _words(vocabulary, ("loss",), bounded=False)
    if not losses:
        return vocabulary, []
    given = [example for spec in specs for example in spec.examples]
    rules = [
        _rule(
            "kv_loss",
            "loss",
            _candidates(losses),
            problems,
            examples=tuple(
                Example(e.line, e.loss is not None, e.loss, e.step, e.epoch, where=e.where)
                for e in given
            ),
            extract=_loss_of(vocabulary),
            extract_fast=vocabulary.loss_value,
        ),
        _rule(
            "kv_nan_loss",
            "error",
            _candidates(losses, r"[-+]?(?:nan|inf)"),
            problems,
            marker="nan_loss",
            # the marker: as an example says, else where its training loss is nan/inf
            examples=tuple(
                Example(
                    e.line,
                    e.nan_loss
                    if e.nan_loss is not None
                    else e.loss is not None and not math.isfinite(e.loss),
                    where=e.where,
                )
                for e in given
            ),
            extract=vocabulary.training_loss_nan,
        ),
        _rule(
            "kv_nan_metric",
            "warning",
            _nan_metric_candidates(vocabulary),
            problems,
            marker="nan_metric",
            examples=tuple(
                Example(e.line, e.nan_metric, where=e.where)
                for e in given
                if e.nan_metric is not None
            ),
            extract=vocabulary.eval_nan,
        ),
    ]
    eval_words = "|".join(
        rf"(?:^|[^a-z]){re.escape(w)}" if len(w) <= 4 and w.isascii() else re.escape(w)
        for w in sorted(vocabulary.eval_words, key=len)[::-1]
    )
    eval_lines = "|".join(f"(?:{p})" for p in vocabulary.eval_lines)
    for gauge in GAUGES:
        if gauge.concept == "eval_loss":
            before = rf"(?:{eval_words})[^\n]*?(?:{losses})"
            after = rf"(?:{losses})[\w .\-/]{{0,12}}?(?:{eval_words})"
            pattern = rf"(?i:{before}|{after})" + (f"|{eval_lines}" if eval_lines else "")
        else:
            keys = _words(vocabulary, _KEY_CONCEPTS[gauge.concept])
            pattern = "|".join(
                p
                for p in (
                    _candidates(keys, r"[-+]?(?:\d|\.\d)") if keys else "",
                    _BY_UNIT.get(gauge.concept, ""),
                )
                if p
            )
        if not pattern:
            continue
        examples = tuple(
            Example(
                e.line,
                e.telemetry[gauge.concept] is not None,
                e.telemetry[gauge.concept],
                where=e.where,
            )
            for e in given
            if gauge.concept in e.telemetry
        )
        rules.append(
            _rule(
                f"kv_{gauge.concept}",
                "gauge",
                pattern,
                problems,
                metric=gauge.metric,
                help_text=gauge.help,
                examples=examples,
                extract=_telemetry_of(vocabulary, gauge.concept),
            )
        )
    return vocabulary, [rule for rule in rules if rule is not None]


def _nan_metric_candidates(vocabulary: Vocabulary) -> str:
    """A nan on a line that matches one of the vocabulary's ``eval_lines`` (before or
    after it), or as the value of a key that says eval (``'eval_loss': nan``): not every
    ``nan`` (Megatron's ``number of nan iterations:`` on each line)."""
    nan = r"(?i:(?:^|[^\w.])[-+]?nan(?:[^\w]|$))"
    if not vocabulary.eval_lines:
        return nan
    lines = "|".join(f"(?:{p})" for p in vocabulary.eval_lines)
    words = "|".join(re.escape(w) for w in sorted(vocabulary.eval_words, key=len)[::-1])
    keyed = rf"(?i:(?:^|[^a-z])(?:{words})[\w .\-/]{{0,24}}?['\"]?{_SEP}[-+]?nan(?:[^\w]|$))"
    return rf"(?:{lines})[^\n]*?{nan}|{nan}[^\n]*?(?:{lines})|{keyed}"


def _rule(
    name: str,
    kind: str,
    pattern: str,
    problems: list[str],
    *,
    marker: str = "",
    metric: str = "",
    help_text: str = "",
    examples: tuple[Example, ...] = (),
    extract: Callable[[str], object] | None = None,
    extract_fast: Callable[[bytes], tuple[float, int] | None] | None = None,
) -> Rule | None:
    regex, reason = compile_pattern(pattern)
    if regex is None:
        problems.append(f"{SOURCE}: {name}: the vocabulary's keys make a bad pattern: {reason}")
        return None
    return Rule(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        source=SOURCE,
        pattern=pattern,
        regex=regex,
        finder=regex,
        unless=None,
        marker=marker,
        metric=metric,
        help=help_text,
        group_value=0 if kind in ("loss", "gauge") else None,
        examples=examples,
        extract=extract,
        extract_fast=extract_fast,
    )


LossFacts = tuple[float, float | None, float | None, int]
"""(value, step, epoch, rank of the key) of a line's training loss."""


def _loss_of(vocabulary: Vocabulary) -> Callable[[str], LossFacts | None]:
    def extract(line: str) -> LossFacts | None:
        facts = vocabulary.read_line(line)
        if facts.loss is None:
            return None
        return facts.loss.value, facts.step, facts.epoch, facts.rank

    return extract


def _telemetry_of(vocabulary: Vocabulary, concept: str) -> Callable[[str], float | None]:
    def extract(line: str) -> float | None:
        facts = vocabulary.read_line(line)
        if concept == "eval_loss":
            return facts.eval_loss
        return facts.telemetry.get(concept)

    return extract
