"""The results of a run as Markdown: one table row per scenario, then what the on/off pairs
mean."""

import math
import statistics
from dataclasses import dataclass

from .plan import (
    BASELINE,
    GET_AUDIT_OFF,
    GET_AUTH_OFF,
    GET_AUTH_ON,
    POST_AUDIT_OFF,
    POST_AUDIT_ON,
    TASK_PAGE_SIZE,
    Options,
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
    )


def table(results: list[Result]) -> str:
    repeated = any(len(result.runs) > 1 for result in results)
    header = "| scenario | req/s | p50 ms | p99 ms | non-2xx |"
    rule = "|---|---:|---:|---:|---:|"
    if repeated:
        header, rule = header + " req/s of each run |", rule + "---|"
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
        rows.append(row)
    return "\n".join(rows)


def _ratio(numerator: Result, denominator: Result) -> float:
    if not denominator.requests_per_s:
        return math.nan
    return numerator.requests_per_s / denominator.requests_per_s


def _cost(on: Result, off: Result) -> str:
    ratio = _ratio(on, off)
    return f"{ratio:.2f}x, {1 - ratio:.1%} slower" if ratio < 1 else f"{ratio:.2f}x: not slower"


def summary(results: list[Result]) -> str:
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


def render(options: Options, workers: int, results: list[Result], timing: str) -> str:
    """The whole report, as printed at the end of a run."""
    return "\n".join(
        ["", heading(options, workers), "", table(results), "", summary(results), timing]
    )
