"""Value types of the configuration: paths, URLs, listen addresses, regexes, secrets.

Each validator raises ValueError with a reason a user can act on; pydantic turns it into
a ConfigError line naming the key.
"""

from __future__ import annotations

import ipaddress
import re
from os import PathLike
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, PlainValidator, SecretStr, ValidationInfo

from ..modelarts.types import PHASES
from ..userregex import compile_user_regex

_PORT_RE = re.compile(r"[0-9]{1,5}")
_HOST_RE = re.compile(r"[A-Za-z0-9._-]*")


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
    if value in (".", ".."):
        raise ValueError("must not be '.' or '..'")
    return value


def _phase(value: str) -> str:
    if value not in PHASES:
        raise ValueError(f"must be one of {', '.join(PHASES)}")
    return value


def _regex(value: str) -> str:
    """A user regex: it must compile with RE2, the linear-time engine it runs on."""
    compile_user_regex(value)
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


def parse_shard(spec: str, hostname: str = "") -> tuple[int, int]:
    """``(index, count)`` of ``INDEX/COUNT`` (``--shard``); ValueError saying what is wrong.

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
    return index, count


def parse_external_url(url: str) -> str:
    """``--web.external-url``: an absolute http(s) URL, returned without a trailing ``/``.

    Raises ValueError saying what is wrong.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "must be an absolute http:// or https:// URL, e.g. https://exporter.example.com/"
        )
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or a fragment")
    return url.strip().rstrip("/")


def _external_url(value: str | None) -> str | None:
    return None if value is None else parse_external_url(value)


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
