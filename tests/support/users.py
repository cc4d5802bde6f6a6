"""Users stored directly (not through the API), their sessions, and signing in over HTTP."""

from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from itertools import count

from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncSession

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

SignIn = Callable[[User], Awaitable[AsyncClient]]

_user_numbers = count(1)


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
