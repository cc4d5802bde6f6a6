"""The benchmark's parts that need no server: the plan, wrk's scripts and output, the report,
and what happens without wrk. A real run (`task bench -- --duration 2 --repeat 1`) is too slow
and too noisy for the suite."""

import pytest

from scripts.bench.__main__ import parse_options
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
from scripts.bench.plan import (
    BASELINE,
    GET_AUDIT_OFF,
    GET_AUTH_OFF,
    GET_AUTH_ON,
    POST_AUDIT_OFF,
    POST_AUDIT_ON,
    WARMUP_S,
    Load,
    Options,
    Server,
    plan,
    planned_seconds,
)
from scripts.bench.report import Result, median_result, render, summary, table

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
    scenarios = plan(OPTIONS)

    assert planned_seconds(OPTIONS) == len(scenarios) * 2 * (WARMUP_S + 3)
    assert len({scenario.name for scenario in scenarios}) == len(scenarios)
    # The summary compares these pairs: the plan must hold every one of them.
    names = {scenario.name for scenario in scenarios}
    assert {GET_AUTH_ON, GET_AUTH_OFF, GET_AUDIT_OFF, POST_AUDIT_ON, POST_AUDIT_OFF} <= names
    assert BASELINE in names
    assert "API list page 5 (keyset, auth on)" in names  # 100 products, 20 a page


def test_a_run_that_would_outlast_the_token_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_options(["--duration", "3600"])

    assert "outlast" in capsys.readouterr().err


def test_each_scenario_gets_its_url_script_and_token() -> None:
    addresses = {server: f"http://{server.value}" for server in Server}
    scripts = {script: LUA_DIR / script.value for script in Script}
    scenarios = [s for s in plan(OPTIONS) if s.load is not Load.PRODUCT_LIST_DEEP]  # no walk

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


def test_the_report_reads_the_on_off_pairs() -> None:
    rates = {GET_AUTH_ON: 50, GET_AUTH_OFF: 100, GET_AUDIT_OFF: 50, BASELINE: 200}
    rates |= {POST_AUDIT_ON: 30, POST_AUDIT_OFF: 40}
    results = [_result(name, rate) for name, rate in rates.items()]

    report = render(OPTIONS, 2, results, "one client alone: ...")

    assert summary(results) in report
    assert "auth on / auth off throughput (GET by id): 0.50x (authentication costs 50%" in report
    assert "auth on / baseline throughput (GET by id): 0.25x" in report
    assert "GET by id 1.00x: not slower; POST /products 0.75x, 25.0% slower" in report
    assert report.startswith("\n100 products, 10 customers, 100 tasks, 8 connections, ")
    assert "2 workers each, median of 2 runs\n" in report
    assert report.endswith("\none client alone: ...")
