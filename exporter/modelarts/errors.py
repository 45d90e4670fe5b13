"""Typed errors of the ModelArts client. Messages never contain credentials.

Everything an error carries from a server (code, message, request id) is that server's
text: :func:`redact_text` removes the credentials in use from it, in every form a server
may echo them (whole, cut, JSON- or HTML-escaped), and :attr:`ModelArtsError.reason`, the
only part used as a metric label, is one of a closed set of values.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Iterable
from urllib.parse import quote

REDACTED = "<redacted>"
MIN_SECRET_CHARS = 4
"""Shorter values are not looked for (they would match ordinary words)."""
FRAGMENT_CHARS = 12
"""Any run of this many characters of a secret is removed too: a server may echo a long
token cut (at its own message limit or ours) or split across lines."""

KNOWN_ERROR_CODES = frozenset(
    {
        *(f"ModelArts.{n:04d}" for n in (*range(201, 209), 212, 210, 108, 112, 10)),
        *(f"ModelArts.{n}" for n in (2764, 2775, 2776, 2784, 2785, 2786, 2787, 2788, 2789)),
        *(f"ModelArts.{n}" for n in (2790, 2799, 2803, 2807, 2808, 2809, 2818, 2819, 2820)),
        *(f"ModelArts.{n}" for n in (2822, 2836, 2878, 4127, 4302, 4395, 5001, 5002, 5039)),
        *(f"ModelArts.{n}" for n in (6101, 6102, 6620)),
        "APIGW.0301",
        "APIGW.0303",
        "APIG.0308",
    }
)
"""The documented ModelArts and API gateway error codes (MODELARTS_API.md, section 4):
the only codes that become a metric label; others are labelled by HTTP status."""
_LABELLED_STATUSES = frozenset({400, 401, 403, 404, 405, 408, 409, 413, 429, 500, 502, 503, 504})


class ModelArtsError(Exception):
    """A ModelArts call failed. ``endpoint`` names the call (list_jobs, get_job, ...)."""

    def __init__(
        self,
        endpoint: str,
        message: str,
        *,
        status: int | None = None,
        error_code: str = "",
        request_id: str = "",
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.error_code = error_code
        self.error_msg = message
        self.request_id = request_id
        super().__init__(str(self))

    @property
    def reason(self) -> str:
        """A metric label value from a closed set, never the server's text.

        A documented error code (:data:`KNOWN_ERROR_CODES`), else the HTTP status
        (``http_503``, or ``http_4xx``-style for uncommon ones), else the error's class name
        (``TransportError``, ``DeadlineError``, ``BadResponseError``, ...).
        """
        if isinstance(self, TransportError | BadResponseError):
            return type(self).__name__
        if self.error_code in KNOWN_ERROR_CODES:
            return self.error_code
        if self.status is not None:
            if self.status in _LABELLED_STATUSES:
                return f"http_{self.status}"
            if 100 <= self.status <= 599:
                return f"http_{self.status // 100}xx"
            return "http_other"
        return type(self).__name__

    def __str__(self) -> str:
        """``list_jobs: HTTP 503 ModelArts.0001: message (request id ...)``, or
        ``list_jobs: message`` when there was no HTTP answer."""
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.error_code and self.error_code != str(self.status):
            parts.append(self.error_code)
        text = f"{self.endpoint}: {' '.join(parts)}" if parts else self.endpoint
        if self.error_msg:
            text += f": {self.error_msg}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text


def redact(error: ModelArtsError, secrets: Iterable[str]) -> ModelArtsError:
    """Remove secret values from an error's code, message and request id (a server may
    echo a credential), with :func:`redact_text`."""
    secrets = tuple(secrets)
    error.error_code = redact_text(error.error_code, secrets)
    error.error_msg = redact_text(error.error_msg, secrets)
    error.request_id = redact_text(error.request_id, secrets)
    error.args = (str(error),)
    return error


def redact_text(text: str, secrets: Iterable[str], limit: int | None = None) -> str:
    """``text`` with every secret replaced by ``<redacted>``: whole, with its whitespace
    collapsed or turned into spaces, and any run of FRAGMENT_CHARS or more characters of it.

    Works on decoded text (after JSON and HTML unescaping); secrets shorter than
    MIN_SECRET_CHARS are left alone. With ``limit``, whole secrets are removed from all of
    ``text``, which is then cut to ``limit`` characters before fragments are looked for (a
    cheap pass over a huge text, a thorough one over what is kept).
    """
    wanted = [s for s in secrets if len(s) >= MIN_SECRET_CHARS]
    if not wanted:
        return text if limit is None else text[:limit]
    for secret in wanted:
        for form in _text_forms(secret):
            text = text.replace(form, REDACTED)
    if limit is not None:
        text = text[:limit]
    spans: list[tuple[int, int]] = []
    for secret in wanted:
        if len(secret) >= FRAGMENT_CHARS:
            spans.extend(_fragment_spans(text, _fragments(secret)))
    if not spans:
        return text
    pieces, end = [], 0
    for start, stop in _merge(spans):
        pieces.append(text[end:start] + REDACTED)
        end = stop
    return "".join(pieces) + text[end:]


def redact_bytes(body: bytes, secrets: Iterable[str]) -> bytes:
    """``body`` with every secret replaced, in the encodings a raw answer may hold it:
    as it is, JSON-escaped (``\\uXXXX``, ``\\/``), HTML-escaped or percent-encoded."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET_CHARS:
            for form in _byte_forms(secret):
                body = body.replace(form, REDACTED.encode())
    return body


@functools.lru_cache(maxsize=64)
def _text_forms(secret: str) -> tuple[str, ...]:
    """The secret, and as a server's text or our cleaning may have changed its whitespace
    (a password with a newline shown on one line), longest first."""
    spaced = re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", secret)
    forms = {secret, spaced, " ".join(spaced.split())}
    return tuple(sorted((f for f in forms if len(f) >= MIN_SECRET_CHARS), key=len, reverse=True))


@functools.lru_cache(maxsize=64)
def _byte_forms(secret: str) -> tuple[bytes, ...]:
    escaped = json.dumps(secret)[1:-1]
    unicode = json.dumps(secret, ensure_ascii=False)[1:-1]
    every = "".join(f"\\u{ord(c):04x}" for c in secret)
    forms = {secret, escaped, unicode, html.escape(secret), quote(secret, safe="")}
    forms |= {form.replace("/", "\\/") for form in (secret, escaped, unicode)}
    forms |= {every, every.upper().replace("\\U", "\\u")}
    return tuple(sorted((f.encode("utf-8", "surrogatepass") for f in forms), key=len, reverse=True))


@functools.lru_cache(maxsize=64)
def _fragments(secret: str) -> frozenset[str]:
    """Every FRAGMENT_CHARS-long piece of the secret."""
    n = FRAGMENT_CHARS
    return frozenset(secret[i : i + n] for i in range(len(secret) - n + 1))


def _fragment_spans(text: str, fragments: frozenset[str]) -> list[tuple[int, int]]:
    n = FRAGMENT_CHARS
    return [(i, i + n) for i in range(len(text) - n + 1) if text[i : i + n] in fragments]


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


class JobNotFoundError(ModelArtsError):
    """HTTP 400 ModelArts.2775: the training job was deleted."""


class AuthenticationError(ModelArtsError):
    """HTTP 401/403: the credential was rejected or lacks permission."""


CREDENTIAL_CODES = frozenset(
    {"ModelArts.0206", "ModelArts.0210", "ModelArts.2784", "APIGW.0301", "APIGW.0303"}
)
"""403 codes that reject the credential itself (bad AK/SK, wrong project, bad token, a
clock off by more than 15 minutes), not the access to one job or API."""


def credential_rejected(exc: AuthenticationError) -> bool:
    """Whether a 401/403 rejects the credential for every call (not one job's or API's
    access)."""
    return exc.status == 401 or exc.error_code in CREDENTIAL_CODES


class ThrottledError(ModelArtsError):
    """HTTP 429 after the client's retries: ModelArts asks us to slow down."""

    def __init__(
        self,
        endpoint: str,
        message: str,
        *,
        status: int | None = 429,
        error_code: str = "",
        request_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(
            endpoint, message, status=status, error_code=error_code, request_id=request_id
        )


class ServerError(ModelArtsError):
    """HTTP 5xx after the client's retries."""


class TransportError(ModelArtsError):
    """No HTTP answer: connection refused or reset, DNS, TLS, connect or read timeout."""


class DeadlineError(TransportError):
    """The call's total deadline passed (connect, answer and retries included)."""


class StoppedError(ModelArtsError):
    """The call was abandoned because the exporter is stopping."""


class BadResponseError(ModelArtsError):
    """An answer we cannot use: not JSON, an HTML error page, wrong field types or sizes."""


class LogUnavailableError(ModelArtsError):
    """The task's log is gone or has no path (ModelArts.2819 / 2820 / 2822)."""
