"""Rule files: their format, loading and validation.

A rule file is YAML with a list of rules. Each rule has a ``name``, a ``kind`` that says
what it feeds, a ``pattern`` (RE2 syntax, run on one log line at a time, unanchored), and
``examples`` that ``modelarts-exporter rules test`` runs::

    rules:
      - name: cuda_oom
        kind: error               # error | warning | exit_code | loss | gauge | counter | context
        marker: cuda_oom          # error/warning: the `marker` label (default: the name)
        pattern: 'CUDA out of memory|CUDA error: out of memory'
        unless: 'cudaErrorMemoryAllocation expected'   # optional: lines matching this don't count
        examples:
          - 'RuntimeError: CUDA out of memory. Tried to allocate 16.00 MiB'
          - line: 'cuda memory summary'
            match: false

      - name: rank_tokens_per_second
        kind: gauge               # gauge: last value; counter: + value (or + 1) per line
        metric: modelarts_task_rank_tokens_per_second
        help: Training throughput printed by the trainer.
        pattern: 'tokens/s: (?P<value>{NUM}) rank (?P<rank>\\d+)'
        labels: [rank]            # named groups that become labels
        examples:
          - line: 'step 10 tokens/s: 1520.5 rank 0'
            value: 1520.5
            labels: {rank: '0'}

Named groups: ``value`` (required for exit_code, loss and gauge; optional for counter;
an exit_code rule may capture ``signal`` instead: a process killed by signal 9,
``SIGKILL`` or ``Killed`` ends with code -9, as launchers print it),
``step`` and ``epoch`` (loss, context), and the groups listed in ``labels``. ``{NUM}`` in
a pattern stands for a number as training logs print it (``2.5e-3``, ``-0.07``, ``nan``,
``inf``...). Patterns run on RE2, a linear-time engine: no pattern can hang the
exporter, and the constructs RE2 lacks (look-around, back-references) are refused at
load with RE2's reason; ``unless`` covers most needs for a negative look-ahead, and
``(?:^|[^\\w])`` replaces a negative look-behind.

Value rules (exit_code, loss, gauge) keep the value of the last matching line; when
several loss rules match one line, the rule loaded first wins (files load in name order,
rules in file order), so specific formats go before catch-alls.

Two keys cover what one line cannot say by itself:

``sum: true`` (loss, gauge, counter)
    The ``value`` group spans several numbers and the value is their sum: ultralytics
    prints no total loss, only one column per loss term::

        - name: ultralytics
          kind: loss
          sum: true
          pattern: '^\\s*(?P<epoch>\\d+)/\\d+\\s+[\\d.]+G\\s+(?P<value>(?:{NUM}\\s+)+)\\d+\\s+\\d+:'

``kind: context`` with ``feeds:``
    A line that only gives a ``step`` and/or ``epoch`` for the loss lines of the rules in
    ``feeds`` that come after it and lack them: Keras prints ``Epoch 3/10`` on a line of its
    own, then progress lines without an epoch. The last such line before the loss line
    gives the value; ``ScanResult.context`` hands the last one of a block to the next
    ``scan`` (``scan(block, context=...)``), so a header seen in an earlier poll still
    counts::

        - name: keras_epoch_header
          kind: context
          pattern: '^Epoch (?P<epoch>\\d+)/\\d+\\s*$'
          feeds: [keras_progress, keras_epoch_end]
          examples:
            - line: 'Epoch 3/10'
              epoch: 3

Every problem is reported at load, each on one line naming the file, the rule and the key:
YAML errors (with line and column), unknown keys, patterns RE2 refuses (with its reason),
missing ``value`` groups, duplicate rule names across files, metrics that clash with the
exporter's own or are fed with another kind or labels, ``feeds`` naming no loss rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import re2
import yaml

from .telemetry import GAUGES
from .vocabfile import VocabularySpec, parse_vocabulary

NUM = r"[-+]?(?:nan|NaN|NAN|-?inf|inf|Inf|INF|Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
"""A number as training logs print it."""

MAX_PATTERN_LENGTH = 4000
KINDS = ("error", "warning", "exit_code", "loss", "gauge", "counter", "context")
Kind = Literal["error", "warning", "exit_code", "loss", "gauge", "counter", "context"]
VALUE_KINDS = frozenset({"exit_code", "loss", "gauge"})
"""Kinds whose pattern must capture a ``value``."""

RESERVED_LABELS = frozenset({"training_job_id", "task_id", "job", "instance", "le", "quantile"})
"""Label names a rule cannot take: the exporter's own, Prometheus' target labels, and
the histogram/summary ones."""

RESERVED_PREFIXES = ("modelarts_exporter_", "process_", "python_")
"""Names of the exporter's own metrics and prometheus_client's process metrics."""

BUILTIN_METRICS = frozenset(
    {
        "modelarts_task_log_size_bytes",
        "modelarts_task_log_window_bytes",
        "modelarts_task_log_processed_bytes",
        "modelarts_task_log_skipped_bytes",
        "modelarts_task_log_resets",
        "modelarts_task_log_lines",
        "modelarts_task_log_errors",
        "modelarts_task_log_warnings",
        "modelarts_task_exit_code",
        "modelarts_task_loss",
        "modelarts_task_step",
        "modelarts_task_epoch",
        "modelarts_task_last_log_growth_timestamp_seconds",
        "modelarts_task_up",
        "modelarts_training_job_info",
        "modelarts_training_job_phase",
        "modelarts_task_loss_values",
        "modelarts_task_failure_info",
        *(gauge.metric for gauge in GAUGES),
    }
)

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_GROUP_NAME = re.compile(r"\(\?P<(\w+)>")
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_NAME_LENGTH = 100


class RuleError(Exception):
    """Rule files that cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --- the file format ------------------------------------------------------------------
#
# Checked by hand rather than with a schema library: the checks are few, the messages
# say what to write, and `analyze` starts without importing one (~0.2 s saved).

_RULE_KEYS = (
    "name",
    "kind",
    "pattern",
    "marker",
    "unless",
    "metric",
    "help",
    "labels",
    "sum",
    "feeds",
    "examples",
    "description",
)
_EXAMPLE_KEYS = ("line", "match", "value", "step", "epoch", "labels")


@dataclass(frozen=True, slots=True)
class Example:
    line: str
    match: bool = True
    value: float | None = None
    step: float | None = None
    epoch: float | None = None
    labels: dict[str, str] | None = None
    where: str = ""
    """Where the example was written when it is not the rule's own ``examples[N]`` (a
    vocabulary example: ``file: vocabulary.examples[N]``); failures name it."""


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One rule as written in its file, checked for shape (not yet compiled)."""

    name: str
    kind: Kind
    pattern: str
    marker: str | None = None
    unless: str | None = None
    metric: str | None = None
    help: str | None = None
    labels: tuple[str, ...] = ()
    sum: bool = False
    feeds: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()
    description: str | None = None


class _Fields:
    """Reads the keys of one YAML mapping, appending a problem for each bad one."""

    def __init__(self, data: dict[Any, Any], where: str, problems: list[str]) -> None:
        self.data = data
        self.where = where
        self.problems = problems

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{self.where}: {key}: {text}")

    def unknown(self, known: Sequence[str]) -> None:
        for key in self.data:
            if key not in known:
                self.problem(str(key), "unknown key (known: " + ", ".join(known) + ")")

    def text(
        self,
        key: str,
        *,
        required: bool = False,
        shape: re.Pattern[str] | None = None,
        max_length: int | None = None,
    ) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.problem(key, "missing")
            return None
        if not isinstance(value, str):
            self.problem(key, "must be text")
            return None
        if required and not value:
            self.problem(key, "must not be empty")
            return None
        if shape is not None and not shape.fullmatch(value):
            self.problem(key, f"{value!r} must match {shape.pattern}")
            return None
        if max_length is not None and len(value) > max_length:
            self.problem(key, f"longer than {max_length} characters")
            return None
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.problem(key, "must be true or false")
            return default
        return value

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, "must be a number (.nan and .inf for NaN and infinity)")
            return None
        return float(value)

    def names(self, key: str, shape: re.Pattern[str]) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(key, "must be a list")
            return ()
        names = []
        for item in value:
            if not isinstance(item, str) or not shape.fullmatch(item):
                self.problem(key, f"{item!r} must match {shape.pattern}")
            else:
                names.append(item)
        return tuple(names)


def _parse_example(data: Any, where: str, problems: list[str]) -> Example | None:
    if isinstance(data, str):
        return Example(line=data)
    if not isinstance(data, dict):
        problems.append(f"{where}: an example is a line of text or a mapping with `line:`")
        return None
    before = len(problems)
    fields = _Fields(data, where, problems)
    fields.unknown(_EXAMPLE_KEYS)
    line = fields.text("line", required=True)
    labels = data.get("labels")
    if labels is not None and not (
        isinstance(labels, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    ):
        fields.problem("labels", "must map label names to quoted text values")
    example = Example(
        line=line or "",
        match=fields.flag("match", True),
        value=fields.number("value"),
        step=fields.number("step"),
        epoch=fields.number("epoch"),
        labels=labels,
    )
    return example if len(problems) == before else None


def _parse_rule(data: Any, where: str, problems: list[str]) -> RuleSpec | None:
    if not isinstance(data, dict):
        problems.append(f"{where}: a rule is a mapping (name, kind, pattern, ...)")
        return None
    if isinstance(data.get("name"), str):
        where += f" ({data['name']})"
    before = len(problems)
    fields = _Fields(data, where, problems)
    fields.unknown(_RULE_KEYS)
    name = fields.text("name", required=True, shape=_NAME, max_length=MAX_NAME_LENGTH)
    kind = fields.text("kind", required=True)
    if kind is not None and kind not in KINDS:
        fields.problem("kind", f"{kind!r} must be one of " + ", ".join(KINDS))
    pattern = fields.text("pattern", required=True)
    marker = fields.text("marker", shape=_NAME, max_length=MAX_NAME_LENGTH)
    unless = fields.text("unless")
    if unless == "":
        fields.problem("unless", "must not be empty")
    metric = fields.text("metric", shape=_METRIC)
    help_text = fields.text("help")
    description = fields.text("description")
    labels = fields.names("labels", _LABEL)
    feeds = fields.names("feeds", _NAME)
    sum_value = fields.flag("sum", False)
    examples: list[Example] = []
    raw_examples = data.get("examples", [])
    if not isinstance(raw_examples, list):
        fields.problem("examples", "must be a list")
        raw_examples = []
    for number, raw in enumerate(raw_examples):
        example = _parse_example(raw, f"{where}: examples[{number}]", problems)
        if example is not None:
            examples.append(example)
    if len(problems) > before or name is None or kind is None or pattern is None:
        # the rule is not compiled: its patterns' problems are reported now, with the others
        for key, text in (("pattern", pattern), ("unless", unless)):
            reason = compile_pattern(expand(text))[1] if text else ""
            if reason:
                fields.problem(key, reason)
        return None
    return RuleSpec(
        name=name,
        kind=cast(Kind, kind),
        pattern=pattern,
        marker=marker,
        unless=unless,
        metric=metric,
        help=help_text,
        labels=labels,
        sum=sum_value,
        feeds=feeds,
        examples=tuple(examples),
        description=description,
    )


def parse_rule_file(data: Any, path: str, problems: list[str]) -> list[tuple[str, RuleSpec]]:
    """The rules of one loaded YAML document, each with where it is defined."""
    if not isinstance(data, dict) or not (
        isinstance(data.get("rules"), list) or "vocabulary" in data
    ):
        problems.append(
            f"{path}: rules: missing; a rule file is `rules:` with a list of rules "
            "(and/or a `vocabulary:`)"
        )
        return []
    for key in data:
        if key not in ("rules", "vocabulary"):
            problems.append(
                f"{path}: {key}: unknown key (a rule file has `rules:` and `vocabulary:`)"
            )
    if "rules" in data and not isinstance(data["rules"], list):
        problems.append(f"{path}: rules: must be a list of rules")
        return []
    specs = []
    for index, raw in enumerate(data.get("rules") or []):
        source = f"{path}: rules[{index}]"
        spec = _parse_rule(raw, source, problems)
        if spec is not None:
            specs.append((source, spec))
    return specs


# --- compiled rules -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated rule, its patterns compiled."""

    name: str
    kind: Kind
    source: str
    """Where the rule is defined: ``file: rules[i]``."""
    pattern: str
    """The pattern as run, ``{NUM}`` expanded."""
    regex: Any
    """The pattern compiled with its groups (to read what a matching line captures)."""
    unless: Any | None
    marker: str = ""
    metric: str = ""
    help: str = ""
    labels: tuple[str, ...] = ()
    group_value: int | None = None
    group_signal: int | None = None
    """Exit-code rules: a process killed by a signal ends with minus its number (-9)."""
    group_step: int | None = None
    group_epoch: int | None = None
    group_labels: tuple[int, ...] = ()
    sum_value: bool = False
    """The value group spans several numbers; the value is their sum."""
    feeds: tuple[str, ...] = ()
    """Context rules: the loss rules whose lines take this rule's step/epoch."""
    examples: tuple[Example, ...] = field(default=())
    finder: Any = None
    """The pattern compiled without capturing groups: RE2 finds the next matching line with
    its fast DFA, and the groups are read on that line alone (None: ``regex``)."""
    extract_fast: Callable[[bytes], tuple[float, int] | None] | None = None
    """The vocabulary's loss rule on every candidate line: (value, rank) from the raw
    line, or None; ``extract`` reads the step and epoch of the line that is kept."""
    extract: Callable[[str], Any] | None = None
    """Rules made from the vocabulary (kvrules.py): reads a matching line's text and gives
    what the line holds (a loss rule: ``(value, step, epoch)``; a marker rule: whether it
    counts), or None (a loss rule: nothing here, read on)."""


def re2_options() -> Any:
    """Options for every rule pattern: UTF-8, never across a line end, quiet on errors."""
    options = re2.Options()
    options.never_nl = True
    options.log_errors = False
    return options


_UNSUPPORTED = (
    (re.compile(r"\(\?<[=!]"), "a look-behind", "write (?:^|[^...]) for a negative one"),
    (re.compile(r"\(\?[=!]"), "a look-ahead", "use `unless:` for a negative one"),
    (re.compile(r"\\[1-9]|\(\?P=\w+\)"), "a back-reference", "repeat the group's pattern"),
    (re.compile(r"\(\?>"), "an atomic group", "drop it: RE2 never backtracks"),
    (re.compile(r"[*+?}]\+"), "a possessive quantifier", "drop the +: RE2 never backtracks"),
)


def without_groups(pattern: str) -> str:
    """``pattern`` with every capturing group made non-capturing: ``(x)`` and
    ``(?P<name>x)`` become ``(?:x)``; escapes and character classes are left as they are."""
    out: list[str] = []
    i, size = 0, len(pattern)
    while i < size:
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[":  # a class: copied whole (`[]a]`, `[^]a]` and escapes included)
            j = i + 1
            if j < size and pattern[j] == "^":
                j += 1
            if j < size and pattern[j] == "]":
                j += 1
            while j < size and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            out.append(pattern[i : j + 1])
            i = j + 1
            continue
        if char == "(":
            if pattern.startswith("(?P<", i) or pattern.startswith("(?<", i):
                i = pattern.index(">", i) + 1
                out.append("(?:")
                continue
            if not pattern.startswith("(?", i):
                out.append("(?:")
                i += 1
                continue
        out.append(char)
        i += 1
    return "".join(out)


def compile_pattern(pattern: str) -> tuple[Any, str | None]:
    """Compile an (already expanded) pattern with RE2; (regex, None) or (None, reason)."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return None, f"longer than {MAX_PATTERN_LENGTH} characters"
    try:
        return re2.compile("(?m)" + pattern, re2_options()), None
    except re2.error as exc:
        detail = exc.args[0] if exc.args else b""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        detail = detail.replace("(?m)", "", 1)  # our prefix, not the user's text
        reason = f"RE2 refuses it: {detail or 'invalid pattern'}"
    for construct, what, hint in _UNSUPPORTED:
        if construct.search(pattern):
            return None, (
                f"{reason} ({what}, which RE2, the linear-time engine that keeps rules from "
                f"hanging the exporter, does not support; {hint})"
            )
    return None, reason


def expand(pattern: str) -> str:
    return pattern.replace("{NUM}", NUM)


def _group_index(regex: Any, name: str) -> int | None:
    index: dict[str, int] = regex.groupindex
    return index.get(name)


def _compile_rule(spec: RuleSpec, source: str, problems: list[str]) -> Rule | None:
    where = f"{source} ({spec.name})"
    before = len(problems)
    pattern = expand(spec.pattern)
    regex, reason = compile_pattern(pattern)
    if reason:
        problems.append(f"{where}: pattern: {reason}")
    unless = None
    if spec.unless is not None:
        unless, reason = compile_pattern(expand(spec.unless))
        if reason:
            problems.append(f"{where}: unless: {reason}")
    if spec.kind in ("error", "warning"):
        if spec.metric or spec.labels or spec.help:
            problems.append(f"{where}: metric/labels/help are for gauge and counter rules")
    elif spec.marker:
        problems.append(f"{where}: marker: only error and warning rules have a marker")
    if spec.kind in ("gauge", "counter"):
        if not spec.metric:
            problems.append(f"{where}: metric: a {spec.kind} rule names the metric it feeds")
        elif spec.metric.removesuffix("_total") in BUILTIN_METRICS or spec.metric.startswith(
            RESERVED_PREFIXES
        ):
            problems.append(f"{where}: metric: {spec.metric} is one of the exporter's own")
        for label in spec.labels:
            if label in RESERVED_LABELS or label.startswith("__"):
                problems.append(f"{where}: labels: {label} is reserved")
    elif spec.metric or spec.labels:
        problems.append(f"{where}: metric/labels are for gauge and counter rules")
    if spec.sum and spec.kind not in ("loss", "gauge", "counter"):
        problems.append(f"{where}: sum: only loss, gauge and counter rules add up a value")
    if spec.kind == "context" and not spec.feeds:
        problems.append(f"{where}: feeds: a context rule names the loss rules it feeds")
    elif spec.kind != "context" and spec.feeds:
        problems.append(f"{where}: feeds: only context rules feed other rules")
    if regex is None:
        return None
    groups: dict[str, int] = regex.groupindex
    names = _GROUP_NAME.findall(pattern)
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(
            f"{where}: pattern: the group {name} is named twice; only the first one would "
            "capture: put one group around the alternatives"
        )
    if spec.kind == "exit_code" and "signal" in groups:
        pass  # the code is minus the signal's number when the signal group captures
    elif spec.kind in VALUE_KINDS and "value" not in groups:
        problems.append(
            f"{where}: pattern: needs a (?P<value>...) group, which a {spec.kind} rule "
            "takes its value from"
        )
    if spec.sum and "value" not in groups:
        problems.append(f"{where}: sum: needs a (?P<value>...) group to add up")
    if spec.kind == "context":
        if "value" in groups:
            problems.append(f"{where}: pattern: a context rule gives a step or epoch, no value")
        if "step" not in groups and "epoch" not in groups:
            problems.append(
                f"{where}: pattern: needs a (?P<step>...) or (?P<epoch>...) group, which a "
                "context rule gives to the loss lines after it"
            )
    for label in spec.labels:
        if label not in groups:
            problems.append(f"{where}: labels: no (?P<{label}>...) group in the pattern")
    if len(problems) > before:
        return None
    takes_position = spec.kind in ("loss", "context")
    return Rule(
        name=spec.name,
        kind=spec.kind,
        source=source,
        pattern=pattern,
        regex=regex,
        finder=compile_pattern(without_groups(pattern))[0] if regex.groups else regex,
        unless=unless,
        marker=spec.marker or (spec.name if spec.kind in ("error", "warning") else ""),
        metric=(spec.metric or "").removesuffix("_total")
        if spec.kind == "counter"
        else spec.metric or "",
        help=spec.help or "",
        labels=spec.labels,
        group_value=_group_index(regex, "value") if spec.kind != "context" else None,
        group_signal=_group_index(regex, "signal") if spec.kind == "exit_code" else None,
        group_step=_group_index(regex, "step") if takes_position else None,
        group_epoch=_group_index(regex, "epoch") if takes_position else None,
        group_labels=tuple(groups[label] for label in spec.labels),
        sum_value=spec.sum,
        feeds=spec.feeds,
        examples=spec.examples,
    )


def load_rule_file(
    path: Path,
    problems: list[str],
    declared: dict[str, str] | None = None,
    vocabularies: list[VocabularySpec] | None = None,
    defined: dict[str, str] | None = None,
) -> list[Rule]:
    """The rules of one file; problems are appended, never raised.

    ``declared`` collects the name and kind of every rule the file declares, those that
    fail their checks included; ``vocabularies`` the file's ``vocabulary:`` section;
    ``defined`` where each name was first defined (a name defined again is a problem,
    whether or not either rule compiles).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror or exc}")
        return []
    except UnicodeDecodeError:
        problems.append(f"{path}: not UTF-8 text")
        return []
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problems.append(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}")
        return []
    rules = []
    if isinstance(data, dict) and "vocabulary" in data:
        vocabulary = parse_vocabulary(data["vocabulary"], f"{path}: vocabulary", problems)
        if vocabulary is not None and vocabularies is not None:
            vocabularies.append(vocabulary)
    if defined is not None and isinstance(data, dict) and isinstance(data.get("rules"), list):
        for index, raw in enumerate(data["rules"]):  # every rule's name, valid or not
            name = raw.get("name") if isinstance(raw, dict) else None
            if isinstance(name, str):
                source = f"{path}: rules[{index}]"
                first = defined.setdefault(name, source)
                if first != source:
                    problems.append(f"{source} ({name}): name: also defined at {first}")
    for source, spec in parse_rule_file(data, str(path), problems):
        if declared is not None:
            declared.setdefault(spec.name, spec.kind)
        rule = _compile_rule(spec, source, problems)
        if rule is not None:
            rules.append(rule)
    return rules


SIGNALS = {
    "SIGHUP": 1,
    "SIGINT": 2,
    "SIGQUIT": 3,
    "SIGILL": 4,
    "SIGTRAP": 5,
    "SIGABRT": 6,
    "SIGBUS": 7,
    "SIGFPE": 8,
    "SIGKILL": 9,
    "SIGUSR1": 10,
    "SIGSEGV": 11,
    "SIGUSR2": 12,
    "SIGPIPE": 13,
    "SIGALRM": 14,
    "SIGTERM": 15,
    "KILLED": 9,
    "SEGMENTATION FAULT": 11,
    "ABORTED": 6,
    "BUS ERROR": 7,
    "TERMINATED": 15,
    "FLOATING POINT EXCEPTION": 8,
    "ILLEGAL INSTRUCTION": 4,
}
"""Linux signal numbers, by name and by the words shells print for them."""


def signal_number(text: str) -> int:
    """The number of a signal printed as ``9``, ``SIGKILL``, ``KILL`` or ``Killed``;
    ValueError when it is none of these."""
    text = text.strip().upper()
    if text.isdigit() and 0 < int(text) < 65:
        return int(text)
    number = SIGNALS.get(text) or SIGNALS.get("SIG" + text)
    if number is None:
        raise ValueError(f"not a signal: {text!r}")
    return number


def parse_number(text: str) -> float:
    """A number as printed by training code; raises ValueError when it is not one."""
    value = float(text.strip("'\""))
    return math.nan if math.isnan(value) else value
