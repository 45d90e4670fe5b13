"""The Prometheus exporter-toolkit web configuration file: TLS, basic auth, headers.

The format of https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md,
the keys this exporter supports (an empty file means plain HTTP, no auth)::

    tls_server_config:
      cert_file: server.crt            # both required when the block is present
      key_file: server.key
      client_auth_type: NoClientCert   # RequestClientCert, RequireAnyClientCert,
                                       # VerifyClientCertIfGiven, RequireAndVerifyClientCert
      client_ca_file: ca.crt           # required unless NoClientCert
      min_version: TLS12               # TLS12 or TLS13
      max_version: null                # TLS12 or TLS13; null: the newest
    basic_auth_users:
      prometheus: $2b$12$...           # bcrypt hashes ($2a$, $2b$ or $2y$)
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
      http2: true                      # accepted, ignored

Relative paths are taken from the web config file's directory; the files must be
readable, and the certificate must match its key, when the file is loaded. Python's
``ssl`` verifies every client certificate it asks for, so ``RequestClientCert`` and
``RequireAnyClientCert`` check certificates against ``client_ca_file`` too (stricter than
exporter-toolkit, which accepts any certificate for these two).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import ssl
import threading
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Annotated, Literal, Self

import bcrypt
from pydantic import AfterValidator, Field, PrivateAttr, ValidationError, model_validator

from .config.problems import ConfigError, cross_field, load_yaml, problem_line
from .config.schema import Section
from .config.values import ResolvedPath, readable_file

log = logging.getLogger("exporter.webconfig")

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TLSVersionName = Literal["TLS12", "TLS13"]

_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_VERIFY_MODES = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_BCRYPT_RE = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
_BCRYPT_PREFIX_RE = re.compile(r"\$2[aby]\$")
BCRYPT_HASH_LENGTH = 60
"""Characters of a bcrypt hash: ``$2b$``, the cost and ``$``, 22 of salt, 31 of hash."""
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\U0010ffff]*")
_SSL_SOURCE_RE = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def _cost(hashed: str) -> int:
    """The cost factor of a bcrypt hash ``$2b$12$...`` (12)."""
    return int(hashed[4:6])


def _dummy_hash(users: dict[str, str]) -> bytes:
    """A hash of a random password, of the highest cost among ``users``' hashes.

    Checked when the user is unknown, so that a wrong name costs the same bcrypt as a
    wrong password: exporter-toolkit's fixed cost-10 dummy is 4x faster than a cost-12
    hash, which would tell which users exist.
    """
    cost = max((_cost(hashed) for hashed in users.values()), default=4)
    return bcrypt.hashpw(secrets.token_bytes(16).hex().encode(), bcrypt.gensalt(rounds=cost))


def _bcrypt_hash(value: str) -> str:
    if _BCRYPT_RE.fullmatch(value):
        return value
    if _BCRYPT_PREFIX_RE.match(value):
        raise ValueError(
            f"is not a whole bcrypt hash: {len(value)} characters where a bcrypt hash has "
            f"{BCRYPT_HASH_LENGTH} ($2b$12$, then 22 of salt and 31 of hash from "
            "[./A-Za-z0-9]); was it cut when copied?"
        )
    raise ValueError("must be a bcrypt hash starting with $2a$, $2b$ or $2y$")


ALLOWED_HEADERS = (
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
)
"""The headers the exporter toolkit lets a web config set (others could break scrapes)."""


def _header_name(value: str) -> str:
    if not _HEADER_NAME_RE.fullmatch(value):
        raise ValueError("not a valid HTTP header name")
    if value.lower() not in {name.lower() for name in ALLOWED_HEADERS}:
        raise ValueError(
            f"not one of the headers a web config may set: {', '.join(ALLOWED_HEADERS)}"
        )
    return value


def _header_value(value: str) -> str:
    if not _HEADER_VALUE_RE.fullmatch(value):
        raise ValueError("HTTP header values must not contain control characters")
    return value


ReadableFile = Annotated[ResolvedPath, AfterValidator(readable_file)]


class TLSServerConfig(Section):
    """``tls_server_config``: serve HTTPS, optionally checking client certificates."""

    cert_file: ReadableFile
    key_file: ReadableFile
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: ReadableFile | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[tuple[str, str]] = []
        if self.client_auth_type == "NoClientCert" and self.client_ca_file is not None:
            problems.append(("client_ca_file", "set, but client_auth_type is NoClientCert"))
        if self.client_auth_type != "NoClientCert" and self.client_ca_file is None:
            problems.append(("client_ca_file", f"required with {self.client_auth_type}"))
        if self.max_version is not None and self.max_version < self.min_version:
            problems.append(("max_version", "must not be lower than min_version"))
        if problems:
            raise cross_field(*problems)
        return self


class HTTPServerConfig(Section):
    """``http_server_config``: response headers; ``http2`` is accepted and ignored."""

    headers: dict[
        Annotated[str, AfterValidator(_header_name)], Annotated[str, AfterValidator(_header_value)]
    ] = Field(default_factory=dict)
    http2: bool = True


class WebConfig(Section):
    """A loaded web config. Build the server's TLS with :meth:`ssl_context` and check each
    request with :meth:`check_basic_auth`."""

    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[
        Annotated[str, Field(min_length=1)], Annotated[str, AfterValidator(_bcrypt_hash)]
    ] = Field(default_factory=dict)
    http_server_config: HTTPServerConfig = Field(default_factory=HTTPServerConfig)

    _path: Path | None = PrivateAttr(default=None)
    _cache_key: bytes = PrivateAttr(default_factory=lambda: secrets.token_bytes(32))
    _verified: dict[str, bytes] = PrivateAttr(default_factory=dict)
    _dummy: bytes = PrivateAttr(default=b"")

    @model_validator(mode="after")
    def _make_dummy_hash(self) -> Self:
        if self.basic_auth_users:
            self._dummy = _dummy_hash(self.basic_auth_users)
        return self

    @property
    def headers(self) -> dict[str, str]:
        """Headers to add to every response."""
        return self.http_server_config.headers

    def ssl_context(self) -> ssl.SSLContext | None:
        """A server-side SSLContext, or None for plain HTTP.

        Raises ConfigError when the certificate, key or client CA cannot be loaded.
        """
        tls = self.tls_server_config
        if tls is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _TLS_VERSIONS[tls.min_version]
        if tls.max_version is not None:
            context.maximum_version = _TLS_VERSIONS[tls.max_version]
        try:
            # A callable password: an encrypted key fails instead of prompting on a tty.
            context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            raise self._error("key_file", f"cannot use cert_file with key_file: {exc}") from None
        if tls.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=tls.client_ca_file)
            except (ssl.SSLError, OSError) as exc:
                raise self._error("client_ca_file", f"cannot load CA: {exc}") from None
        context.verify_mode = _VERIFY_MODES[tls.client_auth_type]
        return context

    def ssl_context_provider(self) -> Callable[[], ssl.SSLContext] | None:
        """A function giving the SSLContext for a new connection, or None for plain HTTP.

        The context is rebuilt when the certificate, key or client CA file changes on
        disk (a renewed certificate is served without a restart); files that cannot be
        used are logged and the last good context kept.
        """
        context = self.ssl_context()
        if self.tls_server_config is None or context is None:
            return None
        return _ReloadingContext(self, self.tls_server_config, context)

    def _error(self, key: str, reason: str) -> ConfigError:
        reason = _SSL_SOURCE_RE.sub("", reason)
        return ConfigError(
            self._path, [problem_line(self._path, ("tls_server_config", key), reason)]
        )

    def check_basic_auth(self, authorization: str | None) -> bool:
        """True if no users are configured, or ``authorization`` (the request's header) is
        ``Basic base64(user:password)`` for a configured user and password.

        A verified password is remembered as a keyed SHA-256 digest, so that each scrape
        does not cost a bcrypt; an unknown user costs one of the same cost too (against a
        dummy hash), so timing does not tell which users exist.
        """
        if not self.basic_auth_users:
            return True
        scheme, _, encoded = (authorization or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user_bytes, colon, password = base64.b64decode(
                encoded.strip(), validate=True
            ).partition(b":")
            user = user_bytes.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not colon:
            return False
        digest = hmac.new(self._cache_key, password, hashlib.sha256).digest()
        hashed = self.basic_auth_users.get(user)
        remembered = self._verified.get(user)
        if (
            hashed is not None
            and remembered is not None
            and hmac.compare_digest(remembered, digest)
        ):
            return True
        try:
            matches = bcrypt.checkpw(password, hashed.encode() if hashed else self._dummy)
        except ValueError:  # longer than bcrypt's 72 bytes: never what was hashed
            matches = False
        if hashed is None or not matches:
            return False
        self._verified[user] = digest
        return True


def load_web_config(path: str | PathLike[str], *, given_by: str = "") -> WebConfig:
    """Read and validate a web config file; ConfigError lists every problem.

    ``given_by`` names where the path came from (``cfg.yml: web.config_file`` or
    ``--web.config.file``); a file that cannot be read is reported with it in front."""
    path = Path(path)
    try:
        data = load_yaml(path, allow_empty=True)
    except ConfigError as exc:
        if not given_by:
            raise
        raise ConfigError(path, [f"{given_by}: {problem}" for problem in exc.problems]) from None
    try:
        config = WebConfig.model_validate(data, context={"base_dir": path.parent.absolute()})
    except ValidationError as exc:
        raise ConfigError.from_validation(path, exc, WebConfig) from None
    config._path = path
    config.ssl_context()
    return config


class _ReloadingContext:
    """The server's SSLContext, rebuilt when its files change."""

    def __init__(self, web: WebConfig, tls: TLSServerConfig, context: ssl.SSLContext) -> None:
        self._web = web
        self._files = [tls.cert_file, tls.key_file]
        if tls.client_ca_file is not None:
            self._files.append(tls.client_ca_file)
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._context = context

    def _stamps(self) -> tuple[float, ...]:
        try:
            return tuple(os.stat(f).st_mtime for f in self._files)
        except OSError:
            return ()

    def __call__(self) -> ssl.SSLContext:
        stamp = self._stamps()
        with self._lock:
            if stamp and stamp != self._stamp:
                self._stamp = stamp
                try:
                    context = self._web.ssl_context()
                except ConfigError as exc:
                    log.warning("TLS files changed but cannot be used (%s); keeping the old", exc)
                else:
                    if context is not None:
                        self._context = context
                        log.info("TLS certificate reloaded from %s", self._files[0])
            return self._context
