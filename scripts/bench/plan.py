"""What a run measures: its options and the scenario list, the one source of the plan (the
table's rows, their order, and how long the run takes all come from `plan()`)."""

import math
from dataclasses import dataclass
from enum import StrEnum

WARMUP_S = 2
PAGE_SIZE = 20
DEEP_PAGE = 400
TASK_PAGE_SIZE = 100
# Long enough for any sensible run: the token is issued once, before the first scenario.
ACCESS_TOKEN_TTL_MINUTES = 120


@dataclass(frozen=True, slots=True)
class Options:
    duration: int
    connections: int
    threads: int
    products: int
    customers: int
    tasks: int
    repeat: int


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


def deep_page(products: int) -> int:
    """The keyset page the deep-page scenario reads: DEEP_PAGE, or the last one if fewer."""
    return min(DEEP_PAGE, max(1, math.ceil(products / PAGE_SIZE)))


def plan(options: Options) -> tuple[Scenario, ...]:
    """In the table's order; each on/off pair back to back, so they share the conditions."""
    return (
        Scenario(GET_AUTH_ON, Server.API, Load.PRODUCT_BY_ID),
        Scenario(GET_AUTH_OFF, Server.AUTH_OFF, Load.PRODUCT_BY_ID, authenticated=False),
        Scenario(GET_AUDIT_OFF, Server.AUDIT_OFF, Load.PRODUCT_BY_ID),
        Scenario(POST_AUDIT_ON, Server.API, Load.CREATE_PRODUCT),
        Scenario(POST_AUDIT_OFF, Server.AUDIT_OFF, Load.CREATE_PRODUCT),
        Scenario(f"API list page 1 (limit={PAGE_SIZE}, auth on)", Server.API, Load.PRODUCT_LIST),
        Scenario(
            f"API list page {deep_page(options.products)} (keyset, auth on)",
            Server.API,
            Load.PRODUCT_LIST_DEEP,
        ),
        Scenario(
            f"API GET /tasks (limit={TASK_PAGE_SIZE}, with summaries, auth on)",
            Server.API,
            Load.TASK_LIST,
        ),
        Scenario(BASELINE, Server.BASELINE, Load.PRODUCT_BY_ID, authenticated=False),
    )


def planned_seconds(options: Options) -> int:
    """wrk's share of the run: every scenario, warm-up included, `repeat` times."""
    return len(plan(options)) * options.repeat * (WARMUP_S + options.duration)
