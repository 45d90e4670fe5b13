"""Run compiled rules over new log lines, fast, and collect what they extract.

No loop of every rule over every line: the block is cut into chunks of whole lines, one
RE2 set match per chunk says which rules can match in it at all, and only those rules
search that chunk, each with one linear-time scan. Most chunks of a training log hold
loss lines and noise, so most rules never run on most of the text. Chunks are ranges of
the block (no copies); Python code runs per chunk and per matching line, never for a line
no rule matches.

``unless``: a marker rule whose ``unless`` rejects most of its matching lines would visit
each of those lines in Python. Instead, from the start of a line that the pattern
matches, one anchored RE2 match skips the whole run of consecutive lines that ``unless``
matches: Python work per run of rejected lines, not per line.

Loss rules read every line (each line's loss counts in ``loss_values``): one search of
the loss patterns combined finds the next line any of them matches, then the rules the
chunk's set match named are tried on that line, in load order.

Counting: a marker counts each line where one of its rules matches
once; value rules (exit code, loss, gauges) keep the value of the last line that
matched (on one line, the rule loaded first); counters add per matching line. Context
rules (model.py) give a step/epoch to the loss lines after them that lack one.
"""

from __future__ import annotations

import bisect
import math
import re
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2

from .model import (
    NUM,
    Example,
    Rule,
    parse_number,
    re2_options,
    signal_number,
    without_groups,
)
from .normalize import normalize, raw_offset
from .vocabulary import RUNNING_RANK

_UNANCHORED = re2._Anchor.UNANCHORED
_ANCHOR_START = re2._Anchor.ANCHOR_START

CHUNK_BYTES = 8 * 1024
"""Roughly how much text one set match covers. A rule the set match names searches the
whole chunk: small chunks keep that short (a loss format every few dozen lines, a marker
every few hundred cost a search of 8 KiB, not 64), and the set match costs little more
per byte (on the realistic log of bench/analyze_floor.py: 8 KiB beat 16 and 64)."""

_MAX_FRUITLESS = 128
"""A vocabulary gauge reads at most this many candidate lines that give it nothing, from
the end of a block back, before it gives up on the block (a log of nothing but look-alikes
costs bounded work; the value printed before them stays from an earlier block)."""

_LOOKBACK_LINES = 8
"""A running mean (``avg loss`` at an epoch's end) gives way to a step's own loss printed
at most this many candidate lines before it."""

_BACKWARD_BYTES = 4096
"""How much a last-value rule reads first, from the end of a chunk (then 4x more)."""

SET_MAX_MEM = 64 << 20
"""Memory budget of the set prefilter's automaton (RE2's default is 8 MiB): with many
rules its DFA states are large, and a DFA out of memory would report no match at all."""

RUN_MAX_MEM = 16 << 20
"""Memory budget of each run-of-lines pattern (``unless``, above)."""

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]
"""A custom metric's series: (metric name, sorted label pairs)."""

Context = dict[str, tuple[float | None, float | None]]
"""Context rule -> (step, epoch) of the last line it matched, for the next block."""

_NUMBERS = re.compile(NUM.encode())

FIRST_LINES = 3
"""How many first matching lines of each error marker a scan keeps."""

LINE_TEXT_CHARS = 1000
"""A kept line's text is cut to this many characters."""


@dataclass(frozen=True, slots=True)
class Loss:
    value: float
    step: float | None = None
    epoch: float | None = None


@dataclass(slots=True)
class ScanResult:
    """What the rules found in one block of log lines."""

    errors: dict[str, int] = field(default_factory=dict)
    """Error marker -> lines where it matched."""
    warnings: dict[str, int] = field(default_factory=dict)
    exit_code: float | None = None
    loss: Loss | None = None
    loss_count: int = 0
    """Lines with a finite training loss (each line once, whichever rule gave it)."""
    loss_sum: float = 0.0
    """The sum of those losses: ``loss_sum / loss_count`` is their mean."""
    gauges: dict[SeriesKey, tuple[float, str]] = field(default_factory=dict)
    """Custom gauge series -> (last value, rule)."""
    counters: dict[SeriesKey, tuple[float, str]] = field(default_factory=dict)
    """Custom counter series -> (increment, rule)."""
    rule_matches: dict[str, int] = field(default_factory=dict)
    rule_failures: dict[str, int] = field(default_factory=dict)
    """Rule -> matching lines whose value or label could not be used."""
    rule_seconds: dict[str, float] = field(default_factory=dict)
    series_dropped: dict[str, int] = field(default_factory=dict)
    """Rule -> matching lines left out because they would have made one series more than
    ``max_series_per_rule``."""
    prefilter_seconds: float = 0.0
    context: Context = field(default_factory=dict)
    """The step/epoch context lines in force at the end of the block (with what was
    handed in): pass it to the next ``scan`` of the same log."""
    first_lines: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    """Error marker -> its first matching lines in the block, in order, at most
    FIRST_LINES: (offset of the line's start in the normalized block, the line's text,
    cut to LINE_TEXT_CHARS). Which error came first is what failure diagnosis reads."""
    exit_code_line: tuple[int, str] | None = None
    """The line that gave ``exit_code`` (offset and text, as in ``first_lines``)."""
    first_line_index: dict[tuple[str, str], int] = field(default_factory=dict)
    """(severity, marker) -> index (from 0) of the first line of the block where that
    marker counted, lines cut at ``\\r\\n``, ``\\r`` and ``\\n``; only for the markers
    ``scan`` was asked about (``first_line_of``)."""


@dataclass(slots=True)
class _Last:
    """The latest value seen for one slot, and where (line offset, rule order)."""

    at: tuple[int, int]
    value: Any


@dataclass(slots=True)
class _LossLine:
    """One line's training loss: where, which rule, its value and the rank of its key;
    ``loss`` is filled for a format rule, and for the vocabulary's line when it is the
    one kept (the step and epoch are read then)."""

    at: int
    index: int
    value: float
    rank: int
    loss: Loss | None
    chunk: bytes
    line_end: int
    spans: Any


@dataclass(slots=True)
class _State:
    """What one scan accumulates across chunks."""

    result: ScanResult
    last: dict[Any, _Last] = field(default_factory=dict)
    marker_lines: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    contexts: dict[int, list[tuple[int, float | None, float | None]]] = field(default_factory=dict)
    """Context rule index -> (line offset, step, epoch) of each line it matched, in order."""
    losses: deque[_LossLine] = field(default_factory=lambda: deque(maxlen=_LOOKBACK_LINES + 1))
    """The last lines with a training loss, in line order (what ``_last_loss`` looks at;
    a block of a million loss lines keeps nine)."""
    fruitless: dict[int, int] = field(default_factory=dict)
    """Vocabulary gauge -> candidate lines read that gave it nothing."""
    series: dict[int, set[Labels]] = field(default_factory=dict)
    """Labelled rule index -> the new label sets it gave in this scan."""
    known: Sequence[Collection[SeriesKey]] = ()
    """The series that exist already (``scan``'s ``known_series``)."""


class RuleSet:
    """Compiled rules, ready to scan blocks of log lines. Immutable and thread-safe.

    Raises re2.error when the rules together exceed RE2's memory budget (``SET_MAX_MEM``);
    ``load_rules`` checks this and names it as a rule problem."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        label_value_max_length: int = 128,
        max_series_per_rule: int = 100,
    ) -> None:
        self.rules = tuple(rules)
        self.label_value_max_length = label_value_max_length
        self.max_series_per_rule = max_series_per_rule
        """A labelled rule gives at most this many label sets per scan; the lines of
        others count in ``ScanResult.series_dropped`` (the store caps across scans)."""
        self._set: Any = None
        if self.rules:
            options = re2_options()
            options.max_mem = SET_MAX_MEM
            rule_set = re2.Set.SearchSet(options)
            for rule in self.rules:
                rule_set.Add("(?m)" + rule.pattern)
            rule_set.Compile()
            self._set = rule_set._set.Match  # the C++ call itself: once per chunk
        index = {rule.name: i for i, rule in enumerate(self.rules)}
        feeders: dict[int, list[int]] = {}
        for i, rule in enumerate(self.rules):
            for name in rule.feeds:
                if name in index:
                    feeders.setdefault(index[name], []).append(i)
        self._feeders = {loss: tuple(contexts) for loss, contexts in feeders.items()}
        """Loss rule index -> the context rules that feed it."""
        self._last_only = frozenset(
            i
            for i, rule in enumerate(self.rules)
            if rule.kind == "exit_code" or (rule.kind == "gauge" and not rule.labels)
        )
        """Rules that keep only the last value: they read backwards from the end."""
        self._losses = frozenset(i for i, rule in enumerate(self.rules) if rule.kind == "loss")
        """Loss rules: every line's loss counts (``loss_values``); read forwards."""
        self._loss_search = _loss_search([self.rules[i] for i in sorted(self._losses)])
        """One search for the lines any loss rule matches: RE2's ``Match`` of the loss
        patterns combined."""
        self._unless: dict[int, tuple[Any, Any]] = {}
        """Marker rules with ``unless`` -> (their pattern's search, runs of lines matching
        ``unless``), see the module's docstring."""
        for i, rule in enumerate(self.rules):
            if rule.kind in ("error", "warning") and rule.unless is not None and not rule.extract:
                runs = _line_runs(rule.unless.pattern)
                if runs is not None:
                    self._unless[i] = ((rule.finder or rule.regex)._regexp.Match, runs)

    def scan(
        self,
        block: bytes,
        *,
        context: Mapping[str, Any] | None = None,
        first_line_of: Collection[tuple[str, str]] = (),
        known_series: Sequence[Collection[SeriesKey]] = (),
    ) -> ScanResult:
        """Run every rule over the lines of ``block`` (raw log bytes).

        ``context``: the ``ScanResult.context`` of the previous block of the same log.
        ``first_line_of``: (severity, marker) pairs whose first line in the block to report
        in ``ScanResult.first_line_index`` (each costs a count of the lines before it).
        ``known_series``: collections of the custom series, (metric, labels), that exist
        already: they always take a line's value, outside ``max_series_per_rule``.
        """
        result = ScanResult()
        carried = _carried(context)
        if not block or self._set is None:
            result.context = carried
            return result
        data = normalize(block)
        view = memoryview(data)
        state = _State(result, known=known_series)
        size = len(data)
        chunks: list[tuple[int, int, list[int]]] = []
        """The chunks where some rule can match: (start, end, those rules, sorted)."""
        match_set, last_only, losses = self._set, self._last_only, self._losses
        start = 0
        while start < size:
            end = (
                size
                if size - start <= CHUNK_BYTES
                else data.rfind(b"\n", start, start + CHUNK_BYTES) + 1
            )
            if end <= start:  # one line longer than a chunk
                end = data.find(b"\n", start + CHUNK_BYTES) + 1 or size
            t0 = time.perf_counter()
            hits: list[int] = match_set(view[start:end])
            result.prefilter_seconds += time.perf_counter() - t0
            if hits:
                hits.sort()
                chunks.append((start, end, hits))
                for index in hits:
                    if index not in last_only and index not in losses:
                        self._run(index, data, start, end, state)
                loss_rules = [index for index in hits if index in losses]
                if loss_rules:
                    self._read_losses(loss_rules, data, start, end, state)
            start = end
        self._last_loss(state)
        for index in sorted(last_only):
            for start, end, hits in reversed(chunks):
                if index in hits and self._run_last(index, data, start, end, state):
                    break
        for key, lines in state.marker_lines.items():
            if lines:
                counts = result.errors if key[0] == "error" else result.warnings
                counts[key[1]] = len(lines)
                if key in first_line_of:
                    result.first_line_index[key] = _line_index(block, data, min(lines))
        for key, slot in state.last.items():
            if key == "exit_code":
                result.exit_code = slot.value
                result.exit_code_line = _line_at(data, slot.at[0])
            elif key == "loss":
                result.loss = self._with_context(slot, state, carried)
            else:
                result.gauges[key[1]] = slot.value
        result.context = self._context_out(state, carried)
        return result

    def _run(self, index: int, data: bytes, start: int, end: int, state: _State) -> None:
        """One rule over one chunk (``data[start:end]``, whole lines): each matching line
        once.

        Lines are told apart by the offset of their end. Value rules only parse what they
        keep: the last usable value (per label set), walking back from the last match.
        """
        rule = self.rules[index]
        t0 = time.perf_counter()
        failures = 0
        unless = self._unless.get(index)
        if unless is not None:
            ends = _lines_unless(unless, data, start, end)
            state.marker_lines.setdefault((rule.kind, rule.marker), set()).update(ends)
            if rule.kind == "error" and ends:
                _keep_first(state.result.first_lines, rule.marker, data, ends)
            _tally(state.result, rule.name, len(ends), failures, time.perf_counter() - t0)
            return
        hits = _matching_lines(rule, data, start, end)
        if rule.extract is not None and rule.kind in {"error", "warning"}:
            hits = [hit for hit in hits if rule.extract(_line_text(data, *hit))]
        matches = len(hits)
        if rule.kind in {"error", "warning"}:
            lines = state.marker_lines.setdefault((rule.kind, rule.marker), set())
            lines.update(line_end for line_end, _ in hits)
            if rule.kind == "error" and hits:
                _keep_first(state.result.first_lines, rule.marker, data, [end for end, _ in hits])
        elif rule.kind == "context":
            self._take_context(index, data, hits, state)
        elif hits:
            failures = self._take_values(rule, index, data, hits, state)
        _tally(state.result, rule.name, matches, failures, time.perf_counter() - t0)

    def _read_losses(
        self, indices: list[int], chunk: bytes, start: int, end: int, state: _State
    ) -> None:
        """The loss rules that can match in one chunk (``chunk[start:end]``, ``indices``
        in load order), forwards, with one search for them all: each candidate line's loss
        from the first rule that gives one there. Only the value is read; the kept line's
        step and epoch are read at the end (``_last_loss``)."""
        rules, result, search = self.rules, state.result, self._loss_search
        pos = start
        while pos < end:
            t0 = time.perf_counter()
            begin = search(_UNANCHORED, chunk, pos, end)[0][0]
            if begin < 0:
                break
            line_start = chunk.rfind(b"\n", 0, begin) + 1
            line_end = chunk.find(b"\n", begin, end)
            if line_end < 0:
                line_end = end
            pos = line_end + 1
            for index in indices:
                rule = rules[index]
                find = (rule.finder or rule.regex)._regexp.Match
                if find(_UNANCHORED, chunk, line_start, line_end)[0][0] < 0:
                    continue
                line = _loss_on_line(rule, index, chunk, line_start, line_end)
                if line is None:
                    _tally(result, rule.name, 0, 0, time.perf_counter() - t0)
                    continue
                if isinstance(line, ValueError):
                    _tally(result, rule.name, 1, 1, time.perf_counter() - t0)
                    continue
                _tally(result, rule.name, 1, 0, time.perf_counter() - t0)
                state.losses.append(line)
                if math.isfinite(line.value):
                    result.loss_count += 1
                    result.loss_sum += line.value
                break

    def _last_loss(self, state: _State) -> None:
        """The loss to keep: the last line's, unless it is a running mean printed right
        after a step's own loss (the epoch's ``avg loss`` after its last step)."""
        losses = state.losses
        if not losses:
            return
        chosen = losses[-1]
        if chosen.rank >= RUNNING_RANK:
            for earlier in reversed(list(losses)[-1 - _LOOKBACK_LINES : -1]):
                if earlier.rank < RUNNING_RANK:
                    chosen = earlier
                    break
        loss = chosen.loss
        rule = self.rules[chosen.index]
        if loss is None and rule.extract is None:  # a format rule: its step and epoch now
            loss = self._value(rule, chosen.chunk, chosen.spans, (), chosen.line_end)[1]
        elif loss is None:
            taken = _extracted(rule, chosen.chunk, chosen.line_end, chosen.spans)
            loss = taken[0] if taken is not None else Loss(chosen.value)
        _keep_last(state.last, "loss", (chosen.at, -chosen.index), loss)

    def _run_last(self, index: int, chunk: bytes, start: int, end: int, state: _State) -> bool:
        """A last-value rule over one chunk (``chunk[start:end]``), from its end backwards:
        the latest matching line with a usable value wins, and the lines before it are
        never read.

        Returns whether to stop: a value was found, or the rule gave up on the block.
        Only the lines read count as matches.
        """
        rule = self.rules[index]
        t0 = time.perf_counter()
        hi = end
        span = _BACKWARD_BYTES
        matches = failures = 0
        found = False
        while hi > start and not found:
            cut = -1 if hi - start <= span else chunk.rfind(b"\n", start, hi - span)
            lo = start if cut < 0 else cut + 1
            hits = _matching_lines(rule, chunk, lo, hi)
            for line_end, spans in reversed(hits):
                if rule.extract is not None:  # a gauge of the vocabulary
                    value = rule.extract(_line_text(chunk, line_end, spans))
                    if value is None:
                        state.fruitless[index] = state.fruitless.get(index, 0) + 1
                        if state.fruitless[index] >= _MAX_FRUITLESS:
                            found = True  # give up on this block: see _MAX_FRUITLESS
                            break
                        continue
                    matches += 1
                    slot = ("gauge", (rule.metric, ()))
                    _keep_last(state.last, slot, (line_end, -index), (value, rule.name))
                    found = True
                    break
                try:
                    slot, value = self._value(rule, chunk, spans, (), line_end)
                except ValueError:
                    matches += 1
                    failures += 1
                    continue
                matches += 1
                _keep_last(state.last, slot, (line_end, -index), value)
                found = True
                break
            hi = lo
            span *= 4
        _tally(state.result, rule.name, matches, failures, time.perf_counter() - t0)
        return found

    def _take_values(
        self,
        rule: Rule,
        index: int,
        chunk: bytes,
        hits: list[tuple[int, Any]],
        state: _State,
    ) -> int:
        """Values from the matching lines of one chunk (line ends are offsets in the block
        ``chunk``); returns the unusable ones."""
        failures = 0
        result = state.result
        if rule.kind == "counter":
            for _, spans in hits:
                try:
                    labels = self._labels(rule, chunk, spans)
                    value = _increment(rule, chunk, spans)
                except ValueError:
                    failures += 1
                    continue
                if not self._admit(rule, index, labels, state):
                    continue
                key = (rule.metric, labels)
                previous = result.counters.get(key, (0.0, rule.name))[0]
                result.counters[key] = (previous + value, rule.name)
            return failures
        if rule.extract is not None:  # the vocabulary's loss or a gauge, in an example
            for line_end, spans in reversed(hits):
                at = (line_end, -index)
                if rule.kind == "loss":
                    taken = _extracted(rule, chunk, line_end, spans)
                    if taken is not None:
                        _keep_last(state.last, "loss", at, taken[0])
                        break
                else:
                    value = rule.extract(_line_text(chunk, line_end, spans))
                    if value is not None:
                        _keep_last(state.last, ("gauge", (rule.metric, ())), at, (value, rule.name))
                        break
            return 0
        done: set[Labels] = set()
        for line_end, spans in reversed(hits):
            try:
                labels = self._labels(rule, chunk, spans) if rule.labels else ()
                if labels in done:
                    continue
                slot, value = self._value(rule, chunk, spans, labels, line_end)
            except ValueError:
                failures += 1
                continue
            if rule.labels and not self._admit(rule, index, labels, state):
                continue
            _keep_last(state.last, slot, (line_end, -index), value)
            done.add(labels)
            if not rule.labels:
                break
        return failures

    def _admit(self, rule: Rule, index: int, labels: Labels, state: _State) -> bool:
        """Whether a labelled rule's line may give its label set: a series that exists
        already, one it gave before in this scan, or a new one under
        ``max_series_per_rule``; a line refused counts in
        ``series_dropped``. Memory and time stay bounded whatever a log prints."""
        given = state.series.setdefault(index, set())
        if labels in given or any((rule.metric, labels) in known for known in state.known):
            return True
        if len(given) < self.max_series_per_rule:
            given.add(labels)
            return True
        dropped = state.result.series_dropped
        dropped[rule.name] = dropped.get(rule.name, 0) + 1
        return False

    def _take_context(
        self, index: int, chunk: bytes, hits: list[tuple[int, Any]], state: _State
    ) -> None:
        rule = self.rules[index]
        lines = state.contexts.setdefault(index, [])
        for line_end, spans in hits:
            step = _optional_number(chunk, spans, rule.group_step)
            epoch = _optional_number(chunk, spans, rule.group_epoch)
            if step is not None or epoch is not None:
                lines.append((line_end, step, epoch))

    def _value(
        self, rule: Rule, chunk: bytes, spans: Any, labels: Labels, line_end: int
    ) -> tuple[Any, Any]:
        """The slot a matching line fills and its value; ValueError when unusable."""
        del line_end
        if rule.group_signal is not None and spans[rule.group_signal][0] >= 0:
            begin, end = spans[rule.group_signal]
            return "exit_code", -float(signal_number(chunk[begin:end].decode("ascii", "replace")))
        value = _value_of(rule, chunk, spans)
        if rule.kind == "exit_code":
            if not value.is_integer():
                raise ValueError("exit code is not an integer")
            return "exit_code", value
        if rule.kind == "loss":
            step = _optional_number(chunk, spans, rule.group_step)
            epoch = _optional_number(chunk, spans, rule.group_epoch)
            return "loss", Loss(value, step, epoch)
        return ("gauge", (rule.metric, labels)), (value, rule.name)

    def _labels(self, rule: Rule, chunk: bytes, spans: Any) -> Labels:
        pairs = []
        for name, group in zip(rule.labels, rule.group_labels, strict=True):
            begin, end = spans[group]
            if begin < 0:
                raise ValueError(f"label {name} did not capture")
            pairs.append((name, label_value(chunk[begin:end], self.label_value_max_length)))
        return tuple(sorted(pairs))

    # --- context --------------------------------------------------------------------

    def _with_context(self, slot: _Last, state: _State, carried: Context) -> Loss:
        """The last loss, its missing step/epoch taken from the context lines before it."""
        loss: Loss = slot.value
        line_end, order = slot.at
        feeders = self._feeders.get(-order)
        if not feeders or (loss.step is not None and loss.epoch is not None):
            return loss
        step, epoch = loss.step, loss.epoch
        if step is None:
            step = self._context_value(feeders, 1, line_end, state, carried)
        if epoch is None:
            epoch = self._context_value(feeders, 2, line_end, state, carried)
        return Loss(loss.value, step, epoch)

    def _context_value(
        self,
        feeders: tuple[int, ...],
        position: int,
        line_end: int,
        state: _State,
        carried: Context,
    ) -> float | None:
        """The step (position 1) or epoch (2) of the last context line up to ``line_end``."""
        best: tuple[int, float | None] = (-2, None)
        for index in feeders:
            lines = state.contexts.get(index, [])
            at = bisect.bisect_right(lines, line_end, key=lambda hit: hit[0])
            for hit in reversed(lines[:at]):
                value = hit[position]
                if value is not None:
                    if hit[0] > best[0]:
                        best = (hit[0], value)
                    break
            else:
                handed = carried.get(self.rules[index].name)
                if handed is not None and handed[position - 1] is not None and best[0] < -1:
                    best = (-1, handed[position - 1])
        return best[1]

    def _context_out(self, state: _State, carried: Context) -> Context:
        out: Context = dict(carried)
        for index, lines in state.contexts.items():
            name = self.rules[index].name
            step, epoch = out.get(name, (None, None))
            for _, line_step, line_epoch in lines:
                step = line_step if line_step is not None else step
                epoch = line_epoch if line_epoch is not None else epoch
            out[name] = (step, epoch)
        return out

    # --- examples -------------------------------------------------------------------

    def check_examples(self) -> list[str]:
        """Run every rule's examples; one line per failure (empty when all pass)."""
        failures = []
        for index, rule in enumerate(self.rules):
            for number, example in enumerate(rule.examples):
                problem = self._check_example(index, rule, example)
                if problem and example.where:  # a vocabulary example, named where written
                    failures.append(f"{example.where} ({rule.name}): {problem}")
                elif problem:
                    failures.append(f"{rule.source} ({rule.name}): examples[{number}]: {problem}")
        return failures

    def _check_example(self, index: int, rule: Rule, example: Example) -> str:
        line = normalize(example.line.encode())
        if line.count(b"\n") > 1:
            return "an example is one line"
        state = _State(ScanResult())
        self._run(index, line, 0, len(line), state)
        result = state.result
        matched = result.rule_matches.get(rule.name, 0) > 0
        if rule.extract is not None and rule.kind not in ("error", "warning"):
            matched = bool(state.last)  # a candidate line that holds no value is no match
        if not example.match:
            return "" if not matched else f"matched {example.line!r}, which it must not"
        if not matched:
            return f"did not match {example.line!r}"
        if rule.kind in ("error", "warning"):
            return ""
        if result.rule_failures or (rule.kind == "context" and not state.contexts):
            return "matched, but the value or a label was unusable"
        got_value, got_step, got_epoch, got_labels = _observed(rule, state)
        expected = [
            ("value", example.value, got_value),
            ("step", example.step, got_step),
            ("epoch", example.epoch, got_epoch),
        ]
        for what, want, got in expected:
            if want is not None and not _same(want, got):
                return f"{what} is {got}, expected {want}"
        if example.labels is not None and example.labels != got_labels:
            return f"labels are {got_labels}, expected {example.labels}"
        return ""


def _loss_search(rules: Sequence[Rule]) -> Any:
    """RE2's ``Match`` of the loss rules' patterns combined, without groups: it finds the
    next line where any of them matches, in one scan (None without loss rules). Raises
    re2.error when the combination exceeds RE2's memory budget (load_rules reports it)."""
    if not rules:
        return None
    options = re2_options()
    options.max_mem = SET_MAX_MEM
    combined = "|".join(f"(?:{without_groups(rule.pattern)})" for rule in rules)
    return re2.compile("(?m)" + combined, options)._regexp.Match


def _loss_on_line(
    rule: Rule, index: int, chunk: bytes, line_start: int, line_end: int
) -> _LossLine | ValueError | None:
    """One loss rule on one line it matches: the line's loss (its value only), a
    ValueError when the value is unusable, or None when the rule gives none there (the
    line matches ``unless``, or the vocabulary finds no training loss on it)."""
    unless = rule.unless
    if (
        unless is not None
        and unless._regexp.Match(_UNANCHORED, chunk, line_start, line_end)[0][0] >= 0
    ):
        return None
    if rule.extract_fast is not None:
        fast = rule.extract_fast(chunk[line_start:line_end])
        if fast is None:
            return None
        spans = ((line_start, line_end),)
        return _LossLine(line_end, index, fast[0], fast[1], None, chunk, line_end, spans)
    if rule.extract is not None:  # a vocabulary rule without a fast reader
        spans = ((line_start, line_end),)
        found = _extracted(rule, chunk, line_end, spans)
        if found is None:
            return None
        loss, rank = found
        return _LossLine(line_end, index, loss.value, rank, loss, chunk, line_end, spans)
    spans = rule.regex._regexp.Match(_UNANCHORED, chunk, line_start, line_end)
    if spans[0][0] < 0:  # not reached: the set matched this rule on this line
        return None
    try:
        value = _value_of(rule, chunk, spans)
    except ValueError as exc:
        return exc
    return _LossLine(line_end, index, value, 0, None, chunk, line_end, spans)


def _extracted(rule: Rule, chunk: bytes, line_end: int, spans: Any) -> tuple[Loss, int] | None:
    """A vocabulary loss rule on one candidate line: (loss, rank of its key), or None."""
    if rule.extract is None:
        return None
    found = rule.extract(_line_text(chunk, line_end, spans))
    if found is None:
        return None
    value, step, epoch, rank = found
    return Loss(value, step, epoch), rank


def _line_text(chunk: bytes, line_end: int, spans: Any) -> str:
    """The text of the line ending at ``line_end`` that holds the match ``spans``."""
    line_start = chunk.rfind(b"\n", 0, spans[0][0]) + 1
    return chunk[line_start:line_end].decode("utf-8", "replace")


def _keep_first(
    first: dict[str, list[tuple[int, str]]],
    marker: str,
    chunk: bytes,
    line_ends: list[int],
) -> None:
    """Merge a rule's first matching lines in a chunk (their ends, in order) into the
    marker's first lines."""
    kept = first.setdefault(marker, [])
    for line_end in line_ends[:FIRST_LINES]:
        line_start = chunk.rfind(b"\n", 0, line_end) + 1
        at = line_start
        if len(kept) >= FIRST_LINES and at >= kept[-1][0]:
            break
        if any(seen == at for seen, _ in kept):
            continue
        bisect.insort(kept, (at, _text(chunk, line_start, line_end)))
        del kept[FIRST_LINES:]


def _line_at(data: bytes, line_end: int) -> tuple[int, str]:
    """(start, text) of the line of ``data`` that ends at ``line_end``."""
    line_start = data.rfind(b"\n", 0, line_end) + 1
    return line_start, _text(data, line_start, line_end)


def _text(data: bytes, start: int, end: int) -> str:
    """The text of ``data[start:end]``, cut to LINE_TEXT_CHARS (4 bytes a character at most)."""
    raw = data[start : min(end, start + 4 * LINE_TEXT_CHARS)]
    return raw.decode("utf-8", "replace")[:LINE_TEXT_CHARS]


def _tally(result: ScanResult, name: str, matches: int, failures: int, seconds: float) -> None:
    """Add one rule's work on one chunk to the scan's self-metrics."""
    if matches:
        result.rule_matches[name] = result.rule_matches.get(name, 0) + matches
    if failures:
        result.rule_failures[name] = result.rule_failures.get(name, 0) + failures
    result.rule_seconds[name] = result.rule_seconds.get(name, 0.0) + seconds


def _matching_lines(rule: Rule, chunk: bytes, lo: int, hi: int) -> list[tuple[int, Any]]:
    """(line end, group spans) of each line of ``chunk[lo:hi]`` the rule matches, once
    per line, in order; lines that also match ``unless`` left out.

    The search runs without capturing groups (RE2's DFA, fast over long stretches of
    text); a rule with groups then reads them on the matching line alone, from where the
    match starts.
    """
    find = (rule.finder or rule.regex)._regexp.Match
    groups = rule.regex._regexp.Match if rule.regex.groups else None
    unless = rule.unless._regexp.Match if rule.unless is not None else None
    hits: list[tuple[int, Any]] = []
    pos = lo
    while pos < hi:
        spans = find(_UNANCHORED, chunk, pos, hi)
        begin = spans[0][0]
        if begin < 0:
            break
        line_end = chunk.find(b"\n", begin)
        if line_end < 0:
            line_end = hi
        pos = line_end + 1
        if unless is not None:
            line_start = chunk.rfind(b"\n", 0, begin) + 1
            if unless(_UNANCHORED, chunk, line_start, line_end)[0][0] >= 0:
                continue
        if groups is not None:
            spans = groups(_ANCHOR_START, chunk, begin, line_end)
            if spans[0][0] < 0:  # not reached: the same pattern matched from here
                continue
        hits.append((line_end, spans))
    return hits


def _line_runs(pattern: str) -> Any:
    """An RE2 pattern that matches, from a line start, the run of whole consecutive lines
    (each with its ``\\n``) where ``pattern`` matches; its ``Match``, or None if RE2 refuses
    it. ``never_nl`` keeps ``pattern`` and ``[^\\n]`` on one line; ``\\C`` (one byte)
    followed by a line start is the line's ``\\n``. Without capture groups, RE2 finds the
    run with its DFA alone."""
    options = re2_options()
    options.never_capture = True
    options.max_mem = RUN_MAX_MEM
    try:
        return re2.compile(rf"(?m)(?:^[^\n]*(?:{pattern})[^\n]*\C)+^", options)._regexp.Match
    except re2.error:
        return None


def _lines_unless(runs: tuple[Any, Any], data: bytes, start: int, end: int) -> list[int]:
    """The line ends of the lines of ``data[start:end]`` (whole lines) where a marker
    rule's pattern matches and its ``unless`` does not.

    The pattern finds the next candidate line; from that line's start, one anchored
    match of the ``unless`` runs skips it and every line after it that ``unless``
    matches too. Python work per run of rejected lines, and per line that counts.
    """
    pattern, unless_runs = runs
    ends: list[int] = []
    pos = start
    while pos < end:
        begin = pattern(_UNANCHORED, data, pos, end)[0][0]
        if begin < 0:
            break
        newline = data.rfind(b"\n", pos, begin)
        line_start = pos if newline < 0 else newline + 1
        skip_to = unless_runs(_ANCHOR_START, data, line_start, end)[0][1]
        if skip_to > line_start:
            pos = skip_to
        else:
            line_end = data.find(b"\n", begin)
            ends.append(line_end)
            pos = line_end + 1
    return ends


def _line_index(block: bytes, data: bytes, line_end: int) -> int:
    """The index (from 0) among the lines of ``block`` (raw) of the line that ends at
    ``line_end`` in ``data`` (``block`` normalized).

    ``data`` has a ``\\n`` for each ``\\r`` or ``\\n`` of ``block``, so a ``\\r\\n`` made an
    empty line that is not one: those before the line are taken back off.
    """
    breaks = data.count(b"\n", 0, line_end)
    if b"\r\n" not in block:
        return breaks
    return breaks - block.count(b"\r\n", 0, raw_offset(block, line_end))


def _carried(context: Mapping[str, Any] | None) -> Context:
    """A context handed in (perhaps read back from a state file), checked."""
    carried: Context = {}
    for name, value in (context or {}).items():
        if isinstance(value, tuple | list) and len(value) == 2:
            step, epoch = (_float_or_none(v) for v in value)
            carried[str(name)] = (step, epoch)
    return carried


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _observed(
    rule: Rule, state: _State
) -> tuple[float | None, float | None, float | None, dict[str, str]]:
    last = state.last
    if rule.kind == "exit_code":
        return last["exit_code"].value, None, None, {}
    if rule.kind == "loss":
        loss: Loss = last["loss"].value
        return loss.value, loss.step, loss.epoch, {}
    if rule.kind == "context":
        (_, step, epoch) = next(iter(state.contexts.values()))[-1]
        return None, step, epoch, {}
    if rule.kind == "gauge":
        ((_, (metric, labels)), slot) = next(iter(last.items()))
        del metric
        return slot.value[0], None, None, dict(labels)
    ((_, labels), (value, _rule)) = next(iter(state.result.counters.items()))
    return value, None, None, dict(labels)


def _same(want: float, got: float | None) -> bool:
    if got is None:
        return False
    if math.isnan(want):
        return math.isnan(got)
    return math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-12)


def _keep_last(last: dict[Any, _Last], key: Any, at: tuple[int, int], value: Any) -> None:
    slot = last.get(key)
    if slot is None or at > slot.at:
        last[key] = _Last(at, value)


def _number(chunk: bytes, span: tuple[int, int]) -> float:
    begin, end = span
    if begin < 0:
        raise ValueError("value did not capture")
    return parse_number(chunk[begin:end].decode("ascii", "replace"))


def _value_of(rule: Rule, chunk: bytes, spans: Any) -> float:
    """The value a matching line gives: its value group, or the sum of its numbers."""
    if rule.group_value is None:
        raise ValueError("no value group")
    span = spans[rule.group_value]
    if not rule.sum_value:
        return _number(chunk, span)
    begin, end = span
    if begin < 0:
        raise ValueError("value did not capture")
    numbers = _NUMBERS.findall(chunk, begin, end)
    if not numbers:
        raise ValueError("no number to add up")
    values = [parse_number(n.decode("ascii")) for n in numbers]
    if len(values) >= 4 and _is_total(numbers[-1], values[-1], math.fsum(values[:-1])):
        return values[-1]  # the row prints its total already (YOLOv5/YOLOv7's `total` column)
    return math.fsum(values)


def _is_total(text: bytes, value: float, rest: float) -> bool:
    """Whether ``value`` (printed as ``text``) is ``rest`` rounded to the digits printed."""
    if not (math.isfinite(value) and math.isfinite(rest)) or b"e" in text.lower():
        return False
    decimals = len(text.partition(b".")[2])
    return abs(value - rest) <= 10.0**-decimals


def _increment(rule: Rule, chunk: bytes, spans: Any) -> float:
    """What one line adds to a counter: its value, or 1 without a value group."""
    if rule.group_value is None:
        return 1.0
    value = _value_of(rule, chunk, spans)
    if value < 0 or math.isnan(value):
        raise ValueError("a counter cannot go down")
    if math.isinf(value):  # 1e309: it would make the counter inf for good
        raise ValueError("a counter cannot grow by infinity")
    return value


def _optional_number(chunk: bytes, spans: Any, group: int | None) -> float | None:
    if group is None or spans[group][0] < 0:
        return None
    try:
        return _number(chunk, spans[group])
    except ValueError:
        return None


def label_value(raw: bytes, max_length: int) -> str:
    """A label value taken from the log: decoded, control characters removed, capped."""
    text = raw.decode("utf-8", "replace")
    text = "".join(ch for ch in text if ch.isprintable())
    if len(text) > max_length:
        text = text[: max_length - 1] + "…"
    return text
