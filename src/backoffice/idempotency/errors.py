"""The problems a key can cause, each with its own type: a client tells them apart by it."""

from http import HTTPStatus
from types import MappingProxyType

from backoffice.core.errors import ConflictError, DomainError

# How long a repeat of a running request should wait before asking again.
IN_PROGRESS_RETRY_AFTER_S = 1


class MalformedIdempotencyKeyError(DomainError):
    status_code = HTTPStatus.BAD_REQUEST
    title = "Malformed Idempotency-Key"
    slug = "idempotency-key-malformed"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"{reason} The Idempotency-Key header is one Structured Field string: 1 to 255 "
            'printable ASCII characters in double quotes, e.g. `Idempotency-Key: "8e03978e-'
            '40d5-43e8-bc93-6894a57f9324"`.'
        )


class IdempotencyKeyReusedError(DomainError):
    status_code = HTTPStatus.UNPROCESSABLE_ENTITY
    title = "Idempotency-Key Reused"
    slug = "idempotency-key-reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was used for a different request (method, path, query or "
            "body). Use a new key for a new request."
        )


class IdempotencyKeyInUseError(ConflictError):
    """A request with the key is still running: the draft's 409."""

    title = "Idempotency-Key In Use"
    slug = "idempotency-key-in-use"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed. Retry after the "
            "delay in Retry-After to get its answer.",
            headers=MappingProxyType({"Retry-After": str(IN_PROGRESS_RETRY_AFTER_S)}),
        )


class IdempotentAnswerLostError(ConflictError):
    """The first request's changes were committed, but its answer was not stored (the process
    stopped between the two). Running it again would apply it twice, so it is not."""

    title = "Idempotent Answer Lost"
    slug = "idempotent-answer-lost"

    def __init__(self) -> None:
        super().__init__(
            "The request with this Idempotency-Key was carried out, but its answer could not "
            "be stored. It will not run again: read the resource back to see its outcome."
        )
