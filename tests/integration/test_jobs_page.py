"""/jobs in a real browser (headless Chromium), /api/v1/jobs, and their escaping.

An exporter runs in this process against the simulator, with a job whose name, engine and
log lines are hostile (markup, quotes, an ``onerror`` image, a script that would rename
the page); its collection cycles are driven by hand. Chromium loads the page with
JavaScript on: nothing of the job may become markup or run, and the failed task must show
its reason, remedy and evidence.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from browser import Page, dump_dom

from modelarts_exporter.app import Exporter
from modelarts_exporter.config import Credentials, default_config
from modelarts_exporter.diagnosis import REASONS
from modelarts_exporter.simulator import SimAuth, Simulator

HOSTILE_NAME = (
    "<script>document.title='pwned'</script>\"'&<img src=x onerror=\"document.title='img'\">"
)
HOSTILE_ENGINE = ("<b>PyTorch</b>", "</td></tr></table><h1 id=injected>x</h1>")
FAILED_LOG = (
    b"step 120 loss 2.25\n"
    b"Traceback (most recent call last):\n"
    b"ValueError: bad label <script>document.title='evidence'</script> password=hunter2secret\n"
    b"[Modelarts Service Log]exit with 1\n"
)
OOM_LOG = (
    b"step 40 loss 3.5\n"
    b"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
    b"total capacity of 31.74 GiB of which 1.20 GiB is free.\n"
    b"[Modelarts Service Log]exit with 1\n"
)
TOKEN = "MIIjobs-page-token-0123456789"  # the simulator's credential


class Running:
    def __init__(self, exporter: Exporter, sim: Simulator, jobs: dict[str, str]) -> None:
        self.exporter = exporter
        self.sim = sim
        self.jobs = jobs
        self.url = exporter.http.url("127.0.0.1")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp: Path = tmp_path_factory.mktemp("jobs-page")
    with Simulator(auth=SimAuth(tokens=frozenset({TOKEN}))) as sim:
        jobs = {
            "hostile": sim.add_job(HOSTILE_NAME, phase="Failed", engine=HOSTILE_ENGINE),
            "oom": sim.add_job("bert-large-finetune", phase="Failed"),
            "healthy": sim.add_job("resnet50", tasks=("worker-0", "worker-1")),
        }
        sim.append_log(jobs["hostile"], "worker-0", FAILED_LOG)
        sim.append_log(jobs["oom"], "worker-0", OOM_LOG)
        sim.append_log(jobs["healthy"], "worker-0", b"step 10 loss nan\nstep 20 loss 1.5\n")
        config = default_config(
            sim.url,
            sim.project_id,
            collect={"interval_seconds": 1},
            discovery={"phases": ["Running", "Failed"]},
            state={"path": str(tmp / "state.db")},
            web={"listen_address": "127.0.0.1:0"},
        )
        exporter = Exporter(config, Credentials("token", "test", token=TOKEN))
        exporter.store.open()
        exporter.http.start()
        try:
            exporter.poller.run_cycle()
            yield Running(exporter, sim, jobs)
        finally:
            exporter.stop()


def _api(running: Running, **query: str) -> dict[str, object]:
    url = f"{running.url}/api/v1/jobs"
    if query:
        url += "?" + urlencode(query)
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "success"
    data: dict[str, object] = body["data"]
    return data


def test_the_page_in_chromium_shows_every_job_and_why_the_failed_ones_failed(
    running: Running,
) -> None:
    page = Page(dump_dom(f"{running.url}/jobs"))
    # Nothing hostile ran or became markup: no script or image element, the title is ours.
    assert page.title == "Training jobs · ModelArts exporter"
    assert "script" not in page.tags
    assert "img" not in page.tags
    assert "injected" not in page.by_id
    text = page.visible()
    assert "3 watched jobs, 4 tasks, 2 failed." in text
    # The hostile name and engine are shown as the text they are.
    assert HOSTILE_NAME in text
    assert "".join(HOSTILE_ENGINE[0]) in text

    oom = page.visible(f"task-{running.jobs['oom']}-worker-0")
    assert "cuda_oom (resource)" in oom
    assert REASONS["cuda_oom"].remedy in oom
    assert "Tried to allocate 2.00 GiB" in oom
    assert "at step 40" in oom

    hostile = page.visible(f"task-{running.jobs['hostile']}-worker-0")
    assert "python_exception (code)" in hostile
    assert "ValueError: bad label <script>document.title='evidence'</script>" in hostile
    assert "hunter2secret" not in hostile
    assert "password=<redacted>" in hostile

    for task in ("worker-0", "worker-1"):
        healthy = page.visible(f"task-{running.jobs['healthy']}-{task}")
        assert "What to do" not in healthy
    assert "1.5" in page.visible(f"task-{running.jobs['healthy']}-worker-0")


def test_the_landing_page_links_to_the_jobs_page(running: Running) -> None:
    page = requests.get(f"{running.url}/", timeout=5).text
    assert 'href="/jobs"' in page
    assert 'href="/api/v1/jobs"' in page


def test_a_task_link_shows_only_that_task(running: Running) -> None:
    job = running.jobs["healthy"]
    query = urlencode({"training_job_id": job, "task_id": "worker-1"})
    page = Page(dump_dom(f"{running.url}/jobs?{query}"))
    assert f"task-{job}-worker-1" in page.by_id
    assert f"task-{job}-worker-0" not in page.by_id
    assert "A selection of the watched jobs: 1 job, 1 task, 0 failed." in page.visible()
    unknown = Page(dump_dom(f"{running.url}/jobs?training_job_id=nope"))
    assert "No training job matches." in unknown.visible()
    assert "0 watched jobs" not in unknown.visible()  # it watches some: none matched


def test_the_json_has_the_same_as_the_page(running: Running) -> None:
    data = _api(running)
    jobs = {job["training_job_name"]: job for job in data["jobs"]}  # type: ignore[attr-defined]
    assert set(jobs) == {HOSTILE_NAME, "bert-large-finetune", "resnet50"}
    oom = jobs["bert-large-finetune"]["tasks"][0]
    assert oom["exit_code"] == 1
    assert oom["step"] == 40
    assert oom["up"] is True
    failure = oom["failure"]
    assert (failure["reason"], failure["category"]) == ("cuda_oom", "resource")
    assert failure["remedy"] == REASONS["cuda_oom"].remedy
    assert "Tried to allocate 2.00 GiB" in failure["evidence"][0]["text"]
    assert failure["evidence"][-1]["text"].endswith("exit with 1")
    healthy = jobs["resnet50"]
    assert [t["failure"] for t in healthy["tasks"]] == [None, None]
    assert healthy["tasks"][0]["loss"] == 1.5
    assert healthy["tasks"][1]["up"] is True  # no log yet: the call worked
    assert healthy["tasks"][1]["loss"] is None
    only = _api(running, training_job_id=running.jobs["oom"], task_id="worker-0")
    assert json.dumps(only["jobs"][0]["tasks"]) == json.dumps([oom])  # type: ignore[index]


def test_a_nan_loss_is_a_string_in_json(running: Running) -> None:
    running.sim.append_log(running.jobs["healthy"], "worker-0", b"step 30 loss nan\n")
    running.exporter.poller.run_cycle()
    data = _api(running, training_job_id=running.jobs["healthy"], task_id="worker-0")
    assert data["jobs"][0]["tasks"][0]["loss"] == "NaN"  # type: ignore[index]
    page = Page(dump_dom(f"{running.url}/jobs?training_job_id={running.jobs['healthy']}"))
    assert "NaN" in page.visible(f"task-{running.jobs['healthy']}-worker-0")


def test_the_external_url_is_exported_for_the_alerts_links(running: Running) -> None:
    text = requests.get(f"{running.url}/metrics", timeout=5).text
    assert f'modelarts_exporter_web_info{{external_url="{running.url}"}} 1.0' in text
