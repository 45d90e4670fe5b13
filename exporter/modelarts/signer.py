"""AK/SK request signing, ``SDK-HMAC-SHA256`` as the Huawei Cloud SDK does it.

Pure functions only: the same code signs the client's requests and verifies them in
the simulator. The algorithm (Huawei Cloud API signing guide, huaweicloudsdkcore
``signer/signer.py``):

    CanonicalRequest = METHOD \\n CanonicalURI \\n CanonicalQuery \\n CanonicalHeaders \\n
                       SignedHeaders \\n hex(sha256(body))
    StringToSign     = "SDK-HMAC-SHA256" \\n X-Sdk-Date \\n hex(sha256(CanonicalRequest))
    Signature        = hex(hmac_sha256(SK, StringToSign))
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"


def _encode(value: str) -> str:
    return quote(value, safe="~")


def sdk_date(now: datetime | None = None) -> str:
    """The ``X-Sdk-Date`` value for ``now`` (UTC)."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime(DATE_FORMAT)


def canonical_uri(path: str) -> str:
    """URL-decode, percent-encode each segment, and end with ``/`` (sent without it)."""
    uri = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(query: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query))


def canonical_request(
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    lowered = {k.lower(): str(v).strip() for k, v in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered[name]}\n" for name in signed_headers)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            canonical_headers,
            ";".join(signed_headers),
            hashlib.sha256(body).hexdigest(),
        ]
    )


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    """Every header, lower-cased and sorted; names with ``_`` are skipped, as the SDK does."""
    return sorted({k.lower() for k in headers if "_" not in k})


def signature(
    secret_key: str,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    """Hex signature over a request whose headers already include ``X-Sdk-Date``."""
    date = next(v for k, v in headers.items() if k.lower() == DATE_HEADER.lower())
    creq = canonical_request(method, path, query, headers, signed_headers, body)
    string_to_sign = f"{ALGORITHM}\n{date}\n{hashlib.sha256(creq.encode()).hexdigest()}"
    return hmac.new(secret_key.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def authorization_header(
    access_key: str,
    secret_key: str,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
) -> str:
    """The ``Authorization`` value signing all of ``headers`` (which must hold X-Sdk-Date)."""
    names = signed_header_names(headers)
    sig = signature(secret_key, method, path, query, headers, names, body)
    return f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(names)}, Signature={sig}"


def parse_authorization(value: str) -> tuple[str, list[str], str] | None:
    """Split an ``SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...`` header.

    Returns (access key, signed header names, signature) or None when malformed.
    """
    if not value.startswith(ALGORITHM + " "):
        return None
    fields: dict[str, str] = {}
    for part in value[len(ALGORITHM) + 1 :].split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            return None
        fields[key] = val
    try:
        return fields["Access"], fields["SignedHeaders"].split(";"), fields["Signature"]
    except KeyError:
        return None
