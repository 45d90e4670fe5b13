"""modelarts_task_failure_info, analyze's reason, and --web.external-url."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from test_cli import GOOD, run

from modelarts_exporter.app import Exporter
from modelarts_exporter.config import ConfigError, Credentials, default_config, load_config
from modelarts_exporter.config.changes import changed_keys, keep_restart_only, restart_only
from modelarts_exporter.evidence import MarkerLine
from modelarts_exporter.families import build_families, render_text
from modelarts_exporter.rules import load_rules
from modelarts_exporter.store import JobState, Snapshot, TaskState

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "diagnosis"


def _failure_lines(snapshot: Snapshot) -> list[str]:
    text = render_text(build_families(snapshot, load_rules()))
    return [line for line in text.splitlines() if line.startswith("modelarts_task_failure_info")]


def test_failure_info_for_each_failed_task_only() -> None:
    oom = MarkerLine(10, "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
    snapshot = Snapshot(
        {
            "a": JobState("a", "bert", "Running", ("w0", "w1", "w2")),
            "b": JobState("b", "llama", "Abnormal", ("w0",)),
            "c": JobState("c", "yolo", "Completed", ("w0",)),
        },
        {
            ("a", "w0"): TaskState("a", "w0", exit_code=1.0, marker_lines={"cuda_oom": (oom,)}),
            ("a", "w1"): TaskState("a", "w1", exit_code=137.0),
            ("a", "w2"): TaskState("a", "w2", loss=2.0),
            ("b", "w0"): TaskState("b", "w0"),
            ("c", "w0"): TaskState("c", "w0", exit_code=0.0),
        },
    )
    assert _failure_lines(snapshot) == [
        'modelarts_task_failure_info{category="resource",reason="cuda_oom",task_id="w0",'
        'training_job_id="a"} 1.0',
        'modelarts_task_failure_info{category="killed",reason="sigkill",task_id="w1",'
        'training_job_id="a"} 1.0',
        'modelarts_task_failure_info{category="unknown",reason="unknown",task_id="w0",'
        'training_job_id="b"} 1.0',
    ]


def test_no_failure_no_family() -> None:
    snapshot = Snapshot(
        {"c": JobState("c", "yolo", "Completed", ("w0",))},
        {("c", "w0"): TaskState("c", "w0", exit_code=0.0)},
    )
    assert _failure_lines(snapshot) == []


def test_analyze_prints_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "analyze",
        str(FIXTURES / "bus_error_shm.log"),
        str(FIXTURES / "successful_with_warnings.log"),
    )
    assert code == 0
    assert (
        'modelarts_task_failure_info{category="resource",reason="bus_error",'
        'task_id="bus_error_shm.log",training_job_id="local"} 1.0'
    ) in out
    assert 'task_id="successful_with_warnings.log"' in out
    assert "successful_with_warnings.log" not in "".join(
        line for line in out.splitlines() if line.startswith("modelarts_task_failure_info")
    )


# --- --web.external-url ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://monitor.example.com/modelarts/", "https://monitor.example.com/modelarts"),
        ("http://10.0.0.5:9958", "http://10.0.0.5:9958"),
    ],
)
def test_external_url_in_the_config(tmp_path: Path, url: str, kept: str) -> None:
    path = tmp_path / "cfg.yml"
    path.write_text(GOOD + f"web: {{external_url: '{url}'}}\n")
    assert load_config(path).web.external_url == kept


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("monitor.example.com", "absolute http:// or https:// URL"),
        ("ftp://monitor.example.com/", "absolute http:// or https:// URL"),
        ("https:///path", "absolute http:// or https:// URL"),
        ("https://monitor.example.com/?a=b", "query or a fragment"),
    ],
)
def test_bad_external_urls(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    reason: str,
) -> None:
    path = tmp_path / "cfg.yml"
    path.write_text(GOOD + f"web: {{external_url: '{url}'}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: web.external_url: ")
    assert reason in problem
    monkeypatch.setenv("MODELARTS_AUTH_TOKEN", "t")
    path.write_text(GOOD)
    code, _, err = run(capsys, "serve", "--config.file", str(path), "--web.external-url", url)
    assert code == 2
    assert err.startswith("--web.external-url: ")
    assert reason in err
    code, _, err = run(capsys, "demo", "--web.external-url", url)
    assert code == 2
    assert err.startswith("--web.external-url: ")


def test_the_default_external_url_follows_the_listen_address(tmp_path: Path) -> None:
    def external(listen: str, **web: str) -> str:
        config = default_config(
            "http://127.0.0.1:1",
            "0123456789abcdef0123456789abcdef",
            state={"path": str(tmp_path / "state.db")},
            web={"listen_address": listen, **web},
        )
        exporter = Exporter(config, Credentials("token", "test", token="t0ken"))
        try:
            return exporter.external_url
        finally:
            exporter.stop()

    loopback = external("127.0.0.1:0")
    assert loopback.startswith("http://127.0.0.1:")
    assert int(loopback.rsplit(":", 1)[1]) > 0  # the port bound, not 0
    everywhere = external(":0")
    assert everywhere.startswith(f"http://{socket.gethostname()}:")
    given = external("127.0.0.1:0", external_url="https://exporter.example.com/x/")
    assert given == "https://exporter.example.com/x"


def test_a_reload_keeps_the_external_url_until_a_restart(tmp_path: Path) -> None:
    """The alerts' links come from the URL exported at start: a reload says it needs a
    restart and keeps the old one."""
    path = tmp_path / "cfg.yml"
    path.write_text(GOOD + "web: {external_url: 'https://old.example.com'}\n")
    old = load_config(path)
    path.write_text(GOOD + "web: {external_url: 'https://new.example.com'}\n")
    new = load_config(path)
    assert changed_keys(old, new) == ["web.external_url"]
    assert restart_only("web.external_url")
    assert keep_restart_only(old, new).web.external_url == "https://old.example.com"
