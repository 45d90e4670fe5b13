"""Run compiled rules over new log lines, fast, and collect what they extract.

No loop of every rule over every line: the block is cut into chunks of whole lines, one
RE2 set match per chunk says which rules can match in it at all, and only those rules
search that chunk, each with one linear-time scan. Most chunks of a training log hold
loss lines and noise, so most rules never run on most of the text.

Counting follows CONTRACT.md: a marker counts each line where one of its rules matches
once; value rules (exit code, loss, gauges) keep the value of the last line that
matched; counters add per matching line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import re2

from exporter.rules.model import Example, Rule, parse_number, re2_options
from exporter.rules.normalize import normalize

_UNANCHORED = re2._Anchor.UNANCHORED

CHUNK_BYTES = 64 * 1024
"""Roughly how much text one set match covers."""

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]
"""A custom metric's series: (metric name, sorted label pairs)."""


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
    gauges: dict[SeriesKey, tuple[float, str]] = field(default_factory=dict)
    """Custom gauge series -> (last value, rule)."""
    counters: dict[SeriesKey, tuple[float, str]] = field(default_factory=dict)
    """Custom counter series -> (increment, rule)."""
    rule_matches: dict[str, int] = field(default_factory=dict)
    rule_failures: dict[str, int] = field(default_factory=dict)
    """Rule -> matching lines whose value or label could not be used."""
    rule_seconds: dict[str, float] = field(default_factory=dict)
    prefilter_seconds: float = 0.0


@dataclass(slots=True)
class _Last:
    """The latest value seen for one slot, and where (line offset, rule order)."""

    at: tuple[int, int]
    value: Any


class RuleSet:
    """Compiled rules, ready to scan blocks of log lines. Immutable and thread-safe."""

    def __init__(self, rules: Sequence[Rule], *, label_value_max_length: int = 128) -> None:
        self.rules = tuple(rules)
        self.label_value_max_length = label_value_max_length
        self._set: Any = None
        if self.rules:
            rule_set = re2.Set.SearchSet(re2_options())
            for rule in self.rules:
                rule_set.Add("(?m)" + rule.pattern)
            rule_set.Compile()
            self._set = rule_set

    def scan(self, block: bytes) -> ScanResult:
        """Run every rule over the lines of ``block`` (raw log bytes)."""
        result = ScanResult()
        if not block or self._set is None:
            return result
        data = normalize(block)
        last: dict[Any, _Last] = {}
        marker_lines: dict[tuple[str, str], set[int]] = {}
        size = len(data)
        start = 0
        while start < size:
            end = (
                size
                if size - start <= CHUNK_BYTES
                else data.rfind(b"\n", start, start + CHUNK_BYTES) + 1
            )
            if end <= start:  # one line longer than a chunk
                end = data.find(b"\n", start + CHUNK_BYTES) + 1 or size
            chunk = data[start:end]
            t0 = time.perf_counter()
            hits = self._set.Match(chunk) or ()
            result.prefilter_seconds += time.perf_counter() - t0
            for index in sorted(hits):
                self._run(index, chunk, start, result, last, marker_lines)
            start = end
        for (severity, marker), lines in marker_lines.items():
            counts = result.errors if severity == "error" else result.warnings
            counts[marker] = counts.get(marker, 0) + len(lines)
        for key, slot in last.items():
            if key == "exit_code":
                result.exit_code = slot.value
            elif key == "loss":
                result.loss = slot.value
            else:
                result.gauges[key[1]] = slot.value
        return result

    def _run(
        self,
        index: int,
        chunk: bytes,
        offset: int,
        result: ScanResult,
        last: dict[Any, _Last],
        marker_lines: dict[tuple[str, str], set[int]],
    ) -> None:
        """One rule over one chunk: each matching line once.

        Lines are told apart by the offset of their end. Value rules only parse what they
        keep: the last usable value (per label set), walking back from the last match.
        """
        rule = self.rules[index]
        t0 = time.perf_counter()
        match = rule.regex._regexp.Match
        unless = rule.unless._regexp.Match if rule.unless is not None else None
        size = len(chunk)
        hits: list[tuple[int, Any]] = []
        lines: set[int] | None = None
        if rule.kind in {"error", "warning"}:
            lines = marker_lines.setdefault((rule.kind, rule.marker), set())
        pos = marked = 0
        while pos < size:
            spans = match(_UNANCHORED, chunk, pos, size)
            begin = spans[0][0]
            if begin < 0:
                break
            line_end = chunk.find(b"\n", begin)
            pos = line_end + 1
            if unless is not None:
                line_start = chunk.rfind(b"\n", 0, begin) + 1
                if unless(_UNANCHORED, chunk, line_start, line_end)[0][0] >= 0:
                    continue
            if lines is not None:
                lines.add(offset + line_end)
                marked += 1
            else:
                hits.append((offset + line_end, spans))
        matches = len(hits) + marked
        failures = self._take_values(rule, index, chunk, offset, hits, result, last) if hits else 0
        if matches:
            result.rule_matches[rule.name] = result.rule_matches.get(rule.name, 0) + matches
        if failures:
            result.rule_failures[rule.name] = result.rule_failures.get(rule.name, 0) + failures
        result.rule_seconds[rule.name] = (
            result.rule_seconds.get(rule.name, 0.0) + time.perf_counter() - t0
        )

    def _take_values(
        self,
        rule: Rule,
        index: int,
        chunk: bytes,
        offset: int,
        hits: list[tuple[int, Any]],
        result: ScanResult,
        last: dict[Any, _Last],
    ) -> int:
        """Values from the matching lines of one chunk; returns the unusable ones."""
        failures = 0
        if rule.kind == "counter":
            for _, spans in hits:
                try:
                    labels = self._labels(rule, chunk, spans)
                    value = _increment(chunk, spans, rule.group_value)
                except ValueError:
                    failures += 1
                    continue
                key = (rule.metric, labels)
                previous = result.counters.get(key, (0.0, rule.name))[0]
                result.counters[key] = (previous + value, rule.name)
            return failures
        done: set[Labels] = set()
        for line_end, spans in reversed(hits):
            try:
                labels = self._labels(rule, chunk, spans) if rule.labels else ()
                if labels in done:
                    continue
                slot, value = self._value(rule, chunk, spans, labels)
            except ValueError:
                failures += 1
                continue
            _keep_last(last, slot, (line_end, -index), value)
            done.add(labels)
            if not rule.labels:
                break
        return failures

    def _value(self, rule: Rule, chunk: bytes, spans: Any, labels: Labels) -> tuple[Any, Any]:
        """The slot a matching line fills and its value; ValueError when unusable."""
        value = _number(chunk, spans[rule.group_value])
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

    # --- examples -------------------------------------------------------------------

    def check_examples(self) -> list[str]:
        """Run every rule's examples; one line per failure (empty when all pass)."""
        failures = []
        for index, rule in enumerate(self.rules):
            for number, example in enumerate(rule.examples):
                problem = self._check_example(index, rule, example)
                if problem:
                    failures.append(f"{rule.source} ({rule.name}): examples[{number}]: {problem}")
        return failures

    def _check_example(self, index: int, rule: Rule, example: Example) -> str:
        line = normalize(example.line.encode())
        if line.count(b"\n") > 1:
            return "an example is one line"
        result = ScanResult()
        last: dict[Any, _Last] = {}
        self._run(index, line, 0, result, last, {})
        matched = result.rule_matches.get(rule.name, 0) > 0
        if not example.match:
            return "" if not matched else f"matched {example.line!r}, which it must not"
        if not matched:
            return f"did not match {example.line!r}"
        if rule.kind in ("error", "warning"):
            return ""
        if result.rule_failures:
            return "matched, but the value or a label was unusable"
        got_value, got_step, got_epoch, got_labels = _observed(rule, result, last)
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


def _observed(
    rule: Rule, result: ScanResult, last: dict[Any, _Last]
) -> tuple[float | None, float | None, float | None, dict[str, str]]:
    if rule.kind == "exit_code":
        return last["exit_code"].value, None, None, {}
    if rule.kind == "loss":
        loss: Loss = last["loss"].value
        return loss.value, loss.step, loss.epoch, {}
    if rule.kind == "gauge":
        ((_, (metric, labels)), slot) = next(iter(last.items()))
        del metric
        return slot.value[0], None, None, dict(labels)
    ((_, labels), (value, _rule)) = next(iter(result.counters.items()))
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


def _increment(chunk: bytes, spans: Any, group: int | None) -> float:
    """What one line adds to a counter: its value, or 1 without a value group."""
    if group is None:
        return 1.0
    value = _number(chunk, spans[group])
    if value < 0 or math.isnan(value):
        raise ValueError("a counter cannot go down")
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
