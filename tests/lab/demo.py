"""The demo lab: real omdiscd daemons in network namespaces.

Two LANs (bridges in namespaces of their own): three nodes on lanA, one on lanB, and a gateway
with a leg in each, as in the seed's "ariette" example (`omdiscd -i leg0,leg1`). Prints every
node's showmap once the cluster has converged, the gateway seen from lanB, a LEAVE, then removes
the whole lab.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from tests.lab.netlab import Lab, require_root, wait_for


def main() -> None:
    require_root()
    with tempfile.TemporaryDirectory(prefix="omdisc-demo-") as tmp, Lab(Path(tmp)) as lab:
        lan_a, lan_b = lab.lan("lanA"), lab.lan("lanB")
        nodes = [lab.node(f"node{i}", lan_a, f"198.18.0.{i}/24") for i in (1, 2, 3)]
        nodes.append(lab.node("node4", lan_b, "198.18.1.10/24"))
        gw = lab.node("gateway")
        gw.add_leg(lan_a, "198.18.0.254/24", "leg0")
        gw.add_leg(lan_b, "198.18.1.254/24", "leg1")
        print("lab: lanA 198.18.0.0/24 with node1-3, lanB 198.18.1.0/24 with node4,")
        print("     gateway on both (omdiscd -i leg0,leg1)")
        t0 = time.monotonic()
        daemons = [n.start(wait=False) for n in nodes] + [gw.start(["-i", "leg0,leg1"], wait=False)]
        wait_for(lambda: all(len(d.ids()) == 5 for d in daemons), 20, what="convergence")
        print(f"converged: every map lists all 5 nodes, {time.monotonic() - t0:.2f}s after the first start\n")
        for d in daemons:
            print(f"--- showmap on {d.node.name}")
            print(d.showmap().stdout)
        print("--- node4 (lanB) knows its gateway: showmap --json | gateways")
        print(json.dumps(daemons[3].map()["gateways"], indent=2), "\n")
        print("--- node4 stops (SIGTERM: it announces LEAVE, the gateway carries it to lanA)")
        daemons[3].stop()
        wait_for(lambda: all(len(d.ids()) == 4 for d in daemons[:3]), 5, what="the LEAVE")
        print(daemons[0].showmap().stdout)
    print("lab removed")


if __name__ == "__main__":
    main()
