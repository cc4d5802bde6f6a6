"""What a run measures: its options and the scenario list, the one source of the plan (the
table's rows, their order, and how long the run takes all come from `plan()`)."""

import math
from dataclasses import dataclass
from enum import StrEnum

from .goals import Comparison, Figure, Goal, Metric

WARMUP_S = 2
PAGE_SIZE = 20
DEEP_PAGE = 400
TASK_PAGE_SIZE = 100
# Long enough for any sensible run: the token is issued once, before the first scenario.
ACCESS_TOKEN_TTL_MINUTES = 120
# Every pool of a run, the API's (per worker, no overflow) and the baseline's alike: the
# baseline must not get more connections than the API it is compared with.
DB_POOL_SIZE = 10
# The bench's PostgreSQL serves three API servers of 2 workers (a pool of DB_POOL_SIZE each,
# plus the readiness probe's and the access-log writer's connections) and the baseline's
# pools: PostgreSQL's default of 100 refused some of them, which showed as socket errors.
MAX_CONNECTIONS = 300
# GET /tasks?limit=100 before issue 13's work, in req/s: the issue's own table (one `task bench
# -- --duration 10 --repeat 2` run on a fresh clone, 2 workers, 64 connections). Its goal is
# twice that; unlike the other goals, it is not a ratio within the same run.
TASK_PAGE_BEFORE_RPS = 176.0


@dataclass(frozen=True, slots=True)
class Options:
    duration: int
    connections: int
    threads: int
    products: int
    customers: int
    tasks: int
    repeat: int
    startup: bool = True  # time a warm and a cold `uv run task run` (startup.py)
    write: bool = True  # write bench/RESULTS.md


class Server(StrEnum):
    """The four servers of a run (servers.py starts them)."""

    API = "api"
    AUTH_OFF = "api-auth-off"
    AUDIT_OFF = "api-audit-off"
    BASELINE = "baseline"


class Load(StrEnum):
    """What wrk sends (load.py turns it into a URL, a Lua script and its arguments)."""

    PRODUCT_BY_ID = "GET a random product"
    CREATE_PRODUCT = "POST a new product"
    PRODUCT_LIST = "GET the first product page"
    PRODUCT_LIST_DEEP = "GET a deep product page"
    TASK_LIST = "GET a task page"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    server: Server
    load: Load
    authenticated: bool = True  # sends the access token


GET_AUTH_ON = "API GET /products/{random id} (auth on, audit on)"
GET_AUTH_OFF = "API GET /products/{random id} (auth off)"
GET_AUDIT_OFF = "API GET /products/{random id} (auth on, audit off)"
POST_AUDIT_ON = "API POST /products (audit on)"
POST_AUDIT_OFF = "API POST /products (audit off)"
BASELINE = "baseline GET /products/{random id}"
LIST_FIRST = f"API list page 1 (limit={PAGE_SIZE}, auth on)"
LIST_DEEP = "API list deep page (keyset, auth on)"  # the heading says which page
TASK_PAGE = f"API GET /tasks (limit={TASK_PAGE_SIZE}, with summaries, auth on)"
WARM_START = "warm start: `uv run task run` to /health/ready"
COLD_START = "cold start: the same on a fresh clone (uv cache warm)"

_RPS = Metric.REQUESTS_PER_S
# Issue 13's goals, each a figure of the run against a reference of the same run (a constant
# only for the task page), in the report's order.
GOALS = (
    Goal(
        "GET by id, auth and both audits on, vs the baseline",
        Figure(GET_AUTH_ON, _RPS),
        Comparison.AT_LEAST,
        0.5,
        Figure(BASELINE, _RPS),
    ),
    Goal(
        "POST /products, both audits on vs off",
        Figure(POST_AUDIT_ON, _RPS),
        Comparison.AT_LEAST,
        0.9,
        Figure(POST_AUDIT_OFF, _RPS),
    ),
    Goal(
        "list page 1 with auth vs the baseline",
        Figure(LIST_FIRST, _RPS),
        Comparison.AT_LEAST,
        0.35,
        Figure(BASELINE, _RPS),
    ),
    Goal(
        "deep list page vs page 1",
        Figure(LIST_DEEP, _RPS),
        Comparison.WITHIN,
        0.1,
        Figure(LIST_FIRST, _RPS),
    ),
    Goal(
        "100-item task page vs before issue 13",
        Figure(TASK_PAGE, _RPS),
        Comparison.AT_LEAST,
        2.0,
        TASK_PAGE_BEFORE_RPS,
    ),
    Goal("warm start", Figure(WARM_START, Metric.SECONDS), Comparison.BELOW, 3.0),
    Goal("cold start", Figure(COLD_START, Metric.SECONDS), Comparison.BELOW, 8.0),
    Goal(
        "p99 of the authenticated GET by id vs the baseline's",
        Figure(GET_AUTH_ON, Metric.P99_MS),
        Comparison.AT_MOST,
        3.0,
        Figure(BASELINE, Metric.P99_MS),
    ),
)


def deep_page(products: int) -> int:
    """The keyset page the deep-page scenario reads: DEEP_PAGE, or the last one if fewer."""
    return min(DEEP_PAGE, max(1, math.ceil(products / PAGE_SIZE)))


def plan() -> tuple[Scenario, ...]:
    """In the table's order; each on/off pair back to back, so they share the conditions."""
    return (
        Scenario(GET_AUTH_ON, Server.API, Load.PRODUCT_BY_ID),
        Scenario(GET_AUTH_OFF, Server.AUTH_OFF, Load.PRODUCT_BY_ID, authenticated=False),
        Scenario(GET_AUDIT_OFF, Server.AUDIT_OFF, Load.PRODUCT_BY_ID),
        Scenario(POST_AUDIT_ON, Server.API, Load.CREATE_PRODUCT),
        Scenario(POST_AUDIT_OFF, Server.AUDIT_OFF, Load.CREATE_PRODUCT),
        Scenario(LIST_FIRST, Server.API, Load.PRODUCT_LIST),
        Scenario(LIST_DEEP, Server.API, Load.PRODUCT_LIST_DEEP),
        Scenario(TASK_PAGE, Server.API, Load.TASK_LIST),
        Scenario(BASELINE, Server.BASELINE, Load.PRODUCT_BY_ID, authenticated=False),
    )


def planned_seconds(options: Options) -> int:
    """wrk's share of the run: every scenario, warm-up included, `repeat` times."""
    return len(plan()) * options.repeat * (WARMUP_S + options.duration)
