"""Login and password-change attempts per client, through the `limits` library: in process
memory by default, in Redis when RATE_LIMIT_STORAGE_URL is set (one limit shared by every
worker and host)."""

import math
import time
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network, ip_address

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from backoffice.core.config import Settings


@dataclass(frozen=True, slots=True)
class RateLimitState:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window frees a slot

    @property
    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_after)
        return headers


# An IPv6 subscriber is usually handed a whole /64: counting its addresses apart would give
# one client 2**64 budgets.
IPV6_CLIENT_PREFIX = 64


def client_key(address: str | None) -> str:
    """What a client is counted under: its IPv4 address, or the /64 network of its IPv6 one
    (an IPv4-mapped IPv6 address counts as the IPv4 address it carries)."""
    if address is None:
        return "unknown"
    try:
        parsed = ip_address(address)
    except ValueError:
        return "unknown"
    if isinstance(parsed, IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False))
    return str(parsed)


def _storage(url: str | None) -> Storage:
    if url is None:
        return MemoryStorage()
    storage = storage_from_string(url if url.startswith("async+") else f"async+{url}")
    if not isinstance(storage, Storage):
        raise TypeError(f"RATE_LIMIT_STORAGE_URL {url!r} does not name an async storage")
    return storage


class RateLimiter:
    def __init__(self, limit: str, storage_url: str | None, namespace: str) -> None:
        self.item: RateLimitItem = parse(limit)
        self.strategy = MovingWindowRateLimiter(_storage(storage_url))
        self.namespace = namespace

    @classmethod
    def for_login(cls, settings: Settings) -> "RateLimiter":
        return cls(settings.login_rate_limit, settings.rate_limit_storage_url, "login")

    @classmethod
    def for_password_change(cls, settings: Settings) -> "RateLimiter":
        return cls(settings.password_change_rate_limit, settings.rate_limit_storage_url, "password")

    async def hit(self, key: str) -> RateLimitState:
        allowed = await self.strategy.hit(self.item, self.namespace, key)
        stats = await self.strategy.get_window_stats(self.item, self.namespace, key)
        reset_after = max(1, math.ceil(stats.reset_time - time.time()))
        return RateLimitState(allowed, self.item.amount, max(0, stats.remaining), reset_after)
