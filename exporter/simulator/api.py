"""ModelArts request and answer semantics of the simulator, free of sockets and threads.

Error bodies are those of ModelArts: ModelArts errors are
``{"error_code": "ModelArts.XXXX", "error_msg": ...}``, API-gateway errors add a
``request_id``, IAM errors are ``{"error": {"code", "message", "title"}}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from .model import SimJob

JSON_TYPE = "application/json;charset=UTF-8"
MAX_LIMIT = 50
SORT_FIELDS = ("create_time",)
# (key, operator) pairs of the list filter the simulator implements.
FILTERS = frozenset({("phase", "in"), ("phase", "not"), ("name", "like")})


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as the handler read it: raw path (no query), query pairs, exact body."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Message
    body: bytes
    request_id: str


@dataclass(frozen=True, slots=True)
class Response:
    """What to send back; a 204 is sent without a body or Content-Length. ``drip_seconds``
    > 0 sends the body one byte at a time, that far apart (a server that trickles)."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    drip_seconds: float = 0.0


class ApiError(Exception):
    """An error answer; raised anywhere below the handler and sent as it is."""

    def __init__(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return json_response(self.status, self.body, self.headers)


def json_body(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(status: int, obj: object, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, json_body(obj), {"Content-Type": JSON_TYPE, **(headers or {})})


def modelarts_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> ApiError:
    return ApiError(status, {"error_code": code, "error_msg": message}, headers)


def gateway_error(status: int, code: str, message: str, request_id: str) -> ApiError:
    return ApiError(status, {"error_msg": message, "error_code": code, "request_id": request_id})


def iam_error(status: int, message: str, title: str) -> ApiError:
    return ApiError(status, {"error": {"code": status, "message": message, "title": title}})


def job_not_found(job_id: str) -> ApiError:
    return modelarts_error(400, "ModelArts.2775", f"Training job (ID: {job_id}) not found.")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``. Else 400 ModelArts.2787."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise modelarts_error(400, "ModelArts.2787", f"Invalid JSON body: {exc}") from exc
    if not isinstance(value, dict):
        raise modelarts_error(400, "ModelArts.2787", "The request body must be a JSON object.")
    return value


@dataclass(frozen=True, slots=True)
class Filter:
    key: str
    operator: str
    values: tuple[str, ...]

    def matches(self, job: SimJob) -> bool:
        if self.key == "phase":
            return (job.phase in self.values) == (self.operator == "in")
        return any(value in job.name for value in self.values)


@dataclass(frozen=True, slots=True)
class Search:
    """A validated ``training-job-searches`` body. ``offset`` is a page index."""

    offset: int = 0
    limit: int = MAX_LIMIT
    sort_by: str = "create_time"
    order: str = "desc"
    group_by: str = ""
    workspace_id: str = "0"
    filters: tuple[Filter, ...] = ()


def _int_field(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise modelarts_error(
            400, "ModelArts.2788", f"Invalid parameter {name}={value!r}: must be {low}..{high}."
        )
    return value


def _str_field(body: Mapping[str, Any], name: str, default: str) -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise modelarts_error(400, "ModelArts.2788", f"Invalid parameter {name}: not a string.")
    return value


def _parse_filter(raw: object) -> Filter:
    if not isinstance(raw, dict):
        raise modelarts_error(400, "ModelArts.2788", "Invalid parameter filters: not an object.")
    key, operator, values = raw.get("key"), raw.get("operator"), raw.get("value", [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise modelarts_error(
            400, "ModelArts.2788", "Invalid parameter filters: value must be a list of strings."
        )
    if (key, operator) not in FILTERS:
        raise modelarts_error(
            400, "ModelArts.2807", f"Unsupported filter: key={key!r}, operator={operator!r}."
        )
    return Filter(str(key), str(operator), tuple(values))


def parse_search(body: bytes) -> Search:
    """Validate a list request body; raises ApiError."""
    data = parse_json_object(body)
    sort_by = _str_field(data, "sort_by", "create_time")
    if sort_by not in SORT_FIELDS:
        raise modelarts_error(400, "ModelArts.2790", f"Unsupported sort_by: {sort_by}.")
    order = _str_field(data, "order", "desc")
    if order not in ("asc", "desc"):
        raise modelarts_error(400, "ModelArts.2788", f"Invalid parameter order={order!r}.")
    filters = data.get("filters", [])
    if not isinstance(filters, list):
        raise modelarts_error(400, "ModelArts.2788", "Invalid parameter filters: not a list.")
    return Search(
        offset=_int_field(data, "offset", 0, 0, 2**31 - 1),
        limit=_int_field(data, "limit", MAX_LIMIT, 1, MAX_LIMIT),
        sort_by=sort_by,
        order=order,
        group_by=_str_field(data, "group_by", ""),
        workspace_id=_str_field(data, "workspace_id", "0"),
        filters=tuple(_parse_filter(f) for f in filters),
    )


def search_response(jobs: Iterable[SimJob], search: Search, now: float) -> dict[str, Any]:
    """The list answer: ``total`` jobs of the workspace, ``count`` matching, one page of items."""
    in_workspace = [job for job in jobs if job.workspace_id == search.workspace_id]
    matching = [job for job in in_workspace if all(f.matches(job) for f in search.filters)]
    matching.sort(key=lambda job: (job.create_time, job.seq), reverse=search.order == "desc")
    first = search.offset * search.limit
    page = matching[first : first + search.limit]
    return {
        "total": len(in_workspace),
        "count": len(matching),
        "limit": search.limit,
        "offset": search.offset,
        "sort_by": search.sort_by,
        "order": search.order,
        "group_by": search.group_by,
        "workspace_id": search.workspace_id,
        "ai_project": "default-ai-project",
        "items": [job.response(now) for job in page],
    }
