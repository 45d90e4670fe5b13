"""What ``serve`` needs before it starts, checked in one go: every problem in one run.

``prepare`` reads the configuration file, applies the command-line flags, finds the
credentials, loads the rules and the web config, and checks that the state file can
live where ``state.path`` says. ``serve --config.check``, ``serve`` and every reload
(SIGHUP, ``POST /-/reload``) use it. A configuration whose structure is wrong still has
its valid sections checked (rule files, web config, state path, credentials), so one run
lists every problem that can be found.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from .config import (
    Config,
    ConfigError,
    Credentials,
    load_yaml,
    parse_external_url,
    parse_listen_address,
)
from .config.credentials import find_credentials
from .config.schema import (
    AuthSettings,
    ModelArtsSettings,
    RulesSettings,
    StateSettings,
    WebSettings,
    valid_sections,
    validate,
)
from .config.values import parse_shard
from .rules import Rule, RuleError, load_rules
from .rules.loader import EMPTY_FOLDER, folder_rule_files
from .webconfig import WebConfig, load_web_config

NO_STATE_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
"""Kernel file systems: no state file can live there (root may even 'write' to them)."""


@dataclass(frozen=True, slots=True)
class Flags:
    """The command-line flags that override the configuration file."""

    listen_address: str | None = None
    external_url: str | None = None
    web_config_file: str | None = None
    shard: str | None = None
    hostname: str = ""


@dataclass(frozen=True, slots=True)
class Prepared:
    """Everything ``serve`` starts from, all of it valid."""

    config: Config
    credentials: Credentials
    rules: tuple[Rule, ...]
    web: WebConfig | None


def prepare(
    config_file: str | os.PathLike[str], flags: Flags, environ: Mapping[str, str]
) -> Prepared:
    """Load and check everything; ConfigError lists every problem, one line each."""
    path = Path(config_file)
    problems: list[str] = []
    config: Config | None = None
    sections: dict[str, BaseModel] = {}
    auth_given = False
    try:
        data = load_yaml(path)
    except ConfigError as exc:
        problems.extend(exc.problems)
    else:
        modelarts = data.get("modelarts")
        auth_given = isinstance(modelarts, dict) and modelarts.get("auth") is not None
        try:
            config = validate(data, path, path.parent.absolute())
        except ConfigError as exc:
            problems.extend(exc.problems)
            sections = valid_sections(data, path.parent.absolute())
        else:
            sections = {name: getattr(config, name) for name in type(config).model_fields}
            if config.modelarts.auth is not None:
                sections["auth"] = config.modelarts.auth

    if flags.listen_address:
        try:
            parse_listen_address(flags.listen_address)
        except ValueError as exc:
            problems.append(f"--web.listen-address: {exc}")
        else:
            config = config.with_listen_address(flags.listen_address) if config else None
    if flags.external_url is not None:
        try:
            parse_external_url(flags.external_url)
        except ValueError as exc:
            problems.append(f"--web.external-url: {exc}")
        else:
            config = config.with_external_url(flags.external_url) if config else None
    if flags.shard:
        try:
            parse_shard(flags.shard, flags.hostname)
        except ValueError as exc:
            problems.append(f"--shard: {exc}")
        else:
            config = config.with_shard(flags.shard, flags.hostname) if config else None

    credentials = _credentials(path, sections, environ, problems, auth_given=auth_given)
    rules = _rules(path, sections.get("rules"), problems)
    web = _web(path, flags, sections.get("web"), problems)
    state = sections.get("state")
    if isinstance(state, StateSettings):
        problems.extend(state_path_problems(str(path), state.path))
    if problems or config is None or credentials is None or rules is None:
        raise ConfigError(path, problems)
    return Prepared(config, credentials, rules, web)


def _credentials(
    path: Path,
    sections: Mapping[str, BaseModel],
    environ: Mapping[str, str],
    problems: list[str],
    *,
    auth_given: bool,
) -> Credentials | None:
    """The credentials; when ``modelarts.auth`` was given but is invalid (its problems
    are listed already), only the environment's are looked at."""
    modelarts = sections.get("modelarts")
    auth = sections.get("auth")
    try:
        credentials = find_credentials(
            environ,
            auth if isinstance(auth, AuthSettings) else None,
            path,
            verify=modelarts.verify if isinstance(modelarts, ModelArtsSettings) else True,
            timeout=(
                modelarts.timeout if isinstance(modelarts, ModelArtsSettings) else (5.0, 30.0)
            ),
            auth_known=isinstance(auth, AuthSettings) or not auth_given,
        )
        if credentials is not None and isinstance(modelarts, ModelArtsSettings):
            # What the exporter will build from them: a check that passes here, serve too.
            credentials.build_auth(session=None, project_id=modelarts.project_id)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None
    return credentials


def _rules(path: Path, settings: BaseModel | None, problems: list[str]) -> tuple[Rule, ...] | None:
    if not isinstance(settings, RulesSettings):
        return None
    found = []
    for number, rule_path in enumerate(settings.paths):
        if not rule_path.exists():
            problems.append(f"{path}: rules.paths[{number}]: {rule_path}: no such file")
        elif rule_path.is_dir() and not folder_rule_files(rule_path):
            problems.append(f"{path}: rules.paths[{number}]: {rule_path}: {EMPTY_FOLDER}")
        else:
            found.append(rule_path)
    try:
        return tuple(load_rules(found, include_default=settings.include_default))
    except RuleError as exc:
        problems.extend(exc.problems)
        return None


def _web(
    path: Path, flags: Flags, settings: BaseModel | None, problems: list[str]
) -> WebConfig | None:
    web_file: Path | None = None
    given_by = "--web.config.file"
    if flags.web_config_file:
        web_file = Path(flags.web_config_file)
    elif isinstance(settings, WebSettings):
        web_file = settings.config_file
        given_by = f"{path}: web.config_file"
    if web_file is None:
        return None
    try:
        return load_web_config(web_file, given_by=given_by)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None


def state_path_problems(config_file: str, path: Path) -> list[str]:
    """Whether the state file can be created or written there, checked before starting:
    not on a kernel file system (/proc, /sys, /dev), its parent a writable directory."""
    where = f"{config_file}: state.path: {path}"
    resolved = path.resolve()
    for kernel in NO_STATE_FILESYSTEMS:
        if resolved.is_relative_to(kernel):
            return [f"{where}: is on {kernel}, a kernel file system; choose a persistent directory"]
    if path.is_dir():
        return [f"{where}: is a directory"]
    if path.exists():
        if not path.is_file():
            return [f"{where}: is not a regular file"]
        return [] if os.access(path, os.R_OK | os.W_OK) else [f"{where}: not writable"]
    parent = path.parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        return [f"{where}: cannot be created ({parent} is not a directory)"]
    if not os.access(parent, os.W_OK | os.X_OK):
        return [f"{where}: cannot be created ({parent} is not a writable directory)"]
    return []


def problems_text(problems: Sequence[str]) -> str:
    """Problems on one line: the first ones, and how many more."""
    shown = "; ".join(problems[:3])
    more = len(problems) - 3
    return f"{shown} (and {more} more)" if more > 0 else shown
