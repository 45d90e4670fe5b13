"""AK/SK signing: the published test vector, and byte-identity with the Huawei Cloud SDK."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from httpfake import FakeServer, Recorded, json_reply
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest

from modelarts_exporter.modelarts import signer
from modelarts_exporter.modelarts.auth import AkSkAuth
from modelarts_exporter.modelarts.client import ModelArtsClient

# The HWC API signing guide's test vector.
VECTOR_AK = "QTWAOYTTINDUT2QVKYUC"
VECTOR_SK = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
VECTOR_PATH = "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs"
VECTOR_QUERY = [("limit", "2"), ("marker", "13551d6b-755d-4757-b956-536f674975c0")]
VECTOR_HEADERS = {
    "Content-Type": "application/json",
    "Host": "service.region.example.com",
    "X-Sdk-Date": "20191115T033655Z",
}
VECTOR_CREQ_HASH = "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
VECTOR_SIGNATURE = "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"

AK = "HPUAEXAMPLEACCESSKEY"
SK = "sk-example-secret-0123456789abcdefghijklmn"
PROJECT = "0123456789abcdef0123456789abcdef"
FIXED = datetime(2026, 3, 1, 12, 30, 45, tzinfo=UTC)
JOB = "3faf5c03-aaa1-4cbe-879d-24b05d997347"


def test_vector_canonical_request_hash() -> None:
    names = signer.signed_header_names(VECTOR_HEADERS)
    creq = signer.canonical_request("GET", VECTOR_PATH, VECTOR_QUERY, VECTOR_HEADERS, names, b"")
    assert hashlib.sha256(creq.encode()).hexdigest() == VECTOR_CREQ_HASH


def test_vector_authorization_header() -> None:
    value = signer.authorization_header(
        VECTOR_AK, VECTOR_SK, "GET", VECTOR_PATH, VECTOR_QUERY, VECTOR_HEADERS, b""
    )
    assert value == (
        f"SDK-HMAC-SHA256 Access={VECTOR_AK}, SignedHeaders=content-type;host;x-sdk-date, "
        f"Signature={VECTOR_SIGNATURE}"
    )


def test_parse_authorization_round_trip() -> None:
    value = signer.authorization_header(
        VECTOR_AK, VECTOR_SK, "GET", VECTOR_PATH, VECTOR_QUERY, VECTOR_HEADERS, b""
    )
    assert signer.parse_authorization(value) == (
        VECTOR_AK,
        ["content-type", "host", "x-sdk-date"],
        VECTOR_SIGNATURE,
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer abc",
        "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host",
        "SDK-HMAC-SHA256 Access=AK, SignedHeaders, Signature=00",
    ],
)
def test_parse_authorization_rejects_malformed(value: str) -> None:
    assert signer.parse_authorization(value) is None


def sdk_authorization(
    method: str, url: str, headers: dict[str, str], body: bytes, security_token: str | None
) -> dict[str, str]:
    """What the official SDK signs for the same request, date and content type."""
    parts = urlsplit(url)
    request = SdkRequest(
        method=method,
        schema=parts.scheme,
        host=parts.netloc,
        resource_path=parts.path,
        query_params=[],
        header_params={
            "Content-Type": headers["Content-Type"],
            "X-Sdk-Date": headers["X-Sdk-Date"],
        },
        body=body,
    )
    credentials = BasicCredentials(AK, SK, PROJECT)
    if security_token is not None:
        credentials = credentials.with_security_token(security_token)
    signed: dict[str, str] = credentials.sign_request(request).header_params
    return signed


BASE = "https://modelarts.eu-de.otc.t-systems.com"
CALLS = [
    pytest.param(
        "GET",
        f"{BASE}/v2/{PROJECT}/training-jobs/{JOB}/tasks/worker-0/logs/preview",
        "application/json",
        b"",
        id="preview",
    ),
    pytest.param(
        "GET", f"{BASE}/v2/{PROJECT}/training-jobs/{JOB}", "application/json", b"", id="details"
    ),
    pytest.param(
        "POST",
        f"{BASE}/v2/{PROJECT}/training-job-searches",
        "application/json;charset=utf-8",
        b'{"offset":0,"limit":50,"sort_by":"create_time","order":"desc",'
        b'"filters":[{"key":"phase","operator":"in","value":["Running"]}]}',
        id="list",
    ),
]


@pytest.mark.parametrize("security_token", [None, "temporary-security-token-XYZ"])
@pytest.mark.parametrize(("method", "url", "content_type", "body"), CALLS)
def test_aksk_signs_like_the_sdk(
    method: str, url: str, content_type: str, body: bytes, security_token: str | None
) -> None:
    auth = AkSkAuth(AK, SK, PROJECT, security_token=security_token, now=lambda: FIXED)
    headers = {"Content-Type": content_type, "User-Agent": "modelarts-exporter/test"}
    auth.apply(method, url, headers, body)

    expected = sdk_authorization(method, url, headers, body, security_token)
    assert headers["Authorization"] == expected["Authorization"]
    for name, value in expected.items():
        assert headers[name] == value
    assert headers["User-Agent"] == "modelarts-exporter/test"  # sent, but not signed
    assert "user-agent" not in headers["Authorization"]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


def verify(recorded: Recorded) -> bool:
    """Check a received request as a gateway would: recompute over its signed headers."""
    parsed = signer.parse_authorization(recorded.header("Authorization") or "")
    assert parsed is not None
    access_key, names, signature = parsed
    headers = {k.lower(): v for k, v in recorded.headers.items()}
    assert all(name in headers for name in names)
    path, _, query = recorded.path.partition("?")
    assert not query
    expected = signer.signature(SK, recorded.method, path, [], headers, names, recorded.body)
    return access_key == AK and signature == expected


def test_signed_requests_on_the_wire_match_the_sdk(server: FakeServer) -> None:
    """What the client actually sends (Host, path, body bytes) is what the SDK would sign."""
    job = {"metadata": {"id": JOB, "name": "n"}, "status": {"phase": "Running", "tasks": ["w 0"]}}
    server.script(
        json_reply({"count": 1, "items": [job]}),
        json_reply(job),
        json_reply({"content": "x\n", "current_size": 2, "full_size": 2}),
    )
    auth = AkSkAuth(AK, SK, PROJECT, security_token="sts-token", now=lambda: FIXED)
    with ModelArtsClient(server.url, PROJECT, auth) as client:
        client.list_jobs(["Running"])
        client.get_job(JOB)
        client.preview_log(JOB, "w 0")

    assert [r.method for r in server.requests] == ["POST", "GET", "GET"]
    assert server.requests[2].path.endswith("/tasks/w%200/logs/preview")
    for recorded in server.requests:
        assert verify(recorded)
        assert recorded.header("X-Sdk-Date") == "20260301T123045Z"
        assert recorded.header("Host") == urlsplit(server.url).netloc
        path = recorded.path
        headers = {
            "Content-Type": recorded.header("Content-Type") or "",
            "X-Sdk-Date": recorded.header("X-Sdk-Date") or "",
        }
        expected = sdk_authorization(
            recorded.method, server.url + path, headers, recorded.body, "sts-token"
        )
        assert recorded.header("Authorization") == expected["Authorization"]
