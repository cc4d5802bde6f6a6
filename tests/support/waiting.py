"""Waiting for something another task or process does, within a bound."""

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], Awaitable[bool]], within_s: float, what: str) -> None:
    """Poll `condition` until it holds; fail the test, naming `what`, after `within_s`."""
    deadline = time.monotonic() + within_s
    while not await condition():
        assert time.monotonic() < deadline, f"{what} took over {within_s} s"
        await asyncio.sleep(0.01)
