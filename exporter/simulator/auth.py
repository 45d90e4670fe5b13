"""Credentials the simulator accepts, checked like the API gateway and IAM would.

Three kinds: static ``X-Auth-Token`` values; AK/SK signatures
(``SDK-HMAC-SHA256``), recomputed with ``modelarts_exporter.modelarts.signer`` over the request as
received; tokens issued by the simulated IAM password login ``POST /v3/auth/tokens``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..modelarts import signer
from .api import (
    ApiError,
    Request,
    gateway_error,
    iam_error,
    modelarts_error,
    parse_json_object,
)

MAX_CLOCK_SKEW_SECONDS = 15 * 60


@dataclass(frozen=True)
class SimAuth:
    """Which credentials the simulator accepts.

    ``tokens``: static ``X-Auth-Token`` values. ``aksk``: access key -> secret key.
    ``users``: (domain name, user name) -> password for the IAM login, whose tokens expire
    after ``token_lifetime_seconds`` of the simulator clock. ``allow_anonymous``: accept
    requests that carry no credentials at all (the demo); credentials that are sent are
    checked all the same.
    """

    tokens: Set[str] = frozenset()
    aksk: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[tuple[str, str], str] = field(default_factory=dict)
    allow_anonymous: bool = False
    token_lifetime_seconds: float = 86400.0


def credential_kind(request: Request) -> str:
    """``aksk``, ``token``, ``password`` (IAM login) or ``anonymous``: what was presented."""
    if request.path == "/v3/auth/tokens":
        return "password"
    if request.headers.get("Authorization") is not None:
        return "aksk"
    if request.headers.get("X-Auth-Token") is not None:
        return "token"
    return "anonymous"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stable_id(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class _Issued:
    expires_at: float
    scoped: bool


class Authenticator:
    """Checks credentials and plays IAM. Not thread-safe: the Simulator's lock guards it."""

    def __init__(self, auth: SimAuth, project_id: str) -> None:
        self._auth = auth
        self._project_id = project_id
        self._issued: dict[str, _Issued] = {}

    def authenticate(self, request: Request, now: float) -> None:
        """Accept the request's credentials or raise a 401 ApiError."""
        kind = credential_kind(request)
        if kind == "aksk":
            self._check_signature(request, now)
        elif kind == "token":
            self._check_token(request.headers.get("X-Auth-Token", ""), now)
        elif not self._auth.allow_anonymous:
            raise modelarts_error(
                401, "ModelArts.0201", "No token or AK/SK signature in the request."
            )

    def _check_token(self, token: str, now: float) -> None:
        if token in self._auth.tokens:
            return
        issued = self._issued.get(token)
        if issued is None:
            raise modelarts_error(401, "ModelArts.0204", "Failed to parse the token.")
        if now >= issued.expires_at:
            raise modelarts_error(401, "ModelArts.0203", "Invalid token: the token has expired.")
        if not issued.scoped:
            raise modelarts_error(
                401, "ModelArts.0207", "The token must contain project information."
            )

    def _check_signature(self, request: Request, now: float) -> None:
        def reject(reason: str) -> ApiError:
            return gateway_error(
                401,
                "APIGW.0301",
                f"Incorrect IAM authentication information: {reason}",
                request.request_id,
            )

        parsed = signer.parse_authorization(request.headers.get("Authorization", ""))
        if parsed is None:
            raise reject("malformed Authorization header")
        access_key, signed_names, signature = parsed
        secret_key = self._auth.aksk.get(access_key)
        if secret_key is None:
            raise reject("unknown access key")
        if "x-sdk-date" not in signed_names or "host" not in signed_names:
            raise reject("x-sdk-date and host must be signed")
        headers: dict[str, str] = {}
        for name in signed_names:
            value = request.headers.get(name)
            if value is None:
                raise reject(f"signed header {name} is missing")
            headers[name] = value
        try:
            sent = datetime.strptime(headers["x-sdk-date"], signer.DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise reject("x-sdk-date is not in the format YYYYMMDDTHHMMSSZ") from None
        if abs(sent.timestamp() - now) > MAX_CLOCK_SKEW_SECONDS:
            raise gateway_error(
                401,
                "APIGW.0303",
                "Incorrect app authentication information: the x-sdk-date is more than "
                "15 minutes from the gateway time",
                request.request_id,
            )
        expected = signer.signature(
            secret_key,
            request.method,
            request.path,
            request.query,
            headers,
            signed_names,
            request.body,
        )
        if not hmac.compare_digest(expected, signature):
            raise reject("verify aksk signature fail")

    def login(self, request: Request, now: float) -> tuple[str, dict[str, Any]]:
        """``POST /v3/auth/tokens`` with a password: a new token and the 201 body."""
        try:
            auth = parse_json_object(request.body)["auth"]
            identity = auth["identity"]
            user = identity["password"]["user"]
            name, password, domain = user["name"], user["password"], user["domain"]["name"]
            project = (auth.get("scope") or {}).get("project")
            valid = "password" in identity["methods"] and all(
                isinstance(v, str) for v in (name, password, domain)
            )
        except (ApiError, KeyError, TypeError, AttributeError):
            valid = False
        if not valid:
            raise iam_error(400, "The request body is not a password login.", "Bad Request")
        expected = self._auth.users.get((domain, name))
        if expected is None or not hmac.compare_digest(expected, password):
            raise iam_error(401, "The username or password is wrong.", "Unauthorized")
        if isinstance(project, dict) and project.get("id", self._project_id) != self._project_id:
            raise iam_error(401, "The project ID is invalid.", "Unauthorized")
        token = "MIIS" + secrets.token_urlsafe(48)
        self._issued = {k: v for k, v in self._issued.items() if v.expires_at > now}
        expires = now + self._auth.token_lifetime_seconds
        self._issued[token] = _Issued(expires, scoped=isinstance(project, dict))
        domain_ref = {"id": _stable_id("domain", domain), "name": domain}
        body: dict[str, Any] = {
            "expires_at": _iso(expires),
            "issued_at": _iso(now),
            "methods": ["password"],
            "roles": [{"id": _stable_id("role", "te_admin"), "name": "te_admin"}],
            "user": {
                "id": _stable_id("user", domain, name),
                "name": name,
                "domain": domain_ref,
                "password_expires_at": "",
            },
        }
        if isinstance(project, dict):
            body["project"] = {
                "id": self._project_id,
                "name": project.get("name", "eu-de"),
                "domain": domain_ref,
            }
        return token, {"token": body}
