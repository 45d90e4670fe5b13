"""Small stand-ins for the ModelArts client, for tests of the stages after it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from modelarts_exporter.modelarts.errors import JobNotFoundError, ModelArtsError
from modelarts_exporter.modelarts.types import EventPage, JobEvent, LogPreview, TrainingJob


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeModelArts:
    """Jobs and logs in memory; ``fail`` makes the named calls raise."""

    jobs: dict[str, TrainingJob] = field(default_factory=dict)
    logs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    fail: dict[str, ModelArtsError] = field(default_factory=dict)
    window: int = 1 << 20
    calls: list[tuple[str, str]] = field(default_factory=list)
    events: dict[str, list[JobEvent]] = field(default_factory=dict)
    metrics: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    def _check(self, call: str, key: str = "") -> None:
        self.calls.append((call, key))
        for name in (call, f"{call}:{key}"):
            if name in self.fail:
                raise self.fail[name]

    def list_jobs(self, phases: Sequence[str] | None = None) -> list[TrainingJob]:
        self._check("list_jobs")
        return [j for j in self.jobs.values() if phases is None or j.phase in phases]

    def iter_jobs(
        self,
        phases: Sequence[str] | None = None,
        *,
        sort_by: str = "create_time",
        order: str = "desc",
    ) -> Iterable[TrainingJob]:
        self._check("iter_jobs")
        del sort_by
        jobs = sorted(self.jobs.values(), key=lambda j: j.create_time_ms, reverse=order == "desc")
        return iter([j for j in jobs if phases is None or j.phase in phases])

    def get_job(self, job_id: str) -> TrainingJob:
        self._check("get_job", job_id)
        if job_id not in self.jobs:
            raise JobNotFoundError("get_job", "not found", status=400, error_code="ModelArts.2775")
        return self.jobs[job_id]

    def preview_log(self, job_id: str, task_id: str) -> LogPreview | None:
        self._check("preview_log", f"{job_id}/{task_id}")
        if job_id not in self.jobs:
            raise JobNotFoundError("preview_log", "gone", status=400, error_code="ModelArts.2775")
        data = self.logs.get((job_id, task_id))
        if data is None:
            return None
        window = data[-self.window :]
        return LogPreview(window.decode("utf-8", "replace"), len(window), len(data))

    def previews(self) -> Iterator[str]:
        return (key for call, key in self.calls if call == "preview_log")

    def list_events(self, job_id: str, *, page: int = 0, limit: int = 100) -> EventPage:
        self._check("list_events", job_id)
        ordered = sorted(self.events.get(job_id, []), key=lambda e: e.time, reverse=True)
        chunk = ordered[page * limit : (page + 1) * limit]
        return EventPage(tuple(chunk), total=len(ordered))

    def task_metrics(self, job_id: str, task_id: str) -> dict[str, float]:
        self._check("task_metrics", f"{job_id}/{task_id}")
        return dict(self.metrics.get((job_id, task_id), {}))

    def count(self, call: str) -> int:
        return sum(1 for name, _ in self.calls if name == call)
