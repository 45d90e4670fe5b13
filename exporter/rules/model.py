"""Rule files: their format, loading and validation.

A rule file is YAML with a list of rules. Each rule has a ``name``, a ``kind`` that says
what it feeds, a ``pattern`` (RE2 syntax, run on one log line at a time, unanchored), and
``examples`` that ``modelarts-exporter rules test`` runs::

    rules:
      - name: cuda_oom
        kind: error               # error | warning | exit_code | loss | gauge | counter
        marker: cuda_oom          # error/warning: the `marker` label (default: the name)
        pattern: 'CUDA out of memory|CUDA error: out of memory'
        unless: 'cudaErrorMemoryAllocation expected'   # optional: lines matching this don't count
        examples:
          - 'RuntimeError: CUDA out of memory. Tried to allocate 16.00 MiB'
          - line: 'cuda memory summary'
            match: false

      - name: tokens_per_second
        kind: gauge               # gauge: last value; counter: + value (or + 1) per line
        metric: modelarts_task_tokens_per_second
        help: Training throughput printed by the trainer.
        pattern: 'tokens/s: (?P<value>{NUM}) rank (?P<rank>\\d+)'
        labels: [rank]            # named groups that become labels
        examples:
          - line: 'step 10 tokens/s: 1520.5 rank 0'
            value: 1520.5
            labels: {rank: '0'}

Named groups: ``value`` (required for exit_code, loss and gauge; optional for counter),
``step`` and ``epoch`` (loss), and the groups listed in ``labels``. ``{NUM}`` in a
pattern stands for a number as training logs print it (``2.5e-3``, ``-0.07``, ``nan``,
``inf``...). Patterns run on RE2, a linear-time engine: no pattern can hang the
exporter, and the constructs RE2 lacks (look-around, back-references) are refused at
load with the reason; ``unless`` covers most needs for a negative look-ahead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import re2
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

NUM = r"[-+]?(?:nan|NaN|NAN|-?inf|inf|Inf|INF|Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
"""A number as training logs print it (LOG_FORMATS.md section 2)."""

MAX_PATTERN_LENGTH = 4000
KINDS = ("error", "warning", "exit_code", "loss", "gauge", "counter")
Kind = Literal["error", "warning", "exit_code", "loss", "gauge", "counter"]

RESERVED_LABELS = frozenset({"training_job_id", "task_id", "job", "instance", "le", "quantile"})
"""Label names a rule cannot take: the exporter's own, Prometheus' target labels, and
the histogram/summary ones."""

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
    }
)

_NAME = r"^[a-z][a-z0-9_]*$"
_METRIC = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
_LABEL = r"^[a-zA-Z_][a-zA-Z0-9_]*$"


class RuleError(Exception):
    """Rule files that cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --- the file format ------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExampleSpec(_Strict):
    line: str
    match: bool = True
    value: float | None = None
    step: float | None = None
    epoch: float | None = None
    labels: dict[str, str] | None = None


class RuleSpec(_Strict):
    name: Annotated[str, StringConstraints(pattern=_NAME, max_length=100)]
    kind: Kind
    pattern: Annotated[str, StringConstraints(min_length=1)]
    marker: Annotated[str, StringConstraints(pattern=_NAME, max_length=100)] | None = None
    unless: Annotated[str, StringConstraints(min_length=1)] | None = None
    metric: Annotated[str, StringConstraints(pattern=_METRIC)] | None = None
    help: str | None = None
    labels: list[Annotated[str, StringConstraints(pattern=_LABEL)]] = Field(default_factory=list)
    examples: list[ExampleSpec | str] = Field(default_factory=list)
    description: str | None = None


class RuleFileSpec(_Strict):
    rules: list[RuleSpec]


# --- compiled rules -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Example:
    line: str
    match: bool = True
    value: float | None = None
    step: float | None = None
    epoch: float | None = None
    labels: dict[str, str] | None = None


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
    unless: Any | None
    marker: str = ""
    metric: str = ""
    help: str = ""
    labels: tuple[str, ...] = ()
    group_value: int | None = None
    group_step: int | None = None
    group_epoch: int | None = None
    group_labels: tuple[int, ...] = ()
    examples: tuple[Example, ...] = field(default=())


def re2_options() -> Any:
    """Options for every rule pattern: UTF-8, never across a line end, quiet on errors."""
    options = re2.Options()
    options.never_nl = True
    options.log_errors = False
    return options


_UNSUPPORTED = (
    (re.compile(r"\(\?<[=!]"), "look-behind"),
    (re.compile(r"\(\?[=!]"), "look-ahead"),
    (re.compile(r"\\[1-9]"), "back-references"),
    (re.compile(r"\(\?P=\w+\)"), "back-references"),
    (re.compile(r"\(\?>"), "atomic groups"),
    (re.compile(r"[*+?}][+]"), "possessive quantifiers"),
)


def compile_pattern(pattern: str) -> tuple[Any, str | None]:
    """Compile an (already expanded) pattern with RE2; (regex, None) or (None, reason)."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return None, f"longer than {MAX_PATTERN_LENGTH} characters"
    for construct, what in _UNSUPPORTED:
        if construct.search(pattern):
            return None, (
                f"uses {what}, which RE2 (the linear-time engine that keeps rules from "
                "hanging the exporter) does not support; use a character class or `unless:`"
            )
    try:
        return re2.compile("(?m)" + pattern, re2_options()), None
    except re2.error as exc:
        detail = exc.args[0] if exc.args else b""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return None, f"invalid pattern: {detail or 'rejected by RE2'}"


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
        elif spec.metric.removesuffix("_total") in BUILTIN_METRICS:
            problems.append(f"{where}: metric: {spec.metric} is one of the exporter's own")
        for label in spec.labels:
            if label in RESERVED_LABELS or label.startswith("__"):
                problems.append(f"{where}: labels: {label} is reserved")
    elif spec.metric or spec.labels:
        problems.append(f"{where}: metric/labels are for gauge and counter rules")
    if regex is None:
        return None
    groups: dict[str, int] = regex.groupindex
    if spec.kind in ("exit_code", "loss", "gauge") and "value" not in groups:
        problems.append(
            f"{where}: pattern: needs a (?P<value>...) group, which a {spec.kind} rule "
            "takes its value from"
        )
    for label in spec.labels:
        if label not in groups:
            problems.append(f"{where}: labels: no (?P<{label}>...) group in the pattern")
    if len(problems) > before:
        return None
    examples = tuple(
        Example(line=e) if isinstance(e, str) else Example(**e.model_dump()) for e in spec.examples
    )
    return Rule(
        name=spec.name,
        kind=spec.kind,
        source=source,
        pattern=pattern,
        regex=regex,
        unless=unless,
        marker=spec.marker or (spec.name if spec.kind in ("error", "warning") else ""),
        metric=(spec.metric or "").removesuffix("_total")
        if spec.kind == "counter"
        else spec.metric or "",
        help=spec.help or "",
        labels=tuple(spec.labels),
        group_value=_group_index(regex, "value"),
        group_step=_group_index(regex, "step") if spec.kind == "loss" else None,
        group_epoch=_group_index(regex, "epoch") if spec.kind == "loss" else None,
        group_labels=tuple(groups[label] for label in spec.labels),
        examples=examples,
    )


def _format_validation(path: str, exc: ValidationError, data: Any) -> list[str]:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = list(error["loc"])
        where = path
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            where += f": rules[{loc[1]}]"
            try:
                name = data["rules"][loc[1]]["name"]
                where += f" ({name})"
            except (KeyError, IndexError, TypeError):
                pass
            loc = loc[2:]
        key = ".".join(str(part) for part in loc if not str(part).startswith("function-"))
        # A union (example given as text or as a mapping) reports each alternative.
        key = key.replace("str.", "").replace("ExampleSpec.", "")
        lines.append(f"{where}: {key}: {error['msg']}" if key else f"{where}: {error['msg']}")
    return sorted(set(lines))


def load_rule_file(path: Path, problems: list[str]) -> list[Rule]:
    """The rules of one file; problems are appended, never raised."""
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
    try:
        spec = RuleFileSpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(_format_validation(str(path), exc, data))
        return []
    rules = []
    for index, rule_spec in enumerate(spec.rules):
        rule = _compile_rule(rule_spec, f"{path}: rules[{index}]", problems)
        if rule is not None:
            rules.append(rule)
    return rules


def default_rules_dir() -> Path:
    """The shipped rules: inside the installed package, or ``rules/`` of a source tree."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "default_rules"
    if packaged.is_dir():
        return packaged
    return package.parent / "rules"


def rule_files(paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Expand directories to their ``*.yml``/``*.yaml`` files (hidden ones skipped)."""
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.iterdir()
                    if p.suffix in (".yml", ".yaml") and not p.name.startswith(".") and p.is_file()
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such rule file or directory")
    return files, problems


def load_rules(paths: Iterable[Path | str] = (), *, include_default: bool = True) -> list[Rule]:
    """Load, validate and compile rules: the shipped ones first, then ``paths``.

    Raises RuleError listing every problem (file, rule and reason) at once.
    """
    sources = ([default_rules_dir()] if include_default else []) + [Path(p) for p in paths]
    files, problems = rule_files(sources)
    rules: list[Rule] = []
    for path in files:
        rules.extend(load_rule_file(path, problems))
    seen: dict[str, Rule] = {}
    metric_shapes: dict[str, tuple[str, tuple[str, ...], str]] = {}
    for rule in rules:
        if rule.name in seen:
            problems.append(
                f"{rule.source} ({rule.name}): name: also defined at {seen[rule.name].source}"
            )
        seen.setdefault(rule.name, rule)
        if rule.metric:
            shape = (rule.kind, tuple(sorted(rule.labels)), rule.source)
            first = metric_shapes.setdefault(rule.metric, shape)
            if first[:2] != shape[:2]:
                problems.append(
                    f"{rule.source} ({rule.name}): metric: {rule.metric} is fed with another "
                    f"kind or other labels at {first[2]}"
                )
    if problems:
        raise RuleError(problems)
    return rules


def parse_number(text: str) -> float:
    """A number as printed by training code; raises ValueError when it is not one."""
    value = float(text.strip("'\""))
    return math.nan if math.isnan(value) else value
