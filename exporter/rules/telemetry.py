"""Training telemetry beside the loss: what each gauge is, and values in base units.

The vocabulary maps keys to concepts (``lr`` -> learning_rate, ``time per iteration`` ->
step_time); this module turns a pair of such a key into the value of a gauge, in base
units (seconds, per second, FLOP/s, ratios), and tells a training progress bar from the
others (a dataset ``Map`` or an ``Evaluating`` bar says nothing of training).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from .pairs import Pair


@dataclass(frozen=True, slots=True)
class Gauge:
    """A telemetry gauge: the concept that feeds it, its metric and HELP text."""

    concept: str
    metric: str
    help: str


GAUGES = (
    Gauge(
        "eval_loss",
        "modelarts_task_eval_loss",
        "The last validation/eval loss printed in the log (never mixed into the training loss).",
    ),
    Gauge("learning_rate", "modelarts_task_learning_rate", "The last learning rate printed."),
    Gauge("grad_norm", "modelarts_task_grad_norm", "The last gradient norm printed."),
    Gauge(
        "loss_scale", "modelarts_task_loss_scale", "The last mixed-precision loss scale printed."
    ),
    Gauge(
        "step_time",
        "modelarts_task_step_duration_seconds",
        "Seconds per training step or iteration, as printed (s/it, it/s, ms per iteration).",
    ),
    Gauge(
        "total_steps",
        "modelarts_task_total_steps",
        "The planned number of training steps, where the log prints it (300/1250).",
    ),
    Gauge("eta", "modelarts_task_eta_seconds", "The remaining time the framework printed."),
    Gauge(
        "samples_per_second",
        "modelarts_task_samples_per_second",
        "Training throughput in samples (images, examples) per second, as printed.",
    ),
    Gauge(
        "tokens_per_second",
        "modelarts_task_tokens_per_second",
        "Training throughput in tokens per second, as printed.",
    ),
    Gauge(
        "device_flops",
        "modelarts_task_device_flops_per_second",
        "Achieved FLOP/s per device as printed (175.3 TFLOP/s/GPU is 1.753e14).",
    ),
    Gauge(
        "mfu",
        "modelarts_task_model_flops_utilization_ratio",
        "Model FLOPs utilization as a ratio (0.35 for mfu 35%).",
    ),
)
"""Every telemetry gauge, in the order they are exported."""

KEY_CONCEPTS = (
    "learning_rate",
    "grad_norm",
    "loss_scale",
    "step_time",
    "step_rate",
    "samples_per_second",
    "tokens_per_second",
    "throughput",
    "device_flops",
    "mfu",
    "eta",
)
"""The vocabulary's concepts whose keys carry telemetry (step_rate is steps per second;
throughput is told apart by its unit)."""

_SAMPLE_UNIT = re.compile(r"(?i)^(?:samples?|img|imgs|images?|examples?|ex|seqs?|sequences?)/s")
_TOKEN_UNIT = re.compile(r"(?i)^(?:tokens?|tok|toks|words?)/s")
_FLOP_SCALE = {"": 1.0, "k": 1e3, "g": 1e9, "t": 1e12, "p": 1e15, "e": 1e18}
TIME_UNITS = frozenset(
    {"s", "sec", "secs", "seconds", "ms", "us", "min", "mins", "minutes", "h", "hr", "hours"}
)
"""Time units a key may end with: ``eta_hours``, ``iter_time_ms``."""

_TIME_SCALE = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "seconds": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "min": 60.0,
    "mins": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "day": 86400.0,
    "days": 86400.0,
}
_BAR_GLYPHS = "█▏▎▍▌▋▊▉━─╸╺ |:[]()-*"
_BAR_NOT_TRAINING = re.compile(
    r"(?i)val|eval|test|predict|infer|generat|map\b|map\d|load|download|token|shard|process|filter"
    r"|sampl|convert|extract|fetch|compil|prepar|build|cach|read|writ|sav|upload|resolv"
    r"|encod|decod|preproc|collat|export|warm|calib|benchmark|profil|quantiz|merg|index"
)


@functools.lru_cache(maxsize=1024)  # a context is at most 60 characters; bars repeat theirs
def bar_kind(context: str) -> str:
    """What a progress bar counts, from what the line says before it: ``"training"``
    (an HF Trainer bar says nothing: ``""``), ``"epoch"`` (Lightning's ``Epoch 3:``: the
    batches of one epoch), or ``"other"`` (``Map:``, ``Evaluating:``, ``Loading ...``)."""
    if _BAR_NOT_TRAINING.search(context):
        return "other"
    if "epoch" in context.lower():
        return "epoch"
    return "training"  # an unnamed bar, or named for training (Train:, steps:, Iter ...)


def _time_scale(unit: str) -> float | None:
    return _TIME_SCALE.get(unit.strip().lower())


def step_seconds_of_rate(pair: Pair) -> float | None:
    """Seconds per step from a rate: ``1.67s/it`` -> 1.67, ``5.00it/s`` -> 0.2,
    ``454ms/step`` -> 0.454."""
    unit = pair.unit.lower()
    if not math.isfinite(pair.value) or pair.value <= 0:
        return None
    per, _, of = unit.partition("/")
    if of in ("it", "step", "iter", "batch", "its", "steps", "iters"):
        scale = _time_scale(per)
        return pair.value * scale if scale is not None else None
    if per in ("it", "its", "step", "steps", "iter", "iters", "batch") and of in ("s", "sec"):
        return 1.0 / pair.value
    return None


def value_of(concept: str, pair: Pair) -> tuple[str, float] | None:
    """The gauge a telemetry pair feeds and its value in base units, or None when the
    pair cannot say (a throughput with no unit that tells samples from tokens)."""
    value, unit = pair.value, pair.unit.strip()
    if _SAMPLE_UNIT.match(unit):
        return "samples_per_second", value
    if _TOKEN_UNIT.match(unit):
        return "tokens_per_second", value
    if concept in ("learning_rate", "grad_norm", "loss_scale", "samples_per_second"):
        return concept, value
    if concept == "tokens_per_second":
        return concept, value
    if concept == "step_time":
        if pair.seconds is not None:
            return None  # a clock (`time: 10:30:01`), not the time of a step
        if "/" in unit:
            seconds = step_seconds_of_rate(pair)
            return (concept, seconds) if seconds is not None else None
        scale = _time_scale(unit)
        return (concept, value * scale) if scale is not None else None
    if concept == "step_rate":
        if not math.isfinite(value) or value <= 0:
            return None
        return "step_time", 1.0 / value
    if "/" in unit and (seconds := step_seconds_of_rate(pair)) is not None:
        return "step_time", seconds  # `speed: 1.79 step/s`
    if concept == "eta":
        if pair.seconds is not None:
            return concept, pair.seconds
        scale = _time_scale(unit)
        return (concept, value * scale) if scale is not None else None
    if concept == "mfu":
        return concept, value / 100.0 if unit == "%" or value > 1.0 else value
    if concept in ("device_flops", "throughput"):
        return _flops(pair)
    return None


def _flops(pair: Pair) -> tuple[str, float] | None:
    """FLOP/s from a key or unit that names them: ``TFLOPs: 175.3``, ``(TFLOP/s/GPU)``,
    ``88.2T`` (MindFormers' throughput per NPU)."""
    text = (" ".join(pair.tokens) + " " + pair.unit).lower()
    match = re.search(r"([kgtpe]?)flop", text)
    if match is not None:
        return "device_flops", pair.value * _FLOP_SCALE[match.group(1)]
    suffix = pair.unit.strip().lower()
    if suffix in ("k", "g", "t", "p", "e"):
        return "device_flops", pair.value * _FLOP_SCALE[suffix]
    return None
