"""The results of a run as Markdown: one table row per scenario with its goals next to its
figures, the start-up times, a PASS/FAIL line per goal, then what the on/off pairs mean; and
the same, with the machine and the command, as bench/RESULTS.md."""

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .goals import Figure, Metric, Verdict, tally
from .machine import Machine
from .plan import (
    BASELINE,
    COLD_START,
    GET_AUDIT_OFF,
    GET_AUTH_OFF,
    GET_AUTH_ON,
    POST_AUDIT_OFF,
    POST_AUDIT_ON,
    TASK_PAGE_SIZE,
    WARM_START,
    Options,
    deep_page,
)


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    runs: tuple[float, ...] = ()  # req/s of each run, when the median of several

    @property
    def failed(self) -> bool:
        return self.non_2xx > 0 or self.socket_errors > 0


def median_result(results: list[Result]) -> Result:
    """One scenario's repeated runs as one row: the median of each figure, every error."""
    return Result(
        name=results[0].name,
        requests_per_s=statistics.median(r.requests_per_s for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        runs=tuple(r.requests_per_s for r in results),
    )


def heading(options: Options, workers: int) -> str:
    return (
        f"{options.products} products, {options.customers} customers, {options.tasks} tasks, "
        f"{options.connections} connections, "
        f"{options.threads} wrk threads, {options.duration}s per scenario, {workers} workers each"
        + (f", median of {options.repeat} runs" if options.repeat > 1 else "")
        + f"; the deep list page is page {deep_page(options.products)}"
    )


def figures(
    results: Sequence[Result], startup: Mapping[str, float] | None = None
) -> dict[Figure, float]:
    """Every number of a run a goal can name: each scenario's req/s and p99, the start-ups."""
    found: dict[Figure, float] = {}
    for result in results:
        found[Figure(result.name, Metric.REQUESTS_PER_S)] = result.requests_per_s
        found[Figure(result.name, Metric.P99_MS)] = result.p99_ms
    for subject, seconds in (startup or {}).items():
        found[Figure(subject, Metric.SECONDS)] = seconds
    return found


def _goals_of(subject: str, verdicts: Sequence[Verdict]) -> str:
    return "; ".join(v.short() for v in verdicts if v.goal.figure.subject == subject)


def table(results: Sequence[Result], verdicts: Sequence[Verdict] = ()) -> str:
    repeated = any(len(result.runs) > 1 for result in results)
    header = "| scenario | req/s | p50 ms | p99 ms | non-2xx |"
    rule = "|---|---:|---:|---:|---:|"
    if repeated:
        header, rule = header + " req/s of each run |", rule + "---|"
    if verdicts:
        header, rule = header + " goal |", rule + "---|"
    rows = [header, rule]
    for result in results:
        name = f"⚠ {result.name}" if result.failed else result.name
        errors = str(result.non_2xx)
        if result.socket_errors:
            errors += f" (+{result.socket_errors} socket errors)"
        row = (
            f"| {name} | {result.requests_per_s:,.0f} | {result.p50_ms:.2f} | "
            f"{result.p99_ms:.2f} | {errors} |"
        )
        if repeated:
            row += " " + ", ".join(f"{rps:,.0f}" for rps in result.runs) + " |"
        if verdicts:
            row += f" {_goals_of(result.name, verdicts)} |"
        rows.append(row)
    return "\n".join(rows)


def startup_table(startup: Mapping[str, float] | None, verdicts: Sequence[Verdict]) -> str:
    """The start-up times and their goals; a line saying they were skipped, if they were."""
    if startup is None:
        return "start-up not measured (--skip-startup)"
    rows = ["| start-up | seconds | goal |", "|---|---:|---|"]
    for subject in (WARM_START, COLD_START):
        seconds = startup.get(subject)
        shown = "not measured" if seconds is None else f"{seconds:.2f}"
        rows.append(f"| {subject} | {shown} | {_goals_of(subject, verdicts)} |")
    return "\n".join(rows)


def goal_lines(verdicts: Sequence[Verdict]) -> str:
    return "\n".join([*(verdict.line() for verdict in verdicts), tally(verdicts)])


def _ratio(numerator: Result, denominator: Result) -> float:
    if not denominator.requests_per_s:
        return math.nan
    return numerator.requests_per_s / denominator.requests_per_s


def _cost(on: Result, off: Result) -> str:
    ratio = _ratio(on, off)
    return f"{ratio:.2f}x, {1 - ratio:.1%} slower" if ratio < 1 else f"{ratio:.2f}x: not slower"


def summary(results: Sequence[Result]) -> str:
    by_name = {result.name: result for result in results}
    auth_on, auth_off, baseline = by_name[GET_AUTH_ON], by_name[GET_AUTH_OFF], by_name[BASELINE]
    on_off = _ratio(auth_on, auth_off)
    cost = (
        f"authentication costs {1 - on_off:.0%} of the throughput"
        if on_off < 1
        else "no measurable cost: auth on was not slower, so this is noise"
    )
    lines = [
        f"auth on / auth off throughput (GET by id): {on_off:.2f}x ({cost})",
        f"auth on / baseline throughput (GET by id): {_ratio(auth_on, baseline):.2f}x",
        "audit on / audit off throughput: GET by id "
        f"{_cost(auth_on, by_name[GET_AUDIT_OFF])}; POST /products "
        f"{_cost(by_name[POST_AUDIT_ON], by_name[POST_AUDIT_OFF])}",
    ]
    if any(result.failed for result in results):
        lines.append(
            "⚠ = the scenario had non-2xx responses or socket errors: its numbers are suspect."
        )
    return "\n".join(lines)


def page_timing(requests: int, median_ms: float, p95_ms: float) -> str:
    return (
        f"one client alone, GET /tasks?limit={TASK_PAGE_SIZE} (with summaries), "
        f"{requests} requests: median {median_ms:.1f} ms, p95 {p95_ms:.1f} ms"
    )


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a run found, for the console and bench/RESULTS.md alike."""

    options: Options
    workers: int
    results: Sequence[Result]
    timing: str
    verdicts: Sequence[Verdict] = ()
    startup: Mapping[str, float] | None = None


def render(report: Report) -> str:
    """The whole report, as printed at the end of a run."""
    parts = [
        "",
        heading(report.options, report.workers),
        "",
        table(report.results, report.verdicts),
    ]
    parts += ["", startup_table(report.startup, report.verdicts)]
    if report.verdicts:
        parts += ["", goal_lines(report.verdicts)]
    parts += ["", summary(report.results), report.timing]
    return "\n".join(parts)


RESULTS_TITLE = "# Bench results"
RESULTS_NOTE = (
    "The latest `python -m scripts.bench` run, written by the bench itself (`--no-write` "
    "leaves this file alone). Ratios are against the same run's own baseline: read them, not "
    "the absolute figures, across machines. A busy machine (see the load average) makes every "
    "figure noisy."
)


def results_markdown(report: Report, machine: Machine, when: datetime, command: str) -> str:
    """bench/RESULTS.md: the machine line, the date and the command, then the report."""
    header = [
        RESULTS_TITLE,
        "",
        RESULTS_NOTE,
        "",
        f"- date: {when:%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine.line()}",
        f"- command: `{command}`",
    ]
    return "\n".join(header) + "\n" + render(report) + "\n"


def write_results(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
