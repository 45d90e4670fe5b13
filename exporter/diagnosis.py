"""Why a task failed: a root cause (a marker of the vocabulary, or ``unknown``), its
category, a remedy, and the log lines that show it. Pure: state in, diagnosis out.

A task has failed when its log printed a non-zero exit code, or its job ended Failed or
Abnormal and its log printed no exit code 0. Its root cause, in this order:

1. **The earliest fatal marker of the failing run** (the markers' first lines are kept
   per run of the log, in order, by ``evidence.py``), where
   - messengers are never the cause: ``python_traceback`` (the header comes before the
     exception it introduces), ``child_failed`` and ``training_failed`` (a launcher or the
     platform saying that something failed), and exception lines of wrappers that report
     another process's failure (``ChildFailedError``, ``CalledProcessError``,
     ``ProcessExitedException``, Ray's ``RayTaskError(ActorDiedError)``, "process 1
     terminated with signal SIGKILL", ...). With torchrun the first real exception is the
     root cause and the launcher's wrapper follows it (LOG_FORMATS.md §5.1);
   - an exception line that only reports a device or collective failure (it names CUDA,
     NPU, NCCL, HCCL, ACL or a device, like torch_npu's ``RuntimeError:
     npuSynchronizeDevice ...``) gives way to any specific marker of the run, which says
     what actually failed;
   - on one line, the more specific marker wins (``RuntimeError: CUDA out of memory`` is a
     ``cuda_oom``, not a ``python_exception``), in the order of ``SPECIFICITY``;
   - a marker that is the documented consequence of another marker present in the run
     gives way to it, wherever it appears (``EXPLAINED_BY``): the shell's ``Killed`` to the
     kernel's OOM report printed after it, an NCCL error or timeout to the CUDA illegal
     memory access on another rank, the ``terminate called`` abort to the NCCL/HCCL
     error or timeout it rethrows, an Ascend/HCCL error code to the HCCL timeout, the
     ``ValueError`` that stops training to the NaN loss before it;
   - a ``sigkill`` printed after a worker's non-zero exit code (not 137 or -9) is the
     launcher ending the other workers (Slurm's srun ``tasks 3,7: Killed`` after ``task 5:
     Exited with exit code 1``): not the cause.
2. Else **the exit code by meaning**: 137/-9 ``sigkill`` (often the OOM killer), 247
   (ModelArts: memory) ``sigkill``, 139/-11 ``segfault``, 134/-6 ``abort``, 135/-7
   ``bus_error``.
3. Else ``unknown``.

The category comes from ``REASONS`` (a ``cuda_error`` is ``code`` unless its line names a
hardware fault: ECC, a GPU lost or missing). ``REASONS`` is the one remedy table: the
README, the /jobs page and the alert (prometheus/alerts.yml, checked by a test) use it.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass

from .evidence import MarkerLine
from .store import TaskState

FAILED_PHASES = frozenset({"Failed", "Abnormal"})
"""Job phases that make every task of the job failed."""

CATEGORIES = (
    "resource",
    "communication",
    "hardware",
    "numerics",
    "code",
    "killed",
    "platform",
    "unknown",
)


@dataclass(frozen=True, slots=True)
class Reason:
    category: str
    remedy: str


REASONS: Mapping[str, Reason] = {
    "cuda_oom": Reason(
        "resource",
        "GPU memory ran out. Lower the per-device batch size or sequence length (gradient "
        "accumulation keeps the effective batch), use activation checkpointing or mixed "
        "precision, set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True against "
        "fragmentation, or choose a flavor with more GPU memory.",
    ),
    "npu_oom": Reason(
        "resource",
        "NPU memory ran out. Lower the batch size or sequence length, enable recomputation "
        "or more model parallelism, or choose a flavor with more NPU memory.",
    ),
    "host_oom": Reason(
        "resource",
        "Host (CPU) memory ran out and the kernel's OOM killer ended the process. Use fewer "
        "DataLoader workers or a smaller prefetch, stream the data set instead of loading it "
        "whole, or choose a flavor with more memory.",
    ),
    "sigkill": Reason(
        "killed",
        "The process was killed with SIGKILL (exit code 137 or -9), most often by the "
        "out-of-memory killer: check the task's memory use before the end and reduce it or "
        "choose a larger flavor. Otherwise it was stopped from outside (preemption, a node "
        "fault): run it again.",
    ),
    "segfault": Reason(
        "code",
        "A native crash (SIGSEGV, exit code 139 or -11), usually a native package that does "
        "not match the framework or the driver (CUDA/CANN versions, a custom operator). Check "
        "the image's package versions; python -X faulthandler shows where it crashed.",
    ),
    "bus_error": Reason(
        "resource",
        "SIGBUS, almost always shared memory (/dev/shm) too small for the DataLoader "
        "workers. Use fewer workers or give the container more shared memory.",
    ),
    "abort": Reason(
        "code",
        "The process aborted (SIGABRT, exit code 134 or -6): an uncaught C++ exception or a "
        "failed assertion in a native library. The lines before it say which; often a "
        "collective error or a CUDA/CANN fault.",
    ),
    "cuda_error": Reason(
        "code",
        "A CUDA fault other than out of memory. A device-side assert or an illegal memory "
        "access is usually a bug (an index out of range, such as a label >= the number of "
        "classes): run with CUDA_LAUNCH_BLOCKING=1 to find the operation. An ECC error or a "
        "lost GPU is the hardware (category hardware): run again on another node.",
    ),
    "nccl_error": Reason(
        "communication",
        "NCCL communication failed: another rank died or the network between the nodes "
        "failed. Find the first error of the other ranks; check the network with "
        "NCCL_DEBUG=INFO (NCCL_SOCKET_IFNAME, InfiniBand settings).",
    ),
    "nccl_timeout": Reason(
        "communication",
        "A collective operation timed out: a rank stopped taking part (it crashed, hung, or "
        "works much longer, e.g. evaluating or loading data on one rank only). Find the rank "
        "that failed first; raise the timeout only if the work is legitimately uneven.",
    ),
    "hccl_error": Reason(
        "communication",
        "HCCL communication between NPUs or nodes failed. Find the first error of the other "
        "ranks; check the network (HCCL_IF_IP) and the rank table.",
    ),
    "hccl_timeout": Reason(
        "communication",
        "An HCCL collective timed out (EI0002: a notify wait): a peer rank stopped or never "
        "arrived. Find the rank that failed first; raise HCCL_EXEC_TIMEOUT only if the work "
        "is legitimately uneven.",
    ),
    "ascend_error": Reason(
        "hardware",
        "The Ascend NPU or CANN runtime reported an error (EE/EZ/EH codes). The CANN message "
        "names the operator or the device; CANN, driver and framework versions that do not "
        "match are a common cause; run again on another node for a device fault.",
    ),
    "timeout": Reason(
        "communication",
        "Something timed out (a socket, a download, a device event). The line says what was "
        "waited for; check the network or storage it depends on.",
    ),
    "nan_loss": Reason(
        "numerics",
        "The training loss became NaN or infinite: the run diverged. Resume from the last "
        "good checkpoint with a lower learning rate, warmup or gradient clipping; look for "
        "bad samples; with fp16 use bf16 or dynamic loss scaling.",
    ),
    "loss_scale_min_reached": Reason(
        "numerics",
        "Mixed-precision loss scaling reached its minimum: the gradients keep overflowing. "
        "Lower the learning rate, use bf16 instead of fp16, or look for bad samples.",
    ),
    "dataloader_worker_killed": Reason(
        "resource",
        "A DataLoader worker process died, usually for lack of host or shared memory. Use "
        "fewer workers (num_workers) or give the container more memory and shared memory.",
    ),
    "modelarts_error": Reason(
        "platform",
        "ModelArts reported an error code: look it up in the ModelArts error code reference "
        "and check the job's settings (flavor, image, storage paths, quota).",
    ),
    "python_exception": Reason(
        "code",
        "The training script raised an exception (the evidence shows it): fix the code or "
        "its environment (a missing module, a wrong path, argument or data format), then run "
        "again.",
    ),
    "unknown": Reason(
        "unknown",
        "The log does not say why. Read the end of the task's log and the job's events in "
        "the ModelArts console; a job that failed before its script ran points at the "
        "image, the storage mounts or the quota.",
    ),
}
"""Reason -> category and remedy: the one remedy table."""

MESSENGERS = frozenset({"python_traceback", "child_failed", "training_failed"})
"""Markers that report a failure without naming its cause."""

SPECIFICITY = (
    "cuda_oom",
    "npu_oom",
    "host_oom",
    "cuda_error",
    "nan_loss",
    "loss_scale_min_reached",
    "hccl_timeout",
    "nccl_timeout",
    "hccl_error",
    "nccl_error",
    "ascend_error",
    "bus_error",
    "segfault",
    "abort",
    "sigkill",
    "dataloader_worker_killed",
    "timeout",
    "modelarts_error",
    "python_exception",
)
"""Fatal markers that can be a cause, most specific first (breaks ties on one line)."""

EXPLAINED_BY: Mapping[str, tuple[str, ...]] = {
    "sigkill": ("host_oom",),
    "dataloader_worker_killed": ("host_oom", "bus_error", "segfault"),
    "abort": (
        "cuda_oom",
        "npu_oom",
        "cuda_error",
        "nccl_timeout",
        "nccl_error",
        "hccl_timeout",
        "hccl_error",
    ),
    "nccl_error": ("cuda_oom", "cuda_error"),
    "nccl_timeout": ("cuda_oom", "cuda_error"),
    "hccl_error": ("npu_oom", "hccl_timeout"),
    "ascend_error": ("npu_oom", "hccl_timeout", "hccl_error"),
    "timeout": ("nccl_timeout", "hccl_timeout"),
    "python_exception": ("nan_loss", "loss_scale_min_reached"),
}
"""Consequence -> the markers that cause it: when both are in the failing run, the
cause is the root cause wherever its line is (another rank may print later)."""

EXIT_CODES: Mapping[int, str] = {
    137: "sigkill",
    -9: "sigkill",
    247: "sigkill",
    139: "segfault",
    -11: "segfault",
    134: "abort",
    -6: "abort",
    135: "bus_error",
    -7: "bus_error",
}
"""Exit codes that name their cause (LOG_FORMATS.md §3.2; 247 is ModelArts' memory code)."""

_MESSENGER_CLASSES = frozenset(
    {
        "ChildFailedError",
        "CalledProcessError",
        "ProcessExitedException",
        "ProcessRaisedException",
        "RayTaskError",
        "RayActorError",
        "ActorDiedError",
        "ActorUnavailableError",
        "WorkerCrashedError",
        "SignalException",
        "RendezvousClosedError",
    }
)
"""Exceptions that report another process's failure (launchers, Ray, elastic agents)."""

_EXCEPTION = re.compile(
    r"(?:^|[\s:\]\)>])(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception))(?:\((\w+)\))?:"
)
_REPORTS_OTHER = re.compile(
    r"(?i)\bprocess \d+ terminated with\b|\bCaught \w+ in (?:replica|DataLoader worker)"
)
_DEVICE_WORDS = re.compile(r"(?i)cuda|cudnn|cublas|\bnpu|nccl|hccl|\bacl|ascend|device|\bgpu")
_HARDWARE_CUDA = re.compile(
    r"(?i)\becc\b|uncorrectable|fallen off the bus|\bxid\b|no cuda-capable device"
    r"|cuda-capable device\(s\) (?:is|are) busy or unavailable|gpu is lost"
)

LAST_LINES = 4
"""Evidence lines shown at most: the cause's line, then lines that follow from it."""


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Why one task failed. ``evidence``: the cause's line first (its exception's last line,
    the OOM's "Tried to allocate"), then up to three more (later fatal markers in order,
    the exit code line); empty when the log shows nothing."""

    reason: str
    category: str
    remedy: str
    evidence: tuple[MarkerLine, ...] = ()
    exit_code: float | None = None

    @property
    def step(self) -> float | None:
        """The last training step printed when the cause's line was seen."""
        return self.evidence[0].step if self.evidence else None


@dataclass(frozen=True, slots=True)
class _Candidate:
    marker: str
    position: float
    line: MarkerLine | None


def failed(task: TaskState, phase: str | None) -> bool:
    """A non-zero exit code printed, or the job ended Failed/Abnormal and the task did not
    print exit code 0 (a task that says it ended well did not fail with its job)."""
    code = task.exit_code
    if code is not None:
        return code != 0
    return phase in FAILED_PHASES


def diagnose(task: TaskState, phase: str | None) -> Diagnosis | None:
    """The diagnosis of a failed task (``phase``: its job's), else None."""
    if not failed(task, phase):
        return None
    return explain(task)


def explain(task: TaskState) -> Diagnosis:
    """The root cause of the run in ``task`` as if it failed (see the module docstring)."""
    candidates = _candidates(task)
    cause = _root_cause(candidates)
    exit_code = task.exit_code
    if cause is not None and _aftermath(cause, task):
        cause = None
    if cause is None:
        reason = _exit_reason(exit_code)
        evidence = (task.exit_line,) if task.exit_line is not None else ()
        return _diagnosis(reason, None, evidence, exit_code)
    return _diagnosis(cause.marker, cause.line, _evidence(cause, candidates, task), exit_code)


def category_of(reason: str, line: str | None = None) -> str:
    """The category of ``reason`` (a ``cuda_error`` whose line names a hardware fault is
    ``hardware``)."""
    if reason == "cuda_error" and line is not None and _HARDWARE_CUDA.search(line):
        return "hardware"
    entry = REASONS.get(reason)
    return entry.category if entry else "unknown"


def _diagnosis(
    reason: str,
    line: MarkerLine | None,
    evidence: tuple[MarkerLine, ...],
    exit_code: float | None,
) -> Diagnosis:
    return Diagnosis(
        reason,
        category_of(reason, line.text if line else None),
        REASONS[reason].remedy,
        evidence,
        exit_code,
    )


def _exit_reason(code: float | None) -> str:
    if code is None or not float(code).is_integer():
        return "unknown"
    return EXIT_CODES.get(int(code), "unknown")


def _candidates(task: TaskState) -> list[_Candidate]:
    """The fatal markers of the run that can be a cause, with their first line."""
    found: list[_Candidate] = []
    lines = task.marker_lines
    for marker in SPECIFICITY:
        kept = lines.get(marker, ())
        if marker == "python_exception":
            line = _causing_exception(kept)
            if line is not None:
                found.append(_Candidate(marker, line.position, line))
            elif not kept and _legacy_count(task, marker):
                found.append(_Candidate(marker, float("inf"), None))
        elif kept:
            found.append(_Candidate(marker, kept[0].position, kept[0]))
        elif _legacy_count(task, marker):
            found.append(_Candidate(marker, float("inf"), None))
    device_reports = [
        c
        for c in found
        if c.marker == "python_exception" and c.line and _DEVICE_WORDS.search(c.line.text)
    ]
    if device_reports and len(found) > 1:
        found = [c for c in found if c not in device_reports]
    return found


def _aftermath(cause: _Candidate, task: TaskState) -> bool:
    """Whether the cause is a launcher ending the other workers after one had failed with
    an exit code printed before it (Slurm's srun: ``task 5: Exited with exit code 1``, then
    ``tasks 3,7: Killed``): the kills are its consequence, not why the run failed."""
    line = task.exit_line
    code = task.exit_code
    return (
        cause.marker == "sigkill"
        and line is not None
        and cause.line is not None
        and line.position < cause.position
        and code is not None
        and code not in (137, -9, 9, 247)
        and _TASK_EXITED.search(line.text) is not None
        and _TASKS_KILLED.search(cause.line.text) is not None
    )


_TASK_EXITED = re.compile(r"\btasks? [\d,\-]+: Exited with exit code \d+")
_TASKS_KILLED = re.compile(r"\btasks? [\d,\-]+: Killed\b")
"""srun's lines for one task that failed and for the tasks it then ended (Slurm's srun)."""


def _legacy_count(task: TaskState, marker: str) -> bool:
    """A marker counted in a state saved before lines were kept (no order known)."""
    return not task.marker_lines and not task.resets and task.errors.get(marker, 0) > 0


def _causing_exception(lines: tuple[MarkerLine, ...]) -> MarkerLine | None:
    """The first exception line that is not a wrapper reporting another failure."""
    for line in lines:
        if not _is_messenger_exception(line.text):
            return line
    return None


def _is_messenger_exception(text: str) -> bool:
    if _REPORTS_OTHER.search(text):
        return True
    match = _EXCEPTION.search(text)
    if match is None:
        return False
    name, inner = match.group(1), match.group(2)
    if name == "RayTaskError" and inner:
        return inner in _MESSENGER_CLASSES  # Ray's wrapper names the real class
    return name in _MESSENGER_CLASSES


def _root_cause(candidates: list[_Candidate]) -> _Candidate | None:
    if not candidates:
        return None
    rank = {marker: i for i, marker in enumerate(SPECIFICITY)}
    ordered = sorted(candidates, key=lambda c: (c.position, rank[c.marker]))
    cause = ordered[0]
    present = {c.marker: c for c in ordered}
    seen = {cause.marker}
    while True:
        causes = [present[m] for m in EXPLAINED_BY.get(cause.marker, ()) if m in present]
        causes = [c for c in causes if c.marker not in seen]
        if not causes:
            return cause
        cause = min(causes, key=lambda c: (c.position, rank[c.marker]))
        seen.add(cause.marker)


def _evidence(
    cause: _Candidate, candidates: list[_Candidate], task: TaskState
) -> tuple[MarkerLine, ...]:
    """The cause's line, then the first lines of the other fatal markers and the exit
    code line, in the order of the log, without repeating a line; at most LAST_LINES."""
    lines: list[MarkerLine] = [cause.line] if cause.line is not None else []
    others = sorted(
        (c.line for c in candidates if c.line is not None and c is not cause),
        key=lambda line: line.position,
    )
    if task.exit_line is not None:
        others.append(task.exit_line)
    for line in others:
        if len(lines) >= LAST_LINES:
            break
        if all(line.position != kept.position for kept in lines):
            lines.append(line)
    return tuple(lines)


# --- the table's copies -------------------------------------------------------------------


def remedy_template(indent: str = "") -> str:
    """The Go template (Prometheus alert annotations) that prints the remedy of
    ``$labels.reason``; prometheus/alerts.yml holds it, a test keeps it equal to REASONS.
    REMEDY_FALLBACK is printed when the alert has no reason label (an older exporter)."""
    lines = []
    for number, (reason, entry) in enumerate(REASONS.items()):
        opening = "{{ if" if number == 0 else "{{- else if"
        lines.append(f'{opening} eq $labels.reason "{reason}" -}}}}')
        lines.extend(
            textwrap.wrap(
                entry.remedy, 88 - len(indent), break_long_words=False, break_on_hyphens=False
            )
        )
    lines.append("{{- else -}}")
    lines.append(REMEDY_FALLBACK)
    lines.append("{{- end }}")
    return "\n".join(indent + line for line in lines)


REMEDY_FALLBACK = (
    "A code above 128 means the process was killed by signal (code - 128): 137 is "
    "SIGKILL, often the host OOM killer, 139 SIGSEGV. Look for the error markers of the "
    "same task and at the end of its log."
)
"""The alert's advice when it carries no reason (the series came from an older exporter)."""


def readme_table() -> str:
    """The README's remedy table (Markdown), from REASONS."""
    rows = ["| reason | category | what to do |", "|---|---|---|"]
    for reason, entry in REASONS.items():
        category = "code (hardware: ECC, lost GPU)" if reason == "cuda_error" else entry.category
        rows.append(f"| `{reason}` | {category} | {entry.remedy} |")
    return "\n".join(rows)
