from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.containers import Cluster, make_apt_repo
from tests.lab.netlab import REPO, Lab

VERSION = "0.1.0"
NEWER = "0.1.0+1"  # the "upgrade" build: same tree, a higher version


def build(out: Path, version: str | None = None) -> Path:
    args = ["bash", str(REPO / "tools" / "builddeb.sh"), str(out)] + ([version] if version else [])
    subprocess.run(args, check=True, capture_output=True, text=True)
    return next(out.glob("omdiscd_*_all.deb"))


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """omdiscd built by dpkg-buildpackage, as it is and as a newer version."""
    root = tmp_path_factory.mktemp("debs")
    return {"current": build(root / "current"), "newer": build(root / "newer", NEWER)}


@pytest.fixture(scope="session")
def apt_repos(debs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/srv/apt/current and /srv/apt/newer inside the containers."""
    root = tmp_path_factory.mktemp("apt")
    for name, deb in debs.items():
        make_apt_repo(root / name, [deb])
    os.chmod(root, 0o755)
    return root


@pytest.fixture(scope="module")
def cluster3(apt_repos: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three booted bookworm containers on one LAN, with omdiscd installed from apt by name."""
    with Lab(tmp_path_factory.mktemp("lab")) as lab:
        cluster = Cluster(lab, 3, binds={str(apt_repos): "/srv/apt"})
        try:
            for c in cluster.containers:
                use_repo(c, "current")
                c.sh("apt-get install -y -q omdiscd")
            yield cluster
        finally:
            cluster.close()


def use_repo(c: object, name: str) -> None:
    c.sh(  # type: ignore[attr-defined]
        f"rm -f /etc/apt/sources.list.d/*; echo 'deb [trusted=yes] file:/srv/apt/{name} ./' > /etc/apt/sources.list"
        " && apt-get update -q -o Acquire::Languages=none"
    )
