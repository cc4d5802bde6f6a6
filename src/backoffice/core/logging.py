"""Structured logging and the request-id middleware that ties a request's log lines together."""

import logging
import re
import sys
import uuid
from typing import Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backoffice.core.config import Environment, Settings
from backoffice.core.network import is_trusted_proxy

REQUEST_ID_HEADER: Final = "X-Request-ID"
_REQUEST_ID_HEADER_BYTES: Final = REQUEST_ID_HEADER.lower().encode()
# A client-supplied id is echoed into logs and headers, so only a safe shape is accepted.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


_SECRET_NAMES = frozenset({"password", "token", "secret", "authorization", "cookie", "set-cookie"})
_SECRET_SUFFIXES = ("_password", "_token", "_secret", "_key", "_hash")
REDACTED: Final = "***"


def is_secret_name(key: str) -> bool:
    """Whether a field or log key of this name holds a secret (a password, token, key...)."""
    name = key.lower()
    return name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES)


def redacted(value: object) -> object:
    """`value` with every entry whose key names a secret masked, at any depth of dicts, lists
    and tuples. Containers are copied, never changed in place: they may be the caller's."""
    if isinstance(value, dict):
        return {
            key: REDACTED if isinstance(key, str) and is_secret_name(key) else redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redacted(item) for item in value) if value else value
    return value


def redact_secrets(
    _logger: object, _method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Mask any value whose key names a secret (`password`, `refresh_token`, `secret_key`...),
    whoever logs it and however deep it is nested: a password or token must never reach a log
    line."""
    for key, value in event_dict.items():
        if is_secret_name(key):
            event_dict[key] = REDACTED
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = redacted(value)
    return event_dict


def configure_logging(settings: Settings) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        redact_secrets,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks never carry local variables: structlog's defaults (rich in development, the
    # dict transformer in production) print every frame's locals, which hold passwords and
    # tokens and cost megabytes and seconds per error.
    renderer: structlog.types.Processor
    if settings.is_production:
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[settings.log_level]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        # Tests reconfigure logging to read what a request logs; everywhere else, cache.
        cache_logger_on_first_use=settings.environment is not Environment.TEST,
    )


def _incoming_request_id(scope: Scope) -> str | None:
    """The proxy's id: one well-formed `X-Request-ID` line (two lines mean someone on the way
    added theirs, and neither can be told to be the proxy's)."""
    values = [value for name, value in scope["headers"] if name == _REQUEST_ID_HEADER_BYTES]
    if len(values) != 1:
        return None
    candidate = values[0].decode("latin-1")
    return candidate if _SAFE_REQUEST_ID.fullmatch(candidate) else None


class RequestIdMiddleware:
    """Makes the request's id, binds it to every log line of the request, exposes it as
    `request.state.request_id` and returns it on the response.

    The id is what the audit rows of the request carry, so a caller must not choose it: a
    client could otherwise make its rows share an id with somebody else's. Only a trusted proxy
    (TRUSTED_PROXIES, which makes its own ids) may pass one in `X-Request-ID`, if well-formed."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.trusted_proxies = settings.trusted_proxies

    def _request_id(self, scope: Scope) -> str:
        peer = scope.get("client")
        if is_trusted_proxy(peer[0] if peer else None, self.trusted_proxies):
            return _incoming_request_id(scope) or uuid.uuid4().hex
        return uuid.uuid4().hex

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        header = (_REQUEST_ID_HEADER_BYTES, request_id.encode())

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_request_id)
