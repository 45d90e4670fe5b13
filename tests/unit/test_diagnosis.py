"""Failure diagnosis: root cause, category, remedy and evidence of a failed task.

The logs in tests/fixtures/diagnosis/ were written for these tests in the formats of
LOG_FORMATS.md (torchrun, ModelArts platform lines, HF Trainer, Megatron, torch_npu,
MindFormers, Slurm ...); each expected reason below was decided from the log's story (what
failed first and what followed from it), not from the program's output.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from contract import ERROR_MARKERS

from modelarts_exporter.diagnosis import (
    CATEGORIES,
    EXPLAINED_BY,
    REASONS,
    SPECIFICITY,
    diagnose,
    explain,
)
from modelarts_exporter.evidence import LINE_CHARS, MarkerLine, clean_line, redact_line
from modelarts_exporter.modelarts.types import LogPreview
from modelarts_exporter.pipeline import Limits, apply_preview
from modelarts_exporter.rules import RuleSet, load_rules
from modelarts_exporter.store import JobState, Store, TaskState, decode_task, encode_task

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "diagnosis"

VOCABULARY_ERRORS = ERROR_MARKERS
"""CONTRACT.md's error markers."""

# log -> (reason, category, a piece of the first evidence line)
FAILING = {
    "cuda_oom_torchrun.log": ("cuda_oom", "resource", "Tried to allocate 4.00 GiB"),
    "npu_oom_torch_npu.log": ("npu_oom", "resource", "NPU out of memory. Tried to allocate"),
    "nccl_timeout_peer_vanished.log": (
        "nccl_timeout",
        "communication",
        "Watchdog caught collective operation timeout",
    ),
    "hccl_timeout_ascend.log": ("hccl_timeout", "communication", "EI0002"),
    "nan_loss_then_valueerror.log": ("nan_loss", "numerics", "'loss': nan"),
    "sigkill_137.log": ("sigkill", "killed", "return code: 137"),
    "host_oom_slurm.log": ("host_oom", "resource", "oom-kill event"),
    "bus_error_shm.log": ("bus_error", "resource", "insufficient shared memory"),
    "segfault_native.log": ("segfault", "code", "Segmentation fault"),
    "missing_module.log": ("python_exception", "code", "No module named 'apex'"),
    "cuda_illegal_memory_then_nccl.log": ("cuda_error", "code", "illegal memory access"),
    "cuda_device_assert.log": ("cuda_error", "code", "device-side assert triggered"),
    "cuda_ecc.log": ("cuda_error", "hardware", "uncorrectable ECC error"),
    "keyerror_rank1_then_timeout.log": ("python_exception", "code", "KeyError: 'input_ids'"),
    "exit_code_only.log": ("unknown", "unknown", "exit with 2"),
}
SUCCESSFUL = ("successful_with_warnings.log", "successful_retry_warning.log")


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet(load_rules())


def poll(
    rules: RuleSet, task: TaskState, log: bytes, *, now: float = 1.0, final: bool = True
) -> TaskState:
    """One preview of the whole ``log``, then a save and load of the state."""
    preview = LogPreview(log.decode("utf-8", "replace"), len(log), len(log))
    new, _ = apply_preview(task, preview, rules, final=final, now=now, limits=Limits())
    return decode_task(encode_task(new))


def test_the_fixtures_are_all_scored() -> None:
    assert {p.name for p in FIXTURES.glob("*.log")} == set(FAILING) | set(SUCCESSFUL)


@pytest.mark.parametrize("name", sorted(FAILING))
def test_failing_logs_give_their_root_cause(rules: RuleSet, name: str) -> None:
    reason, category, shown = FAILING[name]
    task = poll(rules, TaskState("j", "t"), (FIXTURES / name).read_bytes())
    found = explain(task)
    assert (found.reason, found.category) == (reason, category)
    assert found.remedy == REASONS[reason].remedy
    assert found.evidence, "a failed task shows at least one line"
    assert shown in found.evidence[0].text
    assert len(found.evidence) <= 4
    assert all(len(line.text) <= LINE_CHARS for line in found.evidence)


@pytest.mark.parametrize("name", sorted(FAILING))
def test_a_failed_job_is_diagnosed_even_without_an_exit_code(rules: RuleSet, name: str) -> None:
    task = poll(rules, TaskState("j", "t"), (FIXTURES / name).read_bytes())
    for phase in ("Failed", "Abnormal"):
        found = diagnose(replace(task, exit_code=None), phase)
        assert found is not None
        assert found.reason == explain(task).reason or found.reason == "unknown"
    assert diagnose(replace(task, exit_code=None), "Completed") is None


@pytest.mark.parametrize("name", SUCCESSFUL)
def test_successful_runs_with_warnings_give_no_diagnosis(rules: RuleSet, name: str) -> None:
    task = poll(rules, TaskState("j", "t"), (FIXTURES / name).read_bytes())
    assert task.exit_code == 0
    for phase in ("Running", "Completed", "Terminated", None):
        assert diagnose(task, phase) is None


def test_the_nan_stop_shows_the_nan_and_then_the_exception(rules: RuleSet) -> None:
    task = poll(
        rules, TaskState("j", "t"), (FIXTURES / "nan_loss_then_valueerror.log").read_bytes()
    )
    texts = [line.text for line in explain(task).evidence]
    assert "'loss': nan" in texts[0]
    assert any("ValueError: training diverged" in text for text in texts[1:])
    assert "exit with 1" in texts[-1]


def test_the_launchers_wrapper_is_never_the_cause(rules: RuleSet) -> None:
    log = (FIXTURES / "cuda_oom_torchrun.log").read_bytes()
    task = poll(rules, TaskState("j", "t"), log)
    assert "ChildFailedError" in task.marker_lines["python_exception"][-1].text
    without_oom = {k: v for k, v in task.marker_lines.items() if k != "cuda_oom"}
    # The OOM's own exception line is a python_exception too: without the OOM marker it is
    # the cause, and still not the wrapper that comes after it.
    found = explain(replace(task, marker_lines=without_oom))
    assert found.reason == "python_exception"
    assert "OutOfMemoryError" in found.evidence[0].text


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (137, "sigkill"),
        (-9, "sigkill"),
        (247, "sigkill"),
        (139, "segfault"),
        (-11, "segfault"),
        (134, "abort"),
        (-6, "abort"),
        (135, "bus_error"),
        (-7, "bus_error"),
        (1, "unknown"),
        (143, "unknown"),
        (3221226505, "unknown"),
    ],
)
def test_exit_codes_without_markers_map_by_meaning(code: int, reason: str) -> None:
    task = TaskState("j", "t", exit_code=float(code))
    found = diagnose(task, "Running")
    assert found is not None
    assert found.reason == reason
    assert found.evidence == ()


def test_exit_code_zero_and_running_jobs_are_not_failures() -> None:
    """A task that printed exit code 0 did not fail, even when its job (another task)
    did; a task of a failed job that printed no exit code did."""
    assert diagnose(TaskState("j", "t", exit_code=0.0), "Failed") is None
    assert diagnose(TaskState("j", "t", exit_code=0.0), "Completed") is None
    assert diagnose(TaskState("j", "t"), "Running") is None
    assert diagnose(TaskState("j", "t"), "Abnormal") is not None


def test_a_later_consequence_never_replaces_the_earlier_cause_across_polls(
    rules: RuleSet,
) -> None:
    """The order of first occurrence survives polls and restarts: a KeyError seen in one
    poll stays the cause when a later poll brings the peers' NCCL timeout."""
    first = b"step 10 loss 4.0\n[rank1]: KeyError: 'input_ids'\n"
    second = first + (
        b"[rank0]:[E203 15:10:44 ProcessGroupNCCL.cpp:607] [Rank 0] Watchdog caught "
        b"collective operation timeout: WorkNCCL(SeqNum=12) ran for 600012 milliseconds\n"
        b"[Modelarts Service Log]exit with 1\n"
    )
    task = poll(rules, TaskState("j", "t"), first, now=100.0, final=False)
    task = poll(rules, task, second, now=130.0)
    found = explain(task)
    assert found.reason == "python_exception"
    assert found.evidence[0].seen_at == 100.0
    assert "Watchdog caught collective" in found.evidence[1].text
    assert found.evidence[1].seen_at == 130.0


def test_a_cause_printed_after_its_consequence_still_wins(rules: RuleSet) -> None:
    """Another rank may print the CUDA fault after the NCCL error it caused."""
    log = (FIXTURES / "cuda_illegal_memory_then_nccl.log").read_bytes()
    task = poll(rules, TaskState("j", "t"), log)
    assert task.marker_lines["nccl_error"][0].position < task.marker_lines["cuda_error"][0].position
    assert explain(task).reason == "cuda_error"


def test_a_launcher_ending_the_other_workers_is_not_the_cause(rules: RuleSet) -> None:
    """srun kills the other tasks once one has failed: the kills follow the cause."""
    log = (
        b"step 40 | loss 0.71\n"
        b"srun: error: gpu-7: task 2: Exited with exit code 3\n"
        b"slurmstepd: error: *** STEP 1234.0 ON gpu-7 CANCELLED AT 2024-02-01T10:00:00 ***\n"
        b"srun: error: gpu-7: tasks 0-1,3: Killed\n"
    )
    failed = explain(poll(rules, TaskState("j", "t"), log))
    assert (failed.reason, failed.exit_code) == ("unknown", 3)
    # killed first, or by the OOM killer's own code: the kill is the cause
    killed = log.replace(b"Exited with exit code 3", b"Exited with exit code 137")
    assert explain(poll(rules, TaskState("j", "t"), killed)).reason == "sigkill"
    first = (
        b"srun: error: gpu-7: tasks 0-1,3: Killed\n"
        b"srun: error: gpu-7: task 2: Exited with exit code 3\n"
    )
    assert explain(poll(rules, TaskState("j", "t"), first)).reason == "sigkill"
    # any other exit status before a kill leaves the kill the cause
    other = (
        b"subprocess.CalledProcessError: Command 'git rev-parse HEAD' returned non-zero "
        b"exit status 128.\n"
        b"step 40 | loss 0.71\n"
        b"/var/spool/slurmd/job00191/slurm_script: line 28:  8156 Killed  python3 train.py\n"
    )
    assert explain(poll(rules, TaskState("j", "t"), other)).reason == "sigkill"


def test_a_reset_starts_a_new_run_with_its_own_cause(rules: RuleSet) -> None:
    task = poll(rules, TaskState("j", "t"), (FIXTURES / "cuda_oom_torchrun.log").read_bytes())
    assert explain(task).reason == "cuda_oom"
    task = poll(rules, task, (FIXTURES / "missing_module.log").read_bytes())
    assert task.resets == 1
    assert "cuda_oom" not in task.marker_lines
    assert explain(task).reason == "python_exception"


def test_the_step_of_the_failure_is_kept(rules: RuleSet) -> None:
    log = b"step 100 loss 2.5\nstep 110 loss 2.4\n"
    task = poll(rules, TaskState("j", "t"), log, final=False)
    task = poll(rules, task, log + b"Segmentation fault (core dumped)\n")
    assert explain(task).step == 110


def test_evidence_survives_a_restart_of_the_exporter(rules: RuleSet, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.open()
    store.put_job(JobState("j", "bert", "Failed", ("t",)))
    task = poll(rules, TaskState("j", "t"), (FIXTURES / "cuda_oom_torchrun.log").read_bytes())
    store.commit(task)
    store.close()
    again = Store(path)
    again.open()
    loaded = again.task("j", "t")
    again.close()
    assert loaded.marker_lines == task.marker_lines
    assert loaded.exit_line == task.exit_line
    assert explain(loaded) == explain(task)


def test_a_state_file_of_the_previous_release_loads_and_is_diagnosed(tmp_path: Path) -> None:
    """Rows written before evidence was kept lack its keys: they load (schema version 1
    unchanged), and the counted markers still give a cause, in order of specificity."""
    path = tmp_path / "state.db"
    store = Store(path)
    store.open()
    store.put_job(JobState("j", "bert", "Failed", ("t",)))
    store.commit(TaskState("j", "t", errors={"python_exception": 2.0, "cuda_oom": 1.0}))
    store.close()
    with sqlite3.connect(path) as db:
        (data,) = db.execute("SELECT data FROM tasks").fetchone()
        row = json.loads(data)
        del row["marker_lines"], row["exit_line"]
        db.execute("UPDATE tasks SET data=?", (json.dumps(row),))
        assert db.execute("SELECT value FROM meta").fetchone() == ("1",)
    again = Store(path)
    again.open()
    task = again.task("j", "t")
    again.close()
    assert task.errors["cuda_oom"] == 1.0
    assert task.marker_lines == {}
    found = diagnose(task, "Failed")
    assert found is not None
    assert found.reason == "cuda_oom"


def test_evidence_lines_are_redacted_and_capped(rules: RuleSet) -> None:
    secret = "Q" * 40
    log = (
        f"Traceback (most recent call last):\n"
        f"ValueError: bad credentials password={'p4ssw0rd'} token: abc.def.ghi sk={secret} "
        f"url https://user:hunter22@obs.example.com/bucket " + "x" * 2000 + "\n"
    ).encode()
    preview = LogPreview(log.decode(), len(log), len(log))
    task, _ = apply_preview(
        TaskState("j", "t"),
        preview,
        rules,
        final=True,
        now=1.0,
        limits=Limits(),
        secrets=(secret,),
    )
    text = explain(task).evidence[0].text
    for leaked in ("p4ssw0rd", "abc.def.ghi", secret, "hunter22"):
        assert leaked not in text
        assert leaked not in encode_task(task)
    assert text.startswith("ValueError: bad credentials password=<redacted>")
    assert len(text) == LINE_CHARS
    assert text.endswith("…")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "Authorization: Bearer <redacted>"),
        ("curl -H 'X-Auth-Token: MIIabc123'", "curl -H 'X-Auth-Token: <redacted>'"),
        ("secret_access_key = 'abcd1234'", "secret_access_key = '<redacted>'"),
        ("loss: 0.5 tokens: 2048", "loss: 0.5 tokens: 2048"),
        ("RuntimeError: CUDA out of memory", "RuntimeError: CUDA out of memory"),
    ],
)
def test_secret_looking_values_are_redacted(line: str, expected: str) -> None:
    assert redact_line(line) == expected


def test_control_characters_never_reach_a_kept_line() -> None:
    assert clean_line("a\x1b[31mb\x07c\u2028d") == "a [31mb c d"


def test_the_tables_cover_the_vocabulary() -> None:
    """Every reason is a marker of the vocabulary (or unknown) with a category of the
    closed set; every fatal marker is either a possible cause or a messenger."""
    assert set(REASONS) - {"unknown"} <= VOCABULARY_ERRORS
    assert {r.category for r in REASONS.values()} <= set(CATEGORIES)
    assert set(SPECIFICITY) == set(REASONS) - {"unknown"}
    assert VOCABULARY_ERRORS - set(SPECIFICITY) == {
        "python_traceback",
        "child_failed",
        "training_failed",
    }
    for consequence, causes in EXPLAINED_BY.items():
        assert consequence in SPECIFICITY
        assert set(causes) <= set(SPECIFICITY)
        assert consequence not in causes
    assert all(len(r.remedy) <= 400 for r in REASONS.values())


def test_kept_lines_are_bounded_per_marker(rules: RuleSet) -> None:
    log = b"".join(b"NCCL WARN rank %d: connection closed\n" % n for n in range(50))
    task = poll(rules, TaskState("j", "t"), log)
    assert [line.text for line in task.marker_lines["nccl_error"]] == [
        f"NCCL WARN rank {n}: connection closed" for n in range(3)
    ]
    assert task.errors["nccl_error"] == 50


def test_printed_time_of_a_line() -> None:
    line = MarkerLine(0, "[2026-02-03 10:14:02,114] [ERROR] boom")
    assert line.printed_time() == "2026-02-03 10:14:02,114"
    assert MarkerLine(0, "Segmentation fault").printed_time() is None
