"""The OpenAPI document shows Idempotency-Key on exactly the operations that take it: every
authenticated POST and PATCH (an operation with `security`), walked over the whole document,
so a new write route is checked as soon as it exists."""

import re
from typing import Any

import pytest
from fastapi import FastAPI

from backoffice.core.config import Settings
from backoffice.core.main import create_app
from tests.core.test_openapi_contract import operations


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app: FastAPI = create_app(Settings(_env_file=None))
    return app.openapi()


def key_parameter(operation: dict[str, Any]) -> dict[str, Any] | None:
    found = [
        parameter
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "header" and parameter["name"].lower() == "idempotency-key"
    ]
    assert len(found) <= 1
    return found[0] if found else None


def takes_a_key(method: str, operation: dict[str, Any]) -> bool:
    return method in {"POST", "PATCH"} and bool(operation.get("security"))


def test_every_authenticated_post_and_patch_and_nothing_else_documents_the_key(
    document: dict[str, Any],
) -> None:
    keyed = {
        f"{method} {path}"
        for method, path, operation in operations(document)
        if key_parameter(operation) is not None
    }
    expected = {
        f"{method} {path}"
        for method, path, operation in operations(document)
        if takes_a_key(method, operation)
    }
    assert keyed == expected
    assert {
        "POST /api/v1/products/{product_id}/stock-adjustments",
        "PATCH /api/v1/users/me",
    } <= keyed
    assert "POST /api/v1/auth/sessions" not in keyed
    assert len(keyed) >= 12


def test_every_keyed_operation_documents_its_problems_and_the_replay_marker(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        if key_parameter(operation) is None:
            continue
        responses = operation["responses"]
        for status, slug in (
            ("400", "idempotency-key-malformed"),
            ("409", "idempotency-key-in-use"),
            ("409", "idempotent-answer-lost"),
            ("422", "idempotency-key-reused"),
        ):
            assert slug in responses[status]["description"], f"{method} {path} {status}"
        successes = [answer for status, answer in responses.items() if status.startswith("2")]
        assert successes, f"{method} {path}"
        for answer in successes:
            assert "Idempotent-Replayed" in answer["headers"], f"{method} {path}"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', True),
        ('"say \\"hi\\""', True),
        ('"a"', True),
        ('""', False),
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", True),
        ("bare with spaces", False),
        ('bare"quote', False),
        ('"a\x00b"', False),
        ('"café"', False),
        ('"key" trailing', False),
    ],
)
def test_the_documented_pattern_is_the_grammar_the_server_accepts(
    document: dict[str, Any], value: str, valid: bool
) -> None:
    parameter = key_parameter(document["paths"]["/api/v1/products"]["post"])
    assert parameter is not None
    assert parameter["required"] is False
    assert (re.fullmatch(parameter["schema"]["pattern"], value) is not None) is valid
