"""The exporter started with credentials ModelArts rejects: not ready, and loud.

An in-process exporter against the simulator, which first answers every call with 401:
``/-/ready`` is not 200 while no call has succeeded (a rollout must not go on as if all
were well), the log has one error line naming the rejection, and once ModelArts accepts
the calls the exporter becomes ready and collects.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import wait_for

from modelarts_exporter.app import Exporter
from modelarts_exporter.config import Credentials, default_config
from modelarts_exporter.simulator import Fault, SimAuth, Simulator

pytestmark = pytest.mark.timeout(120)
TOKEN = "rejected-test-token-42"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_not_ready_and_one_error_line_until_modelarts_accepts_the_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    with Simulator(auth=SimAuth(tokens=frozenset({TOKEN}))) as sim:
        job = sim.add_job("alpha", tasks=("worker-0",))
        sim.append_log(job, "worker-0", b"step 1 loss=0.5\n")
        rejection = {"error_code": "ModelArts.0204", "error_msg": "Failed to parse the token."}
        sim.inject(Fault(status=401, body=json.dumps(rejection).encode(), times=1_000_000))
        config = default_config(
            sim.url,
            sim.project_id,
            collect={"interval_seconds": 1},
            state={"path": str(tmp_path / "state.db")},
            web={"listen_address": "127.0.0.1:0"},
        )
        exporter = Exporter(config, Credentials("token", "test", token=TOKEN))
        exporter.start()
        try:
            ready = f"{exporter.http.url()}/-/ready"

            def cycles() -> float:
                return (
                    exporter.registry.get_sample_value("modelarts_exporter_collections_total") or 0
                )

            wait_for(lambda: cycles() >= 3, 30, "three collection cycles")
            assert _status(ready) == 503
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1, errors
            assert "rejected the credentials" in errors[0]
            assert "HTTP 401 ModelArts.0204" in errors[0]
            assert "failed (2 listings" in caplog.text

            sim.clear_faults()
            wait_for(lambda: _status(ready) == 200, 30, "ready once ModelArts answers")
            wait_for(
                lambda: exporter.store.task(job, "worker-0").log_size is not None,
                30,
                "the task collected",
            )
        finally:
            exporter.stop()
    assert "accepts the credentials again" in caplog.text
