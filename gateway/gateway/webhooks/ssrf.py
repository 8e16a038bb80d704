"""The SSRF guard: a webhook goes only to public addresses, unless `WEBHOOK_ALLOW_PRIVATE=true`.

The URL is checked when an endpoint is registered or changed, and the address again at every connection
(:class:`GuardedResolver`, used by the delivery client): DNS can change between registration and delivery,
and the address checked is the one connected to, so a name that resolves to a public address for the check
and to a private one a moment later cannot slip through. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["BlockedAddress", "GuardedResolver", "check_address", "check_url", "literal_address"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(OSError):
    """A webhook URL leads to an address it may not reach (or to none at all)."""


def _is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # `is_global` is false for loopback, private (RFC 1918, fc00::/7), link-local (169.254/16 with the cloud
    # metadata address, fe80::/10), shared (100.64/10), reserved and unspecified addresses.
    return address.is_global and not address.is_multicast


def check_address(host: str, address: str, allow_private: bool) -> None:
    if allow_private:
        return
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        raise BlockedAddress(f"{host} resolved to {address!r}, which is not an IP address") from None
    if not _is_public(parsed):
        raise BlockedAddress(f"{host} resolves to {address}, a loopback, private or link-local address")


def literal_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


async def check_url(url: str, allow_private: bool) -> str | None:
    """None when the URL may be registered, else the reason it may not."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "Not a valid URL."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "The URL must be http:// or https:// with a host."
    if parts.username or parts.password:
        return "The URL must not carry credentials."
    if parts.fragment:
        return "The URL must not have a fragment."
    if allow_private:
        return None
    host = parts.hostname
    try:
        literal = literal_address(host)
        if literal is not None:
            check_address(host, literal, allow_private)
            return None
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
        if not infos:
            return f"{host} does not resolve."
        for info in infos:
            check_address(host, str(info[4][0]), allow_private)
    except BlockedAddress as exc:
        return str(exc)
    except OSError:
        return f"{host} does not resolve."
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing the connection when any address of the name is not public."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._resolver = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            check_address(host, result["host"], self.allow_private)
        return results

    async def close(self) -> None:
        await self._resolver.close()
