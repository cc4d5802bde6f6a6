"""RBAC on every route, generated from the route table: a route added tomorrow is covered
(and fails here if it forgets its guard) without anyone editing this file."""

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.bootstrap import DEFAULT_ROLES
from backoffice.auth.dependencies import PermissionChecker, get_current_principal
from backoffice.auth.permissions import Action, Module
from backoffice.core.config import Settings
from backoffice.core.main import create_app
from tests.support.http import api_client
from tests.support.users import create_user, tokens_for

PUBLIC_ROUTES = {("POST", "/api/v1/auth/sessions"), ("POST", "/api/v1/auth/tokens")}
# Routes about the caller's own account or session: any signed-in user, no module needed.
SELF_SERVICE_PREFIXES = ("/api/v1/users/me", "/api/v1/auth/sessions/current")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    checkers: tuple[PermissionChecker, ...]
    authenticated: bool

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _calls(dependant: Dependant) -> Iterator[object]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def api_routes(app: FastAPI) -> list[Route]:
    routes = []
    for context in iter_route_contexts(app.routes):
        path = context.path
        if not path or not path.startswith("/api/v1") or not hasattr(context, "dependant"):
            continue
        calls = list(_calls(context.dependant))
        checkers = tuple(call for call in calls if isinstance(call, PermissionChecker))
        routes += [
            Route(method, path, checkers, get_current_principal in calls)
            for method in sorted(context.methods or ())
        ]
    return routes


ROUTES = api_routes(create_app())


def test_the_route_table_is_not_empty() -> None:
    assert len(ROUTES) >= 20


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_api_route_but_login_and_refresh_requires_authentication(route: Route) -> None:
    if (route.method, route.path) in PUBLIC_ROUTES:
        assert not route.authenticated
    else:
        assert route.authenticated, f"{route} has no authentication dependency"


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_business_route_has_exactly_one_permission_check(route: Route) -> None:
    if (route.method, route.path) in PUBLIC_ROUTES or route.path.startswith(SELF_SERVICE_PREFIXES):
        assert route.checkers == ()
    else:
        assert len(route.checkers) == 1, f"{route} has {len(route.checkers)} PermissionCheckers"


# --- the matrix -------------------------------------------------------------------------------

PRINCIPALS = ["anonymous", "no roles", "viewer", "manager", "admin role", "superuser"]


def allowed(principal: str, module: Module, action: Action) -> bool:
    """Written out independently of the code under test: the default roles' grants, with
    read implied by any grant of a module."""
    if principal == "superuser":
        return True
    role = {"viewer": "viewer", "manager": "manager", "admin role": "admin"}.get(principal)
    if role is None:
        return False
    grants = DEFAULT_ROLES[role][1]
    return module in grants and (action is Action.READ or action in grants[module])


def expected_denial(route: Route, principal: str) -> int | None:
    """401, 403, or None when the request must get past authorization."""
    if (route.method, route.path) in PUBLIC_ROUTES:
        return None
    if principal == "anonymous":
        return 401
    if not route.checkers:
        return None
    checker = route.checkers[0]
    return None if allowed(principal, checker.module, checker.action) else 403


MATRIX = [
    (route, principal)
    for route in ROUTES
    if (route.method, route.path) not in PUBLIC_ROUTES
    for principal in PRINCIPALS
]


@pytest.mark.parametrize(("route", "principal"), MATRIX, ids=str)
async def test_permission_matrix(
    app: FastAPI, session: AsyncSession, settings: Settings, route: Route, principal: str
) -> None:
    token = None
    if principal != "anonymous":
        roles = {"viewer": ["viewer"], "manager": ["manager"], "admin role": ["admin"]}
        user = await create_user(
            session, roles=roles.get(principal, []), is_superuser=principal == "superuser"
        )
        token = (await tokens_for(session, settings, user)).access_token
    # Ids nobody has: an allowed request ends in 404 or 422, never in a change.
    path = re.sub(r"\{[^}]+\}", "987654", route.path)
    body: dict[str, object] | None = {} if route.method in {"POST", "PUT", "PATCH"} else None

    async with api_client(app, token) as client:
        response = await client.request(route.method, path, json=body)

    denial = expected_denial(route, principal)
    if denial is None:
        # Past authorization: a 404 or 422 (the ids and bodies are fake), never a crash.
        assert response.status_code not in {401, 403}, f"{route} as {principal}: {response.text}"
        assert response.status_code < 500, f"{route} as {principal}: {response.text}"
    else:
        assert response.status_code == denial, f"{route} as {principal}: {response.text}"
        if denial == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
