"""Users stored directly (not through the API), their sessions, and signing in over HTTP."""

from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from itertools import count
from typing import Any

from httpx import AsyncClient, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.auth.bootstrap import DEFAULT_ROLES
from backoffice.auth.models import Role, User, UserRole
from backoffice.auth.repository import RoleRepository
from backoffice.auth.schemas import TokenPair
from backoffice.auth.service import start_session
from backoffice.auth.tokens import hash_password
from backoffice.core.config import Settings
from tests.support.factories import USERS

LOGIN = "/api/v1/auth/sessions"
REFRESH = "/api/v1/auth/tokens"
LOGOUT = "/api/v1/auth/sessions/current"
ME = f"{USERS}/me"

TEST_PASSWORD = "correct horse battery staple"  # test users' password
NEW_PASSWORD = "an entirely different passphrase"
# What the API shows of a user: never a password hash.
USER_FIELDS = {
    "id",
    "email",
    "full_name",
    "is_active",
    "is_superuser",
    "is_service_account",
    "locked_until",
    "created_at",
    "updated_at",
    "version",
}

SignIn = Callable[[User], Awaitable[AsyncClient]]

_user_numbers = count(1)
_role_numbers = count(1)


@lru_cache
def _test_password_hash() -> str:
    # Hashed once: argon2 is slow by design, and most tests only need some user.
    return hash_password(TEST_PASSWORD)


async def create_user(
    session: AsyncSession,
    *,
    email: str | None = None,
    roles: Sequence[str] = (),
    is_superuser: bool = False,
    is_active: bool = True,
) -> User:
    """A stored user whose password is TEST_PASSWORD, with the named roles (created if
    missing, with the default roles' grants)."""
    user = User(
        email=email or f"user{next(_user_numbers)}@example.com",
        full_name="Test User",
        hashed_password=_test_password_hash(),
        is_superuser=is_superuser,
        is_active=is_active,
    )
    session.add(user)
    await session.flush()
    for name in roles:
        role = await RoleRepository(session).get_by_name(name)
        if role is None:
            description, grants = DEFAULT_ROLES[name]
            role = Role(name=name, description=description)
            session.add(role)
            await session.flush()
            assert role.id is not None
            await RoleRepository(session).replace_grants(
                role.id, {str(m): [str(a) for a in actions] for m, actions in grants.items()}
            )
        session.add(UserRole(user_id=user.id, role_id=role.id))  # type: ignore[arg-type]
    await session.commit()
    return user


async def tokens_for(session: AsyncSession, settings: Settings, user: User) -> TokenPair:
    """A real session for `user`, as a login would start it, without the password round."""
    pair = await start_session(session, settings, user)
    await session.commit()
    return pair


async def login(client: AsyncClient, email: str, password: str = TEST_PASSWORD) -> Response:
    return await client.post(LOGIN, data={"username": email, "password": password})


def user_body(response: Response) -> dict[str, Any]:
    """A user as the API shows it: exactly the public fields, never a password hash."""
    body: dict[str, Any] = response.json()
    assert set(body) == USER_FIELDS
    assert "$argon2" not in response.text
    return body


async def store_role(session: AsyncSession, grants: dict[str, list[str]]) -> tuple[int, str]:
    """A stored role with these grants (module -> actions): its id and name."""
    role = Role(name=f"custom-{next(_role_numbers)}")
    session.add(role)
    await session.flush()
    assert role.id is not None
    await RoleRepository(session).replace_grants(role.id, grants)
    await session.commit()
    return role.id, role.name


async def user_with_grants(session: AsyncSession, *grant_sets: dict[str, list[str]]) -> User:
    """A user holding one custom role per grant set (stored directly, not through the API)."""
    names = [(await store_role(session, grants))[1] for grants in grant_sets]
    return await create_user(session, roles=names)


async def stored_role_ids(session: AsyncSession, user_id: int | None) -> set[int]:
    result = await session.scalars(
        select(col(UserRole.role_id)).where(col(UserRole.user_id) == user_id)
    )
    return set(result)


async def user_count(session: AsyncSession, email: str) -> int:
    result = await session.scalar(
        select(func.count()).select_from(User).where(func.lower(col(User.email)) == email.lower())
    )
    return int(result or 0)
