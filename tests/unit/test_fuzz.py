"""Property/fuzz tests: whatever ModelArts answers or a user writes, no stray exception.

Each stage that reads outside input is fed arbitrary input and may only fail the typed
way its callers handle: the client raises the ``ModelArtsError`` family, rule loading
reports problems (``RuleError``), configuration loading raises ``ConfigError``; the
cursor and the rule engine never raise at all. Anything else would be a traceback for
the user or a poll (or a whole cycle) lost to a bug.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from requests.structures import CaseInsensitiveDict

from modelarts_exporter.collector import StoreCollector
from modelarts_exporter.config import ConfigError, load_config
from modelarts_exporter.cursor import CursorState, advance, count_lines
from modelarts_exporter.modelarts import client as client_module
from modelarts_exporter.modelarts.auth import TokenAuth
from modelarts_exporter.modelarts.client import (
    ModelArtsClient,
    RetryPolicy,
    interpret_response,
    parse_error_body,
    parse_job,
    parse_retry_after,
)
from modelarts_exporter.modelarts.errors import ModelArtsError
from modelarts_exporter.modelarts.types import LogPreview, TrainingJob
from modelarts_exporter.rules import RuleError, RuleSet, label_value, load_rules
from modelarts_exporter.rules.model import load_rule_file
from modelarts_exporter.store import JobState, Snapshot, TaskState

PROJECT = "0123456789abcdef0123456789abcdef"
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# Examples that cost milliseconds each (pydantic, RE2 compiles, files) get a share of the
# profile's budget: fast by default, and HYPOTHESIS_PROFILE=thorough still scales them up.
SLOW = settings(FUZZ, max_examples=max(30, settings().max_examples // 5))
MEDIUM = settings(FUZZ, max_examples=max(50, settings().max_examples // 3))

T = TypeVar("T")


def _result_or_error(
    call: Callable[[], T], *errors: type[Exception]
) -> tuple[T | None, Exception | None]:
    """``call()``, or the error of one of the ``errors`` types it raised (others propagate)."""
    try:
        return call(), None
    except errors as exc:
        return None, exc


# --- arbitrary JSON-ish data ----------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
sizes = st.one_of(
    st.integers(min_value=0, max_value=2**12),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, 2**40, 2**40 + 1, 2**62, -1]),
    json_values,
)
preview_bodies = st.fixed_dictionaries(
    {},
    optional={
        "content": st.text(max_size=60) | json_values,
        "context": st.text(max_size=60) | json_values,
        "current_size": sizes,
        "full_size": sizes,
    },
)
error_bodies = st.fixed_dictionaries(
    {},
    optional={
        "error_code": st.sampled_from(["ModelArts.2775", "ModelArts.2776", "ModelArts.2818"])
        | json_values,
        "error_msg": json_values,
        "errorCode": json_values,
        "errorMsg": json_values,
        "code": json_values,
        "message": json_values,
        "request_id": json_values,
        "error": st.dictionaries(
            st.sampled_from(["code", "message", "title", "request_id"]), json_values
        ),
    },
)
job_items = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "id": st.text(max_size=8) | json_values,
                "name": st.text(max_size=8) | json_values,
                "create_time": sizes,
            },
        )
        | json_values,
        "status": st.fixed_dictionaries(
            {},
            optional={
                "phase": st.sampled_from(["Running", "Failed", "Completed", ""]) | json_values,
                "tasks": st.lists(st.text(max_size=8), max_size=3) | json_values,
                "start_time": sizes,
                "duration": sizes,
            },
        )
        | json_values,
        "algorithm": st.fixed_dictionaries(
            {}, optional={"engine": st.dictionaries(st.text(max_size=12), json_values)}
        )
        | json_values,
        "spec": st.fixed_dictionaries(
            {}, optional={"resource": st.dictionaries(st.text(max_size=10), json_values)}
        )
        | json_values,
    },
)
list_bodies = st.fixed_dictionaries(
    {},
    optional={
        "items": st.lists(job_items | json_values, max_size=4) | json_values,
        "count": sizes,
        "total": sizes,
    },
)


def _encode(value: object, how: str) -> bytes:
    text = json.dumps(value)
    if how == "utf-16":
        return text.encode("utf-16")
    if how == "truncated":
        return text.encode()[: max(0, len(text) // 2)]
    return text.encode()


bodies = st.one_of(
    st.builds(
        _encode,
        preview_bodies | error_bodies | list_bodies | job_items | json_values,
        st.sampled_from(["utf-8", "utf-8", "utf-16", "truncated"]),
    ),
    st.binary(max_size=80),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[" * 5000,
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            b'{"content": "x", "current_size": 1e999, "full_size": NaN}',
            b"\xef\xbb\xbf{}",
        ]
    ),
)
latin1 = st.text(
    alphabet=st.characters(max_codepoint=255, blacklist_categories=("Cs", "Cc")), max_size=40
)


headers = st.dictionaries(
    st.sampled_from(["Content-Length", "Retry-After", "Date", "X-Request-Id", "Content-Type"]),
    latin1
    | st.sampled_from(
        ["12", "-1", "0", "99999999999999999999", "text/html", "1, 2", "\u00b2", "1\u00b3"]
    ),
    max_size=5,
)
statuses = st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 409, 429, 500, 502, 503]) | (
    st.integers(min_value=100, max_value=599)
)


def _response(status: int, header_values: dict[str, str], body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers = CaseInsensitiveDict(header_values)
    response.raw = io.BytesIO(body)
    response.reason = "Reason"
    response.url = "http://modelarts.invalid/"
    return response


Answer = tuple[int, dict[str, str], bytes] | Exception


class _StubSession:
    """Stands in for requests.Session: every request gets the next scripted answer (the
    last one repeats), as a fresh Response."""

    def __init__(self, answers: list[Answer]) -> None:
        self._answers = list(answers)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        answer = self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]
        if isinstance(answer, Exception):
            raise answer
        return _response(*answer)

    def close(self) -> None:
        pass


transport_failures = st.sampled_from(
    [
        requests.ConnectionError("connection refused"),
        requests.ConnectTimeout("connect timeout"),
        requests.ReadTimeout("read timeout"),
        requests.exceptions.ChunkedEncodingError("incomplete read"),
        requests.exceptions.ContentDecodingError("bad gzip"),
        requests.exceptions.SSLError("certificate verify failed"),
        requests.exceptions.InvalidHeader("bad header"),
        requests.exceptions.TooManyRedirects(),
        requests.RequestException(OSError(104, "Connection reset by peer")),
    ]
)
answers = st.tuples(statuses, headers, bodies) | transport_failures


def _client(script: list[Answer]) -> ModelArtsClient:
    return ModelArtsClient(
        "http://modelarts.invalid",
        PROJECT,
        TokenAuth("fuzz-token"),
        session=_StubSession(script),  # type: ignore[arg-type]
        retry=RetryPolicy(max_attempts=2),
        sleep=lambda seconds: None,
    )


# --- the client ---------------------------------------------------------------------------


@MEDIUM
@given(st.lists(answers, min_size=1, max_size=3))
def test_preview_log_returns_a_preview_or_raises_a_modelarts_error(script: list[Answer]) -> None:
    try:
        preview = _client(script).preview_log("job", "worker-0")
    except ModelArtsError:
        return
    if preview is not None:
        assert isinstance(preview, LogPreview)
        assert isinstance(preview.content, str)
        assert 0 <= preview.current_size <= preview.full_size <= client_module.MAX_LOG_SIZE


@MEDIUM
@given(st.lists(answers, min_size=1, max_size=3))
def test_list_and_details_return_jobs_or_raise_a_modelarts_error(script: list[Answer]) -> None:
    client = _client(script)
    try:
        jobs = client.list_jobs(["Running"])
    except ModelArtsError:
        jobs = []
    assert all(isinstance(job, TrainingJob) for job in jobs)
    try:
        job = client.get_job("job")
    except ModelArtsError:
        return
    assert isinstance(job, TrainingJob)


@MEDIUM
@given(statuses, headers, bodies)
def test_interpret_response_gives_data_or_a_typed_error(
    status: int, header_values: dict[str, str], body: bytes
) -> None:
    try:
        outcome = interpret_response(
            "preview_log", _response(status, header_values, body), client_module.LOG_NOT_READY
        )
    except ModelArtsError:
        return
    if outcome.error is not None:
        assert isinstance(outcome.error, ModelArtsError)
        assert "\n" not in str(outcome.error)
    if outcome.retry_after is not None:
        assert math.isfinite(outcome.retry_after)
        assert outcome.retry_after >= 0


@pytest.mark.parametrize("length", ["\u00b2", "\u00b9\u00b2", "1\u00b3"])
def test_a_non_ascii_digit_content_length_is_a_bad_response(length: str) -> None:
    """'²' passes str.isdigit() but not int(): the body is judged on its own."""
    with pytest.raises(ModelArtsError):
        _client([(200, {"Content-Length": length}, b"{}")]).preview_log("job", "worker-0")


@MEDIUM
@given(bodies)
def test_parse_error_body_is_bounded_single_line_text(body: bytes) -> None:
    code, message, request_id = parse_error_body(body)
    for text, limit in ((code, 64), (message, client_module.SNIPPET_CHARS), (request_id, 128)):
        assert isinstance(text, str)
        assert len(text) <= limit
        assert len(text.splitlines()) <= 1
        assert not any(unicodedata.category(char) == "Cc" for char in text)


@MEDIUM
@given(job_items | json_values)
def test_parse_job_gives_a_job_or_names_the_bad_field(item: object) -> None:
    job, error = _result_or_error(lambda: parse_job(item), client_module._InvalidJob)
    if error is not None:
        assert str(error)
        return
    assert isinstance(job, TrainingJob)
    assert job.id
    assert job.phase
    assert all(isinstance(task, str) and task for task in job.tasks)


@FUZZ
@given(st.text(max_size=40) | st.none(), st.text(max_size=40) | st.none())
@example("Wed, 21 Oct 2015 07:28:10 GMT", "Wed, 21 Oct 2015 07:28:00 GMT")
@example("Wed, 21 Oct 2015 07:28:10 -0000", None)
@example("1e400", None)
@example("nan", None)
@example("Fri, 31 Dec 9999 23:59:59 +2359", "Mon, 01 Jan 0001 00:00:00 -2359")
def test_parse_retry_after_gives_a_finite_delay_or_none(
    value: str | None, date: str | None
) -> None:
    seconds = parse_retry_after(value, date)
    if seconds is not None:
        assert math.isfinite(seconds)
        assert seconds >= 0


# --- the cursor ---------------------------------------------------------------------------

any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=120)
previews = st.tuples(
    any_text,
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=0, max_value=2**40),
    st.booleans(),
)


def _check_advance(
    state: CursorState, content: str, current: int, full: int, final: bool
) -> CursorState:
    adv = advance(state, content, current, full, final=final, max_line_bytes=256)
    assert adv.processed_bytes >= 0
    assert adv.skipped_bytes >= 0
    assert adv.lines >= 0
    assert adv.lines <= count_lines(adv.block) + 1
    assert adv.state.offset >= 0
    assert adv.state.slack >= 0
    # Sizes no log can have (negative, current_size above full_size) are refused whole.
    assert adv.state.started or (adv.outcome == "implausible" and adv.state == state)
    return adv.state


@FUZZ
@given(st.lists(previews, min_size=1, max_size=6))
@example([("a\n", 2, 2, False), ("\ufffd\ufffd\n", 3, 2**40, False)])
@example([("\ud800\n", 4, 4, False), ("\ud800\nx", 5, 5, True)])
def test_the_cursor_takes_any_sequence_of_previews_the_client_lets_through(
    polls: list[tuple[str, int, int, bool]],
) -> None:
    """What the client passes on: content any string (JSON allows lone surrogates),
    0 <= current_size <= full_size <= 2**40."""
    state = CursorState()
    for content, a, b, final in polls:
        state = _check_advance(state, content, min(a, b), max(a, b), final)


@FUZZ
@given(
    any_text,
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from(["fresh", "started"]),
)
def test_the_cursor_never_raises_nor_counts_negative_on_any_sizes(
    content: str, current: int, full: int, which: str
) -> None:
    state = CursorState()
    if which == "started":
        state = advance(state, "line one\nline two\npart", 22, 22).state
    _check_advance(state, content, current, full, False)


# --- rules --------------------------------------------------------------------------------

patterns = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            r"(?P<value>{NUM})",
            r"loss=(?P<value>{NUM}) step (?P<step>\d+)",
            r"(?<=x)y",
            r"(a)\1",
            r"(?P<value>\d+)(?P<value>\d+)",
            r"(?P<rank>\d+) (?P<value>{NUM})",
            r"a{1001}",
            r"((((((((((a*)*)*)*)*)*)*)*)*)*)",
            r"[",
            "\x00",
            "{NUM}" * 60,
            r"(?P<step>\d+)",
            r"(?P<epoch>\d+)",
        ]
    ),
)
rule_dicts = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["a", "b", "loss_x", "Bad-Name", ""]) | json_values,
        "kind": st.sampled_from(
            ["error", "warning", "exit_code", "loss", "gauge", "counter", "context", "x"]
        )
        | json_values,
        "pattern": patterns | json_values,
        "unless": patterns | json_values,
        "marker": st.sampled_from(["m", "cuda_oom", "X"]) | json_values,
        "metric": st.sampled_from(
            ["modelarts_task_x", "modelarts_task_loss", "bad metric", "m_total"]
        )
        | json_values,
        "help": json_values,
        "labels": st.lists(st.sampled_from(["rank", "task_id", "__x", "value", "1x"]), max_size=3)
        | json_values,
        "sum": json_values,
        "feeds": st.lists(st.sampled_from(["a", "b", "loss_x"]), max_size=2) | json_values,
        "examples": st.lists(
            st.text(max_size=20)
            | st.fixed_dictionaries(
                {"line": st.text(max_size=20)},
                optional={"match": json_values, "value": json_values, "labels": json_values},
            ),
            max_size=2,
        )
        | json_values,
        "unknown_key": json_values,
    },
)
rule_files = st.one_of(
    st.builds(lambda rules: yaml.safe_dump({"rules": rules}), st.lists(rule_dicts, max_size=4)),
    st.builds(yaml.safe_dump, json_values),
    st.text(max_size=200),
    st.sampled_from(
        [
            "",
            "rules:",
            "rules: [",
            "rules: !!python/object/apply:os.system ['true']",
            "a: &x [*x]",
            "rules:\n  - &r {name: a, kind: error, pattern: x}\n  - *r\n",
            "\ufeffrules: []",
            "rules: [{name: a, kind: error, pattern: x}]\nrules: []",
        ]
    ),
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@SLOW
@given(text=rule_files)
def test_a_rule_file_loads_or_lists_its_problems(scratch: Path, text: str) -> None:
    path = scratch / "fuzz.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    problems: list[str] = []
    rules = load_rule_file(path, problems)
    assert all(isinstance(p, str) and p for p in problems)
    if problems:
        assert all(str(path) in p for p in problems)
    loaded, error = _result_or_error(lambda: load_rules([path], include_default=False), RuleError)
    if isinstance(error, RuleError):
        assert error.problems
        return
    assert loaded is not None
    assert len(loaded) == len(rules)


@SLOW
@given(st.lists(rule_dicts, min_size=1, max_size=3), st.lists(rule_dicts, max_size=3))
def test_rules_from_two_files_load_or_raise_rule_error(
    scratch: Path, first: list[dict[str, Any]], second: list[dict[str, Any]]
) -> None:
    (scratch / "one.yml").write_text(yaml.safe_dump({"rules": first}))
    (scratch / "two.yml").write_text(yaml.safe_dump({"rules": second}))
    rules, error = _result_or_error(
        lambda: load_rules([scratch / "one.yml", scratch / "two.yml"], include_default=False),
        RuleError,
    )
    if isinstance(error, RuleError):
        assert error.problems
        return
    assert rules is not None
    names = [rule.name for rule in rules]
    assert len(names) == len(set(names))


CUSTOM_RULES = r"""
rules:
  - name: fuzz_gauge
    kind: gauge
    metric: modelarts_task_fuzz_value
    pattern: 'G (?P<who>\S*) (?P<value>{NUM})'
    labels: [who]
  - name: fuzz_counter
    kind: counter
    metric: modelarts_task_fuzz_events_total
    pattern: 'C (?P<who>.*?) (?P<value>{NUM})?$'
    labels: [who]
  - name: fuzz_sum
    kind: loss
    sum: true
    pattern: 'S (?P<value>(?:{NUM}\s+)+)end'
"""


@pytest.fixture(scope="module")
def ruleset(scratch: Path) -> RuleSet:
    path = scratch / "custom.yml"
    path.write_text(CUSTOM_RULES)
    return RuleSet(load_rules([path], include_default=True), label_value_max_length=16)


log_lines = st.one_of(
    st.binary(max_size=60),
    st.sampled_from(
        [
            b"G \xff\xfe 1.5\n",
            b"G a nan\n",
            b"C x 1e308\nC x 1e308\n",
            b"C y -5\n",
            b"S 1 2 3 nan inf end\n",
            b"Traceback (most recent call last):\n",
            b"torch.OutOfMemoryError: CUDA out of memory.\n",
            b"[Modelarts Service Log]exit with 137\n",
            b"\x1b[31mloss: 0.5\x1b[0m\r",
            b"\x00\x00\x00",
        ]
    ),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@MEDIUM
@given(st.lists(log_lines, max_size=8))
def test_scanning_any_bytes_never_raises(ruleset: RuleSet, lines: list[bytes]) -> None:
    result = ruleset.scan(b"".join(lines))
    assert all(count > 0 for count in result.errors.values())
    assert all(count > 0 for count in result.warnings.values())
    for (_metric, labels), (_value, _rule) in [*result.gauges.items(), *result.counters.items()]:
        for _name, value in labels:
            assert len(value) <= 16
            assert value.isprintable()
    for increment, _rule in result.counters.values():
        assert increment >= 0


@FUZZ
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_label_values_are_printable_and_capped(raw: bytes, limit: int) -> None:
    value = label_value(raw, limit)
    assert len(value) <= limit
    assert value.isprintable()


@MEDIUM
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_label_values_from_logs_survive_the_exposition(ruleset: RuleSet, raw: list[bytes]) -> None:
    """Whatever a log puts in a label, /metrics stays parseable and says it back."""
    values = sorted({label_value(r, 16) for r in raw})
    gauges: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, str]] = {
        ("modelarts_task_fuzz_value", (("who", v),)): (float(i), "fuzz_gauge")
        for i, v in enumerate(values)
    }
    task = TaskState("job", "worker-0", gauges=gauges, up=True)
    snapshot = Snapshot(
        {"job": JobState("job", 'na"me\\\n', "Running")}, {("job", "worker-0"): task}
    )
    text = StoreCollector(lambda: snapshot, ruleset.rules).render()
    parsed = {
        sample.labels["who"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelarts_task_fuzz_value"
    }
    assert parsed == {v: float(i) for i, v in enumerate(values)}


# --- configuration ------------------------------------------------------------------------

section_values = st.one_of(
    json_values,
    st.sampled_from(
        [
            "http://127.0.0.1:1",
            "https://[::1",
            "http://h:99999",
            "http://u:p@h",
            "0.0.0.0:9958",
            "[::1]:9958",
            ":0",
            "a\x00b",
            "/nonexistent/ca.pem",
            ".inf",
            "(?P<x",
            "Running",
            "0123456789abcdef0123456789abcdef",
        ]
    ),
    st.floats(),
)
config_sections = {
    "modelarts": [
        "endpoint",
        "project_id",
        "workspace_id",
        "verify_tls",
        "connect_timeout_seconds",
        "read_timeout_seconds",
        "max_attempts",
        "requests_per_second",
        "auth",
    ],
    "collect": [
        "interval_seconds",
        "concurrency",
        "max_line_bytes",
        "discovery_interval_seconds",
        "failure_backoff_max_seconds",
    ],
    "discovery": ["phases", "name_regex", "job_ids", "startup_lookback_seconds"],
    "lifecycle": ["grace_period_seconds", "final_poll_seconds"],
    "state": ["path"],
    "rules": ["paths", "include_default", "label_value_max_length", "max_series_per_rule"],
    "web": ["listen_address", "config_file", "workers", "request_timeout_seconds"],
    "shard": ["index", "count"],
}
auth_blocks = st.fixed_dictionaries(
    {},
    optional={
        "token": section_values,
        "token_file": section_values,
        "access_key": section_values,
        "secret_key": section_values,
        "secret_key_file": section_values,
        "iam": st.dictionaries(
            st.sampled_from(["auth_url", "username", "password", "domain_name", "project_id"]),
            section_values,
        )
        | json_values,
    },
)
configs = st.fixed_dictionaries(
    {},
    optional={
        name: st.fixed_dictionaries(
            {}, optional={key: (auth_blocks if key == "auth" else section_values) for key in keys}
        )
        | json_values
        for name, keys in config_sections.items()
    }
    | {"unknown": json_values},
)
config_texts = st.one_of(
    st.builds(yaml.safe_dump, configs),
    st.builds(yaml.safe_dump, json_values),
    st.text(max_size=200),
    st.sampled_from(["", "---\n...\n", "a: 1\na: 2\n", "? [a]\n: 1\n", "x: !!binary AAAA\n"]),
)


@SLOW
@given(text=config_texts)
@example(text="modelarts: {endpoint: 'http://x', project_id: p}\n1.5: 1\nnull: 2\n")
def test_a_config_file_loads_or_raises_config_error(scratch: Path, text: str) -> None:
    path = scratch / "config.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    config, error = _result_or_error(
        lambda: load_config(path, environ={"MODELARTS_AUTH_TOKEN": "fuzz"}), ConfigError
    )
    if isinstance(error, ConfigError):
        assert error.problems
        assert all(isinstance(p, str) and p for p in error.problems)
        return
    assert config is not None
    assert config.modelarts.endpoint
