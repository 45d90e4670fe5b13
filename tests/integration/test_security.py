"""Security: secrets stay secret, /metrics behind TLS and basic auth, label values from
logs are capped and escaped, the state file is private.

The credential and TLS tests run ``modelarts-exporter serve`` as a process against the
simulator; all the credential runs are started at once (module fixture), so they cost
about one run's time.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import pytest
import requests
import trustme
import yaml
from helpers import ExporterProcess, parse_metrics, series, wait_for, write_config
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from modelarts_exporter.app import Exporter
from modelarts_exporter.config import Credentials, default_config
from modelarts_exporter.modelarts import errors
from modelarts_exporter.modelarts.auth import AkSkAuth, Auth, PasswordAuth, TokenAuth
from modelarts_exporter.modelarts.client import ModelArtsClient, RetryPolicy
from modelarts_exporter.simulator import Fault, SimAuth, Simulator
from modelarts_exporter.store import JobState, Store, TaskState

PROJECT = "0123456789abcdef0123456789abcdef"
MANY = 10_000


def _secret(prefix: str) -> str:
    """A value no log line would contain by accident."""
    return f"{prefix}{uuid.uuid4().hex}"


# --- running serve --------------------------------------------------------------------------


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def _state_bytes(state: Path) -> dict[str, bytes]:
    files = {}
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{state}{suffix}")
        if path.exists():
            files[path.name] = path.read_bytes()
    return files


def _state_modes(state: Path) -> dict[str, int]:
    return {
        path.name: stat.S_IMODE(path.stat().st_mode)
        for path in (Path(f"{state}{suffix}") for suffix in ("", "-wal", "-shm"))
        if path.exists()
    }


# --- credentials never leak -------------------------------------------------------------------

KINDS = ("token", "aksk", "password")
SCENARIOS = ("good", "wrong")
"""good: the credential works, then every ModelArts call fails with HTTP 500;
wrong: ModelArts (or IAM) rejects the credential from the start (HTTP 401)."""
DOMAIN, USER = "OTC-EU-DE-00000000000000000001", "monitoring"
AK = "QTWAOYTTINDUT2QVKYUC"


@dataclass
class Run:
    """One ``serve`` process with one credential kind in one scenario, and what it left."""

    kind: str
    scenario: str
    sim: Simulator
    exporter: ExporterProcess
    secrets: list[str]
    state: Path
    texts: dict[str, str] = field(default_factory=dict)
    state_files: dict[str, bytes] = field(default_factory=dict)
    state_modes: dict[str, int] = field(default_factory=dict)
    code: int | None = None
    cycles: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.scenario}"


def _launch(kind: str, scenario: str, directory: Path) -> Run:
    good = {"token": _secret("MIIgoodtoken"), "sk": _secret("SKgood"), "pw": _secret("PWgood")}
    security_token = _secret("STStemp")
    auth = SimAuth(
        tokens=frozenset({good["token"]}),
        aksk={AK: good["sk"]},
        users={(DOMAIN, USER): good["pw"]},
    )
    sim = Simulator(auth=auth, window_bytes=64 * 1024).start()
    for name in ("sft", "eval"):
        job = sim.add_job(name, tasks=("worker-0", "worker-1"))
        for task in ("worker-0", "worker-1"):
            sim.append_log(job, task, b"step 1 loss=0.5\nTraceback (most recent call last):\n")
    wrong = scenario == "wrong"
    secrets: list[str]
    if kind == "token":
        token = _secret("MIIwrongtoken") if wrong else good["token"]
        env, secrets = {"MODELARTS_AUTH_TOKEN": token}, [token]
    elif kind == "aksk":
        sk = _secret("SKwrong") if wrong else good["sk"]
        env = {
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": sk,
            "HUAWEICLOUD_SDK_SECURITY_TOKEN": security_token,
        }
        secrets = [sk, security_token]
    else:
        password = _secret("PWwrong") if wrong else good["pw"]
        env = {
            "OS_AUTH_URL": f"{sim.url}/v3",
            "OS_USERNAME": USER,
            "OS_PASSWORD": password,
            "OS_DOMAIN_NAME": DOMAIN,
            "OS_PROJECT_NAME": "eu-de",
        }
        secrets = [password]
    # One attempt per call: failing calls are not retried (with real sleeps) in this test.
    config = write_config(directory, sim.url, sim.project_id, modelarts={"max_attempts": 1})
    exporter = ExporterProcess(config, env, directory / "exporter.log", log_level="debug").start(
        wait=False
    )
    return Run(kind, scenario, sim, exporter, secrets, directory / "state.db")


def _issued_tokens(sim: Simulator) -> list[str]:
    """Tokens the simulated IAM handed out (secrets too). Read from the simulator's
    authenticator, which does not expose them otherwise."""
    return list(getattr(sim._authenticator, "_issued", {}))


def _cycles(run: Run) -> float | None:
    """Collection cycles the exporter reports; None while /metrics does not answer."""
    run.exporter.check_alive()
    text = _get(f"{run.exporter.url}/metrics")
    if text is None:
        return None
    samples = parse_metrics(text)
    run.texts["/metrics"] = text
    return sum(series(samples, "modelarts_exporter_collections_total").values())


def _collected(run: Run) -> bool:
    """Two cycles done; with a good credential, every task on /metrics."""
    cycles = _cycles(run)
    if cycles is None or cycles < 2:
        return False
    if run.scenario == "good":
        samples = parse_metrics(run.texts["/metrics"])
        return len(series(samples, "modelarts_task_log_size_bytes")) == 4
    return "HTTP 401" in run.exporter.log()


def _failed_twice(run: Run) -> bool:
    """Two more cycles since ModelArts started to answer 500, and it was logged."""
    cycles = _cycles(run)
    return cycles is not None and cycles >= run.cycles + 2 and "HTTP 500" in run.exporter.log()


def _capture(run: Run, phase: str) -> None:
    for path in ("/metrics", "/", "/-/healthy", "/-/ready"):
        run.texts[f"{phase} {path}"] = _get(f"{run.exporter.url}{path}") or ""
    run.state_files.update({f"{phase} {k}": v for k, v in _state_bytes(run.state).items()})
    run.state_modes = _state_modes(run.state)


@pytest.fixture(scope="module")
def credential_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    runs: dict[str, Run] = {}
    try:
        for kind in KINDS:
            for scenario in SCENARIOS:
                run = _launch(kind, scenario, tmp_path_factory.mktemp(f"{kind}-{scenario}"))
                runs[run.name] = run
        for run in runs.values():
            wait_for(lambda run=run: _collected(run), 60, f"{run.name} to collect")  # type: ignore[misc]
            _capture(run, "collected")
            run.cycles = _cycles(run) or 0.0
            if run.scenario == "good":
                run.sim.inject(
                    Fault(
                        path_pattern="^/v2/",
                        status=500,
                        body=b'{"error_code": "ModelArts.0010", "error_msg": "Internal error."}',
                        times=MANY,
                    )
                )
        for run in runs.values():
            if run.scenario == "good":
                wait_for(lambda run=run: _failed_twice(run), 60, f"{run.name} to fail")  # type: ignore[misc]
                _capture(run, "failing")
            run.secrets += _issued_tokens(run.sim)
        for run in runs.values():
            run.code = run.exporter.stop()
            run.texts["log"] = run.exporter.log()
            run.state_files.update(_state_bytes(run.state))
        yield runs
    finally:
        for run in runs.values():
            if run.exporter.process is not None and run.exporter.process.poll() is None:
                run.exporter.process.kill()
                run.exporter.process.wait(10)
            run.sim.stop()


RUN_NAMES = [f"{kind}-{scenario}" for kind in KINDS for scenario in SCENARIOS]


@pytest.mark.parametrize("name", RUN_NAMES)
def test_secrets_appear_in_no_log_page_or_state_file(
    credential_runs: dict[str, Run], name: str
) -> None:
    run = credential_runs[name]
    if run.kind == "password" and run.scenario == "good":
        assert len(run.secrets) >= 2, "the simulated IAM issued no token"
    assert run.state_files
    for secret in run.secrets:
        # The secret's random core: a partial print (prefix cut) is a leak too.
        core = secret[-32:]
        for where, text in run.texts.items():
            assert core not in text, f"{name}: a secret is in {where}"
        for where, data in run.state_files.items():
            assert core.encode() not in data, f"{name}: a secret is in {where}"


@pytest.mark.parametrize("name", RUN_NAMES)
def test_each_run_logs_clearly_and_exits_cleanly(
    credential_runs: dict[str, Run], name: str
) -> None:
    run = credential_runs[name]
    log = run.texts["log"]
    assert run.code == 0, log
    assert "Traceback" not in log
    assert run.texts["collected /-/healthy"].startswith("Healthy")
    assert "modelarts_exporter_collections_total" in run.texts["collected /metrics"]
    assert "level=debug" in log.lower()  # the most talkative level was checked
    if run.scenario == "wrong":
        assert "HTTP 401" in log
    else:
        assert "HTTP 500" in log
        assert "ModelArts.0010" in log


@pytest.mark.parametrize("name", RUN_NAMES)
def test_the_state_file_of_serve_is_private(credential_runs: dict[str, Run], name: str) -> None:
    run = credential_runs[name]
    modes = run.state_modes
    assert "state.db" in modes
    if run.scenario == "good":
        assert "state.db-wal" in modes
    assert modes == dict.fromkeys(modes, 0o600)


def _echo_client(kind: str, sim: Simulator, secret: str) -> ModelArtsClient:
    auth: Auth
    if kind == "token":
        auth = TokenAuth(secret)
    elif kind == "aksk":
        auth = AkSkAuth(AK, secret, sim.project_id)
    else:
        auth = PasswordAuth(
            f"{sim.url}/v3", USER, secret, DOMAIN, project_id=sim.project_id, timeout=(2, 5)
        )
    return ModelArtsClient(
        sim.url, sim.project_id, auth, retry=RetryPolicy(max_attempts=1), sleep=lambda s: None
    )


def _echoing_rejection(kind: str, echoed: str) -> Fault:
    """A 401 whose message quotes the credential back (ModelArts, APIGW or IAM style)."""
    if kind == "password":
        iam = {"error": {"code": 401, "message": f"password {echoed} is wrong", "title": "x"}}
        return Fault(path_pattern="^/v3/auth/tokens$", status=401, body=json.dumps(iam).encode())
    gateway = {"error_code": "APIGW.0301", "error_msg": f"credential {echoed} is invalid"}
    return Fault(status=401, body=json.dumps(gateway).encode(), times=MANY)


@pytest.mark.parametrize("kind", KINDS)
def test_a_server_echoing_the_credential_does_not_put_it_in_errors_or_logs(
    caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = _secret("MIIechoed")
    with Simulator() as sim:
        sim.inject(_echoing_rejection(kind, secret))
        client = _echo_client(kind, sim, secret)
        with client, pytest.raises(errors.AuthenticationError) as caught:
            client.preview_log("job", "worker-0")
    assert "HTTP 401" in str(caught.value)
    assert secret not in str(caught.value)
    assert secret not in caught.value.error_msg
    assert secret[-32:] not in caplog.text


def test_a_long_echoed_token_cut_by_the_message_limit_is_not_left_in_part() -> None:
    token = "MIIlong" + uuid.uuid4().hex * 40  # 1287 characters, like a real IAM token
    with Simulator() as sim:
        sim.inject(_echoing_rejection("token", token))
        client = _echo_client("token", sim, token)
        with client, pytest.raises(errors.AuthenticationError) as caught:
            client.preview_log("job", "worker-0")
    message = str(caught.value)
    assert not any(token[i : i + 32] in message for i in range(len(token) - 32))


# --- /metrics over TLS with basic auth ------------------------------------------------------

WEB_USER = "prometheus"


@dataclass
class TLSExporter:
    url: str
    ca: Path
    password: str
    process: ExporterProcess


@pytest.fixture(scope="module")
def tls_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSExporter]:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    password = _secret("webpw")
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = directory / "web.yml"
    web_config.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
                "basic_auth_users": {WEB_USER: hashed},
            }
        )
    )
    token = _secret("MIItls")
    with Simulator(auth=SimAuth(tokens=frozenset({token}))) as sim:
        job = sim.add_job("tls-job")
        sim.append_log(job, "worker-0", b"step 1 loss=0.5\n")
        config = write_config(directory, sim.url, sim.project_id)
        process = ExporterProcess(
            config,
            {"MODELARTS_AUTH_TOKEN": token},
            directory / "exporter.log",
            extra_args=("--web.config.file", str(web_config)),
            log_level="debug",
            scheme="https",
        ).start(wait=False)
        exporter = TLSExporter(process.url, directory / "ca.pem", password, process)

        def ready() -> bool:
            process.check_alive()
            try:
                response = requests.get(
                    f"{exporter.url}/-/ready",
                    verify=str(exporter.ca),
                    auth=(WEB_USER, password),
                    timeout=5,
                )
            except requests.RequestException:
                return False
            return response.status_code == 200

        try:
            wait_for(ready, 30, "the TLS exporter to be ready")
            yield exporter
        finally:
            code = process.stop()
            assert code == 0, process.log()


def test_https_with_the_right_password_serves_metrics(tls_exporter: TLSExporter) -> None:
    response = requests.get(
        f"{tls_exporter.url}/metrics",
        verify=str(tls_exporter.ca),
        auth=(WEB_USER, tls_exporter.password),
        timeout=5,
    )
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert "modelarts_task_up" in names
    assert tls_exporter.password not in response.text
    # With TLS, the default external URL (for the alerts' links) is https.
    assert f'modelarts_exporter_web_info{{external_url="{tls_exporter.url}"}}' in response.text


@pytest.mark.parametrize(
    "path", ["/metrics", "/", "/jobs", "/api/v1/jobs", "/-/healthy", "/-/ready", "/nope"]
)
@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param(None, id="no-password"),
        pytest.param((WEB_USER, "wrong-password"), id="wrong-password"),
        pytest.param(("somebody", "wrong-password"), id="unknown-user"),
        pytest.param((WEB_USER, ""), id="empty-password"),
    ],
)
def test_every_path_needs_the_password(
    tls_exporter: TLSExporter, path: str, credentials: tuple[str, str] | None
) -> None:
    """Everything is guarded, /-/healthy and /-/ready included (as exporter-toolkit does)."""
    response = requests.get(
        f"{tls_exporter.url}{path}", verify=str(tls_exporter.ca), auth=credentials, timeout=5
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert "modelarts_" not in response.text


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "Basic !!!not-base64!!!",
        "Basic " + "cHJvbWV0aGV1cw==",  # "prometheus" without a colon
        "Basic " + "QQ==" * 2000,
    ],
)
def test_malformed_authorization_headers_are_refused(
    tls_exporter: TLSExporter, header: str
) -> None:
    response = requests.get(
        f"{tls_exporter.url}/metrics",
        verify=str(tls_exporter.ca),
        headers={"Authorization": header},
        timeout=5,
    )
    assert response.status_code == 401


def test_the_right_password_opens_every_path(tls_exporter: TLSExporter) -> None:
    paths = (
        ("/", 200),
        ("/jobs", 200),
        ("/api/v1/jobs", 200),
        ("/-/healthy", 200),
        ("/-/ready", 200),
        ("/nope", 404),
    )
    for path, status in paths:
        response = requests.get(
            f"{tls_exporter.url}{path}",
            verify=str(tls_exporter.ca),
            auth=(WEB_USER, tls_exporter.password),
            timeout=5,
        )
        assert response.status_code == status, path


def test_plain_http_to_the_tls_port_gets_no_metrics(tls_exporter: TLSExporter) -> None:
    plain = tls_exporter.url.replace("https://", "http://")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{plain}/metrics", auth=(WEB_USER, tls_exporter.password), timeout=5)


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_exporter: TLSExporter) -> None:
    """The server really presents the test CA's certificate (and the client checks it)."""
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(
            f"{tls_exporter.url}/metrics",
            verify=True,
            auth=(WEB_USER, tls_exporter.password),
            timeout=5,
        )


def test_the_tls_exporter_logs_no_web_password(tls_exporter: TLSExporter) -> None:
    tls_exporter.process.check_alive()
    assert tls_exporter.password[-32:] not in tls_exporter.process.log()


# --- label values from logs are capped and escaped --------------------------------------------

NOTE_RULES = r"""
rules:
  - name: task_note
    kind: gauge
    metric: modelarts_task_note_value
    help: A note printed by the test.
    pattern: 'NOTE (?P<note>.*) = (?P<value>{NUM})$'
    labels: [note]
"""
MAX_LABEL = 64
MAX_SERIES = 6

# Label values a log can carry: each line is "NOTE <value> = <n>".
TRICKY_NOTES: list[bytes] = [
    b"x" * 10_240,  # 10 kB
    b'say "hi" and \\"escaped\\" quotes',
    b"C:\\dir\\file \\n not a newline \\",
    b"ctl \x01\x02\x07\x08\x0b\x0c\x1f\x7f done",
    "uni \u2028 sep \u0085 nel \u200b zwsp 训练 \U0001f680".encode(),
    b'"} 99 # HELP modelarts_fake_metric {a="b"}',
]
EXTRA_NOTES = [f"extra {n}".encode() for n in range(4)]


def _note_lines(notes: list[bytes], start: int) -> bytes:
    return b"".join(
        b"NOTE " + note + b" = " + str(start + n).encode() + b"\n" for n, note in enumerate(notes)
    )


def _families(text: str, openmetrics: bool) -> dict[str, list[tuple[dict[str, str], float]]]:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in parse(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


@pytest.fixture
def note_exporter(tmp_path: Path) -> Iterator[tuple[Exporter, Simulator, str]]:
    rules = tmp_path / "notes.yml"
    rules.write_text(NOTE_RULES)
    token = _secret("MIInotes")
    with Simulator(auth=SimAuth(tokens=frozenset({token}))) as sim:
        job = sim.add_job("notes", tasks=("worker-0",))
        config = default_config(
            sim.url,
            sim.project_id,
            collect={"interval_seconds": 1},
            state={"path": str(tmp_path / "state.db")},
            web={"listen_address": "127.0.0.1:0"},
            rules={
                "paths": [str(rules)],
                "label_value_max_length": MAX_LABEL,
                "max_series_per_rule": MAX_SERIES,
            },
        )
        exporter = Exporter(config, Credentials("token", "test", token=token))
        exporter.store.open()
        exporter.http.start()
        try:
            yield exporter, sim, job
        finally:
            exporter.stop()


def test_label_values_from_logs_are_capped_escaped_and_parseable(
    note_exporter: tuple[Exporter, Simulator, str],
) -> None:
    exporter, sim, job = note_exporter
    sim.append_log(job, "worker-0", _note_lines(TRICKY_NOTES, 1))
    exporter.poller.run_cycle()
    url = f"{exporter.http.url('127.0.0.1')}/metrics"
    for openmetrics in (False, True):
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
        text = requests.get(url, headers=headers, timeout=5).text
        found = _families(text, openmetrics)
        assert "modelarts_fake_metric" not in found
        notes = found["modelarts_task_note_value"]
        assert len(notes) == len(TRICKY_NOTES)
        values = {labels["note"]: value for labels, value in notes}
        assert set(values.values()) == {float(n) for n in range(1, len(TRICKY_NOTES) + 1)}
        for note in values:
            assert len(note) <= MAX_LABEL
            assert note.isprintable()
        # What needs escaping (quotes, backslashes) comes back exactly as the log wrote it.
        assert values['say "hi" and \\"escaped\\" quotes'] == 2.0
        assert values["C:\\dir\\file \\n not a newline \\"] == 3.0
        assert values["x" * (MAX_LABEL - 1) + "\u2026"] == 1.0
        assert values["ctl  done"] == 4.0
        assert values['"} 99 # HELP modelarts_fake_metric {a="b"}'] == 6.0


def test_series_per_rule_are_capped_and_the_rest_counted(
    note_exporter: tuple[Exporter, Simulator, str],
) -> None:
    exporter, sim, job = note_exporter
    sim.append_log(job, "worker-0", _note_lines(TRICKY_NOTES, 1))
    exporter.poller.run_cycle()
    sim.append_log(job, "worker-0", _note_lines(EXTRA_NOTES, 100) + _note_lines(TRICKY_NOTES, 50))
    exporter.poller.run_cycle()
    text = requests.get(f"{exporter.http.url('127.0.0.1')}/metrics", timeout=5).text
    found = _families(text, openmetrics=False)
    notes = found["modelarts_task_note_value"]
    assert len(notes) == MAX_SERIES
    # The series that exist keep taking values: the last line of each wins.
    assert sorted(value for _, value in notes) == [50.0 + n for n in range(len(TRICKY_NOTES))]
    dropped = {
        labels["rule"]: value
        for labels, value in found["modelarts_exporter_rule_series_dropped_total"]
    }
    assert dropped == {"task_note": float(len(EXTRA_NOTES))}


# --- the state file is private --------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask-000", "umask-022"])
def test_the_state_file_and_its_journal_are_private_while_in_use(
    tmp_path: Path, umask: int
) -> None:
    path = tmp_path / "state" / "state.db"
    previous = os.umask(umask)
    try:
        store = Store(path)
        store.open()
        store.put_job(JobState("job", "name", "Running", ("worker-0",)))
        store.commit(TaskState("job", "worker-0", lines=3.0))
        modes = _state_modes(path)
        store.close()
    finally:
        os.umask(previous)
    assert "state.db-wal" in modes
    assert modes == dict.fromkeys(modes, 0o600)


def test_a_state_file_left_readable_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.open()
    store.close()
    path.chmod(0o644)
    store = Store(path)
    store.open()
    store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
