"""Synthetic training logs in real frameworks' formats, and the preview's tail window.

A *stream* is an iterator of ``(unix time, bytes)`` chunks with non-decreasing times; the
simulator appends a chunk to a task's log once its clock reaches the chunk's time. A stream
draws all randomness from its own ``seeded(seed)`` and prints timestamps derived from
the chunk times, so its bytes depend only on the seed and the start time, never on when or
how often the log is read.

Formats: ModelArts platform lines (``[ModelArts Service Log]...`` and ``key=value ...
Platform=ModelArts-Service``), HF Trainer tqdm frames and loss dicts, NCCL INFO lines,
MindSpore LossMonitor/TimeMonitor, Megatron iteration lines, torchvision MetricLogger,
a CUDA OOM traceback, ultralytics YOLO epochs.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

Chunk = tuple[float, bytes]
LineStream = Iterator[Chunk]
# A part of a stream: yields chunks and returns the time its last chunk was written at.
_Part = Generator[Chunk, None, float]

# ModelArts platform components print Beijing time; user code in the container prints UTC.
PLATFORM_TZ = timezone(timedelta(hours=8))
JOB_DIR = "/home/ma-user/modelarts/user-job-dir"
CONDA = "/home/ma-user/anaconda3/envs/PyTorch-2.1.0/lib/python3.10/site-packages"


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """Whose log it is: the job and the task (node) ``index`` of ``count``."""

    job_id: str
    job_name: str
    index: int = 0
    count: int = 1

    @property
    def task(self) -> str:
        return f"worker-{self.index}"

    @property
    def host(self) -> str:
        return f"modelarts-job-{self.job_id}-{self.task}"


def seeded(seed: str) -> random.Random:
    """The generator behind synthetic data; a string seed reproduces across runs."""
    return random.Random(seed)  # noqa: S311 - test data, not secrets


# --- the preview window -----------------------------------------------------------------


def _sequence_length(lead: int) -> int:
    if 0xC0 <= lead < 0xE0:
        return 2
    if 0xE0 <= lead < 0xF0:
        return 3
    if 0xF0 <= lead < 0xF8:
        return 4
    return 1


def decode_window(raw: bytes, *, cut: bool) -> str:
    """The text of a tail window ``raw`` of a log, as the preview's ``content``.

    When the window was ``cut`` out of a longer log, up to 3 leading UTF-8 continuation
    bytes (the rest of a character that began before the window) are dropped. An
    incomplete UTF-8 sequence at the end (a writer that flushed half a character) is
    dropped too. Everything else decodes with ``errors="replace"``.
    """
    start = 0
    if cut:
        while start < min(3, len(raw)) and raw[start] & 0xC0 == 0x80:
            start += 1
    end = len(raw)
    for back in range(1, min(3, end - start) + 1):
        byte = raw[end - back]
        if byte & 0xC0 != 0x80:
            if _sequence_length(byte) > back:
                end -= back
            break
    return str(memoryview(raw)[start:end], "utf-8", "replace")


# --- line formats --------------------------------------------------------------------------


def _platform_time(t: float) -> datetime:
    return datetime.fromtimestamp(t, PLATFORM_TZ)


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _millis(d: datetime) -> str:
    return f"{d.microsecond // 1000:03d}"


def platform_info(t: float, message: str, level: str = "INFO") -> str:
    """``[ModelArts Service Log][INFO][2026/11/26 10:00:01,123]: message``"""
    d = _platform_time(t)
    return f"[ModelArts Service Log][{level}][{d:%Y/%m/%d %H:%M:%S},{_millis(d)}]: {message}\n"


def platform_marker(message: str) -> str:
    """``[Modelarts Service Log]message`` (the lower-case ``a`` spelling the platform uses)."""
    return f"[Modelarts Service Log]{message}\n"


def platform_kv(t: float, message: str, *, source: str, command: str, level: str = "info") -> str:
    """A ``time=... level=... msg=... Platform=ModelArts-Service`` toolkit line."""
    stamp = _platform_time(t).replace(microsecond=0).isoformat()
    return (
        f'time="{stamp}" level={level} msg="{message}" file="{source}" Command={command} '
        "Component=ma-training-toolkit Platform=ModelArts-Service\n"
    )


def python_logging_time(t: float) -> str:
    """``2026-11-26 10:00:01,123``, the stdlib logging ``asctime``."""
    d = _utc(t)
    return f"{d:%Y-%m-%d %H:%M:%S},{_millis(d)}"


def _interval(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


_PARTIAL_BLOCKS = " ▏▎▍▌▋▊▉"


def tqdm_frame(n: int, total: int, elapsed: float, *, prefix: str = "", unit: str = "it") -> str:
    """One tqdm progress frame with a 10-character bar, as tqdm writes to a file."""
    frac = min(1.0, n / total)
    filled = frac * 10
    full = int(filled)
    bar = "█" * full
    if full < 10:
        bar += _PARTIAL_BLOCKS[int((filled - full) * 8)] + " " * (9 - full)
    rate = n / elapsed if elapsed > 0 else 0.0
    remaining = _interval((total - n) / rate) if rate else "?"
    if rate == 0:
        speed = f"?{unit}/s"
    elif rate < 1:
        speed = f"{1 / rate:5.2f}s/{unit}"
    else:
        speed = f"{rate:5.2f}{unit}/s"
    return (
        f"{prefix}{frac * 100:3.0f}%|{bar}| {n}/{total} [{_interval(elapsed)}<{remaining}, {speed}]"
    )


def megatron_iteration(
    iteration: int,
    train_iters: int,
    *,
    consumed: int,
    elapsed_ms: float,
    lr: float,
    global_batch: int,
    loss: float | None,
    loss_scale: float,
    grad_norm: float | None,
    skipped: int,
    tflops: float | None = None,
    seq_length: int = 2048,
    gpus: int = 16,
) -> str:
    """A Megatron-LM ``training_log`` line (the Megatron-DeepSpeed flavour, with its
    throughput fields); a skipped iteration prints no loss or grad norm."""
    parts = [
        f" iteration {iteration:8d}/{train_iters:8d} |",
        f" consumed samples: {consumed:12d} |",
        f" elapsed time per iteration (ms): {elapsed_ms:.1f} |",
    ]
    if tflops is not None:
        parts.append(f" throughput per GPU (TFLOP/s/GPU): {tflops:.1f} |")
    parts += [
        f" learning rate: {lr:.3E} |",
        f" global batch size: {global_batch:5d} |",
    ]
    if loss is not None:
        parts.append(f" lm loss: {loss:.6E} |")
    parts.append(f" loss scale: {loss_scale:.1f} |")
    if grad_norm is not None:
        parts.append(f" grad norm: {grad_norm:.3f} |")
    parts.append(f" number of skipped iterations: {skipped:3d} |")
    parts.append(f" number of nan iterations: {0:3d} |")
    if elapsed_ms > 0:
        samples = global_batch / (elapsed_ms / 1000)
        parts.append(f" samples per second: {samples:.3f} |")
        parts.append(f" tokens per gpu per second (tgs): {samples * seq_length / gpus:.1f} |")
    return "".join(parts) + "\n"


def _decaying(rng: random.Random, step: float, start: float, floor: float, tau: float) -> float:
    """A training loss at ``step``: exponential decay towards ``floor`` plus noise."""
    mean = floor + (start - floor) * math.exp(-step / tau)
    return max(floor * 0.5, mean + rng.gauss(0.0, 0.03 * mean))


def _cosine_lr(step: int, peak: float, warmup: int, total: int) -> float:
    if step < warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


# --- shared parts ----------------------------------------------------------------------


def platform_prelude(rng: random.Random, t: float, info: TaskInfo, command: str) -> _Part:
    """What the ModelArts toolkit prints before the user's command starts."""
    code_url = f"s3://modelarts-sim/{info.job_name}/code/"
    t += rng.uniform(0.02, 0.08)
    yield t, f"[ModelArts Service Log][init] download code_url: {code_url}\n".encode()
    t += rng.uniform(0.05, 0.2)
    yield t, platform_info(t, f"download {code_url} to {JOB_DIR}/code succeeded").encode()
    t += rng.uniform(0.02, 0.1)
    upload = "start the periodic upload task, upload period = 5 seconds "
    yield t, platform_kv(t, upload, source="upload.go:46", command="obs/upload").encode()
    t += rng.uniform(0.02, 0.1)
    env = f"MA_TASK_NAME=worker VC_TASK_INDEX={info.index} MA_NUM_HOSTS={info.count}"
    yield t, platform_info(t, env).encode()
    t += rng.uniform(0.01, 0.05)
    yield t, platform_info(t, f"user command: {command}").encode()
    return t


def platform_epilogue(rng: random.Random, t: float, code: int) -> _Part:
    """The platform's lines after the user's process ended with ``code``."""
    t += rng.uniform(0.1, 0.3)
    yield t, platform_marker(f"Training end with return code: {code}").encode()
    t += rng.uniform(0.05, 0.2)
    reason = "training finished" if code == 0 else "training failed"
    text = platform_info(t, f"output-handler finalizing due to: [{reason}]")
    text += platform_info(t, "output-handler finalized")
    yield t, text.encode()
    t += rng.uniform(0.05, 0.2)
    yield t, platform_marker(f"exit with {code}").encode()
    return t


def _upload_line(rng: random.Random, t: float, info: TaskInfo) -> str:
    files = rng.randint(1, 6)
    message = f"upload {files} files to s3://modelarts-sim/{info.job_name}/output/ done"
    return platform_kv(t, message, source="upload.go:112", command="obs/upload")


def nccl_init(rng: random.Random, t: float, info: TaskInfo, *, gpus: int = 8) -> _Part:
    """NCCL INFO lines of one node's local rank 0 joining a ``count``-node communicator."""
    pid = rng.randint(90, 900)
    prefix = f"{info.host}:{pid}:{pid + rng.randint(60, 240)} [0]"
    rank, nranks = info.index * gpus, info.count * gpus
    comm = f"0x{rng.getrandbits(40):x}"
    lines = [
        f"{prefix} NCCL INFO Bootstrap : Using eth0:172.16.{info.index}.{rng.randint(2, 250)}<0>",
        f"{prefix} NCCL INFO NET/Plugin : No plugin found (libnccl-net.so), "
        "using internal implementation",
        f"{prefix} NCCL INFO cudaDriverVersion 12020",
    ]
    if info.index == 0:
        lines.append(f"{prefix} NCCL INFO NCCL version 2.18.6+cuda12.1")
    lines += [
        f"{prefix} NCCL INFO NET/IB : Using [0]mlx5_0:1/RoCE [RO]; "
        f"OOB eth0:172.16.{info.index}.7<0>",
        f"{prefix} NCCL INFO Using network IB",
        f"{prefix} NCCL INFO comm {comm} rank {rank} nranks {nranks} cudaDev 0 nvmlDev 0 "
        "busId 1a000 - Init START",
        f"{prefix} NCCL INFO Connected all rings",
        f"{prefix} NCCL INFO Connected all trees",
        f"{prefix} NCCL INFO comm {comm} rank {rank} nranks {nranks} cudaDev 0 busId 1a000 "
        "commId 0x{:x} - Init COMPLETE".format(rng.getrandbits(64)),
    ]
    for line in lines:
        t += rng.uniform(0.001, 0.05)
        yield t, (line + "\n").encode()
    return t


_TORCH_WARNINGS = (
    f"{CONDA}/torch/utils/checkpoint.py:464: UserWarning: torch.utils.checkpoint: the "
    "use_reentrant parameter should be passed explicitly. In version 2.4 we will raise an "
    "exception if use_reentrant is not passed. use_reentrant=False is recommended.\n"
    "  warnings.warn(\n",
    f"{CONDA}/torch/nn/modules/module.py:1501: UserWarning: Using a target size "
    "(torch.Size([4, 1])) that is different to the input size (torch.Size([4])). This will "
    "likely lead to incorrect results due to broadcasting.\n"
    "  return forward_call(*args, **kwargs)\n",
    f"{CONDA}/torch/optim/lr_scheduler.py:143: UserWarning: Detected call of "
    "`lr_scheduler.step()` before `optimizer.step()`.\n"
    '  warnings.warn("Detected call of `lr_scheduler.step()` before `optimizer.step()`. "\n',
)


# --- HuggingFace Trainer (job "llm-sft-qwen2-7b") --------------------------------------


def hf_trainer_stream(
    seed: str,
    start: float,
    info: TaskInfo,
    *,
    total_steps: int = 60_000,
    step_seconds: float = 0.4,
    logging_steps: int = 5,
    eval_steps: int = 500,
) -> LineStream:
    """The main process of an HF ``Trainer`` SFT run: a tqdm frame per step (``\\r``,
    no newline) with a loss dict glued on every ``logging_steps``, an evaluation dict every
    ``eval_steps``, plus noise lines."""
    rng = seeded(seed)
    command = (
        f"python {JOB_DIR}/code/train_sft.py --model_name_or_path /cache/models/Qwen2-7B "
        "--dataset alpaca_zh --bf16 --per_device_train_batch_size 4 --logging_steps "
        f"{logging_steps}"
    )
    t = yield from platform_prelude(rng, start, info, command)
    t = yield from nccl_init(rng, t, info)
    steps_per_epoch = total_steps / 3
    startup = [
        (
            "INFO|configuration_utils.py:731",
            "loading configuration file /cache/models/Qwen2-7B/config.json",
        ),
        (
            "INFO|modeling_utils.py:3474",
            "loading weights file /cache/models/Qwen2-7B/model.safetensors.index.json",
        ),
        (
            "WARNING|logging.py:329",
            "`use_cache=True` is incompatible with gradient "
            "checkpointing. Setting `use_cache=False`.",
        ),
        ("INFO|trainer.py:2128", "***** Running training *****"),
        ("INFO|trainer.py:2129", "  Num examples = 52,002"),
        ("INFO|trainer.py:2130", "  Num Epochs = 3"),
        ("INFO|trainer.py:2131", "  Instantaneous batch size per device = 4"),
        (
            "INFO|trainer.py:2134",
            "  Total train batch size (w. parallel, distributed & accumulation) = 128",
        ),
        ("INFO|trainer.py:2136", f"  Total optimization steps = {total_steps:,}"),
        ("INFO|trainer.py:2137", "  Number of trainable parameters = 7,615,616,512"),
    ]
    for where, message in startup:
        t += rng.uniform(0.02, 0.5)
        yield t, f"[{where}] {python_logging_time(t)} >> {message}\n".encode()
    t += rng.uniform(1.0, 3.0)
    frame = tqdm_frame(4, 4, 9.2, prefix="Loading checkpoint shards: ")
    yield t, f"{frame}\n".encode()
    t += rng.uniform(0.5, 2.0)
    yield t, (tqdm_frame(52002, 52002, 4.4, prefix="Map: ", unit=" examples") + "\n").encode()
    train_start = t
    next_upload = t + rng.uniform(20, 40)
    for step in range(1, total_steps + 1):
        t += max(0.05, rng.gauss(step_seconds, step_seconds * 0.08))
        text = "\r" + tqdm_frame(step, total_steps, t - train_start)
        if step % logging_steps == 0:
            logs = {
                "loss": round(_decaying(rng, step, 1.95, 0.85, 4000), 4),
                "grad_norm": abs(rng.gauss(1.1, 0.3)) + 0.15,
                "learning_rate": _cosine_lr(step, 2e-5, 100, total_steps),
                "mfu": round(rng.gauss(0.41, 0.01), 4),
                "epoch": round(step / steps_per_epoch, 2),
            }
            text += f"{logs}\n"
            if step % eval_steps == 0:
                runtime = rng.uniform(38.0, 44.0)
                evaluation = {
                    "eval_loss": round(_decaying(rng, step, 2.05, 1.02, 4000), 4),
                    "eval_runtime": round(runtime, 4),
                    "eval_samples_per_second": round(2600 / runtime, 3),
                    "eval_steps_per_second": round(82 / runtime, 3),
                    "epoch": logs["epoch"],
                }
                text += f"{evaluation}\n"
            if rng.random() < 0.2:
                shard = rng.randrange(64)
                text += (
                    f"INFO:__main__:prefetched shard {shard:05d}-of-00064 from "
                    f"/cache/data/alpaca_zh ({rng.randint(700, 900)} rows)\n"
                )
            if rng.random() < 0.03:
                text += rng.choice(_TORCH_WARNINGS)
            if t >= next_upload:
                text += _upload_line(rng, t, info)
                next_upload = t + rng.uniform(20, 40)
        yield t, text.encode()


def hf_worker_stream(seed: str, start: float, info: TaskInfo) -> LineStream:
    """A non-main node of an HF run: no progress bar or losses (the Trainer prints those on
    global rank 0 only), just NCCL set-up, data loading, the odd warning, platform lines."""
    rng = seeded(seed)
    command = f"python {JOB_DIR}/code/train_sft.py --model_name_or_path /cache/models/Qwen2-7B"
    t = yield from platform_prelude(rng, start, info, command)
    t = yield from nccl_init(rng, t, info)
    while True:
        t += rng.uniform(4.0, 15.0)
        roll = rng.random()
        if roll < 0.5:
            text = _upload_line(rng, t, info)
        elif roll < 0.95:
            text = (
                f"INFO:__main__:[rank{info.index * 8}] prefetched shard "
                f"{rng.randrange(64):05d}-of-00064 ({rng.randint(700, 900)} rows)\n"
            )
        else:
            text = rng.choice(_TORCH_WARNINGS)
        yield t, text.encode()


# --- MindSpore on Ascend (job "resnet50-imagenet-ascend") ------------------------------


def _mindspore_time(t: float) -> str:
    d = _utc(t)
    return f"{d:%Y-%m-%d-%H:%M:%S}.{_millis(d)}.{d.microsecond % 1000:03d}"


def mindspore_stream(
    seed: str,
    start: float,
    info: TaskInfo,
    *,
    epochs: int = 90,
    steps_per_epoch: int = 1251,
    step_seconds: float = 0.15,
    print_every: int = 20,
) -> LineStream:
    """ResNet-50 on Ascend: MindSpore ``LossMonitor(per_print_times)`` lines
    (``epoch: 1 step: 120, loss is 4.8995576``) and a ``TimeMonitor`` line per epoch."""
    rng = seeded(seed)
    command = (
        f"python {JOB_DIR}/code/train.py --data_path=/cache/data/imagenet "
        "--config_path=resnet50_imagenet2012_config.yaml --device_target=Ascend"
    )
    t = yield from platform_prelude(rng, start, info, command)
    pid, tid = rng.randint(2000, 9000), rng.randint(281470000000000, 281479999999999)
    for source, message in (
        (
            "mindspore/run_check/_check_version.py:375",
            'MindSpore version 2.2.14 and "te" wheel package version 7.0 does not match. '
            "For details, refer to the installation guidelines: https://www.mindspore.cn/install",
        ),
        (
            "mindspore/dataset/core/validator_helpers.py:806",
            "'Decode' from mindspore.dataset.vision.c_transforms is deprecated from version "
            "1.8 and will be removed in a future version. Use 'Decode' from "
            "mindspore.dataset.vision instead.",
        ),
    ):
        t += rng.uniform(0.3, 2.0)
        stamp = _mindspore_time(t)
        yield t, f"[WARNING] ME({pid}:{tid},MainProcess):{stamp} [{source}] {message}\n".encode()
    t += rng.uniform(5.0, 20.0)
    yield t, b"============== Starting Training ==============\n"
    for epoch in range(1, epochs + 1):
        epoch_start = t
        for step in range(print_every, steps_per_epoch + 1, print_every):
            t += print_every * max(0.01, rng.gauss(step_seconds, step_seconds * 0.05))
            progress = epoch - 1 + step / steps_per_epoch
            loss = _decaying(rng, progress, 6.9, 1.6, 9.0)
            yield t, f"epoch: {epoch} step: {step}, loss is {loss:.8g}\n".encode()
        t += (steps_per_epoch % print_every) * step_seconds + rng.uniform(0.5, 2.0)
        epoch_ms = (t - epoch_start) * 1000
        per_step = epoch_ms / steps_per_epoch
        yield t, f"epoch time: {epoch_ms:.3f} ms, per step time: {per_step:.3f} ms\n".encode()


# --- Megatron-LM (job "gpt-pretrain-megatron") -----------------------------------------

MEGATRON_SETUP_SECONDS = 45.0


def _iteration_times(seed: str, start: float, mean: float) -> Iterator[float]:
    """When each training iteration ends; every rank of a job computes the same times."""
    rng = seeded(seed)
    t = start
    while True:
        t += max(mean * 0.5, rng.gauss(mean, mean * 0.06))
        yield t


def _megatron_setup(rng: random.Random, start: float, info: TaskInfo) -> _Part:
    command = (
        f"torchrun --nnodes {info.count} --nproc_per_node 8 {JOB_DIR}/code/pretrain_gpt.py "
        "--tensor-model-parallel-size 8 --num-layers 32 --hidden-size 4096 --fp16"
    )
    t = yield from platform_prelude(rng, start, info, command)
    t = yield from nccl_init(rng, t, info)
    if info.index == 0:
        when = _utc(t + 30).strftime("%Y-%m-%d %H:%M:%S")
        lines = [
            "using world size: 16, data-parallel size: 2, context-parallel size: 1, "
            "tensor-model-parallel size: 8, pipeline-model-parallel size: 1",
            "> building GPT model ...",
            " > number of parameters on (tensor, pipeline) model parallel rank (0, 0): 878346240",
            "> learning rate decay style: cosine",
            "> building train, validation, and test datasets ...",
            f"[after dataloaders are built] datetime: {when} ",
            "done with setup ...",
            "training ...",
        ]
        for line in lines:
            t += rng.uniform(0.5, 3.5)
            yield t, (line + "\n").encode()
    return t


def megatron_rank0_stream(
    seed: str,
    start: float,
    info: TaskInfo,
    *,
    iteration_seconds: float = 1.5,
    save_interval: int = 500,
) -> LineStream:
    """The first node of a Megatron job: set-up, a memory report, checkpoint saves. Megatron
    prints iteration lines on the last rank only, which lives on the last node."""
    rng = seeded(seed + ":0")
    yield from _megatron_setup(rng, start, info)
    train_start = start + MEGATRON_SETUP_SECONDS
    next_upload = train_start + rng.uniform(20, 60)
    times = _iteration_times(seed + ":iterations", train_start, iteration_seconds)
    for iteration, t in enumerate(times, 1):
        text = ""
        if iteration == 10:
            allocated = rng.uniform(17000, 19000)
            text += (
                f"[Rank 0] (after 10 iterations) memory (MB) | allocated: {allocated:.1f} | "
                f"max allocated: {allocated * 1.55:.1f} | reserved: 31220.0 | "
                "max reserved: 31220.0\n"
            )
        if iteration % save_interval == 0:
            path = "/cache/ckpt/gpt-7b"
            text += f"saving checkpoint at iteration {iteration:7d} to {path}\n"
            text += f"  successfully saved checkpoint at iteration {iteration:7d} to {path}\n"
        if t >= next_upload:
            text += _upload_line(rng, t, info)
            next_upload = t + rng.uniform(20, 60)
        if text:
            yield t, text.encode()


def megatron_last_rank_stream(
    seed: str,
    start: float,
    info: TaskInfo,
    *,
    iteration_seconds: float = 1.5,
    train_iters: int = 250_000,
    global_batch: int = 512,
    eval_interval: int = 200,
) -> LineStream:
    """The last node of a Megatron job: an iteration line per iteration (log interval 1),
    a validation block every ``eval_interval``. fp16 dynamic loss scaling now and then
    skips an iteration (no loss, scale halves)."""
    rng = seeded(seed + f":{info.index}")
    yield from _megatron_setup(rng, start, info)
    times = _iteration_times(
        seed + ":iterations", start + MEGATRON_SETUP_SECONDS, iteration_seconds
    )
    loss_scale, clean = 65536.0, 0
    previous = start + MEGATRON_SETUP_SECONDS
    for iteration, t in enumerate(times, 1):
        skipped = rng.random() < 0.003
        if skipped:
            loss_scale, clean = max(1.0, loss_scale / 2), 0
        else:
            clean += 1
            if clean == 1000:
                loss_scale, clean = loss_scale * 2, 0
        line = megatron_iteration(
            iteration,
            train_iters,
            consumed=iteration * global_batch,
            elapsed_ms=(t - previous) * 1000,
            lr=_cosine_lr(iteration, 3e-4, 2000, train_iters),
            global_batch=global_batch,
            loss=None if skipped else _decaying(rng, iteration, 10.8, 2.4, 700),
            loss_scale=loss_scale,
            grad_norm=None if skipped else abs(rng.gauss(0.9, 0.25)) + 0.1,
            skipped=int(skipped),
            tflops=rng.gauss(182.0, 4.0) * iteration_seconds / max(t - previous, 0.1),
        )
        if iteration % eval_interval == 0:
            value = _decaying(rng, iteration, 11.0, 2.6, 700)
            rule = "-" * 100
            line += (
                f"{rule}\n validation loss at iteration {iteration} | lm loss value: "
                f"{value:.6E} | lm loss PPL: {math.exp(min(value, 50)):.6E} |\n{rule}\n"
            )
        previous = t
        yield t, line.encode()


# --- a fine-tuning run that dies of CUDA OOM (job "bert-large-finetune") --------------


def _oom_traceback(rng: random.Random) -> str:
    site = "/home/ma-user/anaconda3/envs/PyTorch-2.5.1/lib/python3.10/site-packages"
    free = rng.uniform(0.9, 1.6)
    in_use = 31.74 - free - 0.02
    allocated = in_use - rng.uniform(1.5, 2.5)
    reserved = in_use - allocated - 0.3
    return (
        "Traceback (most recent call last):\n"
        f'  File "{JOB_DIR}/code/run_squad.py", line 412, in <module>\n'
        "    main()\n"
        f'  File "{JOB_DIR}/code/run_squad.py", line 389, in main\n'
        "    train_one_epoch(model, optimizer, lr_scheduler, train_loader, device, epoch, args)\n"
        f'  File "{JOB_DIR}/code/engine.py", line 58, in train_one_epoch\n'
        "    outputs = model(**batch)\n"
        f'  File "{site}/torch/nn/modules/module.py", line 1736, in _wrapped_call_impl\n'
        "    return self._call_impl(*args, **kwargs)\n"
        f'  File "{site}/torch/nn/modules/module.py", line 1747, in _call_impl\n'
        "    return forward_call(*args, **kwargs)\n"
        f'  File "{site}/transformers/models/bert/modeling_bert.py", line 1866, in forward\n'
        "    outputs = self.bert(\n"
        f'  File "{site}/transformers/models/bert/modeling_bert.py", line 361, in forward\n'
        "    attention_probs = nn.functional.softmax(attention_scores, dim=-1)\n"
        f'  File "{site}/torch/nn/functional.py", line 2140, in softmax\n'
        "    ret = input.softmax(dim)\n"
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
        f"total capacity of 31.74 GiB of which {free:.2f} GiB is free. Process "
        f"{rng.randint(1000, 40000)} has {in_use:.2f} GiB memory in use. Of the allocated "
        f"memory {allocated:.2f} GiB is allocated by PyTorch, and {reserved:.2f} GiB is "
        "reserved by PyTorch but unallocated. If reserved but unallocated memory is large "
        "try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid "
        "fragmentation.  See documentation for Memory Management  "
        "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)\n"
    )


def cuda_oom_stream(
    seed: str, start: float, info: TaskInfo, *, train_seconds: float = 3.7, oom_at: float = 4.0
) -> LineStream:
    """torchvision ``MetricLogger`` lines for ``train_seconds``, a CUDA OOM traceback at
    ``start + oom_at``, then the platform's ``Training end with return code: 1`` and
    ``exit with 1``."""
    rng = seeded(seed)
    command = f"python {JOB_DIR}/code/run_squad.py --model bert-large-uncased --batch-size 64"
    t = yield from platform_prelude(rng, start, info, command)
    t += rng.uniform(0.05, 0.15)
    yield (
        t,
        (
            b"Some weights of BertForQuestionAnswering were not initialized from the model "
            b"checkpoint at bert-large-uncased and are newly initialized: ['qa_outputs.bias', "
            b"'qa_outputs.weight']\nYou should probably TRAIN this model on a down-stream task to "
            b"be able to use it for predictions and inference.\n"
        ),
    )
    total, step, losses = 5533, 0, []
    while True:
        interval = rng.uniform(0.3, 0.4)
        if t + interval > start + train_seconds:
            break
        t += interval
        losses.append(_decaying(rng, step, 6.0, 1.2, 400))
        recent = sorted(losses[-20:])
        eta = timedelta(seconds=int((total - step) * interval / 10))
        yield (
            t,
            (
                f"Epoch: [0]  [{step:>4}/{total}]  eta: {eta}  lr: 0.000030  "
                f"loss: {recent[len(recent) // 2]:.4f} ({sum(losses) / len(losses):.4f})  "
                f"time: {interval / 10:.4f}  data: {rng.uniform(0.001, 0.003):.4f}  "
                f"max mem: {rng.randint(27000, 29500)}\n"
            ).encode(),
        )
        step += 10
    t = max(t, start + oom_at + rng.uniform(0.0, 0.1))
    yield t, _oom_traceback(rng).encode()
    yield from platform_epilogue(rng, t, 1)


# --- a completed YOLO run (job "yolov8-detect-coco") ----------------------------------


def yolo_stream(
    seed: str, start: float, end: float, info: TaskInfo, *, epochs: int = 10
) -> LineStream:
    """An ultralytics YOLOv8 detection run spanning ``start``..``end`` that ends with
    ``exit with 0``; every chunk's time lies inside that span."""
    rng = seeded(seed)
    span = end - start
    t = yield from platform_prelude(rng, start, info, "yolo detect train data=coco.yaml")
    banner = (
        "Ultralytics YOLOv8.1.47 🚀 Python-3.10.14 torch-2.1.0 CUDA:0 "
        "(Tesla V100-SXM2-32GB, 32501MiB)\n"
    )
    setup = [
        banner,
        "engine/trainer: task=detect, mode=train, model=yolov8s.pt, data=coco.yaml, "
        f"epochs={epochs}, batch=128, imgsz=640, device=0, workers=8, project=/cache/output\n",
        "Transferred 349/355 items from pretrained weights\n",
        "AMP: running Automatic Mixed Precision (AMP) checks with YOLOv8n...\n",
        "AMP: checks passed ✅\n",
        "train: Scanning /cache/datasets/coco/labels/train2017.cache... 117266 images, "
        "1021 backgrounds, 0 corrupt: " + tqdm_frame(118287, 118287, 0.0) + "\n",
        "optimizer: SGD(lr=0.01, momentum=0.937) with parameter groups 57 weight(decay=0.0), "
        "64 weight(decay=0.001), 63 bias(decay=0.0)\n",
        "Image sizes 640 train, 640 val\nUsing 8 dataloader workers\n"
        f"Starting training for {epochs} epochs...\n",
    ]
    for text in setup:
        t += span * 0.002 * rng.uniform(0.5, 1.0)
        yield t, text.encode()
    header = "\n      Epoch    GPU_mem   box_loss   cls_loss   dfl_loss  Instances       Size\n"
    batches, val_batches = 925, 40
    epoch_seconds = span * 0.9 / epochs
    m_ap = 0.30
    for epoch in range(1, epochs + 1):
        epoch_start = t
        losses = [_decaying(rng, epoch, base, base * 0.7, 4.0) for base in (1.45, 1.9, 1.35)]
        row = (
            f"{epoch:>7}/{epochs}    {rng.uniform(11.0, 12.5):6.3g}G   "
            + "   ".join(f"{value:8.4g}" for value in losses)
            + f"   {rng.randint(150, 260):8d}        640: "
        )
        text = header
        for n in (batches // 4, batches // 2, 3 * batches // 4, batches):
            text += "\r" + row + tqdm_frame(n, batches, epoch_seconds * 0.9 * n / batches)
        t = epoch_start + epoch_seconds * 0.9
        yield t, (text + "\n").encode()
        m_ap = min(0.45, m_ap + rng.uniform(0.005, 0.02))
        val = (
            "                 Class     Images  Instances      Box(P          R      mAP50  "
            "mAP50-95): " + tqdm_frame(val_batches, val_batches, epoch_seconds * 0.1) + "\n"
            f"                   all       5000      36335      {m_ap + 0.25:.3f}      "
            f"{m_ap + 0.15:.3f}      {m_ap * 1.4:.3f}      {m_ap:.3f}\n"
        )
        t = epoch_start + epoch_seconds
        yield t, val.encode()
    closing = [
        f"\n{epochs} epochs completed in {span * 0.9 / 3600:.3f} hours.\n",
        "Optimizer stripped from /cache/output/train/weights/last.pt, 22.5MB\n",
        "Validating /cache/output/train/weights/best.pt...\n" + banner,
        "Model summary (fused): 168 layers, 11156544 parameters, 0 gradients, 28.6 GFLOPs\n",
        "Speed: 0.2ms preprocess, 1.9ms inference, 0.0ms loss, 1.1ms postprocess per image\n",
        "Results saved to /cache/output/train\n",
    ]
    for text in closing:
        t += span * 0.005 * rng.uniform(0.5, 1.0)
        yield t, text.encode()
    rest = seeded(seed + ":end")
    yield from platform_epilogue(rest, min(t, end - 1.0), 0)


# --- scale scenario: cheap, varied, endless -------------------------------------------


def _scale_line(rng: random.Random, t: float, step: int, info: TaskInfo) -> str:
    roll = rng.random()
    if roll < 0.45:
        return megatron_iteration(
            step,
            500_000,
            consumed=step * 256,
            elapsed_ms=rng.uniform(900, 1100),
            lr=1.5e-4,
            global_batch=256,
            loss=2.0 + 6.0 / (1.0 + step / 500) + rng.gauss(0, 0.02),
            loss_scale=1.0,
            grad_norm=rng.uniform(0.2, 0.6),
            skipped=0,
        )
    if roll < 0.85:
        loss = round(0.8 + 1.2 / (1.0 + step / 800) + rng.gauss(0, 0.01), 4)
        return (
            tqdm_frame(step % 10_000, 10_000, 1.0 + (step % 10_000) * 0.4)
            + f"{{'loss': {loss}, 'grad_norm': {rng.uniform(0.5, 2.5)}, "
            f"'learning_rate': 1.9e-05, 'epoch': {step / 3300:.2f}}}\n"
        )
    if roll < 0.95:
        return _upload_line(rng, t, info)
    return platform_info(t, f"heartbeat of {info.task} ok, step {step}")


@dataclass(frozen=True, slots=True)
class Block:
    """A pregenerated run of log lines and the step the next line continues from."""

    data: bytes
    next_step: int


def scale_block(seed: str, size: int, end: float) -> Block:
    """About ``size`` bytes of complete, varied lines, timestamped up to ``end``."""
    rng = seeded(seed)
    info = TaskInfo("00000000-0000-4000-8000-000000000000", "scale-base")
    lines: list[str] = []
    written, step = 0, 1
    while written < size:
        # timestamps spread back from ``end`` at about 1 kB per second
        line = _scale_line(rng, end - (size - written) / 1000.0, step, info)
        lines.append(line)
        written += len(line.encode())
        step += 1
    return Block("".join(lines).encode(), step)


def scale_growth_stream(
    seed: str, start: float, info: TaskInfo, *, bytes_per_second: float, first_step: int
) -> LineStream:
    """Endless lines written so that the log grows by about ``bytes_per_second``."""
    rng = seeded(seed)
    written = 0
    for step in itertools.count(first_step):
        t = start + written / bytes_per_second
        data = _scale_line(rng, t, step, info).encode()
        written += len(data)
        yield start + written / bytes_per_second, data
