"""``modelarts-exporter simulate``: the flags of every other command, each credential kind,
and a start-up message whose commands, run as printed, give a working exporter."""

from __future__ import annotations

import os
import select
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, get, parse_metrics, series, wait_for

BIN = str(Path(sys.executable).parent)


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MODELARTS_", "HUAWEICLOUD_SDK_", "OS_"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def simulate(tmp_path: Path) -> Iterator[tuple[list[str], int]]:
    """``simulate`` with a token, AK/SK and an IAM user; (its start-up lines, its port)."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "modelarts_exporter",
        "simulate",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--token",
        "tok-123",
        "--ak",
        "AKSIM",
        "--sk",
        "se'cret$sk",
        "--iam-user",
        "alice",
        "--iam-password",
        "pa$$word",
    ]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path
    )
    assert process.stdout is not None
    out = b""
    try:
        while b"Press Ctrl-C to stop.\n" not in out:
            ready, _, _ = select.select([process.stdout], [], [], 30)
            chunk = os.read(process.stdout.fileno(), 65536) if ready else b""
            assert chunk, f"simulate printed {out!r} and stopped"
            out += chunk
        yield out.decode().splitlines(), port
    finally:
        _stop(process)
        process.stdout.close()


def test_the_start_up_message_is_labelled(simulate: tuple[list[str], int]) -> None:
    lines, port = simulate
    assert lines[0].startswith("modelarts-exporter simulate: ")
    labels = dict(line.strip().split(":", 1) for line in lines[1:4])
    assert labels["endpoint"].strip() == f"http://127.0.0.1:{port}"
    assert len(labels["project_id"].strip()) == 32
    assert labels["credentials"].strip() == "X-Auth-Token, AK/SK signing, IAM password login"


@pytest.mark.parametrize("kind", ["X-Auth-Token", "AK/SK signing", "IAM password login"])
def test_the_printed_commands_run_an_exporter_against_it(
    simulate: tuple[list[str], int], tmp_path: Path, kind: str
) -> None:
    lines, _ = simulate
    (printf,) = [line.strip() for line in lines if line.strip().startswith("printf ")]
    (command,) = [line.strip() for line in lines if line.endswith(f"# {kind}")]
    subprocess.run(["/bin/sh", "-c", printf], cwd=tmp_path, check=True)
    assert (tmp_path / "simulator.yml").exists()
    # As a shell runs it: leading NAME=VALUE words are the environment, then the command.
    words = shlex.split(command.split("   # ")[0])
    env = _env()
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[:4] == ["modelarts-exporter", "serve", "--config.file", "simulator.yml"]
    port = free_port()
    words += ["--web.listen-address", f"127.0.0.1:{port}"]
    log_path = tmp_path / "exporter.log"
    with log_path.open("wb") as log:
        exporter = subprocess.Popen(words, env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:

        def watched_job() -> dict[frozenset[tuple[str, str]], float] | None:
            assert exporter.poll() is None, log_path.read_text()
            text = get(f"http://127.0.0.1:{port}/metrics", 2)
            return series(parse_metrics(text), "modelarts_task_up") if text else None

        ups = wait_for(watched_job, 60, f"an exporter logged in with {kind}")
        assert set(ups.values()) == {1.0}, log_path.read_text()
    finally:
        _stop(exporter)
    assert exporter.returncode == 0, log_path.read_text()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--ak", "A"], "--ak and --sk go together"),
        (["--iam-password", "p"], "--iam-user and --iam-password go together"),
        (["--web.listen-address", "nowhere"], "--web.listen-address: must be HOST:PORT"),
        (["--ak", "A", "--sk", "secret sk"], "--sk: must not contain whitespace"),
        (["--token", "tok\n"], "--token: must not contain whitespace"),
    ],
)
def test_bad_simulate_flags_are_one_line_each(args: list[str], problem: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelarts_exporter", "simulate", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == problem or result.stderr.startswith(problem)
    assert "Traceback" not in result.stderr
