"""Network interfaces and their addresses. The only module that imports netifaces (unmaintained
upstream since 2021): replacing it means rewriting this file alone."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address, ip_interface

import netifaces


class InterfaceError(RuntimeError):
    pass


def index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise InterfaceError(f"interface {name!r} does not exist") from None


def index_or_none(name: str) -> int | None:
    """The interface's index now; None if it does not exist (it may come back, with another)."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def ipv4_addresses(name: str) -> list[IPv4Address]:
    try:
        entries = netifaces.ifaddresses(name).get(netifaces.AF_INET, [])
    except ValueError:
        raise InterfaceError(f"interface {name!r} does not exist") from None
    return [IPv4Address(e["addr"]) for e in entries if "addr" in e]


def ipv6_addresses(name: str) -> list[IPv6Address]:
    """Global and site addresses; link-local ones mean nothing off the link."""
    try:
        entries = netifaces.ifaddresses(name).get(netifaces.AF_INET6, [])
    except ValueError:
        raise InterfaceError(f"interface {name!r} does not exist") from None
    out = []
    for e in entries:
        addr = ip_address(e.get("addr", "").split("%")[0] or "::")
        if isinstance(addr, IPv6Address) and not (addr.is_link_local or addr.is_unspecified):
            out.append(addr)
    return out


def _prefix_length(netmask: str, bits: int) -> int:
    """netifaces says an IPv4 mask as 255.255.255.0 and an IPv6 one as ffff:ffff::/32."""
    if "/" in netmask:
        return int(netmask.rsplit("/", 1)[1])
    try:
        return bin(int(ip_address(netmask))).count("1")
    except ValueError:
        return bits  # no mask: the address alone


def networks(name: str) -> list[IPv4Interface | IPv6Interface]:
    """Every address of the interface with its prefix, both families, link-local ones too (the core
    tells which prefixes say what is on the link); none when the interface is gone."""
    try:
        families = netifaces.ifaddresses(name)
    except ValueError:
        return []
    out: list[IPv4Interface | IPv6Interface] = []
    for family, bits in ((netifaces.AF_INET, 32), (netifaces.AF_INET6, 128)):
        for e in families.get(family, []):
            addr = e.get("addr", "").split("%")[0]
            if addr:
                out.append(ip_interface(f"{addr}/{_prefix_length(e.get('netmask', ''), bits)}"))
    return out


def _default_route_device(route_table: str = "/proc/self/net/route") -> str | None:
    """netifaces only reports default routes that have a gateway; a device route
    (`ip route add default dev ppp0`) is a default route too."""
    try:
        with open(route_table) as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return None
    defaults = [r for r in rows if len(r) > 7 and r[1] == "00000000" and r[7] == "00000000"]
    return min(defaults, key=lambda r: int(r[6]))[0] if defaults else None


def default_interface() -> str:
    """The interface of the IPv4 default route."""
    default = netifaces.gateways().get("default", {}).get(netifaces.AF_INET)
    if default:
        return str(default[1])
    device = _default_route_device()
    if device is None:
        raise InterfaceError(
            "Unable to determine address of default interface: there is no default route; "
            "an interface must be specified (-i or 'interfaces' in the config)"
        )
    return device


def check_exist(names: tuple[str, ...]) -> None:
    known = set(netifaces.interfaces())
    for name in names:
        if name not in known:
            raise InterfaceError(f"interface {name!r} does not exist (have: {', '.join(sorted(known))})")
