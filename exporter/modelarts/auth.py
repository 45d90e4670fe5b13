"""Credentials that authenticate outgoing ModelArts requests by adding headers.

Three kinds: a fixed IAM token, AK/SK request signing, and IAM password
login with a cached, refreshed token. Secrets never appear in repr(), str(), logs or
exception messages.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qsl, urlsplit

import requests

from . import errors, signer
from .client import interpret_response, passthrough_auth, transport_error

if TYPE_CHECKING:
    from .client import RequestObserver

logger = logging.getLogger("exporter.modelarts")

IAM_ENDPOINT = "iam_token"
REJECTED_LOGIN_COOLDOWN_SECONDS = 60.0
# Visible ASCII only: a header value with CR/LF or spaces would be refused by requests,
# whose error message would then quote the secret.
_HEADER_VALUE_RE = re.compile(r"[\x21-\x7e]+")


class Auth(Protocol):
    """Adds credentials to one outgoing request."""

    @property
    def kind(self) -> str:
        """ "token", "aksk" or "password"."""
        ...

    def apply(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        """Add authentication headers to ``headers`` for this exact request, in place."""
        ...

    def invalidate(self) -> bool:
        """Drop any cached credential; True if retrying after a 401 can help."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """The secret values in use, to be kept out of every message."""
        ...


def _check_header_value(name: str, value: str) -> None:
    if not _HEADER_VALUE_RE.fullmatch(value):
        raise ValueError(f"{name} must be non-empty visible ASCII without spaces")


@dataclass(frozen=True)
class TokenAuth:
    """A fixed IAM token, sent as ``X-Auth-Token``."""

    token: str = field(repr=False)
    kind = "token"

    def __post_init__(self) -> None:
        _check_header_value("token", self.token)

    def apply(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        headers["X-Auth-Token"] = self.token

    def invalidate(self) -> bool:
        return False

    def secrets(self) -> tuple[str, ...]:
        return (self.token,)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AkSkAuth:
    """``SDK-HMAC-SHA256`` signing with an access key / secret key, as the Huawei SDK does.

    Signs ``Host``, ``X-Sdk-Date``, ``X-Project-Id``, ``X-Security-Token`` (temporary
    credentials) and ``Content-Type`` when present; other headers (User-Agent, Accept)
    travel unsigned so that a proxy rewriting them does not break the signature.
    """

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    project_id: str
    security_token: str | None = field(default=None, repr=False)
    now: Callable[[], datetime] = field(default=_utc_now, repr=False)
    kind = "aksk"

    def __post_init__(self) -> None:
        _check_header_value("access_key", self.access_key)
        if not self.secret_key:
            raise ValueError("secret_key must not be empty")
        _check_header_value("project_id", self.project_id)
        if self.security_token is not None:
            _check_header_value("security_token", self.security_token)

    def apply(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        parts = urlsplit(url)
        signed = {
            "Host": parts.netloc,
            signer.DATE_HEADER: signer.sdk_date(self.now()),
            "X-Project-Id": self.project_id,
        }
        if self.security_token is not None:
            signed["X-Security-Token"] = self.security_token
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        if content_type is not None:
            signed["Content-Type"] = content_type
        for name in signed:  # drop differently-cased duplicates the caller may have set
            for key in [k for k in headers if k.lower() == name.lower()]:
                del headers[key]
        headers.update(signed)
        headers["Authorization"] = signer.authorization_header(
            self.access_key,
            self.secret_key,
            method,
            parts.path or "/",
            parse_qsl(parts.query, keep_blank_values=True),
            signed,
            body,
        )

    def invalidate(self) -> bool:
        return False

    def secrets(self) -> tuple[str, ...]:
        return (self.secret_key, self.security_token or "")


def _expires_at(data: object, status: int) -> float:
    """Unix seconds of ``token.expires_at`` in an IAM token response body."""
    token = data.get("token") if isinstance(data, dict) else None
    value = token.get("expires_at") if isinstance(token, dict) else None
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None:
        raise errors.BadResponseError(
            IAM_ENDPOINT, "field token.expires_at is missing or not ISO 8601", status=status
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _repeat(rejection: errors.AuthenticationError) -> errors.AuthenticationError:
    """A fresh copy of a cached login rejection (re-raising one object grows its traceback)."""
    return errors.AuthenticationError(
        rejection.endpoint,
        f"{rejection.error_msg} (login not retried for {REJECTED_LOGIN_COOLDOWN_SECONDS:.0f}s)",
        status=rejection.status,
        error_code=rejection.error_code,
        request_id=rejection.request_id,
    )


class PasswordAuth:
    """IAM password login (``POST /v3/auth/tokens``): a project-scoped token, cached.

    The token is fetched on first use and again ``refresh_margin_seconds`` before it
    expires (at the latest half-way through its lifetime), one login at a time: concurrent
    callers wait and reuse it. After IAM rejected the password (401/403) the rejection is
    raised again, without calling IAM, for 60 seconds.
    """

    kind = "password"

    def __init__(
        self,
        auth_url: str,
        username: str,
        password: str,
        domain_name: str,
        *,
        project_name: str | None = None,
        project_id: str | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        refresh_margin_seconds: float = 3600.0,
        timeout: tuple[float, float] = (5.0, 30.0),
        observer: RequestObserver | None = None,
        verify: bool | str = True,
    ) -> None:
        parts = urlsplit(auth_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("auth_url must be an http:// or https:// URL")
        if not (username and password and domain_name):
            raise ValueError("username, password and domain_name are required")
        if not (project_name or project_id):
            raise ValueError("project_name or project_id is required")
        base = auth_url.rstrip("/")
        base = base.removesuffix("/v3")
        self.token_url = f"{base}/v3/auth/tokens?nocatalog=true"
        self.username = username
        self.domain_name = domain_name
        self.project_name = project_name
        self.project_id = project_id
        self._password = password
        self._session = session if session is not None else requests.Session()
        self._clock = clock
        self._margin = refresh_margin_seconds
        self._timeout = timeout
        self._observer = observer
        self._verify = verify
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._rejection: errors.AuthenticationError | None = None
        self._rejected_at = 0.0

    def __repr__(self) -> str:
        project = self.project_id or self.project_name
        return (
            f"PasswordAuth(token_url={self.token_url!r}, username={self.username!r}, "
            f"domain_name={self.domain_name!r}, project={project!r})"
        )

    def apply(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        headers["X-Auth-Token"] = self.token()

    def invalidate(self) -> bool:
        with self._lock:
            self._token = None
        return True

    def secrets(self) -> tuple[str, ...]:
        return (self._password, self._token or "")

    def token(self) -> str:
        """The cached token, after logging in if there is none or it is about to expire."""
        with self._lock:
            now = self._clock()
            if self._token is not None and now < self._refresh_at:
                return self._token
            if (
                self._rejection is not None
                and now < self._rejected_at + REJECTED_LOGIN_COOLDOWN_SECONDS
            ):
                raise _repeat(self._rejection)
            try:
                token, expires_at = self._login()
            except errors.AuthenticationError as exc:
                self._token = None
                self._rejection, self._rejected_at = exc, self._clock()
                raise
            now = self._clock()
            self._rejection = None
            self._token = token
            self._refresh_at = expires_at - min(self._margin, max(expires_at - now, 0.0) / 2)
            logger.debug("IAM token obtained; valid for %.0fs", expires_at - now)
            return token

    def _request_body(self) -> bytes:
        project = {"id": self.project_id} if self.project_id else {"name": self.project_name}
        user = {
            "name": self.username,
            "password": self._password,
            "domain": {"name": self.domain_name},
        }
        return json.dumps(
            {
                "auth": {
                    "identity": {"methods": ["password"], "password": {"user": user}},
                    "scope": {"project": project},
                }
            }
        ).encode()

    def _login(self) -> tuple[str, float]:
        started = time.perf_counter()
        error: errors.ModelArtsError | None = None
        try:
            return self._login_once()
        except errors.ModelArtsError as exc:
            error = exc
            raise
        finally:
            if self._observer is not None:
                self._observer.observe(IAM_ENDPOINT, time.perf_counter() - started, error)

    def _login_once(self) -> tuple[str, float]:
        try:
            response = self._session.post(
                self.token_url,
                data=self._request_body(),
                headers={"Content-Type": "application/json;charset=utf8"},
                timeout=self._timeout,
                verify=self._verify,
                allow_redirects=False,
                stream=True,
                auth=passthrough_auth,
            )
        except requests.RequestException as exc:
            raise transport_error(IAM_ENDPOINT, exc) from None
        try:
            outcome = interpret_response(IAM_ENDPOINT, response, secrets=self.secrets())
        except requests.RequestException as exc:
            raise transport_error(IAM_ENDPOINT, exc) from None
        finally:
            response.close()
        if outcome.error is not None:
            raise outcome.error
        status = response.status_code
        token = response.headers.get("X-Subject-Token", "")
        if not _HEADER_VALUE_RE.fullmatch(token):
            raise errors.BadResponseError(
                IAM_ENDPOINT, "no usable X-Subject-Token header", status=status
            )
        return token, _expires_at(outcome.data, status)
