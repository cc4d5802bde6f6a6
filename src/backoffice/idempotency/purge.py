"""Expired keys are deleted, so the table stays the size of a TTL's worth of writes.
`idempotency_purge_lifespan` runs the purge every IDEMPOTENCY_PURGE_INTERVAL_MINUTES inside
the app, one process at a time (an advisory lock), in batches that each commit on their own.
An expired key that is not purged yet is already free (service.claim takes it over)."""

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final

import structlog
from fastapi import FastAPI

from backoffice.core.config import Settings
from backoffice.core.errors import describe_error
from backoffice.core.periodic import database_job
from backoffice.idempotency.repository import IdempotencyRepository
from backoffice.idempotency.service import SessionMaker

# pg_try_advisory_xact_lock's key: one purger at a time across every process and node.
PURGE_LOCK_KEY: Final = 0x6964656D5F707572  # "idem_pur"
PURGE_BATCH_SIZE: Final = 5_000

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    deleted: int
    # False when another purger held the lock: it is doing (or finishing) the work.
    complete: bool


async def purge_expired_keys(
    sessions: SessionMaker, *, batch_size: int = PURGE_BATCH_SIZE
) -> PurgeResult:
    """Delete every expired key, `batch_size` rows per transaction, unless another purger
    holds the lock."""
    deleted = 0
    while True:
        async with sessions.begin() as session:
            keys = IdempotencyRepository(session)
            if not await keys.take_lock(PURGE_LOCK_KEY):
                return PurgeResult(deleted, complete=False)
            batch = await keys.delete_expired(batch_size)
        deleted += batch
        if batch < batch_size:
            return PurgeResult(deleted, complete=True)


async def purge_once(sessions: SessionMaker) -> PurgeResult | None:
    """One run of the periodic job; a failure is logged by its class alone and the job tries
    again at the next interval."""
    try:
        result = await purge_expired_keys(sessions)
    except Exception as exc:  # noqa: BLE001  # whatever failed, the app must keep serving
        log.warning("idempotency.purge_failed", error=describe_error(exc))
        return None
    if result.deleted or not result.complete:
        log.info("idempotency.keys_purged", deleted=result.deleted, complete=result.complete)
    return result


def idempotency_purge_lifespan(app: FastAPI) -> AbstractAsyncContextManager[None]:
    """The periodic purge while the app runs (inside the database's lifespan), unless
    IDEMPOTENCY_PURGE_INTERVAL_MINUTES is 0; cancelled, and awaited, on shutdown."""
    settings: Settings = app.state.settings
    return database_job(
        app, "idempotency-purge", settings.idempotency_purge_interval_minutes, purge_once
    )
