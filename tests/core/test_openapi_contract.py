"""The OpenAPI document describes every answer, errors included, for every operation: checked
over the whole document, so a new route inherits the proof. (The live server is held to the
document by tests/contract/test_schemathesis.py.)"""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from backoffice.core.config import Settings
from backoffice.core.errors import PROBLEM_MEDIA_TYPE
from backoffice.core.main import create_app

type Operation = tuple[str, str, dict[str, Any]]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app: FastAPI = create_app(Settings(_env_file=None))
    return app.openapi()


def operations(document: dict[str, Any]) -> Iterator[Operation]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def test_the_document_has_the_api(document: dict[str, Any]) -> None:
    assert len(list(operations(document))) >= 35


def test_every_error_answer_is_a_problem(document: dict[str, Any]) -> None:
    wrong = [
        f"{method} {path} {status}"
        for method, path, operation in operations(document)
        for status, response in operation["responses"].items()
        if int(status) >= 400
        and response.get("content")
        != {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    ]
    assert wrong == []


def test_every_operation_documents_the_input_rule_and_the_body_limit(
    document: dict[str, Any],
) -> None:
    """A NUL in any query parameter, taken or not, is a 422; any method may carry a body."""
    missing = [
        f"{method} {path}"
        for method, path, operation in operations(document)
        if not {"413", "422"} <= set(operation["responses"])
    ]
    assert missing == []


def test_every_conditional_read_documents_its_304(document: dict[str, Any]) -> None:
    missing = [
        f"{method} {path}"
        for method, path, operation in operations(document)
        if any(p["name"].lower() == "if-none-match" for p in operation.get("parameters", []))
        and "304" not in operation["responses"]
    ]
    assert missing == []
    assert "304" in document["paths"]["/api/v1/users/{user_id}"]["get"]["responses"]


def test_every_operation_with_a_body_documents_400_and_413(document: dict[str, Any]) -> None:
    missing = [
        f"{method} {path}"
        for method, path, operation in operations(document)
        if operation.get("requestBody") and not {"400", "413"} <= set(operation["responses"])
    ]
    assert missing == []


def test_every_operation_that_needs_the_database_documents_its_503_and_retry_after(
    document: dict[str, Any],
) -> None:
    """Every API operation reads the database (authentication does, at least); the probes
    that do not, /health/live, must not promise a 503."""
    missing = [
        f"{method} {path}"
        for method, path, operation in operations(document)
        if path.startswith("/api/")
        and "Retry-After" not in operation["responses"].get("503", {}).get("headers", {})
    ]
    assert missing == []
    assert "503" in document["paths"]["/health/ready"]["get"]["responses"]
    assert "503" not in document["paths"]["/health/live"]["get"]["responses"]


def test_fastapis_own_validation_error_schemas_are_gone(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]

    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert schemas["Problem"]["properties"]["type"]["pattern"] == (
        "^urn:backoffice:problem:[a-z0-9-]+$"
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/api/v1/products/{product_id}"), ("DELETE", "/api/v1/users/{user_id}")],
)
def test_deleting_a_record_tasks_refer_to_documents_its_409(
    document: dict[str, Any], method: str, path: str
) -> None:
    assert "409" in document["paths"][path][method.lower()]["responses"]


def test_a_patch_field_that_refuses_null_is_not_documented_as_nullable(
    document: dict[str, Any],
) -> None:
    name = document["components"]["schemas"]["ProductUpdate"]["properties"]["name"]

    assert name["type"] == "string"
    assert "default" not in name
    assert "anyOf" not in name
