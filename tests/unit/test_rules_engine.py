"""The rule engine (modelarts_exporter.rules.engine), the loader (model.py) and normalize.py.

Rules here are small YAML files written per test, loaded without the shipped ones.
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelarts_exporter.cli import main
from modelarts_exporter.rules import RuleError, RuleSet, load_rules
from modelarts_exporter.rules import engine as engine_module
from modelarts_exporter.rules.engine import CHUNK_BYTES, label_value
from modelarts_exporter.rules.normalize import normalize, raw_offset


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def ruleset(tmp_path: Path, text: str, **options: int) -> RuleSet:
    path = write(tmp_path, "rules.yml", text)
    return RuleSet(load_rules([path], include_default=False), **options)


def problems(*paths: Path) -> list[str]:
    with pytest.raises(RuleError) as caught:
        load_rules(paths, include_default=False)
    return caught.value.problems


MARKERS = """
rules:
  - name: oom
    kind: error
    pattern: 'out of memory'
  - name: oom_alloc
    kind: error
    marker: oom
    pattern: 'alloc failed'
  - name: slow
    kind: warning
    pattern: 'slow step'
"""

LOSSES = """
rules:
  - name: first
    kind: loss
    pattern: 'A=(?P<value>{NUM})(?: s=(?P<step>\\d+))?'
  - name: second
    kind: loss
    pattern: 'B=(?P<value>{NUM})(?: e=(?P<epoch>\\d+))?'
"""


# --- chunks ---------------------------------------------------------------------------


def test_matches_at_the_edges_of_chunks_are_each_counted_once(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, MARKERS + LOSSES.replace("rules:\n", ""))
    head = b"out of memory at the very start\n"
    ends_at_boundary = b"alloc failed and out of memory A=1.5\n"
    starts_at_boundary = b"slow step A=2.5\n"
    straddles = b"slow step across A=2.7\n"
    huge = b"slow step " + b"y" * (2 * CHUNK_BYTES) + b" A=3.5\n"  # longer than a chunk
    last = b"out of memory A=4.5 s=9"  # no final newline

    def filler(size: int) -> bytes:
        return b"x" * (size - 1) + b"\n"

    block = head + filler(CHUNK_BYTES - len(head) - len(ends_at_boundary)) + ends_at_boundary
    assert len(block) == CHUNK_BYTES
    block += starts_at_boundary
    block += filler(2 * CHUNK_BYTES - 10 - len(block)) + straddles
    assert block.index(straddles) < 2 * CHUNK_BYTES < len(block)
    block += huge + last

    result = rules.scan(block)
    assert result.errors == {"oom": 3}
    assert result.warnings == {"slow": 3}
    assert result.loss is not None
    assert (result.loss.value, result.loss.step) == (4.5, 9.0)
    # A loss rule reads every line (each line's loss counts in loss_count/loss_sum), the
    # ones at and across chunk edges each once.
    assert result.rule_matches == {"oom": 3, "oom_alloc": 1, "slow": 3, "first": 5}
    assert result.loss_count == 5
    assert result.loss_sum == pytest.approx(1.5 + 2.5 + 2.7 + 3.5 + 4.5)
    before_last = rules.scan(block[: -len(last)])
    assert before_last.loss is not None
    assert before_last.loss.value == 3.5


def test_chunk_size_does_not_change_what_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = ruleset(tmp_path, MARKERS + LOSSES.replace("rules:\n", ""))
    block = b"".join(
        b"out of memory B=%d e=3\n" % n if n % 7 == 0 else b"slow step A=%d\n" % n
        for n in range(500)
    )
    expected = rules.scan(block)
    for size in (1, 16, 100, 4096):
        monkeypatch.setattr(engine_module, "CHUNK_BYTES", size)
        found = rules.scan(block)
        assert (found.errors, found.warnings, found.loss) == (
            expected.errors,
            expected.warnings,
            expected.loss,
        )
    assert expected.loss is not None
    assert expected.loss.value == 499


def test_the_first_lines_of_each_error_marker_are_kept_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across chunks and across the rules that feed one marker: the earliest lines, at most
    FIRST_LINES, each once, with their offsets; warnings keep none."""
    rules = ruleset(tmp_path, MARKERS)
    lines = [b"noise", b"slow step", b"alloc failed 1", b"x", b"out of memory 2"]
    lines += [b"alloc failed and out of memory 3", b"out of memory 4", b"alloc failed 5"]
    block = b"\n".join(lines) + b"\n"
    starts = [block.index(line + b"\n") for line in lines]
    for size in (1, 20, 4096):
        monkeypatch.setattr(engine_module, "CHUNK_BYTES", size)
        found = rules.scan(block)
        assert found.first_lines == {
            "oom": [
                (starts[2], "alloc failed 1"),
                (starts[4], "out of memory 2"),
                (starts[5], "alloc failed and out of memory 3"),
            ]
        }
        assert found.errors == {"oom": 5}


def test_the_exit_code_line_is_reported(tmp_path: Path) -> None:
    rules = ruleset(
        tmp_path,
        """
        rules:
          - name: code
            kind: exit_code
            pattern: 'exit with (?P<value>-?\\d+)'
        """,
    )
    found = rules.scan(b"exit with 3\nrestart\nexit with 1\ndone\n")
    assert found.exit_code == 1
    assert found.exit_code_line == (20, "exit with 1")


def test_the_prefilter_never_hides_a_match(tmp_path: Path) -> None:
    """The RE2 set only skips work: forcing every rule on every chunk finds the same."""

    shipped = load_rules()
    fast, slow = RuleSet(shipped), RuleSet(shipped)
    slow._set = lambda chunk: list(range(len(shipped)))
    fixtures = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
    block = b"".join(log.read_bytes() + b"\n" for log in sorted(fixtures.glob("*.log"))) * 20
    a, b = fast.scan(block), slow.scan(block)
    assert (a.errors, a.warnings, a.exit_code, a.rule_matches) == (
        b.errors,
        b.warnings,
        b.exit_code,
        b.rule_matches,
    )
    assert a.loss == b.loss or (a.loss and b.loss and math.isnan(a.loss.value))


# --- counting -------------------------------------------------------------------------


def test_a_marker_counts_each_line_once_whatever_feeds_it(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, MARKERS)
    result = rules.scan(
        b"out of memory, alloc failed, out of memory\n"  # two rules, one twice: 1
        b"alloc failed\n"
        b"nothing\n"
        b"out of memory\n"
    )
    assert result.errors == {"oom": 3}
    assert result.warnings == {}
    assert result.rule_matches == {"oom": 2, "oom_alloc": 2}


def test_the_last_line_wins_then_the_rule_loaded_first(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, LOSSES)
    result = rules.scan(b"A=1.0 s=1\nB=2.0 e=1\nnoise\n")
    assert result.loss is not None
    assert result.loss.value == 2.0
    both = rules.scan(b"B=2.0 e=1\nB=3.0 e=4 A=5.0 s=6\n")
    assert both.loss is not None
    assert (both.loss.value, both.loss.step, both.loss.epoch) == (5.0, 6.0, None)


def test_rule_order_across_files_follows_file_names(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", "rules:\n- {name: bee, kind: loss, pattern: 'v=(?P<value>\\d+)'}\n")
    write(tmp_path, "a.yml", "rules:\n- {name: ay, kind: loss, pattern: 'v=(?P<value>\\d)'}\n")
    rules = RuleSet(load_rules([tmp_path], include_default=False))
    result = rules.scan(b"v=42\n")
    assert [r.name for r in rules.rules] == ["ay", "bee"]
    assert result.loss is not None
    assert result.loss.value == 4


def test_exit_codes_nan_losses_and_unusable_values(tmp_path: Path) -> None:
    rules = ruleset(
        tmp_path,
        """
        rules:
          - name: code
            kind: exit_code
            pattern: 'exit (?P<value>\\S+)'
          - name: loss
            kind: loss
            pattern: 'loss (?P<value>{NUM})'
        """,
    )
    result = rules.scan(b"exit 3\nexit 2.5\nexit banana\nloss 0.5\nloss nan\n")
    assert result.exit_code == 3  # the later lines' values are unusable
    assert result.rule_failures == {"code": 2}
    assert result.loss is not None
    assert math.isnan(result.loss.value)


def test_counters_add_up_per_line_with_or_without_a_value(tmp_path: Path) -> None:
    rules = ruleset(
        tmp_path,
        """
        rules:
          - name: restarts
            kind: counter
            metric: modelarts_task_restarts_total
            pattern: 'restarting worker (?P<worker>\\d+)'
            labels: [worker]
          - name: tokens
            kind: counter
            metric: modelarts_task_tokens
            pattern: 'consumed (?P<value>{NUM}) tokens'
        """,
    )
    result = rules.scan(
        b"restarting worker 1\nrestarting worker 2\nrestarting worker 1\n"
        b"consumed 100 tokens\nconsumed 2.5e2 tokens\nconsumed -5 tokens\nconsumed nan tokens\n"
        b"consumed 1e309 tokens\nconsumed inf tokens\n"
    )
    assert result.counters == {
        ("modelarts_task_restarts", (("worker", "1"),)): (2.0, "restarts"),
        ("modelarts_task_restarts", (("worker", "2"),)): (1.0, "restarts"),
        ("modelarts_task_tokens", ()): (350.0, "tokens"),
    }
    # a counter never goes down, and never grows by infinity (1e309 is inf as a float)
    assert result.rule_failures == {"tokens": 4}


def test_gauges_keep_the_last_value_per_label_set(tmp_path: Path) -> None:
    rules = ruleset(
        tmp_path,
        """
        rules:
          - name: throughput
            kind: gauge
            metric: modelarts_task_rank_tokens_per_second
            pattern: 'rank (?P<rank>\\d+) tokens/s: (?P<value>{NUM})'
            labels: [rank]
        """,
    )
    result = rules.scan(b"rank 0 tokens/s: 10\nrank 1 tokens/s: 20\nrank 0 tokens/s: 30\n")
    assert result.gauges == {
        ("modelarts_task_rank_tokens_per_second", (("rank", "0"),)): (30.0, "throughput"),
        ("modelarts_task_rank_tokens_per_second", (("rank", "1"),)): (20.0, "throughput"),
    }


def test_label_values_are_capped_and_cleaned(tmp_path: Path) -> None:
    rules = ruleset(
        tmp_path,
        """
        rules:
          - name: phase
            kind: gauge
            metric: modelarts_task_phase_seconds
            pattern: 'phase (?P<name>.+) took (?P<value>{NUM})'
            labels: [name]
        """,
        label_value_max_length=8,
    )
    result = rules.scan(b"phase a\x07b\x00c took 1\nphase abcdefghijkl took 2\n")
    labels = sorted(dict(key[1])["name"] for key in result.gauges)
    assert labels == ["abc", "abcdefg…"]
    assert label_value("é\u200b\x1f".encode(), 10) == "é"


def test_unless_drops_the_lines_it_matches(tmp_path: Path) -> None:
    rules = ruleset(
        tmp_path,
        """
        rules:
          - name: cuda_error
            kind: error
            pattern: 'CUDA error: '
            unless: 'CUDA error: out of memory'
          - name: loss
            kind: loss
            pattern: 'loss: (?P<value>{NUM})'
            unless: '(?i)\\bval'
        """,
    )
    result = rules.scan(
        b"CUDA error: an illegal memory access\nCUDA error: out of memory\n"
        b"loss: 1.5\nVal loss: 0.1\n"
    )
    assert result.errors == {"cuda_error": 1}
    assert result.loss is not None
    assert result.loss.value == 1.5
    assert ruleset(tmp_path, MARKERS).scan(b"nothing here\n").errors == {}


UNLESS_RULES = """
rules:
  - name: step_without_loss
    kind: warning
    pattern: 'step \\d+ \\|.*\\| scale'
    unless: '\\bloss: '
  - name: timeout
    kind: error
    pattern: '(?i)timed? ?out'
    unless: 'NCCL|HCCL'
"""

UNLESS_LINES = [
    "step 1 | lm loss: 2.5 | scale 1.0",  # the pattern and unless: rejected
    "step 2 | lr: 0.1 | scale 1.0",  # the pattern alone: counts
    "noise loss: 3",  # unless alone
    "NCCL watchdog timeout",  # timeout, rejected
    "socket timed out",  # timeout, counts
    "step 3 | loss: 1 | scale 2 | socket timeout",  # both rules, rejected by the first only
    "",
    "plain noise é",
]


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(UNLESS_LINES) - 1), max_size=120),
    chunk=st.sampled_from([40, 100, 4096]),
)
def test_unless_over_runs_of_lines_counts_what_a_line_by_line_check_counts(
    tmp_path_factory: pytest.TempPathFactory, picks: list[int], chunk: int
) -> None:
    """Rejected lines are skipped a run at a time; the count is each line's own verdict."""
    rules = ruleset(tmp_path_factory.mktemp("unless"), UNLESS_RULES)
    lines = [UNLESS_LINES[i] for i in picks]
    expected: dict[str, int] = {}
    for line in lines:
        if re.search(r"step \d+ \|.*\| scale", line) and not re.search(r"\bloss: ", line):
            expected["step_without_loss"] = expected.get("step_without_loss", 0) + 1
        if re.search(r"(?i)timed? ?out", line) and not re.search("NCCL|HCCL", line):
            expected["timeout"] = expected.get("timeout", 0) + 1
    block = "".join(line + "\n" for line in lines).encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "CHUNK_BYTES", chunk)
        result = rules.scan(block)
    assert {**result.errors, **result.warnings} == expected
    assert {k: v for k, v in result.rule_matches.items() if v} == expected


def test_sum_adds_up_the_numbers_of_the_value_group(tmp_path: Path) -> None:
    rules = ruleset(
        tmp_path,
        """
        rules:
          - name: columns
            kind: loss
            sum: true
            pattern: '^\\s*(?P<epoch>\\d+)/\\d+\\s+(?P<value>(?:{NUM}\\s+)+)\\d+:'
        """,
    )
    result = rules.scan(b"  3/10   1.5   0.25  -0.5   640:\n")
    assert result.loss is not None
    assert (result.loss.value, result.loss.epoch) == (1.25, 3.0)
    nan = rules.scan(b"  4/10   1.5   nan   640:\n")
    assert nan.loss is not None
    assert math.isnan(nan.loss.value)


# --- context rules ----------------------------------------------------------------------

CONTEXT = """
rules:
  - name: header
    kind: context
    pattern: '^Epoch (?P<epoch>\\d+)/\\d+$'
    feeds: [bar]
  - name: bar
    kind: loss
    pattern: '(?P<step>\\d+)/\\d+ \\[=*\\] loss: (?P<value>{NUM})'
  - name: other
    kind: loss
    pattern: 'other loss (?P<value>{NUM})'
"""


def test_a_context_line_gives_its_epoch_to_the_loss_lines_after_it(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, CONTEXT)
    result = rules.scan(b"Epoch 1/5\n3/9 [==] loss: 0.9\nEpoch 2/5\n4/9 [===] loss: 0.7\n")
    assert result.loss is not None
    assert (result.loss.value, result.loss.step, result.loss.epoch) == (0.7, 4.0, 2.0)
    assert result.context == {"header": (None, 2.0)}


def test_a_context_line_after_the_loss_line_does_not_apply(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, CONTEXT)
    result = rules.scan(b"Epoch 1/5\n3/9 [==] loss: 0.9\nEpoch 2/5\n")
    assert result.loss is not None
    assert result.loss.epoch == 1


def test_context_only_feeds_the_rules_it_names(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, CONTEXT)
    result = rules.scan(b"Epoch 1/5\nother loss 0.3\n")
    assert result.loss is not None
    assert result.loss.epoch is None


def test_context_is_handed_from_one_scan_to_the_next(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, CONTEXT)
    first = rules.scan(b"Epoch 3/5\n")
    second = rules.scan(b"7/9 [==] loss: 0.5\n", context=first.context)
    assert second.loss is not None
    assert second.loss.epoch == 3
    assert second.context == {"header": (None, 3.0)}
    newer = rules.scan(b"Epoch 4/5\n1/9 [==] loss: 0.4\n", context=second.context)
    assert newer.loss is not None
    assert newer.loss.epoch == 4
    junk = rules.scan(b"7/9 [==] loss: 0.5\n", context={"header": ("x", None), "y": 3})
    assert junk.loss is not None
    assert junk.loss.epoch is None


# --- examples ---------------------------------------------------------------------------


def test_check_examples_reports_every_wrong_example(tmp_path: Path) -> None:
    rules = ruleset(
        tmp_path,
        """
        rules:
          - name: code
            kind: exit_code
            pattern: 'exit (?P<value>-?\\d+)'
            examples:
              - line: 'exit 3'
                value: 3
              - line: 'exit 4'
                value: 5
              - line: 'exit -9'
                match: false
              - 'no exit here'
          - name: header
            kind: context
            pattern: '^Epoch (?P<epoch>\\d+)'
            feeds: [loss]
            examples:
              - line: 'Epoch 2'
                epoch: 3
          - name: loss
            kind: loss
            pattern: 'loss (?P<value>{NUM})'
            examples:
              - line: 'loss nan'
                value: .nan
        """,
    )
    failures = rules.check_examples()
    assert len(failures) == 4
    assert "(code): examples[1]: value is 4.0, expected 5.0" in failures[0]
    assert "(code): examples[2]: matched 'exit -9', which it must not" in failures[1]
    assert "(code): examples[3]: did not match 'no exit here'" in failures[2]
    assert "(header): examples[0]: epoch is 2.0, expected 3.0" in failures[3]


# --- loading ----------------------------------------------------------------------------


def test_bad_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yml", "rules:\n  - name: x\n    kind: [error\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:4:")
    assert "invalid YAML" in problem


def test_every_problem_is_reported_at_once_with_file_rule_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "many.yml",
        """
        rules:
          - name: one
            kind: error
            pattern: 'x'
            colour: red
          - name: two
            kind: loss
            pattern: '(?<![\\w/.])loss: {NUM}'
          - name: three
            kind: loss
            pattern: 'loss: {NUM}'
          - name: four
            kind: gauge
            metric: modelarts_task_loss
            pattern: 'l=(?P<value>\\d+)'
          - name: Five
            kind: eror
          - name: six
            kind: error
            pattern: 'x'
            examples:
              - line: 'x'
                value: lots
        """,
    )
    found = problems(path)
    where = f"{path}: rules["
    assert f"{where}0] (one): colour: unknown key" in "\n".join(found)
    two = next(p for p in found if "(two)" in p)
    assert "pattern: RE2 refuses it: invalid perl operator: (?<!" in two
    assert "a look-behind" in two
    assert any(f"{where}2] (three): pattern: needs a (?P<value>...) group" in p for p in found)
    assert any(
        f"{where}3] (four): metric: modelarts_task_loss is one of the exporter's own" in p
        for p in found
    )
    assert any(f"{where}4] (Five): name: 'Five' must match" in p for p in found)
    assert any(f"{where}4] (Five): kind: 'eror' must be one of" in p for p in found)
    assert any(f"{where}4] (Five): pattern: missing" in p for p in found)
    assert any(f"{where}5] (six): examples[0]: value: must be a number" in p for p in found)
    assert len(found) == 8


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yml", "rules:\n- {name: dup, kind: error, pattern: a}\n")
    b = write(tmp_path, "b.yml", "rules:\n- {name: dup, kind: warning, pattern: b}\n")
    [problem] = problems(a, b)
    assert problem == f"{b}: rules[0] (dup): name: also defined at {a}: rules[0]"


def test_every_problem_at_once_even_of_rules_that_fail_their_checks(tmp_path: Path) -> None:
    """A duplicate name and a bad pattern are not hidden behind a rule's other problems."""
    path = write(
        tmp_path,
        "r.yml",
        "rules:\n"
        "- {name: Bad, kind: eror, pattern: '(?<=x)y'}\n"
        "- {name: twice, kind: gauge, metric: modelarts_task_loss, pattern: 'a'}\n"
        "- {name: twice, kind: gauge, metric: my_metric, pattern: 'b'}\n",
    )
    found = problems(path)
    where = f"{path}: rules["
    assert any(f"{where}0] (Bad): name: 'Bad' must match" in p for p in found)
    assert any(f"{where}0] (Bad): kind: 'eror' must be one of" in p for p in found)
    assert any(f"{where}0] (Bad): pattern: " in p and "look" in p for p in found)
    assert f"{where}2] (twice): name: also defined at {where}1]" in found
    # a rule that fails another check (an unknown key) still has its name counted
    other = write(
        tmp_path,
        "s.yml",
        "rules:\n- {name: same, kind: error, pattern: a, colour: red}\n"
        "- {name: same, kind: error, pattern: b}\n",
    )
    assert f"{other}: rules[1] (same): name: also defined at {other}: rules[0]" in problems(other)
    assert any(f"{where}1] (twice): metric: modelarts_task_loss is one of" in p for p in found)


def test_a_rule_named_as_a_vocabulary_rule_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yml", "rules:\n- {name: kv_loss, kind: error, pattern: x}\n")
    with pytest.raises(RuleError) as caught:
        load_rules([path])
    assert f"{path}: rules[0] (kv_loss): name: the vocabulary's rule has this name" in (
        caught.value.problems
    )


def test_a_metric_fed_with_other_labels_elsewhere(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yml",
        """
        rules:
          - {name: a, kind: gauge, metric: m_x, pattern: 'a(?P<value>\\d)(?P<r>\\d)', labels: [r]}
          - {name: b, kind: gauge, metric: m_x, pattern: 'b(?P<value>\\d)'}
        """,
    )
    [problem] = problems(path)
    assert "(b): metric: m_x is fed with another kind or other labels at" in problem


def test_context_and_sum_mistakes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yml",
        """
        rules:
          - {name: c1, kind: context, pattern: 'Epoch (?P<epoch>\\d+)', feeds: [nope, e1]}
          - {name: c2, kind: context, pattern: 'Epoch \\d+', feeds: [l1]}
          - {name: c3, kind: context, pattern: 'E (?P<epoch>\\d+)'}
          - {name: e1, kind: error, pattern: 'x', sum: true}
          - {name: l1, kind: loss, pattern: 'l (?P<value>\\d+)', feeds: [l1]}
        """,
    )
    found = "\n".join(problems(path))
    assert "(c1): feeds: nope is no rule; a context rule feeds loss rules" in found
    assert "(c1): feeds: e1 is an error rule" in found
    assert "(c2): pattern: needs a (?P<step>...) or (?P<epoch>...) group" in found
    assert "(c3): feeds: a context rule names the loss rules it feeds" in found
    assert "(e1): sum: only loss, gauge and counter rules add up a value" in found
    assert "(l1): feeds: only context rules feed other rules" in found


def test_a_group_named_twice_is_refused(tmp_path: Path) -> None:
    # RE2 keeps only the first group of a name: the second alternative would never capture.
    path = write(
        tmp_path,
        "twice.yml",
        "rules:\n- {name: c, kind: exit_code, pattern: 'a (?P<value>\\d+)|b(?P<value>\\d+)'}\n",
    )
    found = "\n".join(problems(path))
    assert "(c): pattern: the group value is named twice" in found


def test_shapes_that_are_not_rule_files(tmp_path: Path) -> None:
    empty = write(tmp_path, "empty.yml", "")
    listed = write(tmp_path, "list.yml", "- name: x\n")
    extra = write(tmp_path, "extra.yml", "rules: []\nversion: 2\n")
    blank = write(
        tmp_path, "blank.yml", "rules:\n- {name: b, kind: error, pattern: '', unless: ''}\n"
    )
    found = problems(empty, listed, extra, blank, tmp_path / "missing.yml")
    assert f"{blank}: rules[0] (b): pattern: must not be empty" in found
    assert f"{blank}: rules[0] (b): unless: must not be empty" in found
    missing = (
        "rules: missing; a rule file is `rules:` with a list of rules (and/or a `vocabulary:`)"
    )
    assert f"{empty}: {missing}" in found
    assert f"{listed}: {missing}" in found
    assert f"{extra}: version: unknown key (a rule file has `rules:` and `vocabulary:`)" in found
    assert f"{tmp_path / 'missing.yml'}: no such rule file or directory" in found


# --- the command line -----------------------------------------------------------------


def test_rules_check_and_test_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(
        tmp_path,
        "good.yml",
        """
        rules:
          - name: my_gauge
            kind: gauge
            metric: modelarts_task_accuracy
            pattern: 'acc: (?P<value>{NUM})'
            examples:
              - line: 'acc: 0.91'
                value: 0.91
        """,
    )
    failing = write(
        tmp_path,
        "failing.yml",
        "rules:\n- name: f\n  kind: error\n  pattern: x\n  examples: ['y']\n",
    )
    broken = write(tmp_path, "broken.yml", "rules:\n- name: b\n  kind: error\n")

    assert main(["rules", "check"]) == 0
    assert main(["rules", "check", str(good)]) == 0
    assert main(["rules", "test", "--no-default-rules", str(good)]) == 0
    assert "ok: 1 examples of 1 rules in 1 file" in capsys.readouterr().out

    assert main(["rules", "test", "--no-default-rules", str(failing)]) == 1
    err = capsys.readouterr().err
    assert f"{failing}: rules[0] (f): examples[0]: did not match 'y'" in err
    assert "1 of 1 examples failed" in err

    assert main(["rules", "check", str(broken)]) == 2
    assert main(["rules", "test", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}: rules[0] (b): pattern: missing" in err
    assert "Traceback" not in err


def test_analyze_prints_what_the_rules_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "worker-0.log"
    log.write_bytes(b"{'loss': 0.25, 'epoch': 1.0}\n[Modelarts Service Log]exit with 3\n")
    assert main(["analyze", str(log)]) == 0
    out = capsys.readouterr().out
    task = 'task_id="worker-0.log",training_job_id="local"'
    assert f"modelarts_task_exit_code{{{task}}} 3.0" in out
    assert f"modelarts_task_loss{{{task}}} 0.25" in out
    assert f'modelarts_task_log_errors_total{{marker="training_failed",{task}}} 1.0' in out


# --- normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (b"a\r\nb\r\n", b"a\n\nb\n\n"),  # an empty line after each: no rule sees it
        (b"f1\rf2\rf3", b"f1\nf2\nf3\n"),
        (b"\x1b[34m\x1b[1mtrain: \x1b[0mok\x1b[K\n", b"train: ok\n"),
        (b"\x1b]0;title\x07text\n", b"text\n"),
        (b"^[[2;2R^[[>0;136;0cframe #4\n", b"frame #4\n"),
        (b"", b""),
    ],
)
def test_normalize(raw: bytes, clean: bytes) -> None:
    assert normalize(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        b"a\r\nb\r\nc\n",
        b"\x1b[34m\x1b[1mtrain: \x1b[0mok\r\nnext\x1b[K line\r\n",
        b"^[[2;2R^[[>0;136;0cframe #4\r\n\x1b]0;title\x07text\n",
        b"plain\nlines\n",
    ],
)
def test_raw_offset_finds_where_each_normalized_byte_came_from(raw: bytes) -> None:
    clean = normalize(raw)
    for offset, byte in enumerate(clean[: len(raw)]):
        at = raw_offset(raw, offset)
        assert raw[at : at + 1] in (bytes([byte]), b"\r"), (offset, at)


def test_first_line_numbers_count_crlf_once_and_ignore_colour(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, MARKERS)
    block = (
        b"one\r\n\x1b[31mtwo\x1b[0m\r\n\r\n"  # lines 0, 1, 2 (empty)
        b"frame\rframe\r\n"  # lines 3, 4
        b"\x1b[1mout of memory\x1b[0m\r\n"  # line 5
        b"alloc failed\n"  # line 6
    )
    result = rules.scan(block, first_line_of=[("error", "oom")])
    assert result.first_line_index == {("error", "oom"): 5}
    assert rules.scan(block).first_line_index == {}  # only when asked


def test_rules_too_large_together_are_named_not_a_traceback(tmp_path: Path) -> None:
    # each pattern alone fits RE2's budget for one rule (8 MiB); ten of them make a
    # prefilter automaton larger than its 64 MiB budget
    rules = "".join(
        f"  - name: big_{i}\n    kind: error\n    pattern: '(?:\\pL){{1,400}}x{i}'\n"
        for i in range(10)
    )
    found = problems(write(tmp_path, "big.yml", "rules:\n" + rules))
    assert len(found) == 1
    assert "the 10 rules together exceed RE2's memory budget" in found[0]


def test_series_caps_apply_while_scanning(tmp_path: Path) -> None:
    rules = ruleset(
        tmp_path,
        """
        rules:
          - name: per_host
            kind: counter
            metric: modelarts_task_host_retries
            pattern: 'retry on host (?P<host>\\S+)'
            labels: [host]
          - name: temperature
            kind: gauge
            metric: modelarts_task_device_temperature_celsius
            pattern: 'device (?P<device>\\S+) at (?P<value>{NUM}) C'
            labels: [device]
        """,
        max_series_per_rule=3,
    )
    hosts = b"".join(b"retry on host h%d\n" % (i % 1000) for i in range(3000))
    devices = b"".join(b"device d%d at %d C\n" % (i, 40 + i % 7) for i in range(1000))
    result = rules.scan(hosts + devices)
    # the first three hosts each retried three times (i, i+1000, i+2000)
    assert result.counters == {
        ("modelarts_task_host_retries", (("host", f"h{i}"),)): (3.0, "per_host") for i in range(3)
    }
    assert result.series_dropped["per_host"] == 3000 - 9
    assert len(result.gauges) == 3
    assert result.series_dropped["temperature"] == 1000 - 3
    # a series that exists already (in the store) always takes its line's value
    known = {("modelarts_task_host_retries", (("host", "h999"),)): (1.0, "per_host")}
    again = rules.scan(hosts, known_series=(known,))
    assert again.counters[("modelarts_task_host_retries", (("host", "h999"),))][0] == 3.0
    assert len(again.counters) == 4
