"""Entity tags and conditional requests (RFC 9110 section 13) for versioned resources."""

from collections.abc import Mapping
from typing import Annotated

from fastapi import Header, Response
from pydantic import BaseModel

from backoffice.core.errors import PreconditionFailedError

IfMatchHeader = Annotated[
    str | None,
    Header(
        max_length=1024,
        description="Apply the change only if the resource still has this ETag (else 412).",
    ),
]
IfNoneMatchHeader = Annotated[
    str | None,
    Header(max_length=1024, description="Answer 304 if the resource still has this ETag."),
]


def etag(version: int) -> str:
    return f'"{version}"'


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def check_if_match(if_match: str | None, version: int) -> None:
    """Strong comparison, as If-Match requires: a stale or weak tag fails with 412."""
    if if_match is None:
        return
    tags = {tag.strip() for tag in if_match.split(",")}
    if "*" in tags or etag(version) in tags:
        return
    raise PreconditionFailedError(
        f"The resource has changed (current ETag {etag(version)}); fetch it again and retry."
    )


def is_not_modified(if_none_match: str | None, version: int) -> bool:
    """Weak comparison, as If-None-Match requires."""
    if if_none_match is None:
        return False
    tags = _tags(if_none_match)
    return "*" in tags or etag(version) in tags


def versioned_response(
    body: BaseModel,
    version: int,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    if_none_match: str | None = None,
) -> Response:
    """The JSON body with its ETag, serialized once (the route declares `response_model` for
    the OpenAPI document, so FastAPI does not validate and serialize it a second time); a
    bodiless 304 instead when `if_none_match` shows the client's copy is current."""
    if is_not_modified(if_none_match, version):
        return Response(status_code=304, headers={"ETag": etag(version)})
    return Response(
        body.model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": etag(version), **(headers or {})},
    )
