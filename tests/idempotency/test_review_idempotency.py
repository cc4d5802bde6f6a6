"""Review findings on Idempotency-Key: a replayed answer is still a request of its caller,
audited under it and counted against its key's rate limit."""

import hashlib
import json
from collections.abc import AsyncIterator

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.audit.access import AccessLogWriter
from backoffice.audit.models import AccessLog
from backoffice.auth.api_keys import install_api_keys
from backoffice.core.config import Settings
from tests.support.api_keys import service_key
from tests.support.factories import PRODUCTS, USERS, product_payload, user_payload
from tests.support.http import api_client, assert_problem


async def test_a_replayed_request_is_audited_under_its_caller_and_key(
    app: FastAPI, client: AsyncClient, session: AsyncSession, writer: AccessLogWriter
) -> None:
    key = await service_key(client, ["products:create"])
    payload = product_payload()

    async with api_client(app, str(key["api_key"])) as machine:
        first = await machine.post(PRODUCTS, json=payload, headers={"Idempotency-Key": "k1"})
        replay = await machine.post(PRODUCTS, json=payload, headers={"Idempotency-Key": "k1"})
    await writer.flush()

    assert first.status_code == replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    result = await session.execute(
        select(AccessLog).where(col(AccessLog.request_id) == replay.headers["x-request-id"])
    )
    access = result.scalars().one()
    assert (access.user_id, access.api_key_id) == (key["service_account_id"], key["id"])


async def test_replays_count_against_the_keys_rate_limit(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    install_api_keys(app, settings.model_copy(update={"api_key_rate_limit": "2/minute"}))
    key = await service_key(client, ["products:create"])
    payload = product_payload()

    async with api_client(app, str(key["api_key"])) as machine:
        answers = [
            await machine.post(PRODUCTS, json=payload, headers={"Idempotency-Key": "k2"})
            for _ in range(3)
        ]

    assert [answer.status_code for answer in answers[:2]] == [201, 201]
    assert_problem(answers[2], 429, "rate-limited")


async def test_an_oversized_chunked_body_with_a_key_is_a_413(
    client: AsyncClient, settings: Settings
) -> None:
    chunk = b"x" * 65536
    count = settings.max_request_body_bytes // len(chunk) + 2

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: streamed
        for _ in range(count):
            yield chunk

    response = await client.post(
        PRODUCTS,
        content=chunks(),
        headers={"Idempotency-Key": "big", "Content-Type": "application/json"},
    )

    assert_problem(response, 413)


async def test_a_keyed_body_with_a_password_leaves_no_plain_hash_of_it(
    client: AsyncClient, session: AsyncSession
) -> None:
    """A new user's body holds a password: an unsalted SHA-256 of it, next to the email
    and name the users table gives, is a guess away from the password, bypassing argon2."""
    body = json.dumps(user_payload()).encode()

    created = await client.post(
        USERS,
        content=body,
        headers={"Idempotency-Key": "new-user", "Content-Type": "application/json"},
    )

    assert created.status_code == 201, created.text
    stored = await session.scalar(text("SELECT fingerprint FROM idempotency_keys"))
    digest = hashlib.sha256()
    for part in (b"POST", USERS.encode(), b"", body):  # what anyone can recompute
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    assert stored is not None
    assert bytes(stored) != digest.digest()
