"""Every way to present a bad access token ends in the same 401, WWW-Authenticate: Bearer."""

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from httpx import AsyncClient
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import User
from backoffice.auth.tokens import create_access_token
from backoffice.core.config import Settings
from tests.support.http import assert_problem, bearer
from tests.support.users import ME, REFRESH, TEST_PASSWORD, tokens_for


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def valid_claims(session: AsyncSession, settings: Settings, user: User) -> dict[str, Any]:
    """The claims of a real, live session's access token, to tamper with."""
    pair = await tokens_for(session, settings, user)
    claims: dict[str, Any] = jwt.decode(pair.access_token, options={"verify_signature": False})
    return claims


def sign(settings: Settings, claims: dict[str, Any], **changes: Any) -> str:
    return jwt.encode(claims | changes, settings.secret_key.get_secret_value(), algorithm="HS256")


async def assert_rejected(client: AsyncClient, token: str) -> None:
    response = await client.get(ME, headers=bearer(token))
    assert_problem(response, 401, "invalid-token")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_the_untampered_token_is_accepted(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings, member: User
) -> None:
    """The control: the attacks below fail because of what they change, not otherwise."""
    claims = await valid_claims(session, settings, member)

    response = await anonymous_client.get(ME, headers=bearer(sign(settings, claims)))

    assert response.status_code == 200


def _flip_signature(token: str) -> str:
    head, _, signature = token.rpartition(".")
    return f"{head}.{signature[::-1]}"


def _now() -> int:
    return int(datetime.now(UTC).timestamp())


TAMPERINGS: dict[str, Callable[[Settings, dict[str, Any]], str]] = {
    "alg none": lambda _, c: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(c)}.",
    "alg none with signature": lambda s, c: (
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(c)}." + sign(s, c).split(".")[2]
    ),
    "HS512 instead of HS256": lambda s, c: jwt.encode(
        c, s.secret_key.get_secret_value() * 2, algorithm="HS512"
    ),
    "bad signature": lambda s, c: (
        sign(s, c)[:-4] + ("AAAA" if not sign(s, c).endswith("AAAA") else "BBBB")
    ),
    "other secret": lambda _, c: jwt.encode(
        c, "another-secret-of-32-bytes-or-more!!", algorithm="HS256"
    ),
    "expired": lambda s, c: sign(s, c, exp=_now() - 1, iat=_now() - 901, nbf=_now() - 901),
    "not yet valid": lambda s, c: sign(s, c, nbf=_now() + 3600),
    "wrong audience": lambda s, c: sign(s, c, aud="someone-else"),
    "wrong issuer": lambda s, c: sign(s, c, iss="https://evil.example"),
    "refresh typ": lambda s, c: sign(s, c, typ="refresh"),
    "no typ": lambda s, c: sign(s, {k: v for k, v in c.items() if k != "typ"}),
    "no exp": lambda s, c: sign(s, {k: v for k, v in c.items() if k != "exp"}),
    "no jti": lambda s, c: sign(s, {k: v for k, v in c.items() if k != "jti"}),
    "stale token version": lambda s, c: sign(s, c, ver=c["ver"] - 1),
    "unknown session": lambda s, c: sign(s, c, sid="00000000-0000-0000-0000-000000000000"),
    "someone else's sub": lambda s, c: sign(s, c, sub="999999"),
    "non-numeric sub": lambda s, c: sign(s, c, sub="admin"),
    "garbage": lambda _, __: "not.a.jwt",
}


@pytest.mark.parametrize("attack", list(TAMPERINGS))
async def test_tampered_token_is_rejected(
    anonymous_client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    member: User,
    attack: str,
) -> None:
    claims = await valid_claims(session, settings, member)

    await assert_rejected(anonymous_client, TAMPERINGS[attack](settings, claims))


async def test_rs256_token_signed_with_an_attacker_key_is_rejected(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings, member: User
) -> None:
    """HS/RS confusion: an RS256 token whose key the attacker controls, and an HS256 token
    keyed with a public key, both fail because only HS256 with our secret is accepted."""
    claims = await valid_claims(session, settings, member)
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    await assert_rejected(anonymous_client, jwt.encode(claims, private_key, algorithm="RS256"))
    forged = jwt.api_jws.PyJWS(algorithms=["HS256"])  # bypasses PyJWT's own PEM-as-HMAC guard
    forged._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[method-assign]
    header_and_payload = forged.encode(json.dumps(claims).encode(), public_pem, algorithm="HS256")
    await assert_rejected(anonymous_client, header_and_payload)


async def test_a_refresh_token_is_not_an_access_token(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings, member: User
) -> None:
    pair = await tokens_for(session, settings, member)

    await assert_rejected(anonymous_client, pair.refresh_token)


async def test_an_access_token_is_not_a_refresh_token(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings, member: User
) -> None:
    pair = await tokens_for(session, settings, member)

    response = await anonymous_client.post(REFRESH, json={"refresh_token": pair.access_token})

    assert_problem(response, 401, "invalid-refresh-token")


@pytest.mark.parametrize("header", ["Bearer", "Basic dXNlcjpwYXNz", "Token abc", "bearer"])
async def test_malformed_authorization_header_is_rejected(
    anonymous_client: AsyncClient, header: str
) -> None:
    response = await anonymous_client.get(ME, headers={"Authorization": header})

    assert_problem(response, 401)


async def test_token_of_a_deleted_user_is_rejected(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings, member: User
) -> None:
    pair = await tokens_for(session, settings, member)
    await session.execute(delete(User).where(User.id == member.id))  # type: ignore[arg-type]
    await session.commit()

    await assert_rejected(anonymous_client, pair.access_token)


async def test_token_of_a_deactivated_user_is_rejected(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings, member: User
) -> None:
    pair = await tokens_for(session, settings, member)
    await session.execute(update(User).where(User.id == member.id).values(is_active=False))  # type: ignore[arg-type]
    await session.commit()

    await assert_rejected(anonymous_client, pair.access_token)


async def test_token_issued_before_a_password_change_is_rejected(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings, member: User
) -> None:
    old = await tokens_for(session, settings, member)
    changed = await anonymous_client.put(
        f"{ME}/password",
        json={
            "current_password": TEST_PASSWORD,
            "new_password": "a brand new passphrase",
        },
        headers=bearer(old.access_token),
    )
    assert changed.status_code == 200

    await assert_rejected(anonymous_client, old.access_token)
    assert (
        await anonymous_client.get(ME, headers=bearer(changed.json()["access_token"]))
    ).status_code == 200


async def test_revoked_jti_is_rejected_even_if_the_session_lives_on(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings, member: User
) -> None:
    """Logout records the jti: a copy of that exact token stays dead."""
    claims = await valid_claims(session, settings, member)
    token = sign(settings, claims)
    from backoffice.auth.repository import TokenRepository

    await TokenRepository(session).revoke_access_token(
        claims["jti"], member.id or 0, datetime.now(UTC) + timedelta(minutes=15)
    )
    await session.commit()

    await assert_rejected(anonymous_client, token)


async def test_a_token_carrying_another_users_live_session_is_rejected(
    anonymous_client: AsyncClient, session: AsyncSession, settings: Settings, member: User
) -> None:
    """A session id proves a login of the token's own user, not merely some live login."""
    from tests.support.users import create_user

    other = await create_user(session, email="other-session@example.com")
    other_claims = await valid_claims(session, settings, other)
    own_claims = await valid_claims(session, settings, member)
    assert member.id is not None
    borrowed = create_access_token(
        settings,
        user_id=member.id,
        token_version=own_claims["ver"],
        session_id=uuid.UUID(other_claims["sid"]),
    )
    assert (await anonymous_client.get(ME, headers=bearer(sign(settings, other_claims)))).is_success

    await assert_rejected(anonymous_client, borrowed.token)
