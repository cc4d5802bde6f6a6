"""The benchmark's parts that need no server: the plan, wrk's scripts and output, the goals
and their verdicts, the report and bench/RESULTS.md, and what happens without wrk. A real run
(`task bench -- --duration 2 --repeat 1 --skip-startup`) is too slow and too noisy for the
suite."""

from datetime import UTC, datetime

import pytest

from scripts.bench.__main__ import parse_options
from scripts.bench.goals import Comparison, Figure, Goal, Metric, Status, evaluate, tally
from scripts.bench.load import (
    LUA_DIR,
    RESULT_MARKER,
    RESULT_SCRIPT,
    Script,
    WrkMissingError,
    find_wrk,
    invocations,
    parse_wrk,
)
from scripts.bench.machine import Machine
from scripts.bench.plan import (
    BASELINE,
    COLD_START,
    GET_AUDIT_OFF,
    GET_AUTH_OFF,
    GET_AUTH_ON,
    GOALS,
    LIST_DEEP,
    LIST_FIRST,
    POST_AUDIT_OFF,
    POST_AUDIT_ON,
    TASK_PAGE,
    TASK_PAGE_BEFORE_RPS,
    WARM_START,
    WARMUP_S,
    Load,
    Options,
    Server,
    plan,
    planned_seconds,
)
from scripts.bench.report import (
    Report,
    Result,
    figures,
    median_result,
    render,
    results_markdown,
    summary,
    table,
)

OPTIONS = Options(
    duration=3, connections=8, threads=2, products=100, customers=10, tasks=100, repeat=2
)

WRK_OUTPUT = f"""Running 2s test @ http://127.0.0.1:8000
  2 threads and 8 connections
  Latency Distribution
  Non-2xx or 3xx responses: 7
{RESULT_MARKER} requests=250 rps=125.50 p50_us=1500 p99_us=25000 status_errors=7 socket_errors=2
"""


def _result(name: str, requests_per_s: float, non_2xx: int = 0) -> Result:
    return Result(name, requests_per_s, 1.0, 2.0, non_2xx, 0)


def test_the_run_time_follows_the_scenario_list() -> None:
    scenarios = plan()

    assert planned_seconds(OPTIONS) == len(scenarios) * 2 * (WARMUP_S + 3)
    assert len({scenario.name for scenario in scenarios}) == len(scenarios)
    # The summary compares these pairs: the plan must hold every one of them.
    names = {scenario.name for scenario in scenarios}
    assert {GET_AUTH_ON, GET_AUTH_OFF, GET_AUDIT_OFF, POST_AUDIT_ON, POST_AUDIT_OFF} <= names
    assert {BASELINE, LIST_FIRST, LIST_DEEP, TASK_PAGE} <= names


def test_every_goal_names_figures_the_run_measures() -> None:
    names = {scenario.name for scenario in plan()} | {WARM_START, COLD_START}

    for goal in GOALS:
        assert set(goal.subjects()) <= names, goal.title


def test_a_run_that_would_outlast_the_token_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_options(["--duration", "3600"])

    assert "outlast" in capsys.readouterr().err


def test_each_scenario_gets_its_url_script_and_token() -> None:
    addresses = {server: f"http://{server.value}" for server in Server}
    scripts = {script: LUA_DIR / script.value for script in Script}
    scenarios = [s for s in plan() if s.load is not Load.PRODUCT_LIST_DEEP]  # no walk

    steps = {step.name: step for step in invocations(scenarios, addresses, "t0k", 100, scripts)}

    assert steps[GET_AUTH_ON].headers == ("Authorization: Bearer t0k",)
    assert steps[GET_AUTH_ON].script_args == ("100", "/api/v1/products/")
    assert steps[GET_AUTH_OFF].headers == ()
    assert steps[BASELINE].url == "http://baseline"
    assert steps[BASELINE].script_args == ("100", "/products/")
    assert steps[POST_AUDIT_OFF].url == "http://api-audit-off/api/v1/products"
    assert steps[POST_AUDIT_ON].script_args != steps[POST_AUDIT_OFF].script_args  # own SKUs


def test_every_wrk_script_ends_with_the_result_line() -> None:
    result = RESULT_SCRIPT.read_text()

    assert f'"{RESULT_MARKER} requests=%d' in result
    for script in Script:
        parts = script.parts()
        assert all(part.is_file() for part in parts)
        assert parts[-1] == RESULT_SCRIPT
        assert script.source().endswith(result)
    assert Script.FIXED_URL.source() == result


def test_wrk_output_is_parsed_into_a_result() -> None:
    assert parse_wrk("GET", WRK_OUTPUT) == Result("GET", 125.5, 1.5, 25.0, 7, 2)


def test_wrk_output_without_the_result_line_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=RESULT_MARKER):
        parse_wrk("GET", "Running 2s test\n")


def test_without_wrk_the_bench_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)

    with pytest.raises(WrkMissingError, match="apt-get install wrk"):
        find_wrk()


def test_repeated_runs_report_their_median_and_each_run() -> None:
    row = median_result([_result("GET", 100), _result("GET", 300, non_2xx=1), _result("GET", 200)])

    assert (row.requests_per_s, row.non_2xx, row.runs) == (200, 1, (100, 300, 200))
    assert table([row]).splitlines() == [
        "| scenario | req/s | p50 ms | p99 ms | non-2xx | req/s of each run |",
        "|---|---:|---:|---:|---:|---|",
        "| ⚠ GET | 200 | 1.00 | 2.00 | 1 | 100, 300, 200 |",
    ]


def _rates(changes: dict[str, float] | None = None) -> dict[str, float]:
    """Req/s of every scenario of a run that meets every throughput goal, with `changes`."""
    rates: dict[str, float] = {
        GET_AUTH_ON: 600,
        GET_AUTH_OFF: 700,
        GET_AUDIT_OFF: 650,
        BASELINE: 1000,
    }
    rates |= {POST_AUDIT_ON: 95, POST_AUDIT_OFF: 100, LIST_FIRST: 400, LIST_DEEP: 380}
    rates |= {TASK_PAGE: 2 * TASK_PAGE_BEFORE_RPS}
    return rates | (changes or {})


def _run(rates: dict[str, float], non_2xx: dict[str, int] | None = None) -> list[Result]:
    errors = non_2xx or {}
    return [_result(name, rate, errors.get(name, 0)) for name, rate in rates.items()]


STARTUP = {WARM_START: 2.5, COLD_START: 7.9}


def _verdicts(
    results: list[Result], startup: dict[str, float] | None = STARTUP
) -> dict[str, Status]:
    failed = [result.name for result in results if result.failed]
    verdicts = evaluate(GOALS, figures(results, startup), failed)
    return {verdict.goal.title: verdict.status for verdict in verdicts}


def test_a_run_that_meets_every_goal_passes_them_all() -> None:
    assert set(_verdicts(_run(_rates())).values()) == {Status.PASS}


@pytest.mark.parametrize(
    ("changes", "startup", "failing"),
    [
        ({GET_AUTH_ON: 499}, STARTUP, "GET by id, auth and both audits on, vs the baseline"),
        ({POST_AUDIT_ON: 89}, STARTUP, "POST /products, both audits on vs off"),
        ({LIST_FIRST: 349, LIST_DEEP: 340}, STARTUP, "list page 1 with auth vs the baseline"),
        ({LIST_DEEP: 359}, STARTUP, "deep list page vs page 1"),
        ({LIST_DEEP: 441}, STARTUP, "deep list page vs page 1"),  # within 10% either way
        ({TASK_PAGE: 351}, STARTUP, "100-item task page vs before issue 13"),
        ({}, {WARM_START: 3.0, COLD_START: 7.0}, "warm start"),  # strictly below 3 s
        ({}, {WARM_START: 2.0, COLD_START: 8.5}, "cold start"),
    ],
)
def test_each_goal_fails_just_past_its_target(
    changes: dict[str, float], startup: dict[str, float], failing: str
) -> None:
    verdicts = _verdicts(_run(_rates(changes)), startup)

    assert {title for title, status in verdicts.items() if status is Status.FAIL} == {failing}


def test_the_p99_goal_compares_the_latencies_with_the_baseline() -> None:
    goal = next(goal for goal in GOALS if goal.figure.metric is Metric.P99_MS)
    results = [Result(GET_AUTH_ON, 600, 1.0, 30.1, 0, 0), Result(BASELINE, 1000, 1.0, 10.0, 0, 0)]

    (verdict,) = evaluate([goal], figures(results))

    assert (verdict.status, round(verdict.value or 0, 2)) == (Status.FAIL, 3.01)


def test_a_scenario_with_errors_fails_its_goals_whatever_its_figures() -> None:
    results = _run(_rates(), non_2xx={BASELINE: 913})

    verdicts = evaluate(GOALS, figures(results, STARTUP), [BASELINE])
    failed = [verdict for verdict in verdicts if verdict.status is Status.FAIL]

    assert {verdict.goal.title for verdict in failed} == {
        goal.title for goal in GOALS if BASELINE in goal.subjects()
    }
    assert all(verdict.why == f"⚠ errors in {BASELINE}" for verdict in failed)
    assert f"⚠ {BASELINE}" in table(results)


def test_a_start_up_not_measured_is_skipped_not_passed() -> None:
    verdicts = _verdicts(_run(_rates()), startup=None)

    assert verdicts["warm start"] is verdicts["cold start"] is Status.SKIP
    assert tally(evaluate(GOALS, figures(_run(_rates())))) == "goals: 6 PASS, 2 SKIP"


def test_a_goal_says_how_it_is_computed() -> None:
    ratio = Goal(
        "g",
        Figure("a", Metric.REQUESTS_PER_S),
        Comparison.AT_LEAST,
        0.5,
        Figure("b", Metric.REQUESTS_PER_S),
    )
    constant = Goal("t", Figure("a", Metric.REQUESTS_PER_S), Comparison.AT_LEAST, 2, 176.0)
    seconds = Goal("s", Figure("w", Metric.SECONDS), Comparison.BELOW, 3)

    (verdict,) = evaluate([ratio], {ratio.figure: 40, Figure("b", Metric.REQUESTS_PER_S): 100})

    assert verdict.line() == "FAIL g: 0.40x (goal >= 0.50x; req/s of a / req/s of b)"
    assert constant.how() == "req/s of a / 176 req/s (a constant)"
    assert seconds.target_text() == "< 3.00 s"


MACHINE = Machine(
    cpu="Test CPU @ 2.0GHz",
    cores=2,
    ram_bytes=4 * 2**30,
    os="Debian GNU/Linux 12 (bookworm) (kernel 6.1.0)",
    python="3.13.0",
    postgresql="18.6",
    load_average=(1.5, 1.0, 0.5),
)


def _report() -> Report:
    results = _run(_rates({GET_AUTH_ON: 400}))
    verdicts = evaluate(GOALS, figures(results, STARTUP), [])
    return Report(OPTIONS, 2, results, "one client alone: ...", verdicts, STARTUP)


def test_the_report_prints_each_goal_next_to_its_figure_and_a_line_per_goal() -> None:
    report = render(_report())

    row = next(line for line in report.splitlines() if line.startswith(f"| {GET_AUTH_ON} |"))
    assert row.endswith(
        "| 0.40x, goal >= 0.50x: FAIL; 1.00x, goal <= 3.00x: PASS |"
    )  # req/s, then p99, against the baseline
    assert f"| {WARM_START} | 2.50 | 2.50 s, goal < 3.00 s: PASS |" in report
    assert (
        "FAIL GET by id, auth and both audits on, vs the baseline: 0.40x (goal >= 0.50x; " in report
    )
    assert "\ngoals: 7 PASS, 1 FAIL\n" in report


def test_results_md_has_the_machine_the_date_the_command_and_the_report() -> None:
    report = _report()

    text = results_markdown(
        report, MACHINE, datetime(2026, 12, 2, 7, 5, tzinfo=UTC), "uv run python -m scripts.bench"
    )

    assert text.startswith("# Bench results\n")
    assert "- date: 2026-12-02 07:05 UTC\n" in text
    assert (
        "- machine: Test CPU @ 2.0GHz, 2 cores, 4.0 GiB RAM, Debian GNU/Linux 12 (bookworm) "
        "(kernel 6.1.0), Python 3.13.0, PostgreSQL 18.6; load average 1.50 1.00 0.50 at the start\n"
    ) in text
    assert "- command: `uv run python -m scripts.bench`\n" in text
    assert text.endswith(render(report) + "\n")


def test_the_report_reads_the_on_off_pairs() -> None:
    rates = {GET_AUTH_ON: 50, GET_AUTH_OFF: 100, GET_AUDIT_OFF: 50, BASELINE: 200}
    rates |= {POST_AUDIT_ON: 30, POST_AUDIT_OFF: 40}
    results = [_result(name, rate) for name, rate in rates.items()]

    report = render(Report(OPTIONS, 2, results, "one client alone: ..."))

    assert summary(results) in report
    assert "auth on / auth off throughput (GET by id): 0.50x (authentication costs 50%" in report
    assert "auth on / baseline throughput (GET by id): 0.25x" in report
    assert "GET by id 1.00x: not slower; POST /products 0.75x, 25.0% slower" in report
    assert report.startswith("\n100 products, 10 customers, 100 tasks, 8 connections, ")
    assert "2 workers each, median of 2 runs; the deep list page is page 5\n" in report
    assert "start-up not measured (--skip-startup)" in report
    assert report.endswith("\none client alone: ...")


def test_quick_runs_can_skip_the_start_up_and_leave_results_md_alone() -> None:
    options = parse_options(["--duration", "2", "--repeat", "1", "--skip-startup", "--no-write"])

    assert (options.duration, options.startup, options.write) == (2, False, False)
    defaults = parse_options([])
    assert (defaults.startup, defaults.write) == (True, True)
