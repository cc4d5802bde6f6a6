"""HTTP-side helpers: a client on an app, and the answers every slice shares."""

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response

from backoffice.core.pagination import DEFAULT_LIMIT


def api_client(app: FastAPI, token: str | None = None) -> AsyncClient:
    """A client on `app` in-process, signed in with `token` when given. App exceptions become
    the 500 a server would answer, not errors raised into the test."""
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    headers = bearer(token) if token else {}
    return AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (and problem type, if given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["title"]
    assert problem["instance"] == response.request.url.path
    assert problem["request_id"] == response.headers["x-request-id"]
    if slug is not None:
        assert problem["type"] == f"urn:backoffice:problem:{slug}"
    return problem


Params = Mapping[str, Any] | Sequence[tuple[str, Any]]


async def walk_pages(client: AsyncClient, url: str, params: Params = ()) -> list[dict[str, Any]]:
    """Every item of every page of a keyset-paginated list, following `next_cursor` to the end.
    Each page answers 200 and every page but the last is full (`limit`, else the default).
    Params may be pairs, so a filter can repeat (`status=todo&status=blocked`)."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    limit = int(dict(pairs).get("limit", DEFAULT_LIMIT))
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        response = await client.get(url, params=[*pairs, *([("cursor", cursor)] if cursor else [])])
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            assert len(page["items"]) <= limit
            return items
        assert len(page["items"]) == limit, "only the last page may be short"
    raise AssertionError("pagination did not end")
