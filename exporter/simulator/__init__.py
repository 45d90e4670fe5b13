"""The built-in ModelArts simulator: an HTTP server on 127.0.0.1 for the demo, tests and
benchmarks. See ``Simulator`` (server.py) and the scenarios (scenario.py)."""

from .auth import SimAuth
from .scenario import Scenario, demo_scenario, scale_scenario
from .server import Fault, RequestRecord, Simulator

__all__ = [
    "Fault",
    "RequestRecord",
    "Scenario",
    "SimAuth",
    "Simulator",
    "demo_scenario",
    "scale_scenario",
]
