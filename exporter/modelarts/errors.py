"""Typed errors of the ModelArts client. Messages never contain credentials."""

from __future__ import annotations


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
        """A short, bounded label value for metrics: the error code, else the class."""
        if self.error_code:
            return self.error_code
        if self.status is not None:
            return f"http_{self.status}"
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


def redact(error: ModelArtsError, secrets: tuple[str, ...]) -> ModelArtsError:
    """Remove secret values from an error's message (a server may echo a credential)."""
    for secret in secrets:
        if len(secret) >= 4:
            error.error_msg = error.error_msg.replace(secret, "<redacted>")
            error.request_id = error.request_id.replace(secret, "<redacted>")
    error.args = (str(error),)
    return error


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


class BadResponseError(ModelArtsError):
    """An answer we cannot use: not JSON, an HTML error page, wrong field types or sizes."""


class LogUnavailableError(ModelArtsError):
    """The task's log is gone or has no path (ModelArts.2819 / 2820 / 2822)."""
