"""Molecule's create and destroy for the omdiscd role: booted systemd containers on a lab LAN.

  python -m tests.lab.molecule_lab create INSTANCE_CONFIG
  python -m tests.lab.molecule_lab destroy INSTANCE_CONFIG

Environment: OMDISC_LAB_PREFIX (namespace prefix, made by the caller), OMDISC_LAB_DIR (keys, state),
OMDISC_APT (a directory served to the containers as /srv/apt). The containers outlive this
process (molecule runs each step as its own playbook); their pids and namespaces are kept in
OMDISC_LAB_DIR/lab.json for destroy. Ansible reaches them by SSH from inside the lab's "ctl"
namespace (tests/lab/netns-ssh), so no traffic leaves the lab.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.lab.containers import Container, ensure_rootfs
from tests.lab.netlab import Lab, kill_ns_processes, sh, sweep

PLATFORMS = ["omdt-c1", "omdt-c2", "omdt-c3"]


def _lab_dir() -> Path:
    d = Path(os.environ["OMDISC_LAB_DIR"])
    d.mkdir(parents=True, exist_ok=True)
    return d


def create(instance_config: Path) -> None:
    lab_dir = _lab_dir()
    key = lab_dir / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ensure_rootfs()
    lab = Lab(lab_dir)
    lab.prefix = os.environ["OMDISC_LAB_PREFIX"]
    binds = {str(key) + ".pub": "/root/.ssh/authorized_keys"}
    if os.environ.get("OMDISC_APT"):
        binds[os.environ["OMDISC_APT"]] = "/srv/apt"
    containers: list[Container] = []
    try:
        lan = lab.lan()
        lab.node("ctl", lan, "198.18.0.1/24")
        for i, name in enumerate(PLATFORMS):
            node = lab.node(name.removeprefix("omdt-"), lan, f"198.18.0.{11 + i}/24")
            c = Container(node, name, dict(binds))
            c.boot()
            containers.append(c)
        for c in containers:
            c.wait_running()
            c.sh("systemctl is-active ssh")
            # The lab has no way out to Debian's mirrors: apt reads only the repositories it is given.
            c.sh("sed -i 's/^deb /# deb /' /etc/apt/sources.list")
    except BaseException:
        for c in containers:
            c.shutdown()
        lab.close()
        raise
    state = {"namespaces": lab.namespaces, "nspawn": [c.proc.pid for c in containers if c.proc]}
    (lab_dir / "lab.json").write_text(json.dumps(state))
    instances = [{"instance": name, "address": f"198.18.0.{11 + i}", "user": "root", "port": 22,
                  "identity_file": str(key)} for i, name in enumerate(PLATFORMS)]
    instance_config.write_text(yaml.safe_dump(instances))


def destroy(instance_config: Path) -> None:
    lab_dir = _lab_dir()
    state_file = lab_dir / "lab.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        for pid in state["nspawn"]:
            try:
                os.kill(pid, signal.SIGTERM)  # the container's systemd powers off
            except ProcessLookupError:
                continue
        for pid in state["nspawn"]:
            _wait_gone(pid)
        for ns in reversed(state["namespaces"]):
            kill_ns_processes(ns)
            sh("ip", "netns", "del", ns, check=False)
        state_file.unlink()
    sweep(os.environ["OMDISC_LAB_PREFIX"])
    instance_config.write_text(yaml.safe_dump([]))


def _wait_gone(pid: int, timeout: float = 15) -> None:
    import time

    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.1)


def main() -> None:
    action, config = sys.argv[1], Path(sys.argv[2])
    {"create": create, "destroy": destroy}[action](config)


if __name__ == "__main__":
    main()
