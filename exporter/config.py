"""The exporter's YAML configuration: validated up front, frozen, every problem at once.

Every key is optional unless marked *required*; the values shown are the defaults.
Relative paths are resolved against the directory of the configuration file.

.. code-block:: yaml

    modelarts:
      endpoint: https://modelarts.eu-de.otc.t-systems.com  # required; http(s) URL, no query
      project_id: 0123456789abcdef0123456789abcdef         # required; quote it if all digits
      workspace_id: null            # list only the jobs of this workspace
      verify_tls: true              # true, false, or the path of a CA bundle file
      connect_timeout_seconds: 5    # > 0
      read_timeout_seconds: 30      # > 0
      max_attempts: 4               # 1..10: attempts per API call, retries included
      requests_per_second: null     # > 0 when set: a global limit on API requests
      auth:                         # optional (environment variables win); exactly one form:
        token: MIIE...              #   an IAM token, or token_file: path
        # access_key: AK...         #   AK/SK signing, with secret_key or secret_key_file,
        # secret_key: ...           #   and security_token for temporary credentials
        # iam:                      #   IAM password login
        #   auth_url: https://iam.eu-de.otc.t-systems.com/v3
        #   username: monitoring
        #   password: ...           #   or password_file: path
        #   domain_name: OTC-EU-DE-00000000000000000000
        #   project_name: eu-de     #   optional; project_id too; else modelarts.project_id
    collect:
      interval_seconds: 30          # >= 1: how often each active task's log is previewed
      concurrency: 8                # 1..256 previews in flight
      max_line_bytes: 65536         # 256..16 MiB: longer lines go through in pieces
      discovery_interval_seconds: null   # >= 1; null: the same as interval_seconds
      failure_backoff_max_seconds: 600   # >= interval_seconds (default raised to it):
                                         # the longest pause of a task that keeps failing
    discovery:
      phases: [Creating, Pending, Running, Terminating]   # non-empty; of the 8 phases
      name_regex: null              # Python regex: only jobs whose name it matches
      job_ids: null                 # a list: watch exactly these training jobs
      startup_lookback_seconds: 604800   # >= 0: without state, how far back (creation
                                         # time) to look for jobs that ended recently
    lifecycle:
      grace_period_seconds: 3600    # >= 0: how long a finished job's series stay
    state:
      path: modelarts-exporter-state.db
    rules:
      paths: []                     # rule files or directories, after the shipped rules
      include_default: true         # load the shipped rules
      label_value_max_length: 128   # 1..4096
      max_series_per_rule: 100      # 1..100000, per task
    web:
      listen_address: 0.0.0.0:9958  # HOST:PORT; [::1]:9958 for IPv6; :9958 for all
      config_file: null             # exporter-toolkit web config (TLS, basic auth)
    shard:
      index: 0                      # 0 <= index < count: this exporter's share of jobs
      count: 1                      # >= 1

Credentials come from the environment first (:func:`resolve_credentials`), then from
``modelarts.auth``. Problems are reported as ``<file>: <dotted.key>: <reason>`` lines in
one :class:`ConfigError`, and never quote a value (it could be a secret).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    SecretStr,
    Strict,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from .modelarts.auth import AkSkAuth, Auth, PasswordAuth, TokenAuth
from .modelarts.types import ACTIVE_PHASES, PHASES

if TYPE_CHECKING:
    import requests

    from .modelarts.client import RequestObserver

DEFAULT_LISTEN_ADDRESS = "0.0.0.0:9958"
DEFAULT_STATE_PATH = "modelarts-exporter-state.db"

Loc = tuple[int | str, ...]

_PORT_RE = re.compile(r"[0-9]{1,5}")
_HOST_RE = re.compile(r"[A-Za-z0-9._-]*")
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
        for item in error.errors(include_url=False, include_input=False):
            loc, prefix = tuple(item["loc"]), ""
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
    if kind == "extra_forbidden":
        keys = ", ".join(_known_keys(model, tuple(item["loc"])))
        return [((), f"unknown key (valid keys: {keys})")]
    return [((), _FRIENDLY_MESSAGES.get(kind, item["msg"]))]


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


# --- value types --------------------------------------------------------------------------


def _resolve_path(value: object, info: ValidationInfo) -> Path:
    """A path from the file, made absolute against the file's directory (``base_dir``)."""
    if not isinstance(value, str | PathLike) or not str(value):
        raise ValueError("must be a non-empty path")
    path = Path(value)
    if path.is_absolute():
        return path
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    return Path(base or Path.cwd()).absolute() / path


def readable_file(path: Path) -> Path:
    """``path``, if it is a file this process can open."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return path


def _non_empty_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise ValueError("must not be empty")
    return value


def _http_url(value: str) -> str:
    """An http(s) URL without credentials, query or fragment; trailing slashes dropped."""
    problem = "must be an http:// or https:// URL without user, query or fragment"
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port >= 0
    except ValueError:
        raise ValueError(problem) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or parts.username is not None
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in value)
    ):
        raise ValueError(problem)
    return value.rstrip("/")


def _project_id(value: str) -> str:
    if "/" in value:
        raise ValueError("must not contain '/'")
    return value


def _phase(value: str) -> str:
    if value not in PHASES:
        raise ValueError(f"must be one of {', '.join(PHASES)}")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


def parse_listen_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (host ``""``: all).

    Raises ValueError saying what is wrong.
    """
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError("must be HOST:PORT, e.g. 0.0.0.0:9958")
    if not _PORT_RE.fullmatch(port) or int(port) > 65535:
        raise ValueError("port must be a number from 0 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("not a valid IPv6 address between [ and ]") from None
    elif ":" in host:
        raise ValueError("an IPv6 host goes between brackets, e.g. [::1]:9958")
    elif not _HOST_RE.fullmatch(host):
        raise ValueError("host must be a host name or an IP address")
    return host, int(port)


def _listen_address(value: str) -> str:
    parse_listen_address(value)
    return value


def _verify_tls(value: object, info: ValidationInfo) -> bool | Path:
    if isinstance(value, bool):
        return value
    if isinstance(value, str | PathLike) and str(value):
        try:
            return readable_file(_resolve_path(value, info))
        except ValueError as exc:
            raise ValueError(
                f"must be true, false or the path of a CA bundle file ({exc})"
            ) from None
    raise ValueError("must be true, false or the path of a CA bundle file")


ResolvedPath = Annotated[Path, PlainValidator(_resolve_path)]
"""A path; a relative one is taken relative to the configuration file's directory."""
NonEmptyStr = Annotated[str, Field(min_length=1)]
Secret = Annotated[SecretStr, AfterValidator(_non_empty_secret)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
Seconds = Annotated[float, Field(allow_inf_nan=False)]


class Section(BaseModel):
    """A frozen mapping of the configuration: unknown keys and loose types are errors.

    Strict: YAML gives real numbers and booleans, so ``"30"`` or ``yes`` in quotes is a
    mistake worth reporting. A section written with no keys (YAML null) means the defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_empty(cls, data: Any) -> Any:
        return {} if data is None else data


# --- the schema ---------------------------------------------------------------------------


class IamAuth(Section):
    """IAM password login: a project-scoped token, fetched and refreshed."""

    auth_url: HttpUrl
    username: NonEmptyStr
    password: Secret | None = None
    password_file: ResolvedPath | None = None
    domain_name: NonEmptyStr
    project_name: NonEmptyStr | None = None
    project_id: Annotated[str, Field(min_length=1), AfterValidator(_project_id)] | None = None

    @model_validator(mode="after")
    def _one_password(self) -> Self:
        if self.password is None and self.password_file is None:
            raise cross_field(("password", "give password or password_file"))
        if self.password is not None and self.password_file is not None:
            raise cross_field(("password_file", "give password or password_file, not both"))
        return self


class AuthSettings(Section):
    """``modelarts.auth``: exactly one of a token, AK/SK, or ``iam``."""

    token: Secret | None = None
    token_file: ResolvedPath | None = None
    access_key: NonEmptyStr | None = None
    secret_key: Secret | None = None
    secret_key_file: ResolvedPath | None = None
    security_token: Secret | None = None
    iam: IamAuth | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        token_given = self.token is not None or self.token_file is not None
        aksk_given = any(
            value is not None
            for value in (
                self.access_key,
                self.secret_key,
                self.secret_key_file,
                self.security_token,
            )
        )
        given = {"token": token_given, "access_key": aksk_given, "iam": self.iam is not None}
        forms = [name for name, present in given.items() if present]
        if len(forms) != 1:
            found = f" (found {' and '.join(forms)})" if forms else ""
            raise cross_field(
                ("", f"give exactly one of token/token_file, access_key/secret_key or iam{found}")
            )
        problems: list[tuple[str, str]] = []
        if self.token is not None and self.token_file is not None:
            problems.append(("token_file", "give token or token_file, not both"))
        if aksk_given:
            if self.access_key is None:
                problems.append(("access_key", "required with secret_key"))
            if self.secret_key is None and self.secret_key_file is None:
                problems.append(("secret_key", "give secret_key or secret_key_file"))
            if self.secret_key is not None and self.secret_key_file is not None:
                problems.append(("secret_key_file", "give secret_key or secret_key_file, not both"))
        if problems:
            raise cross_field(*problems)
        return self


class ModelArtsSettings(Section):
    """``modelarts``: where the API is and how to talk to it."""

    endpoint: HttpUrl
    project_id: Annotated[str, Field(min_length=1), AfterValidator(_project_id)]
    workspace_id: NonEmptyStr | None = None
    verify_tls: Annotated[bool | Path, PlainValidator(_verify_tls)] = True
    connect_timeout_seconds: Annotated[Seconds, Field(gt=0)] = 5.0
    read_timeout_seconds: Annotated[Seconds, Field(gt=0)] = 30.0
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 4
    requests_per_second: Annotated[Seconds, Field(gt=0)] | None = None
    auth: AuthSettings | None = None

    @property
    def verify(self) -> bool | str:
        """``verify_tls`` in the form ``requests`` takes."""
        return self.verify_tls if isinstance(self.verify_tls, bool) else str(self.verify_tls)

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` timeouts in seconds, as ``requests`` takes them."""
        return (self.connect_timeout_seconds, self.read_timeout_seconds)


class CollectSettings(Section):
    """``collect``: how often and how widely logs are previewed."""

    interval_seconds: Annotated[Seconds, Field(ge=1)] = 30.0
    concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    max_line_bytes: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)] = 65536
    discovery_interval_seconds: Annotated[Seconds, Field(ge=1)] | None = None
    failure_backoff_max_seconds: Seconds = 600.0

    @model_validator(mode="before")
    @classmethod
    def _backoff_default(cls, data: Any) -> Any:
        """Unset, the backoff cap is 600 s, or the interval when that is longer."""
        if isinstance(data, dict) and "failure_backoff_max_seconds" not in data:
            interval = data.get("interval_seconds")
            if isinstance(interval, int | float) and not isinstance(interval, bool):
                return {**data, "failure_backoff_max_seconds": max(600.0, interval)}
        return data

    @model_validator(mode="after")
    def _backoff_covers_interval(self) -> Self:
        if self.failure_backoff_max_seconds < self.interval_seconds:
            raise cross_field(("failure_backoff_max_seconds", "must be >= interval_seconds"))
        return self

    @property
    def effective_discovery_interval_seconds(self) -> float:
        """How often jobs are listed: ``discovery_interval_seconds``, else the interval."""
        if self.discovery_interval_seconds is None:
            return self.interval_seconds
        return self.discovery_interval_seconds


class DiscoverySettings(Section):
    """``discovery``: which training jobs are watched."""

    phases: Annotated[
        tuple[Annotated[str, AfterValidator(_phase)], ...], Strict(False), Field(min_length=1)
    ] = ACTIVE_PHASES
    name_regex: Annotated[str, AfterValidator(_regex)] | None = None
    job_ids: Annotated[tuple[NonEmptyStr, ...], Strict(False), Field(min_length=1)] | None = None
    startup_lookback_seconds: Annotated[Seconds, Field(ge=0)] = 604800.0


class LifecycleSettings(Section):
    """``lifecycle``: how long a finished job's series stay."""

    grace_period_seconds: Annotated[Seconds, Field(ge=0)] = 3600.0


class StateSettings(Section):
    """``state``: where cursors and counters survive restarts."""

    path: ResolvedPath = Field(default=Path(DEFAULT_STATE_PATH), validate_default=True)


class RulesSettings(Section):
    """``rules``: extra rule files and limits on what rules produce."""

    paths: Annotated[tuple[ResolvedPath, ...], Strict(False)] = ()
    include_default: bool = True
    label_value_max_length: Annotated[int, Field(ge=1, le=4096)] = 128
    max_series_per_rule: Annotated[int, Field(ge=1, le=100000)] = 100


class WebSettings(Section):
    """``web``: the HTTP listener."""

    listen_address: Annotated[str, AfterValidator(_listen_address)] = DEFAULT_LISTEN_ADDRESS
    config_file: ResolvedPath | None = None

    @property
    def listen_host(self) -> str:
        """The host to bind, without IPv6 brackets; ``""`` for all interfaces."""
        return parse_listen_address(self.listen_address)[0]

    @property
    def listen_port(self) -> int:
        return parse_listen_address(self.listen_address)[1]


class ShardSettings(Section):
    """``shard``: this exporter watches the jobs whose hash falls in its share."""

    index: Annotated[int, Field(ge=0)] = 0
    count: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _index_below_count(self) -> Self:
        if self.index >= self.count:
            raise cross_field(("index", "must be less than shard.count"))
        return self


class Config(Section):
    """The whole configuration. ``path`` is the file it came from (None when built in code)."""

    modelarts: ModelArtsSettings
    collect: CollectSettings
    discovery: DiscoverySettings
    lifecycle: LifecycleSettings
    state: StateSettings
    rules: RulesSettings
    web: WebSettings
    shard: ShardSettings

    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _default_sections(cls, data: Any) -> Any:
        if isinstance(data, dict):
            sections: dict[str, Any] = {n: {} for n in cls.model_fields if n != "modelarts"}
            return {**sections, **data}
        return data

    @property
    def path(self) -> Path | None:
        return self._path

    def with_listen_address(self, address: str) -> Config:
        """A copy listening on ``address`` (``--web.listen-address``); ValueError if invalid."""
        parse_listen_address(address)
        web = self.web.model_copy(update={"listen_address": address})
        return self.model_copy(update={"web": web})

    def with_shard(self, spec: str, hostname: str = "") -> Config:
        """A copy owning shard ``INDEX/COUNT`` (``--shard``); ValueError if invalid.

        ``INDEX`` may be ``hostname``: the number that ends the host name, as in a
        Kubernetes StatefulSet whose pods are named ``<name>-0``, ``<name>-1``, ...
        """
        index_text, sep, count_text = spec.partition("/")
        if index_text == "hostname":
            match = re.search(r"-(\d+)$", hostname)
            if not match:
                raise ValueError(f"host name {hostname!r} does not end with -<number>")
            index_text = match.group(1)
        if not sep or not index_text.isdigit() or not count_text.isdigit():
            raise ValueError(f"{spec!r} is not INDEX/COUNT")
        index, count = int(index_text), int(count_text)
        if count < 1 or index >= count:
            raise ValueError(f"shard {index}/{count}: need 0 <= INDEX < COUNT")
        return self.model_copy(update={"shard": ShardSettings(index=index, count=count)})


def _validate(data: Mapping[str, Any], path: Path | None, base_dir: Path) -> Config:
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError.from_validation(path, exc, Config) from None
    config._path = path
    return config


def load_config(path: str | PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a configuration file; ConfigError lists every problem.

    With ``environ``, credentials are resolved too (see :func:`resolve_credentials`), so
    that missing or partial credentials fail at load time like any other mistake.
    """
    path = Path(path)
    config = _validate(load_yaml(path), path, path.parent.absolute())
    if environ is not None:
        resolve_credentials(config, environ)
    return config


def default_config(
    endpoint: str,
    project_id: str,
    *,
    base_dir: str | PathLike[str] | None = None,
    **sections: Mapping[str, Any],
) -> Config:
    """A Config built in code (the demo), e.g. ``collect={"interval_seconds": 5}``.

    Validated like a file; relative paths are resolved against ``base_dir`` (default: the
    working directory).
    """
    data: dict[str, Any] = {name: dict(section) for name, section in sections.items()}
    data["modelarts"] = {
        "endpoint": endpoint,
        "project_id": project_id,
        **data.get("modelarts", {}),
    }
    return _validate(data, None, Path(base_dir or Path.cwd()).absolute())


# --- credentials ---------------------------------------------------------------------------

ENV_TOKEN = "MODELARTS_AUTH_TOKEN"  # noqa: S105 (a variable name)
ENV_AKSK = (("HUAWEICLOUD_SDK_AK",), ("HUAWEICLOUD_SDK_SK",))
ENV_AKSK_OPTIONAL = ("HUAWEICLOUD_SDK_SECURITY_TOKEN",)
ENV_IAM = (
    ("OS_AUTH_URL",),
    ("OS_USERNAME",),
    ("OS_PASSWORD",),
    ("OS_DOMAIN_NAME", "OS_USER_DOMAIN_NAME"),
)


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to ModelArts, and where that came from (``source``, for logs).

    ``kind`` "token" uses ``token``; "aksk" ``access_key``, ``secret_key`` and
    ``security_token``; "password" the IAM fields, reaching IAM with ``verify`` and
    ``timeout`` (from ``modelarts``). Secret values stay out of repr().
    """

    kind: Literal["token", "aksk", "password"]
    source: str
    token: str = field(default="", repr=False)
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    security_token: str | None = field(default=None, repr=False)
    auth_url: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    domain_name: str = ""
    project_name: str | None = None
    project_id: str | None = None
    verify: bool | str = True
    timeout: tuple[float, float] = (5.0, 30.0)

    def build_auth(
        self,
        *,
        session: requests.Session,
        project_id: str,
        observer: RequestObserver | None = None,
    ) -> Auth:
        """The matching :mod:`modelarts_exporter.modelarts.auth` object; ConfigError if unusable.

        IAM login is scoped to ``project_name``/``project_id`` when given, else to
        ``project_id`` (the ModelArts project); it uses ``verify`` and ``timeout``.
        """
        try:
            if self.kind == "token":
                return TokenAuth(self.token)
            if self.kind == "aksk":
                return AkSkAuth(self.access_key, self.secret_key, project_id, self.security_token)
            scoped = self.project_id is not None or self.project_name is not None
            return PasswordAuth(
                self.auth_url,
                self.username,
                self.password,
                self.domain_name,
                project_name=self.project_name,
                project_id=self.project_id if scoped else project_id,
                session=session,
                timeout=self.timeout,
                observer=observer,
                verify=self.verify,
            )
        except ValueError as exc:
            raise ConfigError(None, [f"{self.source}: {exc}"]) from None


def resolve_credentials(config: Config, environ: Mapping[str, str]) -> Credentials:
    """The first credentials found: ``MODELARTS_AUTH_TOKEN``; ``HUAWEICLOUD_SDK_AK`` +
    ``_SK`` (+ ``_SECURITY_TOKEN``); ``OS_AUTH_URL``, ``OS_USERNAME``, ``OS_PASSWORD``,
    ``OS_DOMAIN_NAME`` or ``OS_USER_DOMAIN_NAME`` (+ ``OS_PROJECT_NAME``, ``OS_PROJECT_ID``);
    else ``modelarts.auth`` (``*_file`` contents read, stripped).

    Empty variables count as unset. A partial set of variables, an unreadable file or no
    credentials at all is a ConfigError naming what is missing.
    """
    env = {name: value for name, value in environ.items() if value}
    settings = config.modelarts
    common: dict[str, Any] = {"verify": settings.verify, "timeout": settings.timeout}
    if ENV_TOKEN in env:
        return Credentials("token", f"environment {ENV_TOKEN}", token=env[ENV_TOKEN], **common)
    if _complete(env, ENV_AKSK, ENV_AKSK_OPTIONAL, "AK/SK signing"):
        return Credentials(
            "aksk",
            "environment HUAWEICLOUD_SDK_AK/SK",
            access_key=env["HUAWEICLOUD_SDK_AK"],
            secret_key=env["HUAWEICLOUD_SDK_SK"],
            security_token=env.get("HUAWEICLOUD_SDK_SECURITY_TOKEN"),
            **common,
        )
    if _complete(env, ENV_IAM, (), "IAM password login"):
        return Credentials(
            "password",
            "environment OS_*",
            auth_url=env["OS_AUTH_URL"],
            username=env["OS_USERNAME"],
            password=env["OS_PASSWORD"],
            domain_name=env.get("OS_DOMAIN_NAME") or env["OS_USER_DOMAIN_NAME"],
            project_name=env.get("OS_PROJECT_NAME"),
            project_id=env.get("OS_PROJECT_ID"),
            **common,
        )
    if settings.auth is None:
        where = config.path if config.path is not None else "the configuration"
        raise ConfigError(
            config.path,
            [
                f"no ModelArts credentials: set {ENV_TOKEN}; or HUAWEICLOUD_SDK_AK and "
                "HUAWEICLOUD_SDK_SK; or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD and "
                f"OS_DOMAIN_NAME; or add a modelarts.auth block to {where}"
            ],
        )
    return _file_credentials(config, settings.auth, common)


def _complete(
    env: Mapping[str, str],
    required: tuple[tuple[str, ...], ...],
    optional: tuple[str, ...],
    purpose: str,
) -> bool:
    """True if every ``required`` variable (or an alternative) is set, False if none is.

    A partial set is a ConfigError naming the missing and the present variables.
    """
    present = [name for names in required for name in names if name in env]
    present += [name for name in optional if name in env]
    missing = [" or ".join(names) for names in required if not any(n in env for n in names)]
    if not missing:
        return True
    if not present:
        return False
    problem = (
        f"environment: {purpose} needs {', '.join(missing)} too "
        f"({', '.join(present)} set); set them, or unset {', '.join(present)}"
    )
    raise ConfigError(None, [problem])


def _file_credentials(config: Config, auth: AuthSettings, common: dict[str, Any]) -> Credentials:
    """Credentials from the ``modelarts.auth`` block, which the schema made complete."""
    source = f"{config.path if config.path is not None else 'configuration'} modelarts.auth"

    def secret(value: SecretStr | None, file: Path | None, key: str) -> str:
        if value is not None:
            return value.get_secret_value()
        if file is None:  # not reached: the schema requires the value or its file
            return ""
        try:
            text = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problem = f"cannot read {file}: {exc.strerror}"
        except UnicodeDecodeError:
            problem = f"{file} is not UTF-8 text"
        else:
            if text:
                return text
            problem = f"{file} is empty"
        loc = ("modelarts", "auth", *key.split("."))
        raise ConfigError(config.path, [problem_line(config.path, loc, problem)])

    if auth.iam is not None:
        iam = auth.iam
        return Credentials(
            "password",
            source,
            auth_url=iam.auth_url,
            username=iam.username,
            password=secret(iam.password, iam.password_file, "iam.password_file"),
            domain_name=iam.domain_name,
            project_name=iam.project_name,
            project_id=iam.project_id,
            **common,
        )
    if auth.access_key is not None:
        security_token = auth.security_token
        return Credentials(
            "aksk",
            source,
            access_key=auth.access_key,
            secret_key=secret(auth.secret_key, auth.secret_key_file, "secret_key_file"),
            security_token=security_token.get_secret_value() if security_token else None,
            **common,
        )
    token = secret(auth.token, auth.token_file, "token_file")
    return Credentials("token", source, token=token, **common)
