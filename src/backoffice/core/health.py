"""Liveness and readiness probes, and the landing page."""

import asyncio
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from backoffice.core.config import Settings
from backoffice.core.database import database_of
from backoffice.core.errors import DatabaseUnavailableError, problem_responses

router = APIRouter(tags=["health"])


class HealthStatus(BaseModel):
    status: Literal["ok", "ready"]


@router.get("/health/live")
async def live() -> HealthStatus:
    """The process is up and serving; says nothing about its dependencies."""
    return HealthStatus(status="ok")


@router.get("/health/ready", responses=problem_responses(DatabaseUnavailableError))
async def ready(request: Request) -> HealthStatus:
    """Ready to take traffic: the database answers, within HEALTH_TIMEOUT_MS (a 503 problem
    otherwise, so an orchestrator takes the node out of rotation at once)."""
    settings: Settings = request.app.state.settings
    ping = asyncio.ensure_future(database_of(request).ping())
    # Its outcome is read here, or dropped once the answer has gone (no "never retrieved").
    ping.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        # Shielded: a cancelled ping would first tidy its connection up, which a frozen
        # server makes slow; the answer must not wait for that.
        await asyncio.wait_for(asyncio.shield(ping), settings.health_timeout_ms / 1000)
    except TimeoutError as exc:
        raise DatabaseUnavailableError from exc
    return HealthStatus(status="ready")


_LANDING_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Backoffice API</title>
  <style>
    body { font-family: system-ui, sans-serif; max-width: 42rem; margin: 4rem auto;
           padding: 0 1rem; line-height: 1.5; color: #1f2933; }
    a { color: #0b63ce; }
    code { background: #f0f2f5; padding: 0.1rem 0.3rem; border-radius: 4px; }
  </style>
</head>
<body>
  <h1>Backoffice API</h1>
  <p>Products, customers and tasks behind JWT authentication, per-module RBAC
     and an audit trail.</p>
  <ul>
    <li><a href="/docs">Interactive documentation (Swagger UI)</a></li>
    <li><a href="/redoc">Reference documentation (ReDoc)</a></li>
    <li><a href="/openapi.json">OpenAPI document</a></li>
    <li><a href="/health/ready">Readiness</a></li>
  </ul>
  <p>The API lives under <code>/api/v1</code>.</p>
</body>
</html>
"""


@router.get("/", include_in_schema=False)
async def landing_page() -> HTMLResponse:
    return HTMLResponse(_LANDING_PAGE)
