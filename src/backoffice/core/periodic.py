"""Jobs each app process runs every so often while it serves (the slices' purges): a task
started in a lifespan, cancelled and awaited on shutdown."""

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backoffice.core.database import Database

# The first run waits a random part of this (or of the interval, if shorter): processes
# started together do not all reach for the job's lock at once.
FIRST_RUN_MAX_DELAY_S: Final = 60.0

type Run = Callable[[], Awaitable[object]]


async def _every(run: Run, interval_s: float) -> None:
    # Spreading the processes' start, not a secret: no need for a CSPRNG.
    await asyncio.sleep(random.uniform(0, min(interval_s, FIRST_RUN_MAX_DELAY_S)))  # noqa: S311
    while True:
        await run()
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def periodic_job(name: str, run: Run, interval_s: float) -> AsyncIterator[None]:
    """`run` every `interval_s` seconds while the context is open, as a task called `name`;
    no task at all when `interval_s` is 0 or less. `run` logs its own failures and returns:
    the next interval tries again."""
    if interval_s <= 0:
        yield
        return
    job = asyncio.create_task(_every(run, interval_s), name=name)
    try:
        yield
    finally:
        job.cancel()
        # Waits for the cancellation to land without raising it here: a CancelledError
        # out of this wait can only be the lifespan's own.
        await asyncio.wait([job])


def database_job(
    app: FastAPI,
    name: str,
    interval_minutes: float,
    run: Callable[[async_sessionmaker[AsyncSession]], Awaitable[object]],
) -> AbstractAsyncContextManager[None]:
    """`run` on the app's sessions every `interval_minutes` (0: never), for a lifespan entered
    inside the database's."""

    async def run_on_database() -> None:
        database: Database = app.state.database
        await run(database.sessions)

    return periodic_job(name, run_on_database, interval_minutes * 60)
