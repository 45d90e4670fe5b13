"""``analyze`` streamed (analyze.py), its progress bar and its formats (report.py).

The streamed result is compared with one scan of the whole file by the same rules: the
blocks of every size must add up to it, whatever they cut (lines, ``\\r\\n``, multi-byte
characters, invalid UTF-8), and each marker's first line with a scan of each line alone.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import re
import sys
from pathlib import Path

import pytest

from modelarts_exporter.analyze import BLOCK_BYTES, LogSource, Progress, analyze_log
from modelarts_exporter.cli import main
from modelarts_exporter.report import number as shown_number
from modelarts_exporter.rules import RuleSet, load_rules
from modelarts_exporter.store import LOSS_VALUES_COUNT, LOSS_VALUES_SUM


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    """``main`` sets up the root logger; give the next test the one it had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


WORD_RULE = """
rules:
  - name: test_started_words
    kind: counter
    metric: modelarts_task_test_started_words
    pattern: '(?P<word>\\S+) 训练开始'
    labels: [word]
    examples:
      - line: '中文日志 训练开始'
        labels: {word: '中文日志'}
"""
"""A rule whose label is multi-byte text: a character cut between two blocks would show."""


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    path = tmp_path_factory.mktemp("rules") / "words.yml"
    path.write_text(WORD_RULE, encoding="utf-8")
    return RuleSet(load_rules([path]))


def _log() -> bytes:
    """A log of many formats: CRLF and CR endings, colour, multi-byte and invalid UTF-8,
    a Keras epoch header the next lines take their epoch from, markers, an exit code, and
    an unfinished last line."""
    parts = []
    for epoch in range(1, 4):
        parts += [
            f"Epoch {epoch}/3\n",
            f"  {epoch * 10}/100 [=>....] - ETA: 3:12 - loss: 0.{epoch}5 - accuracy: 0.61\r\n",
            "中文日志 训练开始 😀 ████ — été\r\n",
            "Map:  10%|█         | 10/100 [00:01<00:09]\rMap:  50%|█████     | 50/100\r",
            "Map: 100%|██████████| 100/100 [00:02<00:00]\n",
            f"\x1b[32m2025-03-18 10:0{epoch}:00\x1b[0m | INFO | step {epoch * 100} done\r\n",
            f"{{'loss': {epoch}.25, 'grad_norm': 1.0, 'epoch': {epoch}.5}}\n",
        ]
        if epoch == 2:
            parts += [
                "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\r\n",
                "node03:27106:27302 [0] include/shm.h:27 NCCL WARN Call to shm_open failed\n",
                "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, "
                "reducing to 32768\n",
            ]
    parts += [
        "Traceback (most recent call last):\n",
        '  File "train.py", line 5, in <module>\n',
        "[Modelarts Service Log]exit with 3\r\n",
    ]
    text = "".join(parts).encode()
    # Invalid UTF-8 (a GBK console) in the middle of a line, and an unfinished last line.
    return (
        text + b"gbk \xc4\xe3\xba\xc3 \xff loss: 0.5 marker\r\nthe last line, unfinished \xe2\x96"
    )


def _lines(data: bytes) -> list[bytes]:
    """The log's lines as the exporter cuts them: at \\r\\n, \\r and \\n."""
    lines = re.split(rb"\r\n|\r|\n", data)
    return lines[:-1] if lines and lines[-1] == b"" else lines


def _analyze(rules: RuleSet, data: bytes, block: int) -> object:
    source = LogSource("worker-0.log", io.BytesIO(data), block_bytes=block)
    return analyze_log(source, "worker-0.log", rules, now=1.0)


@pytest.mark.parametrize("block", [1, 2, 3, 5, 16, 100, 4096, BLOCK_BYTES])
def test_streamed_analyze_equals_one_scan_of_the_whole_file(rules: RuleSet, block: int) -> None:
    data = _log()
    text = data.decode("utf-8", "replace").encode()  # what ModelArts would show
    whole = rules.scan(text)
    report = _analyze(rules, data, block)
    task = report.task  # type: ignore[attr-defined]
    assert whole.errors  # the log holds what the test compares
    assert whole.warnings
    assert whole.loss is not None
    assert dict(task.errors) == {k: float(v) for k, v in whole.errors.items()}
    assert dict(task.warnings) == {k: float(v) for k, v in whole.warnings.items()}
    assert task.exit_code == whole.exit_code == 3.0
    counters = dict(task.counters)
    # Every training loss printed, counted once: the same lines, the same sum.
    assert counters.pop(LOSS_VALUES_COUNT)[0] == whole.loss_count > 0
    assert math.isclose(counters.pop(LOSS_VALUES_SUM)[0], whole.loss_sum)
    assert counters == whole.counters
    assert list(whole.counters.values()) == [(3.0, "test_started_words")]
    assert dict(task.gauges) == whole.gauges
    assert (task.loss, task.step, task.epoch) == (
        whole.loss.value,
        whole.loss.step,
        whole.loss.epoch,
    )
    assert task.lines == len(_lines(data))
    assert task.processed_bytes == task.log_size == len(data)
    # Each marker's first line: the first line (the rules' lines end at \r too) that,
    # scanned alone, raises it, numbered as grep -n numbers lines (each \n ends one).
    first: dict[tuple[str, str], int] = {}
    for piece in re.finditer(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", text):
        alone = rules.scan(piece.group().rstrip(b"\r\n"))
        number = text.count(b"\n", 0, piece.start()) + 1
        for severity, found in (("error", alone.errors), ("warning", alone.warnings)):
            for marker in found:
                first.setdefault((severity, marker), number)
    assert report.first_lines == first  # type: ignore[attr-defined]


def test_reads_never_hold_more_than_a_block(rules: RuleSet) -> None:
    sizes: list[int] = []

    class Recording(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            sizes.append(len(data))
            return data

    data = _log() * 50
    source = LogSource("x", Recording(data), block_bytes=1000)
    report = analyze_log(source, "x", rules, now=1.0)
    assert max(sizes) == 1000
    assert sum(sizes) == len(data)
    assert report.task.processed_bytes == len(data)


def test_gzip_members_are_read_one_after_another(rules: RuleSet) -> None:
    data = _log()
    packed = gzip.compress(data[:700]) + gzip.compress(data[700:]) + b"\0" * 10
    source = LogSource("x.gz", io.BytesIO(packed), block_bytes=64)
    assert b"".join(source.blocks()) == data


@pytest.mark.parametrize(
    ("packed", "problem"),
    [
        (gzip.compress(b"x\n" * 1000)[:-12], "ends early"),
        (gzip.compress(b"x\n") + b"trailing junk", "not a valid gzip file"),
        (b"\x1f\x8b" + b"\0" * 30, "not a valid gzip file"),
    ],
)
def test_a_broken_gzip_stream_is_a_value_error(packed: bytes, problem: str) -> None:
    source = LogSource("x.gz", io.BytesIO(packed), block_bytes=64)
    with pytest.raises(ValueError, match=problem):
        b"".join(source.blocks())


def test_the_progress_bar_waits_then_shows_bytes_rate_and_time_left() -> None:
    now = [0.0]
    out = io.StringIO()
    bar = Progress(200_000_000, enabled=True, delay=1.0, clock=lambda: now[0], stream=out)
    bar.update(10_000_000, "worker-0.log")
    assert out.getvalue() == ""  # not yet: short work shows nothing
    now[0] = 1.5
    bar.update(50_000_000, "worker-0.log")
    shown = out.getvalue()
    assert "worker-0.log" in shown
    assert "50.0MB/200MB" in shown
    assert "B/s" in shown
    assert "<" in shown  # elapsed<remaining: the ETA
    bar.close()


def test_no_progress_bar_when_stderr_is_not_a_terminal() -> None:
    bar = Progress(10, enabled=False, delay=0.0, clock=lambda: 5.0)
    bar.update(5, "x")
    assert bar.bar is None


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_prints_nothing_on_stderr_when_it_is_captured(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "worker-0.log"
    log.write_bytes(_log() * 200)
    monkeypatch.setattr("modelarts_exporter.analyze.BLOCK_BYTES", 4096)
    code, out, err = run(capsys, "analyze", str(log))
    assert code == 0
    assert err == ""
    assert "modelarts_task_exit_code" in out


GAUGE_RULE = """
rules:
  - name: test_tokens_per_second
    kind: gauge
    metric: modelarts_task_test_tokens_per_second
    help: A value the formatter has never heard of.
    pattern: 'throughput: (?P<value>{NUM}) tokens/s'
    examples:
      - line: 'throughput: 3010.5 tokens/s'
        value: 3010.5
"""


def _two_logs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "rules.yml").write_text(GAUGE_RULE)
    ok = tmp_path / "worker-0.log"
    ok.write_bytes(
        b"step 1\n"
        b"throughput: 3010.5 tokens/s\n"
        b"{'loss': 0.25, 'epoch': 1.0}\n"
        b"OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing to 32768\n"
        b"[Modelarts Service Log]Training end with return code: 0\n"
    )
    nan = tmp_path / "worker-1.log"
    nan.write_bytes(
        b"line one\n"
        b"{'loss': nan, 'grad_norm': nan, 'epoch': 0.5}\r\n"
        b"Traceback (most recent call last):\n"
        b"RuntimeError: CUDA out of memory. Tried to allocate 1 GiB\n"
        b"[Modelarts Service Log]exit with 1\n"
    )
    return ok, nan


def test_summary_is_one_readable_block_per_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ok, nan = _two_logs(tmp_path)
    rules = str(tmp_path / "rules.yml")
    code, out, err = run(
        capsys, "analyze", "--rules", rules, "--format", "summary", str(ok), str(nan)
    )
    assert code == 0, err
    first, second = out.split("\n\n")
    assert first.splitlines()[0] == str(ok)
    rows = {
        " ".join(line.split()[:-1]): line.split()[-1]
        for line in first.splitlines()[1:]
        if not line.startswith("  warnings") and not line.startswith("  errors")
    }
    assert rows["exit code"] == "0"
    assert rows["loss"] == "0.25"
    assert rows["epoch"] == "1"
    assert rows["log lines"] == "5"
    assert rows["test tokens per second"] == "3,010.5"  # a rule's gauge, with no code for it
    assert "errors: none" in first
    assert re.search(r"loss_scale_overflow\s+1\s+line 4\b", first)
    # The first lines of the second file: the traceback on line 3, the OOM on line 4.
    assert re.search(r"python_traceback\s+1\s+line 3\b", second)
    assert re.search(r"cuda_oom\s+1\s+line 4\b", second)
    assert re.search(r"nan_loss\s+1\s+line 2\b", second)
    assert re.search(r"loss\s+NaN", second)
    # What the exporter derives shows up too, with no code for it here: the diagnosis.
    assert re.search(r"\n  failure\s+reason=\w+, category=\w+\n", second)
    assert "failure" not in first  # exit code 0


def test_json_has_the_documented_shape(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ok, nan = _two_logs(tmp_path)
    rules = str(tmp_path / "rules.yml")
    code, out, err = run(capsys, "analyze", "--rules", rules, "--format", "json", str(ok), str(nan))
    assert code == 0, err
    doc = json.loads(out)
    one, two = doc["files"]
    assert (one["file"], one["task_id"]) == (str(ok), "worker-0.log")
    assert one["metrics"]["modelarts_task_exit_code"] == 0
    assert one["metrics"]["modelarts_task_loss"] == 0.25
    assert one["metrics"]["modelarts_task_log_lines_total"] == 5
    assert one["metrics"]["modelarts_task_test_tokens_per_second"] == 3010.5
    assert one["markers"] == [
        {"severity": "warning", "marker": "loss_scale_overflow", "count": 1, "first_line": 4}
    ]
    assert two["metrics"]["modelarts_task_loss"] == "NaN"
    assert two["metrics"]["modelarts_task_exit_code"] == 1
    firsts = {m["marker"]: m["first_line"] for m in two["markers"]}
    assert firsts["cuda_oom"] == 4
    assert firsts["python_traceback"] == 3
    assert all(isinstance(s["labels"], dict) for s in one["series"] + two["series"])


def test_json_leaves_out_what_only_a_poll_can_say(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ok, _ = _two_logs(tmp_path)
    code, out, err = run(capsys, "analyze", "--format", "json", str(ok))
    assert code == 0, err
    (one,) = json.loads(out)["files"]
    assert "modelarts_task_up" not in one["metrics"]
    assert "modelarts_task_last_log_growth_timestamp_seconds" not in one["metrics"]
    assert one["possible_failure"] is None  # exit code 0 printed


def _cut_before_the_exit_code(tmp_path: Path) -> Path:
    """A log downloaded from a failed job: it ends before any exit code."""
    log = tmp_path / "worker-0.log"
    log.write_bytes(
        b"step 3 | loss 2.5\n"
        b"Traceback (most recent call last):\n"
        b'  File "train.py", line 9, in <module>\n'
        b"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    )
    return log


def test_a_log_without_exit_code_shows_its_possible_failure(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = _cut_before_the_exit_code(tmp_path)
    code, out, _ = run(capsys, "analyze", "--format", "summary", str(log))
    assert code == 0
    assert re.search(r"\n  possible failure\s+cuda_oom \(no exit code printed; --failed", out)
    assert "failure_info" not in run(capsys, "analyze", str(log))[1]
    code, out, _ = run(capsys, "analyze", "--format", "json", str(log))
    assert json.loads(out)["files"][0]["possible_failure"] == "cuda_oom"


def test_failed_gives_the_reason_as_the_exporter_does_for_a_failed_job(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = _cut_before_the_exit_code(tmp_path)
    code, out, _ = run(capsys, "analyze", "--failed", str(log))
    assert code == 0
    assert re.search(r'modelarts_task_failure_info\{[^}]*reason="cuda_oom"', out)
    code, out, _ = run(capsys, "analyze", "--failed", "--format", "summary", str(log))
    assert re.search(r"\n  failure\s+reason=cuda_oom, category=resource\n", out)
    assert "possible failure" not in out
    # a task that printed exit code 0 did not fail with its job
    ok, _ = _two_logs(tmp_path)
    code, out, _ = run(capsys, "analyze", "--failed", str(ok))
    assert "failure_info{" not in out


def test_prometheus_stays_the_default(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ok, _ = _two_logs(tmp_path)
    code, default, _ = run(capsys, "analyze", str(ok))
    code, explicit, _ = run(capsys, "analyze", "--format", "prometheus", str(ok))
    assert code == 0

    def timeless(text: str) -> list[str]:
        return [line for line in text.splitlines() if "growth_timestamp" not in line]

    assert timeless(default) == timeless(explicit)
    assert default.startswith("# HELP modelarts_task_log_size_bytes")


def test_stdin_is_streamed_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _log()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, _ = run(capsys, "analyze", "--format", "json", "-")
    assert code == 0
    (only,) = json.loads(out)["files"]
    assert only["task_id"] == "stdin"
    assert only["metrics"]["modelarts_task_exit_code"] == 3
    assert only["metrics"]["modelarts_task_log_size_bytes"] == len(data)
    assert not math.isnan(only["metrics"]["modelarts_task_loss"])


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (3010.0, "3,010"),
        (2990.5, "2,990.5"),
        (4.197100000000001, "4.1971"),
        (3e-05, "3e-05"),
        (1.9930761604682383e-05, "1.99307616047e-05"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Inf"),
    ],
)
def test_numbers_for_a_person(value: float, shown: str) -> None:
    assert shown_number(value) == shown


def test_a_file_that_cannot_be_read_does_not_stop_the_others(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ok, _ = _two_logs(tmp_path)
    missing = tmp_path / "nope.log"
    code, out, err = run(capsys, "analyze", "--format", "summary", str(missing), str(ok))
    assert code == 2
    assert out.startswith(str(ok))
    assert err == f"analyze: {missing}: No such file or directory\n"
    code, out, err = run(capsys, "analyze", str(missing))
    assert (code, out) == (2, "")
