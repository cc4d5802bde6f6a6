"""Token retention: expired refresh tokens and revoked access tokens are deleted, so those
tables stay the size of the live sessions. `python -m backoffice purge-tokens` runs it once;
`token_purge_lifespan` runs it every TOKEN_PURGE_INTERVAL_MINUTES inside the app.

A token is deleted only once it has expired: until then a rotated or revoked refresh token
must stay, since presenting it again is a replay that revokes its family (service.refresh).
"""

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backoffice.auth.repository import TokenRepository
from backoffice.core.config import Settings
from backoffice.core.errors import describe_error
from backoffice.core.periodic import database_job

# pg_try_advisory_xact_lock's key: one purger at a time across every process and node.
PURGE_LOCK_KEY: Final = 0x746F6B656E5F7075  # "token_pu"
# Rows per transaction: each batch commits on its own, so no transaction holds many row
# locks or runs near the statement time-out, however large the backlog.
PURGE_BATCH_SIZE: Final = 5_000

log = structlog.get_logger(__name__)

_DeleteBatch = Callable[[TokenRepository, int], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class PurgeResult:
    refresh_tokens: int
    revoked_access_tokens: int
    # False when another purger held the lock: it is doing (or finishing) the work.
    complete: bool


async def _purge_table(
    sessions: async_sessionmaker[AsyncSession], delete_batch: _DeleteBatch, batch_size: int
) -> tuple[int, bool]:
    """(rows deleted, whether all expired rows are gone), one transaction per batch."""
    deleted = 0
    while True:
        async with sessions.begin() as session:
            tokens = TokenRepository(session)
            if not await tokens.take_lock(PURGE_LOCK_KEY):
                return deleted, False
            batch = await delete_batch(tokens, batch_size)
        deleted += batch
        if batch < batch_size:
            return deleted, True


async def purge_expired_tokens(
    sessions: async_sessionmaker[AsyncSession], *, batch_size: int = PURGE_BATCH_SIZE
) -> PurgeResult:
    """Delete every expired refresh token and revoked access token, in batches of
    `batch_size` rows, unless another purger holds the lock (then stop, `complete` False)."""
    refresh_tokens, complete = await _purge_table(
        sessions, TokenRepository.delete_expired_refresh_tokens, batch_size
    )
    revoked = 0
    if complete:
        revoked, complete = await _purge_table(
            sessions, TokenRepository.delete_expired_revoked_tokens, batch_size
        )
    return PurgeResult(refresh_tokens, revoked, complete)


async def purge_once(sessions: async_sessionmaker[AsyncSession]) -> PurgeResult | None:
    """One run of the periodic job. A failure (the database down, a time-out) is logged by
    its class alone, no traceback and no message that could quote data, and the job tries
    again at the next interval: None."""
    try:
        result = await purge_expired_tokens(sessions)
    except Exception as exc:  # noqa: BLE001  # whatever failed, the app must keep serving
        log.warning("auth.token_purge_failed", error=describe_error(exc))
        return None
    if result.refresh_tokens or result.revoked_access_tokens or not result.complete:
        log.info(
            "auth.tokens_purged",
            refresh_tokens=result.refresh_tokens,
            revoked_access_tokens=result.revoked_access_tokens,
            complete=result.complete,
        )
    return result


def token_purge_lifespan(app: FastAPI) -> AbstractAsyncContextManager[None]:
    """The periodic purge while the app runs (entered inside the database's lifespan), unless
    TOKEN_PURGE_INTERVAL_MINUTES is 0; cancelled, and awaited, on shutdown."""
    settings: Settings = app.state.settings
    return database_job(app, "token-purge", settings.token_purge_interval_minutes, purge_once)
