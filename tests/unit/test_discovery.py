"""Discovery: which jobs are watched, and when they go."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeClock, FakeModelArts

from modelarts_exporter.discovery import Discovery, DiscoverySettings, shard_of
from modelarts_exporter.modelarts.errors import ServerError
from modelarts_exporter.modelarts.types import TrainingJob
from modelarts_exporter.store import Store

HOUR = 3600.0


def job(
    job_id: str,
    phase: str = "Running",
    *,
    created: float,
    ended: float | None = None,
    name: str = "",
) -> TrainingJob:
    start = created + 60
    duration = (ended - start) * 1000 if ended is not None else 0
    return TrainingJob(
        id=job_id,
        name=name or f"name-{job_id}",
        phase=phase,
        tasks=("worker-0",),
        create_time_ms=int(created * 1000),
        start_time_ms=int(start * 1000),
        duration_ms=int(duration),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "state.db")
    store.open()
    return store


def discovery(api: FakeModelArts, store: Store, clock: FakeClock, **settings: object) -> Discovery:
    return Discovery(api, store, DiscoverySettings(**settings), clock=clock)  # type: ignore[arg-type]


def test_active_jobs_and_recently_ended_ones_are_watched(store: Store, clock: FakeClock) -> None:
    now = clock.now
    api = FakeModelArts(
        jobs={
            "run": job("run", created=now - 10 * HOUR),
            "pend": job("pend", "Pending", created=now - 60),
            "failed-recently": job("failed-recently", "Failed", created=now - 300, ended=now - 100),
            "done-long-ago": job(
                "done-long-ago", "Completed", created=now - 50 * HOUR, ended=now - 40 * HOUR
            ),
        }
    )
    assert discovery(api, store, clock).refresh()
    jobs = store.jobs()
    assert set(jobs) == {"run", "pend", "failed-recently"}
    assert jobs["failed-recently"].ended_at == pytest.approx(now - 100)
    assert jobs["run"].ended_at is None


def test_startup_looks_back_further_than_later_refreshes(store: Store, clock: FakeClock) -> None:
    now = clock.now
    api = FakeModelArts(
        jobs={
            "old-but-just-ended": job(
                "old-but-just-ended", "Failed", created=now - 30 * HOUR, ended=now - 60
            )
        }
    )
    d = discovery(api, store, clock, startup_lookback_seconds=48 * HOUR)
    d.refresh()
    assert "old-but-just-ended" in store.jobs()


def test_a_job_that_ends_gets_its_end_and_a_deleted_one_goes(
    store: Store, clock: FakeClock
) -> None:
    now = clock.now
    api = FakeModelArts(jobs={"a": job("a", created=now - 600), "b": job("b", created=now - 600)})
    d = discovery(api, store, clock)
    d.refresh()
    api.jobs["a"] = job("a", "Failed", created=now - 600, ended=now - 5)
    del api.jobs["b"]
    clock.advance(30)
    d.refresh()
    jobs = store.jobs()
    assert jobs["a"].phase == "Failed"
    assert jobs["a"].ended_at == pytest.approx(now - 5)
    assert "b" not in jobs


def test_a_failed_list_keeps_the_last_known_jobs(store: Store, clock: FakeClock) -> None:
    failures: list[int] = []
    api = FakeModelArts(jobs={"a": job("a", created=clock.now - 600)})
    d = Discovery(
        api, store, DiscoverySettings(), clock=clock, on_failure=lambda: failures.append(1)
    )
    d.refresh()
    api.fail["list_jobs"] = ServerError("list_jobs", "boom", status=500)
    api.fail["get_job"] = ServerError("get_job", "boom", status=500)
    api.jobs.clear()
    assert not d.refresh()
    assert set(store.jobs()) == {"a"}
    assert failures


def test_name_filter_and_explicit_ids(store: Store, clock: FakeClock) -> None:
    now = clock.now
    api = FakeModelArts(
        jobs={
            "1": job("1", created=now - 60, name="llm-sft"),
            "2": job("2", created=now - 60, name="resnet"),
        }
    )
    discovery(api, store, clock, name_regex="^llm-").refresh()
    assert set(store.jobs()) == {"1"}
    discovery(api, store, clock, job_ids=("2", "missing")).refresh()
    assert set(store.jobs()) == {"2"}


def test_a_crafted_job_name_cannot_freeze_the_name_filter(store: Store, clock: FakeClock) -> None:
    """Python's re needs about 2**40 steps for this name; RE2 one pass (issue 10, item 3)."""
    now = clock.now
    crafted = "a" * 40 + "!"
    api = FakeModelArts(
        jobs={
            "1": job("1", created=now - 60, name=crafted),
            "2": job("2", created=now - 60, name="aaaa"),
        }
    )
    discovery(api, store, clock, name_regex="^(a+)+$").refresh()
    assert set(store.jobs()) == {"2"}


def test_shards_split_the_jobs(tmp_path: Path, clock: FakeClock) -> None:
    api = FakeModelArts(
        jobs={f"job-{i}": job(f"job-{i}", created=clock.now - 60) for i in range(40)}
    )
    owned: list[set[str]] = []
    for index in range(3):
        store = Store(tmp_path / f"{index}.db")
        store.open()
        discovery(api, store, clock, shard_index=index, shard_count=3).refresh()
        owned.append(set(store.jobs()))
    assert set.union(*owned) == set(api.jobs)
    assert sum(len(s) for s in owned) == len(api.jobs)
    assert all(owned)
    assert shard_of("job-7", 3) == shard_of("job-7", 3)


def test_ended_jobs_go_after_the_grace_period(store: Store, clock: FakeClock) -> None:
    now = clock.now
    api = FakeModelArts(jobs={"a": job("a", "Completed", created=now - 600, ended=now - 100)})
    d = discovery(api, store, clock, grace_seconds=HOUR)
    d.refresh()
    assert d.expire() == []
    clock.advance(HOUR)
    assert d.expire() == ["a"]
    assert store.jobs() == {}


def test_an_expired_job_without_times_stays_expired(tmp_path: Path, clock: FakeClock) -> None:
    """Issue 10, item 8: the API lists it for ever and gives no time to tell it is old; once
    exported for its grace period it must not come back with counters from zero, even
    after a restart."""
    timeless = TrainingJob(id="t", name="no-times", phase="Failed", tasks=("worker-0",))
    api = FakeModelArts(jobs={"t": timeless, "run": job("run", created=clock.now - 60)})
    path = tmp_path / "state.db"
    store = Store(path, clock=clock)
    store.open()
    d = discovery(api, store, clock, grace_seconds=HOUR)
    d.refresh()
    assert set(store.jobs()) == {"t", "run"}
    clock.advance(HOUR)
    assert d.expire() == ["t"]
    for _ in range(3):
        clock.advance(HOUR)
        d.refresh()
        assert d.expire() == []
        assert set(store.jobs()) == {"run"}
    store.close()
    again = Store(path, clock=clock)
    again.open()
    d = discovery(api, again, clock, grace_seconds=HOUR)
    d.refresh()  # the first refresh after a start looks back a week
    assert set(again.jobs()) == {"run"}
    # The same id running again is a new run: watched again.
    api.jobs["t"] = TrainingJob(id="t", name="no-times", phase="Running", tasks=("worker-0",))
    d.refresh()
    assert set(again.jobs()) == {"t", "run"}
    again.close()


def test_expired_ids_are_remembered_up_to_a_limit(tmp_path: Path, clock: FakeClock) -> None:
    store = Store(tmp_path / "state.db", clock=clock, expired_limit=3)
    store.open()
    for n in range(5):
        store.remove_job(f"job-{n}", expired_at=clock.now + n)
    assert [store.is_expired(f"job-{n}") for n in range(5)] == [False, False, True, True, True]
    store.close()
    again = Store(tmp_path / "state.db", clock=clock, expired_limit=3)
    again.open()
    assert [again.is_expired(f"job-{n}") for n in range(5)] == [False, False, True, True, True]
    again.close()
