"""Which training jobs (and tasks) to watch, kept in the store.

Each refresh:
  * lists the jobs in the configured phases (active ones by default), all pages;
  * lists the jobs in terminal phases, newest first, for those that ended within the
    grace period and were never seen running (they failed between two refreshes, or
    before the exporter started); on the first refresh it looks back further
    (``discovery.startup_lookback_seconds``);
  * asks for the details of every known job that neither list showed: it ended (a
    terminal phase: its tasks get their final poll), or it was deleted
    (ModelArts.2775: its series go at once);
  * keeps only the jobs this shard owns (a stable hash of the job id) and that match
    the name filter, or exactly the configured job ids.
A failed list call keeps the last known jobs: discovery never drops series because
ModelArts did not answer. ``expire`` drops terminal jobs once the grace period is over,
and the store remembers their ids (the latest 10,000): a job that has been exported and
expired is not exported again, even when the API keeps listing it without the times that
would tell how long ago it ended. ``errors`` holds the failures of the last refresh, for
the caller to count, and to pause on when they reject the credentials (which it reports;
discovery logs them at debug).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from .apitext import display_text, loggable, usable_id
from .modelarts.errors import AuthenticationError, JobNotFoundError, ModelArtsError, StoppedError
from .modelarts.types import ACTIVE_PHASES, TERMINAL_PHASES, TrainingJob
from .signals import job_timing, recovery_labels
from .store import JobState, Store
from .userregex import compile_user_regex

log = logging.getLogger("exporter.discovery")


class JobSource(Protocol):
    """The part of the ModelArts client discovery uses."""

    def list_jobs(self, phases: Sequence[str] | None = None) -> list[TrainingJob]: ...

    def iter_jobs(
        self, phases: Sequence[str] | None = None, *, sort_by: str = ..., order: str = ...
    ) -> Iterable[TrainingJob]: ...

    def get_job(self, job_id: str) -> TrainingJob: ...


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    phases: tuple[str, ...] = ACTIVE_PHASES
    name_regex: str | None = None
    job_ids: tuple[str, ...] | None = None
    grace_seconds: float = 3600.0
    startup_lookback_seconds: float = 7 * 86400.0
    interval_seconds: float = 30.0
    shard_index: int = 0
    shard_count: int = 1


def shard_of(job_id: str, count: int) -> int:
    """The shard (0..count-1) that owns a job: stable across restarts and replicas."""
    digest = hashlib.sha256(job_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


class Discovery:
    def __init__(
        self,
        source: JobSource,
        store: Store,
        settings: DiscoverySettings,
        *,
        clock: Callable[[], float] = time.time,
        on_failure: Callable[[], None] | None = None,
        on_bad_text: Callable[[str], None] | None = None,
    ) -> None:
        """``on_failure`` is called for each failed call; ``on_bad_text(field)`` for each
        text field of a job that was not usable as it came (see ``apitext``)."""
        self._source = source
        self._store = store
        self._settings = settings
        self._clock = clock
        self._on_failure = on_failure
        self._on_bad_text = on_bad_text
        self._reported: OrderedDict[str, None] = OrderedDict()
        self._name = compile_user_regex(settings.name_regex) if settings.name_regex else None
        self._refreshed = False
        self._failing = False
        self.errors: list[ModelArtsError] = []
        """The calls that failed in the last :meth:`refresh`."""

    def reconfigure(self, settings: DiscoverySettings) -> None:
        """Use ``settings`` from the next refresh on (a reload); jobs no longer selected
        go at that refresh, new ones come."""
        self._name = compile_user_regex(settings.name_regex) if settings.name_regex else None
        self._settings = settings

    def selected(self, job_id: str, name: str) -> bool:
        settings = self._settings
        if (
            settings.shard_count > 1
            and shard_of(job_id, settings.shard_count) != settings.shard_index
        ):
            return False
        if settings.job_ids is not None:
            return job_id in settings.job_ids
        return self._name is None or self._name.search(name) is not None

    def refresh(self) -> bool:
        """Update the watched jobs; False when some call failed (what is known is kept)."""
        now = self._clock()
        known = self._store.jobs()
        seen: set[str] = set()
        ok = True
        self.errors = []
        if self._settings.job_ids is None:
            ok = self._list_active(now, known, seen) and ok
            ok = self._list_recently_ended(now, known, seen) and ok
        for job_id, job in known.items():
            if job_id in seen:
                continue
            if not self.selected(job_id, job.name):
                log.info("no longer watching job %s (%s): not selected", job.name, job_id)
                self._store.remove_job(job_id)
            elif job.phase not in TERMINAL_PHASES:
                ok = self._check(job_id, known, now) and ok
        if self._settings.job_ids is not None:
            for job_id in self._settings.job_ids:
                if job_id in known or self._store.is_expired(job_id):
                    continue
                if self.selected(job_id, ""):
                    ok = self._check(job_id, known, now) and ok
        self._refreshed = True
        if ok and self._failing:
            log.info("discovery works again")
        self._failing = not ok
        return ok

    def _list_active(self, now: float, known: dict[str, JobState], seen: set[str]) -> bool:
        try:
            jobs = self._source.list_jobs(phases=list(self._settings.phases))
        except ModelArtsError as exc:
            self._failed("listing jobs failed, keeping the last known ones: %s", exc)
            return False
        for job in map(self._vet, jobs):
            if job is not None and self.selected(job.id, job.name):
                self._upsert(job, known, now)
                seen.add(job.id)
        return True

    def _list_recently_ended(self, now: float, known: dict[str, JobState], seen: set[str]) -> bool:
        grace = self._settings.grace_seconds
        phases = sorted(TERMINAL_PHASES - set(self._settings.phases))
        if grace <= 0 or not phases:
            return True
        if self._refreshed:
            lookback = grace + 2 * self._settings.interval_seconds
        else:
            lookback = max(grace, self._settings.startup_lookback_seconds)
        cutoff_ms = (now - lookback) * 1000
        try:
            for listed in self._source.iter_jobs(
                phases=phases, sort_by="create_time", order="desc"
            ):
                if listed.create_time_ms and listed.create_time_ms < cutoff_ms:
                    break
                job = self._vet(listed)
                if job is None or not self.selected(job.id, job.name):
                    continue
                seen.add(job.id)
                ended = job.end_time()
                old = known.get(job.id)
                if old is None and ended is not None and now - ended > grace:
                    continue
                self._upsert(job, known, now)
        except ModelArtsError as exc:
            self._failed("listing ended jobs failed: %s", exc)
            return False
        return True

    def _check(self, job_id: str, known: dict[str, JobState], now: float) -> bool:
        try:
            job = self._source.get_job(job_id)
        except JobNotFoundError:
            if job_id in known:
                log.info("job %s (%s) was deleted: dropping its series", known[job_id].name, job_id)
                self._store.remove_job(job_id)
            else:
                log.warning("configured job %s does not exist", job_id)
            return True
        except ModelArtsError as exc:
            self._failed("details of job %s failed, keeping what is known: %s", exc, job_id)
            return False
        vetted = self._vet(job)
        if vetted is not None and vetted.id == job_id:
            self._upsert(vetted, known, now)
        return True

    def _vet(self, job: TrainingJob) -> TrainingJob | None:
        """``job`` with its text made safe, or None when its id cannot be used.

        Each problem is counted every time it is seen and logged once per job (the
        latest 1000 jobs are remembered for that).
        """
        problems: list[str] = []
        why = usable_id(job.id)
        if why is not None:
            self._bad_text("id", job.id, f"job id {loggable(job.id)!r}: {why}; not watched")
            return None
        tasks = []
        for task in job.tasks:
            why = usable_id(task)
            if why is None:
                tasks.append(task)
            else:
                problems.append(f"task {loggable(task)!r} {why}, not watched")
                self._bad_text("task", job.id)
        shown: dict[str, str] = {}
        for name in ("name", "phase", "engine", "flavor"):
            text, changed = display_text(getattr(job, name))
            shown[name] = text
            if changed:
                problems.append(f"{name} shown as {loggable(text)!r}")
                self._bad_text(name, job.id)
        if not problems:
            return job
        self._report(job.id, f"job {job.id}: unusable text from the API: {'; '.join(problems)}")
        return replace(
            job,
            tasks=tuple(tasks),
            name=shown["name"],
            phase=shown["phase"],
            engine=shown["engine"],
            flavor=shown["flavor"],
        )

    def _bad_text(self, field: str, job_id: str, message: str | None = None) -> None:
        if self._on_bad_text:
            self._on_bad_text(field)
        if message is not None:
            self._report(repr(job_id), message)

    def _report(self, key: str, message: str) -> None:
        """Log ``message`` at warning level the first time ``key`` has a problem."""
        if key in self._reported:
            self._reported.move_to_end(key)
            return
        self._reported[key] = None
        if len(self._reported) > 1000:
            self._reported.popitem(last=False)
        log.warning("%s", message)

    def _upsert(self, job: TrainingJob, known: dict[str, JobState], now: float) -> None:
        if job.terminal and self._store.is_expired(job.id):
            # Exported and dropped after its grace period: a job the API keeps listing
            # (one without times, say) must not come back with its counters from zero.
            return
        old = known.get(job.id)
        ended_at = None
        if job.terminal:
            ended_at = (old.ended_at if old else None) or job.end_time() or now
            if old is None or old.phase not in TERMINAL_PHASES:
                log.info("job %s (%s) is %s", job.name, job.id, job.phase)
        elif old is None:
            log.info(
                "watching job %s (%s), %s, tasks %s", job.name, job.id, job.phase, list(job.tasks)
            )
        start_time, duration = job_timing(job)
        restarts = max(job.restarts, old.restarts if old else 0)
        if old is not None and restarts > old.restarts:
            log.info("job %s (%s) restarted: %d runs after the first", job.name, job.id, restarts)
        state = JobState(
            id=job.id,
            name=job.name,
            phase=job.phase,
            # A job's task list can be empty while it is being created; keep the last.
            tasks=job.tasks or (old.tasks if old else ()),
            engine=job.engine,
            flavor=job.flavor,
            create_time=job.create_time_ms / 1000 if job.create_time_ms else None,
            ended_at=ended_at,
            start_time=start_time,
            duration=duration,
            restarts=restarts,
            last_recovery=recovery_labels(job.running_records, job.tasks)
            or (old.last_recovery if old else None),
        )
        self._store.put_job(state)
        known[job.id] = state

    def expire(self) -> list[str]:
        """Drop the jobs whose grace period after ending is over; returns their ids."""
        now = self._clock()
        gone = []
        for job_id, job in self._store.jobs().items():
            if job.ended_at is not None and now - job.ended_at >= self._settings.grace_seconds:
                log.info(
                    "job %s (%s) ended more than the grace period ago: dropping its series",
                    job.name,
                    job_id,
                )
                self._store.remove_job(job_id, expired_at=now)
                gone.append(job_id)
        return gone

    def _failed(self, message: str, exc: ModelArtsError, *args: object) -> None:
        if isinstance(exc, StoppedError):
            return  # the exporter is stopping: not a failure of ModelArts
        self.errors.append(exc)
        # A warning when discovery starts failing; while it keeps failing, debug only.
        # Rejected credentials are the poller's to report, once, as an error.
        quiet = self._failing or isinstance(exc, AuthenticationError)
        log.log(logging.DEBUG if quiet else logging.WARNING, message, *args, exc)
        if self._on_failure:
            self._on_failure()
