"""Credentials: from the environment first, then ``modelarts.auth``; never in a repr."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from ..modelarts.auth import AkSkAuth, Auth, PasswordAuth, TokenAuth
from .problems import ConfigError, problem_line
from .schema import AuthSettings, Config

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
    return _file_credentials(path, auth, common)


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


def _file_credentials(path: Path | None, auth: AuthSettings, common: dict[str, Any]) -> Credentials:
    """Credentials from the ``modelarts.auth`` block, which the schema made complete."""
    source = f"{path if path is not None else 'configuration'} modelarts.auth"

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
        raise ConfigError(path, [problem_line(path, loc, problem)])

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
