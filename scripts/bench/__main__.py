"""`python -m scripts.bench`: parse the options, time the start-up, run the plan, print the
report with its goals, and write it to bench/RESULTS.md."""

import argparse
import logging
import secrets
import shlex
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import structlog

from backoffice.core.config import PROJECT_ROOT

from . import __doc__ as package_doc
from .client import SEQUENTIAL_REQUESTS, check_auth, log_in, sequential_timing, tasks_url
from .goals import evaluate
from .load import WrkMissingError, find_wrk, invocations, measure, write_scripts
from .machine import this_machine
from .plan import (
    ACCESS_TOKEN_TTL_MINUTES,
    COLD_START,
    GOALS,
    TASK_PAGE_SIZE,
    WARM_START,
    Options,
    Server,
    plan,
    planned_seconds,
)
from .report import Report, Result, figures, median_result, page_timing, render, results_markdown
from .report import write_results as write_results_file
from .seeding import embedded_database, server_version
from .servers import WORKERS, start_servers
from .startup import measure_startup

RESULTS_PATH = PROJECT_ROOT / "bench" / "RESULTS.md"


def parse_options(argv: list[str] | None = None) -> Options:
    description = (package_doc or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=description)
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=64, help="open HTTP connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--products", type=int, default=10_000, help="products to seed")
    parser.add_argument("--customers", type=int, default=1_000, help="customers to seed")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks to seed")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run every scenario N times; report medians"
    )
    parser.add_argument(
        "--skip-startup",
        action="store_true",
        help="do not time a warm and a cold `uv run task run` (about a minute)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help=f"print only, leave {RESULTS_PATH.name} alone"
    )
    args = parser.parse_args(argv)
    values = (args.duration, args.threads, args.products, args.customers, args.repeat)
    if min(values) < 1 or args.tasks < TASK_PAGE_SIZE or args.connections < args.threads:
        parser.error(
            "duration, threads, products, customers and repeat must be >= 1, "
            f"tasks >= {TASK_PAGE_SIZE}, connections >= threads"
        )
    options = Options(
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        products=args.products,
        customers=args.customers,
        tasks=args.tasks,
        repeat=args.repeat,
        startup=not args.skip_startup,
        write=not args.no_write,
    )
    if planned_seconds(options) > ACCESS_TOKEN_TTL_MINUTES * 60 * 0.9:
        parser.error(
            f"the run would outlast the {ACCESS_TOKEN_TTL_MINUTES}-minute access token: "
            "lower --duration or --repeat"
        )
    return options


@dataclass(frozen=True, slots=True)
class Run:
    results: list[Result]
    page_timing: tuple[float, float]  # (median, p95) ms of one client's task pages
    postgresql: str  # the bench server's version
    startup: dict[str, float] | None  # seconds by start-up subject; None when skipped


def _startup(options: Options) -> dict[str, float] | None:
    """Timed first, with nothing of the bench running yet."""
    if not options.startup:
        return None
    times = measure_startup()
    measured = {WARM_START: times.warm_s, COLD_START: times.cold_s}
    return {subject: seconds for subject, seconds in measured.items() if seconds is not None}


def run(options: Options) -> Run:
    wrk = find_wrk()
    startup = _startup(options)
    password = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        database_url = stack.enter_context(embedded_database(options, password))
        version = server_version(database_url)
        addresses = start_servers(stack, database_url, password, work_dir)
        api = addresses[Server.API]
        token = log_in(api, password)
        check_auth(api, token, addresses[Server.AUTH_OFF])
        scripts = write_scripts(work_dir)
        steps = invocations(plan(), addresses, token, options.products, scripts)
        runs: list[list[Result]] = [[] for _ in steps]
        for number in range(1, options.repeat + 1):
            label = f" [run {number}/{options.repeat}]" if options.repeat > 1 else ""
            for step, results in zip(steps, runs, strict=True):
                results.append(measure(wrk, step, options, label))
        timing = sequential_timing(tasks_url(api), token)
        return Run([median_result(results) for results in runs], timing, version, startup)


def report_of(options: Options, outcome: Run) -> Report:
    verdicts = evaluate(
        GOALS,
        figures(outcome.results, outcome.startup),
        failed=[result.name for result in outcome.results if result.failed],
    )
    timing = page_timing(SEQUENTIAL_REQUESTS, *outcome.page_timing)
    return Report(options, WORKERS, outcome.results, timing, verdicts, outcome.startup)


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    options = parse_options()
    machine_at_start = this_machine("?")  # the load average before the bench loads it
    try:
        outcome = run(options)
    except WrkMissingError as exc:
        sys.exit(str(exc))
    except RuntimeError as exc:
        sys.exit(f"benchmark failed: {exc}")
    report = report_of(options, outcome)
    print(render(report))
    if options.write:
        machine = replace(machine_at_start, postgresql=outcome.postgresql)
        command = shlex.join(["uv", "run", "python", "-m", "scripts.bench", *sys.argv[1:]])
        text = results_markdown(report, machine, datetime.now(UTC), command)
        write_results_file(RESULTS_PATH, text)
        print(f"\nwritten to {RESULTS_PATH.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
