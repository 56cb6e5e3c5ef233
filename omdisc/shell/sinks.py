"""Where the map goes: the live openMosix /proc interface, or the alpha files that stand in for it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from omdisc.core.table import (
    Table,
    TableFormatError,
    decode_config,
    decode_mospe,
    decode_mospe_text,
    encode_config,
    encode_mospe,
    encode_mospe_text,
    node_ids,
)
from omdisc.shell.files import write_atomic

PROC_ADMIN = Path("/proc/hpc/admin")
MOSPE, CONFIG = "mospe", "config"
ALPHA_MOSPE, ALPHA_CONFIG, STATE = "om_mospe", "om_config", "state.json"


class SinkError(OSError):
    """The map could not be written: an OSError, so the loop handles it like any write error."""


class AlphaSink:
    """The seed's ALPHA mode: the same bytes as /proc would get, in files (default /run/omdiscd)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.description = f"alpha files in {directory}"

    def prepare(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"cannot create alpha directory {self.directory}: {e.strerror}") from None

    def last_map(self) -> frozenset[int] | None:
        """The map there now, from before (a last life's), for readers meanwhile: its node ids but
        this node's (read_map)."""
        return read_map(self.directory / ALPHA_CONFIG, self.directory / ALPHA_MOSPE, decode_mospe)

    def write(self, node_id: int, table: Table) -> None:
        # config first: a reader that sees the new mospe also sees the table that contains it
        write_atomic(self.directory / ALPHA_CONFIG, encode_config(table.entries))
        write_atomic(self.directory / ALPHA_MOSPE, encode_mospe(node_id))


class LiveSink:
    """openMosix's own interface. /proc files cannot be renamed into: each is written in one write()."""

    def __init__(self, admin: Path = PROC_ADMIN) -> None:
        self.admin = admin
        self.description = f"openMosix kernel ({admin})"

    def prepare(self) -> None:
        if not self.admin.is_dir():
            raise SinkError(f"kernel mode 'live' but {self.admin} does not exist (no openMosix kernel?)")
        for name in (CONFIG, MOSPE):  # said now, not as a write error at every map change
            if not os.access(self.admin / name, os.W_OK):
                raise SinkError(f"an openMosix kernel is here but {self.admin / name} cannot be written: live mode "
                                "runs as root (under systemd: the live-kernel.conf drop-in, see omdiscd(8)), "
                                "or set kernel: alpha")

    def _put(self, name: str, data: bytes) -> None:
        fd = os.open(self.admin / name, os.O_WRONLY)
        try:
            if os.write(fd, data) != len(data):
                raise SinkError(f"short write to {self.admin / name}")
        finally:
            os.close(fd)

    def last_map(self) -> frozenset[int] | None:
        """The kernel keeps its table while no daemon runs: the last life's, or none after a boot."""
        return read_map(self.admin / CONFIG, self.admin / MOSPE, decode_mospe_text)

    def write(self, node_id: int, table: Table) -> None:
        self._put(CONFIG, encode_config(table.entries))
        self._put(MOSPE, encode_mospe_text(node_id))


def read_map(config: Path, mospe: Path, decode_me: Callable[[bytes], int]) -> frozenset[int] | None:
    """A map in the kernel's format: the node ids of `config` but this node's (`mospe`: its id
    then, which may not be its id now); None when there is none (missing, or empty); no ids when
    it cannot be read, so the first map waits only for another node to be heard (Throttle)."""
    try:
        ids = node_ids(decode_config(config.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, TableFormatError):
        return frozenset()
    if not ids:
        return None
    try:
        return ids - {decode_me(mospe.read_bytes())}
    except (OSError, TableFormatError):
        return ids


def proc_hpc(admin: Path = PROC_ADMIN, mountinfo: Path = Path("/proc/self/mountinfo")) -> str:
    """What this process can tell of the openMosix interface: "present", "absent", or "hidden" when
    its /proc shows processes only (mounted subset=pid: systemd's ProcSubset=pid), where /proc/hpc
    is not seen even on an openMosix kernel and `kernel: auto` cannot find it."""
    if admin.is_dir():
        return "present"
    return "hidden" if "subset=pid" in _proc_options(mountinfo) else "absent"


def _proc_options(mountinfo: Path) -> list[str]:
    """The superblock options of the procfs on /proc (the last mounted there is the one seen)."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return []
    found: list[str] = []
    for line in lines:
        mine, _, fs = line.partition(" - ")
        if len(mine.split()) > 4 and mine.split()[4] == "/proc" and fs.startswith("proc "):
            found = fs.split()[-1].split(",")
    return found


def choose_sink(mode: str, alpha_dir: Path, admin: Path = PROC_ADMIN) -> AlphaSink | LiveSink:
    """`auto`: live when the openMosix kernel interface exists, alpha otherwise."""
    if mode == "live" or (mode == "auto" and admin.is_dir()):
        return LiveSink(admin)
    return AlphaSink(alpha_dir)

