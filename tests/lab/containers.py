"""Booted systemd containers (systemd-nspawn) in lab namespaces, over one cached read-only rootfs.

Each container gets the network namespace of a lab node (see netlab), a tmpfs overlay over the
rootfs (--volatile=overlay: nothing it does outlives it) and read-only binds of what the test
serves it (a local apt repository, SSH keys).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.netlab import REPO, Lab, Node, wait_for

ROOTFS = Path(os.environ.get("OMDISC_ROOTFS", "/var/cache/omdisc/rootfs-bookworm"))
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def ensure_rootfs() -> Path:
    """Debootstrap once; every later run (and every container) reuses it."""
    subprocess.run(["bash", str(REPO / "tools" / "mkrootfs.sh"), str(ROOTFS)], check=True)
    return ROOTFS


class ArchiveKey:
    """A signing key of the tests' own, made for one test session (gpg in a scratch home): apt in the
    containers checks every repository against it, as it would a real archive's."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._gpg("--passphrase", "", "--quick-gen-key", "omdisc test archive <archive@omdisc.invalid>",
                  "ed25519", "sign", "1d")
        self.public = self._gpg("--armor", "--export")  # the armored block apt's Signed-By takes

    def _gpg(self, *args: str) -> str:
        return subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--quiet", *args], check=True,
                              capture_output=True, text=True).stdout

    def sign(self, release: Path) -> None:
        """InRelease (what apt reads first) and Release.gpg beside the Release file."""
        self._gpg("--yes", "--clearsign", "--output", str(release.with_name("InRelease")), str(release))
        self._gpg("--yes", "--armor", "--detach-sign", "--output", str(release.with_name("Release.gpg")),
                  str(release))

    def close(self) -> None:
        """The agent gpg started for this home goes with it."""
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], check=False)


def make_apt_repo(directory: Path, debs: list[Path], key: ArchiveKey) -> Path:
    """A flat apt repository (apt-ftparchive), signed with `key`, served to containers as file:/srv/apt."""
    directory.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        (directory / deb.name).write_bytes(deb.read_bytes())
    packages = subprocess.run(["apt-ftparchive", "packages", "."], cwd=directory, check=True,
                              capture_output=True, text=True).stdout
    (directory / "Packages").write_text(packages)
    release = subprocess.run(["apt-ftparchive", "release", "."], cwd=directory, check=True,
                             capture_output=True, text=True).stdout
    (directory / "Release").write_text(release)
    key.sign(directory / "Release")
    return directory


@dataclass
class Container:
    node: Node
    name: str
    binds: dict[str, str] = field(default_factory=dict)  # host path -> container path (read-only)
    proc: subprocess.Popen[bytes] | None = None
    leader: int = 0

    def boot(self) -> None:
        log = open(self.node.lab.tmp / f"{self.name}.console", "wb")  # noqa: SIM115 - nspawn keeps it
        cmd = ["systemd-nspawn", "-D", str(ROOTFS), "--boot", "--register=no", "--keep-unit",
               "--volatile=overlay", f"--network-namespace-path=/run/netns/{self.node.ns}",
               f"--machine={self.name}", f"--hostname={self.name}", "--console=read-only", "--quiet",
               *(f"--bind-ro={h}:{c}" for h, c in self.binds.items())]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.leader = wait_for(self._find_leader, 20, what=f"{self.name}'s init")

    def _find_leader(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is not None:
            console = (self.node.lab.tmp / f"{self.name}.console").read_text(errors="replace")
            raise RuntimeError(f"systemd-nspawn for {self.name} exited {self.proc.returncode}:\n{console}")
        for tid in Path(f"/proc/{self.proc.pid}/task").iterdir():
            for child in (tid / "children").read_text().split():
                if _is_container_init(int(child)):
                    return int(child)
        return 0

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a shell script as root inside the container."""
        r = subprocess.run(["nsenter", "-a", "-t", str(self.leader), "--", "env", "-i", f"PATH={PATH}",
                            "LANG=C.UTF-8", "TERM=dumb", "DEBIAN_FRONTEND=noninteractive", "sh", "-c", script],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{self.name}: {script!r} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def wait_running(self, timeout: float = 60) -> None:
        def up() -> bool:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            return state in ("running", "degraded")

        wait_for(up, timeout, interval=0.2, what=f"{self.name} to boot")

    def shutdown(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Cluster:
    """N booted containers on one lab LAN, 198.18.0.11, .12, ... ; always shut down by close()."""

    def __init__(self, lab: Lab, count: int, binds: dict[str, str] | None = None, net: str = "198.18.0") -> None:
        self.lab = lab
        ensure_rootfs()
        lan = lab.lan()
        self.controller = lab.node("ctl", lan, f"{net}.1/24")  # the lab's own host on the LAN (Ansible)
        self.containers: list[Container] = []
        try:
            for i in range(count):
                node = lab.node(f"c{i + 1}", lan, f"{net}.{11 + i}/24")
                c = Container(node, f"omdt-c{i + 1}", dict(binds or {}))
                c.boot()
                self.containers.append(c)
            for c in self.containers:
                c.wait_running()
        except BaseException:
            self.close()
            raise

    def address(self, i: int) -> str:
        return self.containers[i].node.run("ip", "-4", "-o", "addr", "show", "eth0").stdout.split()[3].split("/")[0]

    def close(self) -> None:
        for c in self.containers:
            c.shutdown()
        left = subprocess.run(["pgrep", "-f", f"systemd-nspawn .*{self.lab.prefix}"], capture_output=True, text=True)
        for pid in left.stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.1)


def _is_container_init(pid: int) -> bool:
    """PID 1 of a child pid namespace: its NSpid line reads "<host pid> 1"."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            ids = line.split()[1:]
            return len(ids) == 2 and ids[1] == "1"
    return False
