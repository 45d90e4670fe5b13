"""Job and task ids are the API's text: each one names only itself in a URL.

Ids like ``..``, ``a/b``, ``100%`` or ``x?y#z`` must never make the client request another
URL (another job's log, the list, a path the server resolves differently). Checked against
the simulator, which percent-decodes path segments as a gateway does.
"""

from __future__ import annotations

import pytest

from modelarts_exporter.modelarts import errors
from modelarts_exporter.modelarts.auth import AkSkAuth, TokenAuth
from modelarts_exporter.modelarts.client import ModelArtsClient, RetryPolicy
from modelarts_exporter.simulator import SimAuth, Simulator

TOKEN = "hostile-ids-token-1234"
AK, SK = "QTWAOYTTINDUT2QVKYUC", "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
ODD_IDS = ("a/b", "100%", "%2e%2e", "x?y=1#z", "a b", "job/../other", "~.-_")
DOT_IDS = (".", "..")


def _client(sim: Simulator, kind: str) -> ModelArtsClient:
    auth = TokenAuth(TOKEN) if kind == "token" else AkSkAuth(AK, SK, sim.project_id)
    return ModelArtsClient(
        sim.url, sim.project_id, auth, retry=RetryPolicy(max_attempts=1), sleep=lambda _: None
    )


@pytest.mark.parametrize("kind", ["token", "aksk"])
def test_odd_ids_request_exactly_their_own_job_and_task(kind: str) -> None:
    auth = SimAuth(tokens=frozenset({TOKEN}), aksk={AK: SK})
    with Simulator(auth=auth) as sim:
        other = sim.add_job("other", job_id="other", tasks=("worker-0",))
        sim.append_log(other, "worker-0", b"the wrong log\n")
        for job_id in ODD_IDS:
            sim.add_job(job_id, job_id=job_id, tasks=(job_id, "worker-0"))
            for task in (job_id, "worker-0"):
                sim.append_log(job_id, task, f"log of {job_id!r} {task!r}\n".encode())
        with _client(sim, kind) as client:
            listed = {job.id: job.tasks for job in client.list_jobs()}
            assert set(listed) == {*ODD_IDS, "other"}
            for job_id in ODD_IDS:
                assert client.get_job(job_id).id == job_id
                for task in listed[job_id]:
                    preview = client.preview_log(job_id, task)
                    assert preview is not None
                    assert preview.content == f"log of {job_id!r} {task!r}\n"
        assert {record.status for record in sim.requests} == {200}


def test_dot_ids_are_refused_without_any_request() -> None:
    with Simulator(auth=SimAuth(tokens=frozenset({TOKEN}))) as sim:
        job = sim.add_job("dots", tasks=("worker-0",))
        sim.append_log(job, "worker-0", b"not yours\n")
        with _client(sim, "token") as client:
            for dots in DOT_IDS:
                with pytest.raises(errors.BadResponseError, match="not a usable URL path"):
                    client.get_job(dots)
                with pytest.raises(errors.BadResponseError, match="not a usable URL path"):
                    client.preview_log(dots, "worker-0")
                with pytest.raises(errors.BadResponseError, match="not a usable URL path"):
                    client.preview_log(job, dots)
        assert sim.requests == []
