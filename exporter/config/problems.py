"""Configuration problems: one line each, ``<file>: <dotted.key>: <reason>``, all at once.

A :class:`ConfigError` never quotes a value (it could be a secret). ``load_yaml`` reads a
YAML file into its top-level mapping, refusing duplicate keys.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from os import PathLike
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

Loc = tuple[int | str, ...]

_FRIENDLY_MESSAGES = {
    "model_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "tuple_type": "must be a list",
}


class ConfigError(Exception):
    """An invalid configuration: ``problems`` holds one line per problem, file and key named."""

    def __init__(self, path: str | PathLike[str] | None, problems: Iterable[str]) -> None:
        self.path = Path(path) if path is not None else None
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    @classmethod
    def from_validation(
        cls, path: str | PathLike[str] | None, error: ValidationError, model: type[BaseModel]
    ) -> ConfigError:
        """All problems of a pydantic error on ``model``, sorted by key, input never quoted."""
        details: list[tuple[Loc, str]] = []
        # The input is looked at for its type only (a number where text belongs); it is
        # never quoted.
        items = error.errors(include_url=False, include_input=True)
        locs = [tuple(item["loc"]) for item in items]
        for item in items:
            loc, prefix = tuple(item["loc"]), ""
            if item["type"] == "too_short" and any(
                len(other) > len(loc) and other[: len(loc)] == loc for other in locs
            ):
                continue  # "too short after validation": an item is wrong, said below
            if loc[-1:] == ("[key]",):  # a mapping's key is wrong, not its value
                loc, prefix = loc[:-1], "invalid key: "
            details.extend((loc + sub, prefix + reason) for sub, reason in _reasons(item, model))
        details.sort(key=lambda detail: (_sort_key(detail[0]), detail[1]))
        return cls(path, (problem_line(path, loc, reason) for loc, reason in details))


def _reasons(item: ErrorDetails, model: type[BaseModel]) -> list[tuple[Loc, str]]:
    """``(key below the error's location, reason)`` pairs for one pydantic error."""
    kind, ctx = item["type"], item.get("ctx", {})
    if kind == "cross_field":
        return list(ctx["problems"])
    if kind == "value_error":
        return [((), str(ctx["error"]))]
    if kind == "string_type":
        return [((), _text_hint(tuple(item["loc"]), item.get("input")))]
    if kind == "extra_forbidden":
        keys = ", ".join(_known_keys(model, tuple(item["loc"])))
        return [((), f"unknown key (valid keys: {keys})")]
    return [((), _FRIENDLY_MESSAGES.get(kind, item["msg"]))]


_TEXT_EXAMPLES = {
    "listen_address": 'quote it and give HOST:PORT, e.g. "0.0.0.0:9958"',
    "project_id": 'quote it, e.g. project_id: "0123456789abcdef0123456789abcdef"',
    "workspace_id": 'quote it, e.g. workspace_id: "0"',
}


def _text_hint(loc: Loc, value: object) -> str:
    """What to write where text is expected and YAML read something else."""
    if isinstance(value, bool):
        read = "YAML reads an unquoted true/false/yes/no/on/off as a boolean"
    elif isinstance(value, int | float):
        read = "YAML reads an unquoted number as a number"
    elif isinstance(value, list | tuple):
        return "must be text, not a list"
    elif isinstance(value, dict):
        return "must be text, not a mapping"
    else:
        return "must be text"
    key = next((part for part in reversed(loc) if isinstance(part, str)), "")
    example = _TEXT_EXAMPLES.get(key, "put the value in quotes")
    return f"must be text: {example} ({read})"


def problem_line(path: str | PathLike[str] | None, loc: Loc, reason: str) -> str:
    """``<file>: <dotted.key>: <reason>`` (the key left out when empty)."""
    parts = [str(path) if path is not None else "configuration"]
    if loc:
        parts.append(".".join(str(part) if part != "" else '""' for part in loc))
    parts.append(reason)
    return ": ".join(parts)


def _sort_key(loc: Loc) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, part, "") if isinstance(part, int) else (1, 0, part) for part in loc)


def _known_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys allowed in the mapping that holds ``loc``'s last key."""
    for part in loc[:-1]:
        info = model.model_fields.get(str(part))
        annotation = info.annotation if info is not None else None
        candidates = (annotation, *get_args(annotation))
        sub = next((c for c in candidates if _is_model(c)), None)
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def _is_model(candidate: object) -> bool:
    return (
        get_origin(candidate) is None
        and isinstance(candidate, type)
        and issubclass(candidate, BaseModel)
    )


def cross_field(*problems: tuple[str, str]) -> PydanticCustomError:
    """An error of a model validator, reported at each ``(key, reason)`` inside the model."""
    subs = tuple(((key,) if key else (), reason) for key, reason in problems)
    message = "; ".join(f"{key}: {reason}" if key else reason for key, reason in problems)
    return PydanticCustomError("cross_field", "{message}", {"problems": subs, "message": message})


# --- YAML -------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | PathLike[str], *, allow_empty: bool = False) -> dict[str, Any]:
    """The top-level mapping of a YAML file, or a one-line ConfigError saying what is wrong."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, [f"{name}: file not found"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"{name}: cannot read file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        problem = f"{name}: not UTF-8 text (byte {exc.start})"
        raise ConfigError(path, [problem]) from None
    try:
        loader = _UniqueKeyLoader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        where = name
        if exc.problem_mark is not None:
            where = f"{name}:{exc.problem_mark.line + 1}:{exc.problem_mark.column + 1}"
        raise ConfigError(path, [f"{where}: invalid YAML: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(path, [f"{name}: invalid YAML: {first_line}"]) from None
    if data is None:
        if allow_empty:
            return {}
        raise ConfigError(path, [f"{name}: file is empty"])
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single value"
        raise ConfigError(path, [f"{name}: top level must be a mapping of keys, not {kind}"])
    return data
