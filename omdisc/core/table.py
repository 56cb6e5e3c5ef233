"""The openMosix cluster table: setpe's range and alias lines, their binary and text forms. Pure."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from ipaddress import IPv4Address

from omdisc.core.nodeid import Collision, settle
from omdisc.core.protocol import MAX_NODE_ID, IPAddress
from omdisc.core.records import record

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from omdisc.core.nodeid import NodeLike

MAX_ENTRIES = 256  # setpe's limit on map lines

# One om_config / /proc/hpc/admin/config record: native int base, IPv4 in network order, native int
# count; count 0 marks an ALIAS line (see docs/kernel-interface.md).
_RECORD = struct.Struct("=i4si")
_MOSPE = struct.Struct("=i")


class TableFormatError(ValueError):
    pass


@record(frozen=True, slots=True)  # one per member in a large table: no __dict__ each
class Entry:
    """One line of the kernel's table: a node, or a range of consecutive ones, or an alias."""

    node_id: int
    ip: IPv4Address
    count: int = 1  # consecutive nodes: ids node_id.., addresses ip..
    alias: bool = False

    def text(self) -> str:
        return f"{self.node_id} {self.ip} {'ALIAS' if self.alias else self.count}"

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.node_id, "ip": str(self.ip)}
        if self.alias:
            out["alias"] = True
        else:
            out["count"] = self.count
        return out


@record(frozen=True)
class Table:
    """The kernel's table, and what it leaves out."""

    entries: tuple[Entry, ...]
    collisions: tuple[Collision, ...] = ()
    ipv6_only: tuple[IPAddress, ...] = ()  # nodes with no IPv4 address: not in the kernel table
    dropped: tuple[Entry, ...] = ()  # entries past MAX_ENTRIES


def _ipv4(addrs: tuple[IPAddress, ...]) -> list[IPv4Address]:
    return [a for a in addrs if isinstance(a, IPv4Address)]


def _ranges(nodes: list[tuple[int, IPv4Address]]) -> list[Entry]:
    """Compress consecutive ids on consecutive addresses into one line, as setpe maps do."""
    out: list[Entry] = []
    for node_id, ip in sorted(nodes):
        last = out[-1] if out else None
        if last and node_id == last.node_id + last.count and int(ip) == int(last.ip) + last.count:
            out[-1] = Entry(last.node_id, last.ip, last.count + 1)
        else:
            out.append(Entry(node_id, ip))
    return out


def build_table(nodes: Iterable[NodeLike]) -> Table:
    """The kernel's table from every known node, ourselves included. A node with no IPv4 address
    has no place in it (it is reported); a node without an id (0) neither."""
    nodes = list(nodes)
    ipv6_only = [n.addresses[0] for n in nodes if not _ipv4(n.addresses)]
    kept, collisions = settle(n for n in nodes if n.node_id and _ipv4(n.addresses))
    primaries: list[tuple[int, IPv4Address]] = []
    aliases: list[Entry] = []
    for node in kept:
        v4 = _ipv4(node.addresses)
        primaries.append((node.node_id, v4[0]))
        aliases.extend(Entry(node.node_id, ip, 0, alias=True) for ip in v4[1:])
    entries = _ranges(primaries) + sorted(aliases, key=lambda e: (e.node_id, int(e.ip)))
    return Table(
        tuple(entries[:MAX_ENTRIES]), tuple(collisions), tuple(ipv6_only), tuple(entries[MAX_ENTRIES:])
    )


def encode_config(entries: Iterable[Entry]) -> bytes:
    return b"".join(_RECORD.pack(e.node_id, e.ip.packed, 0 if e.alias else e.count) for e in entries)


def decode_config(data: bytes) -> list[Entry]:
    if len(data) % _RECORD.size:
        raise TableFormatError(f"size {len(data)} is not a multiple of {_RECORD.size}")
    entries = []
    for node_id, ip, count in _RECORD.iter_unpack(data):
        if node_id < 1 or count < 0:
            raise TableFormatError(f"bad record: id {node_id}, count {count}")
        entries.append(Entry(node_id, IPv4Address(ip), max(count, 1), alias=count == 0))
    return entries


def node_ids(entries: Iterable[Entry]) -> frozenset[int]:
    """The node ids a table names: range lines expanded, aliases left out. A table that names ids
    past MAX_NODE_ID is no openMosix table (text read as records, say): TableFormatError, before
    a range of millions is expanded."""
    nodes = [e for e in entries if not e.alias]
    if any(e.node_id + e.count - 1 > MAX_NODE_ID for e in nodes):
        raise TableFormatError(f"node ids past {MAX_NODE_ID}")
    return frozenset(e.node_id + i for e in nodes for i in range(e.count))


def encode_mospe(node_id: int) -> bytes:
    """Alpha mode's om_mospe: the seed's binary int."""
    return _MOSPE.pack(node_id)


def encode_mospe_text(node_id: int) -> bytes:
    """/proc/hpc/admin/mospe takes the number as decimal text: the openMosix init scripts run
    `echo 0 > /proc/hpc/admin/mospe`, the MOSIX tools write "%d\n"."""
    return f"{node_id}\n".encode()


def decode_mospe_text(data: bytes) -> int:
    text = data.decode("ascii", errors="replace").strip()
    if not text.isdigit():
        raise TableFormatError(f"expected a node number as text, got {text[:20]!r}")
    return int(text)


def decode_mospe(data: bytes) -> int:
    if len(data) != _MOSPE.size:
        raise TableFormatError(f"size {len(data)}, expected {_MOSPE.size}")
    return int(_MOSPE.unpack(data)[0])


def format_text(node_id: int, entries: Iterable[Entry]) -> str:
    """setpe's map text; the first line is a comment so the output is itself a valid map file."""
    lines = [f"# this is openMosix node #{node_id}" if node_id else "# this node is not in the map"]
    lines += [e.text() for e in entries]
    return "\n".join(lines) + "\n"
