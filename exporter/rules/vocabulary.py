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
  ``num``, ``total``, ``skipped``, ``time per iteration``). ``batch`` (the batch of an
  epoch) is the step when the line names no step; a tqdm frame's ``N`` or mmcv's
  ``[n/t]`` after ``Epoch [e]`` when it names neither; a bare plural (``Steps: 95``,
  ``Epochs: 3``: the count done so far, Coqui STT) when it names none of these. The total
  of ``N/T`` is the run's planned steps, unless the line also prints an epoch's total
  (the steps of one epoch), except for a ``global`` key (``global iter: 15/5000``).
* Telemetry keys (learning rate, grad norm, loss scale, step time ...): a key that is only
  a word of change (``reducing to``, ``setting to``) gives the key before it a new value
  (DeepSpeed's ``Attempted loss scale: 128, reducing to 64`` says the scale is now 64).

Keys are matched per token, so ``训练次数`` and other keys without separators are matched
by their characters: the entry ``损失`` ends ``验证损失`` (eval) and ``训练损失``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import re2

from .pairs import Pair, find_pairs, key_tokens
from .telemetry import KEY_CONCEPTS, TIME_UNITS, bar_kind, step_seconds_of_rate, value_of

CONCEPTS: dict[str, str] = {
    "loss": "the training loss of a step",
    "step": "the current training step or iteration",
    "batch": "the batch within an epoch: the step when the line names no step",
    "epoch": "the current epoch",
    "learning_rate": "the learning rate",
    "grad_norm": "the gradient norm",
    "loss_scale": "the mixed-precision loss scale",
    "step_time": "time per step or iteration (a unit after the value or the key: ms, s)",
    "step_rate": "steps or iterations per second",
    "samples_per_second": "samples (images, examples) per second",
    "tokens_per_second": "tokens (words) per second",
    "throughput": "a throughput whose unit says what it counts (tokens/s, samples/s, T)",
    "device_flops": "FLOP/s per device (TFLOPs and T mean 1e12)",
    "mfu": "model FLOPs utilization (35% or 0.35)",
    "eta": "the remaining time",
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
_NOT_CURRENT_TELEMETRY = frozenset(
    {"max", "min", "base", "init", "initial", "warmup", "end", "final", "peak", "target"}
    | {"start", "clip", "clipping", "threshold", "epoch", "total", "elapsed", "data", "reader"}
    | {"load", "save", "wait", "startup", "setup", "wall", "sink", "attempted", "prev"}
    | {"previous", "default", "expected"}
)
"""Modifiers that make a telemetry key a setting or another quantity (``max_lr``,
``clip_grad_norm``, ``data_time``, ``epoch time``, ``Attempted loss scale``)."""

_PHASES = frozenset(
    {"loader", "loading", "dataloader", "optim", "optimizer", "opt", "forward", "backward"}
    | {"fwd", "bwd", "fw", "bw", "comm", "communication", "allreduce", "io", "sync", "log"}
    | {"logging", "ckpt", "checkpoint", "eval", "inference", "generate", "generation"}
)
"""Parts of a step whose time is not the step's (``loader_time``, ``optim_time``,
``forward_time``: Mozilla TTS, FunASR, ESPnet print them beside the step's own)."""

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

_FILLER = frozenset({"so", "far", "now", "currently", "here", "this", "at", "to"})
"""Words a sentence-like key may end with after its head: ``avg loss so far``."""

_PER_DEVICE = frozenset({"gpu", "npu", "device", "rank", "card", "chip", "core", "worker"})

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
    unit: str = ""
    """A time unit the key ends with (``eta_hours``, ``iter_time_ms``)."""


@dataclass(frozen=True, slots=True)
class Position:
    value: float
    total: float | None
    start: int
    whole_run: bool = False
    """The key says ``global``: its total is the run's, even beside an epoch's total."""


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
    eval_loss: float | None = None
    """The evaluation loss of the line: its best-ranked key, last occurrence."""
    telemetry: dict[str, float] = field(default_factory=dict)
    """Gauge concept (telemetry.GAUGES) -> value in base units; the last one of the line.
    Nothing from an evaluation line or key."""


@dataclass(frozen=True)
class Vocabulary:
    """Keys by concept, evaluation words and evaluation line contexts (see the module)."""

    keys: Mapping[str, tuple[tuple[str, ...], ...]]
    eval_words: frozenset[str]
    eval_lines: tuple[str, ...]
    ignore_lines: tuple[str, ...] = ()
    _cache: dict[tuple[str, ...], Meaning | None] = field(default_factory=dict, repr=False)
    _eval_line: Any = field(default=None, repr=False)
    _plans: dict[bytes, Any] = field(default_factory=dict, repr=False)
    _recent: dict[str, LineFacts] = field(default_factory=dict, repr=False)
    _recent_long: dict[str, LineFacts] = field(default_factory=dict, repr=False)
    """The last long line read (one at most: the rules read a line one after the other)."""
    _ignore_line: Any = field(default=None, repr=False)
    _cjk: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    _shape_table: bytes | None = field(default=None, repr=False)
    """How a line becomes its shape (every digit ``0``); None: lines are their own shape,
    when a user's ``eval_lines`` or ``ignore_lines`` pattern names a digit (``rank[1-9]``),
    so that the digits' values can change what a line means."""
    _by_last: dict[str, tuple[tuple[int, str, tuple[str, ...]], ...]] = field(
        default_factory=dict, repr=False
    )
    """Last token -> (order, concept, entry) of the entries that end with it: a key is
    matched against the few entries that can end it, not every entry."""

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
        if all(_digit_free(pattern) for pattern in (*lines, *ignored)):
            object.__setattr__(vocabulary, "_shape_table", _ZEROS)
        by_last: dict[str, list[tuple[int, str, tuple[str, ...]]]] = {}
        order = 0
        for concept, entries in by_concept.items():
            for entry in entries:
                by_last.setdefault(entry[-1], []).append((order, concept, entry))
                order += 1
        object.__setattr__(
            vocabulary, "_by_last", {last: tuple(found) for last, found in by_last.items()}
        )
        return vocabulary

    # --- keys --------------------------------------------------------------------------

    def meaning(self, tokens: tuple[str, ...]) -> Meaning | None:
        """The meaning of a key's tokens, or None when the vocabulary does not know it."""
        cached = self._cache.get(tokens, self)
        if cached is not self:
            return cached  # type: ignore[return-value]
        meaning = self._classify(tokens)
        if sum(map(len, tokens)) <= _CACHED_CHARS:  # a hostile 64 KiB key is not kept
            if len(self._cache) > 8192:
                self._cache.clear()
            self._cache[tokens] = meaning
        return meaning

    def _classify(self, tokens: tuple[str, ...]) -> Meaning | None:
        whole = self._match(tokens) if "/" in tokens[1:-1] else None
        if whole is not None and any("/" in e for e in self.keys[whole[0]] if e[-1] == tokens[-1]):
            return self._judge(*whole)  # an entry that holds the slash: `time/batch`, `img/s`
        if "/" in tokens[1:-1]:
            # a namespace (`actor/loss`, `eval/loss`, `train/grad_norm`): the name after
            # the last `/` says what the value is, the namespace may say eval or train
            cut = len(tokens) - 1 - tokens[::-1].index("/")
            namespace, name = tokens[:cut], tokens[cut + 1 :]
            meaning = self._classify_name(name)
            if meaning is not None:
                if not meaning.eval and self._is_eval(namespace):
                    return Meaning(meaning.concept, True, meaning.rank, meaning.plural)
                if any(t in _TRAIN_WORDS for t in namespace):
                    return Meaning(
                        meaning.concept,
                        meaning.eval,
                        meaning.rank,
                        meaning.plural,
                        True,
                        meaning.ignored,
                    )
                return meaning
        return self._classify_name(tokens)

    def _classify_name(self, tokens: tuple[str, ...]) -> Meaning | None:
        if len(tokens) > 1 and tokens[-1] in TIME_UNITS:
            named = tokens[:-1]
            if len(named) > 1 and named[-1] == "in":  # `train_step_timing in s`
                named = named[:-1]
            timed = self._classify_name(named)
            if timed is not None and timed.concept in ("step_time", "eta"):
                return Meaning(
                    timed.concept,
                    timed.eval,
                    timed.rank,
                    False,
                    timed.train,
                    timed.ignored,
                    unit=tokens[-1],
                )
        cut = next((i for i, t in enumerate(tokens[1:-1], 1) if t in ("in", "of")), 0)
        if cut:  # `step_in_epoch`, `iter_of_epoch`: a step (counted in something)
            head = self._classify_name(tokens[:cut])
            if head is not None and head.concept in ("step", "batch") and not head.plural:
                return head  # (not `steps in epoch`: a count; not `time in epoch`)
        if len(tokens) > 1 and tokens[-1].isdigit():
            # a parameter group's value (`lr_0`, `lr_1`: ESPnet, fairseq): group 0 first
            grouped = self._classify_name(tokens[:-1])
            if grouped is None or grouped.concept not in KEY_CONCEPTS:
                return None
            rank = grouped.rank if tokens[-1] == "0" else max(grouped.rank, 1)
            return replace(grouped, rank=rank)
        while len(tokens) > 1 and tokens[-1] in _FILLER:
            tokens = tokens[:-1]  # `avg loss so far is 0.02`
        if "per" in tokens[:-1]:  # a rate per device is still the rate (as printed)
            kept: list[str] = []
            for token in tokens:
                if kept and kept[-1] == "per" and token in _PER_DEVICE:
                    kept.pop()
                else:
                    kept.append(token)
            tokens = tuple(kept)
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
        candidates = self._by_last.get(last, ())
        if singular is not None and singular in self._by_last:
            candidates = tuple(sorted((*candidates, *self._by_last[singular])))
        for _, concept, entry in candidates:  # in the order of self.keys, as they were
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
            prefix = tuple(t for t in prefix if t not in self.eval_words)
            if all(t in _LOSS_RANK0 or "训练" in t for t in prefix):
                rank = 0
            elif any(t in _RUNNING for t in prefix):
                rank = 2
            else:
                rank = 1
            return Meaning(concept, evaluation, rank, train=train)
        if concept in ("step", "epoch", "batch"):
            ignored = any(t in _NOT_CURRENT_POSITION for t in prefix)
            return Meaning(concept, evaluation, 0, plural, train, ignored)
        ignored = any(t in _NOT_CURRENT_TELEMETRY for t in prefix) or (
            concept == "step_time" and any(t in _PHASES for t in prefix)
        )
        rank = RUNNING_RANK if any(t in _RUNNING for t in prefix) else 0
        return Meaning(concept, evaluation, rank, plural, train, ignored)

    # --- lines -------------------------------------------------------------------------

    def eval_context(self, line: str) -> bool:
        """Whether the line is about an evaluation pass (``eval_lines``)."""
        return self._eval_line is not None and self._eval_line.search(line) is not None

    def read_line(self, line: str) -> LineFacts:
        """The training loss of one line with its step and epoch, its other losses and
        its telemetry. The last lines read are remembered: the vocabulary's rules read the
        same candidate line one after the other."""
        facts = self._recent.get(line) or self._recent_long.get(line)
        if facts is None:
            try:
                facts = self._read(line)
            except (ValueError, ArithmeticError, LookupError):  # one odd line, not the block
                facts = LineFacts()
            if len(line) <= _CACHED_CHARS:
                if len(self._recent) >= _RECENT_LINES:
                    self._recent.clear()
                self._recent[line] = facts
            else:  # a long line's pairs are kept until the next long line only
                self._recent_long.clear()
                self._recent_long[line] = facts
        return facts

    def _read(self, line: str) -> LineFacts:
        facts = LineFacts()
        pairs = find_pairs(line)
        if not pairs or (
            self._ignore_line is not None and self._ignore_line.search(line) is not None
        ):
            return facts
        line_eval: bool | None = None
        best: tuple[int, tuple[str, ...]] | None = None
        best_eval: tuple[int, float] | None = None
        # a bare plural (`Steps: 95`, `Epochs: 3`) counts what was done: the step or
        # epoch when no other key of the line says it
        positions: dict[str, list[Position]] = {
            "step": [],
            "batch": [],
            "frame": [],
            "steps": [],
            "epoch": [],
            "epochs": [],
        }
        frames: list[Pair] = []
        telemetry: list[tuple[str, Pair, int]] = []
        previous: Meaning | None = None
        for pair in pairs:
            if pair.tokens[0] == "frame":
                if pair.tokens == ("frame",):
                    positions["frame"].append(Position(pair.value, pair.total, pair.start))
                frames.append(pair)
                previous = None
                continue
            meaning = self.meaning(pair.tokens)
            if meaning is None and previous is not None and _is_change(pair.tokens):
                # the new value of the key before: `Attempted loss scale: 128, reducing to 64`
                meaning = replace(previous, ignored=False)
            previous = meaning if meaning is not None and meaning.concept in KEY_CONCEPTS else None
            if meaning is None or meaning.ignored:
                continue
            evaluation = meaning.eval or pair.mode in _MODES_EVAL
            if meaning.concept in _LINE_EVAL_CONCEPTS and not evaluation and not meaning.train:
                if line_eval is None:
                    line_eval = self.eval_context(line)
                evaluation = line_eval
            if meaning.concept == "loss":
                if evaluation:
                    facts.eval_losses.append(pair)
                    if best_eval is None or meaning.rank <= best_eval[0]:
                        best_eval = (meaning.rank, pair.value)
                    continue
                facts.training_losses.append(pair)
                if best is None or meaning.rank < best[0]:
                    best = (meaning.rank, pair.tokens)
            elif evaluation:
                continue
            elif meaning.concept in KEY_CONCEPTS:
                timed = replace(pair, unit=meaning.unit) if meaning.unit and not pair.unit else pair
                telemetry.append((meaning.concept, timed, meaning.rank))
            elif meaning.concept in positions:
                if pair.unit == "%" or pair.unit in TIME_UNITS:
                    continue  # `Steps: 12%`, `epoch: 3.2s`: a share or a time, not a count
                if meaning.concept != "epoch" and not float(pair.value).is_integer():
                    continue
                kind = meaning.concept
                if meaning.plural and pair.total is None:
                    if kind == "batch":
                        continue
                    kind += "s"
                whole_run = "global" in pair.tokens
                positions[kind].append(Position(pair.value, pair.total, pair.start, whole_run))
        if best_eval is not None:
            facts.eval_loss = best_eval[1]
        if line_eval is None and telemetry and best is None:
            line_eval = self.eval_context(line)
        if line_eval and best is None:
            telemetry = []  # an evaluation line: its throughput and times are evaluation's
        per_epoch = any(e.total is not None for e in positions["epoch"])
        _telemetry(facts, telemetry, frames, positions, best is not None, per_epoch)
        if best is None:
            return facts
        chosen = [p for p in facts.training_losses if p.tokens == best[1]][-1]
        facts.loss = chosen
        facts.rank = best[0]
        for kind in ("step", "batch", "frame", "steps"):
            near = _nearest(positions[kind], chosen.start)
            if near is not None:
                facts.step = near.value
                break
        near_epoch = _nearest(positions["epoch"] or positions["epochs"], chosen.start)
        facts.epoch = near_epoch.value if near_epoch is not None else None
        return facts

    def loss_value(self, line: bytes) -> tuple[float, int] | None:
        """(value, rank) of the training loss of a line of raw bytes, or None: the same as
        ``read_line``, fast for lines whose shape (the line without its digits) was read
        before. A shape remembers where its loss is (the k-th occurrence of the text from
        its key to its value). A shape is the line with every digit made ``0``: lines of
        one shape differ only in the values of their digits, never in where a digit
        stands (``1loss`` is no key, ``loss`` is; ``12:30`` is a clock, ``1234:30`` is
        not), and what a line means does not depend on those values (the shipped
        ``eval_lines`` and ``ignore_lines`` hold no digit). Lines longer than
        ``_CACHED_CHARS`` are read whole, not remembered."""
        if len(line) > _CACHED_CHARS:
            return self._read_whole(line)
        table = self._shape_table
        shape = line.translate(table) if table is not None else line
        plan = self._plans.get(shape, _UNKNOWN)
        if plan is _UNKNOWN:
            plan = self._plan(line)
            if len(self._plans) > _MAX_PLANS:
                self._plans.clear()
            self._plans[shape] = plan
        if plan is None:
            return None
        if isinstance(plan, bool):  # a shape whose plan could not be made: read it all
            return self._read_whole(line)
        anchor, occurrence, rank = plan
        end = _nth_key(line, anchor, occurrence)
        number = _NUMBER.match(line, end) if end >= 0 else None
        if number is None:
            return self._read_whole(line)
        value = float(number.group())
        return (math.nan if math.isnan(value) else value), rank

    def _read_whole(self, line: bytes) -> tuple[float, int] | None:
        """``loss_value`` by reading all of the line's pairs."""
        facts = self.read_line(line.decode("utf-8", "replace"))
        return (facts.loss.value, facts.rank) if facts.loss is not None else None

    def _plan(self, line: bytes) -> tuple[bytes, int, int] | bool | None:
        """How to find the loss in lines of this shape: (the bytes from its key to its
        value, which occurrence of them, its rank); None: no training loss; True: read
        such lines whole (the key holds digits, or the value has no plain number)."""
        text = line.decode("utf-8", "replace")
        facts = self.read_line(text)
        if facts.loss is None:
            return None
        pair = facts.loss
        anchor = text[pair.start : pair.at].encode()
        if pair.at < 0 or not anchor or any(48 <= b <= 57 for b in anchor):
            return True
        before = text[: pair.start].encode()
        occurrence = _count_keys(before, anchor)
        if _nth_key(line, anchor, occurrence) != len(before) + len(anchor):
            return True
        return anchor, occurrence, facts.rank

    def eval_nan(self, line: str) -> bool:
        """Whether a line of an evaluation pass (and of no training step: it prints no
        training loss) prints a nan: a metric that could not be computed. An evaluation
        loss printed nan (``'eval_loss': nan``) makes it one."""
        facts = self.read_line(line)
        if facts.loss is not None:
            return False
        return any(math.isnan(p.value) for p in facts.eval_losses) or self.eval_context(line)

    def training_loss_nan(self, line: str) -> bool:
        """Whether a training-loss key of the line prints nan or inf. A diverged run
        prints one on every line: its training loss, found by the line's shape, says so
        without reading the line's every pair."""
        chosen = self.loss_value(line.encode())
        if chosen is not None and not math.isfinite(chosen[0]):
            return True
        return any(not math.isfinite(p.value) for p in self.read_line(line).training_losses)


_LINE_EVAL_CONCEPTS = frozenset(("loss",))
"""Concepts whose pairs take the line's evaluation context (telemetry is dropped from an
evaluation line as a whole)."""


def _telemetry(
    facts: LineFacts,
    pairs: Sequence[tuple[str, Pair, int]],
    frames: Sequence[Pair],
    positions: dict[str, list[Position]],
    has_loss: bool,
    per_epoch: bool,
) -> None:
    """The telemetry of a training line: its keys, and its progress bar when the bar
    counts training steps (or the line prints a training loss). A step's total beside an
    epoch's (``Epoch:[1/2], step:[1/19]``) counts the steps of an epoch: not the plan."""
    values = facts.telemetry
    ranks: dict[str, int] = {}
    for concept, pair, rank in pairs:
        found = value_of(concept, pair)
        if found is not None and rank <= ranks.get(found[0], rank):
            values[found[0]] = found[1]  # the last of the best keys: current before average
            ranks[found[0]] = rank
    for frame in frames:
        kind = bar_kind(frame.context) if frame.context or frame.key == "n/t [" else "training"
        if kind == "other" and not has_loss:
            continue
        if frame.tokens == ("frame", "rate"):
            seconds = step_seconds_of_rate(frame)
            if seconds is not None:
                values["step_time"] = seconds
        elif kind == "training" and frame.key == "n/t [":
            if frame.total is not None:
                values["total_steps"] = frame.total
            if frame.seconds is not None:
                values["eta"] = frame.seconds
    for step in positions["step"]:
        if step.total is not None and (step.whole_run or not per_epoch):
            values["total_steps"] = step.total


_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_CACHED_CHARS = 2048
"""Lines (and keys) longer than this are read each time, never remembered: a hostile log
of 64 KiB lines must not fill the caches with them."""
_MAX_PLANS = 4096
_RECENT_LINES = 512
_UNKNOWN: Any = object()
_NUMBER = re.compile(rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?i:nan|inf(?:inity)?)")


_CHANGES = frozenset(
    {"reducing", "reduced", "lowering", "lowered", "decreasing", "decreased", "increasing"}
    | {"increased", "raising", "raised", "growing", "setting", "changing", "changed"}
    | {"updating", "updated", "adjusting", "adjusted"}
)
"""Words that give a key a new value, said of the key before (``..., reducing to 64``)."""


def _digit_free(pattern: str) -> bool:
    """Whether an RE2 pattern matches alike on lines that differ only in their digits'
    values: it names no digit (``\\d`` and repeat counts such as ``{1,3}`` are fine)."""
    return not re.search(r"\d", re.sub(r"\{\d+(?:,\d*)?\}|\\[dD]", "", pattern))


def _is_change(tokens: tuple[str, ...]) -> bool:
    """Whether a key is a word of change and ``to``: ``reducing to`` (not ``updated``, which
    may count something else: ``updated 12 params``)."""
    return len(tokens) >= 2 and tokens[-1] == "to" and all(t in _CHANGES for t in tokens[:-1])


def _key_starts(line: bytes, anchor: bytes) -> list[int]:
    """Where ``anchor`` starts a key in ``line``: not right after a letter, digit or ``_``."""
    found = []
    at = line.find(anchor)
    while at >= 0:
        if at == 0 or not (line[at - 1 : at].isalnum() or line[at - 1] == 95):
            found.append(at)
        at = line.find(anchor, at + 1)
    return found


def _count_keys(line: bytes, anchor: bytes) -> int:
    return len(_key_starts(line, anchor))


def _nth_key(line: bytes, anchor: bytes, occurrence: int) -> int:
    """The end of the ``occurrence``-th key start of ``anchor`` (-1 when there is none)."""
    starts = _key_starts(line, anchor)
    return starts[occurrence] + len(anchor) if occurrence < len(starts) else -1


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
