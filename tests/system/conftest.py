from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.containers import ArchiveKey, Cluster, make_apt_repo
from tests.lab.netlab import REPO, Lab

VERSION = "0.1.0"
NEWER = "0.1.0+1"  # the "upgrade" build: same tree, a higher version


def build(out: Path, version: str | None = None) -> Path:
    args = ["bash", str(REPO / "tools" / "builddeb.sh"), str(out)] + ([version] if version else [])
    built = subprocess.run(args, capture_output=True, text=True)
    if built.returncode:  # the end of dpkg-buildpackage's log says why (builddeb.sh prints it)
        pytest.fail(f"builddeb.sh {' '.join(args[3:])} failed:\n{built.stderr}", pytrace=False)
    return next(out.glob("omdiscd_*_all.deb"))


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """omdiscd built by dpkg-buildpackage, as it is and as a newer version."""
    root = tmp_path_factory.mktemp("debs")
    return {"current": build(root / "current"), "newer": build(root / "newer", NEWER)}


ARCHIVE_KEY = "omdisc-archive.asc"  # beside the repositories: /srv/apt/omdisc-archive.asc in the containers


@pytest.fixture(scope="session")
def apt_repos(debs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/srv/apt/current and /srv/apt/newer inside the containers, signed with a key made for this
    session, whose public half is /srv/apt/omdisc-archive.asc."""
    root = tmp_path_factory.mktemp("apt")
    # gpg's agent socket lives in its home: a short path (108 bytes at most)
    key = ArchiveKey(Path(tempfile.mkdtemp(prefix="omdg", dir="/tmp")))
    try:
        for name, deb in debs.items():
            make_apt_repo(root / name, [deb], key)
        (root / ARCHIVE_KEY).write_text(key.public)
    finally:
        key.close()
        shutil.rmtree(key.home, ignore_errors=True)
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
    """Only the lab's repository /srv/apt/NAME, which apt checks against the session's key (a source
    file whose name has no "omdisc": the purge test looks for what the package leaves)."""
    c.sh(  # type: ignore[attr-defined]
        "rm -f /etc/apt/sources.list.d/*; : > /etc/apt/sources.list;"
        f" printf 'Types: deb\\nURIs: file:/srv/apt/{name}\\nSuites: ./\\nSigned-By: /srv/apt/{ARCHIVE_KEY}\\n'"
        " > /etc/apt/sources.list.d/lab.sources && apt-get update -q -o Acquire::Languages=none"
    )
