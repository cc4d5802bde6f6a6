"""The Idempotency-Key header in the OpenAPI document, on exactly the operations it applies
to: found by walking the route table with the middleware's own rule
(middleware.keyed_operations), so a new write route is documented as it is served."""

from collections.abc import Callable, Sequence
from typing import Any, Final

from starlette.routing import BaseRoute

from backoffice.idempotency import service
from backoffice.idempotency.middleware import keyed_operations
from backoffice.idempotency.models import KEY_MAX_LENGTH

_EXAMPLE_KEY: Final = '"8e03978e-40d5-43e8-bc93-6894a57f9324"'
PARAMETER: Final[dict[str, Any]] = {
    "name": service.HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe (draft-ietf-httpapi-idempotency-key-header): a unique value per "
        "request, a UUID say, as a Structured Field string in double quotes (the draft's "
        "form) or bare (`8e03978e-...`: letters, digits and `._~:+/=-`). A repeat with "
        "the same key and the same request (method, path, query, body) is not run again: it "
        f"gets the first answer, marked `{service.REPLAYED_HEADER}: true`. Keys are your own, "
        "and kept for IDEMPOTENCY_KEY_TTL_HOURS (24 h by default). 2xx and final 4xx answers "
        "are stored; 5xx, 401, 403, 409, 412 and 429 are not, so a retry runs again."
    ),
    "schema": {
        "type": "string",
        "pattern": service.KEY_PATTERN,
        "minLength": 1,
        "maxLength": 2 * KEY_MAX_LENGTH + 2,  # every character escaped, and the quotes
    },
    "example": _EXAMPLE_KEY,
}
_REPLAYED: Final = {
    service.REPLAYED_HEADER: {
        "description": "`true` when this is the stored answer to an earlier request with the "
        "same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
# Status -> what the key adds to it, appended to the route's own description if it has one.
_ANSWERS: Final = {
    "400": "a malformed Idempotency-Key (`idempotency-key-malformed`)",
    "409": "a request with this Idempotency-Key is still running (`idempotency-key-in-use`, "
    "retry after Retry-After), or it was carried out but its answer was lost "
    "(`idempotent-answer-lost`: it will not run again)",
    "422": "the Idempotency-Key was used for a different request (`idempotency-key-reused`)",
}
_BODY_400: Final = "a body that is not what its Content-Type says"


def _document_operation(operation: dict[str, Any]) -> None:
    operation.setdefault("parameters", []).append(PARAMETER)
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, answer in responses.items():
        if status.startswith("2"):
            answer.setdefault("headers", {}).update(_REPLAYED)
    for status, text in _ANSWERS.items():
        with_body = status == "400" and "requestBody" in operation
        extra = f"{text}, or {_BODY_400}" if with_body else text
        response = responses.setdefault(status, {})
        own = response.get("description")
        response["description"] = f"{own}; or {extra}" if own else extra[0].upper() + extra[1:]


def describe_idempotency(routes: Sequence[BaseRoute]) -> Callable[[dict[str, Any]], None]:
    """An extension of the generated document (core.openapi.install_openapi): the header, its
    replay marker and its problems on every operation the middleware serves keys on."""

    def extend(document: dict[str, Any]) -> None:
        paths: dict[str, Any] = document.get("paths", {})
        for operation in keyed_operations(routes):
            for method in sorted(operation.methods):
                documented = paths.get(operation.path_format, {}).get(method.lower())
                if documented is not None:
                    _document_operation(documented)

    return extend
