"""Domain exceptions and their rendering as RFC 9457 problem details.

Every error the API returns, whether raised by a service, by validation, by routing or by a
bug, leaves through this module as `application/problem+json`.
"""

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, ClassVar

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backoffice.core.logging import REQUEST_ID_HEADER
from backoffice.core.text import scrub

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:backoffice:problem:"

log = structlog.get_logger(__name__)


class FieldError(BaseModel):
    field: str = Field(description="Dotted location of the offending input, e.g. `body.price`")
    message: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every error response of this API carries."""

    type: str = Field(
        pattern=r"^urn:backoffice:problem:[a-z0-9-]+$",
        description="What kind of problem: one of this API's problem types, never about:blank.",
        examples=["urn:backoffice:problem:not-found"],
    )
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str | None = Field(default=None, examples=["Product 42 does not exist"])
    instance: str = Field(examples=["/api/v1/products/42"])
    request_id: str | None = None
    errors: list[FieldError] | None = None


class DomainError(Exception):
    """Base of every error a service raises on purpose; each subclass carries its status."""

    status_code: ClassVar[int] = HTTPStatus.BAD_REQUEST
    title: ClassVar[str] = "Bad Request"
    slug: ClassVar[str] = "bad-request"
    # True for refusals that must still record something (a failed login counts towards the
    # lockout; a replayed refresh token revokes its family): the request's transaction commits.
    keeps_changes: ClassVar[bool] = False
    headers: Mapping[str, str] = {}
    # Per-field reasons, rendered as the problem's `errors` like a validation error's.
    errors: Sequence[FieldError] | None = None

    def __init__(
        self,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[FieldError] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if headers:
            self.headers = headers
        if errors:
            self.errors = errors


class NotFoundError(DomainError):
    status_code = HTTPStatus.NOT_FOUND
    title = "Not Found"
    slug = "not-found"


class ConflictError(DomainError):
    status_code = HTTPStatus.CONFLICT
    title = "Conflict"
    slug = "conflict"


class PreconditionFailedError(DomainError):
    status_code = HTTPStatus.PRECONDITION_FAILED
    title = "Precondition Failed"
    slug = "precondition-failed"


class InvalidInputError(DomainError):
    status_code = HTTPStatus.UNPROCESSABLE_ENTITY
    title = "Unprocessable Content"
    slug = "invalid-input"


_BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class UnauthorizedError(DomainError):
    """401, with the Bearer challenge (RFC 6750) that tells the client what to send."""

    status_code = HTTPStatus.UNAUTHORIZED
    title = "Unauthorized"
    slug = "unauthorized"
    headers = _BEARER_CHALLENGE


class ForbiddenError(DomainError):
    status_code = HTTPStatus.FORBIDDEN
    title = "Forbidden"
    slug = "forbidden"


class ServiceUnavailableError(DomainError):
    status_code = HTTPStatus.SERVICE_UNAVAILABLE
    title = "Service Unavailable"
    slug = "service-unavailable"


# How long a client should wait before retrying a request the database could not serve: about
# the time the app itself needs to notice the database is back (its connect time-out).
RETRY_AFTER_S = 2
_RETRY_LATER: Mapping[str, str] = MappingProxyType({"Retry-After": str(RETRY_AFTER_S)})


class DatabaseUnavailableError(ServiceUnavailableError):
    """The database could not be reached, or did not answer in time: nothing was stored."""

    slug = "database-unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The database is unavailable; the request was not carried out. Retry after the "
            "delay in Retry-After.",
            headers=_RETRY_LATER,
        )


class CommitOutcomeUnknownError(ServiceUnavailableError):
    """The connection was lost while the change was being committed: it may or may not
    have been stored, and only reading it back can tell."""

    slug = "commit-outcome-unknown"

    def __init__(self) -> None:
        super().__init__(
            "The database connection was lost while the change was being committed, so it "
            "may or may not have been stored. Read the resource back before you retry "
            '(README, "When the database fails").',
            headers=_RETRY_LATER,
        )


class DatabaseUnreachableError(ConnectionError):
    """A connection to the database could not be opened (refused, no such socket, timed
    out). The driver raises these as plain OSErrors; the engine gives them this one type, so
    the error mapper cannot mistake another OSError for an outage."""


def problem_responses(*errors: type[DomainError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the errors a route can return."""
    return {
        int(error.status_code): {
            "model": Problem,
            "description": error.title,
            "content": {PROBLEM_MEDIA_TYPE: {}},
        }
        for error in errors
    }


# The problem types of answers that the framework, not a service, gives. Any other status gets a
# type made from its phrase: no answer of this API is `about:blank`.
_HTTP_SLUGS: Mapping[int, str] = {
    HTTPStatus.BAD_REQUEST: "malformed-request",
    HTTPStatus.NOT_FOUND: "not-found",
    HTTPStatus.METHOD_NOT_ALLOWED: "method-not-allowed",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "content-too-large",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "unsupported-media-type",
}


def problem_type_slug(status: int) -> str:
    return _HTTP_SLUGS.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "-")


def problem_response(
    request: Request,
    *,
    status: int,
    detail: str | None,
    slug: str | None = None,
    title: str | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    request_id: str | None = getattr(request.state, "request_id", None)
    problem = Problem(
        type=f"{PROBLEM_TYPE_BASE}{slug or problem_type_slug(status)}",
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=scrub(request.url.path),  # a hostile path must not break the answer
        request_id=request_id,
        errors=list(errors) if errors is not None else None,
    )
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
    return problem_response(
        request,
        status=exc.status_code,
        detail=exc.detail,
        slug=exc.slug,
        title=exc.title,
        errors=exc.errors,
        headers=exc.headers,
    )


def _field_name(location: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in location)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        FieldError(field=_field_name(error["loc"]), message=error["msg"], type=error["type"])
        for error in exc.errors()
    ]
    return validation_problem(request, errors)


def validation_problem(request: Request, errors: Sequence[FieldError]) -> JSONResponse:
    """The 422 answer for invalid fields, whoever finds them (FastAPI or our middleware)."""
    return problem_response(
        request,
        status=HTTPStatus.UNPROCESSABLE_ENTITY,
        detail="The request is invalid; see `errors` for each offending field.",
        slug="validation-error",
        title="Validation Error",
        errors=errors,
    )


def _allowed_methods(request: Request) -> str:
    """Every method of the resource at this path: Starlette's 405 names only the first route
    whose path matched, and a resource's GET and PATCH are separate routes. A literal path
    (`/users/me`) is its own resource, not an instance of a template that also matches it
    (`/users/{user_id}`)."""
    path = request.url.path
    by_template: dict[str, set[str]] = {}
    for route in iter_route_contexts(request.app.routes):
        if not getattr(route, "include_in_schema", True):
            continue  # a stand-in that refuses a method (e.g. DELETE /users/me)
        if route.path and route.methods and compile_path(route.path)[0].fullmatch(path):
            by_template.setdefault(route.path, set()).update(route.methods)
    methods = by_template.get(path) or set().union(*by_template.values())
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = dict(exc.headers or {})
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        headers["Allow"] = _allowed_methods(request)
    return problem_response(request, status=exc.status_code, detail=detail, headers=headers)


def _server_error(request: Request, headers: Mapping[str, str] | None = None) -> JSONResponse:
    log.exception("request.unhandled_error", path=request.url.path, method=request.method)
    return problem_response(
        request,
        status=HTTPStatus.INTERNAL_SERVER_ERROR,
        detail="An unexpected error occurred. Quote the request id when reporting it.",
        headers=headers,
    )


class UnhandledErrorMiddleware:
    """Answers a bug with the 500 problem, logged once, and ends the error there.

    Installed innermost, so every middleware around it (request id, access log, metrics) sees
    an ordinary 500 answer. Starlette's own last resort would answer the same but then raise
    the error again for the server to log: a second, plain-text traceback of every 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = False

        async def remembering_send(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, remembering_send)
        except Exception:
            if answered:  # too late for an answer: the server closes the connection
                raise
            await _server_error(Request(scope))(scope, receive, send)


async def _unhandled_error(request: Request, _exc: Exception) -> JSONResponse:
    # Only for errors raised outside UnhandledErrorMiddleware (in the middleware around it).
    request_id: str | None = getattr(request.state, "request_id", None)
    # This handler runs outside the request-id middleware, so it sets the header itself.
    return _server_error(request, {REQUEST_ID_HEADER: request_id} if request_id else None)


# SQLSTATE class 22, "data exception": a value the column or the operation cannot hold.
_DATA_EXCEPTION_CLASS = "22"
_DATA_EXCEPTION_DETAILS: Mapping[str, str] = {
    "22001": "A value is longer than the field allows.",
    "22003": "A number is out of the range the field can hold.",
    "22007": "A date or time is malformed.",
    "22008": "A date or time is out of the range the field can hold.",
    "22021": "A text value holds a character that cannot be stored.",
    "22P05": "A text value holds a character that cannot be stored.",
}


# SQLSTATEs that say the database is away, not that the request is wrong: class 08
# (connection exception), class 53 (insufficient resources: too many connections, disk full),
# 57014 (statement time-out), 57P01-57P03 (shut down, crashed, starting up).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57014", "57P01", "57P02", "57P03")
# Errors that are an outage whatever they carry: a connection that could not be opened, the
# driver's statement or connect time-out, no free connection in the pool. Each also has its
# own handler (register_error_handlers), since none is a DBAPIError.
_UNAVAILABLE_ERRORS = (DatabaseUnreachableError, TimeoutError, SQLAlchemyTimeoutError)


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database could not serve the request (an outage, a lost
    connection, a time-out), as opposed to refusing it: the caller may retry later."""
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = sqlstate_of(exc)
    return sqlstate is not None and sqlstate.startswith(_UNAVAILABLE_SQLSTATES)


def describe_error(exc: BaseException) -> str:
    """An error's class and SQLSTATE for a log line, never its message: a database error's
    message may quote the values it refused."""
    sqlstate = sqlstate_of(exc)
    return f"{type(exc).__name__} (SQLSTATE {sqlstate})" if sqlstate else type(exc).__name__


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error: asyncpg's own, or under SQLAlchemy's wrapping (its
    asyncpg adapter carries it too). asyncpg's client-side refusals (a string it cannot
    encode, a date it cannot convert) arrive as 22000."""
    wrapped = getattr(exc, "orig", None)
    for error in (exc, wrapped, getattr(wrapped, "__cause__", None), exc.__cause__):
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A 503 with Retry-After for any request the database could not serve, wherever the
    failure surfaced (authentication, a route, the commit). One warning line, no traceback:
    an outage fails every request alike, and a traceback each would drown the logs."""
    log.warning(
        "request.database_unavailable", error=describe_error(exc), path=scrub(request.url.path)
    )
    return await _domain_error(request, DatabaseUnavailableError())


async def _database_error(
    request: Request, exc: DBAPIError | asyncpg.PostgresError
) -> JSONResponse:
    """A lost or unreachable database is a 503 (above). Otherwise this is the last line of
    defence for values the database cannot hold: whatever route let one through, the client
    gets a 422 problem, not a 500. Any other database error is a 500."""
    if database_unavailable(exc):
        return await _database_unavailable(request, exc)
    sqlstate = sqlstate_of(exc)
    if sqlstate is None or not sqlstate.startswith(_DATA_EXCEPTION_CLASS):
        return _server_error(request)  # inside the request-id middleware: no header here
    # No traceback and no statement: its parameters are the client's data.
    log.warning("request.data_exception", sqlstate=sqlstate, path=scrub(request.url.path))
    return problem_response(
        request,
        status=HTTPStatus.UNPROCESSABLE_ENTITY,
        detail=_DATA_EXCEPTION_DETAILS.get(
            sqlstate, "A value cannot be stored: it is out of range or malformed."
        ),
        slug=InvalidInputError.slug,
        title=InvalidInputError.title,
    )


def register_error_handlers(app: FastAPI) -> None:
    # Starlette types every handler as taking Exception; each here is registered only for the
    # class it declares, so the narrower parameter is safe.
    app.add_exception_handler(DomainError, _domain_error)  # type: ignore[arg-type]  # see above
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]  # see above
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]  # see above
    app.add_exception_handler(DBAPIError, _database_error)  # type: ignore[arg-type]  # see above
    # The driver's own, from the hot read routes (core.database.ReadConnection).
    app.add_exception_handler(asyncpg.PostgresError, _database_error)  # type: ignore[arg-type]  # see above
    for unavailable in _UNAVAILABLE_ERRORS:
        app.add_exception_handler(unavailable, _database_unavailable)
    app.add_exception_handler(Exception, _unhandled_error)
