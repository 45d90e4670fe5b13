"""One poll as a pure step: preview + state -> new state."""

from __future__ import annotations

from pathlib import Path

from modelarts_exporter.modelarts.types import LogPreview
from modelarts_exporter.pipeline import Limits, apply_preview
from modelarts_exporter.rules import RuleSet, load_rules
from modelarts_exporter.store import TaskState, decode_task, encode_task


def preview(log: bytes) -> LogPreview:
    return LogPreview(log.decode("utf-8", "replace"), len(log), len(log))


def poll(task: TaskState, log: bytes, rules: RuleSet, **kw: object) -> TaskState:
    limits = kw.pop("limits", Limits())
    new, _ = apply_preview(
        task, preview(log), rules, final=bool(kw.get("final")), now=1.0, limits=limits
    )  # type: ignore[arg-type]
    return decode_task(encode_task(new))  # as if the exporter restarted in between


def test_context_lines_carry_over_polls_and_restarts() -> None:
    rules = RuleSet(load_rules())
    log = b"Epoch 3/10\n"
    task = poll(TaskState("j", "t"), log, rules)
    log += b"  3/234 [.....] - ETA: 33:37:24 - loss: 0.4110\n"
    task = poll(task, log, rules)
    assert task.loss == 0.411
    assert task.epoch == 3.0


def test_a_reset_clears_the_old_logs_values() -> None:
    rules = RuleSet(load_rules())
    task = poll(TaskState("j", "t"), b"[Modelarts Service Log]exit with 1\n", rules)
    assert task.exit_code == 1.0
    task = poll(task, b"new run\n", rules)
    assert task.resets == 1.0
    assert task.exit_code is None


def test_custom_series_are_capped_per_rule(tmp_path: Path) -> None:
    (tmp_path / "custom.yml").write_text(
        "rules:\n"
        "  - name: per_rank\n"
        "    kind: counter\n"
        "    metric: modelarts_task_rank_lines_total\n"
        "    pattern: 'rank (?P<rank>\\d+) done'\n"
        "    labels: [rank]\n"
    )
    rules = RuleSet(load_rules([tmp_path / "custom.yml"]))
    log = b"".join(b"rank %d done\n" % (n % 5) for n in range(20))
    task, stats = apply_preview(
        TaskState("j", "t"),
        preview(log),
        rules,
        final=False,
        now=1.0,
        limits=Limits(max_series_per_rule=3),
    )
    assert len(task.counters) == 3
    assert sum(value for value, _ in task.counters.values()) == 12.0
    assert stats.series_dropped["per_rank"] == 2
