"""The OpenAPI document, made to tell the truth about error answers.

FastAPI documents a 422 as `application/json` with its own `HTTPValidationError`, and knows
nothing of the answers every operation can give whatever its route declares: a body that is not
JSON (400), one over the size limit (413). Every error this API sends is RFC 9457
`application/problem+json` with the `Problem` schema (core/errors.py), so one rule, applied
here to the generated document, describes them all; a new route inherits it.

The same goes for the one rule every string obeys (core/middleware.py): no NUL, which
PostgreSQL text cannot store. Every string schema without a pattern of its own gets one that
says so; the patterns the slices write exclude it already.
"""

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from backoffice.core.errors import PROBLEM_MEDIA_TYPE, FieldError, Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_WRITE_METHODS = frozenset({"post", "put", "patch"})
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
NO_NUL_PATTERN = "^[^\\x00]*$"

type Operation = dict[str, Any]


def _problem_answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}}


def _answers_every_operation_may_give(method: str, operation: Operation) -> dict[str, str]:
    """Status -> description of what any operation of this shape can answer. Every request
    passes the input rule (a NUL anywhere, even in a query parameter the route does not take,
    is a 422) and the body size limit (whatever the method)."""
    answers = {
        "422": "Validation Error: `errors` names each offending field",
        "413": "Content Too Large: the body is over the size limit",
    }
    if method in _WRITE_METHODS and operation.get("requestBody"):
        answers["400"] = "Malformed Request: the body is not what its Content-Type says"
    headers = {
        p.get("name", "").lower()
        for p in operation.get("parameters", [])
        if p.get("in") == "header"
    }
    if "if-none-match" in headers:
        answers["304"] = "Not Modified: the representation still has the ETag in If-None-Match"
    return answers


def _as_problems(method: str, operation: Operation) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, description in _answers_every_operation_may_give(method, operation).items():
        responses.setdefault(status, {"description": description})
    for status, response in responses.items():
        if status == "304":
            responses[status] = {"description": response.get("description") or "Not Modified"}
        elif status.isdigit() and int(status) >= HTTPStatus.BAD_REQUEST:
            description = response.get("description") or HTTPStatus(int(status)).phrase
            responses[status] = _problem_answer(description)


def _problem_schemas(components: dict[str, Any]) -> None:
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    template = "#/components/schemas/{model}"
    problem = Problem.model_json_schema(ref_template=template)
    problem.pop("$defs", None)
    schemas["Problem"] = problem
    schemas["FieldError"] = FieldError.model_json_schema(ref_template=template)


def _strings_without_nul(node: object) -> None:
    if isinstance(node, list):
        for item in node:
            _strings_without_nul(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and not {"pattern", "enum", "const"} & node.keys():
        node["pattern"] = NO_NUL_PATTERN
    for value in node.values():
        _strings_without_nul(value)


def describe_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Rewrite every error answer of `document` as problem+json and add the ones any operation
    of its shape can give. Idempotent; returns the document."""
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if isinstance(operation, dict) and "responses" in operation:
                _as_problems(method, operation)
    _problem_schemas(document.setdefault("components", {}))
    _strings_without_nul(document.get("paths"))
    _strings_without_nul(document["components"])
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve the rewritten document at the app's `openapi_url` (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            app.openapi_schema = describe_problems(document)
        return app.openapi_schema

    method: Callable[[], dict[str, Any]] = openapi
    app.openapi = method  # type: ignore[method-assign]  # FastAPI's documented override point
