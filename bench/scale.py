"""Scale benchmark: the exporter against the built-in simulator, as two separate processes.

Scenario 1 (the issue's goals): 300 tasks in 150 jobs, ~200 KB logs growing 2000 B/s,
a 10 s collection interval. Measures the time from the exporter's start until every task
is on /metrics (goal <= 10 s), the steady-state CPU seconds per cycle of the exporter (and,
separately, of the simulator, which shares the machine), the exporter's RSS (goal < 300 MB),
and /metrics: response time over ~20 scrapes while collecting (goal < 0.5 s), size, series.

Scenario 2: 1000 tasks (500 jobs x 2), ~1 MB logs: the time until caught up (every task on
/metrics with processed + skipped == log size, i.e. its first window processed; goal <= 60 s),
RSS (goal < 500 MB), and the cycle duration afterwards.

CPU comes from /proc/<pid>/stat (utime + stime), memory from /proc/<pid>/status (VmRSS now,
VmHWM = the peak). Cycles are read from the exporter's log (``cycle: ... S s`` lines; the
exporter runs with ``--log.level debug``, at which every cycle logs one).
Nothing here fails the run: every goal prints PASS or MISS.

    .venv/bin/python bench/scale.py                 # both scenarios (~4-5 minutes)
    .venv/bin/python bench/scale.py --scenario 1
    .venv/bin/python bench/scale.py --quick         # smaller sizes, a smoke run (~1 minute)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1_000_000
STARTUP_RETRIES = 3
STARTUP_RETRY_WAIT = 60.0
TOKEN = "scale-bench-token"  # noqa: S105 (the simulator's own credential)


# --- processes ----------------------------------------------------------------------------


def command() -> list[str]:
    """How to run ``modelarts-exporter``: $SCALE_BENCH_COMMAND (split like a shell), else
    the venv's script, else the one on PATH, else ``python -m modelarts_exporter``."""
    override = os.environ.get("SCALE_BENCH_COMMAND")
    if override:
        return shlex.split(override)
    script = ROOT / ".venv" / "bin" / "modelarts-exporter"
    if script.exists():
        return [str(script)]
    found = shutil.which("modelarts-exporter")
    return [found] if found else [sys.executable, "-m", "modelarts_exporter"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields_ = data[data.rindex(")") + 2 :].split()
    return (int(fields_[11]) + int(fields_[12])) / CLK_TCK


def machine_busy() -> float:
    """CPU seconds all processes of the machine spent so far (/proc/stat, not idle/iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in bytes."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


class Processes:
    """Child processes, each in its own session, always stopped by ``stop_all``."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except BaseException:  # noqa: BLE001 (stop the others all the same)
                proc.kill()


class Sampler(threading.Thread):
    """Samples RSS of some pids every ``period`` seconds; keeps the maximum."""

    def __init__(self, pids: dict[str, int], period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.period = period
        self.max_rss = dict.fromkeys(pids, 0)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.period):
            for name, pid in self.pids.items():
                try:
                    rss, _ = memory(pid)
                except OSError:
                    continue
                self.max_rss[name] = max(self.max_rss[name], rss)

    def stop(self) -> None:
        self._halt.set()
        self.join(2)


class StartFailed(Exception):
    """A child exited early (e.g. rules or CLI mid-edit): the scenario is retried."""


# --- the exporter's log and /metrics ------------------------------------------------------

CYCLE = re.compile(
    r"cycle: (?P<jobs>\d+) jobs, (?P<polled>\d+) tasks polled \((?P<outcomes>[^)]*)\), "
    r"(?P<new>\d+) new bytes, (?P<failed>\d+) failed(?: \([^)]*\))?, (?P<seconds>[\d.]+) s"
    r"(?:; [^\"]*)?\""  # then, in cycles that read them: events and task metrics
)
TIMESTAMP = re.compile(r"^ts=(\S+T\S+|\S+ \S+)")
TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%d %H:%M:%S,%f")


def log_time(line: str) -> float | None:
    """The Unix time in a log line's ``ts=`` (logfmt or the older asctime form), in UTC."""
    m = TIMESTAMP.match(line)
    if m:
        for form in TIMESTAMP_FORMATS:
            try:
                return datetime.strptime(m[1], form).replace(tzinfo=UTC).timestamp()
            except ValueError:
                continue
    return None


@dataclass
class Cycle:
    end: float  # Unix time the cycle's line was written
    seconds: float
    jobs: int
    polled: int
    outcomes: str
    new_bytes: int
    failed: int
    seen_at: float  # time.monotonic() when this script read the line
    exporter_cpu: float  # exporter CPU seconds when the line was read
    simulator_cpu: float
    machine_cpu: float  # all processes, /proc/stat
    own_cpu: float  # this script

    @property
    def start(self) -> float:
        return self.end - self.seconds


class LogTail:
    """Reads the exporter's stderr file as it grows; turns cycle lines into ``Cycle``s."""

    def __init__(self, path: Path, exporter_pid: int, simulator_pid: int) -> None:
        self.path = path
        self.pids = (exporter_pid, simulator_pid)
        self.offset = 0
        self.partial = ""
        self.cycles: list[Cycle] = []
        self.lines: list[str] = []

    def poll(self) -> list[Cycle]:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(self.offset)
                data = f.read()
                self.offset = f.tell()
        except OSError:
            return []
        if not data:
            return []
        now = time.monotonic()
        try:
            cpus = (cpu_seconds(self.pids[0]), cpu_seconds(self.pids[1]))
        except OSError:
            cpus = (float("nan"), float("nan"))
        machine, own = machine_busy(), own_cpu()
        text = self.partial + data
        *lines, self.partial = text.split("\n")
        new = []
        for line in lines:
            self.lines.append(line)
            m = CYCLE.search(line)
            if not m:
                continue
            end = log_time(line)
            new.append(
                Cycle(
                    end=time.time() if end is None else end,
                    seconds=float(m["seconds"]),
                    jobs=int(m["jobs"]),
                    polled=int(m["polled"]),
                    outcomes=m["outcomes"],
                    new_bytes=int(m["new"]),
                    failed=int(m["failed"]),
                    seen_at=now,
                    exporter_cpu=cpus[0],
                    simulator_cpu=cpus[1],
                    machine_cpu=machine,
                    own_cpu=own,
                )
            )
        self.cycles.extend(new)
        return new

    def wait_cycles(self, count: int, timeout: float, alive: Callable[[], None]) -> list[Cycle]:
        """Wait for ``count`` new cycle lines (fewer on timeout); CPU sampled as each lands."""
        got: list[Cycle] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            alive()
            got.extend(self.poll())
            time.sleep(0.05)
        return got[:count]

    def tail(self, lines: int = 15) -> str:
        self.poll()
        return "\n".join([*self.lines, self.partial][-lines:])


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Scrape:
    seconds: float
    size: int
    text: str
    at: float  # Unix time the request started

    def series(self) -> int:
        return sum(1 for line in self.text.splitlines() if line and not line.startswith("#"))

    def samples(self, name: str) -> Iterator[tuple[dict[str, str], float]]:
        prefix = name + "{"
        for line in self.text.splitlines():
            if line.startswith(prefix) or line.startswith(name + " "):
                m = SAMPLE.match(line)
                if m and m[1] == name:
                    yield dict(LABEL.findall(m[2] or "")), float(m[3])

    def per_task(self, name: str) -> dict[tuple[str, str], float]:
        return {
            (labels.get("training_job_id", ""), labels.get("task_id", "")): value
            for labels, value in self.samples(name)
        }

    def value(self, name: str, default: float = float("nan")) -> float:
        for _, value in self.samples(name):
            return value
        return default


def scrape(port: int, timeout: float = 30.0) -> Scrape:
    at = time.time()
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        body = resp.read()
    return Scrape(time.perf_counter() - started, len(body), body.decode("utf-8", "replace"), at)


@dataclass
class Progress:
    on_metrics: int
    caught_up: int
    lagging_bytes: float


def progress(s: Scrape) -> Progress:
    size = s.per_task("modelarts_task_log_size_bytes")
    processed = s.per_task("modelarts_task_log_processed_bytes_total")
    skipped = s.per_task("modelarts_task_log_skipped_bytes_total")
    caught = 0
    lag = 0.0
    for key, total in size.items():
        done = processed.get(key, 0.0) + skipped.get(key, 0.0)
        caught += done >= total
        lag += max(0.0, total - done)
    return Progress(len(size), caught, lag)


# --- one run: a simulator and an exporter -------------------------------------------------


@dataclass
class Run:
    """A simulator and an exporter running against it."""

    procs: Processes
    tmp: Path
    sim: subprocess.Popen[bytes]
    exporter: subprocess.Popen[bytes]
    port: int
    t0: float  # monotonic, just before the exporter was spawned
    t0_wall: float  # the same moment, Unix time
    log: LogTail
    sampler: Sampler

    def alive(self) -> None:
        for name, proc in (("exporter", self.exporter), ("simulator", self.sim)):
            if proc.poll() is not None:
                raise StartFailed(
                    f"{name} exited with {proc.returncode}; its log ends:\n{self.log.tail()}"
                    if name == "exporter"
                    else f"simulator exited with {proc.returncode}"
                )

    def cpu(self) -> tuple[float, float, float, float]:
        """(exporter, simulator, whole machine, this script) CPU seconds so far."""
        return (
            cpu_seconds(self.exporter.pid),
            cpu_seconds(self.sim.pid),
            machine_busy(),
            own_cpu(),
        )

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


def start_simulator(
    procs: Processes, tmp: Path, jobs: int, tasks: int, initial: int, growth: int
) -> tuple[subprocess.Popen[bytes], str, str]:
    args = [
        *command(),
        "simulate",
        "--scenario",
        "scale",
        "--jobs",
        str(jobs),
        "--tasks-per-job",
        str(tasks),
        "--initial-bytes",
        str(initial),
        "--growth-bytes-per-second",
        str(growth),
        "--web.listen-address",
        "127.0.0.1:0",
        # A token sent is always checked, even where anonymous requests are accepted.
        "--token",
        TOKEN,
    ]
    err = open(tmp / "simulator.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = procs.spawn(args, stdout=subprocess.PIPE, stderr=err, cwd=tmp)
    err.close()
    assert proc.stdout is not None
    # The start-up message: "  endpoint:    URL" and "  project_id:  ID" lines.
    out = b""
    while b"\n  project_id:" not in out or not out.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
        if not chunk:
            text = (tmp / "simulator.log").read_text(errors="replace")[-2000:]
            raise StartFailed(f"the simulator did not start:\n{text}")
        out += chunk
    labels = dict(
        line.strip().split(":", 1) for line in out.decode().splitlines()[1:3] if ":" in line
    )
    return proc, labels["endpoint"].strip(), labels["project_id"].strip()


@contextmanager
def running(
    jobs: int,
    tasks: int,
    initial: int,
    growth: int,
    interval: float,
    concurrency: int,
    platform: bool = True,
) -> Iterator[Run]:
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="modelarts-scale-"))
    sampler: Sampler | None = None
    try:
        sim, url, project_id = start_simulator(procs, tmp, jobs, tasks, initial, growth)
        config = tmp / "exporter.yml"
        config.write_text(
            f"modelarts: {{endpoint: '{url}', project_id: '{project_id}'}}\n"
            f"collect: {{interval_seconds: {interval}, concurrency: {concurrency}}}\n"
            f"state: {{path: '{tmp / 'state.db'}'}}\n"
            + ("" if platform else "platform: {events: false, task_metrics: false}\n")
        )
        port = free_port()
        env = {**os.environ, "MODELARTS_AUTH_TOKEN": TOKEN}
        log_path = tmp / "exporter.log"
        err = open(log_path, "wb")  # noqa: SIM115
        t0, t0_wall = time.monotonic(), time.time()
        exporter = procs.spawn(
            [
                *command(),
                "serve",
                "--config.file",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                # every cycle's line (at info level, only cycles that changed something)
                "--log.level",
                "debug",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=tmp,
        )
        err.close()
        sampler = Sampler({"exporter": exporter.pid, "simulator": sim.pid})
        sampler.start()
        yield Run(
            procs,
            tmp,
            sim,
            exporter,
            port,
            t0,
            t0_wall,
            LogTail(log_path, exporter.pid, sim.pid),
            sampler,
        )
    finally:
        try:
            procs.stop_all()
        finally:
            if sampler is not None:
                sampler.stop()
            shutil.rmtree(tmp, ignore_errors=True)


def wait_metrics(run: Run, expected: int, timeout: float, period: float) -> dict[str, Any]:
    """Until every task is on /metrics and caught up, or ``timeout`` s after the start.

    A scrape costs the exporter CPU (a 300-task page ~0.2 s), so /metrics is read only
    every ``period`` s once it answers; the exporter's log is read every 0.1 s. Every task
    is committed (on /metrics, its first window processed) by the time the first cycle that
    polled them all without a failure logs its line (``first_full_cycle_s``; the line comes
    after that cycle's events and task metrics reads too, so it is an upper bound), and the
    scrapes confirm it (``all_on_metrics_s``, ``caught_up_s``) within ``period`` s.
    """
    out: dict[str, Any] = {
        "http_up_s": None,
        "all_on_metrics_s": None,
        "caught_up_s": None,
        "first_full_cycle_s": None,
        "scrape_period_s": period,
    }
    last: Progress | None = None
    scrape_times: list[float] = []
    next_scrape = 0.0
    while run.elapsed() < timeout:
        run.alive()
        for c in run.log.poll():
            if out["first_full_cycle_s"] is None and c.polled >= expected and c.failed == 0:
                out["first_full_cycle_s"] = c.end - run.t0_wall
                next_scrape = 0.0  # confirm it now
        if time.monotonic() < next_scrape:
            time.sleep(0.1)
            continue
        try:
            s = scrape(run.port, timeout=max(1.0, timeout - run.elapsed()))
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.1)
            continue
        elapsed = run.elapsed()
        next_scrape = time.monotonic() + period
        scrape_times.append(s.seconds)
        if out["http_up_s"] is None:
            out["http_up_s"] = elapsed - s.seconds
        last = progress(s)
        if out["all_on_metrics_s"] is None and last.on_metrics >= expected:
            out["all_on_metrics_s"] = elapsed
        if last.on_metrics >= expected and last.caught_up >= expected:
            out["caught_up_s"] = elapsed
            break
    # The cycle also reads the platform signals (events, task metrics) after the previews
    # are committed: its line can come after the scrapes saw every task.
    while out["first_full_cycle_s"] is None and run.elapsed() < timeout:
        run.alive()
        for c in run.log.poll():
            if c.polled >= expected and c.failed == 0:
                out["first_full_cycle_s"] = c.end - run.t0_wall
                break
        time.sleep(0.1)
    out["progress"] = last.__dict__ if last else None
    out["scrapes_while_waiting"] = len(scrape_times)
    out["max_scrape_while_waiting_s"] = max(scrape_times, default=None)
    return out


def cycle_stats(cycles: list[Cycle], first: tuple[float, float, float, float]) -> dict[str, Any]:
    """CPU per cycle from the CPU readings taken as each cycle line landed.

    ``others``: CPU the rest of the machine used meanwhile (not the exporter, the simulator
    or this script): other work sharing the 2 cores makes every figure slower.
    """
    exp_cpu, sim_cpu, others, walls = [], [], [], []
    prev = first
    for c in cycles:
        now = (c.exporter_cpu, c.simulator_cpu, c.machine_cpu, c.own_cpu)
        exp_cpu.append(now[0] - prev[0])
        sim_cpu.append(now[1] - prev[1])
        others.append((now[2] - prev[2]) - exp_cpu[-1] - sim_cpu[-1] - (now[3] - prev[3]))
        prev = now
    for a, b in itertools.pairwise(cycles):
        walls.append(b.seen_at - a.seen_at)
    return {
        "cycles": len(cycles),
        "cycle_seconds": [c.seconds for c in cycles],
        "new_bytes": [c.new_bytes for c in cycles],
        "outcomes": [c.outcomes for c in cycles],
        "exporter_cpu_per_cycle": exp_cpu,
        "simulator_cpu_per_cycle": sim_cpu,
        "other_processes_cpu_per_cycle": others,
        "seconds_between_cycle_ends": walls,
    }


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --- scenarios ----------------------------------------------------------------------------


@dataclass
class Sizes:
    jobs: int
    tasks: int
    initial: int
    growth: int
    interval: float
    concurrency: int = 8
    platform: bool = True
    """Read events and task metrics too (platform.events / platform.task_metrics)."""
    steady_cycles: int = 4
    scrapes: int = 20
    timeout: float = 60.0
    """How long to wait for every task to be on /metrics and caught up."""
    scrape_period: float = 2.0
    """Scrapes while waiting for that (each costs the exporter CPU)."""
    after_timeout: float = 60.0
    """Scenario 2: how long to wait for the cycles afterwards."""

    @property
    def total(self) -> int:
        return self.jobs * self.tasks

    def describe(self) -> str:
        return (
            f"{self.total} tasks in {self.jobs} jobs, {self.initial} B logs growing "
            f"{self.growth} B/s, interval {self.interval:g} s, concurrency {self.concurrency}"
            + ("" if self.platform else ", no platform signals")
        )


def summary(cycles: list[Cycle]) -> list[dict[str, Any]]:
    keys = ("seconds", "polled", "outcomes", "new_bytes", "failed")
    return [{k: getattr(c, k) for k in keys} for c in cycles]


def report_wait(r: dict[str, Any], total: int) -> None:
    p = r["progress"]
    late = (
        f" ({p['on_metrics']} on /metrics, {p['caught_up']} caught up at the deadline)"
        if p and r["caught_up_s"] is None
        else ""
    )
    print(
        f"  /metrics up {fmt(r['http_up_s'])} s; first cycle over all {total} tasks ended "
        f"{fmt(r['first_full_cycle_s'])} s; scrapes saw all {fmt(r['all_on_metrics_s'])} s, "
        f"caught up {fmt(r['caught_up_s'])} s{late}",
        flush=True,
    )


def scenario_1(sizes: Sizes) -> dict[str, Any]:
    r: dict[str, Any] = {"sizes": sizes.__dict__, "load_average_before": load_average()}
    with running(
        sizes.jobs,
        sizes.tasks,
        sizes.initial,
        sizes.growth,
        sizes.interval,
        sizes.concurrency,
        sizes.platform,
    ) as run:
        r.update(wait_metrics(run, sizes.total, sizes.timeout, sizes.scrape_period))
        report_wait(r, sizes.total)
        r["first_cycles"] = summary(run.log.cycles)
        # Steady state: from the end of the next cycle, several whole cycles, no scrapes.
        boundary = run.log.wait_cycles(1, sizes.interval * 3 + 30, run.alive)
        base = boundary_cpu(boundary, run)
        cycles = run.log.wait_cycles(
            sizes.steady_cycles, sizes.interval * (sizes.steady_cycles + 1) + 30, run.alive
        )
        r["steady"] = cycle_stats(cycles, base)
        print(
            f"  steady: {len(cycles)} cycles of {fmt(median(r['steady']['cycle_seconds']), 2)} s,"
            f" CPU/cycle exporter {fmt(median(r['steady']['exporter_cpu_per_cycle']), 2)} s, "
            f"simulator {fmt(median(r['steady']['simulator_cpu_per_cycle']), 2)} s",
            flush=True,
        )
        # Scrapes while collecting: from the next cycle's start, spread over one interval.
        if run.log.cycles:
            next_start = run.log.cycles[-1].start + sizes.interval
            time.sleep(max(0.0, min(sizes.interval, next_start - time.time())))
        spacing = sizes.interval / sizes.scrapes
        scrapes: list[Scrape] = []
        for _ in range(sizes.scrapes):
            tick = time.monotonic()
            run.alive()
            scrapes.append(scrape(run.port))
            time.sleep(max(0.0, spacing - (time.monotonic() - tick)))
        # The cycle the scrapes overlapped has to be logged to tell which ones did.
        if not run.log.cycles or run.log.cycles[-1].end < scrapes[0].at:
            run.log.wait_cycles(1, sizes.interval + 30, run.alive)
        windows = [(c.start, c.end) for c in run.log.cycles]
        during = [
            s.seconds
            for s in scrapes
            if any(a <= s.at + s.seconds and s.at <= b for a, b in windows)
        ]
        times = [s.seconds for s in scrapes]
        r["scrape"] = {
            "count": len(times),
            "median_s": median(times),
            "max_s": max(times),
            "during_cycle_count": len(during),
            "during_cycle_median_s": median(during),
            "during_cycle_max_s": max(during, default=None),
            "bytes": scrapes[-1].size,
            "series": scrapes[-1].series(),
        }
        r["memory"] = finish_memory(run)
        r["load_average_after"] = load_average()
        r["all_cycles"] = summary(run.log.cycles)
    return r


def scenario_2(sizes: Sizes) -> dict[str, Any]:
    r: dict[str, Any] = {"sizes": sizes.__dict__, "load_average_before": load_average()}
    with running(
        sizes.jobs,
        sizes.tasks,
        sizes.initial,
        sizes.growth,
        sizes.interval,
        sizes.concurrency,
        sizes.platform,
    ) as run:
        r.update(wait_metrics(run, sizes.total, sizes.timeout, sizes.scrape_period))
        report_wait(r, sizes.total)
        # Afterwards: whole cycles after the first full one (if that one is still running,
        # it ends first: its end is still the exact catch-up time, only later than the
        # deadline). The last cycle line read is the CPU boundary.
        seen = len(run.log.cycles)
        base = boundary_cpu(run.log.cycles[-1:], run)
        deadline = time.monotonic() + sizes.after_timeout
        after: list[Cycle] = []
        while len(after) < sizes.steady_cycles and time.monotonic() < deadline:
            for c in run.log.wait_cycles(1, deadline - time.monotonic(), run.alive):
                if r["first_full_cycle_s"] is None:
                    if c.polled >= sizes.total and c.failed == 0:
                        r["first_full_cycle_s"] = c.end - run.t0_wall
                        print(f"  first full cycle ended {r['first_full_cycle_s']:.1f} s")
                    base = boundary_cpu([c], run)
                else:
                    after.append(c)
        r["catch_up_cycles"] = summary(run.log.cycles[:seen])
        r["steady"] = cycle_stats(after, base)
        print(
            f"  afterwards: {len(after)} cycles of {fmt(median(r['steady']['cycle_seconds']), 2)}"
            f" s, CPU/cycle exporter {fmt(median(r['steady']['exporter_cpu_per_cycle']), 2)} s, "
            f"simulator {fmt(median(r['steady']['simulator_cpu_per_cycle']), 2)} s",
            flush=True,
        )
        s = scrape(run.port)
        r["scrape"] = {"seconds": s.seconds, "bytes": s.size, "series": s.series()}
        r["memory"] = finish_memory(run)
        r["load_average_after"] = load_average()
        r["all_cycles"] = summary(run.log.cycles)
    return r


def boundary_cpu(boundary: list[Cycle], run: Run) -> tuple[float, float, float, float]:
    if not boundary:
        return run.cpu()
    c = boundary[0]
    return (c.exporter_cpu, c.simulator_cpu, c.machine_cpu, c.own_cpu)


def finish_memory(run: Run) -> dict[str, int]:
    rss, hwm = memory(run.exporter.pid)
    sim_rss, sim_hwm = memory(run.sim.pid)
    return {
        "exporter_rss": rss,
        "exporter_peak_rss": max(hwm, run.sampler.max_rss["exporter"]),
        "simulator_rss": sim_rss,
        "simulator_peak_rss": max(sim_hwm, run.sampler.max_rss["simulator"]),
    }


def with_retries(name: str, fn: Callable[[Sizes], dict[str, Any]], sizes: Sizes) -> dict[str, Any]:
    for attempt in range(1, STARTUP_RETRIES + 1):
        try:
            return fn(sizes)
        except StartFailed as exc:
            print(f"  {name}: {exc}", file=sys.stderr)
            if attempt == STARTUP_RETRIES:
                raise
            print(
                f"  {name}: retrying in {STARTUP_RETRY_WAIT:.0f} s "
                f"(attempt {attempt + 1}/{STARTUP_RETRIES})",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(STARTUP_RETRY_WAIT)
    raise AssertionError("unreachable")


# --- report -------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def verdict(value: float | None, goal: float) -> str:
    return "MISS" if value is None or value > goal else "PASS"


def table(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []

    def row(label: str, value: str, goal: str = "", mark: str = "") -> None:
        rows.append((label, value, goal, mark))

    def seconds(value: float | None, digits: int = 1) -> str:
        return f"{fmt(value, digits)} s"

    def cycles(st: dict[str, Any], when: str) -> None:
        row(f"  cycle duration {when} (median)", seconds(median(st["cycle_seconds"]), 2))
        row("  new bytes per cycle (median)", f"{fmt(median(st['new_bytes']), 0)} B")
        row(f"  exporter CPU per cycle {when}", seconds(median(st["exporter_cpu_per_cycle"]), 2))
        row(f"  simulator CPU per cycle {when}", seconds(median(st["simulator_cpu_per_cycle"]), 2))
        others = median(st["other_processes_cpu_per_cycle"])
        row(
            "  other processes' CPU per cycle",
            seconds(None if others is None else max(0, others), 2),
        )

    def memory_rows(m: dict[str, int], goal: float) -> None:
        peak = m["exporter_peak_rss"] / MB
        row("  exporter RSS at end", f"{m['exporter_rss'] / MB:.0f} MB")
        row("  exporter RSS max", f"{peak:.0f} MB", f"< {goal:.0f} MB", verdict(peak, goal - 1e-9))
        row("  simulator RSS max", f"{m['simulator_peak_rss'] / MB:.0f} MB")

    if "1" in results:
        r = results["1"]
        z = r["sizes"]
        row(
            f"S1: {z['jobs'] * z['tasks']} tasks / {z['jobs']} jobs, {z['initial'] / 1000:g} KB", ""
        )
        row("  (load average before)", f"{r['load_average_before']:.1f}")
        row("  start -> /metrics answers", seconds(r["http_up_s"]))
        all_on = r["first_full_cycle_s"] if r["all_on_metrics_s"] is not None else None
        row(
            "  start -> all tasks on /metrics (log)",
            seconds(all_on),
            "<= 10 s",
            verdict(all_on, 10),
        )
        row(
            f"  (seen by a scrape, every {r['scrape_period_s']:g} s)",
            seconds(r["all_on_metrics_s"]),
        )
        cycles(r["steady"], "steady")
        memory_rows(r["memory"], 300)
        sc = r["scrape"]
        row(f"  /metrics median, {sc['count']} scrapes", seconds(sc["median_s"], 3))
        row("  /metrics max", seconds(sc["max_s"], 3), "< 0.5 s", verdict(sc["max_s"], 0.4999))
        row(
            f"  /metrics median/max of {sc['during_cycle_count']} during a cycle",
            f"{fmt(sc['during_cycle_median_s'], 3)}/{fmt(sc['during_cycle_max_s'], 3)} s",
        )
        row("  /metrics size", f"{sc['bytes'] / 1000:.0f} KB, {sc['series']} series")
    if "2" in results:
        r = results["2"]
        z = r["sizes"]
        row(f"S2: {z['jobs'] * z['tasks']} tasks / {z['jobs']} jobs, {z['initial'] / MB:g} MB", "")
        row("  (load average before)", f"{r['load_average_before']:.1f}")
        caught = r["first_full_cycle_s"]
        shown = seconds(caught) if caught is not None else "not within the run"
        row("  start -> caught up (log)", shown, "<= 60 s", verdict(caught, 60))
        p = r["progress"] or {}
        row(
            f"  (seen by a scrape, every {r['scrape_period_s']:g} s)",
            seconds(r["caught_up_s"])
            if r["caught_up_s"] is not None
            else f"> {z['timeout']:.0f} s: {p.get('caught_up', 0)}/{z['jobs'] * z['tasks']}",
        )
        memory_rows(r["memory"], 500)
        cycles(r["steady"], "afterwards")
        sc = r["scrape"]
        row(
            "  /metrics",
            f"{sc['seconds']:.3f} s, {sc['bytes'] / 1000:.0f} KB, {sc['series']} series",
        )
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    header = ("figure", "value", "goal", "")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in (header, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["1", "2", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the raw figures here")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="collect.concurrency (default: 8)"
    )
    parser.add_argument(
        "--no-platform-signals",
        action="store_true",
        help="skip events and task metrics (to measure what they cost)",
    )
    args = parser.parse_args(argv)

    if args.quick:
        s1 = Sizes(20, 2, 50_000, 2_000, interval=4, steady_cycles=2, scrapes=8, timeout=30)
        s1.scrape_period = 1.0
        s2 = Sizes(50, 2, 200_000, 2_000, interval=4, steady_cycles=2, timeout=40)
        s2.scrape_period, s2.after_timeout = 2.0, 20.0
    else:
        s1 = Sizes(150, 2, 200_000, 2_000, interval=10, steady_cycles=3, scrapes=20, timeout=60)
        s2 = Sizes(500, 2, 1_000_000, 2_000, interval=10, steady_cycles=2, timeout=120)
        s2.scrape_period, s2.after_timeout = 5.0, 75.0

    s1.concurrency = s2.concurrency = args.concurrency
    s1.platform = s2.platform = not args.no_platform_signals
    # Ctrl-C (even where SIGINT was ignored, as in a background job) and SIGTERM raise
    # KeyboardInterrupt: the finally blocks stop the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"modelarts-exporter scale benchmark on {os.cpu_count()} CPUs ({' '.join(command())})")
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    try:
        if args.scenario in ("1", "all"):
            print(f"scenario 1: {s1.describe()}", flush=True)
            results["1"] = with_retries("scenario 1", scenario_1, s1)
        if args.scenario in ("2", "all"):
            print(f"scenario 2: {s2.describe()}", flush=True)
            results["2"] = with_retries("scenario 2", scenario_2, s2)
    except KeyboardInterrupt:
        print("interrupted: children stopped", file=sys.stderr)
        return 130
    except StartFailed:
        print("the exporter did not start; no figures", file=sys.stderr)
        return 1
    print(f"\ntotal {time.monotonic() - started:.0f} s\n")
    print_table(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
