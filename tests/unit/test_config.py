"""The configuration file: schema, defaults, error reporting and credential resolution."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from modelarts_exporter.config import (
    Config,
    ConfigError,
    Credentials,
    default_config,
    load_config,
    parse_listen_address,
    resolve_credentials,
)
from modelarts_exporter.config import schema as config_module
from modelarts_exporter.modelarts.auth import AkSkAuth, PasswordAuth, TokenAuth

ENDPOINT = "https://modelarts.eu-de.otc.t-systems.com"
PROJECT = "0123456789abcdef0123456789abcdef"
MINIMAL = f"modelarts:\n  endpoint: {ENDPOINT}\n  project_id: {PROJECT}\n"

TOKEN = "MIItoken-Sup3r-S3cret"
SK = "sk-Sup3r-S3cret-abcdef"
STS = "sts-Sup3r-S3cret"
PASSWORD = "pw-Sup3r-S3cret!"
SECRETS = (TOKEN, SK, STS, PASSWORD)

OS_ENV = {
    "OS_AUTH_URL": "https://iam.eu-de.otc.t-systems.com/v3",
    "OS_USERNAME": "monitoring",
    "OS_PASSWORD": PASSWORD,
    "OS_DOMAIN_NAME": "OTC-EU-DE-000",
}
AKSK_ENV = {"HUAWEICLOUD_SDK_AK": "AKEXAMPLE", "HUAWEICLOUD_SDK_SK": SK}

WriteConfig = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path) -> WriteConfig:
    """Write a config file (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "cfg.yml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "\n".join(info.value.problems)
    assert info.value.path == path
    return info.value.problems


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# --- valid files and defaults ------------------------------------------------------------


def test_minimal_config_has_every_default(write: WriteConfig, tmp_path: Path) -> None:
    config = load_config(write(MINIMAL))

    assert config.path == tmp_path / "cfg.yml"
    m = config.modelarts
    assert (m.endpoint, m.project_id, m.workspace_id) == (ENDPOINT, PROJECT, None)
    assert m.verify_tls is True
    assert m.verify is True
    assert (m.connect_timeout_seconds, m.read_timeout_seconds) == (5, 30)
    assert m.timeout == (5.0, 30.0)
    assert (m.request_deadline_seconds, m.deadline_seconds) == (None, 2 * (5 + 30))
    assert (m.max_attempts, m.requests_per_second, m.auth) == (4, None, None)
    c = config.collect
    assert (c.interval_seconds, c.concurrency, c.max_line_bytes) == (30, 8, 65536)
    assert (c.discovery_interval_seconds, c.failure_backoff_max_seconds) == (None, 600)
    assert c.effective_discovery_interval_seconds == 30
    d = config.discovery
    assert d.phases == ("Creating", "Pending", "Running", "Terminating")
    assert (d.name_regex, d.job_ids, d.startup_lookback_seconds) == (None, None, 604800)
    assert config.lifecycle.grace_period_seconds == 3600
    pl = config.platform
    assert (pl.events, pl.task_metrics, pl.task_metrics_interval_seconds) == (True, True, 60)
    assert config.state.path == tmp_path / "modelarts-exporter-state.db"
    r = config.rules
    assert (r.paths, r.include_default) == ((), True)
    assert (r.label_value_max_length, r.max_series_per_rule) == (128, 100)
    assert (config.web.listen_address, config.web.config_file) == ("0.0.0.0:9958", None)
    assert (config.web.listen_host, config.web.listen_port) == ("0.0.0.0", 9958)
    assert (config.shard.index, config.shard.count) == (0, 1)


def _documented_example() -> str:
    doc = config_module.__doc__ or ""
    block = doc.split(".. code-block:: yaml\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_documented_example_is_valid_and_shows_the_defaults(write: WriteConfig) -> None:
    documented = load_config(write(_documented_example(), "example.yml"))
    minimal = load_config(write(MINIMAL))

    assert documented.modelarts.auth is not None
    assert documented.modelarts.model_copy(update={"auth": None}) == minimal.modelarts
    sections = ("collect", "discovery", "lifecycle", "platform", "state", "rules", "web", "shard")
    for section in sections:
        assert getattr(documented, section) == getattr(minimal, section)


def test_every_key_set(write: WriteConfig, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("CA")
    config = load_config(
        write(
            f"""\
            modelarts:
              endpoint: http://127.0.0.1:8080/base//
              project_id: p1
              workspace_id: ws
              verify_tls: ca.pem
              connect_timeout_seconds: 0.5
              read_timeout_seconds: 2
              request_deadline_seconds: 9.5
              max_attempts: 10
              requests_per_second: 2.5
              auth: {{token: {TOKEN}}}
            collect:
              interval_seconds: 1
              concurrency: 256
              max_line_bytes: 256
              discovery_interval_seconds: 60
              failure_backoff_max_seconds: 1
            discovery:
              phases: [Failed]
              name_regex: "^train-"
              job_ids: [a, b]
              startup_lookback_seconds: 0
            lifecycle: {{grace_period_seconds: 0}}
            platform: {{events: false, task_metrics: false, task_metrics_interval_seconds: 300}}
            state: {{path: /var/lib/x.db}}
            rules: {{paths: [r1.yml, /etc/rules], include_default: false,
                     label_value_max_length: 4096, max_series_per_rule: 100000}}
            web: {{listen_address: "[::1]:0", config_file: web.yml}}
            shard: {{index: 2, count: 3}}
            """
        )
    )

    assert config.modelarts.endpoint == "http://127.0.0.1:8080/base"
    assert config.modelarts.verify == str(tmp_path / "ca.pem")
    assert config.modelarts.timeout == (0.5, 2.0)
    assert config.modelarts.deadline_seconds == 9.5
    assert config.collect.effective_discovery_interval_seconds == 60
    assert config.discovery.phases == ("Failed",)
    assert config.discovery.job_ids == ("a", "b")
    assert config.state.path == Path("/var/lib/x.db")
    assert not config.platform.events
    assert not config.platform.task_metrics
    assert config.platform.task_metrics_interval_seconds == 300
    assert config.rules.paths == (tmp_path / "r1.yml", Path("/etc/rules"))
    assert config.web.config_file == tmp_path / "web.yml"
    assert (config.web.listen_host, config.web.listen_port) == ("::1", 0)
    assert (config.shard.index, config.shard.count) == (2, 3)
    assert_no_secret(repr(config), str(config))


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "certs").mkdir()
    (conf_dir / "certs" / "ca.pem").write_text("CA")
    path = conf_dir / "cfg.yml"
    path.write_text(
        MINIMAL
        + "  verify_tls: certs/ca.pem\n"
        + "  auth: {token_file: secrets/token}\n"
        + "state: {path: data/state.db}\n"
        + "rules: {paths: [rules.d, ../shared/extra.yml]}\n"
        + "web: {config_file: web.yml}\n"
    )
    monkeypatch.chdir(tmp_path)

    config = load_config(Path("etc/cfg.yml"))

    assert config.modelarts.verify_tls == conf_dir / "certs" / "ca.pem"
    assert config.modelarts.auth is not None
    assert config.modelarts.auth.token_file == conf_dir / "secrets" / "token"
    assert config.state.path == conf_dir / "data" / "state.db"
    assert config.rules.paths == (conf_dir / "rules.d", conf_dir / ".." / "shared" / "extra.yml")
    assert config.web.config_file == conf_dir / "web.yml"
    assert all(p.is_absolute() for p in (config.state.path, *config.rules.paths))


def test_platform_switches_are_checked(write: WriteConfig) -> None:
    path = write(
        MINIMAL
        + "platform: {events: 'no', task_metrics_interval_seconds: 10, task_metric: false}\n"
    )
    problems = problems_of(path)
    assert len(problems) == 3
    assert any("platform.events: Input should be a valid boolean" in p for p in problems)
    assert any(
        "platform.task_metrics_interval_seconds: Input should be greater than or equal to 60" in p
        for p in problems
    )
    assert any("platform.task_metric: unknown key" in p for p in problems)


def test_config_is_frozen(write: WriteConfig) -> None:
    config = load_config(write(MINIMAL))
    with pytest.raises(ValueError, match="frozen"):
        config.collect.interval_seconds = 5  # type: ignore[misc]


def test_null_sections_mean_defaults(write: WriteConfig) -> None:
    config = load_config(write(MINIMAL + "collect:\nshard:\n"))
    assert config.collect.interval_seconds == 30
    assert config.shard.count == 1


def test_backoff_cap_default_rises_with_a_long_interval(write: WriteConfig) -> None:
    config = load_config(write(MINIMAL + "collect: {interval_seconds: 900}\n"))
    assert config.collect.failure_backoff_max_seconds == 900


# --- errors --------------------------------------------------------------------------------


def test_unknown_keys_named_with_their_dotted_path(write: WriteConfig) -> None:
    path = write(
        MINIMAL
        + "  auth: {tokn: x}\n"
        + "colect: {}\n"
        + "collect: {interval: 5}\n"
        + "shard: {index: 0, count: 1, extra: 1}\n"
    )
    problems = problems_of(path)

    assert problems == [
        f"{path}: colect: unknown key (valid keys: modelarts, collect, discovery, lifecycle, "
        "platform, state, rules, web, shard)",
        f"{path}: collect.interval: unknown key (valid keys: interval_seconds, concurrency, "
        "max_line_bytes, discovery_interval_seconds, failure_backoff_max_seconds)",
        f"{path}: modelarts.auth.tokn: unknown key (valid keys: token, token_file, access_key, "
        "secret_key, secret_key_file, security_token, iam)",
        f"{path}: shard.extra: unknown key (valid keys: index, count)",
    ]


@pytest.mark.parametrize(
    ("snippet", "key", "reason"),
    [
        ("collect: {interval_seconds: '30'}", "collect.interval_seconds", "valid number"),
        ("collect: {concurrency: 2.5}", "collect.concurrency", "valid integer"),
        ("collect: {concurrency: true}", "collect.concurrency", "valid integer"),
        ("collect: 5", "collect", "must be a mapping"),
        ("discovery: {phases: Running}", "discovery.phases", "must be a list"),
        ("discovery: {phases: []}", "discovery.phases", "at least 1 item"),
        ("discovery: {job_ids: [a, '']}", "discovery.job_ids.1", "at least 1 character"),
        (
            "discovery: {job_ids: [a, 7]}",
            "discovery.job_ids.1",
            "must be text: put the value in quotes",
        ),
        ("rules: {include_default: 'yes'}", "rules.include_default", "valid boolean"),
        ("rules: {paths: [a, 3]}", "rules.paths.1", "non-empty path"),
        ("rules: {max_series_per_rule: 0}", "rules.max_series_per_rule", "greater than or equal"),
        ("collect: {max_line_bytes: 16777217}", "collect.max_line_bytes", "less than or equal"),
        ("lifecycle: {grace_period_seconds: -1}", "lifecycle.grace_period_seconds", "greater"),
        ("lifecycle: {grace_period_seconds: .inf}", "lifecycle.grace_period_seconds", "finite"),
        ("state: {path: ''}", "state.path", "non-empty path"),
        ("web: {listen_address: 9958}", "web.listen_address", "quote it and give HOST:PORT"),
        ("shard: {index: -1}", "shard.index", "greater than or equal to 0"),
    ],
)
def test_wrong_values(write: WriteConfig, snippet: str, key: str, reason: str) -> None:
    path = write(MINIMAL + snippet + "\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: {key}: ")
    assert reason in problem


@pytest.mark.parametrize(
    ("modelarts", "key", "reason"),
    [
        ("{project_id: p}", "modelarts.endpoint", "Field required"),
        ("{endpoint: ftp://x, project_id: p}", "modelarts.endpoint", "http:// or https://"),
        ("{endpoint: 'https://x/?a=1', project_id: p}", "modelarts.endpoint", "without"),
        ("{endpoint: 'https://x/#f', project_id: p}", "modelarts.endpoint", "without"),
        ("{endpoint: 'https://u:pw@x', project_id: p}", "modelarts.endpoint", "without user"),
        ("{endpoint: 'https://x:99999', project_id: p}", "modelarts.endpoint", "URL"),
        ("{endpoint: https://x}", "modelarts.project_id", "Field required"),
        ("{endpoint: https://x, project_id: ''}", "modelarts.project_id", "at least 1"),
        ("{endpoint: https://x, project_id: a/b}", "modelarts.project_id", "'/'"),
        ("{endpoint: https://x, project_id: '..'}", "modelarts.project_id", "'..'"),
        ("{endpoint: https://x, project_id: '.'}", "modelarts.project_id", "'..'"),
        (
            "{endpoint: https://x, project_id: 1234}",
            "modelarts.project_id",
            "must be text: quote it",
        ),
        ("{endpoint: https://x, project_id: p, max_attempts: 11}", "modelarts.max_attempts", "10"),
        (
            "{endpoint: https://x, project_id: p, read_timeout_seconds: 0}",
            "modelarts.read_timeout_seconds",
            "greater than 0",
        ),
        (
            "{endpoint: https://x, project_id: p, request_deadline_seconds: 0}",
            "modelarts.request_deadline_seconds",
            "greater than 0",
        ),
        (
            "{endpoint: https://x, project_id: p, requests_per_second: 0}",
            "modelarts.requests_per_second",
            "greater than 0",
        ),
        (
            "{endpoint: https://x, project_id: p, verify_tls: 1}",
            "modelarts.verify_tls",
            "true, false or the path",
        ),
        (
            "{endpoint: https://x, project_id: p, verify_tls: missing.pem}",
            "modelarts.verify_tls",
            "No such file",
        ),
    ],
)
def test_wrong_modelarts_values(write: WriteConfig, modelarts: str, key: str, reason: str) -> None:
    path = write(f"modelarts: {modelarts}\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: {key}: ")
    assert reason in problem


def test_every_problem_at_once_sorted_by_key(write: WriteConfig) -> None:
    path = write(
        """\
        modelarts:
          endpoint: ftp://example.com
          unknown: 1
        collect:
          interval_seconds: 0
          concurrency: 1000
        discovery:
          phases: [Running, Bogus, Pending, Nope]
          name_regex: "(unclosed"
        shard: {index: 3, count: 2}
        web: {listen_address: "localhost"}
        """
    )
    problems = problems_of(path)

    expected = [
        "collect.concurrency: Input should be less than or equal to 256",
        "collect.interval_seconds: Input should be greater than or equal to 1",
        "discovery.name_regex: invalid regular expression: missing ): (unclosed",
        "discovery.phases.1: must be one of Creating, Pending, Running, Failed, Completed, "
        "Terminating, Terminated, Abnormal",
        "discovery.phases.3: must be one of",
        "modelarts.endpoint: must be an http:// or https:// URL",
        "modelarts.project_id: Field required",
        "modelarts.unknown: unknown key",
        "shard.index: must be less than shard.count",
        "web.listen_address: must be HOST:PORT",
    ]
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(f"{path}: {start}")


def test_problems_sort_list_indexes_numerically(write: WriteConfig) -> None:
    phases = ["Running"] * 10 + ["Bad", "Running", "Bad"]
    path = write(MINIMAL + f"discovery: {{phases: [{', '.join(phases)}]}}\n")
    keys = [problem.split(": ")[1] for problem in problems_of(path)]
    assert keys == ["discovery.phases.10", "discovery.phases.12"]


def test_shard_index_must_be_below_count(write: WriteConfig) -> None:
    path = write(MINIMAL + "shard: {index: 1, count: 1}\n")
    assert problems_of(path) == [f"{path}: shard.index: must be less than shard.count"]


def test_explicit_backoff_cap_below_interval(write: WriteConfig) -> None:
    path = write(MINIMAL + "collect: {interval_seconds: 60, failure_backoff_max_seconds: 30}\n")
    assert problems_of(path) == [
        f"{path}: collect.failure_backoff_max_seconds: must be >= interval_seconds"
    ]


def test_bad_regex_names_key_and_regex_error(write: WriteConfig) -> None:
    path = write(MINIMAL + "discovery: {name_regex: '[z-a]'}\n")
    [problem] = problems_of(path)
    assert problem == (
        f"{path}: discovery.name_regex: invalid regular expression: invalid character class "
        "range: z-a (RE2 syntax: no look-around or back-references)"
    )


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("^(?!tmp-)", "invalid perl operator: (?!"),
        ("(a)\\1", "invalid escape sequence: \\1"),
        ("x{1000}{1000}", "bad repetition operator"),
    ],
)
def test_name_regex_must_be_re2(write: WriteConfig, pattern: str, reason: str) -> None:
    """Python's re accepts these; the name filter runs on RE2, so they are refused at load."""
    path = write(MINIMAL + f"discovery: {{name_regex: '{pattern}'}}\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: discovery.name_regex: invalid regular expression: ")
    assert reason in problem
    assert "\n" not in problem


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("0.0.0.0:9958", ("0.0.0.0", 9958)),
        ("localhost:80", ("localhost", 80)),
        (":9958", ("", 9958)),
        ("[::1]:9958", ("::1", 9958)),
        ("[::]:0", ("::", 0)),
        ("[fe80::1%eth0]:65535", ("fe80::1%eth0", 65535)),
        ("my-host.example.com:1", ("my-host.example.com", 1)),
    ],
)
def test_listen_address_forms(write: WriteConfig, address: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(address) == expected
    config = load_config(write(MINIMAL + f"web: {{listen_address: '{address}'}}\n"))
    assert (config.web.listen_host, config.web.listen_port) == expected


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("9958", "must be HOST:PORT"),
        ("host:", "port must be a number"),
        ("host:65536", "port must be a number"),
        ("host:-1", "port must be a number"),
        ("host:\uff19\uff19", "port must be a number"),  # fullwidth digits
        ("::1:9958", "between brackets"),
        ("[nothost]:80", "not a valid IPv6 address"),
        ("bad host:80", "host must be"),
        ("a/b:80", "host must be"),
    ],
)
def test_bad_listen_addresses(write: WriteConfig, address: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_listen_address(address)
    path = write(MINIMAL + f"web: {{listen_address: '{address}'}}\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: web.listen_address: ")
    assert reason in problem


def test_yaml_syntax_error_with_line_and_column(write: WriteConfig) -> None:
    path = write(
        f"""\
        modelarts:
          endpoint: {ENDPOINT}
          auth: {{token: {TOKEN}
        collect: {{}}
        """
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:4:8: invalid YAML: ")
    assert_no_secret(problem)


def test_duplicate_keys_are_an_error(write: WriteConfig) -> None:
    path = write(MINIMAL + "collect: {interval_seconds: 5}\ncollect: {concurrency: 2}\n")
    assert problems_of(path) == [f"{path}:5:1: invalid YAML: found duplicate key 'collect'"]


def test_merge_keys_may_override(write: WriteConfig) -> None:
    config = load_config(
        write(MINIMAL + "collect:\n  <<: {interval_seconds: 5, concurrency: 2}\n  concurrency: 3\n")
    )
    assert (config.collect.interval_seconds, config.collect.concurrency) == (5, 3)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    assert problems_of(path) == [f"{path}: file not found"]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert problems_of(tmp_path) == [f"{tmp_path}: cannot read file: Is a directory"]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file(write: WriteConfig, text: str) -> None:
    path = write(text)
    assert problems_of(path) == [f"{path}: file is empty"]


@pytest.mark.parametrize(
    ("text", "found"), [("- a\n- b\n", "a list"), ("just text\n", "a single value")]
)
def test_top_level_must_be_a_mapping(write: WriteConfig, text: str, found: str) -> None:
    path = write(text)
    assert problems_of(path) == [f"{path}: top level must be a mapping of keys, not {found}"]


def test_control_characters(write: WriteConfig) -> None:
    path = write(MINIMAL + "collect: {interval_seconds: 5}\x07\n")
    assert problems_of(path) == [
        f"{path}: invalid YAML: unacceptable character #x0007: special characters are not allowed"
    ]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yml"
    path.write_bytes(b"modelarts:\n  endpoint: \xff\n")
    assert problems_of(path) == [f"{path}: not UTF-8 text (byte 23)"]


# --- the auth block ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "key", "reason"),
    [
        ("{}", "modelarts.auth", "give exactly one of"),
        (
            f"{{token: {TOKEN}, access_key: AK, secret_key: {SK}}}",
            "modelarts.auth",
            "found token and access_key",
        ),
        (f"{{token: {TOKEN}, token_file: t}}", "modelarts.auth.token_file", "not both"),
        (f"{{secret_key: {SK}}}", "modelarts.auth.access_key", "required with secret_key"),
        ("{access_key: AK}", "modelarts.auth.secret_key", "give secret_key or secret_key_file"),
        (
            f"{{access_key: AK, secret_key: {SK}, secret_key_file: f}}",
            "modelarts.auth.secret_key_file",
            "not both",
        ),
        ("{token: ''}", "modelarts.auth.token", "must not be empty"),
        ("{token: 12345}", "modelarts.auth.token", "must be text: put the value in quotes"),
        (
            "{iam: {auth_url: 'https://iam', username: u, domain_name: d}}",
            "modelarts.auth.iam.password",
            "give password or password_file",
        ),
        (
            "{iam: {auth_url: 'https://iam', username: u, domain_name: d, "
            f"password: {PASSWORD}, password_file: f}}}}",
            "modelarts.auth.iam.password_file",
            "not both",
        ),
        (
            f"{{iam: {{auth_url: iam, username: u, domain_name: d, password: {PASSWORD}}}}}",
            "modelarts.auth.iam.auth_url",
            "http:// or https://",
        ),
    ],
)
def test_auth_block_problems(write: WriteConfig, auth: str, key: str, reason: str) -> None:
    path = write(MINIMAL + f"  auth: {auth}\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: {key}: ")
    assert reason in problem
    assert_no_secret(problem)


def test_secret_values_never_echoed(write: WriteConfig) -> None:
    path = write(
        MINIMAL
        + f"  auth: {{token: [{TOKEN}], access_key: {{k: {SK}}}}}\n"
        + f"collect: {{interval_seconds: {PASSWORD!r}}}\n"
    )
    problems = problems_of(path)
    assert len(problems) == 3
    assert_no_secret(*problems)


# --- credentials ---------------------------------------------------------------------------


@pytest.fixture
def plain(write: WriteConfig) -> Config:
    return load_config(write(MINIMAL))


def test_token_env_beats_everything(plain: Config) -> None:
    env = {"MODELARTS_AUTH_TOKEN": TOKEN, **AKSK_ENV, **OS_ENV}
    creds = resolve_credentials(plain, env)
    assert (creds.kind, creds.token, creds.source) == (
        "token",
        TOKEN,
        "environment MODELARTS_AUTH_TOKEN",
    )


def test_aksk_env_beats_os_env(plain: Config) -> None:
    creds = resolve_credentials(
        plain, {**AKSK_ENV, "HUAWEICLOUD_SDK_SECURITY_TOKEN": STS, **OS_ENV}
    )
    assert (creds.kind, creds.access_key, creds.secret_key, creds.security_token) == (
        "aksk",
        "AKEXAMPLE",
        SK,
        STS,
    )
    assert creds.source == "environment HUAWEICLOUD_SDK_AK/SK"


def test_os_env_beats_the_file(write: WriteConfig) -> None:
    config = load_config(write(MINIMAL + f"  auth: {{token: {TOKEN}}}\n"))
    creds = resolve_credentials(config, {**OS_ENV, "OS_PROJECT_NAME": "eu-de"})
    assert creds.kind == "password"
    assert (creds.auth_url, creds.username, creds.password, creds.domain_name) == (
        OS_ENV["OS_AUTH_URL"],
        "monitoring",
        PASSWORD,
        "OTC-EU-DE-000",
    )
    assert (creds.project_name, creds.project_id) == ("eu-de", None)
    assert creds.source == "environment OS_*"


def test_os_user_domain_name_stands_for_the_domain(plain: Config) -> None:
    env = {**OS_ENV, "OS_PROJECT_ID": "pid"}
    del env["OS_DOMAIN_NAME"]
    creds = resolve_credentials(plain, {**env, "OS_USER_DOMAIN_NAME": "dom"})
    assert (creds.domain_name, creds.project_id) == ("dom", "pid")


def test_file_token_when_environment_has_none(write: WriteConfig) -> None:
    path = write(MINIMAL + f"  auth: {{token: {TOKEN}}}\n")
    creds = resolve_credentials(load_config(path), {"UNRELATED": "x", "MODELARTS_AUTH_TOKEN": ""})
    assert (creds.kind, creds.token, creds.source) == ("token", TOKEN, f"{path} modelarts.auth")


def test_file_variants_read_and_stripped(write: WriteConfig, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(f"{TOKEN}\n")
    (tmp_path / "sk").write_text(f"{SK}\r\n")
    (tmp_path / "pw").write_text(f"{PASSWORD}")

    token = load_config(write(MINIMAL + "  auth: {token_file: token}\n"))
    assert resolve_credentials(token, {}).token == TOKEN

    aksk = load_config(
        write(MINIMAL + f"  auth: {{access_key: AK, secret_key_file: sk, security_token: {STS}}}\n")
    )
    creds = resolve_credentials(aksk, {})
    assert (creds.kind, creds.access_key, creds.secret_key, creds.security_token) == (
        "aksk",
        "AK",
        SK,
        STS,
    )

    iam = load_config(
        write(
            MINIMAL
            + "  verify_tls: false\n"
            + "  read_timeout_seconds: 7\n"
            + "  auth:\n"
            + "    iam: {auth_url: 'https://iam.example/v3', username: u, password_file: pw,\n"
            + "          domain_name: d, project_name: eu-de}\n"
        )
    )
    creds = resolve_credentials(iam, {})
    assert (creds.kind, creds.password, creds.project_name, creds.project_id) == (
        "password",
        PASSWORD,
        "eu-de",
        None,
    )
    assert (creds.verify, creds.timeout) == (False, (5.0, 7.0))


@pytest.mark.parametrize(
    ("auth", "content", "reason"),
    [
        ("{token_file: secret}", None, "No such file or directory"),
        ("{token_file: secret}", "  \n", "is empty"),
        ("{access_key: AK, secret_key_file: secret}", b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_unusable_secret_files(
    write: WriteConfig, tmp_path: Path, auth: str, content: str | bytes | None, reason: str
) -> None:
    secret = tmp_path / "secret"
    if isinstance(content, str):
        secret.write_text(content)
    elif isinstance(content, bytes):
        secret.write_bytes(content)
    path = write(MINIMAL + f"  auth: {auth}\n")
    config = load_config(path)
    with pytest.raises(ConfigError) as info:
        resolve_credentials(config, {})
    [problem] = info.value.problems
    key = "token_file" if "token_file" in auth else "secret_key_file"
    assert problem.startswith(f"{path}: modelarts.auth.{key}: ")
    assert str(secret) in problem
    assert reason in problem


@pytest.mark.parametrize(
    ("env", "missing", "present"),
    [
        ({"HUAWEICLOUD_SDK_AK": "AK"}, "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_AK"),
        ({"HUAWEICLOUD_SDK_SK": SK}, "HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK"),
        (
            {"HUAWEICLOUD_SDK_SECURITY_TOKEN": STS},
            "HUAWEICLOUD_SDK_AK, HUAWEICLOUD_SDK_SK",
            "HUAWEICLOUD_SDK_SECURITY_TOKEN",
        ),
        (
            {"OS_AUTH_URL": "https://iam", "OS_PASSWORD": PASSWORD},
            "OS_USERNAME, OS_DOMAIN_NAME or OS_USER_DOMAIN_NAME",
            "OS_AUTH_URL, OS_PASSWORD",
        ),
        (
            {"OS_USER_DOMAIN_NAME": "d"},
            "OS_AUTH_URL, OS_USERNAME, OS_PASSWORD",
            "OS_USER_DOMAIN_NAME",
        ),
    ],
)
def test_partial_environment_sets_are_errors(
    write: WriteConfig, env: dict[str, str], missing: str, present: str
) -> None:
    config = load_config(write(MINIMAL + f"  auth: {{token: {TOKEN}}}\n"))
    with pytest.raises(ConfigError) as info:
        resolve_credentials(config, env)
    [problem] = info.value.problems
    assert problem.startswith("environment: ")
    assert f"needs {missing} too ({present} set)" in problem
    assert_no_secret(problem)


def test_partial_set_after_a_complete_one_is_not_looked_at(plain: Config) -> None:
    creds = resolve_credentials(plain, {**AKSK_ENV, "OS_AUTH_URL": "https://iam"})
    assert creds.kind == "aksk"


def test_project_variables_alone_do_not_start_iam_login(plain: Config) -> None:
    with pytest.raises(ConfigError, match="no ModelArts credentials"):
        resolve_credentials(plain, {"OS_PROJECT_NAME": "eu-de"})


def test_no_credentials_lists_the_ways(write: WriteConfig) -> None:
    path = write(MINIMAL)
    with pytest.raises(ConfigError) as info:
        resolve_credentials(load_config(path), {})
    assert info.value.problems == [
        "no ModelArts credentials: set MODELARTS_AUTH_TOKEN; or HUAWEICLOUD_SDK_AK and "
        "HUAWEICLOUD_SDK_SK; or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD and OS_DOMAIN_NAME; "
        f"or add a modelarts.auth block to {path}"
    ]


def test_load_config_with_environ_checks_credentials(write: WriteConfig) -> None:
    path = write(MINIMAL)
    with pytest.raises(ConfigError, match="HUAWEICLOUD_SDK_SK"):
        load_config(path, {"HUAWEICLOUD_SDK_AK": "AK"})
    assert load_config(path, {"MODELARTS_AUTH_TOKEN": TOKEN}).modelarts.project_id == PROJECT


def test_secrets_never_in_repr_or_str(write: WriteConfig, tmp_path: Path) -> None:
    config = load_config(
        write(MINIMAL + f"  auth: {{access_key: AK, secret_key: {SK}, security_token: {STS}}}\n")
    )
    creds = [
        resolve_credentials(config, {}),
        resolve_credentials(config, {"MODELARTS_AUTH_TOKEN": TOKEN}),
        resolve_credentials(config, OS_ENV),
    ]
    assert_no_secret(repr(config), str(config), *map(repr, creds), *map(str, creds))


def test_build_auth_matches_the_kind(plain: Config) -> None:
    session = requests.Session()
    try:
        token = resolve_credentials(plain, {"MODELARTS_AUTH_TOKEN": TOKEN})
        assert isinstance(token.build_auth(session=session, project_id=PROJECT), TokenAuth)

        aksk = resolve_credentials(plain, AKSK_ENV)
        auth = aksk.build_auth(session=session, project_id=PROJECT)
        assert isinstance(auth, AkSkAuth)
        assert auth.project_id == PROJECT

        password = resolve_credentials(plain, OS_ENV)
        iam = password.build_auth(session=session, project_id=PROJECT)
        assert isinstance(iam, PasswordAuth)
        assert (iam.project_id, iam.project_name) == (PROJECT, None)
        assert iam.token_url == "https://iam.eu-de.otc.t-systems.com/v3/auth/tokens?nocatalog=true"

        named = resolve_credentials(plain, {**OS_ENV, "OS_PROJECT_NAME": "eu-de"})
        iam = named.build_auth(session=session, project_id=PROJECT)
        assert isinstance(iam, PasswordAuth)
        assert (iam.project_id, iam.project_name) == (None, "eu-de")
    finally:
        session.close()


def test_build_auth_refuses_unusable_values_without_echoing_them() -> None:
    creds = Credentials("token", "environment MODELARTS_AUTH_TOKEN", token=f"{TOKEN} x")
    with pytest.raises(ConfigError) as info:
        creds.build_auth(session=requests.Session(), project_id=PROJECT)
    assert info.value.problems == [
        "environment MODELARTS_AUTH_TOKEN: token must be non-empty visible ASCII without spaces"
    ]


# --- built in code -------------------------------------------------------------------------


def test_default_config_for_the_demo(tmp_path: Path) -> None:
    config = default_config(
        "http://127.0.0.1:8080/",
        "demo",
        base_dir=tmp_path,
        collect={"interval_seconds": 2},
        state={"path": "state.db"},
        modelarts={"max_attempts": 2},
    )
    assert config.path is None
    assert config.modelarts.endpoint == "http://127.0.0.1:8080"
    assert (config.modelarts.project_id, config.modelarts.max_attempts) == ("demo", 2)
    assert config.collect.interval_seconds == 2
    assert config.state.path == tmp_path / "state.db"


def test_default_config_is_validated() -> None:
    with pytest.raises(ConfigError) as info:
        default_config("http://x", "demo", shard={"count": 0})
    assert info.value.problems == [
        "configuration: shard.count: Input should be greater than or equal to 1"
    ]


def test_with_listen_address(plain: Config) -> None:
    moved = plain.with_listen_address("[::1]:9000")
    assert (moved.web.listen_host, moved.web.listen_port) == ("::1", 9000)
    assert moved.path == plain.path
    assert plain.web.listen_port == 9958
    with pytest.raises(ValueError, match="port must be a number"):
        plain.with_listen_address("localhost:http")
