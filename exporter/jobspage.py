"""The status page ``/jobs`` (HTML) and ``/api/v1/jobs`` (the same as JSON).

Both list every watched job and its tasks from a store snapshot (memory only): phase, up,
last poll, loss and step, exit code, and for a failed task its diagnosis (reason,
category, remedy, evidence lines). ``?training_job_id=ID`` and ``&task_id=ID`` narrow the
list to one job or one task: the alert's link to a task uses them.

The HTML is rendered by Jinja2 with autoescaping on, from ``templates/jobs.html``: plain
server-rendered HTML, readable without JavaScript. Everything on it that comes from
ModelArts or from a log (names, ids, evidence lines) is escaped.

JSON shape (numbers in base units, times in Unix seconds; a loss that is not finite is
the string ``"NaN"``, ``"+Inf"`` or ``"-Inf"``, as Prometheus' API writes floats)::

    {"generated_at": 1770000000.0, "jobs": [
      {"training_job_id": "...", "training_job_name": "...", "phase": "Failed",
       "engine": "...", "flavor": "...", "url": "/jobs?training_job_id=...",
       "tasks": [
         {"task_id": "worker-0", "up": true, "last_poll": 1770000000.0, "loss": 1.23,
          "step": 400.0, "epoch": null, "exit_code": 1.0, "log_size_bytes": 4096.0,
          "last_log_growth": 1770000000.0, "errors": {"cuda_oom": 1.0},
          "url": "/jobs?training_job_id=...&task_id=worker-0",
          "failure": {"reason": "cuda_oom", "category": "resource", "remedy": "...",
                      "step": 400.0,
                      "evidence": [{"text": "torch.OutOfMemoryError: ...", "step": 400.0,
                                    "seen_at": 1770000000.0, "printed_time": null}]}}]}]}

``failure`` is null for a task that has not failed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2

from .diagnosis import diagnose
from .store import JobState, Snapshot, TaskState

TEMPLATES = Path(__file__).resolve().parent / "templates"


def task_path(job_id: str, task_id: str | None = None) -> str:
    """The page's path for one job (or one of its tasks), query encoded."""
    query = {"training_job_id": job_id}
    if task_id is not None:
        query["task_id"] = task_id
    return "/jobs?" + urlencode(query)


def jobs_document(
    snapshot: Snapshot,
    *,
    now: float,
    job_id: str | None = None,
    task_id: str | None = None,
) -> dict[str, Any]:
    """Every watched job (or the one ``job_id``, its task ``task_id``) as JSON-ready data."""
    jobs = []
    for job in sorted(snapshot.jobs.values(), key=lambda j: (j.name, j.id)):
        if job_id is not None and job.id != job_id:
            continue
        tasks = []
        for name in _task_ids(job, snapshot):
            if task_id is not None and name != task_id:
                continue
            state = snapshot.tasks.get((job.id, name)) or TaskState(job.id, name)
            tasks.append(_task(job, state))
        jobs.append(
            {
                "training_job_id": job.id,
                "training_job_name": job.name,
                "phase": job.phase,
                "engine": job.engine,
                "flavor": job.flavor,
                "url": task_path(job.id),
                "tasks": tasks,
            }
        )
    return {"generated_at": now, "jobs": jobs}


def _task_ids(job: JobState, snapshot: Snapshot) -> list[str]:
    known = list(job.tasks)
    extra = sorted(t for j, t in snapshot.tasks if j == job.id and t not in job.tasks)
    return known + extra


def _task(job: JobState, task: TaskState) -> dict[str, Any]:
    diagnosis = diagnose(task, job.phase)
    failure = None
    if diagnosis is not None:
        failure = {
            "reason": diagnosis.reason,
            "category": diagnosis.category,
            "remedy": diagnosis.remedy,
            "step": diagnosis.step,
            "evidence": [
                {
                    "text": line.text,
                    "step": line.step,
                    "seen_at": line.seen_at,
                    "printed_time": line.printed_time(),
                }
                for line in diagnosis.evidence
            ],
        }
    return {
        "task_id": task.task_id,
        "up": task.up,
        "last_poll": task.last_poll,
        "loss": _float(task.loss),
        "step": task.step,
        "epoch": task.epoch,
        "exit_code": task.exit_code,
        "log_size_bytes": task.log_size,
        "last_log_growth": task.last_growth,
        "errors": {m: n for m, n in sorted(task.errors.items()) if n},
        "url": task_path(job.id, task.task_id),
        "failure": failure,
    }


def _float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


# --- HTML ------------------------------------------------------------------------------


class JobsPage:
    """Renders ``/jobs`` from a document of ``jobs_document``."""

    def __init__(self) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["when"] = _when
        self._env.filters["ago"] = _ago
        self._env.filters["number"] = _number
        self._template = self._env.get_template("jobs.html")

    def render(self, document: Mapping[str, Any], *, version: str, filtered: bool = False) -> str:
        failed = sum(
            1 for job in document["jobs"] for task in job["tasks"] if task["failure"] is not None
        )
        return self._template.render(
            doc=document,
            now=document["generated_at"],
            version=version,
            filtered=filtered,
            failed=failed,
        )


def _when(value: float | None) -> str:
    if value is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))


def _ago(value: float | None, now: float) -> str:
    if value is None:
        return ""
    seconds = max(0, int(now - value))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _number(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"
