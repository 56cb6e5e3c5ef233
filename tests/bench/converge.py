"""Benchmark: real daemons in namespaces. Prints figures; asserts nothing.

  python -m tests.bench.converge [N ...]      (default: 4 8 16)

For each N, without and with a cluster key: start N daemons at once and time convergence from the
last start; then one more node joins the converged cluster and every datagram sent for it is
counted; RSS of one daemon. First, what the MAC costs per datagram (sign, and check).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from ipaddress import ip_address
from pathlib import Path

from omdisc.core.auth import Authenticator, Keyring
from omdisc.core.protocol import Message, MsgType, decode, encode
from omdisc.core.table import TableFormatError, decode_config
from omdisc.shell.keyfile import gen_key
from omdisc.shell.sinks import ALPHA_CONFIG
from tests.lab.netlab import Daemon, Lab, as_installed, require_root, wait_for

QUIET = {"announce_interval": 30.0, "dead_interval": 90.0}  # no periodic traffic during the counts


def sent(daemons: list[Daemon]) -> int:
    return sum(d.state().get("stats", {}).get("sent", 0) for d in daemons)


def in_map(d: Daemon) -> int:
    """Nodes in the daemon's kernel table (om_config), read here: what openMosix is given, and
    cheap enough to poll every 10 ms (state.json follows it within 0.25 s)."""
    try:
        entries = decode_config((d.alpha / ALPHA_CONFIG).read_bytes())
    except (OSError, TableFormatError):
        return 0
    return sum(e.count for e in entries if not e.alias)


def rss_kib(d: Daemon) -> int:
    for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def mac_cost(count: int = 20000) -> tuple[float, float]:
    """Microseconds to sign and to check one ANNOUNCE, in this process."""
    ring = Keyring((os.urandom(32),))
    sender = Authenticator(ring, time.time, 5.0, time.monotonic)
    receiver = Authenticator(ring, time.time, 5.0, time.monotonic)
    plain = [encode(Message(MsgType.ANNOUNCE, 7, 1, i, (ip_address("198.18.0.1"),))) for i in range(count)]
    t0 = time.perf_counter()
    signed = [sender.sign(d) for d in plain]
    t1 = time.perf_counter()
    msgs = [decode(d) for d in signed]
    t2 = time.perf_counter()
    assert all(receiver.verify(d, m).reason == "" for d, m in zip(signed, msgs, strict=True))
    t3 = time.perf_counter()
    return (t1 - t0) / count * 1e6, (t3 - t2) / count * 1e6


def run(n: int, keyed: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        lan = lab.lan()
        nodes = [lab.node(f"n{i}", lan, f"198.18.{i // 200}.{i % 200 + 1}/15") for i in range(n + 1)]
        lab.fill_neighbours(nodes)
        cfg: dict[str, object] = dict(QUIET)
        if keyed:
            key = lab.tmp / "cluster.key"
            key.write_text(gen_key() + "\n")
            key.chmod(0o600)
            cfg["key_file"] = str(key)
        daemons = [nodes[i].start(wait=False, **cfg) for i in range(n)]
        last_start = time.monotonic()
        wait_for(lambda: all(in_map(d) == n for d in daemons), 30, interval=0.01,
                 what=f"{n} nodes to converge")
        converge = time.monotonic() - last_start
        converge_ready = time.time() - max(wait_for(lambda d=d: d.state().get("ready_at"), 5) for d in daemons)
        time.sleep(1.5)  # join retries and answers over
        before = sent(daemons)
        t0 = time.monotonic()
        late = nodes[n].start(wait=False, **cfg)
        wait_for(lambda: in_map(late) == n + 1 and all(in_map(d) == n + 1 for d in daemons), 30, interval=0.01,
                 what="the late joiner")
        join_time = time.monotonic() - t0
        time.sleep(1.5)
        per_join = sent([*daemons, late]) - before
        return {"n": n, "converge_s": converge, "converge_ready_s": converge_ready, "join_s": join_time,
                "datagrams_per_join": per_join, "rss_kib": rss_kib(daemons[0])}


def main() -> None:
    require_root()
    as_installed()
    sizes = [int(a) for a in sys.argv[1:]] or [4, 8, 16]
    sign_us, check_us = mac_cost()
    print(f"HMAC-SHA256 per datagram: {sign_us:.1f} us to sign, {check_us:.1f} us to check (one core)\n")
    print("converged: all maps complete, timed from the last daemon's spawn (Python start-up on 2 shared\n"
          "cores included) and from its first announce (the protocol alone); late join: from spawn")
    print(f"{'key':>4} {'nodes':>5} {'from last spawn':>16} {'from last announce':>19} {'late join':>10} "
          f"{'datagrams/join':>15} {'RSS':>9}")
    for n in sizes:
        for keyed in (False, True):
            r = run(n, keyed)
            print(f"{'yes' if keyed else 'no':>4} {r['n']:>5} {r['converge_s']:>15.3f}s "
                  f"{r['converge_ready_s']:>18.3f}s {r['join_s']:>9.3f}s {r['datagrams_per_join']:>15} "
                  f"{r['rss_kib'] / 1024:>7.1f}MiB", flush=True)


if __name__ == "__main__":
    main()
