"""The Ansible role as users run it: lint-clean, and `molecule test` (create, converge, idempotence,
verify, destroy) over SSH to three booted systemd containers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.lab.netlab import REPO, new_prefix, sweep

ANSIBLE = REPO / "ansible"
ROLE = ANSIBLE / "roles" / "omdiscd"
# The tools of the venv running pytest (ansible-playbook, molecule), whichever checkout it belongs to.
VENV_BIN = Path(sys.executable).parent


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1", **extra}


def test_ansible_lint_production_profile_and_yamllint_are_clean() -> None:
    lint = subprocess.run(["ansible-lint", "--profile", "production", "--format", "pep8"], cwd=ANSIBLE, env=env(),
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    yl = subprocess.run(["yamllint", "-s", "."], cwd=ANSIBLE, env=env(), capture_output=True, text=True)
    assert yl.returncode == 0, yl.stdout


def test_role_arguments_are_validated(tmp_path: Path) -> None:
    play = tmp_path / "bad.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  roles:\n"
                    "    - role: omdiscd\n      omdiscd_family: ipv5\n")
    r = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(play)], cwd=ANSIBLE,
                       env=env(ANSIBLE_ROLES_PATH=str(ANSIBLE / "roles")), capture_output=True, text=True)
    assert r.returncode != 0
    assert "omdiscd_family" in r.stdout and "ipv5" in r.stdout


def git_snapshot(dest: Path) -> Path:
    """This tree as it is now (what git tracks or would track), committed to a repository of its own:
    what the collection is installed from, as from a clone, uncommitted changes included."""
    dest.mkdir(parents=True, exist_ok=True)
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    git = ["git", "-c", "user.name=omdisc tests", "-c", "user.email=tests@omdisc.invalid", "-C", str(dest)]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(git + args, check=True, capture_output=True)
    return dest


def test_molecule_test_on_booted_containers(debs: dict[str, Path], apt_repos: Path, tmp_path: Path) -> None:
    prefix = new_prefix()
    # A short HOME of its own: ssh's ControlPath socket under ~/.ansible/cp must fit 108 bytes.
    home = Path(tempfile.mkdtemp(prefix="omdm", dir="/tmp"))
    extra = {"OMDISC_LAB_PREFIX": prefix, "OMDISC_LAB_DIR": str(tmp_path / "lab"), "OMDISC_DEB": str(debs["current"]),
             "OMDISC_APT": str(apt_repos), "OMDISC_COLLECTION_GIT": str(git_snapshot(tmp_path / "checkout")),
             "MOLECULE_NO_LOG": "false", "HOME": str(home)}
    try:
        r = subprocess.run(["molecule", "test"], cwd=ROLE, env=env(**extra), capture_output=True, text=True,
                           timeout=1200)
        out = r.stdout + r.stderr
        print(out[-6000:])
        if r.returncode != 0:  # all of it, for the first error (the tail has only the last)
            home.with_suffix(".log").write_text(out)
            print(f"molecule's whole output: {home.with_suffix('.log')}")
        assert r.returncode == 0, out[-8000:]
        assert "idempotence" in out.lower()
    finally:
        shutil.rmtree(home, ignore_errors=True)
        left = sweep(prefix)
        subprocess.run(["pkill", "-f", f"systemd-nspawn .*{prefix}"], check=False)
    assert left == [], f"molecule destroy left namespaces: {left}"
