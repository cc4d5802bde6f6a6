"""The one rule for text PostgreSQL cannot store, proven over the whole API.

The cases are generated from the OpenAPI document: every string field of every JSON or form
body (nested objects and arrays included) and every string query or path parameter of every
operation gets a NUL, and JSON bodies also a lone surrogate. A new route or field inherits the
proof without anyone writing a case for it.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import quote

import pytest
from httpx import AsyncClient, Response

from backoffice.core.config import Environment, Settings
from backoffice.core.main import create_app
from backoffice.core.middleware import STORED_HEADERS, unstorable_json_fields
from backoffice.core.text import REPLACEMENT, has_unstorable, scrub

NUL = "\x00"
SURROGATE = "\ud800"
VALIDATION_ERROR = "urn:backoffice:problem:validation-error"
_MAX_DEPTH = 6  # deeper than any request schema; guards against recursive schemas

Schema = dict[str, Any]
Location = tuple[str | int, ...]


@cache
def _document() -> dict[str, Any]:
    """The app's OpenAPI document, read once at collection time (no database needed)."""
    document: dict[str, Any] = create_app(
        Settings(_env_file=None, environment=Environment.TEST)
    ).openapi()
    return document


def _resolve(schema: Schema) -> Schema:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = {
            **_document()["components"]["schemas"][name],
            **{key: value for key, value in schema.items() if key != "$ref"},
        }
    return schema


def _variants(schema: Schema) -> list[Schema]:
    """The concrete shapes a schema allows (anyOf/oneOf flattened, null left out)."""
    schema = _resolve(schema)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return [
                variant
                for option in schema[key]
                for variant in _variants(option)
                if variant.get("type") != "null"
            ]
    return [schema]


_FORMATS = {
    "email": "ada@example.com",
    "date": "2030-01-31",
    "date-time": "2030-01-31T12:00:00Z",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _declared(schema: Schema) -> list[Any]:
    """The values a schema names itself (examples, example, default, const, enum), best first."""
    declared = [*schema.get("examples", []), schema.get("example"), schema.get("default")]
    declared += [schema.get("const"), *schema.get("enum", [])]
    return [value for value in declared if value is not None]


def _simplest(variant: Schema, depth: int) -> Any:
    kind = variant.get("type")
    simplest: dict[str, Any] = {
        "string": lambda: _FORMATS.get(
            variant.get("format", ""), "x" * max(1, variant.get("minLength", 1))
        ),
        "integer": lambda: max(1, int(variant.get("minimum", 1))),
        "number": lambda: max(1, variant.get("minimum", 1)),
        "boolean": lambda: True,
        "array": lambda: (
            [example(variant.get("items", {}), depth + 1)] * variant.get("minItems", 0)
        ),
        "object": lambda: {
            name: example(variant.get("properties", {})[name], depth + 1)
            for name in variant.get("required", [])
        },
    }
    return simplest[kind]() if kind in simplest and depth < _MAX_DEPTH else None


def example(schema: Schema, depth: int = 0) -> Any:
    """A minimal valid-looking value: the schema's own examples, default, const or enum first,
    else the simplest value of its type (objects with their required properties only)."""
    variant = _variants(schema)[0]
    declared = _declared(_resolve(schema)) or _declared(variant)
    return declared[0] if declared else _simplest(variant, depth)


def string_locations(schema: Schema, depth: int = 0) -> Iterator[Location]:
    """Where a string can go inside a value of this schema: () for the value itself, property
    names and list index 0 on the way down."""
    if depth > _MAX_DEPTH:
        return
    seen: set[Location] = set()
    for variant in _variants(schema):
        kind = variant.get("type")
        found: Iterator[Location] = iter(())
        if kind == "string":
            found = iter([()])
        elif kind == "object":
            found = (
                (name, *rest)
                for name, child in variant.get("properties", {}).items()
                for rest in string_locations(child, depth + 1)
            )
        elif kind == "array":
            found = ((0, *rest) for rest in string_locations(variant.get("items", {}), depth + 1))
        for location in found:
            if location not in seen:
                seen.add(location)
                yield location


def _variant_at(schema: Schema, step: str | int) -> Schema:
    for variant in _variants(schema):
        if isinstance(step, int) and variant.get("type") == "array":
            return variant
        if isinstance(step, str) and step in variant.get("properties", {}):
            return variant
    raise AssertionError(f"no variant of {schema} holds {step!r}")


def with_string(schema: Schema, location: Location, hostile: str) -> Any:
    """A valid-looking value of `schema` whose string at `location` is its example plus
    `hostile`."""
    if not location:
        valid = example(schema)
        return f"{valid if isinstance(valid, str) else 'x'}{hostile}"
    step, rest = location[0], location[1:]
    variant = _variant_at(schema, step)
    if isinstance(step, int):
        return [with_string(variant.get("items", {}), rest, hostile)]
    value = example(variant)
    container = value if isinstance(value, dict) else {}
    container[step] = with_string(variant["properties"][step], rest, hostile)
    return container


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any] = field(hash=False, compare=False)

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"


def _operations() -> list[Operation]:
    return [
        Operation(method, path, spec)
        for path, methods in _document()["paths"].items()
        for method, spec in methods.items()
    ]


@dataclass(frozen=True)
class Case:
    field: str  # the `errors[].field` the answer must name
    hostile: str
    url: str
    params: dict[str, Any]
    json_body: Any = None
    form: dict[str, Any] | None = None


def _parameters(operation: Operation, where: str) -> list[dict[str, Any]]:
    return [param for param in operation.spec.get("parameters", []) if param["in"] == where]


def _url(operation: Operation, overrides: dict[str, str] | None = None) -> str:
    url = operation.path
    for param in _parameters(operation, "path"):
        value = (overrides or {}).get(param["name"], example(param["schema"]))
        url = url.replace(f"{{{param['name']}}}", quote(str(value), safe=""))
    return url


def _required_query(operation: Operation) -> dict[str, Any]:
    return {
        param["name"]: example(param["schema"])
        for param in _parameters(operation, "query")
        if param.get("required")
    }


def cases(operation: Operation) -> Iterator[Case]:
    """One request per string the operation takes, that string carrying a NUL (a lone
    surrogate too where the transport can carry one: JSON's `\\ud800` escape)."""
    content = operation.spec.get("requestBody", {}).get("content", {})
    json_schema = content.get("application/json", {}).get("schema")
    form_schema = content.get("application/x-www-form-urlencoded", {}).get("schema")
    body: Any = example(json_schema) if json_schema else None
    form: Any = example(form_schema) if form_schema else None
    url, query = _url(operation), _required_query(operation)
    for param in _parameters(operation, "query"):
        if any(location in {(), (0,)} for location in string_locations(param["schema"])):
            hostile = f"{example(param['schema'])}{NUL}"
            yield Case(
                f"query.{param['name']}", NUL, url, query | {param["name"]: hostile}, body, form
            )
    for param in _parameters(operation, "path"):
        if () in string_locations(param["schema"]):
            hostile_url = _url(operation, {param["name"]: f"x{NUL}"})
            yield Case("path", NUL, hostile_url, query, body, form)
    for schema, is_json in ((json_schema, True), (form_schema, False)):
        if schema is None:
            continue
        for location in string_locations(schema):
            name = ".".join(["body", *(str(step) for step in location)])
            for hostile in (NUL, SURROGATE) if is_json else (NUL,):
                value = with_string(schema, location, hostile)
                yield Case(
                    name,
                    hostile,
                    url,
                    query,
                    value if is_json else body,
                    form if is_json else value,
                )


def _send(client: AsyncClient, method: str, case: Case) -> Any:
    if case.form is not None:
        return client.request(method, case.url, params=case.params, data=case.form)
    if case.json_body is not None:
        # ensure_ascii (the default) writes a lone surrogate as the `\ud800` escape, which is
        # how a client sends one; httpx's own encoder would refuse it.
        return client.request(
            method,
            case.url,
            params=case.params,
            content=json.dumps(case.json_body).encode(),
            headers={"Content-Type": "application/json"},
        )
    return client.request(method, case.url, params=case.params)


def _problem_names(response: Response, field_name: str) -> str | None:
    """None when the answer is the expected 422 naming the field, else what is wrong."""
    if response.status_code != 422:
        return f"answered {response.status_code}: {response.text[:200]}"
    if response.headers["content-type"] != "application/problem+json":
        return f"answered {response.headers['content-type']}"
    problem = response.json()
    fields = [error["field"] for error in problem.get("errors", [])]
    if problem["type"] != VALIDATION_ERROR or field_name not in fields:
        return f"answered {problem['type']} naming {fields}"
    return None


_OPERATIONS_WITH_STRINGS = [operation for operation in _operations() if any(cases(operation))]


def test_the_generator_covers_the_strings_of_the_api() -> None:
    """Guards the generator itself: it finds the strings we know of, nested ones included."""
    found = {
        (str(operation), case.field)
        for operation in _OPERATIONS_WITH_STRINGS
        for case in cases(operation)
    }
    assert ("POST /api/v1/products", "body.name") in found
    assert ("GET /api/v1/products", "query.q") in found
    assert ("POST /api/v1/roles", "body.grants.0.module") in found
    assert ("POST /api/v1/auth/sessions", "body.username") in found
    assert ("POST /api/v1/auth/sessions", "body.password") in found
    assert ("GET /api/v1/tasks", "query.status") in found  # a list of enum strings
    assert len(_OPERATIONS_WITH_STRINGS) >= 20


@pytest.mark.parametrize("operation", _OPERATIONS_WITH_STRINGS, ids=str)
async def test_unstorable_text_in_any_string_is_a_422_naming_the_field(
    client: AsyncClient, operation: Operation
) -> None:
    failures = []
    for case in cases(operation):
        response = await _send(client, operation.method, case)
        if (wrong := _problem_names(response, case.field)) is not None:
            failures.append(f"{case.field} with {case.hostile!r}: {wrong}")

    assert failures == []


@pytest.mark.parametrize("header", [name.decode() for name in STORED_HEADERS])
async def test_a_nul_in_a_stored_header_is_a_422_naming_the_header(
    client: AsyncClient, header: str
) -> None:
    response = await client.get("/api/v1/products", headers={header: f"abc{NUL}def"})

    assert _problem_names(response, f"header.{header}") is None


@pytest.mark.parametrize("path", ["/%00", "/api/v1/products/%00", "/api/v1/nowhere%00/x"])
async def test_a_nul_in_the_path_of_any_route_known_or_not_is_a_422(
    anonymous_client: AsyncClient, path: str
) -> None:
    response = await anonymous_client.get(path)

    assert _problem_names(response, "path") is None
    assert response.json()["instance"] == response.request.url.path.replace(NUL, REPLACEMENT)


async def test_a_nul_in_a_query_parameter_name_is_a_422(client: AsyncClient) -> None:
    response = await client.get("/api/v1/products?q%00x=1")

    assert _problem_names(response, f"query.q{REPLACEMENT}x") is None


async def test_a_nul_in_a_json_key_is_a_422_naming_the_key(client: AsyncClient) -> None:
    response = await client.post(
        "/api/v1/roles", json={"name": "keys", "grants": [{"module\x00": "products"}]}
    )

    assert _problem_names(response, f"body.grants.0.module{REPLACEMENT}") is None


async def test_a_nul_in_a_multipart_form_field_is_a_422_naming_it(
    anonymous_client: AsyncClient,
) -> None:
    response = await anonymous_client.post(
        "/api/v1/auth/sessions",
        data={"username": "ada@example.com", "password": f"pass{NUL}word"},
        files={"unused": ("unused.txt", b"binary \x00 content is not text")},
    )

    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert _problem_names(response, "body.password") is None


@pytest.mark.parametrize(
    ("field", "utf7"),
    [("password", "x+2AA-"), ("username", "ada+AAA-@example.com")],
    ids=["lone-surrogate", "nul"],
)
async def test_a_multipart_charset_cannot_smuggle_unstorable_text(
    anonymous_client: AsyncClient, field: str, utf7: str
) -> None:
    """The form parser honours a part's charset: in UTF-7, plain ASCII decodes to a lone
    surrogate (`+2AA-`) or a NUL (`+AAA-`)."""
    values = {"username": "ada@example.com", "password": "a long password"} | {field: utf7}
    boundary = "XyZ"
    body = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in values.items()
        )
        + f"--{boundary}--\r\n"
    )

    response = await anonymous_client.post(
        "/api/v1/auth/sessions",
        content=body.encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}; charset=utf-7"},
    )

    assert _problem_names(response, f"body.{field}") is None


async def test_text_that_merely_looks_hostile_passes(client: AsyncClient) -> None:
    """Escaped backslashes, a surrogate *pair* (an emoji) and `%00` as text are fine."""
    response = await client.post(
        "/api/v1/products",
        content=json.dumps(
            {"sku": "LOOKS-1", "name": "a \\u0000 b 😀", "description": "%00", "price": "1.00"}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "a \\u0000 b 😀"


# --- the pure pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unstorable"),
    [
        ("plain", False),
        ("", False),
        ("emoji 😀 and é", False),
        ("\\u0000", False),
        ("a\x00b", True),
        ("\ud800", True),
        ("x\udfff", True),
    ],
)
def test_has_unstorable_finds_nul_and_lone_surrogates(text: str, unstorable: bool) -> None:
    assert has_unstorable(text) is unstorable


def test_scrub_replaces_only_what_cannot_be_stored() -> None:
    assert scrub("a\x00b\ud800c 😀") == f"a{REPLACEMENT}b{REPLACEMENT}c 😀"
    assert scrub("clean") == "clean"


def test_unstorable_json_fields_names_each_location_at_any_depth() -> None:
    document = {
        "name": "ok",
        "bad": "x\x00",
        "nested": {"list": ["fine", {"deep": "\ud800"}]},
        "key\x00": "value",
    }

    assert list(unstorable_json_fields(document)) == [
        "body.bad",
        "body.nested.list.1.deep",
        f"body.key{REPLACEMENT}",
    ]
    assert list(unstorable_json_fields("\x00")) == ["body"]


def test_unstorable_json_fields_survives_deep_nesting() -> None:
    document: Any = "\x00"
    for _ in range(10_000):
        document = [document]

    assert list(unstorable_json_fields(document)) == ["body" + ".0" * 10_000]
