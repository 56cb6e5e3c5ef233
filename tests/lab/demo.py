"""The demo lab: four real omdiscd daemons in network namespaces on one bridge.

Prints every node's showmap once the cluster has converged, shows a LEAVE, then removes the lab.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tests.lab.netlab import Lab, require_root, wait_for


def main() -> None:
    require_root()
    with tempfile.TemporaryDirectory(prefix="omdisc-demo-") as tmp, Lab(Path(tmp)) as lab:
        lan = lab.lan()
        addrs = ["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.1.10"]
        nodes = [lab.node(f"node{i + 1}", lan, f"{a}/15") for i, a in enumerate(addrs)]
        print(f"lab: {len(nodes)} namespaces on a bridge, addresses {', '.join(addrs)}")
        t0 = time.monotonic()
        daemons = [n.start(wait=False) for n in nodes]
        wait_for(lambda: all(len(d.ids()) == len(nodes) for d in daemons), 20, what="convergence")
        took = time.monotonic() - t0
        print(f"converged: every map lists all {len(nodes)} nodes, {took:.2f}s after the first start\n")
        for node, d in zip(nodes, daemons, strict=True):
            print(f"--- showmap on {node.name} ({node.legs[0]})")
            print(d.showmap().stdout)
        print("--- node4 stops (SIGTERM: it announces LEAVE)")
        daemons[3].stop()
        wait_for(lambda: all(len(d.ids()) == 3 for d in daemons[:3]), 5, what="the LEAVE")
        print(daemons[0].showmap().stdout)
    print("lab removed")


if __name__ == "__main__":
    main()
