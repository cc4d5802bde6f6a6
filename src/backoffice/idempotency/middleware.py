"""Idempotency-Key on the writes: the ASGI middleware that claims a key, runs the request and
stores its answer, or replays the stored one.

The order is what keeps the stored answer and the route's changes from diverging:

1. The claim: the key is inserted as running, with a lease, in a transaction of its own
   (service.claim). A repeat finds it there: the stored answer (a replay), a 409 while it
   runs, a 422 if it is another request's key.
2. The route runs; its session marks the key applied just before its COMMIT
   (core.database.BEFORE_COMMIT), so the key is applied exactly when the changes are stored.
3. The answer is stored (service.finish) and only then sent, so a client that has the answer
   finds it stored. A route that committed nothing and answered a transient error or a 5xx
   releases the key: the retry runs.

Where it can fail: before the COMMIT, the changes and the mark are both lost, and the claim is
released (or its lease runs out): the retry runs. After the COMMIT and before the answer is
stored (the process dies, the database goes away), the key stays applied: a retry gets the
`idempotent-answer-lost` 409, never a second run.

A request without the header costs a scan of its headers; one with it on a route it does not
apply to (keyed_operations) is left alone, as the draft allows.
"""

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import anyio
import structlog
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backoffice.auth.dependencies import admit, authenticate_bearer, get_current_principal
from backoffice.auth.service import Principal
from backoffice.core.database import BEFORE_COMMIT, database_of
from backoffice.core.errors import (
    DatabaseUnavailableError,
    DomainError,
    UnauthorizedError,
    database_unavailable,
    describe_error,
    problem_response,
)
from backoffice.idempotency import service
from backoffice.idempotency.repository import Answer

METHODS: Final = frozenset({"POST", "PATCH"})
_HEADER: Final = service.HEADER.lower().encode("latin-1")

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WriteOperation:
    """A route's POST or PATCH, and whether it takes Idempotency-Key."""

    methods: frozenset[str]
    path_format: str  # as the OpenAPI document names it
    path_regex: re.Pattern[str]
    keyed: bool

    def matches(self, scope: Scope) -> bool:
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        return scope["method"] in self.methods and self.path_regex.match(path) is not None


def _calls(dependant: Dependant) -> Iterator[object]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def write_operations(routes: Sequence[BaseRoute]) -> list[WriteOperation]:
    """Every POST and PATCH, in the order the router tries them (the first that matches a
    request is the one that answers it: `/products/import` before `/products/{id}`). Those
    that take a key: every one that needs an authenticated caller, whose keys are its own,
    and is an operation of the document. Login and refresh need none (a repeat makes a
    second session, which harms nothing); a route left out of the document (a 405 for a
    method a resource does not have) is not an operation."""
    operations = []
    for context in iter_route_contexts(routes):
        methods = frozenset(context.methods or ()) & METHODS
        dependant: Dependant | None = getattr(context, "dependant", None)
        if not methods or dependant is None:
            continue
        keyed = get_current_principal in _calls(dependant) and bool(
            getattr(context, "include_in_schema", True)
        )
        operations.append(
            WriteOperation(methods, context.path_format or "", context.path_regex, keyed)
        )
    return operations


def keyed_operations(routes: Sequence[BaseRoute]) -> list[WriteOperation]:
    """The operations that take Idempotency-Key (write_operations says which)."""
    return [operation for operation in write_operations(routes) if operation.keyed]


async def _send_problem(scope: Scope, receive: Receive, send: Send, exc: DomainError) -> None:
    response = problem_response(
        Request(scope),
        status=exc.status_code,
        detail=exc.detail,
        slug=exc.slug,
        title=exc.title,
        headers=exc.headers,
    )
    await response(scope, receive, send)


async def _send_replay(send: Send, answer: Answer) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    headers += [
        (b"content-length", str(len(answer.body)).encode()),
        (service.REPLAYED_HEADER.lower().encode("latin-1"), b"true"),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def _whole_body(receive: Receive) -> list[Message]:
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    pending = iter(messages)

    async def replay() -> Message:
        return next(pending, None) or await receive()

    return replay


class _AnswerRecorder:
    """An ASGI `send` that keeps the answer instead of sending it, until it is stored."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def answer(self) -> Answer | None:
        """The answer to store; None for none, and for one marked `Cache-Control: no-store`
        (a new API key's secret): kept nowhere, so a repeat of a request that committed
        learns that it ran (`idempotent-answer-lost`) but never sees the secret again."""
        if not self.messages or self.messages[0]["type"] != "http.response.start":
            return None
        start = self.messages[0]
        if any(
            name.lower() == b"cache-control" and b"no-store" in value.lower()
            for name, value in start.get("headers", [])
        ):
            return None
        headers = [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, value in start.get("headers", [])
            if name.decode("latin-1").lower() in service.STORED_HEADERS
        ]
        body = b"".join(message.get("body", b"") for message in self.messages[1:])
        return Answer(start["status"], headers, body)

    async def replay_to(self, send: Send) -> None:
        for message in self.messages:
            await send(message)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        # The app's own route list, read on first use: complete by then.
        self._routes = routes
        self._operations: list[WriteOperation] | None = None

    def _applies_to(self, scope: Scope) -> bool:
        """Whether the route that will answer this request takes a key: the first that
        matches it, as the router picks."""
        if self._operations is None:
            self._operations = write_operations(self._routes)
        return next((op.keyed for op in self._operations if op.matches(scope)), False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in METHODS:
            await self.app(scope, receive, send)
            return
        values = [value for name, value in scope["headers"] if name == _HEADER]
        if not values or not self._applies_to(scope):
            await self.app(scope, receive, send)
            return
        try:
            await self._with_key(scope, receive, send, values)
        except DomainError as exc:
            await _send_problem(scope, receive, send, exc)

    async def _with_key(
        self, scope: Scope, receive: Receive, send: Send, values: list[bytes]
    ) -> None:
        request = Request(scope, receive)
        principal = await self._caller(request)
        if principal is None:  # the route's own authentication answers, as without a key
            await self.app(scope, receive, send)
            return
        # Audited under its caller and counted against its key's rate limit, replayed or not.
        request.state.principal = principal  # the route's authentication takes it as it is
        await admit(request, principal)
        key = service.parse_key(values)
        messages = await _whole_body(receive)
        body = b"".join(message.get("body", b"") for message in messages)
        fingerprint = service.fingerprint(
            request.app.state.settings.secret_key.get_secret_value().encode(),
            scope["method"],
            scope["path"],
            scope["query_string"],
            body,
        )
        sessions = database_of(request).sessions
        policy = service.KeyPolicy.of(request.app.state.settings)
        scope_name = service.caller_scope(principal)
        try:
            outcome = await service.claim(sessions, policy, scope_name, key, fingerprint)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            log.warning("idempotency.claim_failed", error=describe_error(exc))
            raise DatabaseUnavailableError from exc
        if isinstance(outcome, Answer):
            log.info("idempotency.replayed", status=outcome.status)
            await _send_replay(send, outcome)
            return
        scope.setdefault("state", {})[BEFORE_COMMIT] = outcome.mark_applied
        recorder = _AnswerRecorder()
        try:
            await self.app(scope, _replaying(messages, receive), recorder)
        except BaseException:
            await self._finish(sessions, outcome, None)
            raise
        await self._finish(sessions, outcome, recorder.answer())
        await recorder.replay_to(send)

    async def _caller(self, request: Request) -> Principal | None:
        """The caller, authenticated as the routes do (the principal cache makes the route's
        own check a lookup), or None when the credentials do not authenticate."""
        scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            return await authenticate_bearer(request, token)
        except UnauthorizedError:
            return None
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            raise DatabaseUnavailableError from exc

    @staticmethod
    async def _finish(
        sessions: service.SessionMaker, held: service.Claim, answer: Answer | None
    ) -> None:
        """Store or release, whatever happens to the request meanwhile (a cancelled request
        must not leave its claim held until the lease runs out). A failure is logged, not
        answered: the route's answer stands, and the key's state keeps retries safe."""
        with anyio.CancelScope(shield=True):
            try:
                await service.finish(sessions, held, answer)
            except Exception as exc:  # noqa: BLE001  # the answer is the route's, stored or not
                log.warning("idempotency.answer_not_stored", error=describe_error(exc))
