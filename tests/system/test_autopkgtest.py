"""The package's DEP-8 tests (debian/tests), run by the real autopkgtest against the built .deb and
the source package it was built from (.dsc), as Debian's CI runs them.

The virt server is `null` inside a booted systemd container of the lab: the tests need systemd as
PID 1 (the service) and send multicast, which may only happen in a lab namespace. autopkgtest-virt-
null there offers isolation-machine and, as root, root-on-testbed, so no test is skipped for its
restrictions; the purge test installs the package again rather than declare breaks-testbed
(which null cannot revert).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.containers import Cluster, Container
from tests.lab.netlab import Lab

TESTS = ("service-active", "check-config", "showmap-lists-the-node", "reload-keeps-the-map", "purge-leaves-nothing")


@pytest.fixture(scope="module")
def testbed(debs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """One booted container, nothing of omdiscd installed, no apt source but what autopkgtest adds."""
    with Lab(tmp_path_factory.mktemp("lab")) as lab:
        cluster = Cluster(lab, 1, binds={str(debs["current"].parent): "/srv/debs"})
        try:
            c = cluster.containers[0]
            # the lab has no way out: apt must not wait on the Debian mirror the rootfs came from
            c.sh("rm -f /etc/apt/sources.list.d/*; : > /etc/apt/sources.list")
            # nothing named after the package before it is installed (the rootfs' cache stamp is the
            # lab's, and this is the container's throw-away copy): what purge leaves is the package's
            c.sh("rm /.omdisc-rootfs")
            assert c.sh("find / -xdev -name '*omdisc*' -not -path '/proc/*'").stdout == ""
            assert c.sh("dpkg-query -W omdiscd", check=False).returncode != 0
            yield c
        finally:
            cluster.close()


def test_autopkgtest_runs_every_dep8_test_and_each_passes(testbed: Container, debs: dict[str, Path]) -> None:
    dsc = next(debs["current"].parent.glob("omdiscd_*.dsc")).name
    t0 = time.monotonic()
    r = testbed.sh(f"autopkgtest --output-dir /tmp/autopkgtest-out /srv/debs/{dsc} /srv/debs/{debs['current'].name} "
                   "-- null", check=False, timeout=600)
    took = time.monotonic() - t0
    summary = testbed.sh("cat /tmp/autopkgtest-out/summary", check=False).stdout
    print(f"autopkgtest (virt server null, in a booted container): {took:.1f}s, exit {r.returncode}\n{summary}")
    results = dict(line.split()[:2] for line in summary.splitlines() if line.strip())
    assert results == dict.fromkeys(TESTS, "PASS"), f"{summary}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert r.returncode == 0, r.stderr[-4000:]
    # the last test put the package back: the testbed is as autopkgtest found it after its install
    assert testbed.sh("systemctl is-active omdiscd").stdout.strip() == "active"
