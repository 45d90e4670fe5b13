"""The CI entry point installs what the tests need, runs the README's test command, and
never ends a process by name (nor does any test or benchmark)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / ".ci" / "run"
BY_NAME = re.compile(r"\b(pkill|killall|pidof|pgrep|kill\s+-\w+\s+\$\()")


def _commands(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_ci_never_ends_processes_by_name() -> None:
    for command in _commands(CI.read_text()):
        assert not BY_NAME.search(command), command


def test_no_test_or_benchmark_ends_processes_by_name() -> None:
    for folder in ("tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == Path(__file__):
                continue
            for command in _commands(path.read_text()):
                assert not BY_NAME.search(command), f"{path}: {command}"


def test_ci_installs_the_debian_tools_then_runs_the_readme_test_command() -> None:
    commands = _commands(CI.read_text())
    update = commands.index("apt-get update")
    install = next(n for n, c in enumerate(commands) if c.startswith("apt-get install"))
    assert update < install
    assert {"prometheus", "prometheus-alertmanager"} <= set(commands[install].split())
    assert commands[-1] == "make test"
    readme = (ROOT / "README.md").read_text()
    assert "make test   # " in readme
    assert CI.stat().st_mode & 0o111
