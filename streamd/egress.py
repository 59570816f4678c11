"""Egress rules: which addresses streams may connect to (camera sources) and POST to (webhook sinks).

Cameras live on private networks, so private ranges are allowed by default; link-local addresses (the
cloud metadata service among them), "this host" and the daemon's own listening address are denied
unless the operator allows them. Names are resolved before the check, and webhooks connect only to the
addresses that passed it (`EgressResolver`), so a name cannot be re-pointed between check and connect.
Pure checks; `check_host` resolves with the loop's resolver, `check_host_blocking` in decoder threads.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from streamd.errors import InvalidRequestError
from streamd.settings import EgressConfig, ServerConfig

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "rtsp": 554,
    "rtsps": 322,
    "rtmp": 1935,
    "mqtt": 1883,
    "mqtts": 8883,
}


class EgressDeniedError(InvalidRequestError):
    code = "egress_denied"


class EgressPolicy:
    def __init__(self, config: EgressConfig, server: ServerConfig) -> None:
        self._allow = [ipaddress.ip_network(cidr, strict=False) for cidr in config.allow_cidrs]
        self._deny = [ipaddress.ip_network(cidr, strict=False) for cidr in config.deny_cidrs]
        self._own_port = server.port
        self._own_host = _address(server.host if server.host != "localhost" else "127.0.0.1")
        self._allow_self = config.allow_self

    def allows(self, address: Address, port: int | None) -> bool:
        if any(address in network for network in self._allow):
            return True
        if any(address in network for network in self._deny):
            return False
        return self._allow_self or not self._is_self(address, port)

    def _is_self(self, address: Address, port: int | None) -> bool:
        if port != self._own_port:
            return False
        if self._own_host is not None and not self._own_host.is_unspecified:
            return address == self._own_host
        return address.is_loopback or address.is_unspecified  # bound to every address

    def allows_url(self, url: str) -> bool:
        """False for a URL whose host is an IP literal the rules deny (names are the resolver's job)."""
        host, port = host_port(url)
        address = _address(host) if host is not None else None
        return address is None or self.allows(address, port)

    def check_addresses(self, where: str, host: str, addresses: Iterable[str], port: int | None) -> None:
        denied = [a for a in addresses if (ip := _address(a)) is not None and not self.allows(ip, port)]
        if denied:
            raise EgressDeniedError(
                f"{where}: {host} ({', '.join(sorted(set(denied)))}) is not allowed by the egress rules "
                "(egress.deny_cidrs; egress.allow_cidrs makes exceptions)"
            )

    async def check_url(self, where: str, url: str) -> None:
        """Refuse a URL whose host is, or resolves to, a denied address; a name that does not resolve
        now is checked again at each connection."""
        host, port = host_port(url)
        if host is None:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return
        self.check_addresses(where, host, (str(info[4][0]) for info in infos), port)

    def check_url_blocking(self, url: str) -> None:
        """The same, from a worker thread (a decoder, before FFmpeg opens the URL); a name that does not
        resolve is left to FFmpeg's own error."""
        host, port = host_port(url)
        if host is None:
            return
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return
        self.check_addresses("source", host, (str(info[4][0]) for info in infos), port)


class EgressResolver(AbstractResolver):
    """aiohttp resolver that keeps only allowed addresses, so a webhook connects to nothing else."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [
            r for r in results if (ip := _address(r["host"])) is not None and self._policy.allows(ip, port)
        ]
        if not allowed:
            raise OSError(f"{host} is not allowed by the egress rules")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def host_port(url: str) -> tuple[str | None, int | None]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None, None
    return parts.hostname, port or DEFAULT_PORTS.get(parts.scheme)


def _address(text: Any) -> Address | None:
    try:
        return ipaddress.ip_address(str(text).split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return None
