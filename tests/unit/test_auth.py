"""Credentials: token header, AK/SK headers, IAM password login with its cache."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from httpfake import FakeServer, Recorded, Reply, json_reply, refused_url

from modelarts_exporter.modelarts import errors, signer
from modelarts_exporter.modelarts.auth import AkSkAuth, Auth, PasswordAuth, TokenAuth

PROJECT = "0123456789abcdef0123456789abcdef"
PASSWORD = "pw-Sup3r-S3cret!"
IAM_TOKEN = "MIIiam-token-value-0123456789"
AK = "AKEXAMPLE0123456789"
SK = "sk-secret-value-abcdefghijklmnop"
STS = "sts-security-token-value"
STATIC_TOKEN = "MIIstatic-token-abcdef"
SECRETS = (PASSWORD, IAM_TOKEN, SK, STS, STATIC_TOKEN)

T0 = datetime(2026, 11, 26, 23, 4, 34, tzinfo=UTC).timestamp()
EXPIRES = "2026-11-27T23:04:34.000000Z"  # T0 + 24 h


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, errors.ModelArtsError | None]] = []

    def observe(
        self, endpoint: str, duration_seconds: float, error: errors.ModelArtsError | None
    ) -> None:
        self.calls.append((endpoint, duration_seconds, error))


def token_reply(token: str = IAM_TOKEN, expires_at: str = EXPIRES) -> Reply:
    body = {"token": {"expires_at": expires_at, "issued_at": "2026-11-26T23:04:34.000000Z"}}
    return json_reply(body, 201, **{"X-Subject-Token": token})


def rejected_reply() -> Reply:
    body = {"error": {"code": 401, "message": "The request you have made requires authentication."}}
    return json_reply(body, 401)


@pytest.fixture
def iam() -> Iterator[FakeServer]:
    with FakeServer(fallback=token_reply()) as server:
        yield server


def password_auth(
    url: str,
    clock: Clock | None = None,
    *,
    project_name: str | None = "eu-de",
    project_id: str | None = None,
    observer: Observer | None = None,
) -> PasswordAuth:
    return PasswordAuth(
        url,
        "alice",
        PASSWORD,
        "OTC-EU-DE-00000000001000000001",
        project_name=project_name,
        project_id=project_id,
        clock=clock or Clock(),
        observer=observer,
    )


# -- token ------------------------------------------------------------------------------------


def test_token_auth_sets_x_auth_token() -> None:
    auth: Auth = TokenAuth(STATIC_TOKEN)
    headers: dict[str, str] = {"Content-Type": "application/json"}
    auth.apply("GET", "https://h/v2/p/training-jobs/j", headers, b"")
    assert headers == {"Content-Type": "application/json", "X-Auth-Token": STATIC_TOKEN}
    assert auth.kind == "token"
    assert auth.invalidate() is False


@pytest.mark.parametrize("token", ["", "two words", "line\r\nX-Evil: 1"])
def test_token_auth_rejects_unsendable_tokens_without_echoing_them(token: str) -> None:
    with pytest.raises(ValueError, match="token") as info:
        TokenAuth(token)
    assert not token or token not in str(info.value)


# -- AK/SK ------------------------------------------------------------------------------------


def test_aksk_auth_headers() -> None:
    dates = iter(
        [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)]
    )
    auth: Auth = AkSkAuth(AK, SK, PROJECT, security_token=STS, now=lambda: next(dates))
    url = "https://modelarts.example.com:8443/v2/p/training-job-searches"
    headers = {"Content-Type": "application/json;charset=utf-8", "User-Agent": "ua/1"}
    auth.apply("POST", url, headers, b"{}")

    assert headers["Host"] == "modelarts.example.com:8443"
    assert headers["X-Sdk-Date"] == "20260102T030405Z"
    assert headers["X-Project-Id"] == PROJECT
    assert headers["X-Security-Token"] == STS
    assert headers["Content-Type"] == "application/json;charset=utf-8"
    parsed = signer.parse_authorization(headers["Authorization"])
    assert parsed is not None
    assert parsed[:2] == (
        AK,
        ["content-type", "host", "x-project-id", "x-sdk-date", "x-security-token"],
    )
    assert auth.kind == "aksk"
    assert auth.invalidate() is False

    again = {"Content-Type": "application/json;charset=utf-8"}
    auth.apply("POST", url, again, b"{}")
    assert again["X-Sdk-Date"] == "20260102T030406Z"  # signed afresh per attempt
    assert again["Authorization"] != headers["Authorization"]


def test_aksk_auth_without_security_token_or_content_type() -> None:
    auth = AkSkAuth(AK, SK, PROJECT, now=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    headers: dict[str, str] = {"host": "stale"}
    auth.apply("GET", "http://127.0.0.1:9/v2/p/x", headers, b"")
    assert "X-Security-Token" not in headers
    assert "host" not in headers
    assert headers["Host"] == "127.0.0.1:9"
    assert "SignedHeaders=host;x-project-id;x-sdk-date," in headers["Authorization"]


# -- IAM password login -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "/v3", "/v3/"])
def test_login_request(iam: FakeServer, suffix: str) -> None:
    auth = password_auth(iam.url + suffix)
    headers: dict[str, str] = {}
    auth.apply("GET", "https://modelarts/x", headers, b"")

    assert headers == {"X-Auth-Token": IAM_TOKEN}
    assert auth.kind == "password"
    [login] = iam.requests
    assert login.method == "POST"
    assert login.path == "/v3/auth/tokens?nocatalog=true"
    assert login.header("Content-Type") == "application/json;charset=utf8"
    assert login.json() == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": "alice",
                        "password": PASSWORD,
                        "domain": {"name": "OTC-EU-DE-00000000001000000001"},
                    }
                },
            },
            "scope": {"project": {"name": "eu-de"}},
        }
    }


def test_login_scoped_by_project_id(iam: FakeServer) -> None:
    auth = password_auth(iam.url, project_name=None, project_id=PROJECT)
    assert auth.token() == IAM_TOKEN
    assert iam.requests[0].json()["auth"]["scope"] == {"project": {"id": PROJECT}}


def test_project_is_required() -> None:
    with pytest.raises(ValueError, match="project"):
        password_auth("https://iam.example.com", project_name=None)


def test_token_is_cached_and_refreshed_before_expiry(iam: FakeServer) -> None:
    clock = Clock()
    auth = password_auth(iam.url, clock)
    iam.script(token_reply("first"), token_reply("second", "2026-11-28T23:04:34Z"))

    assert auth.token() == "first"
    clock.now = T0 + 86400 - 3600 - 1  # just before the refresh margin
    assert auth.token() == "first"
    assert len(iam.requests) == 1
    clock.now = T0 + 86400 - 3600
    assert auth.token() == "second"
    assert len(iam.requests) == 2


def test_short_lived_token_is_refreshed_half_way(iam: FakeServer) -> None:
    clock = Clock()
    auth = password_auth(iam.url, clock)
    iam.script(token_reply("short", "2026-11-26T23:24:34Z"), token_reply("next"))  # 20 min
    assert auth.token() == "short"
    clock.now = T0 + 599
    assert auth.token() == "short"
    clock.now = T0 + 600
    assert auth.token() == "next"


def test_invalidate_forces_a_new_login(iam: FakeServer) -> None:
    auth = password_auth(iam.url)
    iam.script(token_reply("first"), token_reply("second"))
    assert auth.token() == "first"
    assert auth.invalidate() is True
    assert auth.token() == "second"
    assert len(iam.requests) == 2


def test_rejected_password_is_not_retried_for_a_minute(iam: FakeServer) -> None:
    clock = Clock()
    observer = Observer()
    auth = password_auth(iam.url, clock, observer=observer)
    iam.script(rejected_reply(), rejected_reply())

    with pytest.raises(errors.AuthenticationError) as first:
        auth.token()
    assert first.value.endpoint == "iam_token"
    assert first.value.status == 401
    assert "requires authentication" in str(first.value)

    clock.now += 59
    auth.invalidate()
    with pytest.raises(errors.AuthenticationError, match="not retried"):
        auth.token()
    assert len(iam.requests) == 1
    assert len(observer.calls) == 1

    clock.now += 1
    with pytest.raises(errors.AuthenticationError):
        auth.token()
    assert len(iam.requests) == 2
    clock.now += 60
    assert auth.token() == IAM_TOKEN  # fallback: accepted again
    assert len(iam.requests) == 3


def test_server_error_is_not_cooled_down(iam: FakeServer) -> None:
    auth = password_auth(iam.url)
    iam.script(json_reply({"error_code": "IAM.0001", "error_msg": "busy"}, 503))
    with pytest.raises(errors.ServerError, match=r"IAM\.0001"):
        auth.token()
    assert auth.token() == IAM_TOKEN
    assert len(iam.requests) == 2


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (json_reply({"token": {"expires_at": EXPIRES}}, 201), "X-Subject-Token"),
        (token_reply(expires_at="tomorrow"), "expires_at"),
        (json_reply({}, 201, **{"X-Subject-Token": IAM_TOKEN}), "expires_at"),
        (Reply(201, b"<html>ok</html>", {"X-Subject-Token": IAM_TOKEN}), "not JSON: ok"),
    ],
)
def test_unusable_login_response(iam: FakeServer, reply: Reply, match: str) -> None:
    iam.script(reply)
    with pytest.raises(errors.BadResponseError, match=match) as info:
        password_auth(iam.url).token()
    assert info.value.endpoint == "iam_token"


def test_unreachable_iam_is_a_transport_error() -> None:
    observer = Observer()
    auth = password_auth(refused_url(), observer=observer)
    with pytest.raises(errors.TransportError, match="connection failed") as info:
        auth.token()
    assert info.value.endpoint == "iam_token"
    [(endpoint, duration, error)] = observer.calls
    assert (endpoint, error) == ("iam_token", info.value)
    assert duration >= 0


def test_observer_sees_successful_login(iam: FakeServer) -> None:
    observer = Observer()
    password_auth(iam.url, observer=observer).token()
    [(endpoint, _, error)] = observer.calls
    assert (endpoint, error) == ("iam_token", None)


def test_concurrent_callers_share_one_login(iam: FakeServer) -> None:
    iam.script(dataclasses.replace(token_reply(), delay=0.1))
    auth = password_auth(iam.url)
    start = threading.Barrier(8)
    tokens: list[str] = []

    def worker() -> None:
        start.wait()
        tokens.append(auth.token())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert tokens == [IAM_TOKEN] * 8
    assert len(iam.requests) == 1


# -- secrets --------------------------------------------------------------------------------


def test_secrets_never_appear_in_reprs_errors_or_logs(
    iam: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    password = password_auth(iam.url)
    iam.script(token_reply(), rejected_reply())
    password.token()
    password.invalidate()
    for _ in range(2):
        with pytest.raises(errors.ModelArtsError) as info:
            password.token()
        texts += [str(info.value), repr(info.value), repr(info.value.args)]
    credentials: list[object] = [
        password,
        TokenAuth(STATIC_TOKEN),
        AkSkAuth(AK, SK, PROJECT, security_token=STS),
    ]
    for auth in credentials:
        texts += [repr(auth), str(auth)]
    texts += [record.getMessage() for record in caplog.records]
    texts.append(caplog.text)

    joined = "\n".join(texts)
    for secret in SECRETS:
        assert secret not in joined
    assert AK not in joined
    assert "alice" in repr(password)  # the user name is not a secret and helps debugging


def test_login_request_carries_the_password_only_in_its_body(iam: FakeServer) -> None:
    password_auth(iam.url).token()
    recorded: Recorded = iam.requests[0]
    assert PASSWORD not in recorded.path
    assert all(PASSWORD not in value for value in recorded.headers.values())
