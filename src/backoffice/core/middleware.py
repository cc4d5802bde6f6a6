"""Middleware that guards the app's edge: the request body's size, and the one rule for text
PostgreSQL cannot store. Both answer with problem+json like every other error."""

import json
import re
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Final
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backoffice.core.errors import FieldError, problem_response, validation_problem
from backoffice.core.text import has_unstorable, scrub


class StatusRecorder:
    """An ASGI `send` that remembers the status of the response it sends: 500 until then,
    which is what the client gets when the app fails before answering. For the middleware
    that record each request (metrics, the access log)."""

    __slots__ = ("_send", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodySizeLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413: at once when Content-Length says so, else as
    soon as the streamed bytes pass the limit (chunked uploads cannot slip through). The
    paths in `path_limits` (a file upload) have a limit of their own instead."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.path_limits.get(scope["path"], self.max_bytes)
        detail = f"The request body exceeds the limit of {max_bytes} bytes."
        declared = _declared_length(scope)
        if declared is not None and declared > max_bytes:
            response = problem_response(
                Request(scope), status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE, detail=detail
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # FastAPI re-raises HTTPException from body reading; our handler renders it.
                    raise HTTPException(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, detail)
            return message

        await self.app(scope, limited_receive, send)


UNSTORABLE_MESSAGE: Final = "must not contain NUL (U+0000) or unpaired surrogate characters"
UNSTORABLE_TYPE: Final = "string_unstorable"
# The header values the app keeps (access log, logs, request id); other headers are parsed
# into typed values (tokens, ETags) or ignored.
STORED_HEADERS: Final = (b"user-agent", b"x-forwarded-for", b"x-request-id")
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What an unstorable character looks like in a raw body: a NUL byte, a JSON `\u0000` or
# surrogate escape, a percent-encoded NUL. Only a body with one of these is parsed here.
_JSON_CANDIDATE: Final = re.compile(rb"\x00|\\u0000|\\u[dD][89a-fA-F]")
_FORM_CANDIDATE: Final = re.compile(rb"\x00|%00")


_BAD_KEY: Final = object()  # marks, on the walk's stack, a key that is itself unstorable


def unstorable_json_fields(document: object, location: str = "body") -> Iterator[str]:
    """The dotted location (FastAPI's style: `body.grants.0.module`) of every string, key
    included, in a parsed JSON document that PostgreSQL text cannot store, in document order.
    Iterative, so a deeply nested document cannot exhaust the stack."""
    stack: list[tuple[object, str]] = [(document, location)]
    while stack:
        value, where = stack.pop()
        if value is _BAD_KEY or (isinstance(value, str) and has_unstorable(value)):
            yield where
        elif isinstance(value, dict):
            stack.extend(
                (_BAD_KEY if has_unstorable(key) else item, f"{where}.{scrub(key)}")
                for key, item in reversed(value.items())
            )
        elif isinstance(value, list):
            stack.extend(
                (item, f"{where}.{index}") for index, item in reversed(list(enumerate(value)))
            )


def _unstorable_pairs(pairs: list[tuple[str, str]], location: str) -> Iterator[str]:
    for name, value in pairs:
        if has_unstorable(name) or has_unstorable(value):
            yield f"{location}.{scrub(name)}"


def _media_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media_type: str = value.decode("latin-1").split(";", 1)[0].strip().lower()
            return media_type
    return ""


def _scope_fields(scope: Scope) -> list[str]:
    """Unstorable text in the path, the query string and the stored headers."""
    found: list[str] = []
    if has_unstorable(scope["path"]):
        found.append("path")
    query: bytes = scope["query_string"]
    if _FORM_CANDIDATE.search(query):
        # Decoded as Starlette decodes it, so the names are the ones the app sees.
        found += _unstorable_pairs(
            parse_qsl(query.decode("latin-1"), keep_blank_values=True), "query"
        )
    for name, value in scope["headers"]:
        if name in STORED_HEADERS and b"\x00" in value:
            found.append(f"header.{name.decode('latin-1')}")
    return found


def _json_fields(body: bytes) -> list[str]:
    if not _JSON_CANDIDATE.search(body):
        return []
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return []
    return list(unstorable_json_fields(document))


def _urlencoded_fields(body: bytes) -> list[str]:
    if not _FORM_CANDIDATE.search(body):
        return []
    pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
    return list(_unstorable_pairs(pairs, "body"))


async def _multipart_fields(scope: Scope, replay: Receive) -> list[str]:
    # Always parsed, and as the app will parse it: a part's `charset` (utf-7, say) can turn
    # harmless bytes into a NUL or a lone surrogate, so no byte scan can rule them out.
    # Only the login form takes form bodies, so this is rare.
    try:
        async with Request(scope, replay).form() as form:
            pairs = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
    except Exception:  # noqa: BLE001  # a malformed form is the app's to answer
        return []
    return list(_unstorable_pairs(pairs, "body"))


async def _body_fields(scope: Scope, body: bytes, replay: Receive) -> list[str]:
    """Unstorable text in a JSON, urlencoded or multipart body. A body that does not parse is
    left to the app, which answers it as it always does."""
    media_type = _media_type(scope)
    if media_type in ("", "application/json") or media_type.endswith("+json"):
        return _json_fields(body)
    if media_type == "application/x-www-form-urlencoded":
        return _urlencoded_fields(body)
    if media_type == "multipart/form-data":
        return await _multipart_fields(scope, replay)
    return []


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that hands out the buffered messages again, then the real stream (which
    then only has `http.disconnect` left to say)."""
    pending = iter(list(messages))

    async def replay() -> Message:
        return next(pending, None) or await receive()

    return replay


class UnstorableTextMiddleware:
    """The one rule for text PostgreSQL cannot store: a NUL or a lone surrogate in the path, a
    query parameter, a stored header or any string of a JSON or form body (keys included) is a
    422 validation problem naming each field, before any route, known or not, sees it.

    It runs inside the body size limit, so what it buffers is bounded. An ordinary body costs
    one regex scan of its bytes; only a body that may hold such a character is parsed here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = _scope_fields(scope)
        if found or scope["method"] not in _BODY_METHODS:
            await self._answer(found, scope, receive, send)
            return
        messages: list[Message] = []
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
        except HTTPException as exc:  # the size limit, raised from its `receive`
            response = problem_response(Request(scope), status=exc.status_code, detail=exc.detail)
            await response(scope, receive, send)
            return
        body = b"".join(message.get("body", b"") for message in messages)
        if messages[-1]["type"] == "http.request":  # whole: the app gets it in one message
            messages = [{"type": "http.request", "body": body, "more_body": False}]
        found = await _body_fields(scope, body, _replaying(messages, receive))
        await self._answer(found, scope, _replaying(messages, receive), send)

    async def _answer(self, found: list[str], scope: Scope, receive: Receive, send: Send) -> None:
        if not found:
            await self.app(scope, receive, send)
            return
        errors = [
            FieldError(field=field, message=UNSTORABLE_MESSAGE, type=UNSTORABLE_TYPE)
            for field in found
        ]
        await validation_problem(Request(scope), errors)(scope, receive, send)
