"""A trigger for "the interfaces or their addresses changed": a netlink socket of our own on the
kernel's link and address groups, as wsdd does. It does not parse what changed: any message means
"look again", and the interface module answers what is there now."""

from __future__ import annotations

import errno
import socket

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR


class LinkMonitor:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self.sock.bind((0, _GROUPS))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def changed(self) -> bool:
        """Drain what the kernel said; True if it said anything (an overrun counts: we missed some)."""
        said = False
        while True:
            try:
                if not self.sock.recv(65536):
                    return said
            except (BlockingIOError, InterruptedError):
                return said
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
            said = True

    def close(self) -> None:
        self.sock.close()
