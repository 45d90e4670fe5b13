"""The built wheel installs `modelarts_exporter` (no top-level `exporter`), whole, and its
console script and `python -m modelarts_exporter` work from a fresh virtualenv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "exporter", "rules")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built offline from a copy of the sources (the build leaves the tree alone)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out, src],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("modelarts_exporter-*.whl")
    return built


def test_the_wheel_holds_modelarts_exporter_and_nothing_called_exporter(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert not any(name.startswith("exporter/") for name in names)
    assert {n for n in top_level if not n.endswith(".dist-info")} == {"modelarts_exporter"}
    # Every module of the folder exporter/ is in the wheel, under modelarts_exporter/.
    modules = {
        "modelarts_exporter/" + path.relative_to(ROOT / "exporter").as_posix()
        for path in (ROOT / "exporter").rglob("*.py")
    }
    assert modules <= set(names), sorted(modules - set(names))
    rules = {f"modelarts_exporter/default_rules/{p.name}" for p in (ROOT / "rules").glob("*.yml")}
    assert rules
    assert rules <= set(names)
    assert "modelarts_exporter/py.typed" in names


def test_the_installed_wheel_runs(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies come from the test environment (a .pth only adds its folder: the
    # editable install of this checkout there is not picked up).
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "test-dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    install = subprocess.run(
        [*pip, "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MODELARTS_AUTH_TOKEN"] = "t"

    def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, check=False, cwd=tmp_path, env=env
        )

    where = run(python, "-c", "import modelarts_exporter; print(modelarts_exporter.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv)
    assert run(python, "-c", "import exporter").returncode != 0
    script = venv / "bin" / "modelarts-exporter"
    version = run(script, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("modelarts-exporter ")
    rules = run(python, "-m", "modelarts_exporter", "rules", "check")
    assert rules.returncode == 0, rules.stderr
    assert rules.stdout.startswith("ok: ")
    config = tmp_path / "cfg.yml"
    config.write_text(
        "modelarts: {endpoint: 'http://127.0.0.1:1', project_id: p}\n"
        f"state: {{path: '{tmp_path / 'state.db'}'}}\n"
    )
    check = run(script, "serve", "--config.file", config, "--config.check")
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"{config}: ok")
