from http import HTTPStatus

from backoffice.core.errors import (
    ConflictError,
    DomainError,
    FieldError,
    InvalidInputError,
    UnauthorizedError,
)

_INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class AuthenticationError(UnauthorizedError):
    """The detail is deliberately the same for every cause a client must not learn."""


class InvalidCredentialsError(AuthenticationError):
    slug = "invalid-credentials"
    keeps_changes = True  # the failure counts towards the lockout

    def __init__(self) -> None:
        super().__init__("Incorrect email or password, or the account is locked or disabled.")


class InvalidAccessTokenError(AuthenticationError):
    slug = "invalid-token"
    headers = _INVALID_TOKEN

    def __init__(self) -> None:
        super().__init__("The access token is missing, invalid, expired or revoked.")


class MissingAccessTokenError(AuthenticationError):
    """No credentials at all: RFC 6750 section 3.1 says the challenge carries no error code."""

    slug = "missing-token"

    def __init__(self) -> None:
        super().__init__("This needs an access token: `Authorization: Bearer <token>`.")


class InvalidRefreshTokenError(AuthenticationError):
    slug = "invalid-refresh-token"
    keeps_changes = True  # a replayed token revokes its family, and that must stick

    def __init__(self) -> None:
        super().__init__("The refresh token is invalid, expired or revoked; log in again.")


class WrongCurrentPasswordError(DomainError):
    status_code = HTTPStatus.FORBIDDEN
    title = "Forbidden"
    slug = "wrong-current-password"
    keeps_changes = True  # the failure counts towards the lockout

    def __init__(self) -> None:
        super().__init__("The current password is incorrect.")


class LastSuperuserError(ConflictError):
    slug = "last-superuser"

    def __init__(self) -> None:
        super().__init__(
            "This would leave no active superuser: make another user a superuser first."
        )


class RateLimitedError(DomainError):
    status_code = HTTPStatus.TOO_MANY_REQUESTS
    title = "Too Many Requests"
    slug = "rate-limited"


class UnchangedPasswordError(InvalidInputError):
    # The current password was right: the guess booked for it is cleared, and that must stick.
    keeps_changes = True

    def __init__(self) -> None:
        super().__init__(
            "new_password must differ from current_password.",
            errors=[
                FieldError(
                    field="body.new_password",
                    message="must differ from current_password",
                    type="value_error",
                )
            ],
        )
