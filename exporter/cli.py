"""The ``modelarts-exporter`` command: ``serve``, ``demo``, ``analyze``, ``rules``, ``simulate``.

Exit codes: 0 success; 2 bad usage or invalid config/rules (every problem listed, file
and key named); 1 anything else. User mistakes print one clear line per problem on
stderr, never a traceback. Each command imports only what it needs, so ``analyze`` and
``rules`` start fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .logsetup import FORMATS, LEVELS, setup_logging

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_DEMO_ADDRESS = "127.0.0.1:9958"
SIM_TOKEN = "simulator-token"  # noqa: S105 (the simulator's made-up credential)

log = logging.getLogger("exporter")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_log_flags(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """``--log.level`` and ``--log.format``; only the top-level parser sets defaults, so
    that a flag given before the command is not reset by the command's parser."""
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info" if default else argparse.SUPPRESS,
        choices=LEVELS,
        metavar="LEVEL",
        help="debug, info, warn or error (default: info)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt" if default else argparse.SUPPRESS,
        choices=FORMATS,
        metavar="FORMAT",
        help="logfmt or json, one record a line on stderr (default: logfmt)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="modelarts-exporter",
        description="Prometheus exporter and log analyzer for ModelArts training jobs.",
    )
    parser.add_argument("--version", action="version", version=f"modelarts-exporter {__version__}")
    _add_log_flags(parser, default=True)
    # Also accepted after the command's name (`serve --log.level debug`,
    # `rules --log.level debug check`, `rules check --log.level debug`).
    common = _Parser(add_help=False)
    _add_log_flags(common, default=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the exporter against ModelArts",
        description="Discover training jobs, read their logs' previews on a schedule and "
        "serve the metrics on /metrics (configuration: --config.file; README: Configuration).",
        parents=[common],
    )
    serve.add_argument(
        "--config.file",
        dest="config_file",
        required=True,
        metavar="PATH",
        help="the YAML configuration (see the README)",
    )
    serve.add_argument(
        "--web.listen-address",
        dest="listen_address",
        metavar="HOST:PORT",
        help="overrides web.listen_address",
    )
    serve.add_argument(
        "--web.external-url",
        dest="external_url",
        metavar="URL",
        help="the URL users reach the exporter at, for links in alerts (default: "
        "http(s)://<listen host or host name>:<port>); overrides web.external_url",
    )
    serve.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="TLS and basic auth, exporter-toolkit format; overrides web.config_file",
    )
    serve.add_argument(
        "--shard",
        metavar="INDEX/COUNT",
        help="watch only this share of the jobs (a stable hash of the job id); INDEX may be "
        "'hostname': the number ending the host name (StatefulSet pods); overrides shard",
    )
    serve.add_argument(
        "--config.check",
        dest="check",
        action="store_true",
        help="validate the config, credentials and rules, then exit",
    )

    demo = commands.add_parser(
        "demo",
        help="run the built-in ModelArts simulator and the exporter against it",
        description="Start the built-in ModelArts simulator (six jobs: an OOM, a NaN loss, "
        "a restarting Megatron job ...) and the exporter against it, on 127.0.0.1.",
        parents=[common],
    )
    demo.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=DEFAULT_DEMO_ADDRESS,
        metavar="HOST:PORT",
        help=f"exporter address (default: {DEFAULT_DEMO_ADDRESS})",
    )
    demo.add_argument(
        "--web.external-url",
        dest="external_url",
        metavar="URL",
        help="the URL users reach the exporter at, for links in alerts (default: "
        "http://<listen address>)",
    )

    analyze = commands.add_parser(
        "analyze",
        help="run the rules over local log files and print the metrics",
        description="Run the rules over log files you downloaded, each file as one task, "
        "and print what the exporter would export for them.",
        parents=[common],
    )
    analyze.add_argument(
        "--rules",
        action="append",
        default=[],
        metavar="PATH",
        help="extra rule file or directory (repeatable)",
    )
    analyze.add_argument(
        "--no-default-rules", action="store_true", help="do not load the shipped rules"
    )
    analyze.add_argument(
        "--format",
        choices=["prometheus", "summary", "json"],
        default="prometheus",
        help="prometheus: the metrics as /metrics shows them (default); summary: a block per "
        "file for a person; json: for scripts (shape in the README)",
    )
    analyze.add_argument(
        "--failed",
        action="store_true",
        help="the job of these logs failed (ended Failed or Abnormal): give each file that "
        "printed no exit code 0 its failure reason, as the exporter does for such a job "
        "(by default only a printed non-zero exit code makes a file failed)",
    )
    analyze.add_argument("files", nargs="+", metavar="FILE", help="log files; - reads stdin")

    rules = commands.add_parser(
        "rules",
        help="validate rule files, run their examples",
        description="check: validate rule files and measure their cost; test: run every "
        "rule's examples.",
        parents=[common],
    )
    rules_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    for name, text in (
        ("check", "validate the shipped rules and PATHs"),
        ("test", "validate, then run every example in the rules"),
    ):
        action = rules_commands.add_parser(name, help=text, description=text, parents=[common])
        action.add_argument(
            "paths",
            nargs="*",
            metavar="PATH",
            help="a rule file or a directory of *.yml/*.yaml rule files (besides the shipped "
            "rules)",
        )
        action.add_argument("--no-default-rules", action="store_true", help="only the given PATHs")

    simulate = commands.add_parser(
        "simulate",
        help="run only the ModelArts simulator (for development and benchmarks)",
        description="Serve a simulated ModelArts API (list, details, log previews, events, "
        "task metrics, IAM) and print how to point `serve` at it.",
        parents=[common],
    )
    simulate.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="where the simulated ModelArts API listens (default: a free port on 127.0.0.1)",
    )
    # The flag's earlier name keeps working, unlisted.
    simulate.add_argument("--listen-address", dest="listen_address", help=argparse.SUPPRESS)
    simulate.add_argument(
        "--scenario",
        choices=["demo", "scale"],
        default="demo",
        help="demo: the demo's six jobs; scale: many Running jobs for benchmarks (default: demo)",
    )
    simulate.add_argument(
        "--jobs", type=int, default=150, help="scale scenario: Running jobs (default: 150)"
    )
    simulate.add_argument(
        "--tasks-per-job", type=int, default=2, help="scale scenario: tasks each (default: 2)"
    )
    simulate.add_argument(
        "--initial-bytes",
        type=int,
        default=200_000,
        help="scale scenario: each log's size at start, in bytes (default: 200000)",
    )
    simulate.add_argument(
        "--growth-bytes-per-second",
        type=int,
        default=2_000,
        help="scale scenario: how fast each log grows (default: 2000)",
    )
    simulate.add_argument(
        "--token",
        help=f"accept this X-Auth-Token (default without --ak or --iam-user: {SIM_TOKEN})",
    )
    simulate.add_argument("--ak", metavar="ACCESS_KEY", help="accept AK/SK signatures with --sk")
    simulate.add_argument("--sk", metavar="SECRET_KEY", help="the secret key of --ak")
    simulate.add_argument(
        "--iam-user", metavar="NAME", help="accept an IAM password login (POST /v3/auth/tokens)"
    )
    simulate.add_argument("--iam-password", metavar="PASSWORD", help="the password of --iam-user")
    simulate.add_argument(
        "--iam-domain",
        default="simulator",
        metavar="DOMAIN",
        help="the account (domain) of --iam-user (default: simulator)",
    )
    return parser


def _problems(lines: Sequence[str]) -> int:
    for line in lines:
        print(line, file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "analyze":
            return _analyze(args)
        if args.command == "rules":
            return _rules(args)
        return _simulate(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except OSError as exc:
        print(f"modelarts-exporter: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _serve(args: argparse.Namespace) -> int:
    import socket

    from .config import ConfigError
    from .prepare import Flags, prepare

    flags = Flags(
        listen_address=args.listen_address,
        external_url=args.external_url,
        web_config_file=args.web_config_file,
        shard=args.shard,
        hostname=socket.gethostname(),
    )
    config_file = Path(args.config_file).absolute()  # a reload finds it after a chdir too
    try:
        ready = prepare(args.config_file, flags, os.environ)
    except ConfigError as exc:
        return _problems(exc.problems)
    if args.check:
        print(
            f"{args.config_file}: ok ({len(ready.rules)} rules, credentials from "
            f"{ready.credentials.source}; not checked with ModelArts)"
        )
        return EXIT_OK
    from .app import Exporter, StartError

    try:
        exporter = Exporter(
            ready.config,
            ready.credentials,
            rules=ready.rules,
            web=ready.web,
            reloader=lambda: prepare(config_file, flags, os.environ),
        )
        exporter.run()
    except ConfigError as exc:
        return _problems(exc.problems)
    except StartError as exc:
        print(f"modelarts-exporter: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    import tempfile

    from .app import Exporter, StartError
    from .config import Credentials, default_config, parse_external_url, parse_listen_address
    from .simulator import SimAuth, Simulator, demo_scenario

    problems = []
    try:
        parse_listen_address(args.listen_address)
    except ValueError as exc:
        problems.append(f"--web.listen-address: {exc}")
    if args.external_url is not None:
        try:
            parse_external_url(args.external_url)
        except ValueError as exc:
            problems.append(f"--web.external-url: {exc}")
    if problems:
        return _problems(problems)
    token = "demo-token"  # noqa: S105 (the simulator's own credential)
    with tempfile.TemporaryDirectory(prefix="modelarts-exporter-demo-") as tmp:
        simulator = Simulator(demo_scenario(), auth=SimAuth(tokens=frozenset({token})))
        simulator.start()
        try:
            config = default_config(
                simulator.url,
                simulator.project_id,
                collect={"interval_seconds": 2, "discovery_interval_seconds": 2},
                state={"path": str(Path(tmp) / "state.db")},
                web={"listen_address": args.listen_address, "external_url": args.external_url},
            )
            exporter = Exporter(config, Credentials("token", "demo", token=token))
            print(
                "modelarts-exporter demo: synthetic training jobs from the built-in simulator\n"
                f"  metrics:   {exporter.http.url()}/metrics\n"
                f"  jobs:      {exporter.http.url()}/jobs (why a failed task failed)\n"
                f"  simulator: {simulator.url} (ModelArts API, project "
                f"{simulator.project_id})\n"
                "Metrics appear within seconds; one job fails with exit code 1 and a CUDA "
                "OOM,\nwhich /jobs shows with its evidence.\nPress Ctrl-C to stop.",
                flush=True,
            )
            exporter.run()
        except StartError as exc:
            print(f"modelarts-exporter: {exc}{_DEMO_PORT_HINT}", file=sys.stderr)
            return EXIT_FAILURE
        finally:
            simulator.stop()
    return EXIT_OK


_DEMO_PORT_HINT = (
    " (choose another with --web.listen-address HOST:PORT; through make: "
    "make demo DEMO_ARGS='--web.listen-address 127.0.0.1:9959')"
)
"""What the demo says when it cannot listen (``make demo`` passes DEMO_ARGS on)."""


def task_ids(names: Sequence[str]) -> list[str]:
    """The ``task_id`` of each file of one ``analyze`` run: its name without ``.gz``
    (``stdin`` for ``-``); where files share a name (every ModelArts task log is
    ``worker-0``), the parent folder and the name (``job-a/worker-0``); where those
    clash too, the path as given. ValueError names a file given twice."""
    stripped = ["stdin" if name == "-" else name.removesuffix(".gz") for name in names]
    ids = [Path(name).name for name in stripped]
    for depth in (2, None):
        clashing = {i for i in ids if ids.count(i) > 1}
        for n, name in enumerate(stripped):
            if ids[n] in clashing:
                parts = Path(name).parts
                ids[n] = name if depth is None else "/".join(parts[-depth:])
    twice = next((names[n] for n, i in enumerate(ids) if ids.count(i) > 1), None)
    if twice is not None:
        raise ValueError(f"{twice}: given twice")
    return ids


def _analyze(args: argparse.Namespace) -> int:
    from .analyze import FileReport, LogSource, Progress, analyze_log, keep_freed_memory
    from .families import build_families, render_text
    from .report import possible_failures, render_json, render_summary
    from .rules import RuleError, RuleSet, load_rules
    from .store import JobState, Snapshot

    try:
        rules = load_rules(args.rules, include_default=not args.no_default_rules)
    except RuleError as exc:
        return _problems(exc.problems)
    try:
        ids = task_ids(args.files)
    except ValueError as exc:
        return _problems([f"analyze: {exc}"])
    ruleset = RuleSet(rules)
    job = "local"
    now = time.time()
    reports: list[FileReport] = []
    sizes = [_size(name) for name in args.files]
    total = None if None in sizes else sum(s or 0 for s in sizes)
    if total is None or total >= _LARGE_INPUT:
        keep_freed_memory()
    progress = Progress.for_stderr(total)
    done = 0
    unread: list[str] = []  # like cat and grep: a file that cannot be read does not stop the rest
    try:
        for name, task_id in zip(args.files, ids, strict=True):
            try:
                source = LogSource.open(name)
                try:
                    reports.append(
                        analyze_log(
                            source,
                            task_id,
                            ruleset,
                            job_id=job,
                            now=now,
                            on_block=_progress_of(progress, done, task_id),
                        )
                    )
                finally:
                    source.close()
            except OSError as exc:
                unread.append(f"analyze: {name}: {exc.strerror or exc}")
                continue
            except ValueError as exc:
                unread.append(f"analyze: {name}: {exc}")
                continue
            done += source.consumed
    finally:
        progress.close()
    if not reports:
        return _problems(unread)
    tasks = {(job, report.task.task_id): report.task for report in reports}
    snapshot = Snapshot({job: JobState(job, job, "Failed" if args.failed else "Completed")}, tasks)
    families = [
        f
        for f in build_families(snapshot, rules)
        if not f.name.startswith("modelarts_training_job")
    ]
    possible = {} if args.failed else possible_failures(reports)
    if args.format == "summary":
        sys.stdout.write(render_summary(reports, families, possible))
    elif args.format == "json":
        sys.stdout.write(render_json(reports, families, possible))
    else:
        sys.stdout.write(render_text(families))
    return _problems(unread) if unread else EXIT_OK


_LARGE_INPUT = 16 << 20
"""From this many bytes of input (or an unknown size), ``analyze`` tunes the allocator."""


def _progress_of(progress: Any, base: int, label: str) -> Callable[[int], None]:
    """What ``analyze_log`` calls after each block of one file."""
    return lambda done: progress.update(base + done, label)


def _size(name: str) -> int | None:
    """A file's size for the progress bar; None when not known (stdin, a pipe)."""
    if name == "-":
        return None
    try:
        return os.stat(name).st_size
    except OSError:
        return None


def _rules(args: argparse.Namespace) -> int:
    from .rules import RuleError, RuleSet, load_rules

    if args.no_default_rules and not args.paths:
        return _problems(
            [f"rules {args.rules_command}: nothing to check: --no-default-rules and no PATH"]
        )
    try:
        rules = load_rules(args.paths, include_default=not args.no_default_rules)
    except RuleError as exc:
        return _problems(exc.problems)
    files = len({rule.source.split(": rules[")[0] for rule in rules})
    if not rules:
        print(
            f"warning: nothing was checked: no rule in {', '.join(args.paths)}",
            file=sys.stderr,
        )
    if args.rules_command == "check":
        from .rules.cost import rule_cost_warnings
        from .rules.loader import default_rules_dir

        shipped_dir = str(default_rules_dir())
        yours = [
            r for r in rules if r.source != "vocabulary" and not r.source.startswith(shipped_dir)
        ]
        shipped = [r for r in rules if r not in yours]
        for warning in rule_cost_warnings(shipped, yours):
            kind = "note" if warning.startswith("cost: ") else "warning"
            print(f"{kind}: {warning.removeprefix('cost: ')}", file=sys.stderr)
        print(f"ok: {len(rules)} rules in {_plural(files, 'file')}")
        return EXIT_OK
    failures = RuleSet(rules).check_examples()
    examples = sum(len(rule.examples) for rule in rules)
    for line in failures:
        print(line, file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {examples} examples failed", file=sys.stderr)
        return EXIT_FAILURE
    if rules and not examples:
        print("warning: nothing was tested: none of these rules has an example", file=sys.stderr)
    print(f"ok: {examples} examples of {len(rules)} rules in {_plural(files, 'file')}")
    return EXIT_OK


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _simulate(args: argparse.Namespace) -> int:
    import signal

    from .config import parse_listen_address
    from .process_signals import SignalWaiter
    from .simulator import SimAuth, Simulator, demo_scenario, scale_scenario

    problems = []
    try:
        host, port = parse_listen_address(args.listen_address)
    except ValueError as exc:
        problems.append(f"--web.listen-address: {exc}")
    if bool(args.ak) != bool(args.sk):
        problems.append("--ak and --sk go together: give both")
    if bool(args.iam_user) != bool(args.iam_password):
        problems.append("--iam-user and --iam-password go together: give both")
    for flag, value in (
        ("--token", args.token),
        ("--ak", args.ak),
        ("--sk", args.sk),
        ("--iam-password", args.iam_password),
    ):
        # The exporter refuses such credentials (see config.credentials): so does this.
        if value and any(c.isspace() or not c.isprintable() for c in value):
            problems.append(f"{flag}: must not contain whitespace or control characters")
    if problems:
        return _problems(problems)
    token = args.token or (None if args.ak or args.iam_user else SIM_TOKEN)
    auth = SimAuth(
        tokens=frozenset({token} if token else ()),
        aksk={args.ak: args.sk} if args.ak else {},
        users={(args.iam_domain, args.iam_user): args.iam_password} if args.iam_user else {},
        allow_anonymous=not (args.token or args.ak or args.iam_user),
    )
    scenario = (
        demo_scenario()
        if args.scenario == "demo"
        else scale_scenario(
            jobs=args.jobs,
            tasks_per_job=args.tasks_per_job,
            initial_bytes=args.initial_bytes,
            growth_bytes_per_second=args.growth_bytes_per_second,
        )
    )
    simulator = Simulator(scenario, host=host, port=port, auth=auth)
    simulator.start()
    print(_simulator_banner(args, simulator.url, simulator.project_id, token), flush=True)
    with SignalWaiter((signal.SIGTERM, signal.SIGINT)) as signals:
        signals.wait()
    simulator.stop()
    return EXIT_OK


def _simulator_banner(
    args: argparse.Namespace, url: str, project_id: str, token: str | None
) -> str:
    """What ``simulate`` prints: where it is, and the exact ``serve`` command for each
    credential it accepts."""
    import shlex

    environments = []
    if token:
        environments.append(("X-Auth-Token", {"MODELARTS_AUTH_TOKEN": token}))
    if args.ak:
        environments.append(
            ("AK/SK signing", {"HUAWEICLOUD_SDK_AK": args.ak, "HUAWEICLOUD_SDK_SK": args.sk})
        )
    if args.iam_user:
        iam = {
            "OS_AUTH_URL": f"{url}/v3",
            "OS_USERNAME": args.iam_user,
            "OS_PASSWORD": args.iam_password,
            "OS_DOMAIN_NAME": args.iam_domain,
        }
        environments.append(("IAM password login", iam))
    config = f'modelarts: {{endpoint: "{url}", project_id: "{project_id}"}}'
    lines = [
        f"modelarts-exporter simulate: the built-in ModelArts simulator, scenario {args.scenario}",
        f"  endpoint:    {url}",
        f"  project_id:  {project_id}",
        f"  credentials: {', '.join(kind for kind, _ in environments)}",
        "Run the exporter against it (from another terminal):",
        f"  printf '%s\\n' {shlex.quote(config)} > simulator.yml",
    ]
    for kind, env in environments:
        variables = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
        lines.append(
            f"  {variables} modelarts-exporter serve --config.file simulator.yml   # " + kind
        )
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
