"""Loading rule files: the shipped ones first, then the user's, into compiled rules.

Every problem of every file is collected and raised at once (RuleError), each on one
line naming the file, the rule and the key. The files' ``vocabulary:`` sections are
merged and turned into the key/value rules (kvrules.py), which come last.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import re2

from .engine import SET_MAX_MEM, RuleSet
from .kvrules import vocabulary_rules
from .model import Rule, RuleError, load_rule_file
from .vocabfile import VocabularySpec


def default_rules_dir() -> Path:
    """The shipped rules: inside the installed package, or ``rules/`` of a source tree."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "default_rules"
    if packaged.is_dir():
        return packaged
    return package.parent / "rules"


EMPTY_FOLDER = "a folder that holds no *.yml or *.yaml rule file"
"""The problem of a rules folder that would load nothing (a typo'd suffix, a wrong mount)."""


def folder_rule_files(folder: Path) -> list[Path]:
    """A folder's ``*.yml``/``*.yaml`` files, sorted (hidden ones skipped)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix in (".yml", ".yaml") and not p.name.startswith(".") and p.is_file()
    )


def rule_files(paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Expand directories to their ``*.yml``/``*.yaml`` files (hidden ones skipped); a
    directory without one is a problem, as is a path that does not exist."""
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            found = folder_rule_files(path)
            if not found:
                problems.append(f"{path}: {EMPTY_FOLDER}")
            files.extend(found)
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
    declared: dict[str, str] = {}
    vocabularies: list[VocabularySpec] = []
    defined: dict[str, str] = {}
    for path in files:
        rules.extend(load_rule_file(path, problems, declared, vocabularies, defined))
    generated = vocabulary_rules(vocabularies, problems)[1]
    rules.extend(generated)
    for rule in generated:
        declared.setdefault(rule.name, rule.kind)
        defined_at = defined.setdefault(rule.name, rule.source)
        if defined_at != rule.source:
            problems.append(
                f"{defined_at} ({rule.name}): name: the vocabulary's rule has this name"
            )
    metric_shapes: dict[str, tuple[str, tuple[str, ...], str]] = {}
    for rule in rules:
        for fed in rule.feeds:
            kind = declared.get(fed)
            if kind != "loss":
                article = "an" if kind and kind[0] in "aeiou" else "a"
                what = "no rule" if kind is None else f"{article} {kind} rule"
                problems.append(
                    f"{rule.source} ({rule.name}): feeds: {fed} is {what}; a context rule "
                    "feeds loss rules"
                )
        if rule.metric:
            shape = (rule.kind, tuple(sorted(rule.labels)), rule.source)
            first = metric_shapes.setdefault(rule.metric, shape)
            if first[:2] != shape[:2]:
                problems.append(
                    f"{rule.source} ({rule.name}): metric: {rule.metric} is fed with another "
                    f"kind or other labels at {first[2]}"
                )
    if not problems:
        try:
            RuleSet(rules)
        except re2.error:
            problems.append(
                f"the {len(rules)} rules together exceed RE2's memory budget for one "
                f"automaton ({SET_MAX_MEM >> 20} MiB): remove rules, or shorten their "
                "patterns (bounded repeats such as {1,200} and long alternations cost most)"
            )
    if problems:
        raise RuleError(problems)
    return rules
