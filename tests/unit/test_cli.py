"""The command line: exit codes, one clear line per problem, no tracebacks."""

from __future__ import annotations

import gzip
import io
import json
import logging
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from modelarts_exporter import __version__, app
from modelarts_exporter.cli import main
from modelarts_exporter.config import Credentials
from modelarts_exporter.logsetup import JsonFormatter, LogfmtFormatter


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    """``main`` sets up the root logger; give the next test the one it had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


GOOD = """
modelarts:
  endpoint: https://modelarts.eu-de.otc.t-systems.com
  project_id: 0123456789abcdef0123456789abcdef
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"modelarts-exporter {__version__}"


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "serve")[0] == 2


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "serve", "--config.file", str(tmp_path / "nope.yml"))
    assert code == 2
    assert "nope.yml" in err
    assert "Traceback" not in err


def test_every_config_problem_at_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELARTS_AUTH_TOKEN", "t")
    config = tmp_path / "cfg.yml"
    config.write_text(GOOD + "collect:\n  interval_seconds: fast\n  colour: blue\n")
    code, _, err = run(capsys, "serve", "--config.file", str(config))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith(str(config)) for line in lines)
    assert any("collect.interval_seconds" in line for line in lines)
    assert any("collect.colour" in line for line in lines)


def test_no_credentials(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MODELARTS_AUTH_TOKEN", "HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "OS_AUTH_URL"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "cfg.yml"
    config.write_text(GOOD)
    code, _, err = run(capsys, "serve", "--config.file", str(config))
    assert code == 2
    assert "MODELARTS_AUTH_TOKEN" in err


def test_config_check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELARTS_AUTH_TOKEN", "secret-token-value")
    config = tmp_path / "cfg.yml"
    config.write_text(GOOD)
    code, out, err = run(capsys, "serve", "--config.file", str(config), "--config.check")
    assert code == 0, err
    assert "ok" in out
    assert "secret-token-value" not in out + err


def test_bad_listen_address(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELARTS_AUTH_TOKEN", "t")
    config = tmp_path / "cfg.yml"
    config.write_text(GOOD)
    code, _, err = run(
        capsys, "serve", "--config.file", str(config), "--web.listen-address", "nowhere"
    )
    assert code == 2
    assert "--web.listen-address" in err


def test_analyze_files_and_stdin(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "worker-0.log"
    log.write_bytes(b"Traceback (most recent call last):\n[Modelarts Service Log]exit with 2\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"CUDA out of memory\n")))
    code, out, _ = run(capsys, "analyze", str(log), "-")
    assert code == 0
    assert 'modelarts_task_exit_code{task_id="worker-0.log",training_job_id="local"} 2.0' in out
    oom = 'marker="cuda_oom",task_id="stdin",training_job_id="local"'
    assert f"modelarts_task_log_errors_total{{{oom}}} 1.0" in out
    assert "modelarts_training_job" not in out


def test_rules_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "rules", "test")
    assert code == 0
    assert out.startswith("ok:")
    bad = tmp_path / "bad.yml"
    bad.write_text("rules:\n  - name: x\n    kind: error\n    pattern: '(?<!a)b'\n")
    code, _, err = run(capsys, "rules", "check", str(bad))
    assert code == 2
    assert "bad.yml" in err
    assert "look-behind" in err
    failing = tmp_path / "failing.yml"
    failing.write_text(
        "rules:\n  - name: y\n    kind: error\n    pattern: 'boom'\n"
        "    examples: ['no match here']\n"
    )
    code, _, err = run(capsys, "rules", "test", str(failing))
    assert code == 1
    assert "did not match" in err


def test_python_dash_m_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelarts_exporter", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_shard_flag_is_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELARTS_AUTH_TOKEN", "t")
    config = tmp_path / "cfg.yml"
    config.write_text(GOOD)
    code, _, err = run(capsys, "serve", "--config.file", str(config), "--shard", "4/3")
    assert code == 2
    assert err.startswith("--shard:")
    code, out, _ = run(
        capsys, "serve", "--config.file", str(config), "--shard", "2/3", "--config.check"
    )
    assert code == 0
    assert out.startswith(str(config))


def test_every_problem_of_a_serve_is_listed_in_one_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MODELARTS_AUTH_TOKEN", "HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "OS_AUTH_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "bad_rules.yml").write_text("rules:\n  - name: b\n    kind: error\n")
    (tmp_path / "web.yml").write_text("basic_auth_users: {alice: not-a-hash}\n")
    (tmp_path / "a-file").write_text("not a directory")
    config = tmp_path / "cfg.yml"
    config.write_text(
        GOOD
        + "rules: {paths: [missing.yml, bad_rules.yml]}\n"
        + "web: {config_file: web.yml}\n"
        + f"state: {{path: {tmp_path}/a-file/state.db}}\n"
    )
    code, _, err = run(capsys, "serve", "--config.file", str(config), "--shard", "9/3")
    assert code == 2
    text = err
    assert "--shard:" in text
    assert "MODELARTS_AUTH_TOKEN" in text  # no credentials
    assert "rules.paths[0]" in text
    assert "missing.yml" in text
    assert "bad_rules.yml" in text  # the broken rule file
    assert "basic_auth_users" in text
    assert "state.path" in text
    assert "Traceback" not in text


def test_a_busy_listen_address_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELARTS_AUTH_TOKEN", "t")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "cfg.yml"
        config.write_text(GOOD + f"state: {{path: {tmp_path}/state.db}}\n")
        code, _, err = run(
            capsys,
            "serve",
            "--config.file",
            str(config),
            "--web.listen-address",
            f"127.0.0.1:{port}",
        )
    assert code == 1
    assert err.strip() == (
        f"modelarts-exporter: web.listen_address 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["--log.level", "warn", "rules", "check"], logging.WARNING),
        (["rules", "--log.level", "debug", "check"], logging.DEBUG),
        (["rules", "check", "--log.level", "warning"], logging.WARNING),
        (["--log.level", "error", "rules", "check"], logging.ERROR),
        (["--log.level", "debug", "analyze", "-"], logging.DEBUG),
        (["analyze", "--log.level", "warn", "-"], logging.WARNING),
    ],
)
def test_log_level_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    level: int,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"step 1\n")))
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert logging.getLogger().level == level


def test_a_flag_before_the_command_is_not_reset_by_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--log.level", "debug", "--log.format", "json", "rules", "check")
    assert code == 0, err
    assert logging.getLogger().level == logging.DEBUG
    logging.getLogger("exporter.test").info("after %s", "it")
    record = json.loads(capsys.readouterr().err)
    assert record["level"] == "info"
    assert record["msg"] == "after it"


@pytest.mark.parametrize("position", ["before", "after"])
def test_log_format_json_writes_one_object_a_line(
    capsys: pytest.CaptureFixture[str], position: str
) -> None:
    flags = ["--log.format", "json"]
    argv = [*flags, "rules", "check"] if position == "before" else ["rules", "check", *flags]
    assert run(capsys, *argv)[0] == 0
    logger = logging.getLogger("exporter.test")
    logger.warning('a "quoted"\nmessage')
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "warning"
    assert first["logger"] == "exporter.test"
    assert first["msg"] == 'a "quoted"\nmessage'
    assert first["ts"].endswith("Z")
    assert second["msg"] == "failed"
    assert "ValueError: boom" in second["exc"]


def test_logfmt_keeps_a_record_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "rules", "check")[0] == 0
    logging.getLogger("exporter.test").warning("two\nlines")
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert 'level=warning logger=exporter.test msg="two\\nlines"' in err


@pytest.mark.parametrize("value", ["verbose", "warnings"])
def test_unknown_log_level_is_bad_usage(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, _, err = run(capsys, "rules", "check", "--log.level", value)
    assert code == 2
    assert "--log.level" in err


def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODELARTS_AUTH_TOKEN", "HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "OS_AUTH_URL"):
        monkeypatch.delenv(name, raising=False)


def test_a_structure_error_does_not_hide_the_other_problems(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_credentials(monkeypatch)
    (tmp_path / "bad_rules.yml").write_text("rules:\n  - name: b\n    kind: error\n")
    (tmp_path / "web.yml").write_text("basic_auth_users: {alice: not-a-hash}\n")
    config = tmp_path / "cfg.yml"
    config.write_text(
        GOOD
        + "colour: blue\n"  # an unknown section: the whole file is invalid
        + "collect: {interval_seconds: fast}\n"
        + "rules: {paths: [missing.yml, bad_rules.yml]}\n"
        + "web: {config_file: web.yml}\n"
        + "state: {path: /proc/modelarts-state.db}\n"
    )
    code, _, err = run(capsys, "serve", "--config.file", str(config), "--config.check")
    assert code == 2
    assert "colour: unknown key" in err
    assert "collect.interval_seconds" in err
    assert "MODELARTS_AUTH_TOKEN" in err  # no credentials
    assert "rules.paths[0]" in err
    assert "bad_rules.yml" in err
    assert "basic_auth_users" in err
    assert "state.path: /proc/modelarts-state.db: is on /proc" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 7


def test_an_invalid_modelarts_section_still_checks_the_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_credentials(monkeypatch)
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "AK")  # a partial set
    config = tmp_path / "cfg.yml"
    config.write_text("modelarts: {endpoint: ftp://x, project_id: p}\n")
    code, _, err = run(capsys, "serve", "--config.file", str(config), "--config.check")
    assert code == 2
    assert "modelarts.endpoint" in err
    assert "HUAWEICLOUD_SDK_SK" in err


def test_an_invalid_auth_block_is_reported_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_credentials(monkeypatch)
    config = tmp_path / "cfg.yml"
    config.write_text(
        "modelarts: {endpoint: ftp://x, project_id: p, auth: {access_key: AK}}\n"
        f"state: {{path: {tmp_path}/state.db}}\n"
    )
    code, _, err = run(capsys, "serve", "--config.file", str(config), "--config.check")
    assert code == 2
    lines = err.strip().splitlines()
    assert any("modelarts.auth.secret_key" in line for line in lines)
    assert not any("no ModelArts credentials" in line for line in lines)
    assert len(lines) == 2, lines


@pytest.mark.parametrize(
    ("state_path", "problem"),
    [
        ("/proc/modelarts-state.db", "is on /proc, a kernel file system"),
        ("/proc/self/state.db", "is on /proc, a kernel file system"),
        ("/sys/state.db", "is on /sys, a kernel file system"),
        ("/dev/shm/../state.db", "is on /dev, a kernel file system"),
        ("/dev/null", "is on /dev, a kernel file system"),
        ("{tmp}/a-file/state.db", "is not a directory"),
        ("{tmp}/a-file/deeper/state.db", "is not a directory"),
        ("{tmp}", "is a directory"),
    ],
)
def test_state_paths_where_no_state_file_can_live(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    state_path: str,
    problem: str,
) -> None:
    monkeypatch.setenv("MODELARTS_AUTH_TOKEN", "t")
    (tmp_path / "a-file").write_text("not a directory")
    config = tmp_path / "cfg.yml"
    config.write_text(GOOD + f"state: {{path: '{state_path.format(tmp=tmp_path)}'}}\n")
    code, _, err = run(capsys, "serve", "--config.file", str(config), "--config.check")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"{config}: state.path: ")
    assert problem in line


@pytest.mark.parametrize(
    ("yaml_text", "key", "advice"),
    [
        (
            "web: {listen_address: 9958}\n",
            "web.listen_address",
            'quote it and give HOST:PORT, e.g. "0.0.0.0:9958"',
        ),
        (
            "modelarts: {endpoint: 'http://x', project_id: 1234567890}\n",
            "modelarts.project_id",
            'quote it, e.g. project_id: "0123456789abcdef0123456789abcdef"',
        ),
        (
            "modelarts: {endpoint: 'http://x', project_id: p, workspace_id: 0}\n",
            "modelarts.workspace_id",
            "quote it",
        ),
        ("discovery: {job_ids: [123]}\n", "discovery.job_ids.0", "put the value in quotes"),
        ("discovery: {name_regex: yes}\n", "discovery.name_regex", "true/false/yes/no"),
    ],
)
def test_a_number_where_text_belongs_says_what_to_write(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    yaml_text: str,
    key: str,
    advice: str,
) -> None:
    monkeypatch.setenv("MODELARTS_AUTH_TOKEN", "t")
    config = tmp_path / "cfg.yml"
    base = "" if yaml_text.startswith("modelarts") else GOOD
    config.write_text(base + yaml_text + f"state: {{path: {tmp_path}/state.db}}\n")
    code, _, err = run(capsys, "serve", "--config.file", str(config), "--config.check")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"{config}: {key}: must be text: ")
    assert advice in line
    assert "Input should be a valid string" not in line
    assert "1234567890" not in line  # values are never quoted


def _exit_codes(out: str) -> dict[str, float]:
    found = {}
    for line in out.splitlines():
        if line.startswith("modelarts_task_exit_code{"):
            labels, value = line.rsplit(" ", 1)
            task = labels.split('task_id="', 1)[1].split('"', 1)[0]
            found[task] = float(value)
    return found


def test_analyze_tells_apart_logs_of_the_same_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for job, code in (("job-a", 1), ("job-b", 2), ("other/job-a", 3)):
        (tmp_path / job).mkdir(parents=True)
        (tmp_path / job / "worker-0").write_text(f"[Modelarts Service Log]exit with {code}\n")
    (tmp_path / "solo.log").write_text("[Modelarts Service Log]exit with 4\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys, "analyze", "job-a/worker-0", "job-b/worker-0", "other/job-a/worker-0", "solo.log"
    )
    assert code == 0, err
    assert _exit_codes(out) == {
        "job-a/worker-0": 1.0,
        "job-b/worker-0": 2.0,
        "other/job-a/worker-0": 3.0,
        "solo.log": 4.0,
    }
    code, out, err = run(capsys, "analyze", str(tmp_path / "job-a" / "worker-0"), "solo.log")
    assert _exit_codes(out) == {"worker-0": 1.0, "solo.log": 4.0}  # unique: the file name


def test_analyze_refuses_a_file_given_twice(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = tmp_path / "worker-0"
    log.write_text("x\n")
    code, out, err = run(capsys, "analyze", str(log), str(log))
    assert code == 2
    assert err.strip() == f"analyze: {log}: given twice"
    assert out == ""


def test_analyze_reads_gzip_logs_decompressed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = b"step 1\nTraceback (most recent call last):\n[Modelarts Service Log]exit with 7\n"
    (tmp_path / "worker-0.log.gz").write_bytes(gzip.compress(text))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(text))))
    code, out, err = run(capsys, "analyze", str(tmp_path / "worker-0.log.gz"), "-")
    assert code == 0, err
    assert _exit_codes(out) == {"worker-0.log": 7.0, "stdin": 7.0}
    assert (
        'modelarts_task_log_lines_total{task_id="worker-0.log",training_job_id="local"} 3.0' in out
    )
    assert (
        f'modelarts_task_log_size_bytes{{task_id="stdin",training_job_id="local"}} {len(text)}.0'
        in out
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"plain text\n", "not a gzip file, though its name ends with .gz"),
        (gzip.compress(b"x\n" * 100)[:20], "not a valid gzip file"),
    ],
)
def test_a_broken_gz_log_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, problem: str
) -> None:
    log = tmp_path / "worker-0.gz"
    log.write_bytes(content)
    code, _, err = run(capsys, "analyze", str(log))
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"analyze: {log}: {problem}")


_CREDENTIAL_VARIABLES = (
    "MODELARTS_AUTH_TOKEN",
    "HUAWEICLOUD_SDK_AK",
    "HUAWEICLOUD_SDK_SK",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    "OS_AUTH_URL",
    "OS_USERNAME",
    "OS_PASSWORD",
    "OS_DOMAIN_NAME",
    "OS_USER_DOMAIN_NAME",
    "OS_PROJECT_NAME",
    "OS_PROJECT_ID",
)
_IAM = {
    "OS_AUTH_URL": "https://iam.example/v3",
    "OS_USERNAME": "monitoring",
    "OS_PASSWORD": "Passw0rd-ok",
    "OS_DOMAIN_NAME": "OTC-EU-DE-000",
}
_AKSK = {"HUAWEICLOUD_SDK_AK": "AKEXAMPLE", "HUAWEICLOUD_SDK_SK": "SKEXAMPLEsecret"}


class _Started(Exception):
    """Raised instead of starting the exporter: a credential got past the checks."""

    def __init__(self, config: object, credentials: object, **kwargs: object) -> None:
        super().__init__("the exporter would start")
        self.credentials = credentials


def _serve(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    check: bool,
    config_text: str = GOOD,
) -> tuple[int, str, str]:
    """``serve`` (with ``--config.check`` when ``check``) in-process; an exporter that
    would start raises _Started instead."""

    def refuse(config: object, credentials: object, **kwargs: object) -> None:
        raise _Started(config, credentials)

    monkeypatch.setattr(app, "Exporter", refuse)
    for name in _CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "cfg.yml"
    config.write_text(config_text + f"state: {{path: {tmp_path}/state.db}}\n")
    args = ["serve", "--config.file", str(config), "--web.listen-address", "127.0.0.1:0"]
    return run(capsys, *args, *(["--config.check"] if check else []))


@pytest.mark.parametrize(
    ("env", "named", "value"),
    [
        ({"MODELARTS_AUTH_TOKEN": "MIIsecret token"}, "MODELARTS_AUTH_TOKEN", "MIIsecret token"),
        ({"MODELARTS_AUTH_TOKEN": "MIIsecret\ntoken"}, "MODELARTS_AUTH_TOKEN", "MIIsecret"),
        ({"MODELARTS_AUTH_TOKEN": "MIIsecret\n\n"}, "MODELARTS_AUTH_TOKEN", "MIIsecret"),
        ({"MODELARTS_AUTH_TOKEN": " MIIsecret"}, "MODELARTS_AUTH_TOKEN", "MIIsecret"),
        ({**_AKSK, "HUAWEICLOUD_SDK_AK": "AK SECRET1"}, "HUAWEICLOUD_SDK_AK", "SECRET1"),
        ({**_AKSK, "HUAWEICLOUD_SDK_SK": "SK\tSECRET2"}, "HUAWEICLOUD_SDK_SK", "SECRET2"),
        (
            {**_AKSK, "HUAWEICLOUD_SDK_SECURITY_TOKEN": "STS\rSECRET3"},
            "HUAWEICLOUD_SDK_SECURITY_TOKEN",
            "SECRET3",
        ),
        ({**_IAM, "OS_PASSWORD": "pass word-SECRET4"}, "OS_PASSWORD", "SECRET4"),
        ({**_IAM, "OS_PASSWORD": "pass\nword-SECRET5\n"}, "OS_PASSWORD", "SECRET5"),
        ({**_IAM, "OS_USERNAME": "moni\ntoring"}, "OS_USERNAME", "toring"),
        ({**_IAM, "OS_AUTH_URL": "not a url"}, "OS_AUTH_URL", "not a url"),
    ],
)
@pytest.mark.parametrize("check", [True, False], ids=["config.check", "serve"])
def test_a_credential_with_whitespace_is_one_line_exit_2_in_check_and_serve(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    named: str,
    value: str,
    check: bool,
) -> None:
    code, out, err = _serve(capsys, monkeypatch, tmp_path, env, check)
    assert code == 2, err
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"environment {named}: "), line
    assert value not in err


@pytest.mark.parametrize(
    ("auth", "content", "key"),
    [
        ("{token: 'MIIsecret token'}", None, "modelarts.auth.token: "),
        ('{token: "MIIsecret\\n\\n"}', None, "modelarts.auth.token: "),
        ("{token_file: secret}", "MIIsecret\ntoken\n", "modelarts.auth.token_file: "),
        ("{access_key: 'AK AK', secret_key: SK}", None, "modelarts.auth.access_key: "),
        (
            "{access_key: AK, secret_key_file: secret}",
            "SK SECRET\n",
            "modelarts.auth.secret_key_file: ",
        ),
        (
            "{iam: {auth_url: 'https://iam.example/v3', username: u, password: 'p w',"
            " domain_name: d}}",
            None,
            "modelarts.auth.iam.password: ",
        ),
    ],
)
@pytest.mark.parametrize("check", [True, False], ids=["config.check", "serve"])
def test_a_configured_credential_with_whitespace_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    auth: str,
    content: str | None,
    key: str,
    check: bool,
) -> None:
    if content is not None:
        (tmp_path / "secret").write_text(content)
    config_text = GOOD + f"  auth: {auth}\n"
    code, _, err = _serve(capsys, monkeypatch, tmp_path, {}, check, config_text)
    assert code == 2, err
    [line] = err.splitlines()
    assert line.startswith(f"{tmp_path / 'cfg.yml'}: {key}"), line
    assert "SECRET" not in line
    assert "MIIsecret" not in line


@pytest.mark.parametrize(
    "env",
    [
        {"MODELARTS_AUTH_TOKEN": "MIIsecret-token\n"},
        {**_AKSK, "HUAWEICLOUD_SDK_SK": "SKEXAMPLEsecret\r\n"},
        {**_IAM, "OS_PASSWORD": "Passw0rd-ok\n", "OS_USERNAME": "monitoring\n"},
    ],
)
def test_one_trailing_newline_of_a_credential_is_ignored(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    code, out, err = _serve(capsys, monkeypatch, tmp_path, env, check=True)
    assert code == 0, err
    assert "ok" in out
    with pytest.raises(_Started) as started:  # and serve starts, with the newline gone
        _serve(capsys, monkeypatch, tmp_path, env, check=False)
    credentials = started.value.credentials
    assert isinstance(credentials, Credentials)
    values = (credentials.token, credentials.secret_key, credentials.password)
    assert all(not value or value.isprintable() for value in values)
    assert credentials.username in ("", "monitoring")


@pytest.mark.parametrize("command", ["check", "test"])
def test_a_rules_folder_without_a_rule_file_is_a_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    """A folder of *.yaml.txt files (or a wrong mount) loaded nothing and said ok."""
    folder = tmp_path / "my-rules"
    folder.mkdir()
    (folder / "mine.yml.txt").write_text("rules: []\n")
    code, out, err = run(capsys, "rules", command, str(folder))
    assert code == 2, err
    assert out == ""
    assert err == f"{folder}: a folder that holds no *.yml or *.yaml rule file\n"


@pytest.mark.parametrize("check", [True, False], ids=["config.check", "serve"])
def test_a_rules_path_folder_without_a_rule_file_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    check: bool,
) -> None:
    folder = tmp_path / "rules.d"
    folder.mkdir()
    text = GOOD + f"rules: {{paths: [{folder}]}}\n"
    env = {"MODELARTS_AUTH_TOKEN": "t"}
    code, out, err = _serve(capsys, monkeypatch, tmp_path, env, check, config_text=text)
    assert code == 2, err
    assert out == ""
    config = tmp_path / "cfg.yml"
    expected = (
        f"{config}: rules.paths[0]: {folder}: a folder that holds no *.yml or *.yaml rule file"
    )
    assert err.splitlines() == [expected]


@pytest.mark.parametrize("command", ["check", "test"])
def test_rules_without_default_rules_and_without_paths_is_bad_usage(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, err = run(capsys, "rules", command, "--no-default-rules")
    assert code == 2
    assert out == ""
    assert err == f"rules {command}: nothing to check: --no-default-rules and no PATH\n"


def test_rules_that_load_no_rule_or_no_example_say_nothing_was_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.yml"
    empty.write_text("rules: []\n")
    code, _, err = run(capsys, "rules", "check", "--no-default-rules", str(empty))
    assert code == 0
    assert err == f"warning: nothing was checked: no rule in {empty}\n"
    untested = tmp_path / "untested.yml"
    untested.write_text("rules:\n  - {name: boom, kind: error, pattern: 'boom'}\n")
    code, _, err = run(capsys, "rules", "test", "--no-default-rules", str(untested))
    assert code == 0
    assert err == "warning: nothing was tested: none of these rules has an example\n"


@pytest.mark.parametrize("defaults", [True, False], ids=["with-shipped", "alone"])
def test_a_failing_vocabulary_example_names_its_file_and_its_number_there(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, defaults: bool
) -> None:
    """Not `vocabulary (kv_loss): examples[139]`, a place in every file's examples merged."""
    vocab = tmp_path / "vocab_bad.yml"
    vocab.write_text(
        "vocabulary:\n"
        "  loss: [objective]\n"
        "  examples:\n"
        "    - {line: 'objective=0.5', loss: 0.5}\n"
        "    - {line: 'batch_idx: 120 objective=0.731', loss: 0.9}\n"
    )
    flags = [] if defaults else ["--no-default-rules"]
    code, _, err = run(capsys, "rules", "test", *flags, str(vocab))
    assert code == 1
    failures = err.splitlines()[:-1]
    assert failures == [
        f"{vocab}: vocabulary.examples[1] (kv_loss): value is 0.731, expected 0.9"
    ], err


def test_rules_check_tells_what_your_rules_cost(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    costly = tmp_path / "costly.yml"
    costly.write_text("rules:\n  - {name: costly, kind: error, pattern: 'a.{40}Z'}\n")
    cheap = tmp_path / "cheap.yml"
    cheap.write_text("rules:\n  - {name: cheap, kind: error, pattern: 'checkpoint saved'}\n")
    assert main(["rules", "check", str(costly)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {costly}: rules[0] (costly): pattern: an RE2 program of " in err
    assert "Bounded repetitions such as .{40} are the usual cause" in err
    assert "note: " in err
    assert "MB/s with your 1 rule, " in err
    assert main(["rules", "check", str(cheap)]) == 0
    assert "RE2 program" not in capsys.readouterr().err
    assert main(["rules", "check"]) == 0  # the shipped rules alone: nothing to measure
    assert capsys.readouterr().err == ""


def test_rules_check_without_the_shipped_rules_gives_a_speed_not_a_ratio(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With --no-default-rules the baseline is no rule at all: a ratio to that (1912x
    slower) means nothing. The speed alone is given; the RE2 program warning stays."""
    costly = tmp_path / "slow.yml"
    costly.write_text("rules:\n  - {name: costly, kind: error, pattern: 'a.{40}Z'}\n")
    assert main(["rules", "check", "--no-default-rules", str(costly)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {costly}: rules[0] (costly): pattern: an RE2 program of " in err
    assert "slower" not in err
    assert "instead of" not in err
    assert "x the time" not in err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1, err
    assert " MB/s with your 1 rule (and no other) on a synthetic 1 MiB training log" in notes[0]


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JsonFormatter()], ids=["logfmt", "json"])
def test_log_lines_are_one_line_whatever_the_api_sent(formatter: logging.Formatter) -> None:
    """A job name with a newline cannot forge a log line; a lone surrogate (valid JSON from
    the API) cannot break the stream."""
    record = logging.LogRecord(
        "exporter.discovery", logging.INFO, __file__, 1, "watching job %s", ("a\nfake\ud800",), None
    )
    line = formatter.format(record)
    assert "\n" not in line
    line.encode("utf-8")
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["msg"] == "watching job a\nfake\\ud800"
    else:
        assert 'msg="watching job a\\nfake\\ud800"' in line


def test_a_state_file_locked_by_another_program_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locked is not corrupt: serve refuses to start and leaves the file alone."""
    monkeypatch.setenv("MODELARTS_AUTH_TOKEN", "t")
    state = tmp_path / "state.db"
    other = sqlite3.connect(state, isolation_level=None)
    other.execute("CREATE TABLE t (x)")
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO t VALUES (1)")
    try:
        config = tmp_path / "cfg.yml"
        config.write_text(GOOD + f"state: {{path: {state}}}\n")
        code, _, err = run(
            capsys, "serve", "--config.file", str(config), "--web.listen-address", "127.0.0.1:0"
        )
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert code == 1
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "level=" not in line]
    assert line.startswith(f"modelarts-exporter: state.path {state}: locked by another program")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yml", "state.db", "state.db.lock"]
    # It never started: no "stopped" line before the error.
    logged = [line for line in err.splitlines() if "level=" in line]
    assert not [line for line in logged if 'msg="stopped"' in line or "msg=stopped" in line]


ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_passes_demo_args_on(tmp_path: Path) -> None:
    """`make demo` cannot take --web.listen-address; DEMO_ARGS carries it (dry run)."""
    venv = tmp_path / "venv"
    make = shutil.which("make")
    assert make is not None, "make is needed (the README's quick start uses it)"
    plan = subprocess.run(
        [
            make,
            "-n",
            "-C",
            str(ROOT),
            "demo",
            f"VENV={venv}",
            "DEMO_ARGS=--web.listen-address 127.0.0.1:19251",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"{venv}/bin/modelarts-exporter demo --web.listen-address 127.0.0.1:19251" in plan


def test_the_demo_on_a_taken_port_says_how_to_choose_another_through_make(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        code, out, err = run(capsys, "demo", "--web.listen-address", address)
    assert code == 1
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"modelarts-exporter: web.listen_address {address}: "), line
    assert "--web.listen-address HOST:PORT" in line
    assert "make demo DEMO_ARGS='--web.listen-address 127.0.0.1:9959'" in line


def test_the_readme_says_where_make_installs_the_command() -> None:
    """After `make demo`, `modelarts-exporter ...` is not on PATH: the README says so."""
    readme = (ROOT / "README.md").read_text("utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert ". .venv/bin/activate" in quick_start
    assert ".venv/bin/modelarts-exporter" in quick_start
    assert "make demo DEMO_ARGS='--web.listen-address 127.0.0.1:9959'" in quick_start


@pytest.mark.parametrize("by", ["config", "flag"])
def test_a_web_config_file_that_cannot_be_read_names_the_key_or_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, by: str
) -> None:
    missing = tmp_path / "nosuch-web.yml"
    env = {"MODELARTS_AUTH_TOKEN": "t"}
    if by == "config":
        text = GOOD + f"web: {{config_file: {missing}}}\n"
        code, out, err = _serve(capsys, monkeypatch, tmp_path, env, True, config_text=text)
        expected = f"{tmp_path / 'cfg.yml'}: web.config_file: {missing}: file not found"
    else:
        monkeypatch.setattr(app, "Exporter", None)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config = tmp_path / "cfg.yml"
        config.write_text(GOOD + f"state: {{path: {tmp_path}/state.db}}\n")
        code, out, err = run(
            capsys,
            "serve",
            "--config.file",
            str(config),
            "--web.config.file",
            str(missing),
            "--config.check",
        )
        expected = f"--web.config.file: {missing}: file not found"
    assert code == 2, err
    assert out == ""
    assert err.splitlines() == [expected]
