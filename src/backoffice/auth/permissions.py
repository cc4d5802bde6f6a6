"""RBAC vocabulary and the pure rules that resolve permissions; no I/O here."""

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Module(StrEnum):
    PRODUCTS = "products"
    CUSTOMERS = "customers"
    TASKS = "tasks"
    USERS = "users"
    ROLES = "roles"
    AUDIT = "audit"


class Action(StrEnum):
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True, order=True)
class Permission:
    module: Module
    action: Action

    def __str__(self) -> str:
        return f"{self.module}:{self.action}"

    @classmethod
    def parse(cls, text: str) -> "Permission":
        module, action = text.split(":", 1)
        return cls(Module(module), Action(action))


ALL_PERMISSIONS = frozenset(Permission(module, action) for module in Module for action in Action)


def expand_grant(module: Module, actions: Iterable[Action]) -> frozenset[Permission]:
    """A grant of a module always includes reading it."""
    return frozenset(Permission(module, action) for action in {Action.READ, *actions})


def effective_permissions(
    grants: Iterable[tuple[Module, Iterable[Action]]], *, is_superuser: bool
) -> frozenset[Permission]:
    """The union of every grant of every role; a superuser has everything."""
    if is_superuser:
        return ALL_PERMISSIONS
    permissions: set[Permission] = set()
    for module, actions in grants:
        permissions |= expand_grant(module, actions)
    return frozenset(permissions)
