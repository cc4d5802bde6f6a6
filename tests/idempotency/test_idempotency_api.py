"""Idempotency-Key through the API: a repeat gets the first answer and changes nothing, a
misused key gets its problem, and the failure points between the claim, the route's COMMIT
and the stored answer never let a write run twice."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from backoffice.auth.models import User
from backoffice.core.config import Settings
from backoffice.idempotency import service
from backoffice.idempotency.errors import IdempotencyKeyInUseError
from backoffice.idempotency.purge import PURGE_LOCK_KEY, PurgeResult, purge_expired_keys
from tests.idempotency.support import (
    REPLAYED,
    adjust,
    adjustments,
    age_key,
    key_rows,
    keyed,
    same_answer,
)
from tests.support.api_keys import new_api_key, new_service_account
from tests.support.audit import changes_of
from tests.support.database import owner_rights
from tests.support.factories import CUSTOMERS, PRODUCTS, CreateProduct, product_payload
from tests.support.http import assert_problem, bearer
from tests.support.users import create_user, tokens_for


async def stock_changes(session: AsyncSession, product: dict[str, Any]) -> int:
    return sum(
        change.action == "update" for change in await changes_of(session, "product", product["id"])
    )


async def stock_of(client: AsyncClient, product: dict[str, Any]) -> int:
    quantity: int = (await client.get(f"{PRODUCTS}/{product['id']}")).json()["stock_quantity"]
    return quantity


# --- the first run and its replays ---------------------------------------------------------


async def test_repeated_create_returns_the_first_answer_and_creates_one_product(
    client: AsyncClient, session: AsyncSession
) -> None:
    payload = product_payload()
    first = await client.post(PRODUCTS, json=payload, headers=keyed("create-1"))
    repeat = await client.post(PRODUCTS, json=payload, headers=keyed("create-1"))

    assert first.status_code == 201, first.text
    assert first.headers["location"]
    assert first.headers["etag"]
    same_answer(first, repeat)
    assert len(await changes_of(session, "product", first.json()["id"])) == 1
    page = (await client.get(PRODUCTS, params={"q": payload["sku"]})).json()
    assert [item["sku"] for item in page["items"]] == [payload["sku"]]


async def test_repeated_stock_adjustment_moves_stock_once(
    client: AsyncClient, session: AsyncSession, create_product: CreateProduct
) -> None:
    product = await create_product(stock_quantity=5)
    first = await adjust(client, product, 3, "adjust-1")
    repeats = [await adjust(client, product, 3, "adjust-1") for _ in range(3)]

    assert first.status_code == 200, first.text
    for repeat in repeats:
        same_answer(first, repeat)
    assert await stock_of(client, product) == 8
    assert await stock_changes(session, product) == 1


async def test_repeated_patch_returns_the_first_answer(
    client: AsyncClient, session: AsyncSession
) -> None:
    customer = (
        await client.post(CUSTOMERS, json={"name": "Ada", "email": "ada@example.com"})
    ).json()
    url = f"{CUSTOMERS}/{customer['id']}"
    first = await client.patch(url, json={"name": "Ada L."}, headers=keyed("patch-1"))
    repeat = await client.patch(url, json={"name": "Ada L."}, headers=keyed("patch-1"))

    assert first.status_code == 200, first.text
    same_answer(first, repeat)
    assert len(await changes_of(session, "customer", customer["id"])) == 2  # insert, one update


async def test_a_final_4xx_is_stored_and_replayed(client: AsyncClient) -> None:
    url = f"{PRODUCTS}/2000000000/stock-adjustments"
    first = await client.post(url, json={"delta": 1}, headers=keyed("missing"))
    repeat = await client.post(url, json={"delta": 1}, headers=keyed("missing"))

    assert_problem(first, 404, "not-found")
    same_answer(first, repeat)


async def test_a_conflict_is_not_stored_so_the_retry_runs_again(
    client: AsyncClient, session: AsyncSession, create_product: CreateProduct
) -> None:
    """409 answers depend on the state (here: too little stock): the retry may succeed."""
    product = await create_product(stock_quantity=1)
    refused = await adjust(client, product, -3, "conflict")
    assert_problem(refused, 409, "conflict")
    await client.post(adjustments(product), json={"delta": 5})  # restocked, no key

    retried = await adjust(client, product, -3, "conflict")

    assert retried.status_code == 200, retried.text
    assert REPLAYED not in retried.headers
    assert await stock_of(client, product) == 3
    assert [row["state"] for row in await key_rows(session)] == ["completed"]


async def test_a_write_without_a_key_costs_no_statement_on_the_keys(
    client: AsyncClient, create_product: CreateProduct, statements: list[str]
) -> None:
    """The hot path: the middleware only looks for the header; with it, the claim and the
    stored answer are a statement each, and the applied mark one more in the route's own
    transaction."""
    product = await create_product()
    statements.clear()

    without = await client.post(adjustments(product), json={"delta": 1})
    unkeyed = len(statements)
    keyed_answer = await adjust(client, product, 1, "counted")

    assert without.status_code == keyed_answer.status_code == 200
    assert not [sql for sql in statements[:unkeyed] if "idempotency_keys" in sql]
    assert len([sql for sql in statements[unkeyed:] if "idempotency_keys" in sql]) == 3


async def test_a_keyed_request_authenticates_its_caller_once(
    client: AsyncClient, create_product: CreateProduct, statements: list[str]
) -> None:
    """The middleware must know the caller before the route runs; the route takes the
    principal the middleware found rather than verifying the token a second time (no
    principal cache here: every verification is a query of the users table)."""
    product = await create_product()

    def verifications() -> list[str]:
        return [sql for sql in statements if sql.startswith("SELECT users.")]

    statements.clear()
    await client.post(adjustments(product), json={"delta": 1})
    unkeyed = verifications()
    statements.clear()
    await adjust(client, product, 1, "once")

    assert len(unkeyed) == len(verifications()) == 1


# --- misused keys ----------------------------------------------------------------------------


async def test_same_key_with_a_different_body_returns_422_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, create_product: CreateProduct
) -> None:
    product = await create_product(stock_quantity=5)
    await adjust(client, product, 1, "reused")

    response = await adjust(client, product, 2, "reused")

    assert_problem(response, 422, "idempotency-key-reused")
    assert await stock_of(client, product) == 6
    assert await stock_changes(session, product) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", f"{PRODUCTS}?x=1"), ("PATCH", PRODUCTS + "/1"), ("POST", CUSTOMERS)],
)
async def test_same_key_on_another_method_path_or_query_returns_422(
    client: AsyncClient, method: str, path: str
) -> None:
    body = b'{"name": "x"}'
    headers = keyed("elsewhere") | {"content-type": "application/json"}
    await client.post(PRODUCTS, content=body, headers=headers)  # a 422: a final answer, stored

    response = await client.request(method, path, content=body, headers=headers)

    assert_problem(response, 422, "idempotency-key-reused")


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b'""',
        b"bare key with spaces",
        b'"unterminated',
        b'"a\x00b"',
        b'"caf\xc3\xa9"',
        b'"tab\there"',
        b'"' + b"k" * 256 + b'"',
        b'"key" trailing',
    ],
    ids=[
        "empty",
        "empty-string",
        "bare-with-spaces",
        "unterminated",
        "nul",
        "non-ascii",
        "control",
        "too-long",
        "trailing",
    ],
)
async def test_a_malformed_key_returns_400_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, create_product: CreateProduct, value: bytes
) -> None:
    product = await create_product(stock_quantity=5)

    response = await client.post(
        adjustments(product), json={"delta": 1}, headers=[(b"idempotency-key", value)]
    )

    assert_problem(response, 400, "idempotency-key-malformed")
    assert await stock_of(client, product) == 5
    assert await key_rows(session) == []


async def test_two_keys_in_one_request_return_400(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    product = await create_product()
    headers = [(b"idempotency-key", b'"a"'), (b"idempotency-key", b'"b"')]

    response = await client.post(adjustments(product), json={"delta": 1}, headers=headers)

    assert_problem(response, 400, "idempotency-key-malformed")


async def test_the_longest_key_and_escapes_are_accepted(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    product = await create_product()
    for value in (b'"' + b"k" * 255 + b'"', b'"say \\"hi\\" \\\\ "'):
        first = await client.post(
            adjustments(product), json={"delta": 1}, headers=[(b"idempotency-key", value)]
        )
        repeat = await client.post(
            adjustments(product), json={"delta": 1}, headers=[(b"idempotency-key", value)]
        )
        assert first.status_code == 200, first.text
        same_answer(first, repeat)


async def test_a_bare_key_is_the_same_key_as_its_quoted_form(
    client: AsyncClient, create_product: CreateProduct
) -> None:
    product = await create_product(stock_quantity=5)
    bare = b"8e03978e-40d5-43e8-bc93-6894a57f9324"

    first = await client.post(
        adjustments(product), json={"delta": 1}, headers=[(b"idempotency-key", bare)]
    )
    repeat = await client.post(
        adjustments(product), json={"delta": 1}, headers=[(b"idempotency-key", b'"' + bare + b'"')]
    )

    assert first.status_code == 200, first.text
    same_answer(first, repeat)
    assert await stock_of(client, product) == 6


# --- who may use a key -------------------------------------------------------------------------


async def test_keys_are_scoped_to_the_caller(
    client: AsyncClient,
    anonymous_client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    create_product: CreateProduct,
) -> None:
    product = await create_product(stock_quantity=5)
    other = await create_user(session, email="other@example.com", is_superuser=True)
    other_token = (await tokens_for(session, settings, other)).access_token
    mine = await adjust(client, product, 1, "shared")

    theirs = await anonymous_client.post(
        adjustments(product), json={"delta": 1}, headers=keyed("shared") | bearer(other_token)
    )

    assert mine.status_code == theirs.status_code == 200
    assert REPLAYED not in theirs.headers
    assert theirs.json()["stock_quantity"] == 7
    assert await stock_changes(session, product) == 2


async def test_each_api_key_is_a_caller_of_its_own(
    client: AsyncClient, anonymous_client: AsyncClient, create_product: CreateProduct
) -> None:
    """Two integrations on one service account must not replay each other's answers."""
    product = await create_product(stock_quantity=5)
    account = await new_service_account(client)
    keys = [
        (await new_api_key(client, account["id"], ["products:update"]))["api_key"] for _ in range(2)
    ]
    headers = [bearer(key) | {"Idempotency-Key": '"shared-key"'} for key in keys]

    first, other = [
        await anonymous_client.post(adjustments(product), json={"delta": 1}, headers=header)
        for header in headers
    ]
    repeat = await anonymous_client.post(
        adjustments(product), json={"delta": 1}, headers=headers[0]
    )

    assert first.status_code == other.status_code == 200, (first.text, other.text)
    assert service.REPLAYED_HEADER not in other.headers
    same_answer(first, repeat)
    assert await stock_of(client, product) == 7


async def test_without_credentials_the_key_is_ignored_and_the_route_answers_401(
    anonymous_client: AsyncClient, session: AsyncSession
) -> None:
    for headers in (keyed("anonymous"), keyed("anonymous") | bearer("not-a-token")):
        response = await anonymous_client.post(PRODUCTS, json=product_payload(), headers=headers)
        assert_problem(response, 401)
    assert await key_rows(session) == []


async def test_a_caller_without_the_permission_gets_403_and_the_key_stays_free(
    anonymous_client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    superuser: User,
    create_product: CreateProduct,
) -> None:
    product = await create_product(stock_quantity=5)
    viewer = await create_user(session, roles=["viewer"])
    token = (await tokens_for(session, settings, viewer)).access_token

    response = await anonymous_client.post(
        adjustments(product), json={"delta": 1}, headers=keyed("denied") | bearer(token)
    )

    assert_problem(response, 403, "forbidden")
    assert await key_rows(session) == []


async def test_the_key_is_ignored_where_it_does_not_apply(
    client: AsyncClient, session: AsyncSession, create_product: CreateProduct
) -> None:
    """Reads and the login are left alone: the draft lets a server ignore the header."""
    product = await create_product()
    for _ in range(2):
        response = await client.get(f"{PRODUCTS}/{product['id']}", headers=keyed("read"))
        assert response.status_code == 200
        assert REPLAYED not in response.headers
    assert await key_rows(session) == []


@pytest.mark.parametrize("path", [f"{PRODUCTS}/import", f"{PRODUCTS}/export"])
async def test_a_refused_method_answers_405_whatever_key_it_carries(
    client: AsyncClient, session: AsyncSession, path: str
) -> None:
    """PATCH on `/products/import` is answered by its own route (405), declared before
    `/products/{id}`, which takes keys: the middleware follows the router's choice, so a key
    used before for another request does not turn the 405 into a 422."""
    await client.post(PRODUCTS, json=product_payload(), headers=keyed("reused"))

    response = await client.patch(path, json={"name": "x"}, headers=keyed("reused"))

    assert_problem(response, 405)
    assert [row["key"] for row in await key_rows(session)] == ["reused"]


# --- failure points: the claim, the route's COMMIT, the stored answer -----------------------


# A failure the database injects at the one step after the route's COMMIT: storing the answer.
_REFUSE_ANSWERS = (
    """CREATE FUNCTION pg_temp.refuse_answer() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'answer refused by the test'; END $$""",
    """CREATE TRIGGER refuse_answer BEFORE UPDATE ON idempotency_keys FOR EACH ROW
    WHEN (NEW.state = 'completed') EXECUTE FUNCTION pg_temp.refuse_answer()""",
)


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A stock adjustment (+1 on a product of 5) whose first attempt claimed its key as the
    middleware does, then stopped: what happens next is each test's."""

    client: AsyncClient
    product: dict[str, Any]
    key: str
    held: service.Claim

    async def retry(self) -> Response:
        return await self.client.post(
            adjustments(self.product), content=_BODY, headers=keyed(self.key) | _JSON
        )


_BODY = b'{"delta":1}'
_JSON = {"content-type": "application/json"}
type Interrupt = Callable[[str], Awaitable[Interrupted]]


@pytest.fixture
def interrupt(
    client: AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    superuser: User,
    create_product: CreateProduct,
) -> Interrupt:
    async def start(key: str) -> Interrupted:
        product = await create_product(stock_quantity=5)
        held = await service.claim(
            sessionmaker,
            service.KeyPolicy.of(settings),
            f"user:{superuser.id}",
            key,
            service.fingerprint(
                settings.secret_key.get_secret_value().encode(),
                "POST",
                adjustments(product),
                b"",
                _BODY,
            ),
        )
        assert isinstance(held, service.Claim)
        return Interrupted(client, product, key, held)

    return start


async def test_a_repeat_while_the_first_runs_returns_409_in_use(
    client: AsyncClient, interrupt: Interrupt
) -> None:
    running = await interrupt("busy")

    response = await running.retry()

    assert_problem(response, 409, "idempotency-key-in-use")
    assert response.headers["retry-after"] == "1"
    assert await stock_of(client, running.product) == 5


async def test_a_request_that_died_before_its_commit_runs_again_once_its_lease_is_over(
    client: AsyncClient, session: AsyncSession, interrupt: Interrupt
) -> None:
    died = await interrupt("died")
    await age_key(session, "died", lease=True)

    first = await died.retry()
    repeat = await died.retry()

    assert first.status_code == 200, first.text
    same_answer(first, repeat)
    assert await stock_of(client, died.product) == 6
    assert await stock_changes(session, died.product) == 1


async def test_a_request_whose_answer_was_lost_after_its_commit_never_runs_again(
    client: AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    interrupt: Interrupt,
) -> None:
    lost = await interrupt("lost")
    # The route's transaction, committed; then the process died before storing the answer.
    async with sessionmaker() as route_session:
        await lost.held.mark_applied(route_session)
        await route_session.commit()

    while_storing = await lost.retry()
    await age_key(session, "lost", lease=True)
    after_the_lease = await lost.retry()

    assert_problem(while_storing, 409, "idempotency-key-in-use")
    assert_problem(after_the_lease, 409, "idempotent-answer-lost")
    assert await stock_of(client, lost.product) == 5
    assert [row["state"] for row in await key_rows(session)] == ["applied"]


async def test_an_answer_that_could_not_be_stored_after_the_commit_never_runs_again(
    client: AsyncClient,
    connection: AsyncConnection,
    session: AsyncSession,
    create_product: CreateProduct,
) -> None:
    """The route committed and the answer could not be stored (here the database refuses
    it; a crash or an outage at that moment is the same): the client still gets the route's
    answer, and a retry never runs the request a second time. This holds because the key is
    marked applied in the route's own COMMIT."""
    product = await create_product(stock_quantity=5)
    async with owner_rights(connection):  # in the test's transaction: rolled back with it
        for statement in _REFUSE_ANSWERS:
            await connection.execute(text(statement))

    first = await adjust(client, product, 1, "unstored")
    while_the_lease_runs = await adjust(client, product, 1, "unstored")
    await age_key(session, "unstored", lease=True)
    after_the_lease = await adjust(client, product, 1, "unstored")

    assert first.status_code == 200, first.text
    assert_problem(while_the_lease_runs, 409, "idempotency-key-in-use")
    assert_problem(after_the_lease, 409, "idempotent-answer-lost")
    assert await stock_of(client, product) == 6
    assert await stock_changes(session, product) == 1


async def test_an_attempt_that_lost_its_claim_cannot_commit(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    interrupt: Interrupt,
) -> None:
    """A request slower than its lease: a retry took the key over and ran; the slow one's
    COMMIT must not apply the same request a second time."""
    slow = await interrupt("slow")
    await age_key(session, "slow", lease=True)
    retry = await slow.retry()
    assert retry.status_code == 200, retry.text

    async with sessionmaker() as route_session:
        with pytest.raises(IdempotencyKeyInUseError):
            await slow.held.mark_applied(route_session)


# --- expiry and purge --------------------------------------------------------------------------


async def test_an_expired_key_runs_anew(
    client: AsyncClient, session: AsyncSession, create_product: CreateProduct
) -> None:
    product = await create_product(stock_quantity=5)
    await adjust(client, product, 1, "old")
    await age_key(session, "old", life=True)

    again = await adjust(client, product, 1, "old")

    assert again.status_code == 200
    assert REPLAYED not in again.headers
    assert again.json()["stock_quantity"] == 7


async def test_the_purge_deletes_expired_keys_only(
    client: AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    create_product: CreateProduct,
) -> None:
    product = await create_product(stock_quantity=5)
    for key in ("gone-1", "gone-2", "gone-3", "kept"):
        await adjust(client, product, 1, key)
    for key in ("gone-1", "gone-2", "gone-3"):
        await age_key(session, key, life=True)

    result = await purge_expired_keys(sessionmaker, batch_size=2)

    assert (result.deleted, result.complete) == (3, True)
    assert [row["key"] for row in await key_rows(session)] == ["kept"]
    kept = await adjust(client, product, 1, "kept")
    assert kept.headers[REPLAYED] == "true"


async def test_a_purge_leaves_the_work_to_another_purger_holding_the_lock(
    client: AsyncClient,
    engine: AsyncEngine,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    create_product: CreateProduct,
) -> None:
    product = await create_product()
    await adjust(client, product, 1, "expired")
    await age_key(session, "expired", life=True)

    async with engine.begin() as other_node:
        await other_node.execute(select(func.pg_advisory_xact_lock(PURGE_LOCK_KEY)))
        result = await asyncio.wait_for(purge_expired_keys(sessionmaker), 10)

    assert result == PurgeResult(deleted=0, complete=False)
    assert [row["key"] for row in await key_rows(session)] == ["expired"]
