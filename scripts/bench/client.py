"""What the bench asks the API one request at a time: the login, the checks that make the
comparison mean something, the walk to a deep page, and one client's wait for a task page."""

import math
import statistics
import time
from urllib.parse import urlencode

import httpx

from .plan import PAGE_SIZE, TASK_PAGE_SIZE, deep_page
from .seeding import SUPERUSER_EMAIL

API_PREFIX = "/api/v1"
LOGIN_PATH = f"{API_PREFIX}/auth/sessions"
LIST_SORT = "created_at"
SEQUENTIAL_REQUESTS = 200


def log_in(base: str, password: str) -> str:
    """One login (the endpoint is rate-limited per IP): the access token for every request."""
    response = httpx.post(
        f"{base}{LOGIN_PATH}",
        data={"username": SUPERUSER_EMAIL, "password": password},
        timeout=30.0,
    )
    if response.status_code != 200:
        raise RuntimeError(f"login failed: {response.status_code} {response.text}")
    token: str = response.json()["access_token"]
    return token


def authorization(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def check_auth(api: str, token: str, auth_off: str) -> None:
    """The comparison means something only if the API demands the token, accepts ours, and
    the auth-off server needs none."""
    product = f"{API_PREFIX}/products/1"
    with httpx.Client(timeout=10.0) as client:
        checks = [
            ("API without a token", client.get(f"{api}{product}"), 401),
            (
                "API with the token",
                client.get(f"{api}{product}", headers=authorization(token)),
                200,
            ),
            ("auth-off API without a token", client.get(f"{auth_off}{product}"), 200),
        ]
    for what, response, expected in checks:
        if response.status_code != expected:
            raise RuntimeError(
                f"{what}: expected {expected}, got {response.status_code} {response.text[:500]}"
            )


def list_url(base: str, cursor: str | None = None) -> str:
    params = {"limit": str(PAGE_SIZE), "sort": LIST_SORT}
    if cursor is not None:
        params["cursor"] = cursor
    return f"{base}{API_PREFIX}/products?{urlencode(params)}"


def deep_page_url(base: str, products: int, token: str) -> str:
    """Walk the keyset pages to plan.deep_page() and return its URL."""
    last_page = deep_page(products)
    cursor: str | None = None
    with httpx.Client(timeout=10.0, headers=authorization(token)) as client:
        for _ in range(last_page - 1):
            response = client.get(list_url(base, cursor))
            response.raise_for_status()
            cursor = response.json()["next_cursor"]
            if cursor is None:
                raise RuntimeError("the list ended before the expected last page")
        response = client.get(list_url(base, cursor))
        response.raise_for_status()
        items = response.json()["items"]
    if not items:
        raise RuntimeError(f"page {last_page} is empty")
    return list_url(base, cursor)


def tasks_url(base: str) -> str:
    return f"{base}{API_PREFIX}/tasks?{urlencode({'limit': str(TASK_PAGE_SIZE)})}"


def sequential_timing(url: str, token: str) -> tuple[float, float]:
    """(median, p95) milliseconds of SEQUENTIAL_REQUESTS GETs of `url`, one at a time on one
    kept-alive connection: what one user waits, with nothing else running."""
    timings: list[float] = []
    with httpx.Client(timeout=10.0, headers=authorization(token)) as client:
        for _ in range(SEQUENTIAL_REQUESTS):
            started = time.perf_counter()
            response = client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200 or len(response.json()["items"]) != TASK_PAGE_SIZE:
                raise RuntimeError(f"task page: {response.status_code} {response.text[:300]}")
    timings.sort()
    return statistics.median(timings), timings[math.ceil(0.95 * len(timings)) - 1]
