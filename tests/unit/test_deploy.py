"""The shipped Kubernetes example stays valid: its config loads, shards match replicas."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelarts_exporter.config import default_config, load_config

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "modelarts-exporter.yaml"


def _documents() -> dict[str, dict[str, object]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def test_the_configmap_is_a_valid_config(tmp_path: Path) -> None:
    config_text = _documents()["ConfigMap"]["data"]["config.yml"]  # type: ignore[index]
    path = tmp_path / "config.yml"
    path.write_text(config_text)
    config = load_config(path)
    assert config.state.path == Path("/var/lib/modelarts-exporter/state.db")


def test_shard_count_matches_the_replicas() -> None:
    statefulset = _documents()["StatefulSet"]
    spec = statefulset["spec"]
    args = spec["template"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    shard = next(a for a in args if a.startswith("--shard="))
    assert shard == f"--shard=hostname/{spec['replicas']}"  # type: ignore[index]


@pytest.mark.parametrize(
    ("spec", "host", "expected"),
    [("1/3", "", (1, 3)), ("hostname/3", "modelarts-exporter-2", (2, 3)), ("0/1", "x", (0, 1))],
)
def test_shard_flag(spec: str, host: str, expected: tuple[int, int]) -> None:
    config = default_config("http://127.0.0.1:1", "p").with_shard(spec, host)
    assert (config.shard.index, config.shard.count) == expected


@pytest.mark.parametrize(
    ("spec", "host"), [("3/3", ""), ("a/3", ""), ("hostname/3", "box"), ("1", ""), ("0/0", "")]
)
def test_bad_shard_flag(spec: str, host: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        default_config("http://127.0.0.1:1", "p").with_shard(spec, host)


def test_scrape_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (CI installs it with .ci/run)")
        pytest.skip("promtool is not installed")
    config = tmp_path / "prometheus.yml"
    config.write_text((ROOT / "deploy" / "kubernetes" / "prometheus-scrape.yaml").read_text())
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
