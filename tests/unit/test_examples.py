"""The files a user looks for: the example configuration (valid, every key named, the
defaults it claims), the systemd unit, the licence, the changelog."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from modelarts_exporter import __version__
from modelarts_exporter.cli import main
from modelarts_exporter.config import Config, default_config, load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "modelarts-exporter.yml"
UNIT = ROOT / "deploy" / "modelarts-exporter.service"
COMMENTED_KEY = re.compile(r"^(\s*)# (\s*[a-z_]+:(?:\s|$).*)$")


def _schema_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.add(key)
        for candidate in (info.annotation, *get_args(info.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys |= _schema_keys(candidate, f"{key}.")
    return keys


def _keys(data: Any, prefix: str = "") -> set[str]:
    keys = set()
    if isinstance(data, dict):
        for name, value in data.items():
            keys.add(f"{prefix}{name}")
            keys |= _keys(value, f"{prefix}{name}.")
    return keys


def test_the_example_names_every_key_of_the_schema() -> None:
    """Commented-out keys (``# key: value``) count: they are uncommented for the check."""
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        match = COMMENTED_KEY.match(line)
        lines.append(match.group(1) + match.group(2) if match else line)
    named = _keys(yaml.safe_load("\n".join(lines)))
    missing = _schema_keys(Config) - named
    assert not missing, sorted(missing)
    unknown = named - _schema_keys(Config)
    assert not unknown, sorted(unknown)


def test_the_example_passes_config_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # state.path is /var/lib/modelarts-exporter/state.db, which only root may create;
    # everything else is checked as written.
    text = EXAMPLE.read_text()
    assert "  path: /var/lib/modelarts-exporter/state.db\n" in text
    config = tmp_path / "modelarts-exporter.yml"
    config.write_text(text.replace("/var/lib/modelarts-exporter/state.db", str(tmp_path / "s.db")))
    monkeypatch.setenv("MODELARTS_AUTH_TOKEN", "t")
    code = main(["serve", "--config.file", str(config), "--config.check"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith(f"{config}: ok")


def test_the_example_shows_the_defaults() -> None:
    example = load_config(EXAMPLE)
    defaults = default_config(
        example.modelarts.endpoint,
        example.modelarts.project_id,
        state={"path": str(example.state.path)},
    )
    assert example.model_dump() == defaults.model_dump()


def test_the_systemd_unit() -> None:
    text = UNIT.read_text()
    unit: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        unit.setdefault(section, {}).setdefault(key, []).append(value)
    service = unit["Service"]
    assert service["DynamicUser"] == ["yes"]  # an unprivileged user of its own
    assert service["StateDirectory"] == ["modelarts-exporter"]
    assert service["EnvironmentFile"] == ["/etc/modelarts-exporter/credentials.env"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    (start,) = service["ExecStart"]
    assert "serve --config.file /etc/modelarts-exporter/modelarts-exporter.yml" in start
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert hardening in service
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    # The example config keeps its state where StateDirectory= puts it.
    assert load_config(EXAMPLE).state.path == Path("/var/lib/modelarts-exporter/state.db")


def test_the_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / UNIT.name
    # systemd-analyze wants the command to exist: point it at a file that does.
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/modelarts-exporter", "/bin/true"))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert str(unit) not in output  # no warning about it (unknown keys are only warned of)


def test_licence_and_changelog() -> None:
    licence = (ROOT / "LICENSE").read_text()
    assert "Apache License" in licence
    assert "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'license = "Apache-2.0"' in pyproject
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {__version__}" in changelog or "## Unreleased" in changelog


def test_the_example_says_name_regex_is_re2() -> None:
    """name_regex runs on RE2 (a look-around is refused), not Python's re."""
    text = EXAMPLE.read_text("utf-8")
    comment = text.split("  name_regex:", 1)[0].rsplit("\n\n", 1)[-1]
    comment = comment.split("phases:", 1)[-1]
    assert "RE2" in comment
    assert "Python" not in comment
