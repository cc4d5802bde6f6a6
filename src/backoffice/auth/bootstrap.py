"""Default roles and the first superuser, created idempotently (`task seed`, first start)."""

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import Role, User
from backoffice.auth.permissions import Action, Module
from backoffice.auth.repository import RoleRepository, UserRepository
from backoffice.auth.tokens import hash_password
from backoffice.core.config import Settings

log = structlog.get_logger(__name__)

_EVERYTHING = tuple(sorted(Action))
_BUSINESS = (Module.PRODUCTS, Module.CUSTOMERS, Module.TASKS)

DEFAULT_ROLES: dict[str, tuple[str, dict[Module, tuple[Action, ...]]]] = {
    "admin": ("Everything, in every module.", dict.fromkeys(Module, _EVERYTHING)),
    "manager": (
        "Products, customers and tasks: every action.",
        dict.fromkeys(_BUSINESS, _EVERYTHING),
    ),
    "viewer": ("Read products, customers and tasks.", dict.fromkeys(_BUSINESS, (Action.READ,))),
}


async def ensure_defaults(session: AsyncSession, settings: Settings) -> list[str]:
    """Create whatever of the defaults is missing; never change what exists. Returns what
    was created."""
    created: list[str] = []
    roles = RoleRepository(session)
    for name, (description, grants) in DEFAULT_ROLES.items():
        if await roles.get_by_name(name) is not None:
            continue
        role = await roles.create(Role(name=name, description=description))
        assert role.id is not None  # noqa: S101  # flushed by create
        await roles.replace_grants(
            role.id, {str(module): [str(a) for a in actions] for module, actions in grants.items()}
        )
        created.append(f"role {name}")
    users = UserRepository(session)
    email = settings.first_superuser_email
    if await users.get_by_email(email) is None:
        await users.create(
            User(
                email=email,
                full_name="Administrator",
                hashed_password=hash_password(settings.first_superuser_password.get_secret_value()),
                is_superuser=True,
            )
        )
        created.append(f"superuser {email}")
    if created:
        log.info("bootstrap.created", items=created)
    return created
