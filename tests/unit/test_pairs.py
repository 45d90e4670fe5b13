"""Key/value pairs of a line (rules/pairs.py): every separator, value form and position."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelarts_exporter.rules.pairs import find_pairs, key_tokens


def _pairs(line: str) -> list[tuple[str, float, float | None]]:
    return [(p.key, p.value, p.total) for p in find_pairs(line)]


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        ("loss: 0.3", "loss", 0.3),
        ("loss=0.3", "loss", 0.3),
        ("{'loss': 0.3}", "loss", 0.3),
        ('{"loss": 0.3}', "loss", 0.3),
        ("Loss :: 0.3", "Loss", 0.3),
        ("Loss\uff1a0.3", "Loss", 0.3),
        ("| lm loss: 3.4E+00 |", "lm loss", 3.4),
        ("loss 0.3", "loss", 0.3),
        ("loss is 0.3", "loss", 0.3),
        ("Loss: tensor([0.3], device='cuda:0', grad_fn=<AddBackward0>)", "Loss", 0.3),
        ("{'loss': '0.3713'}", "loss", 0.3713),
        ("loss:[2.220/2.220]", "loss", 2.22),
        ("Loss 6.9802e+00 (7.0827e+00)", "Loss", 6.9802),
        ("loss: -0.0560", "loss", -0.056),
        ("loss is 7.078993Epoch time: 3438.972 ms", "loss", 7.078993),
    ],
)
def test_separators_and_value_forms(line: str, key: str, value: float) -> None:
    first = find_pairs(line)[0]
    assert (first.key, first.value) == (key, value)


def test_nan_and_inf_but_not_words_that_start_with_them() -> None:
    values = [p.value for p in find_pairs("loss: nan, act_loss: -inf, model: nanoGPT 3")]
    assert math.isnan(values[0])
    assert values[1] == -math.inf
    assert [p.key for p in find_pairs("model: nanoGPT, skip_nan: true")] == []


def test_positions_totals_and_units() -> None:
    assert _pairs("Iter [2700/120000]  lr: 1e-4") == [("Iter", 2700, 120000), ("lr", 1e-4, None)]
    assert _pairs("step   80/190 | loss 1.2") == [("step", 80, 190), ("loss", 1.2, None)]
    assert _pairs(" iteration      122/  250000 |")[0] == ("iteration", 122, 250000)
    # mmcv: the epoch, then the position inside it
    assert _pairs("Epoch [1][240/735]  loss: 0.5")[:2] == [("Epoch", 1, None), ("[n/t]", 240, 735)]
    assert _pairs("Epoch:[0/19](1600/24681) loss:2.5")[:2] == [
        ("Epoch", 0, 19),
        ("[n/t]", 1600, 24681),
    ]
    time, mfu = find_pairs("time 152.34ms, mfu 35.11%")
    assert (time.value, time.unit, mfu.value, mfu.unit) == (152.34, "ms", 35.11, "%")
    megatron = find_pairs("| elapsed time per iteration (ms): 86545.2 |")[0]
    assert (megatron.key, megatron.unit) == ("elapsed time per iteration", "ms")


def test_dates_clocks_and_versions_are_no_values() -> None:
    assert find_pairs('time="2026-11-26T10:00:01+08:00" level=info') == []
    assert find_pairs("version 3.4.5, date 2025/03/18") == []
    assert _pairs("Loss for final step: 0.0123.") == [("Loss for final step", 0.0123, None)]


def test_durations_are_seconds() -> None:
    eta = find_pairs("eta: 3:02:11  iter: 1219")[0]
    assert (eta.key, eta.seconds) == ("eta", 3 * 3600 + 2 * 60 + 11)
    assert find_pairs("eta: 1 day, 2:03:04")[0].seconds == 86400 + 2 * 3600 + 3 * 60 + 4


def test_progress_frames_give_position_total_time_left_and_rate() -> None:
    pairs = find_pairs(" 20%|██        | 10/50 [00:17<01:06,  1.67s/it]{'loss': 0.6957}")
    frame, rate, loss = pairs
    assert (frame.tokens, frame.value, frame.total, frame.seconds) == (("frame",), 10, 50, 66)
    assert (rate.value, rate.unit) == (1.67, "s/it")
    assert (loss.key, loss.value) == ("loss", 0.6957)
    keras3 = find_pairs(" 37/469 ━━━━━━━━━━━━━━━━━━━━ 4s 9ms/step - loss: 0.8095")
    assert (keras3[0].tokens, keras3[0].value, keras3[0].total) == (("frame",), 37, 469)


def test_a_line_that_starts_with_its_position() -> None:
    assert _pairs("190/446 (epoch 0), train_loss = 2.245")[0] == ("n/t", 190, 446)
    assert _pairs("670 | loss 4.2500 | lr 6.8e-04")[0] == ("n/t", 670, None)
    assert _pairs("10:00:01 loss 0.3") == [("loss", 0.3, None)]  # a clock, not a position


def test_keys_of_several_words_and_their_tokens() -> None:
    keys = [p.key for p in find_pairs("Epoch: 4, Steps: 236 | Train Loss: 0.279 Vali Loss: 0.41")]
    assert keys == ["Epoch", "Steps", "Train Loss", "Vali Loss"]
    assert key_tokens("CTCLoss") == ("ctc", "loss")
    assert key_tokens("LearningRate") == ("learning", "rate")
    assert key_tokens("global_step/max_steps") == ("global", "step", "/", "max", "steps")
    assert key_tokens("actor/pg_loss") == ("actor", "/", "pg", "loss")
    assert key_tokens("decode.loss_seg") == ("decode", "loss", "seg")
    assert key_tokens("训练次数") == ("训练次数",)


def test_a_huge_line_without_spaces_is_linear() -> None:
    # One start position only (keys start after a non-word character): no blow-up.
    assert find_pairs("a" * 200_000 + ": 1") == find_pairs("a" * 200_000 + ": 1")
    assert len(find_pairs("loss: 1 " * 20_000)) == 20_000


@pytest.mark.parametrize(
    "line",
    [
        "1/2 [00:01<:, 1it/s]",
        "1/2 [00:01<1::, 1it/s]",
        "1/2 [00:01<00:02, .it/s]",
        "1/2 [00:01<00:02, 1.2.3it/s]",
        "1/2 [00:01<00:02, ?.?s/it]",
        "Training:  50%|#####     | 1/2 [00:01<:, 1.00s/it]",
        "Epoch [1][240/735] eta: 1:: lr: 0.1 loss: 0.5",
    ],
)
def test_odd_progress_frames_are_no_frames_and_never_raise(line: str) -> None:
    """A frame whose clock or rate is not one (``<:``, ``1.2.3it/s``) made every later
    poll of its job fail; it is simply not a frame."""
    pairs = find_pairs(line)
    assert all(math.isfinite(p.value) or p.tokens != ("frame", "rate") for p in pairs)
    assert all(p.seconds is None or p.seconds >= 0 for p in pairs)


@given(st.text(alphabet="0123456789:/<>[]?., itsloseap%|=", max_size=80))
@settings(max_examples=2000, deadline=None)
def test_find_pairs_never_raises(line: str) -> None:
    find_pairs(line)


@pytest.mark.parametrize("run", [1, 40, 5000])
def test_a_run_of_spaces_after_a_key_is_read_as_one_separator(run: int) -> None:
    """(It was split two ways by the pattern: a 64 KiB line took minutes.)"""
    pairs = find_pairs("loss: 1 abcd" + " " * run + "| step" + " " * run + "7")
    assert [(p.tokens, p.value) for p in pairs] == [(("loss",), 1.0), (("step",), 7.0)]
