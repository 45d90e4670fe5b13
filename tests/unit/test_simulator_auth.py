"""The simulator's credential checks (static tokens, AK/SK signatures, IAM password login
with token expiry) and its rate limit. Requests are signed with
modelarts_exporter.modelarts.signer, as the exporter's client signs them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from fakes import FakeClock

from modelarts_exporter.modelarts import signer
from modelarts_exporter.simulator import RequestRecord, SimAuth, Simulator

T0 = 1_790_000_000.0
AK, SK = "QTWAOYTTINDUT2QVKYUC", "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
PASSWORD = "s3cret"
AUTH = SimAuth(
    tokens={"static-token"},
    aksk={AK: SK},
    users={("acme", "alice"): PASSWORD},
    token_lifetime_seconds=3600,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with Simulator(clock=clock, auth=AUTH) as simulator:
        yield simulator


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def searches_path(sim: Simulator) -> str:
    return f"/v2/{sim.project_id}/training-job-searches"


def signed_headers(
    sim: Simulator,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    query: tuple[tuple[str, str], ...] = (),
    signed_at: float = T0,
    secret_key: str = SK,
    access_key: str = AK,
) -> dict[str, str]:
    """The headers the exporter's client sends, signed over exactly this request."""
    headers = {
        "Host": sim.url.removeprefix("http://"),
        "X-Sdk-Date": signer.sdk_date(datetime.fromtimestamp(signed_at, UTC)),
        "Content-Type": "application/json",
        "X-Project-Id": sim.project_id,
    }
    headers["Authorization"] = signer.authorization_header(
        access_key, secret_key, method, path, query, headers, body
    )
    return headers


def test_static_token(sim: Simulator, http: requests.Session) -> None:
    url = sim.url + searches_path(sim)
    assert http.post(url, json={}, headers={"X-Auth-Token": "static-token"}).status_code == 200
    unknown = http.post(url, json={}, headers={"X-Auth-Token": "forged"})
    assert (unknown.status_code, unknown.json()["error_code"]) == (401, "ModelArts.0204")
    missing = http.post(url, json={})
    assert (missing.status_code, missing.json()["error_code"]) == (401, "ModelArts.0201")
    assert [(r.status, r.auth_kind) for r in sim.requests] == [
        (200, "token"),
        (401, "token"),
        (401, "anonymous"),
    ]


def test_aksk_signed_requests_are_accepted(sim: Simulator, http: requests.Session) -> None:
    job_id = sim.add_job("signed")
    sim.append_log(job_id, "worker-0", b"hello\n")
    body = json.dumps({"limit": 1, "filters": []}).encode()
    path = searches_path(sim)
    listed = http.post(sim.url + path, data=body, headers=signed_headers(sim, "POST", path, body))
    assert listed.status_code == 200
    assert listed.json()["count"] == 1
    preview = f"/v2/{sim.project_id}/training-jobs/{job_id}/tasks/worker-0/logs/preview"
    response = http.get(sim.url + preview, headers=signed_headers(sim, "GET", preview))
    assert response.json()["content"] == "hello\n"
    query = (("limit", "1"),)
    with_query = http.post(
        f"{sim.url}{path}?limit=1",
        data=body,
        headers=signed_headers(sim, "POST", path, body, query=query),
    )
    assert with_query.status_code == 200
    assert {r.auth_kind for r in sim.requests} == {"aksk"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"secret_key": "wrong-secret"}, "signature"),
        ({"access_key": "UNKNOWNACCESSKEY0000"}, "unknown access key"),
        ({"body": b'{"limit": 2}'}, "signature"),
    ],
)
def test_aksk_bad_signatures_are_rejected(
    sim: Simulator, http: requests.Session, change: dict[str, Any], reason: str
) -> None:
    path = searches_path(sim)
    sent = b'{"limit": 1}'
    signing: dict[str, Any] = {"body": sent, **change}
    headers = signed_headers(sim, "POST", path, **signing)
    response = http.post(sim.url + path, data=sent, headers=headers)
    assert response.status_code == 401
    error = response.json()
    assert error["error_code"] == "APIGW.0301"
    assert reason in error["error_msg"]
    assert error["request_id"] == response.headers["X-Request-Id"]


def test_aksk_must_sign_host_and_date(sim: Simulator, http: requests.Session) -> None:
    path = searches_path(sim)
    date = signer.sdk_date(datetime.fromtimestamp(T0, UTC))
    only_date = {"X-Sdk-Date": date}
    only_date["Authorization"] = signer.authorization_header(
        AK, SK, "POST", path, (), only_date, b""
    )
    response = http.post(sim.url + path, headers=only_date)
    assert (response.status_code, response.json()["error_code"]) == (401, "APIGW.0301")
    garbled = http.post(sim.url + path, headers={"Authorization": "Basic YWxpY2U6czNjcmV0"})
    assert (garbled.status_code, garbled.json()["error_code"]) == (401, "APIGW.0301")


def test_aksk_stale_date_is_rejected(
    sim: Simulator, http: requests.Session, clock: FakeClock
) -> None:
    path = searches_path(sim)
    clock.now = T0 + 14 * 60
    ok = http.post(sim.url + path, headers=signed_headers(sim, "POST", path))
    assert ok.status_code == 200
    clock.now = T0 + 16 * 60
    stale = http.post(sim.url + path, headers=signed_headers(sim, "POST", path))
    assert (stale.status_code, stale.json()["error_code"]) == (401, "APIGW.0303")
    clock.now = T0 - 16 * 60
    early = http.post(sim.url + path, headers=signed_headers(sim, "POST", path))
    assert early.json()["error_code"] == "APIGW.0303"


def login_body(password: str = PASSWORD, *, scoped: bool = True) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "identity": {
            "methods": ["password"],
            "password": {
                "user": {"name": "alice", "password": password, "domain": {"name": "acme"}}
            },
        }
    }
    if scoped:
        auth["scope"] = {"project": {"name": "eu-de"}}
    return {"auth": auth}


def test_iam_login_and_token_expiry(
    sim: Simulator, http: requests.Session, clock: FakeClock
) -> None:
    login = http.post(f"{sim.url}/v3/auth/tokens?nocatalog=true", json=login_body())
    assert login.status_code == 201
    token = login.headers["X-Subject-Token"]
    body = login.json()["token"]
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
    assert re.fullmatch(iso, body["expires_at"])
    assert body["issued_at"] == datetime.fromtimestamp(T0, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert body["expires_at"] == datetime.fromtimestamp(T0 + 3600, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    assert body["methods"] == ["password"]
    assert (body["project"]["id"], body["project"]["name"]) == (sim.project_id, "eu-de")
    assert body["user"]["name"] == "alice"

    url = sim.url + searches_path(sim)
    clock.now = T0 + 3599
    assert http.post(url, json={}, headers={"X-Auth-Token": token}).status_code == 200
    clock.now = T0 + 3600
    expired = http.post(url, json={}, headers={"X-Auth-Token": token})
    assert (expired.status_code, expired.json()["error_code"]) == (401, "ModelArts.0203")
    again = http.post(f"{sim.url}/v3/auth/tokens", json=login_body())
    fresh = again.headers["X-Subject-Token"]
    assert fresh != token
    assert http.post(url, json={}, headers={"X-Auth-Token": fresh}).status_code == 200
    assert sim.requests[0] == RequestRecord("POST", "/v3/auth/tokens", 201, "password")


def test_iam_login_failures(sim: Simulator, http: requests.Session) -> None:
    url = f"{sim.url}/v3/auth/tokens"
    wrong = http.post(url, json=login_body("guess"))
    assert wrong.status_code == 401
    assert wrong.json() == {
        "error": {
            "code": 401,
            "message": "The username or password is wrong.",
            "title": "Unauthorized",
        }
    }
    assert "X-Subject-Token" not in wrong.headers
    assert http.post(url, json={"auth": {}}).status_code == 400
    assert http.post(url, data=b"not json").status_code == 400
    unscoped = http.post(url, json=login_body(scoped=False))
    assert unscoped.status_code == 201
    token = unscoped.headers["X-Subject-Token"]
    rejected = http.post(sim.url + searches_path(sim), json={}, headers={"X-Auth-Token": token})
    assert (rejected.status_code, rejected.json()["error_code"]) == (401, "ModelArts.0207")


def test_anonymous_requests_when_allowed(clock: FakeClock, http: requests.Session) -> None:
    with Simulator(clock=clock, auth=SimAuth(allow_anonymous=True)) as sim:
        url = sim.url + searches_path(sim)
        assert http.post(url, json={}).status_code == 200
        assert http.post(url, json={}, headers={"X-Auth-Token": "x"}).status_code == 401


def test_rate_limit(clock: FakeClock, http: requests.Session) -> None:
    with Simulator(clock=clock, rate_limit_per_second=2) as sim:
        url = sim.url + searches_path(sim)
        assert [http.post(url, json={}).status_code for _ in range(2)] == [200, 200]
        throttled = http.post(url, json={})
        assert throttled.status_code == 429
        assert throttled.headers["Retry-After"] == "1"
        assert throttled.json() == {
            "error_code": "ModelArts.2799",
            "error_msg": "services too many requests",
        }
        clock.now += 0.5
        assert http.post(url, json={}).status_code == 200
        assert http.post(url, json={}).status_code == 429
        clock.now += 10
        assert [http.post(url, json={}).status_code for _ in range(3)] == [200, 200, 429]
