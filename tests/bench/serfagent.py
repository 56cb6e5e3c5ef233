"""One HashiCorp serf agent (Debian's `serf`) in a lab namespace, for tests/bench/serf.py, and the
two ways its member list is read without asking it (polling its RPC would load the agents measured):

- its log: serf logs `serf: EventMemberJoin: NAME ADDR` and `serf: EventMemberFailed: NAME ADDR`
  (INFO) the moment its member list changes; a thread here stamps each line as it arrives;
- its event handler, stamped when it runs: what a user's script sees. The agent coalesces member
  events before it runs handlers (CoalescePeriod 3 s, QuiescentPeriod 1 s, fixed in serf's
  agent), so a handler runs about a second after the member list changed.

Its failure detection is serf's default (the LAN profile, memberlist's DefaultLANConfig; nothing
here changes it): a probe a second, 0.5 s timeout, 3 indirect probes; a suspect is failed after
4 x log10(N) probe intervals once 2 others confirm it, after up to 6 times that without. A failed
member stays in `serf members`, marked failed, until the reaper (every 15 s) erases it after the
reconnect timeout, 24 h: "out of the member list" is, for serf, "failed in it" (`serf members
-status alive` leaves it out), which is when it logs EventMemberFailed.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.lab.netlab import Node

ON_EVENT = """#!/bin/sh
# serf member events: one line per member on stdin ("name address role tags"), stamped on arrival
now=$(date +%s.%N)
while read -r name rest; do echo "$now $SERF_EVENT $name" >> "$0.log"; done
"""
EVENT = re.compile(r"serf: EventMember(\w+): (\S+)")
RUNNING = "Serf agent running"


@dataclass
class SerfLog:
    """What the agent's log said, each line stamped (time.monotonic) as it arrived here."""

    joined: dict[str, float] = field(default_factory=dict)  # first EventMemberJoin of each member
    failed: dict[str, list[float]] = field(default_factory=dict)  # every EventMemberFailed of each
    running: threading.Event = field(default_factory=threading.Event)
    tail: list[str] = field(default_factory=list)  # the last lines, for an error message

    def read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            now = time.monotonic()
            line = raw.decode(errors="replace").rstrip()
            self.tail = [*self.tail[-19:], line]
            if RUNNING in line:
                self.running.set()
            if m := EVENT.search(line):
                kind, name = m.groups()
                if kind == "Join":
                    self.joined.setdefault(name, now)
                elif kind == "Failed":
                    self.failed.setdefault(name, []).append(now)


@dataclass
class SerfAgent:
    """One serf agent: its process, its log as read so far, and its event handler's log."""

    node: Node
    proc: subprocess.Popen[bytes]
    log: SerfLog
    handled: Path  # the handler's lines: "WALLCLOCK EVENT NAME"

    def members(self) -> int:
        """Members in its list, itself included (none has failed while this is asked)."""
        return len(self.log.joined)

    def joined_at(self, name: str) -> float | None:
        return self.log.joined.get(name)

    def failed_at(self, name: str, since: float) -> float | None:
        """When its list first had `name` failed, at or after `since` (time.monotonic)."""
        return next((t for t in self.log.failed.get(name, []) if t >= since), None)

    def handler_at(self, event: str, name: str, since: float = 0.0) -> float | None:
        """When its handler first ran for `event` of `name`, at or after `since` (wall clock)."""
        for line in self.handled.read_text().splitlines():
            stamp, kind, who = line.split(" ", 2)
            if kind == event and who == name and float(stamp) >= since:
                return float(stamp)
        return None


def finding(seed: str | None) -> list[str]:
    """How an agent finds the others: mDNS (-discover), or the address of one that runs (-join)."""
    return ["-discover=omdbench"] if seed is None else [f"-join={seed}"]


def start(node: Node, tmp: Path, found: list[str]) -> SerfAgent:
    """`serf agent` in the node's namespace with its defaults (LAN profile), finding the others as
    `found` says (finding(); nothing for the first of a -join cluster)."""
    handler = tmp / f"{node.name}-events"
    handler.write_text(ON_EVENT)
    handler.chmod(0o755)
    handled = Path(f"{handler}.log")
    handled.write_text("")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", node.ns, "serf", "agent", f"-node={node.name}", "-iface=eth0", *found,
         "-rpc-addr=127.0.0.1:7373", f"-event-handler={handler}", "-log-level=info"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = SerfLog()
    assert proc.stdout is not None
    threading.Thread(target=log.read, args=(proc.stdout,), daemon=True, name=f"serf-{node.name}").start()
    return SerfAgent(node, proc, log, handled)
