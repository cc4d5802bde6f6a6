"""The pure RBAC rules, without HTTP or a database."""

import pytest

from backoffice.auth.permissions import (
    ALL_PERMISSIONS,
    Action,
    Module,
    Permission,
    effective_permissions,
    expand_grant,
)
from backoffice.auth.service import parse_grants


def perms(*texts: str) -> frozenset[Permission]:
    return frozenset(Permission.parse(text) for text in texts)


@pytest.mark.parametrize("action", list(Action))
def test_any_grant_of_a_module_implies_read(action: Action) -> None:
    assert Permission(Module.TASKS, Action.READ) in expand_grant(Module.TASKS, [action])


def test_an_empty_grant_is_read_only() -> None:
    assert expand_grant(Module.AUDIT, []) == perms("audit:read")


def test_permissions_are_the_union_over_roles() -> None:
    grants = [
        (Module.PRODUCTS, [Action.UPDATE]),
        (Module.PRODUCTS, [Action.DELETE]),
        (Module.TASKS, []),
    ]

    assert effective_permissions(grants, is_superuser=False) == perms(
        "products:read", "products:update", "products:delete", "tasks:read"
    )


def test_no_grants_means_no_permissions() -> None:
    assert effective_permissions([], is_superuser=False) == frozenset()


def test_a_superuser_has_every_permission_whatever_the_grants() -> None:
    assert effective_permissions([], is_superuser=True) == ALL_PERMISSIONS
    assert len(ALL_PERMISSIONS) == len(Module) * len(Action)


def test_grants_as_stored_are_parsed() -> None:
    assert parse_grants(["products:create,update", "tasks:"]) == [
        (Module.PRODUCTS, [Action.CREATE, Action.UPDATE]),
        (Module.TASKS, []),
    ]
    assert parse_grants(None) == []


def test_permission_text_round_trips() -> None:
    assert str(Permission.parse("customers:delete")) == "customers:delete"
