"""Molecule's create and destroy for the omdiscd role: booted systemd containers on a lab LAN.

  python -m tests.lab.molecule_lab create INSTANCE_CONFIG
  python -m tests.lab.molecule_lab destroy INSTANCE_CONFIG

Environment: OMDISC_LAB_PREFIX (namespace prefix, made by the caller), OMDISC_LAB_DIR (keys, state),
OMDISC_APT (a directory served to the containers as /srv/apt). The containers outlive this
process (molecule runs each step as its own playbook); their pids and namespaces are kept in
OMDISC_LAB_DIR/lab.json for destroy. Ansible reaches them by SSH from inside the lab's "ctl"
namespace (tests/lab/netns-ssh), so no traffic leaves the lab.

A test that runs ansible-playbook itself boots the same lab with booted() (a context manager that
shuts it down again), in its own process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.lab.containers import Container, ensure_rootfs
from tests.lab.netlab import Lab, kill_ns_processes, sh, sweep

PLATFORMS = ["omdt-c1", "omdt-c2", "omdt-c3"]


def _lab_dir() -> Path:
    d = Path(os.environ["OMDISC_LAB_DIR"])
    d.mkdir(parents=True, exist_ok=True)
    return d


def ssh_key(lab_dir: Path) -> Path:
    """The key Ansible logs in with (root's authorized key in every container)."""
    return lab_dir / "id_ed25519"


def address(i: int) -> str:
    return f"198.18.0.{11 + i}"


def boot(lab_dir: Path, prefix: str, apt: str | None) -> tuple[Lab, list[Container]]:
    """The lab's LAN, its "ctl" namespace (198.18.0.1) and the containers PLATFORMS (198.18.0.11, ...),
    booted, with SSH up; `apt` is served as /srv/apt. If anything fails, nothing is left running."""
    key = ssh_key(lab_dir)
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ensure_rootfs()
    lab = Lab(lab_dir)
    lab.prefix = prefix
    binds = {str(key) + ".pub": "/root/.ssh/authorized_keys"}
    if apt:
        binds[apt] = "/srv/apt"
    containers: list[Container] = []
    try:
        lan = lab.lan()
        lab.node("ctl", lan, "198.18.0.1/24")
        for i, name in enumerate(PLATFORMS):
            node = lab.node(name.removeprefix("omdt-"), lan, f"{address(i)}/24")
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
    return lab, containers


@contextmanager
def booted(lab_dir: Path, prefix: str, apt: str | None = None) -> Iterator[list[Container]]:
    """boot(), then everything shut down and removed when the block ends, however it ends."""
    lab_dir.mkdir(parents=True, exist_ok=True)
    lab, containers = boot(lab_dir, prefix, apt)
    try:
        yield containers
    finally:
        for c in containers:
            c.shutdown()
        lab.close()


def create(instance_config: Path) -> None:
    lab_dir = _lab_dir()
    lab, containers = boot(lab_dir, os.environ["OMDISC_LAB_PREFIX"], os.environ.get("OMDISC_APT"))
    state = {"namespaces": lab.namespaces, "nspawn": [c.proc.pid for c in containers if c.proc]}
    (lab_dir / "lab.json").write_text(json.dumps(state))
    instances = [{"instance": name, "address": address(i), "user": "root", "port": 22,
                  "identity_file": str(ssh_key(lab_dir))} for i, name in enumerate(PLATFORMS)]
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
