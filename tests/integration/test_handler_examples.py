"""The example hosts handler (examples/handlers/omdisc-hosts) with a real dnsmasq: omdiscd runs it
on join, leave, expire and map; dnsmasq serves the file it writes (addn-hosts) and re-reads it on
the SIGHUP the handler sends; another node resolves the cluster's names through it, and a node's
name is gone once the node has left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.lab.netlab import REPO, Lab, Node, wait_for

HOSTS = REPO / "examples" / "handlers" / "omdisc-hosts"

# A minimal DNS client, run inside a namespace (nothing is sent from the host's): one A query
# over UDP, prints "RCODE ADDRESS..." (RCODE 0 NOERROR, 3 NXDOMAIN; "timeout" if no answer).
RESOLVE = r"""
import secrets, socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
qid = secrets.randbits(16)
query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(query, (server, 53))
try:
    while True:
        data = s.recv(4096)
        if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == qid:
            break
except TimeoutError:
    print("timeout")
    sys.exit(0)

def skip_name(i):
    while True:
        n = data[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += 1 + n

_, flags, qd, an, _, _ = struct.unpack("!HHHHHH", data[:12])
i = 12
for _ in range(qd):
    i = skip_name(i) + 4
found = []
for _ in range(an):
    i = skip_name(i)
    rtype, rclass, _, length = struct.unpack("!HHIH", data[i:i + 10])
    i += 10
    if rtype == 1 and rclass == 1 and length == 4:
        found.append(socket.inet_ntoa(data[i:i + 4]))
    i += length
print(flags & 0xF, *found)
"""


def resolve(node: Node, server: str, name: str) -> tuple[int | None, list[str]]:
    """(rcode, A addresses) of `name` asked of `server` from `node`'s namespace; rcode None: no answer."""
    if shutil.which("dig"):
        r = node.run("dig", f"@{server}", "+tries=1", "+time=2", "+noall", "+comments", "+answer", name, "A",
                     check=False)
        codes = {"NOERROR": 0, "NXDOMAIN": 3, "REFUSED": 5, "SERVFAIL": 2}
        status = next((line.split("status: ", 1)[1].split(",", 1)[0] for line in r.stdout.splitlines()
                       if "status: " in line), None)
        found = [f[4] for f in (line.split() for line in r.stdout.splitlines() if line and not line.startswith(";"))
                 if len(f) == 5 and f[3] == "A"]
        return (codes.get(status, -1) if status else None), found
    out = node.run(sys.executable, "-c", RESOLVE, server, name, timeout=10).stdout.split()
    if not out or out[0] == "timeout":
        return None, []
    return int(out[0]), out[1:]


@pytest.mark.skipif(not shutil.which("dnsmasq"), reason="dnsmasq (Debian: dnsmasq-base) not installed")
def test_a_node_resolves_the_cluster_through_dnsmasq_and_a_leave_removes_the_name(lab: Lab) -> None:
    lan = lab.lan()
    n1 = lab.node("n1", lan, "198.18.1.11/15")
    n2 = lab.node("n2", lan, "198.18.1.12/15")
    id1, id2 = 256 + 11, 256 + 12
    hosts = lab.tmp / "dns" / "hosts"
    pidfile = lab.tmp / "dns" / "dnsmasq.pid"
    hosts.parent.mkdir()
    # omdiscd passes none of its own OMDISC_* variables on to handlers: a wrapper sets them
    wrapper = lab.tmp / "omdisc-hosts"
    wrapper.write_text("#!/bin/sh\n"
                       f"export OMDISC_HOSTS_FILE={hosts} OMDISC_DNSMASQ_PIDFILE={pidfile}\n"
                       f"exec {HOSTS}\n")
    wrapper.chmod(0o755)
    dns_log = open(lab.tmp / "dnsmasq.log", "wb")  # noqa: SIM115 - closed in finally
    dnsmasq = subprocess.Popen(
        ["ip", "netns", "exec", n1.ns, "dnsmasq",
         "--keep-in-foreground",  # not --no-daemon: that debug mode writes no pid file
         "--no-resolv", "--no-hosts",
         f"--addn-hosts={hosts}", "--listen-address=198.18.1.11", "--bind-interfaces", "--port=53",
         f"--pid-file={pidfile}", "--conf-file=/dev/null",
         "--user=root",  # the lab's files are under pytest's root-only tmp directory
         "--domain-needed",  # a plain name not in the hosts file: NXDOMAIN (no upstream to ask)
         "--log-queries", "--log-facility=-"],
        stdout=dns_log, stderr=subprocess.STDOUT)
    try:
        def dns_log_text() -> str:
            return (lab.tmp / "dnsmasq.log").read_text(errors="replace")

        # dnsmasq answers before the first handler run signals it (a SIGHUP too early would end it)
        wait_for(lambda: resolve(n2, "198.18.1.11", "omdisc-probe")[0] is not None or dnsmasq.poll() is not None,
                 10, what="dnsmasq to answer")
        assert dnsmasq.poll() is None, dns_log_text()
        assert resolve(n2, "198.18.1.11", f"node{id2}") == (3, [])

        handlers = [{"events": ["join", "leave", "expire", "map"], "run": str(wrapper)}]
        d1 = n1.start(dead_interval=60.0, handlers=handlers)
        d2 = n2.start(dead_interval=60.0)
        wait_for(lambda: resolve(n2, "198.18.1.11", f"node{id2}")[1], 15, what=f"node{id2} to resolve")
        assert resolve(n2, "198.18.1.11", f"node{id2}") == (0, ["198.18.1.12"])
        assert resolve(n2, "198.18.1.11", f"node{id1}") == (0, ["198.18.1.11"])
        assert f"{hosts}" in dns_log_text() and dnsmasq.poll() is None  # read on SIGHUP, still running

        assert d2.stop() == 0  # LEAVE: the handler rewrites the file, dnsmasq re-reads it
        wait_for(lambda: resolve(n2, "198.18.1.11", f"node{id2}")[0] == 3, 15,
                 what=f"node{id2} to be NXDOMAIN after its leave")
        assert resolve(n2, "198.18.1.11", f"node{id1}") == (0, ["198.18.1.11"])
        assert dnsmasq.poll() is None
        # state.json's counters follow the handlers' runs within a second (omdiscd.yaml(5))
        stats = wait_for(lambda: (s := d1.state()["stats"])["handler_runs"] >= 2 and s, 3, what="the runs counted")
        assert stats.get("handler_failures", 0) == 0, d1.log
        assert f"for leave of #{id2} exited 0" in d1.log
    finally:
        if dnsmasq.poll() is None:
            os.kill(dnsmasq.pid, signal.SIGTERM)  # ip netns exec execs dnsmasq: this pid is dnsmasq's
            try:
                dnsmasq.wait(5)
            except subprocess.TimeoutExpired:
                dnsmasq.kill()
                dnsmasq.wait()
        dns_log.close()
