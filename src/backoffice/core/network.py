"""Who the client is when proxies stand in between."""

from collections.abc import Iterable, Sequence
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

# Called on every request with the same few peers: parsing each once is enough.
_parse = lru_cache(maxsize=4096)(ip_address)


def forwarded_chain(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Every `X-Forwarded-For` line of a request, joined as one list (RFC 9110 section 5.3):
    a proxy may append its own line rather than extend the client's, and reading the first
    line alone would then believe the client."""
    lines = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
    return ", ".join(lines) if lines else None


def client_ip(
    peer: str | None,
    forwarded_for: str | None,
    trusted_proxies: Sequence[IPv4Network | IPv6Network],
) -> str | None:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the
    right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries further
    left were written by the client and prove nothing). When every hop is trusted, the
    left-most. None when an address on the way is not an IP address at all."""
    candidates = [peer or ""]
    if forwarded_for:
        candidates += [entry.strip() for entry in reversed(forwarded_for.split(","))]
    address: IPv4Address | IPv6Address | None = None
    for candidate in candidates:
        try:
            address = _parse(candidate)
        except ValueError:
            return None
        if not any(address in network for network in trusted_proxies):
            break
    return None if address is None else str(address)


def is_trusted_proxy(
    peer: str | None, trusted_proxies: Sequence[IPv4Network | IPv6Network]
) -> bool:
    """Whether the connection comes from one of TRUSTED_PROXIES (a load balancer of ours)."""
    if not peer or not trusted_proxies:
        return False
    try:
        address = _parse(peer)
    except ValueError:
        return False
    return any(address in network for network in trusted_proxies)
