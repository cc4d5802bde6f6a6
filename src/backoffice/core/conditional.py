"""Entity tags and conditional requests (RFC 9110 section 13) for versioned resources."""

from typing import Annotated, Protocol

from fastapi import Header, Response

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


class Versioned(Protocol):
    """A resource's read schema: any `XRead` with the version its ETag carries."""

    @property
    def version(self) -> int: ...

    def model_dump_json(self) -> str: ...


def versioned_response(
    resource: Versioned, *, location: str | None = None, if_none_match: str | None = None
) -> Response:
    """The answer with a versioned resource: 200 with its ETag; 201 with its ETag and
    `Location` for a resource just created at `location`; a bodiless 304 instead when
    `if_none_match` shows the client's copy is current. The body is serialized once (the route
    declares `response_model` for the OpenAPI document, so FastAPI does not validate and
    serialize it a second time)."""
    tag = etag(resource.version)
    if is_not_modified(if_none_match, resource.version):
        return Response(status_code=304, headers={"ETag": tag})
    if location is None:
        status_code, headers = 200, {"ETag": tag}
    else:
        status_code, headers = 201, {"ETag": tag, "Location": location}
    return Response(
        resource.model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )
