"""Assertions shared by every slice's tests."""

from typing import Any

from httpx import Response


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
