"""Secrets a server echoes back never reach a message, a log or a label.

The server is hostile here: it quotes the credential inside an HTML page (escaped, wrapped
over lines), JSON-escaped as ``\\uXXXX`` or with ``\\/`` in ``error_code`` and ``error_msg``,
in the status line's reason phrase, in ``X-Request-Id``, and it invents error codes. The
``reason`` label of the exporter's API failure metric is a closed set whatever it sends.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator

import pytest
from httpfake import FakeServer, Recorded, Reply
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from modelarts_exporter.modelarts import errors
from modelarts_exporter.modelarts.auth import PasswordAuth, TokenAuth
from modelarts_exporter.modelarts.client import ModelArtsClient, RetryPolicy
from modelarts_exporter.selfmetrics import SelfMetrics

PROJECT = "0123456789abcdef0123456789abcdef"
RUN = 12  # no run this long of a secret may survive anywhere


def long_token() -> str:
    """Like a real IAM token: ~1.3 kB of base64 with '/' and '+'."""
    return "MIIE/" + "+".join(uuid.uuid4().hex for _ in range(40)) + "/end="


def leaked(secret: str, text: str) -> list[str]:
    """Every piece of ``secret`` of RUN characters found in ``text``."""
    return [
        secret[i : i + RUN] for i in range(len(secret) - RUN + 1) if secret[i : i + RUN] in text
    ]


def escaped_everywhere(text: str) -> str:
    r"""``text`` as a JSON string literal with every character written ``\uXXXX``."""
    return '"' + "".join(f"\\u{ord(c):04x}" for c in text) + '"'


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


def client_for(server: FakeServer, secret: str) -> ModelArtsClient:
    return ModelArtsClient(
        server.url,
        PROJECT,
        TokenAuth(secret),
        retry=RetryPolicy(max_attempts=1),
        sleep=lambda _: None,
    )


def rejection(server: FakeServer, secret: str) -> errors.ModelArtsError:
    with client_for(server, secret) as client, pytest.raises(errors.ModelArtsError) as caught:
        client.preview_log("job", "worker-0")
    return caught.value


def every_text(error: errors.ModelArtsError) -> str:
    return "\n".join((str(error), error.error_code, error.error_msg, error.request_id, repr(error)))


def test_a_long_token_inside_an_html_page_escaped_and_wrapped(server: FakeServer) -> None:
    token = long_token()
    wrapped = "\n".join(token[i : i + 64] for i in range(0, len(token), 64))
    page = (
        "<html><head><title>401</title><style>p{}</style></head><body>"
        f"<p>Bad token <b>{wrapped.replace('+', '&#43;').replace('/', '&#x2F;')}</b></p>"
        f"<pre>{wrapped}</pre></body></html>"
    )
    server.script(Reply(401, page, {"Content-Type": "text/html"}))
    error = rejection(server, token)
    assert error.status == 401
    assert leaked(token, every_text(error)) == []


@pytest.mark.parametrize("form", ["unicode", "slash"])
def test_a_token_json_escaped_in_error_code_and_message(server: FakeServer, form: str) -> None:
    token = long_token()
    if form == "unicode":
        code, message = escaped_everywhere(token), escaped_everywhere(f"token {token} expired")
    else:
        code = json.dumps(token).replace("/", "\\/")
        message = json.dumps(f"token {token} expired").replace("/", "\\/")
    body = f'{{"error_code": {code}, "error_msg": {message}, "request_id": {code}}}'
    assert token not in body  # only the decoded text holds it
    server.script(Reply(401, body, {"Content-Type": "application/json"}))
    error = rejection(server, token)
    assert error.status == 401
    assert leaked(token, every_text(error)) == []
    assert error.reason == "http_401"


def test_a_token_in_the_reason_phrase_and_request_id_header(server: FakeServer) -> None:
    token = long_token()
    server.script(Reply(401, b"", {"X-Request-Id": token[:100]}, reason=f"Bad {token[:300]}"))
    error = rejection(server, token)
    assert leaked(token, every_text(error)) == []


def test_a_short_secret_echoed_whole_is_removed(server: FakeServer) -> None:
    secret = "Sh0rt!pw"
    server.script(Reply(403, {"error_code": secret, "error_msg": f"{secret}!{secret}"}))
    error = rejection(server, secret)
    assert secret not in every_text(error)
    assert error.reason == "http_403"


def test_a_password_with_a_newline_echoed_by_iam(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The message is cleaned into one line, turning the newline into a space: the
    password must be gone in that form too."""
    password = "first-half\nsecond-half"

    def iam(request: Recorded) -> Reply:
        echoed = {"error": {"code": 401, "message": f"The password {password} is wrong"}}
        return Reply(401, echoed, {"Content-Type": "application/json"})

    server.fallback = iam
    auth = PasswordAuth(server.url, "user", password, "domain", project_id=PROJECT)
    caplog.set_level(logging.DEBUG)
    client = ModelArtsClient(
        server.url, PROJECT, auth, retry=RetryPolicy(max_attempts=1), sleep=lambda _: None
    )
    with client, pytest.raises(errors.AuthenticationError) as caught:
        client.get_job("job")
    text = every_text(caught.value) + caplog.text
    for form in (password, "first-half second-half", "first-half", "second-half"):
        assert form not in text


def test_raw_and_decoded_forms_are_redacted() -> None:
    secret = "tok/en+with\u00e9-and-more-chars"
    for form in (
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret).replace("/", "\\/")[1:-1],
        escaped_everywhere(secret)[1:-1],
        escaped_everywhere(secret)[1:-1].upper().replace("\\U", "\\u"),
        "tok&#x2F;en",  # not a form of the whole secret: left, too short to matter
    ):
        body = f"before {form} after".encode()
        redacted = errors.redact_bytes(body, [secret])
        if form.startswith("tok&"):
            assert redacted == body
        else:
            assert redacted == b"before <redacted> after", form


@given(st.text(min_size=1, max_size=300), st.integers(min_value=0, max_value=1000))
def test_the_reason_label_is_a_closed_set(code: str, status: int) -> None:
    kinds = {
        errors.ModelArtsError,
        errors.AuthenticationError,
        errors.ServerError,
        errors.ThrottledError,
        errors.JobNotFoundError,
        errors.LogUnavailableError,
        errors.BadResponseError,
        errors.TransportError,
        errors.DeadlineError,
    }
    names = {kind.__name__ for kind in kinds}
    shape = re.compile(r"http_(400|401|403|404|405|408|409|413|429|500|502|503|504|[1-5]xx|other)")
    for kind in kinds:
        for given_status in (status, None):
            reason = kind("preview_log", "m", status=given_status, error_code=code).reason
            assert (
                reason in errors.KNOWN_ERROR_CODES or shape.fullmatch(reason) or reason in names
            ), reason
            if code not in errors.KNOWN_ERROR_CODES:
                assert code not in reason or reason in names or shape.fullmatch(reason)


def test_server_chosen_codes_never_become_metric_labels(server: FakeServer) -> None:
    registry = CollectorRegistry(auto_describe=False)
    metrics = SelfMetrics(registry)
    token = long_token()
    invented = [f"Custom.{n}" for n in range(50)] + [token, "<script>x</script>"]
    server.script(*(Reply(400, {"error_code": c, "error_msg": "no"}) for c in invented))
    server.script(Reply(400, {"error_code": "ModelArts.2788", "error_msg": "bad param"}))
    client = ModelArtsClient(
        server.url,
        PROJECT,
        TokenAuth(token),
        retry=RetryPolicy(max_attempts=1),
        observer=metrics,
        sleep=lambda _: None,
    )
    with client:
        for _ in range(len(invented) + 1):
            with pytest.raises(errors.ModelArtsError):
                client.get_job("job")
    reasons = {
        sample.labels["reason"]
        for family in registry.collect()
        if family.name == "modelarts_exporter_api_request_failures"
        for sample in family.samples
        if "reason" in sample.labels
    }
    assert reasons == {"http_400", "ModelArts.2788"}
