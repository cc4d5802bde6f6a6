"""The OpenAPI document, made to tell the truth about error answers.

FastAPI documents a 422 as `application/json` with its own `HTTPValidationError`, and knows
nothing of the answers every operation can give whatever its route declares: a body that is not
JSON (400), one over the size limit (413), a database that is unavailable (503, with
Retry-After). Every error this API sends is RFC 9457 `application/problem+json` with the
`Problem` schema (core/errors.py), so one rule, applied here to the generated document,
describes them all; a new route inherits it.

The same goes for the one rule every string obeys (core/middleware.py): no NUL, which
PostgreSQL text cannot store. Every string schema without a pattern of its own gets one that
says so; the patterns the slices write exclude it already.
"""

from collections.abc import Callable, Mapping, Sequence
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


_UNAVAILABLE = "503"
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _problem_answer(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}}
    return answer | {"headers": headers} if headers else answer


def _answers_every_operation_may_give(
    method: str, operation: Operation, *, needs_database: bool
) -> dict[str, str]:
    """Status -> description of what any operation of this shape can answer. Every request
    passes the input rule (a NUL anywhere, even in a query parameter the route does not take,
    is a 422) and the body size limit (whatever the method); every one that needs the
    database can find it unavailable."""
    answers = {
        "422": "Validation Error: `errors` names each offending field",
        "413": "Content Too Large: the body is over the size limit",
    }
    if needs_database:
        answers[_UNAVAILABLE] = (
            "Service Unavailable: the database is unavailable (`database-unavailable`: "
            "nothing was done) or the connection was lost during the commit "
            "(`commit-outcome-unknown`: read back before retrying); retry after Retry-After"
        )
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


def _as_problems(method: str, operation: Operation, *, needs_database: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    answers = _answers_every_operation_may_give(method, operation, needs_database=needs_database)
    for status, description in answers.items():
        responses.setdefault(status, {"description": description})
    for status, response in responses.items():
        if status == "304":
            responses[status] = {"description": response.get("description") or "Not Modified"}
        elif status.isdigit() and int(status) >= HTTPStatus.BAD_REQUEST:
            description = response.get("description") or HTTPStatus(int(status)).phrase
            headers = _RETRY_AFTER if status == _UNAVAILABLE else response.get("headers")
            responses[status] = _problem_answer(description, headers)


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


def describe_problems(document: dict[str, Any], database_prefix: str) -> dict[str, Any]:
    """Rewrite every error answer of `document` as problem+json and add the ones any operation
    of its shape can give; those under `database_prefix` need the database. Idempotent;
    returns the document."""
    for path, path_item in document.get("paths", {}).items():
        for method, operation in path_item.items():
            if isinstance(operation, dict) and "responses" in operation:
                needs_database = path.startswith(database_prefix)
                _as_problems(method, operation, needs_database=needs_database)
    _problem_schemas(document.setdefault("components", {}))
    _strings_without_nul(document.get("paths"))
    _strings_without_nul(document["components"])
    return document


def offer_alternative_schemes(
    document: dict[str, Any], schemes: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    """Add `schemes` to the document's security schemes, each offered on every operation that
    requires one as an alternative to what it already requires (a `security` list is a
    choice between its entries). Idempotent; returns the document."""
    if not schemes:
        return document
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(schemes)
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            requirements = operation.get("security") if isinstance(operation, dict) else None
            if requirements:
                requirements += [{name: []} for name in schemes if {name: []} not in requirements]
    return document


type Extension = Callable[[dict[str, Any]], None]


def install_openapi(
    app: FastAPI,
    database_prefix: str,
    extensions: Sequence[Extension] = (),
    alternative_schemes: Mapping[str, dict[str, Any]] | None = None,
) -> None:
    """Serve the rewritten document at the app's `openapi_url` (built once, then cached).
    Every operation under `database_prefix` needs the database; every authenticated one also
    accepts `alternative_schemes` (name -> OpenAPI security scheme). Each of `extensions` (what
    a slice adds to the operations it serves: a header, its answers) edits the generated
    document first, so the answers it adds are rewritten as problems like the others."""

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
            for extend in extensions:
                extend(document)
            describe_problems(document, database_prefix)
            app.openapi_schema = offer_alternative_schemes(document, alternative_schemes or {})
        return app.openapi_schema

    method: Callable[[], dict[str, Any]] = openapi
    app.openapi = method  # type: ignore[method-assign]  # FastAPI's documented override point
