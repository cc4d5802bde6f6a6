"""There is always an active superuser: the last one cannot be demoted, deactivated or
deleted, also when two superusers remove each other at the same moment.

Only another active superuser can touch a superuser's account, so one at a time a removal
always leaves its author; the 409 can only come from a race, and the race is decided by row
locks in the database, which the committed-database tests below exercise for real."""

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from itertools import count
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from backoffice.auth.models import User
from backoffice.core.main import create_app
from tests.support.factories import USERS
from tests.support.http import assert_problem, bearer
from tests.support.users import SignIn, create_user, login

PASSWORD = "a long enough password"
ACTIONS = ["demote", "deactivate", "delete"]

_emails = count(1)


async def remove(
    client: AsyncClient, action: str, user_id: int, token: str | None = None
) -> Response:
    """Demote, deactivate or delete a user, as the client (or as the token's user)."""
    headers = bearer(token) if token else None
    if action == "delete":
        return await client.delete(f"{USERS}/{user_id}", headers=headers)
    change = {"is_superuser": False} if action == "demote" else {"is_active": False}
    return await client.patch(f"{USERS}/{user_id}", json=change, headers=headers)


def succeeded(response: Response) -> bool:
    return response.status_code in {200, 204}


# --- one at a time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "counter_status"), [("demote", 403), ("deactivate", 401), ("delete", 401)]
)
async def test_a_superuser_can_remove_another_and_is_then_the_last(
    client: AsyncClient,
    superuser: User,
    session: AsyncSession,
    sign_in: SignIn,
    action: str,
    counter_status: int,
) -> None:
    other = await create_user(session, is_superuser=True)
    assert other.id is not None
    assert superuser.id is not None
    other_client = await sign_in(other)

    removed = await remove(client, action, other.id)
    # Too late: `other` is no longer a superuser (403), or no longer signed in at all (401).
    countered = await remove(other_client, action, superuser.id)

    assert succeeded(removed), removed.text
    assert_problem(countered, counter_status)
    me = await client.get(f"{USERS}/{superuser.id}")
    assert (me.json()["is_superuser"], me.json()["is_active"]) == (True, True)


async def test_the_last_superuser_cannot_remove_itself(
    client: AsyncClient, superuser: User
) -> None:
    assert superuser.id is not None
    for action in ACTIONS:
        assert_problem(await remove(client, action, superuser.id), 403, "forbidden")


def test_the_openapi_document_lists_the_409_of_removing_a_superuser() -> None:
    paths = create_app().openapi()["paths"][f"{USERS}/{{user_id}}"]

    for method in ("patch", "delete"):
        assert "409" in paths[method]["responses"], method


# --- races, on the committed database -----------------------------------------------------------


@dataclass
class Superuser:
    id: int
    email: str
    token: str


async def new_superuser(admin: AsyncClient, token: str | None = None) -> Superuser:
    """A new active superuser, made through the API by a superuser, and signed in."""
    email = f"super{next(_emails)}@example.com"
    headers = bearer(token) if token else None
    created = await admin.post(
        USERS, json={"email": email, "password": PASSWORD, "full_name": "S"}, headers=headers
    )
    assert created.status_code == 201, created.text
    user_id: int = created.json()["id"]
    promoted = await admin.patch(f"{USERS}/{user_id}", json={"is_superuser": True}, headers=headers)
    assert promoted.status_code == 200, promoted.text
    return Superuser(user_id, email, await sign_in_as(admin, email))


async def sign_in_as(client: AsyncClient, email: str) -> str:
    response = await login(client, email, PASSWORD)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def only_two_superusers(committed_client: AsyncClient) -> tuple[Superuser, Superuser]:
    """Two new active superusers, and the fixture's own one demoted by them: the pair are then
    the only active superusers."""
    first = await new_superuser(committed_client)
    second = await new_superuser(committed_client)
    me = (await committed_client.get(f"{USERS}/me")).json()
    demoted = await remove(committed_client, "demote", me["id"], first.token)
    assert demoted.status_code == 200, demoted.text
    return first, second


async def active_superuser_ids(client: AsyncClient, token: str) -> set[int]:
    response = await client.get(
        USERS, params={"is_active": "true", "limit": 100}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    return {user["id"] for user in response.json()["items"] if user["is_superuser"]}


async def restore(
    client: AsyncClient, action: str, survivor: Superuser, loser: Superuser
) -> Superuser:
    """Undo a round's removal, as the survivor: the loser is an active superuser again."""
    if action == "delete":
        return await new_superuser(client, survivor.token)
    change = {"is_superuser": True} if action == "demote" else {"is_active": True}
    restored = await client.patch(
        f"{USERS}/{loser.id}", json=change, headers=bearer(survivor.token)
    )
    assert restored.status_code == 200, restored.text
    if action == "deactivate":  # deactivation ended the loser's sessions
        loser.token = await sign_in_as(client, loser.email)
    return loser


async def at_the_same_moment(
    engine: AsyncEngine, rows: list[int], *requests: Coroutine[Any, Any, Response]
) -> list[Response]:
    """Run the requests so that each is provably in flight at once: another transaction holds
    the users' rows until every request waits on them (each past its authentication, inside
    its own transaction), then lets them all go together."""
    async with engine.connect() as gate:
        await gate.execute(
            text("SELECT id FROM users WHERE id = ANY(:ids) FOR UPDATE"), {"ids": rows}
        )
        running = [asyncio.create_task(request) for request in requests]
        waiting = await _waiting_on_locks(gate, len(running), running)
        await gate.rollback()
    answers = await asyncio.gather(*running)
    assert waiting, [answer.text for answer in answers]
    return answers


@pytest.mark.committed
@pytest.mark.parametrize("action", ACTIONS)
async def test_two_superusers_removing_each_other_at_once_leave_one(
    committed_client: AsyncClient, engine: AsyncEngine, action: str
) -> None:
    first, second = await only_two_superusers(committed_client)

    for round_number in range(5):
        answers = await at_the_same_moment(
            engine,
            [first.id, second.id],
            remove(committed_client, action, second.id, first.token),
            remove(committed_client, action, first.id, second.token),
        )

        outcomes = sorted(succeeded(answer) for answer in answers)
        assert outcomes == [False, True], (round_number, [a.text for a in answers])
        loser_answer = next(answer for answer in answers if not succeeded(answer))
        assert_problem(loser_answer, 409, "last-superuser")
        survivor, loser = (first, second) if succeeded(answers[0]) else (second, first)
        assert await active_superuser_ids(committed_client, survivor.token) == {survivor.id}
        # The next round starts again from two active superusers.
        loser = await restore(committed_client, action, survivor, loser)
        first, second = survivor, loser


@pytest.mark.committed
async def test_a_removal_waits_for_one_in_flight_and_then_sees_it(
    committed_client: AsyncClient, engine: AsyncEngine
) -> None:
    """While another transaction has demoted `second` and not yet committed, `second`'s own
    demotion of `first` waits on the rows' locks; once the other commits, it finds `first`
    the last active superuser and is refused."""
    first, second = await only_two_superusers(committed_client)

    async with engine.connect() as other:
        await other.execute(
            text("UPDATE users SET is_superuser = false WHERE id = :id"), {"id": second.id}
        )
        racing = asyncio.create_task(remove(committed_client, "demote", first.id, second.token))
        waited = await _waiting_on_locks(other, 1, [racing])
        await other.commit()
    answer = await racing

    assert waited, f"the removal did not wait for the other transaction: {answer.text}"
    assert_problem(answer, 409, "last-superuser")
    assert await active_superuser_ids(committed_client, first.token) == {first.id}


async def _waiting_on_locks(
    connection: AsyncConnection, expected: int, requests: list[asyncio.Task[Response]]
) -> bool:
    """Whether `expected` other backends come to wait on a lock before any of the requests
    ends (within a generous bound)."""
    for _ in range(400):
        if any(request.done() for request in requests):
            return False
        # pg_stat_activity is read once per transaction unless the snapshot is dropped.
        await connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        waiting = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        if waiting == expected:
            return True
        await asyncio.sleep(0.05)
    return False
