"""What the keys of key/value pairs mean: the vocabulary that maps keys to concepts.

A key is read as tokens (pairs.py: ``"Train Loss"`` -> ``("train", "loss")``). Its
concept comes from the longest vocabulary entry that ends the key (``("loss",)`` ends
``("reduced", "train", "loss")``); the tokens before it are modifiers:

* ``loss``: a training loss. Rank 0 (the loss of the step) with no modifier or with
  ``train``, ``training``, ``total``, ``lm``, ``reduced``, ``overall``...; rank 2 (a
  running mean, used when nothing better is printed) with ``avg``, ``mean``, ``running``,
  ``epoch``...; rank 1 with any other modifier (``act_loss``, ``CTCLoss``, ``batch_loss``).
  Never ``best``/``min``/``max``/``target``... losses. A trailing ``step``/``total``/``value``
  keeps rank 0 (``train_loss_step``), ``epoch``/``avg``/``mean`` make rank 2. A key with
  any other token after ``loss`` is a component (``loss_cls``, ``loss_scale``): no loss.
* An evaluation word anywhere in the key (``val_loss``, ``Vali Loss``, ``eval/loss``,
  ``loss_val``, ``验证损失``), a mode after the key (mmengine's ``Epoch(val)``), or an
  evaluation context on the line (``"mode": "val"``, ``[EVAL]``, ``Test:``, ``Validation``,
  ``valid on``, ``验证``, ``测试``) makes a loss an evaluation loss, unless the key itself
  says ``train``.
* ``step``, ``epoch``: the current step/epoch, an integer for a step. Not with a modifier
  that makes a count or a setting of it (``max_steps``, ``save_steps``, ``warmup``,
  ``num``, ``total``, ``skipped``, ``time per iteration``); a plural (``Steps: 236``,
  ``epochs: 3``) only as ``N/T`` (``steps 80/190``). ``batch`` (the batch of an epoch)
  is the step when the line names no step; a tqdm frame's ``N`` or mmcv's ``[n/t]``
  after ``Epoch [e]`` when it names neither.

Keys are matched per token, so ``训练次数`` and other keys without separators are matched
by their characters: the entry ``损失`` ends ``验证损失`` (eval) and ``训练损失``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2

from .pairs import Pair, find_pairs, key_tokens

CONCEPTS: dict[str, str] = {
    "loss": "the training loss of a step",
    "step": "the current training step or iteration",
    "batch": "the batch within an epoch: the step when the line names no step",
    "epoch": "the current epoch",
}
"""The concepts the vocabulary maps keys to, with what they mean."""

RUNNING_RANK = 2
"""The rank of a running mean of the loss (``avg_loss``): used when nothing better is near."""

_LOSS_RANK0 = frozenset(
    {"train", "training", "total", "lm", "reduced", "overall", "full", "final", "sum", "t"}
)
_RUNNING = frozenset(
    {"avg", "average", "mean", "running", "avr", "smooth", "smoothed", "ema", "moving"}
    | {"epoch", "cumulative", "cum", "interval", "平均"}
)
_NOT_CURRENT_LOSS = frozenset(
    {"best", "min", "max", "minimum", "maximum", "lowest", "highest", "target", "init"}
    | {"initial", "expected", "threshold", "prev", "previous", "baseline", "ref"}
)
_NOT_CURRENT_POSITION = frozenset(
    {"max", "total", "num", "number", "n", "save", "warmup", "log", "logging", "checkpoint"}
    | {"ckpt", "skipped", "skip", "nan", "per", "accum", "accumulation", "decay", "sched"}
    | {"scheduler", "time", "eval", "valid", "val", "test", "print", "report", "patience"}
    | {"start", "end", "first", "last", "stop", "remaining", "left", "of", "every", "freq"}
    | {"frequency", "interval", "steps", "epochs", "iters", "iterations", "inner", "outer"}
)
_TRAILING = {
    "train": 0,
    "training": 0,
    "step": 0,
    "total": 0,
    "value": 0,
    "val": -1,
    "valid": -1,
    "eval": -1,
    "test": -1,
    "epoch": 2,
    "avg": 2,
    "mean": 2,
    "running": 2,
    "ema": 2,
    "smooth": 2,
}
"""Tokens that may follow a loss key: the rank they give (-1: an evaluation loss)."""

_STRICT_HEADS = frozenset({"cost"})
"""Loss words that are a loss only alone or with a training/running modifier: ``Cost 2.3``
(PaddlePaddle v1), never ``time cost``, ``batch_cost`` or ``reader_cost``."""

_PLURALS = {"steps": "step", "iterations": "iteration", "epochs": "epoch", "batches": "batch"}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
_TRAIN_WORDS = frozenset({"train", "training", "训练"})
_MODES_EVAL = frozenset({"val", "valid", "eval", "test"})


@dataclass(frozen=True, slots=True)
class Meaning:
    """What a key means: its concept, whether it is about evaluation, and its rank."""

    concept: str
    eval: bool = False
    rank: int = 0
    plural: bool = False
    train: bool = False
    """The key says ``train``: the line's evaluation context does not apply to it."""
    ignored: bool = False
    """A key of the concept that is not its current value (``best_loss``, ``max_steps``)."""


@dataclass(frozen=True, slots=True)
class Position:
    value: float
    total: float | None
    start: int


@dataclass(slots=True)
class LineFacts:
    """What the pairs of one line say, by concept."""

    loss: Pair | None = None
    """The training loss (the best-ranked training-loss key; its last occurrence)."""
    rank: int = 0
    """The rank of its key: 0 the loss of the step, 1 a prefixed key, 2 a running mean."""
    step: float | None = None
    """The step of that loss: the nearest step pair before it (else after it), else the
    batch, else a progress frame."""
    epoch: float | None = None
    training_losses: list[Pair] = field(default_factory=list)
    """Every pair that is a training loss (any rank), in line order."""
    eval_losses: list[Pair] = field(default_factory=list)


@dataclass(frozen=True)
class Vocabulary:
    """Keys by concept, evaluation words and evaluation line contexts (see the module)."""

    keys: Mapping[str, tuple[tuple[str, ...], ...]]
    eval_words: frozenset[str]
    eval_lines: tuple[str, ...]
    ignore_lines: tuple[str, ...] = ()
    _cache: dict[tuple[str, ...], Meaning | None] = field(default_factory=dict, repr=False)
    _eval_line: Any = field(default=None, repr=False)
    _ignore_line: Any = field(default=None, repr=False)
    _cjk: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @classmethod
    def build(
        cls,
        keys: Mapping[str, Iterable[str]],
        eval_words: Iterable[str],
        eval_lines: Iterable[str],
        ignore_lines: Iterable[str] = (),
    ) -> Vocabulary:
        """A vocabulary from its lists; ``eval_lines`` and ``ignore_lines`` are RE2
        patterns (valid ones)."""
        by_concept = {
            concept: tuple(sorted({key_tokens(k) for k in entries if key_tokens(k)}, key=len))[::-1]
            for concept, entries in keys.items()
        }
        cjk = tuple(
            (entry[0], concept)
            for concept, entries in by_concept.items()
            for entry in entries
            if len(entry) == 1 and _CJK.search(entry[0])
        )
        words = frozenset(w.lower() for w in eval_words)
        lines, ignored = tuple(eval_lines), tuple(ignore_lines)
        vocabulary = cls(by_concept, words, lines, ignored)
        object.__setattr__(vocabulary, "_eval_line", _any_of(lines))
        object.__setattr__(vocabulary, "_ignore_line", _any_of(ignored))
        object.__setattr__(vocabulary, "_cjk", tuple(sorted(cjk, key=lambda c: -len(c[0]))))
        return vocabulary

    # --- keys --------------------------------------------------------------------------

    def meaning(self, tokens: tuple[str, ...]) -> Meaning | None:
        """The meaning of a key's tokens, or None when the vocabulary does not know it."""
        cached = self._cache.get(tokens, self)
        if cached is not self:
            return cached  # type: ignore[return-value]
        meaning = self._classify(tokens)
        if len(self._cache) > 8192:
            self._cache.clear()
        self._cache[tokens] = meaning
        return meaning

    def _classify(self, tokens: tuple[str, ...]) -> Meaning | None:
        if not tokens:
            return None
        if len(tokens) > 1 and tokens[-1] in _TRAILING:
            inner = self._match(tokens[:-1])
            if inner is not None and inner[0] == "loss":
                trailing = _TRAILING[tokens[-1]]
                base = self._judge(*inner)
                if trailing < 0:
                    return Meaning("loss", True, base.rank, ignored=base.ignored)
                if base.eval:
                    return base
                rank = max(base.rank, trailing)
                train = base.train or tokens[-1] in _TRAIN_WORDS
                return Meaning("loss", False, rank, train=train, ignored=base.ignored)
        found = self._match(tokens)
        if found is None:
            return None
        return self._judge(*found)

    def _match(self, tokens: tuple[str, ...]) -> tuple[str, tuple[str, ...], bool, str] | None:
        """(concept, modifier tokens, plural, head word) of the longest entry ending ``tokens``."""
        best: tuple[int, str, tuple[str, ...], bool] | None = None
        last = tokens[-1]
        singular = _PLURALS.get(last)
        for concept, entries in self.keys.items():
            for entry in entries:
                size = len(entry)
                if size > len(tokens) or (best is not None and size <= best[0]):
                    continue
                if tokens[-size:] == entry:
                    best = (size, concept, tokens[:-size], False)
                elif singular is not None and (*tokens[-size:-1], singular) == entry:
                    best = (size, concept, tokens[:-size], True)
        if best is None and _CJK.search(last):
            for word, concept in self._cjk:
                if last.endswith(word) and word != last:
                    return concept, (*tokens[:-1], last[: -len(word)]), False, word
                if word == last:
                    return concept, tokens[:-1], False, word
        if best is None:
            return None
        return best[1], best[2], best[3], last

    def _is_eval(self, prefix: tuple[str, ...]) -> bool:
        for token in prefix:
            if token in self.eval_words:
                return True
            if _CJK.search(token) and any(w in token for w in self.eval_words):
                return True
        return False

    def _judge(
        self, concept: str, prefix: tuple[str, ...], plural: bool, head: str = ""
    ) -> Meaning:
        evaluation = self._is_eval(prefix)
        train = any(t in _TRAIN_WORDS or "训练" in t for t in prefix)
        if concept == "loss":
            if any(t in _NOT_CURRENT_LOSS for t in prefix) or (
                head in _STRICT_HEADS and any(t not in _LOSS_RANK0 | _RUNNING for t in prefix)
            ):
                return Meaning(concept, evaluation, 3, ignored=True)
            if evaluation:
                return Meaning(concept, True, 0)
            if all(t in _LOSS_RANK0 or "训练" in t for t in prefix):
                rank = 0
            elif any(t in _RUNNING for t in prefix):
                rank = 2
            else:
                rank = 1
            return Meaning(concept, False, rank, train=train)
        if concept in ("step", "epoch", "batch"):
            ignored = any(t in _NOT_CURRENT_POSITION for t in prefix)
            return Meaning(concept, evaluation, 0, plural, train, ignored)
        return Meaning(concept, evaluation, 0, plural, train)

    # --- lines -------------------------------------------------------------------------

    def eval_context(self, line: str) -> bool:
        """Whether the line is about an evaluation pass (``eval_lines``)."""
        return self._eval_line is not None and self._eval_line.search(line) is not None

    def read_line(self, line: str) -> LineFacts:
        """The training loss of one line with its step and epoch, and its other losses."""
        facts = LineFacts()
        pairs = find_pairs(line)
        if not pairs or (
            self._ignore_line is not None and self._ignore_line.search(line) is not None
        ):
            return facts
        line_eval: bool | None = None
        best: tuple[int, tuple[str, ...]] | None = None
        positions: dict[str, list[Position]] = {"step": [], "batch": [], "frame": []}
        epochs: list[Position] = []
        for pair in pairs:
            if pair.tokens == ("frame",):
                positions["frame"].append(Position(pair.value, pair.total, pair.start))
                continue
            meaning = self.meaning(pair.tokens)
            if meaning is None or meaning.ignored:
                continue
            evaluation = meaning.eval or pair.mode in _MODES_EVAL
            if meaning.concept == "loss" and not evaluation and not meaning.train:
                if line_eval is None:
                    line_eval = self.eval_context(line)
                evaluation = line_eval
            if meaning.concept == "loss":
                if evaluation:
                    facts.eval_losses.append(pair)
                    continue
                facts.training_losses.append(pair)
                if best is None or meaning.rank < best[0]:
                    best = (meaning.rank, pair.tokens)
            elif evaluation:
                continue
            elif meaning.concept in positions:
                if meaning.plural and pair.total is None:
                    continue
                if meaning.concept != "epoch" and not float(pair.value).is_integer():
                    continue
                positions[meaning.concept].append(Position(pair.value, pair.total, pair.start))
            elif meaning.concept == "epoch" and not (meaning.plural and pair.total is None):
                epochs.append(Position(pair.value, pair.total, pair.start))
        if best is None:
            return facts
        chosen = [p for p in facts.training_losses if p.tokens == best[1]][-1]
        facts.loss = chosen
        facts.rank = best[0]
        for kind in ("step", "batch", "frame"):
            near = _nearest(positions[kind], chosen.start)
            if near is not None:
                facts.step = near.value
                break
        near_epoch = _nearest(epochs, chosen.start)
        facts.epoch = near_epoch.value if near_epoch is not None else None
        return facts

    def training_loss_nan(self, line: str) -> bool:
        """Whether a training-loss key of the line prints nan or inf."""
        return any(not math.isfinite(p.value) for p in self.read_line(line).training_losses)


def _any_of(patterns: Sequence[str]) -> Any:
    """One RE2 regex matching any of ``patterns`` (None for none)."""
    if not patterns:
        return None
    options = re2.Options()
    options.log_errors = False
    return re2.compile("|".join(f"(?:{p})" for p in patterns), options)


def _nearest(candidates: Sequence[Position], start: int) -> Position | None:
    """The candidate closest before ``start``; else the closest after it."""
    before = [c for c in candidates if c.start < start]
    if before:
        return before[-1]
    after = [c for c in candidates if c.start > start]
    return after[0] if after else None


# --- the `vocabulary:` section of rule files ----------------------------------------------

EVAL_WORDS_KEY = "eval"
EVAL_LINES_KEY = "eval_lines"
IGNORE_LINES_KEY = "ignore_lines"
EXAMPLES_KEY = "examples"
_EXAMPLE_KEYS = ("line", "loss", "step", "epoch", "nan_loss")


@dataclass(frozen=True, slots=True)
class VocabularyExample:
    """A line and what the vocabulary must read in it (``loss`` None: no training loss)."""

    line: str
    loss: float | None
    step: float | None = None
    epoch: float | None = None
    nan_loss: bool | None = None
    """Whether the nan_loss marker fires on the line (None: when ``loss`` is nan/inf)."""


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
    nan_loss = raw.get("nan_loss")
    if nan_loss is not None and not isinstance(nan_loss, bool):
        problems.append(f"{where}: nan_loss: must be true or false")
        return None
    return VocabularyExample(
        raw["line"], numbers["loss"], numbers["step"], numbers["epoch"], nan_loss
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
