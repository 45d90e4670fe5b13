"""The vocabulary (rules/vocabulary.py) and the rules it makes (kvrules.py): keys to
concepts, evaluation context, the training loss of a line, and a user's own keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from modelarts_exporter.rules import RuleError, RuleSet, load_rules, pairs
from modelarts_exporter.rules.loader import default_rules_dir
from modelarts_exporter.rules.model import load_rule_file
from modelarts_exporter.rules.pairs import key_tokens
from modelarts_exporter.rules.vocabfile import VocabularySpec, merge
from modelarts_exporter.rules.vocabulary import Vocabulary


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    specs: list[VocabularySpec] = []
    problems: list[str] = []
    load_rule_file(default_rules_dir() / "vocabulary.yml", problems, None, specs)
    assert problems == []
    return merge(specs)


@pytest.mark.parametrize(
    ("key", "concept", "evaluation", "rank"),
    [
        ("loss", "loss", False, 0),
        ("train_loss", "loss", False, 0),
        ("total_loss", "loss", False, 0),
        ("lm loss", "loss", False, 0),
        ("reduced_train_loss", "loss", False, 0),
        ("train_loss_step", "loss", False, 0),
        ("act_loss", "loss", False, 1),
        ("CTCLoss", "loss", False, 1),
        ("avg_loss", "loss", False, 2),
        ("train_loss_epoch", "loss", False, 2),
        ("val_loss", "loss", True, 0),
        ("Vali Loss", "loss", True, 0),
        ("eval/loss", "loss", True, 0),
        ("loss_val", "loss", True, 0),
        ("验证损失", "loss", True, 0),
        ("训练损失", "loss", False, 0),
        ("global_step", "step", False, 0),
        ("Global Step", "step", False, 0),
        ("iters", "step", False, 0),
        ("训练次数", "step", False, 0),
        ("num_updates", "step", False, 0),
        ("epoch", "epoch", False, 0),
    ],
)
def test_what_keys_mean(
    vocabulary: Vocabulary, key: str, concept: str, evaluation: bool, rank: int
) -> None:
    meaning = vocabulary.meaning(key_tokens(key))
    assert meaning is not None
    assert (meaning.concept, meaning.eval, meaning.rank, meaning.ignored) == (
        concept,
        evaluation,
        rank,
        False,
    )


@pytest.mark.parametrize(
    "key",
    ["loss_cls", "decode.loss_seg", "grad_norm", "closs", "lossy", "learning_rate", "ppl"],
)
def test_keys_that_are_no_loss_step_or_epoch(vocabulary: Vocabulary, key: str) -> None:
    meaning = vocabulary.meaning(key_tokens(key))
    assert meaning is None or meaning.concept not in ("loss", "step", "epoch", "batch")


@pytest.mark.parametrize(
    "key", ["best_loss", "min_loss", "max_steps", "save_steps", "warmup_steps", "num_epochs"]
)
def test_keys_of_a_concept_that_are_not_its_current_value(vocabulary: Vocabulary, key: str) -> None:
    meaning = vocabulary.meaning(key_tokens(key))
    assert meaning is not None
    assert meaning.ignored or meaning.plural


def test_loss_scale_is_not_a_loss(vocabulary: Vocabulary) -> None:
    facts = vocabulary.read_line("loss scale: 65536.0 | loss_scale=1.0 | Attempted loss scale: 4")
    assert facts.loss is None


@pytest.mark.parametrize(
    ("line", "loss", "step", "epoch"),
    [
        # a step's loss beats a running mean and a prefixed key on the same line
        ("step 7 | avg_loss 0.9 | loss 0.7 | act_loss 0.1", 0.7, 7, None),
        # glued progress frames: the last one is the current value, with its own step
        ("3/9 [00:01<00:02, 2.0it/s, loss=0.9]4/9 [00:02<00:02, 2.0it/s, loss=0.8]", 0.8, 4, None),
        # the step after the loss when none comes before it (TF Estimator)
        (
            "INFO:tensorflow:loss = 2129.3452, mrr = 0.17, step = 494 (2.631 sec)",
            2129.3452,
            494,
            None,
        ),
        # an explicit step beats a progress frame; a batch beats a frame too
        ("12/100 [00:01<00:09, 9.9it/s, step=40, loss=0.5]", 0.5, 40, None),
        ("Epoch 3, Batch 20/50, loss=0.4", 0.4, 20, 3),
        # a bare plural counts the steps done (of the epoch, as `iters: 200` before the
        # epoch's summary did), when nothing else on the line says the step
        ("Epoch: 4, Steps: 236 | Train Loss: 0.279", 0.279, 236, 4),
        ("Epoch 1 |   Training | Elapsed Time: 0:03:10 | Steps: 17 | Loss: 3.25", 3.25, 17, 1),
        ("iter: 40 | Steps: 41 | loss: 0.5", 0.5, 40, None),
        ("Epochs: 3, loss: 0.2", 0.2, None, 3),
        ("steps 12/300 loss 0.2", 0.2, 12, None),
        # a step counted in something is a step, never that something
        ("epoch: 1/50, iter_in_epoch: 120, loss: 0.5", 0.5, 120, 1),
        ("step_of_epoch=7 | loss=0.25", 0.25, 7, None),
        # ... but a count in something is no step, nor is a time or another loss
        ("Epoch 2 | steps in epoch: 500 | loss: 0.3", 0.3, None, 2),
        ("step 4 | loss: 0.5 | loss of discriminator: 0.7", 0.5, 4, None),
        # a key of separators only is no key
        ("{'_': 1, 'loss': 0.5}", 0.5, None, None),
        ("x | __: 3 | step 9 | loss: 0.5", 0.5, 9, None),
        # name/value tuples, as Python prints a list of them
        ("[('loss_att', 0.699), ('acc', 0.81), ('loss', 0.791)]", 0.791, None, None),
        ("('step', 5) ('loss', 0.2)", 0.2, 5, None),
        # a share or a time is not a count
        ("Steps: 12% | loss: 0.3", 0.3, None, None),
        ("epoch: 3.5s | loss: 0.3", 0.3, None, None),
    ],
)
def test_the_training_loss_of_a_line(
    vocabulary: Vocabulary, line: str, loss: float, step: float | None, epoch: float | None
) -> None:
    facts = vocabulary.read_line(line)
    assert facts.loss is not None
    assert (facts.loss.value, facts.step, facts.epoch) == (loss, step, epoch)


@pytest.mark.parametrize(
    "line",
    [
        '{"mode": "val", "epoch": 3, "iter": 500, "loss": 0.41}',
        "Test: [ 10/196]\tTime  0.315 ( 0.372)\tLoss 1.2345e+00 (1.1000e+00)",
        "Validation DataLoader 0: 100%|██████████| 10/10 [00:01<00:00, loss=0.51]",
        "| valid | epoch 002 | valid on 'valid' subset | loss 9.393 | num_updates 695",
        "第3轮 验证集 Loss: 0.5",
        "10/30 22:40:01 - mmengine - INFO - Epoch(val) [1][100/500]  loss: 0.3",
        "[EVAL] #Images: 500 loss: 0.41",
        "  train_loss               =     0.5231",
        "{'train_runtime': 120.5, 'train_loss': 0.42, 'epoch': 3.0}",
    ],
)
def test_evaluation_and_summary_lines_give_no_training_loss(
    vocabulary: Vocabulary, line: str
) -> None:
    assert vocabulary.read_line(line).loss is None


def test_a_key_that_says_train_wins_over_the_line_context(vocabulary: Vocabulary) -> None:
    facts = vocabulary.read_line("Epoch : 2 finished. Training Loss: 0.41. Validation Loss: 0.5")
    assert facts.loss is not None
    assert (facts.loss.value, facts.epoch) == (0.41, 2)
    assert [p.value for p in facts.eval_losses] == [0.5]


def test_nan_on_any_training_loss_key_but_not_on_eval_or_gradients(vocabulary: Vocabulary) -> None:
    assert vocabulary.training_loss_nan("epoch: 0|step: 290|act_loss: nan|cri_loss: 0.0172")
    assert vocabulary.training_loss_nan("loss is inf")
    assert not vocabulary.training_loss_nan("loss: 0.3 - val_loss: nan - grad_norm: nan")
    assert not vocabulary.training_loss_nan("nanoGPT: skip_nan: true, errors: 0, timeout=1800")


def _scan(ruleset: RuleSet, text: str) -> tuple[float | None, float | None, dict[str, int]]:
    result = ruleset.scan(text.encode())
    loss = result.loss
    return (loss.value if loss else None, loss.step if loss else None, result.errors)


def test_a_running_mean_gives_way_to_the_step_loss_printed_just_before() -> None:
    ruleset = RuleSet(load_rules())
    text = "step 99 | loss 2.21\nstep 100 | loss 2.20\nepoch_end: avg loss: 2.31\n"
    assert _scan(ruleset, text)[:2] == (2.2, 100)
    assert _scan(ruleset, "epoch_end: avg loss: 2.31\n")[:2] == (2.31, None)


def test_an_epoch_header_reaches_the_lines_the_vocabulary_reads() -> None:
    ruleset = RuleSet(load_rules())
    result = ruleset.scan(b"***** Epoch: 2 *****\nstep: 71000, loss: 1.856\n")
    assert result.loss is not None
    assert (result.loss.value, result.loss.step, result.loss.epoch) == (1.856, 71000, 2)


def test_a_user_adds_keys_to_the_vocabulary_without_a_rule(tmp_path: Path) -> None:
    line = "batch_idx: 120 objective=0.731 | dev_objective=0.8\n"
    assert _scan(RuleSet(load_rules()), line)[0] is None
    extra = tmp_path / "my_keys.yml"
    extra.write_text(
        "vocabulary:\n"
        "  loss: [objective]\n"
        "  step: [batch idx]\n"
        "  examples:\n"
        "    - line: 'batch_idx: 120 objective=0.731'\n"
        "      loss: 0.731\n"
        "      step: 120\n"
        "    - line: 'dev_objective=0.8'\n"
        "      loss: null\n"
    )
    ruleset = RuleSet(load_rules([extra]))
    assert _scan(ruleset, line)[:2] == (0.731, 120)
    assert ruleset.check_examples() == []


def test_a_users_wrong_example_is_reported(tmp_path: Path) -> None:
    extra = tmp_path / "my_keys.yml"
    extra.write_text("vocabulary:\n  examples:\n    - line: 'loss: 0.5'\n      loss: 0.6\n")
    failures = RuleSet(load_rules([extra])).check_examples()
    assert any("value is 0.5, expected 0.6" in failure for failure in failures)


def test_every_problem_of_a_vocabulary_section_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "vocabulary:\n"
        "  losses: [objective]\n"
        "  step: objective\n"
        "  eval_lines: ['(?<=val) loss']\n"
        "  examples:\n"
        "    - line: 'x'\n"
        "    - {line: 'y', loss: high}\n"
    )
    with pytest.raises(RuleError) as caught:
        load_rules([bad])
    found = "\n".join(caught.value.problems)
    assert f"{bad}: vocabulary.losses: unknown key (known: loss, step, batch, epoch," in found
    assert f"{bad}: vocabulary.step: must be a list of non-empty texts" in found
    assert f"{bad}: vocabulary.eval_lines[0]: RE2 refuses it" in found
    assert f"{bad}: vocabulary.examples[0]: loss: missing" in found
    assert f"{bad}: vocabulary.examples[1]: loss: must be a number" in found


def test_nan_losses_counted_once_per_line_by_the_marker() -> None:
    ruleset = RuleSet(load_rules())
    text = "step 1 loss nan\nstep 2 val_loss nan\nstep 3 act_loss: inf, cri_loss: nan\n"
    value, _, errors = _scan(ruleset, text)
    assert value is not None
    assert math.isinf(value)
    assert errors.get("nan_loss") == 2


@pytest.mark.parametrize(
    ("line", "concept", "value"),
    [
        # a word of change gives the key before it its new value
        ("Attempted loss scale: 8, reducing to 4", "loss_scale", 4.0),
        ("scaler scale: 1024, lowering to 512", "loss_scale", 512.0),
        ("Attempted loss scale: 8", "loss_scale", None),
        # a time key spelled `timing`, its unit after `in`
        ("global_step: 9 | train_step_timing in s: 0.5 | loss: 1.0", "step_time", 0.5),
        ("iter_time_in_ms: 250, loss: 1.0", "step_time", 0.25),
        # a word of change is the key before it only with `to`
        ("step 10 | lr: 0.001, updated 12 params | loss 0.5", "learning_rate", 0.001),
        ("grad_norm: 1.2 | changed 3 layers | loss 0.5", "grad_norm", 1.2),
        # PyTorch's ReduceLROnPlateau: not a group index for a learning rate
        ("Epoch    10: reducing learning rate of group 0 to 1.0000e-04.", "learning_rate", None),
        ("step 3 | loss 0.2 | time per iter 0.5s, time in epoch 100.0s", "step_time", 0.5),
        # a duration in words, every unit of it
        ("epoch 3 | loss 0.2 | ETA: 1 hour, 5 minutes and 3 seconds", "eta", 3903.0),
        ("Estimated time to finish: 2 minutes and 1.5 seconds", "eta", 121.5),
        ("step 9 loss 0.1 eta 2h 30m", "eta", 9000.0),
        ("eta: 12 minutes, loss: 0.5", "eta", 720.0),
        # a part of a step is not the step: the step's own time wins, or none
        ("| > step_time: 2.0197  | > loader_time: 0.02", "step_time", 2.0197),
        ("iter 5 loss 0.3 forward_time=0.1 backward_time=0.2 optim_time=0.104", "step_time", None),
        ("step 3 loss 0.2 optimizer_lr: 0.001", "learning_rate", 0.001),
        # a parameter group's value: group 0 first
        ("step 3, loss=1.5, lr_0=0.1, lr_1=0.2", "learning_rate", 0.1),
        ("step 3, loss=1.5, lr_1=0.2", "learning_rate", 0.2),
        # a global step's total is the run's, even beside an epoch's total
        ("Epoch [2/10] | global_step 300/5000 | loss 0.1", "total_steps", 5000.0),
        ("Epoch [2/10] | step 30/500 | loss 0.1", "total_steps", None),
    ],
)
def test_telemetry_of_a_line(
    vocabulary: Vocabulary, line: str, concept: str, value: float | None
) -> None:
    assert vocabulary.read_line(line).telemetry.get(concept) == value


def test_a_word_of_change_after_a_loss_is_no_loss(vocabulary: Vocabulary) -> None:
    facts = vocabulary.read_line("step 3 | loss: 0.5, reducing to 0.4")
    assert facts.loss is not None
    assert facts.loss.value == 0.5
    assert facts.telemetry == {}


@pytest.mark.parametrize(
    ("line", "nan_metric"),
    [
        ("{'eval_loss': nan, 'eval_wer': 100.0, 'epoch': 1.0}", True),
        ("val_loss: nan", True),
        ("[eval] loss: nan", True),
        ("{'loss': nan, 'grad_norm': nan}", False),  # a training loss: nan_loss, not this
        ("number of nan iterations: 0 | lm loss: 3.2", False),
    ],
)
def test_an_evaluation_that_printed_nan(line: str, nan_metric: bool) -> None:
    warnings = RuleSet(load_rules()).scan(line.encode()).warnings
    assert bool(warnings.get("nan_metric")) is nan_metric


@pytest.mark.parametrize(
    ("first", "then", "loss"),
    [
        # a digit glued to a key makes it no key: the same line without it has a loss
        (
            "{'1loss': 0.5123, 'grad_norm': 1.234, 'epoch': 0.25}",
            "{'loss': 0.5123, 'grad_norm': 1.234, 'epoch': 0.25}",
            0.5123,
        ),
        ("step: 5, 1loss: 0.5", "step: 5, loss: 0.5", 0.5),
        # a clock and a number with as many characters but other digits
        ("step 10 loss: 1234:30", "step 11 loss: 12:30", 750.0),
        ("step 10 loss: 12:30", "step 11 loss: 1234:30", None),
    ],
)
def test_what_one_line_printed_never_changes_how_another_is_read(
    first: str, then: str, loss: float | None
) -> None:
    """Lines are remembered by their shape across every job the exporter watches: a line
    of one job must not decide how another job's line is read."""
    ruleset = RuleSet(load_rules())
    ruleset.scan(first.encode() + b"\n")
    result = ruleset.scan(then.encode() + b"\n")
    assert (result.loss.value if result.loss else None) == loss
    alone = RuleSet(load_rules()).scan(then.encode() + b"\n")
    assert (alone.loss.value if alone.loss else None) == loss


def test_long_lines_are_not_remembered(vocabulary: Vocabulary) -> None:
    """A log of 64 KiB lines must not fill the caches (it held gigabytes)."""
    for i in range(3):
        key = "k" * 5000 + str(i)
        line = f"{key}: 1 " + "loss: nan " * 6000
        vocabulary.read_line(line)
        vocabulary.loss_value(line.encode())
    assert all(len(line) <= 2048 for line in vocabulary._recent)
    assert len(vocabulary._recent_long) <= 1
    assert all(len(shape) <= 2048 for shape in vocabulary._plans)
    assert all(len(key) <= 128 for key in pairs._TOKENS)
    assert all(sum(map(len, tokens)) <= 2048 for tokens in vocabulary._cache)


def test_the_shipped_vocabulary_reads_lines_by_shape(vocabulary: Vocabulary) -> None:
    assert vocabulary._shape_table is not None


def test_a_users_line_pattern_that_names_a_digit_reads_each_line_itself(tmp_path: Path) -> None:
    """`ignore_lines: ['^\\[rank[1-9]\\]']` makes a line's digits part of its meaning:
    lines of one shape may differ, so no line decides for another."""
    rules = tmp_path / "ranks.yml"
    rules.write_text("vocabulary:\n  ignore_lines: ['^\\[rank[1-9]\\]']\n")
    ruleset = RuleSet(load_rules([rules]))
    assert ruleset.scan(b"[rank3] step 5 loss 0.3\n").loss is None
    result = ruleset.scan(b"[rank0] step 6 loss 0.2\n")
    assert result.loss is not None
    assert result.loss.value == 0.2
