"""`python -m scripts.bench`: parse the options, run the plan, print the report."""

import argparse
import logging
import secrets
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import structlog

from . import __doc__ as package_doc
from .client import SEQUENTIAL_REQUESTS, check_auth, log_in, sequential_timing, tasks_url
from .load import WrkMissingError, find_wrk, invocations, measure, write_scripts
from .plan import ACCESS_TOKEN_TTL_MINUTES, TASK_PAGE_SIZE, Options, Server, plan, planned_seconds
from .report import Result, median_result, page_timing, render
from .seeding import embedded_database
from .servers import WORKERS, start_servers


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
    )
    if planned_seconds(options) > ACCESS_TOKEN_TTL_MINUTES * 60 * 0.9:
        parser.error(
            f"the run would outlast the {ACCESS_TOKEN_TTL_MINUTES}-minute access token: "
            "lower --duration or --repeat"
        )
    return options


def run(options: Options) -> tuple[list[Result], tuple[float, float]]:
    wrk = find_wrk()
    password = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        database_url = stack.enter_context(embedded_database(options, password))
        addresses = start_servers(stack, database_url, password, work_dir)
        api = addresses[Server.API]
        token = log_in(api, password)
        check_auth(api, token, addresses[Server.AUTH_OFF])
        scripts = write_scripts(work_dir)
        steps = invocations(plan(options), addresses, token, options.products, scripts)
        runs: list[list[Result]] = [[] for _ in steps]
        for number in range(1, options.repeat + 1):
            label = f" [run {number}/{options.repeat}]" if options.repeat > 1 else ""
            for step, results in zip(steps, runs, strict=True):
                results.append(measure(wrk, step, options, label))
        timing = sequential_timing(tasks_url(api), token)
        return [median_result(results) for results in runs], timing


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    options = parse_options()
    try:
        results, (page_median, page_p95) = run(options)
    except WrkMissingError as exc:
        sys.exit(str(exc))
    except RuntimeError as exc:
        sys.exit(f"benchmark failed: {exc}")
    timing = page_timing(SEQUENTIAL_REQUESTS, page_median, page_p95)
    print(render(options, WORKERS, results, timing))


if __name__ == "__main__":
    main()
