"""Throughput of the rule engine against a straightforward implementation.

    python bench/rules_throughput.py [--mib 5] [--repeat 3]

Builds a realistic 5 MiB log window in memory (seeded, so every run sees the same bytes):
mostly noise (data-loading INFO, ModelArts platform lines, tqdm frames redrawn with CR,
NCCL INFO, warnings), loss lines of several frameworks (HF Trainer, Megatron, MindSpore,
mmengine, Lightning, Keras, PaddleOCR), a few error and warning markers, some ANSI colour
and CRLF. Then, in one run, it prints:

1. in-process: MB/s of ``RuleSet.scan`` over the window, and of a straightforward
   implementation (every shipped rule compiled with Python ``re``, ``re.search`` on every
   line, after the same splitting and normalising), and the speed-up (goal >= 30x);
2. whole process: ``python -m modelarts_exporter analyze WINDOW`` (start-up, imports, rule loading
   and validation included) against the straightforward implementation as a script of
   its own (only ``re`` and ``yaml`` imported, loading the same rule files), and the
   speed-up (goal >= 10x). Both run with their bytecode cached (in a temporary
   PYTHONPYCACHEPREFIX, even when PYTHONDONTWRITEBYTECODE is set), as an installed
   package runs; analyze's first, compiling run is printed as well.

Both implementations must find the same exit code, loss and marker counts; the bench
checks that before it prints any figure.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelarts_exporter.rules import RuleSet, ScanResult, default_rules_dir, load_rules
from modelarts_exporter.rules.model import NUM

GOAL_IN_PROCESS, GOAL_PROCESS = 30.0, 10.0

# --- the window ---------------------------------------------------------------------------


def _ts(rng: random.Random) -> str:
    return f"2025-03-18 {rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"


def _tqdm_frames(rng: random.Random) -> str:
    """A `datasets.map` bar redrawn with carriage returns: one physical line, many frames."""
    frames = []
    total = 10000
    for n in range(rng.randrange(8, 40)):
        done = min(total, n * 257 + rng.randrange(200))
        bar = "█" * (done * 20 // total)
        rate = rng.uniform(200, 900)
        frames.append(
            f"Map (num_proc=8): {100 * done // total:3d}%|{bar:<20}| {done}/{total} "
            f"[00:{n:02d}<00:42, {rate:.2f} examples/s]"
        )
    return "\r".join(frames) + "\n"


def _noise(rng: random.Random) -> str:
    r = rng.randrange
    kind = r(12)
    if kind == 0:
        shard = r(4096)
        return (
            f"{_ts(rng)},{r(1000):03d} - INFO - dataset.py:212 - loading shard {shard}/4096 "
            f"from obs://bucket-ml/datasets/wiki/part-{shard:05d}.parquet (12.3 MB)\n"
        )
    if kind == 1:
        return (
            f"[Modelarts Service Log][INFO][2025/03/18 10:{r(60):02d}:00]: modelarts-pipe: "
            f"upload /home/ma-user/modelarts/outputs/train_url_0/ckpt-{r(9999)}.pt finished\n"
        )
    if kind == 2:
        return _tqdm_frames(rng)
    if kind == 3:
        return (
            f"node03:27106:{r(27000, 28000)} [{r(8)}] NCCL INFO Channel {r(32):02d}/0 : "
            f"{r(8)}[{r(8)}] -> {r(8)}[{r(8)}] via P2P/IPC/read\n"
        )
    if kind == 4:
        return (
            f"\x1b[32m{_ts(rng)}\x1b[0m | \x1b[1mINFO\x1b[0m | trainer.py:1890 | "
            f"throughput: {rng.uniform(1000, 3000):.1f} tokens/s, "
            f"mem {rng.uniform(20, 60):.2f} GiB\r\n"
        )
    if kind == 5:
        return (
            "/usr/local/lib/python3.10/site-packages/torch/utils/checkpoint.py:460: "
            "UserWarning: torch.utils.checkpoint: please pass in use_reentrant=True or "
            "use_reentrant=False explicitly.\n"
        )
    if kind == 6:
        return (
            f"[{_ts(rng)},{r(1000):03d}] [INFO] [logging.py:128:log_dist] [Rank 0] "
            f"step={r(100000)}, skipped=0, lr=[1.9e-05], mom=[(0.9, 0.95)]\n"
        )
    if kind == 7:
        return (
            f"epoch time: {rng.uniform(1e5, 6e5):.3f} ms, "
            f"per step time: {rng.uniform(50, 300):.3f} ms\n"
        )
    if kind == 8:
        return (
            f"[{_ts(rng)}] [INFO] [checkpointing.py:{r(900)}] saving checkpoint at "
            f"iteration {r(100000):8d} to /cache/ckpt\n"
        )
    if kind == 9:
        return (
            f"[WARNING] ME({r(10000, 99999)}:{r(10**12)},MainProcess):"
            f"2025-03-18-10:50:24.716.326 [mindspore/train/serialization.py:{r(2000)}] "
            f"The parameter moments.{r(100)} is not loaded.\n"
        )
    if kind == 10:
        return (
            f"  {r(100)}%|{'▉' * r(30):<30}| {r(1000)}/1000 "
            f"[{r(60):02d}:{r(60):02d}<{r(60):02d}:00,  {rng.uniform(1, 9):.2f}s/it]\n"
        )
    return (
        f"{_ts(rng)} INFO  data_loader: worker {r(16)} prefetched batch {r(10**6)} "
        f"({r(64)} samples, {r(512, 8192)} tokens)\n"
    )


def _loss_line(rng: random.Random, step: int) -> str:
    loss = rng.uniform(0.5, 3.0)
    norm = rng.uniform(0.1, 4)
    epoch, in_epoch = divmod(step, 1000)
    kind = rng.randrange(7)
    if kind == 0:  # HF Trainer dict glued to its tqdm frame
        return (
            f" {step % 100:3d}%|██        | {step}/9000 [01:{step % 60:02d}<22:00,  1.67s/it]"
            f"{{'loss': {loss:.4f}, 'grad_norm': {norm:.6f}, 'learning_rate': 1.9e-05, "
            f"'epoch': {step / 3000:.2f}}}\n"
        )
    if kind == 1:  # Megatron
        return (
            f" iteration {step:8d}/  250000 | consumed samples: {step * 1024:12d} | "
            f"elapsed time per iteration (ms): {rng.uniform(5000, 9000):.1f} | "
            f"learning rate: 9.150E-06 | global batch size:  1024 | lm loss: {loss:.6E} | "
            f"loss scale: 1.0 | grad norm: {norm:.3f} | number of skipped iterations:   0 | "
            "number of nan iterations:   0 |\n"
        )
    if kind == 2:  # MindSpore LossMonitor
        return f"epoch: {epoch} step: {in_epoch}, loss is {loss:.7f}\n"
    if kind == 3:  # mmengine
        return (
            f"03/18 10:{step % 60:02d}:00 - mmengine - INFO - Epoch(train) [{epoch}]"
            f"[{in_epoch:4d}/1000]  lr: 1.9813e-04  eta: 2:44:49  time: 2.8874  "
            f"data_time: 0.0042  memory: 10762  loss: {loss:.4f}  grad_norm: {norm:.4f}\n"
        )
    if kind == 4:  # Lightning bar frame (CR)
        return (
            f"Epoch {epoch}:  {step % 100:2d}%|█         | {in_epoch}/1000 "
            f"[00:11<01:33,  5.82s/it, loss={loss:.3f}, v_num=1933]\r"
        )
    if kind == 5:  # Keras progress
        return (
            f"{in_epoch:4d}/1000 [=====>........................] - ETA: 3:12 - "
            f"loss: {loss:.4f} - accuracy: 0.6136\n"
        )
    return (  # PaddleOCR
        f"[2025/03/18 08:38:37] ppocr INFO: epoch: [{epoch}/500], global_step: {step}, "
        f"lr: 0.000972, acc: 0.070312, CTCLoss: {loss - 0.1:.6f}, SARLoss: 0.170302, "
        f"loss: {loss:.6f}, avg_reader_cost: 1.38 s\n"
    )


_MARKERS = (
    "[2025-03-18 10:44:06,945] [INFO] [loss_scaler.py:183:update_scale] [deepspeed] "
    "OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing to 32768\n",
    "node03:27106:27302 [0] include/shm.h:27 NCCL WARN Call to shm_open failed : "
    "Permission denied\n",
    "{'loss': 0.0, 'grad_norm': nan, 'learning_rate': 9.77e-06, 'epoch': 0.53}\n",
    "[rank3]:[E1123 00:52:57.664949121 ProcessGroupNCCL.cpp:607] [Rank 3] Watchdog caught "
    "collective operation timeout: WorkNCCL(SeqNum=1516, OpType=ALLREDUCE, "
    "Timeout(ms)=600000) ran for 600017 milliseconds before timing out.\n",
)

_ENDING = (
    "Traceback (most recent call last):\n"
    '  File "/home/ma-user/modelarts/user-job-dir/code/train.py", line 577, in <module>\n'
    "    main()\n"
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 22.78 GiB. GPU 0 has a "
    "total capacity of 31.47 GiB\n"
    "E0325 20:57:27.620000 2606 site-packages/torch/distributed/elastic/multiprocessing/"
    "api.py:869] failed (exitcode: 1) local_rank: 0 (pid: 2630) of binary: /usr/bin/python\n"
    "[Modelarts Service Log]Training end with return code: 1\n"
    "[Modelarts Service Log]exit with 1\n"
    "[Modelarts Service Log][sidecar] exit with 0\n"
)


def build_window(size: int, seed: int = 20251127) -> bytes:
    """``size`` bytes of log, starting mid-line as a preview window does."""
    rng = random.Random(seed)
    parts: list[str] = ["8 | learning rate: 9.150E-06 | global batch size:  1024 |\n"]
    total = 0
    step = 1
    ending = len(_ENDING.encode())
    while total < size - ending:
        roll = rng.random()
        if roll < 0.10:
            line = _loss_line(rng, step)
            step += 1
        elif roll < 0.1015:
            line = rng.choice(_MARKERS)
        else:
            line = _noise(rng)
        parts.append(line)
        total += len(line.encode())
    parts.append(_ENDING)
    return "".join(parts).encode()[-size:]


# --- the straightforward implementation -------------------------------------------------

# What one would write first: every rule compiled with Python `re`, searched on every
# line, and the vocabulary's reading of every line's pairs (the project's own
# vocabulary.py, as the engine uses it). Also run as a script of its own (only `re`,
# `yaml` and the vocabulary imported) for the whole-process comparison. Same results as
# the engine: markers once per line, the last line's exit code and loss, on a line the
# first loss rule in load order, else the vocabulary's.
NAIVE_SCRIPT = r"""
import re
import sys

import yaml

from modelarts_exporter.rules.model import signal_number
from modelarts_exporter.rules.vocabfile import merge, parse_vocabulary

NUM = __NUM__
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
CARET = re.compile(r"\^\[\[[0-9;>?]*[A-Za-z]")


def load(folder):
    import os

    rules = []
    vocabularies = []
    for name in sorted(os.listdir(folder)):
        if name.endswith((".yml", ".yaml")) and not name.startswith("."):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                data = yaml.safe_load(f)
                if "vocabulary" in data:
                    vocabularies.append(parse_vocabulary(data["vocabulary"], name, []))
                for spec in data.get("rules", []):
                    unless = spec.get("unless")
                    rules.append((
                        spec,
                        re.compile(spec["pattern"].replace("{NUM}", NUM)),
                        re.compile(unless.replace("{NUM}", NUM)) if unless else None,
                    ))
    return rules, merge(vocabularies)


def number(text):
    return float(text.strip("'\""))


def analyze(data, loaded):
    rules, vocabulary = loaded
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    text = CARET.sub("", ANSI.sub("", text))
    markers = {}
    exit_code = loss = None
    for line in text.split("\n"):
        seen = set()
        code_here = loss_here = None
        for spec, regex, unless in rules:
            m = regex.search(line)
            if m is None or (unless is not None and unless.search(line)):
                continue
            kind = spec["kind"]
            if kind in ("error", "warning"):
                key = (kind, spec.get("marker") or spec["name"])
                if key not in seen:
                    seen.add(key)
                    markers[key] = markers.get(key, 0) + 1
            elif kind == "exit_code" and code_here is None:
                signal = m.groupdict().get("signal")
                code_here = -signal_number(signal) if signal else number(m.group("value"))
            elif kind == "loss" and loss_here is None:
                if spec.get("sum"):
                    loss_here = sum(float(n) for n in re.findall(NUM, m.group("value")))
                else:
                    loss_here = number(m.group("value"))
        # the vocabulary, on every line: a line's pairs give its training loss (when no
        # rule above gave one) and the NaN-loss marker
        facts = vocabulary.read_line(line)
        if loss_here is None and facts.loss is not None:
            loss_here = facts.loss.value
        if any(p.value != p.value or abs(p.value) == float("inf") for p in facts.training_losses):
            key = ("error", "nan_loss")
            if key not in seen:
                seen.add(key)
                markers[key] = markers.get(key, 0) + 1
        if code_here is not None:
            exit_code = code_here
        if loss_here is not None:
            loss = loss_here
    return exit_code, loss, markers


def main():
    rules = load(sys.argv[2])
    with open(sys.argv[1], "rb") as f:
        exit_code, loss, markers = analyze(f.read(), rules)
    print("exit_code", exit_code, "loss", loss)
    for (kind, marker), count in sorted(markers.items()):
        print(kind, marker, count)


if __name__ == "__main__":
    main()
""".replace("__NUM__", repr(NUM))


def _naive_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "naive"}
    exec(compile(NAIVE_SCRIPT, "naive", "exec"), namespace)  # noqa: S102 (our own text)
    return namespace


def _summary(result: ScanResult) -> tuple[Any, Any, dict[tuple[str, str], int]]:
    """What the engine found, in the shape the straightforward implementation returns."""
    markers = {("error", m): n for m, n in result.errors.items()}
    markers |= {("warning", m): n for m, n in result.warnings.items()}
    loss = result.loss.value if result.loss else None
    return result.exit_code, loss, markers


def _time(fn: Any, repeat: int) -> tuple[float, Any]:
    """Best of ``repeat`` runs, and what the function returned."""
    times = []
    value = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_seconds(
    argv: list[str], repeat: int, pycache: Path
) -> tuple[float, float, float, str]:
    """A whole process: the wall time of its first run (bytecode compiled then), the
    median wall time and CPU time of ``repeat`` further runs (bytecode cached, as with an
    installed package), its output. The bytecode goes to ``pycache``, not into the tree.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    t0 = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, env=env)
    first = time.perf_counter() - t0
    times = []
    cpu = []
    out = ""
    for _ in range(repeat):
        c0 = _children_cpu()
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - t0)
        cpu.append(_children_cpu() - c0)
        out = done.stdout.decode()
    return first, statistics.median(times), statistics.median(cpu), out


# --- the run ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=5.0, help="window size (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the fast side")
    args = parser.parse_args(argv)

    window = build_window(int(args.mib * 1024 * 1024))
    megabytes = len(window) / 1e6
    rules = load_rules()
    ruleset = RuleSet(rules)
    naive = _naive_namespace()
    naive_rules = naive["load"](str(default_rules_dir()))
    lines = len(window.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"))

    engine_s, result = _time(lambda: ruleset.scan(window), args.repeat)
    naive_s, naive_result = _time(lambda: naive["analyze"](window, naive_rules), 1)
    exit_code, loss, markers = _summary(result)
    if (exit_code, loss, markers) != naive_result:
        print("the two implementations disagree:", file=sys.stderr)
        print(f"  engine: {exit_code} {loss} {markers}", file=sys.stderr)
        print(f"  naive:  {naive_result}", file=sys.stderr)
        return 1

    def rate(seconds: float) -> str:
        return f"{seconds * 1000:9.1f} ms {megabytes / seconds:8.1f} MB/s"

    print(f"window: {len(window):,} bytes, {lines:,} lines, {len(rules)} shipped rules")
    print(f"  both found: exit code {exit_code}, last loss {loss}, markers:")
    print("    " + ", ".join(f"{m}={n}" for (_, m), n in sorted(markers.items())))
    print("in-process (engine: best of runs):")
    print(f"  RuleSet.scan                {rate(engine_s)}")
    print(f"  straightforward re          {rate(naive_s)}")
    in_process = naive_s / engine_s
    print(f"  speed-up                    {in_process:9.1f}x   goal >= {GOAL_IN_PROCESS:.0f}x")
    slowest = sorted(result.rule_seconds.items(), key=lambda kv: -kv[1])[:4]
    print(
        f"  (engine: prefilter {result.prefilter_seconds * 1000:.1f} ms; slowest rules "
        + ", ".join(f"{name} {s * 1000:.1f} ms" for name, s in slowest)
        + ")"
    )

    with tempfile.TemporaryDirectory(prefix="rules-bench-") as tmp:
        log = Path(tmp) / "worker-0.log"
        log.write_bytes(window)
        script = Path(tmp) / "naive_analyze.py"
        script.write_text(NAIVE_SCRIPT)
        pycache = Path(tmp) / "pycache"
        analyze_cold, analyze_s, analyze_cpu, analyze_out = _process_seconds(
            [sys.executable, "-m", "modelarts_exporter", "analyze", str(log)], args.repeat, pycache
        )
        _, script_s, script_cpu, script_out = _process_seconds(
            [sys.executable, str(script), str(log), str(default_rules_dir())], 1, pycache
        )
    code_line = f'modelarts_task_exit_code{{task_id="{log.name}",training_job_id="local"}} '
    if code_line + str(exit_code) not in analyze_out or f"exit_code {exit_code}" not in script_out:
        print("a whole-process run did not print the expected exit code", file=sys.stderr)
        return 1
    print("whole process, start-up included (bytecode cached; analyze: median of runs):")
    print(f"  modelarts-exporter analyze  {rate(analyze_s)}   cpu {analyze_cpu * 1000:7.1f} ms")
    print(f"    (its first run, compiling bytecode: {analyze_cold * 1000:.1f} ms)")
    print(f"  straightforward script      {rate(script_s)}   cpu {script_cpu * 1000:7.1f} ms")
    process = script_s / analyze_s
    print(
        f"  speed-up                    {process:9.1f}x   goal >= {GOAL_PROCESS:.0f}x"
        f"   (cpu time: {script_cpu / analyze_cpu:.1f}x)"
    )
    met = in_process >= GOAL_IN_PROCESS and process >= GOAL_PROCESS
    print("goals met" if met else "goals NOT met")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
