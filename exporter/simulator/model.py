"""The simulator's state: training jobs, their tasks' logs, events, restarts and metrics,
and scheduled phase changes and restarts.

Nothing here locks: the Simulator holds one lock around every use of a SimModel.
Times are Unix seconds (floats) from the simulator clock; the JSON answers use ms.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

from ..modelarts.types import PHASES, TERMINAL_PHASES
from .logs import Chunk, LineStream
from .platform import SimEvent, SimRestart, metrics_response, running_records

DEFAULT_ENGINE = ("PyTorch", "PyTorch-2.1.0-python3.10")
DEFAULT_FLAVOR = "modelarts.p3.large.public"

_SECONDARY_PHASE = {
    "Creating": "Creating",
    "Pending": "Queuing",
    "Running": "Running",
    "Failed": "Failed",
    "Completed": "Completed",
    "Terminating": "Terminating",
    "Terminated": "Terminated",
    "Abnormal": "CreateFailed",
}
_DEFAULT_EXIT_CODE = {"Completed": 0, "Failed": 1, "Terminated": 143, "Abnormal": 1}
# The job-level event of a terminal phase: (level, message).
_END_EVENT = {
    "Completed": ("Info", "Training job completed."),
    "Failed": ("Error", "Training job failed."),
    "Terminated": ("Warning", "Training job terminated by the user."),
    "Abnormal": ("Error", "Training job is abnormal."),
}

# flavor_id -> (flavor_type, flavor_name, accelerator kind, count, product, memory)
_FLAVORS: dict[str, tuple[str, str, str, int, str, str]] = {
    "modelarts.p3.large.public": (
        "GPU",
        "GPU: 1*NVIDIA-V100(32GB) | CPU: 8 vCPUs 64GB",
        "gpu",
        1,
        "NVIDIA-V100",
        "32GB",
    ),
    "modelarts.bm.gpu.8v100": (
        "GPU",
        "GPU: 8*NVIDIA-V100(32GB) | CPU: 72 vCPUs 512GB",
        "gpu",
        8,
        "NVIDIA-V100",
        "32GB",
    ),
    "modelarts.kat1.8xlarge": (
        "Ascend",
        "Ascend: 8*Ascend-910(32GB) | ARM: 192 vCPUs 720GB",
        "npu",
        8,
        "Ascend-910",
        "32GB",
    ),
}


def validate_phase(phase: str) -> str:
    """``phase`` if it is one of the 8 documented phases, else ValueError."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    return phase


def _ms(t: float) -> int:
    return round(t * 1000)


class TaskLog:
    """One task's log: an optional shared immutable prefix plus the bytes appended after it.

    The prefix lets thousands of simulated tasks start with the same large block for the
    memory of one. A scripted stream appends its chunks once the clock reaches their time.
    The log "exists" (the preview answers 200, not 204) once anything was written to it.
    """

    __slots__ = ("_exists", "_pending", "_prefix", "_stream", "_tail")

    def __init__(self, prefix: bytes = b"", stream: LineStream | None = None) -> None:
        self._prefix = prefix
        self._tail = bytearray()
        self._exists = bool(prefix)
        self._stream = stream
        self._pending: Chunk | None = None

    @property
    def exists(self) -> bool:
        return self._exists

    @property
    def size(self) -> int:
        return len(self._prefix) + len(self._tail)

    def append(self, data: bytes) -> None:
        self._tail += data
        self._exists = True

    def reset(self, data: bytes) -> None:
        """The log restarted: its content is replaced by ``data`` (a stream keeps going)."""
        self._prefix = b""
        self._tail = bytearray(data)
        self._exists = True

    def materialize(self, now: float) -> None:
        """Append every scripted chunk due at or before ``now``."""
        while self._stream is not None:
            if self._pending is None:
                self._pending = next(self._stream, None)
                if self._pending is None:
                    self._stream = None
                    return
            at, data = self._pending
            if at > now:
                return
            self.append(data)
            self._pending = None

    def stop(self) -> None:
        """The writer is gone: no more scripted chunks."""
        self._stream = None
        self._pending = None

    def tail(self, window: int) -> bytes:
        """The last ``window`` bytes (all of them for a shorter log)."""
        start = max(0, self.size - window)
        prefix_len = len(self._prefix)
        if start >= prefix_len:
            return bytes(self._tail[start - prefix_len :])
        return self._prefix[start:] + self._tail

    def data(self) -> bytes:
        return self._prefix + self._tail


@dataclass(eq=False)
class SimJob:
    """A training job and what the API shows of it (see ``response``)."""

    id: str
    name: str
    phase: str
    tasks: dict[str, TaskLog]
    create_time: float
    seq: int
    start_time: float | None = None
    engine: tuple[str, str] = DEFAULT_ENGINE
    flavor: str = DEFAULT_FLAVOR
    workspace_id: str = "0"
    end_time: float | None = None
    duration_ms: int | None = None
    exit_code: int | None = None
    events: list[SimEvent] = field(default_factory=list)
    restarts: list[SimRestart] = field(default_factory=list)
    metric_overrides: dict[str, dict[str, float | None]] = field(default_factory=dict)
    _event_seq: itertools.count[int] = field(default_factory=itertools.count)

    def add_event(self, at: float, level: str, message: str, source: str = "Job") -> None:
        self.events.append(SimEvent(at, level, message, source, next(self._event_seq)))

    def record_created(self) -> None:
        self.add_event(self.create_time, "Info", "Training job created.")

    def record_started(self, at: float) -> None:
        self.add_event(at, "Info", "Training job is running.")
        for task in self.tasks:
            self.add_event(at, "Info", f"[{task}] training started.", "Task")

    def restart(self, restart: SimRestart) -> None:
        """A run ends at ``restart.at`` and ModelArts recovers it (a new running record)."""
        self.restarts.append(restart)
        self.add_event(
            restart.at,
            "Warning",
            f"[{restart.task}] Fault detected ({restart.reason}); "
            f"fault tolerance: {restart.recover}.",
        )
        for task in self.tasks:
            self.add_event(restart.at, "Info", f"[{task}] training started.", "Task")

    def metrics(self, task: str, now: float) -> dict[str, Any]:
        """The task metrics call's answer (see ``platform.metrics_response``)."""
        accelerator = _FLAVORS.get(self.flavor, ("", "", "gpu"))[2]
        return metrics_response(
            f"{self.id}:{task}",
            accelerator,
            self.start_time,
            now,
            self.metric_overrides.get(task, {}),
        )

    def materialize(self, now: float) -> None:
        for log in self.tasks.values():
            log.materialize(now)

    def set_phase(
        self,
        phase: str,
        at: float,
        *,
        duration_ms: int | None = None,
        exit_code: int | None = None,
    ) -> None:
        """Move to ``phase`` at time ``at``.

        Running sets the start time if there is none. A terminal phase ends the job at
        ``at`` (duration from the start unless given), stops its tasks' scripted output
        and records the exit code (default 0 for Completed, else non-zero).
        """
        validate_phase(phase)
        if phase == "Running" and self.start_time is None:
            self.start_time = at
            self.record_started(at)
        if phase in TERMINAL_PHASES:
            self.materialize(at)
            for log in self.tasks.values():
                log.stop()
            self.end_time = at
            self.exit_code = _DEFAULT_EXIT_CODE[phase] if exit_code is None else exit_code
            if self.start_time is not None:
                for task in self.tasks:
                    message = f"[{task}] Training finished. Exit code {self.exit_code}."
                    self.add_event(at, "Info", message, "Task")
            self.add_event(at, *_END_EVENT[phase])
        else:
            self.end_time = None
            self.exit_code = None
        self.duration_ms = duration_ms
        self.phase = phase

    def duration(self, now: float) -> int:
        if self.duration_ms is not None:
            return self.duration_ms
        if self.start_time is None:
            return 0
        end = now if self.end_time is None else self.end_time
        return max(0, _ms(end - self.start_time))

    def response(self, now: float) -> dict[str, Any]:
        """The JobResponse dict of the list and details calls."""
        node_count = max(1, len(self.tasks))
        start_ms = 0 if self.start_time is None else _ms(self.start_time)
        node_counts = [[_ms(self.create_time), 0]]
        if self.start_time is not None:
            node_counts.append([start_ms, node_count])
            if self.end_time is not None:
                node_counts.append([_ms(self.end_time), 0])
        records = running_records(self.start_time, self.restarts, self.end_time, self.exit_code)
        task_statuses = []
        if self.exit_code is not None and self.tasks:
            task = next(iter(self.tasks))
            message = "" if self.exit_code == 0 else f"exit with {self.exit_code}"
            task_statuses.append({"task": task, "exit_code": self.exit_code, "message": message})
        engine_name, engine_version = self.engine
        code_dir = f"obs://modelarts-sim/{self.name}/code/"
        return {
            "kind": "job",
            "metadata": {
                "id": self.id,
                "name": self.name,
                "description": "",
                "create_time": _ms(self.create_time),
                "workspace_id": self.workspace_id,
                "user_name": "sim-user",
                "annotations": {"fault-tolerance/job-retry-num": "0"},
            },
            "status": {
                "phase": self.phase,
                "secondary_phase": _SECONDARY_PHASE[self.phase],
                "duration": self.duration(now),
                "start_time": start_ms,
                "node_count_metrics": node_counts,
                "tasks": list(self.tasks),
                "task_statuses": task_statuses,
                "running_records": records,
            },
            "algorithm": {
                "code_dir": code_dir,
                "boot_file": code_dir + "train.py",
                "command": "",
                "parameters": [],
                "inputs": [],
                "outputs": [],
                "local_code_dir": "/home/ma-user/modelarts/user-job-dir",
                "working_dir": "/home/ma-user/modelarts/user-job-dir/code",
                "engine": {
                    "engine_id": engine_version.lower().replace(".", "_"),
                    "engine_name": engine_name,
                    "engine_version": engine_version,
                    "image_url": "",
                    "install_sys_packages": True,
                },
            },
            "spec": {"resource": self._resource(node_count)},
        }

    def _resource(self, node_count: int) -> dict[str, Any]:
        flavor_type, flavor_name, kind, units, product, memory = _FLAVORS.get(
            self.flavor, ("GPU", self.flavor, "gpu", 1, "NVIDIA-V100", "32GB")
        )
        return {
            "policy": "regular",
            "flavor_id": self.flavor,
            "flavor_name": flavor_name,
            "node_count": node_count,
            "flavor_detail": {
                "flavor_type": flavor_type,
                "billing": {"code": self.flavor, "unit_num": 1},
                "flavor_info": {
                    "max_num": node_count,
                    kind: {"unit_num": units, "product_name": product, "memory": memory},
                },
            },
        }


@dataclass
class SimModel:
    """All jobs (in creation order) plus phase changes scheduled for later."""

    jobs: dict[str, SimJob] = field(default_factory=dict)
    _events: list[tuple[float, int, str, str | SimRestart]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def next_seq(self) -> int:
        return next(self._seq)

    def add(self, job: SimJob) -> None:
        if job.id in self.jobs:
            raise ValueError(f"job {job.id} exists")
        self.jobs[job.id] = job

    def get(self, job_id: str) -> SimJob:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise KeyError(f"no training job {job_id}") from None

    def log(self, job_id: str, task: str) -> TaskLog:
        job = self.get(job_id)
        try:
            return job.tasks[task]
        except KeyError:
            raise KeyError(f"training job {job_id} has no task {task!r}") from None

    def schedule(self, at: float, job_id: str, phase: str) -> None:
        """Change the job's phase once the clock reaches ``at`` (dropped if it was deleted)."""
        heapq.heappush(self._events, (at, self.next_seq(), job_id, validate_phase(phase)))

    def schedule_restart(self, job_id: str, restart: SimRestart) -> None:
        """Restart the job at ``restart.at`` (dropped if it was deleted or has ended)."""
        heapq.heappush(self._events, (restart.at, self.next_seq(), job_id, restart))

    def advance(self, now: float, *, logs: bool = False) -> None:
        """Apply the phase changes and restarts due by ``now``, each at its own time; with
        ``logs``, also bring every task's scripted log up to ``now`` (reads do that per
        task)."""
        while self._events and self._events[0][0] <= now:
            at, _, job_id, action = heapq.heappop(self._events)
            job = self.jobs.get(job_id)
            if job is None:
                continue
            if isinstance(action, SimRestart):
                if job.end_time is None and job.start_time is not None:
                    job.restart(action)
            else:
                job.set_phase(action, at)
        if logs:
            for job in self.jobs.values():
                job.materialize(now)
