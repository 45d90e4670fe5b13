"""The configuration schema: validated up front, frozen, every problem at once.

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
      request_deadline_seconds: null  # > 0: the longest one API call may take, connect,
                                    # answer, IAM login, retries and waits included;
                                    # null: 2 x (connect_timeout + read_timeout)
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
      name_regex: null              # RE2 regex (no look-around or back-references):
                                    # only jobs whose name it matches (anywhere)
      job_ids: null                 # a list: watch exactly these training jobs
      startup_lookback_seconds: 604800   # >= 0: without state, how far back (creation
                                         # time) to look for jobs that ended recently
    lifecycle:
      grace_period_seconds: 3600    # >= 0: how long a finished job's series stay
      final_poll_seconds: 120       # >= 0: a finished job's logs are polled (every
                                    # interval) until a poll sees no growth since the
                                    # one before, at most this long after the job
                                    # ended; then the last unfinished line is taken
    platform:                       # signals beside the log; turn an API off for accounts
      events: true                  #   without its permission (a 403 also turns it off)
      task_metrics: true            # running tasks' CPU/memory/GPU/NPU utilisation
      task_metrics_interval_seconds: 60  # >= 60: how often per task (per-minute averages)
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
      external_url: null            # the URL users reach the exporter at (links in alerts);
                                    # null: http(s)://<listen host or host name>:<port>
      workers: 4                    # 1..64 threads serving requests; 16 connections per
                                    # worker wait, more are closed at once
      request_timeout_seconds: 10   # > 0, <= 300: time a connection has to send its
                                    # request (TLS handshake included), and again to
                                    # take the response
    shard:
      index: 0                      # 0 <= index < count: this exporter's share of jobs
      count: 1                      # >= 1

Credentials come from the environment first (:func:`resolve_credentials`), then from
``modelarts.auth``. Problems are reported as ``<file>: <dotted.key>: <reason>`` lines in
one :class:`ConfigError`, and never quote a value (it could be a secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    Strict,
    ValidationError,
    model_validator,
)

from ..modelarts.client import default_deadline
from ..modelarts.types import ACTIVE_PHASES
from .problems import ConfigError, cross_field
from .values import (
    HttpUrl,
    NonEmptyStr,
    ResolvedPath,
    Seconds,
    Secret,
    _external_url,
    _listen_address,
    _phase,
    _project_id,
    _regex,
    _verify_tls,
    parse_external_url,
    parse_listen_address,
    parse_shard,
)

DEFAULT_LISTEN_ADDRESS = "0.0.0.0:9958"
DEFAULT_STATE_PATH = "modelarts-exporter-state.db"


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
    request_deadline_seconds: Annotated[Seconds, Field(gt=0)] | None = None
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

    @property
    def deadline_seconds(self) -> float:
        """``request_deadline_seconds``, else two attempts' worth of the timeouts."""
        if self.request_deadline_seconds is not None:
            return self.request_deadline_seconds
        return default_deadline(self.connect_timeout_seconds, self.read_timeout_seconds)


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
    """``lifecycle``: how long a finished job's logs are read, and its series stay."""

    grace_period_seconds: Annotated[Seconds, Field(ge=0)] = 3600.0
    final_poll_seconds: Annotated[Seconds, Field(ge=0)] = 120.0


class PlatformSettings(Section):
    """``platform``: which platform APIs besides the log are read."""

    events: bool = True
    task_metrics: bool = True
    task_metrics_interval_seconds: Annotated[Seconds, Field(ge=60)] = 60.0


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
    external_url: Annotated[str | None, AfterValidator(_external_url)] = None
    """Where users reach the exporter (links in alerts); None: derived from the address."""
    workers: Annotated[int, Field(ge=1, le=64)] = 4
    request_timeout_seconds: Annotated[Seconds, Field(gt=0, le=300)] = 10.0

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
    platform: PlatformSettings
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

    def with_external_url(self, url: str) -> Config:
        """A copy reached at ``url`` (``--web.external-url``); ValueError if invalid."""
        web = self.web.model_copy(update={"external_url": parse_external_url(url)})
        return self.model_copy(update={"web": web})

    def with_shard(self, spec: str, hostname: str = "") -> Config:
        """A copy owning shard ``INDEX/COUNT`` (``--shard``); ValueError if invalid.

        See :func:`parse_shard`.
        """
        index, count = parse_shard(spec, hostname)
        return self.model_copy(update={"shard": ShardSettings(index=index, count=count)})


def validate(data: Mapping[str, Any], path: Path | None, base_dir: Path) -> Config:
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError.from_validation(path, exc, Config) from None
    config._path = path
    return config


def valid_sections(data: Mapping[str, Any], base_dir: Path) -> dict[str, BaseModel]:
    """The sections of ``data`` that are valid on their own, by name (``modelarts.auth``
    as ``"auth"`` too): what can still be checked when the whole is not valid."""
    context = {"base_dir": base_dir}
    found: dict[str, BaseModel] = {}
    parts: list[tuple[str, type[Section], object]] = [
        (name, info.annotation, data.get(name))
        for name, info in Config.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, Section)
    ]
    modelarts = data.get("modelarts")
    if isinstance(modelarts, Mapping) and modelarts.get("auth") is not None:
        parts.append(("auth", AuthSettings, modelarts["auth"]))
    for name, model, raw in parts:
        if name == "modelarts" and raw is None:
            continue
        try:
            found[name] = model.model_validate(raw, context=context)
        except ValidationError:
            continue
    return found


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
    return validate(data, None, Path(base_dir or Path.cwd()).absolute())
