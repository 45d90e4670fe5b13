"""Scripted scenarios: jobs whose logs grow and whose phases change with the clock.

A Scenario is a description; ``Scenario.install`` turns it into jobs of a SimModel at a start
time. Offsets are seconds relative to that start (negative: before it). The simulator then
advances the scenario lazily: every request applies the phase changes that are due, and a
read of a log first appends the scripted chunks that are due (``Simulator.advance`` does
all of it at once).
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from . import logs
from .logs import LineStream, TaskInfo
from .model import (
    DEFAULT_ENGINE,
    DEFAULT_FLAVOR,
    SimJob,
    SimModel,
    TaskLog,
    validate_phase,
)
from .platform import SimRestart

# The scenario's start time (Unix seconds) -> the task's stream / the log's first bytes.
StreamFactory = Callable[[float], LineStream]
PrefixFactory = Callable[[float], bytes]


@dataclass(frozen=True)
class TaskScript:
    """One task: its log starts with ``prefix`` (shared, immutable) and grows by ``stream``."""

    name: str
    stream: StreamFactory | None = None
    prefix: PrefixFactory | None = None


@dataclass(frozen=True)
class JobScript:
    """One job at the scenario's start, and the phase changes scripted for later.

    ``ended`` is for jobs already terminal at the start: the duration runs from
    ``started`` to it. ``restarts`` (``SimRestart.at`` an offset too) end a run and
    start the next, before the start or scripted for later; ``events`` are extra
    ``(offset, level, message, source)`` events beside the ones the job's life writes;
    ``metrics`` fixes task metrics: task -> metric -> percent (None: no sample).
    """

    name: str
    job_id: str
    phase: str
    tasks: tuple[TaskScript, ...] = ()
    engine: tuple[str, str] = DEFAULT_ENGINE
    flavor: str = DEFAULT_FLAVOR
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    phase_changes: tuple[tuple[float, str], ...] = ()
    restarts: tuple[SimRestart, ...] = ()
    events: tuple[tuple[float, str, str, str], ...] = ()
    metrics: tuple[tuple[str, tuple[tuple[str, float | None], ...]], ...] = ()


@dataclass(frozen=True)
class Scenario:
    """A set of scripted jobs (see the module docstring)."""

    jobs: tuple[JobScript, ...]

    def install(self, model: SimModel, start: float) -> None:
        """Add the jobs to ``model`` with ``start`` as offset 0 and schedule their changes."""
        for script in self.jobs:
            tasks = {
                task.name: TaskLog(
                    prefix=task.prefix(start) if task.prefix else b"",
                    stream=task.stream(start) if task.stream else None,
                )
                for task in script.tasks
            }
            job = SimJob(
                id=script.job_id,
                name=script.name,
                phase=validate_phase(script.phase),
                tasks=tasks,
                create_time=start + script.created,
                seq=model.next_seq(),
                start_time=None if script.started is None else start + script.started,
                engine=script.engine,
                flavor=script.flavor,
                metric_overrides={task: dict(values) for task, values in script.metrics},
            )
            job.record_created()
            if job.start_time is not None:
                job.record_started(job.start_time)
            for offset, level, message, source in script.events:
                job.add_event(start + offset, level, message, source)
            later = []
            for scripted in sorted(script.restarts, key=lambda r: r.at):
                restart = dataclasses.replace(scripted, at=start + scripted.at)
                if restart.at <= start:
                    job.restart(restart)
                else:
                    later.append(restart)
            if script.ended is not None:
                job.set_phase(script.phase, start + script.ended, exit_code=script.exit_code)
            model.add(job)
            for offset, phase in script.phase_changes:
                model.schedule(start + offset, script.job_id, phase)
            for restart in later:
                model.schedule_restart(script.job_id, restart)


def _job_id(seed: int | str, name: str) -> str:
    return str(uuid.UUID(int=logs.seeded(f"{seed}:{name}:id").getrandbits(128), version=4))


def demo_scenario(seed: int = 2026) -> Scenario:
    """Six jobs for the demo and the tests; ``t`` is seconds after the simulator's start.

    - ``llm-sft-qwen2-7b``: PyTorch, 2 tasks, Running since t=-900. worker-0 prints HF
      Trainer tqdm frames with a loss dict every 5 steps (~2 s), worker-1 NCCL/data lines.
    - ``resnet50-imagenet-ascend``: MindSpore on Ascend, 1 task, Running since t=-1500;
      a LossMonitor line every ~3 s and a TimeMonitor line per epoch (~3 min).
    - ``gpt-pretrain-megatron``: Megatron, 2 tasks, Running since t=-1800; worker-1 (the
      last rank) prints an iteration line every ~1.5 s, now and then a skipped one.
      ModelArts recovered it twice (t=-1500 worker-1 ``exit with 137``, rescheduled;
      t=-1080 worker-0 NCCL timeout, restarted in place) and does again at t=20.
    - ``bert-large-finetune``: PyTorch, 1 task, Running from t=0: training lines until
      t~3.7, a CUDA OOM traceback at t~4, ``exit with 1`` by t~4.7, Failed at t=5.
    - ``yolov8-detect-coco``: Completed at t=-600 after 30 minutes, log ends ``exit with 0``.
    - ``llama-pretrain-queued``: Pending, no tasks; the scheduler's Warning events say
      why (no free GPUs).

    Every job has the events its life writes (created, running, per task started and
    finished with its exit code, failed...); GPU jobs report GPU and Ascend jobs NPU
    utilisation between 65 and 99 %.

    Jobs that ran before t=0 have their log up to t=0 at once. The same ``seed`` and the
    same clock readings give the same bytes.
    """

    def info(name: str, index: int = 0, count: int = 1) -> TaskInfo:
        return TaskInfo(_job_id(seed, name), name, index, count)

    llm, resnet, gpt = "llm-sft-qwen2-7b", "resnet50-imagenet-ascend", "gpt-pretrain-megatron"
    bert, yolo, llama = "bert-large-finetune", "yolov8-detect-coco", "llama-pretrain-queued"
    return Scenario(
        jobs=(
            JobScript(
                name=llm,
                job_id=_job_id(seed, llm),
                phase="Running",
                tasks=(
                    TaskScript(
                        "worker-0",
                        stream=lambda s: logs.hf_trainer_stream(
                            f"{seed}:{llm}:0", s - 900, info(llm, 0, 2)
                        ),
                    ),
                    TaskScript(
                        "worker-1",
                        stream=lambda s: logs.hf_worker_stream(
                            f"{seed}:{llm}:1", s - 900, info(llm, 1, 2)
                        ),
                    ),
                ),
                flavor="modelarts.bm.gpu.8v100",
                created=-960,
                started=-900,
            ),
            JobScript(
                name=resnet,
                job_id=_job_id(seed, resnet),
                phase="Running",
                tasks=(
                    TaskScript(
                        "worker-0",
                        stream=lambda s: logs.mindspore_stream(
                            f"{seed}:{resnet}:0", s - 1500, info(resnet)
                        ),
                    ),
                ),
                engine=("MindSpore", "MindSpore-2.2.14-python3.9-aarch64"),
                flavor="modelarts.kat1.8xlarge",
                created=-1620,
                started=-1500,
            ),
            JobScript(
                name=gpt,
                job_id=_job_id(seed, gpt),
                phase="Running",
                tasks=(
                    TaskScript(
                        "worker-0",
                        stream=lambda s: logs.megatron_rank0_stream(
                            f"{seed}:{gpt}", s - 1800, info(gpt, 0, 2)
                        ),
                    ),
                    TaskScript(
                        "worker-1",
                        stream=lambda s: logs.megatron_last_rank_stream(
                            f"{seed}:{gpt}", s - 1800, info(gpt, 1, 2)
                        ),
                    ),
                ),
                flavor="modelarts.bm.gpu.8v100",
                created=-1890,
                started=-1800,
                restarts=(
                    SimRestart(-1500.0, "exit with 137", "pod_reschedule", "worker-1"),
                    SimRestart(-1080.0, "NCCL watchdog timeout", "proc_restart", "worker-0"),
                    SimRestart(20.0, "exit with 139", "gpu_proc_restart", "worker-1"),
                ),
            ),
            JobScript(
                name=bert,
                job_id=_job_id(seed, bert),
                phase="Running",
                tasks=(
                    TaskScript(
                        "worker-0",
                        stream=lambda s: logs.cuda_oom_stream(f"{seed}:{bert}:0", s, info(bert)),
                    ),
                ),
                engine=("PyTorch", "PyTorch-2.5.1-python3.10"),
                created=-70,
                started=0,
                phase_changes=((5.0, "Failed"),),
            ),
            JobScript(
                name=yolo,
                job_id=_job_id(seed, yolo),
                phase="Completed",
                tasks=(
                    TaskScript(
                        "worker-0",
                        stream=lambda s: logs.yolo_stream(
                            f"{seed}:{yolo}:0", s - 2400, s - 600, info(yolo)
                        ),
                    ),
                ),
                created=-2460,
                started=-2400,
                ended=-600,
                exit_code=0,
            ),
            JobScript(
                name=llama,
                job_id=_job_id(seed, llama),
                phase="Pending",
                created=-300,
                events=tuple(
                    (
                        offset,
                        "Warning",
                        f"[Pod: modelarts-job-{_job_id(seed, llama)}-worker-0] FailedScheduling: "
                        "0/12 nodes are available: 12 Insufficient nvidia.com/gpu.",
                        "K8S",
                    )
                    for offset in (-290.0, -170.0, -50.0)
                ),
            ),
        )
    )


def scale_scenario(
    jobs: int = 150,
    tasks_per_job: int = 2,
    initial_bytes: int = 200_000,
    growth_bytes_per_second: float = 2_000,
    seed: int = 0,
) -> Scenario:
    """Many Running jobs whose logs start at about ``initial_bytes`` and then grow by about
    ``growth_bytes_per_second`` each, for benchmarks.

    Cheap by construction: every log's first ``initial_bytes`` are one shared, immutable
    block (built once per install), and growth is generated only when a log is read.
    """
    if jobs < 0 or tasks_per_job < 1 or initial_bytes < 0 or growth_bytes_per_second <= 0:
        raise ValueError(
            "scale_scenario needs jobs >= 0, tasks_per_job >= 1, "
            "initial_bytes >= 0 and growth_bytes_per_second > 0"
        )

    @functools.lru_cache(maxsize=1)
    def base(start: float) -> logs.Block:
        return logs.scale_block(f"{seed}:base", initial_bytes, start)

    def prefix(start: float) -> bytes:
        return base(start).data

    def growth(info: TaskInfo) -> StreamFactory:
        return lambda start: logs.scale_growth_stream(
            f"{seed}:{info.job_name}:{info.index}",
            start,
            info,
            bytes_per_second=growth_bytes_per_second,
            first_step=base(start).next_step,
        )

    scripts = []
    for number in range(jobs):
        name = f"scale-job-{number:04d}"
        job_id = _job_id(seed, name)
        ascend = number % 3 == 2
        created = -600.0 - 5.0 * (jobs - number)
        scripts.append(
            JobScript(
                name=name,
                job_id=job_id,
                phase="Running",
                tasks=tuple(
                    TaskScript(
                        f"worker-{index}",
                        stream=growth(TaskInfo(job_id, name, index, tasks_per_job)),
                        prefix=prefix,
                    )
                    for index in range(tasks_per_job)
                ),
                engine=("MindSpore", "MindSpore-2.2.14-python3.9-aarch64")
                if ascend
                else DEFAULT_ENGINE,
                flavor="modelarts.kat1.8xlarge" if ascend else "modelarts.bm.gpu.8v100",
                created=created,
                started=created + 30.0,
            )
        )
    return Scenario(jobs=tuple(scripts))
