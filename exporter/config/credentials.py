"""Credentials: from the environment first, then ``modelarts.auth``; never in a repr.

Every credential (token, AK, SK, security token, password), from a variable, a file or the
configuration, loses one trailing newline (``echo`` and files mounted from Kubernetes
secrets end with one) and must then be free of whitespace and control characters: such a
value could never authenticate (IAM's password policy is ``\\S{6,32}``; tokens and keys
travel in header values) and would only fail later, at the first request. User, domain and
project names may contain spaces but no control characters. Problems name the variable or
the key, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from ..modelarts.auth import AkSkAuth, Auth, PasswordAuth, TokenAuth
from .problems import ConfigError
from .schema import AuthSettings, Config
from .values import _http_url

if TYPE_CHECKING:
    import requests

    from ..modelarts.client import RequestObserver

ENV_TOKEN = "MODELARTS_AUTH_TOKEN"  # noqa: S105 (a variable name)
ENV_AKSK = (("HUAWEICLOUD_SDK_AK",), ("HUAWEICLOUD_SDK_SK",))
ENV_AKSK_OPTIONAL = ("HUAWEICLOUD_SDK_SECURITY_TOKEN",)
ENV_IAM = (
    ("OS_AUTH_URL",),
    ("OS_USERNAME",),
    ("OS_PASSWORD",),
    ("OS_DOMAIN_NAME", "OS_USER_DOMAIN_NAME"),
)
_IGNORED = "(one trailing newline is ignored)"
_SECRET_PROBLEM = f"must not contain whitespace or control characters {_IGNORED}"
_NAME_PROBLEM = f"must not contain control characters {_IGNORED}"
_WHITESPACE_OR_CONTROL_RE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _chomp(value: str) -> str:
    """``value`` without one trailing newline (``\\n`` or ``\\r\\n``)."""
    if value.endswith("\r\n"):
        return value[:-2]
    return value.removesuffix("\n")


class _Checked:
    """Credential values checked one by one; ``problems`` collects what is wrong, each
    line naming where the value came from (never the value)."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def secret(self, value: str, where: str) -> str:
        value = _chomp(value)
        if not value.strip():
            self.problems.append(f"{where}: is empty")
        elif _WHITESPACE_OR_CONTROL_RE.search(value):
            self.problems.append(f"{where}: {_SECRET_PROBLEM}")
        return value

    def name(self, value: str, where: str) -> str:
        value = _chomp(value)
        if _CONTROL_RE.search(value):
            self.problems.append(f"{where}: {_NAME_PROBLEM}")
        return value

    def url(self, value: str, where: str) -> str:
        value = _chomp(value)
        try:
            return _http_url(value)
        except ValueError as exc:
            self.problems.append(f"{where}: {exc}")
            return value

    def raise_any(self, path: Path | None) -> None:
        if self.problems:
            raise ConfigError(path, self.problems)


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
        session: requests.Session | None,
        project_id: str,
        observer: RequestObserver | None = None,
    ) -> Auth:
        """The matching :mod:`modelarts_exporter.modelarts.auth` object; ConfigError if unusable.

        IAM login is scoped to ``project_name``/``project_id`` when given, else to
        ``project_id`` (the ModelArts project); it uses ``verify`` and ``timeout`` (and its
        own session when ``session`` is None).
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

    Empty variables count as unset. A partial set of variables, an unreadable file, a value
    with whitespace or control characters (after one trailing newline is removed; see the
    module's docstring) or no credentials at all is a ConfigError naming what is wrong.
    """
    settings = config.modelarts
    found = find_credentials(
        environ,
        settings.auth,
        config.path,
        verify=settings.verify,
        timeout=settings.timeout,
    )
    if found is None:  # not reached: find_credentials raises when auth_known
        raise ConfigError(config.path, ["no ModelArts credentials"])
    return found


def find_credentials(
    environ: Mapping[str, str],
    auth: AuthSettings | None,
    path: Path | None,
    *,
    verify: bool | str = True,
    timeout: tuple[float, float] = (5.0, 30.0),
    auth_known: bool = True,
) -> Credentials | None:
    """:func:`resolve_credentials` from the parts of a configuration that are valid.

    ``auth`` is the ``modelarts.auth`` block; with ``auth_known`` False it could not be
    validated (its problems are reported already), so finding no credentials is no
    problem of its own: the result is None.
    """
    env = {name: value for name, value in environ.items() if value}
    common: dict[str, Any] = {"verify": verify, "timeout": timeout}
    check = _Checked()

    def secret(name: str) -> str:
        return check.secret(env[name], f"environment {name}")

    def optional(name: str, kind: str = "name") -> str | None:
        if name not in env:
            return None
        return secret(name) if kind == "secret" else check.name(env[name], f"environment {name}")

    credentials: Credentials | None = None
    if ENV_TOKEN in env:
        credentials = Credentials(
            "token", f"environment {ENV_TOKEN}", token=secret(ENV_TOKEN), **common
        )
    elif _complete(env, ENV_AKSK, ENV_AKSK_OPTIONAL, "AK/SK signing"):
        credentials = Credentials(
            "aksk",
            "environment HUAWEICLOUD_SDK_AK/SK",
            access_key=secret("HUAWEICLOUD_SDK_AK"),
            secret_key=secret("HUAWEICLOUD_SDK_SK"),
            security_token=optional("HUAWEICLOUD_SDK_SECURITY_TOKEN", "secret"),
            **common,
        )
    elif _complete(env, ENV_IAM, (), "IAM password login"):
        domain = "OS_DOMAIN_NAME" if "OS_DOMAIN_NAME" in env else "OS_USER_DOMAIN_NAME"
        credentials = Credentials(
            "password",
            "environment OS_*",
            auth_url=check.url(env["OS_AUTH_URL"], "environment OS_AUTH_URL"),
            username=optional("OS_USERNAME") or "",
            password=secret("OS_PASSWORD"),
            domain_name=optional(domain) or "",
            project_name=optional("OS_PROJECT_NAME"),
            project_id=optional("OS_PROJECT_ID"),
            **common,
        )
    if credentials is not None:
        check.raise_any(None)
        return credentials
    if auth is None:
        if not auth_known:
            return None
        where = path if path is not None else "the configuration"
        raise ConfigError(
            path,
            [
                f"no ModelArts credentials: set {ENV_TOKEN}; or HUAWEICLOUD_SDK_AK and "
                "HUAWEICLOUD_SDK_SK; or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD and "
                f"OS_DOMAIN_NAME; or add a modelarts.auth block to {where}"
            ],
        )
    credentials = _file_credentials(path, auth, common, check)
    check.raise_any(path)
    return credentials


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


def _file_credentials(
    path: Path | None, auth: AuthSettings, common: dict[str, Any], check: _Checked
) -> Credentials:
    """Credentials from the ``modelarts.auth`` block, which the schema made complete."""
    source = f"{path if path is not None else 'configuration'} modelarts.auth"

    def where(key: str) -> str:
        """``<file>: modelarts.auth.<key>``, the start of a problem line."""
        return f"{path or 'configuration'}: modelarts.auth.{key}"

    def secret(value: SecretStr | None, file: Path | None, key: str) -> str:
        if value is not None:
            return check.secret(value.get_secret_value(), where(key))
        if file is None:  # not reached: the schema requires the value or its file
            return ""
        key += "_file"
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            problem = f"cannot read {file}: {exc.strerror}"
        except UnicodeDecodeError:
            problem = f"{file} is not UTF-8 text"
        else:
            return check.secret(text, f"{where(key)}: {file}")
        raise ConfigError(path, [f"{where(key)}: {problem}"])

    def name(value: str | None, key: str) -> str | None:
        return None if value is None else check.name(value, where(key))

    if auth.iam is not None:
        iam = auth.iam
        return Credentials(
            "password",
            source,
            auth_url=iam.auth_url,
            username=name(iam.username, "iam.username") or "",
            password=secret(iam.password, iam.password_file, "iam.password"),
            domain_name=name(iam.domain_name, "iam.domain_name") or "",
            project_name=name(iam.project_name, "iam.project_name"),
            project_id=iam.project_id,
            **common,
        )
    if auth.access_key is not None:
        security_token = auth.security_token
        return Credentials(
            "aksk",
            source,
            access_key=check.secret(auth.access_key, where("access_key")),
            secret_key=secret(auth.secret_key, auth.secret_key_file, "secret_key"),
            security_token=(
                secret(security_token, None, "security_token") if security_token else None
            ),
            **common,
        )
    token = secret(auth.token, auth.token_file, "token")
    return Credentials("token", source, token=token, **common)
