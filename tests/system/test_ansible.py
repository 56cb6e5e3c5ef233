"""The Ansible role as users run it: lint-clean, `molecule test` (create, converge, idempotence,
verify, destroy) over SSH to three booted systemd containers, and the rollout from an INI inventory,
whose values are strings ("false", "30"), as ansible/inventory.example has it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab import molecule_lab
from tests.lab.containers import Container
from tests.lab.netlab import REPO, entries_ids, new_prefix, sweep, wait_for

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


# An INI inventory as an admin writes one (ansible/inventory.example): a value that does not read as
# a Python literal is a string ("false", "yes", "eth0", a quoted "30"); a host line's JSON list is a
# list, the same quoted in a [group:vars] section is a string. omdt-c2's node id comes from a YAML
# host_vars file, as a string; -e name=value gives strings too (INI_EXTRA).
INI = """\
[omdisc_cluster]
omdt-c1 ansible_host=198.18.0.11 omdiscd_node_id=201 omdiscd_interfaces='["eth0"]'
omdt-c2 ansible_host=198.18.0.12
omdt-c3 ansible_host=198.18.0.13 omdiscd_node_id=203 omdiscd_service_enabled=false

[omdisc_cluster:vars]
ansible_user=root
ansible_ssh_private_key_file={key}
ansible_ssh_executable={ssh}
ansible_ssh_common_args='-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no'
ansible_python_interpreter=/usr/bin/python3
ansible_pipelining=true
omdiscd_package_source=apt
omdiscd_apt_uri=file:/srv/apt/current
omdiscd_apt_signed_by=/srv/apt/omdisc-archive.asc
omdiscd_apt_suites='["./"]'
omdiscd_interfaces=eth0
omdiscd_service_enabled=yes
omdiscd_route=false
omdiscd_announce_interval=1
omdiscd_dead_interval="30"
omdiscd_port="7727"
"""
INI_HOST_VARS = {"omdt-c2": 'omdiscd_node_id: "202"\n'}
# two batches (c1 and c2, then c3) and no failed host tolerated, as strings
INI_EXTRA = ["omdiscd_multicast_ttl=2", "omdiscd_remove_on_leave=false", "omdiscd_serial=2",
             "omdiscd_max_fail_percentage=0"]


def ini_settings(node_id: int) -> dict[str, Any]:
    """/etc/omdiscd/conf.d/50-ansible.yaml as the INI inventory above must make it: booleans and numbers."""
    return {"interfaces": ["eth0"], "multicast_ttl": 2, "route": False, "family": "ipv4", "group": "239.192.77.77",
            "group6": "ff05::7727", "port": 7727, "kernel": "auto", "announce_interval": 1.0, "dead_interval": 30.0,
            "remove_on_leave": False, "node_id": node_id, "debug": []}


def typed(settings: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Each value with its YAML type's name: 1.0 is not 1, nor false 'false'."""
    return {k: (v, type(v).__name__) for k, v in settings.items()}


# Without containers: a copy of the role with one more tasks file, which renders its template into
# the test's directory on the controller, for hosts of an INI inventory (and a YAML host_vars file of
# strings), or with every value given as -e name=value; the role's defaults, vars and precedence as
# Ansible applies them.
RENDER_TASKS = """\
- name: Render the role's settings file into the test's directory
  ansible.builtin.template:
    src: 50-ansible.yaml.j2
    dest: "{out}/{{{{ inventory_hostname }}}}.yaml"
    mode: "0644"
"""
RENDER_PLAY = """\
- name: Render the role's settings file for each host
  hosts: omdisc_cluster
  connection: local
  gather_facts: false
  tasks:
    - name: The role's render.yml (only in the test's copy)
      ansible.builtin.include_role:
        name: omdiscd
        tasks_from: render.yml
"""
RENDER_INI = """\
[omdisc_cluster]
ini-host omdiscd_node_id=5 omdiscd_interfaces='["eth1", "eth0"]' omdiscd_multicast_ttl=2
yaml-host

[omdisc_cluster:vars]
ansible_python_interpreter={python}
omdiscd_route=no
omdiscd_remove_on_leave=false
omdiscd_announce_interval=10
omdiscd_dead_interval="35"
omdiscd_port="7728"
omdiscd_debug='["net", "membership"]'
"""
RENDER_HOST_VARS = {"yaml-host": 'omdiscd_node_id: "5"\nomdiscd_multicast_ttl: "2"\nomdiscd_interfaces: eth1, eth0\n'}
RENDER_EXTRA = ["omdiscd_node_id=5", "omdiscd_interfaces=eth1,eth0", "omdiscd_multicast_ttl=2", "omdiscd_route=no",
                "omdiscd_remove_on_leave=false", "omdiscd_announce_interval=10", "omdiscd_dead_interval=35",
                "omdiscd_port=7728", 'omdiscd_debug=["net","membership"]']
RENDERED = {"interfaces": ["eth1", "eth0"], "multicast_ttl": 2, "route": False, "family": "ipv4",
            "group": "239.192.77.77", "group6": "ff05::7727", "port": 7728, "kernel": "auto",
            "announce_interval": 10.0, "dead_interval": 35.0, "remove_on_leave": False, "node_id": 5,
            "debug": ["net", "membership"]}


@pytest.mark.parametrize("source", ["ini", "extra_vars"])
def test_settings_from_strings_are_written_as_booleans_and_numbers(source: str, tmp_path: Path) -> None:
    """The settings file the role writes from strings (an INI inventory and a YAML host_vars file, or
    -e name=value): booleans, numbers and lists, which omdiscd --check-config accepts."""
    inventory, out, roles = tmp_path / "inventory", tmp_path / "out", tmp_path / "roles"
    for d in (inventory / "host_vars", out):
        d.mkdir(parents=True)
    shutil.copytree(ROLE, roles / "omdiscd", ignore=shutil.ignore_patterns("molecule"))
    (roles / "omdiscd" / "tasks" / "render.yml").write_text(RENDER_TASKS.format(out=out))
    (tmp_path / "render.yml").write_text(RENDER_PLAY)
    if source == "ini":
        (inventory / "hosts").write_text(RENDER_INI.format(python=sys.executable))
        for host, text in RENDER_HOST_VARS.items():
            (inventory / "host_vars" / f"{host}.yml").write_text(text)
        extra: list[str] = []
    else:
        (inventory / "hosts").write_text(f"[omdisc_cluster]\nextra-host ansible_python_interpreter={sys.executable}\n")
        extra = [arg for e in RENDER_EXTRA for arg in ("-e", e)]
    r = subprocess.run(["ansible-playbook", "-i", str(inventory / "hosts"), str(tmp_path / "render.yml"), *extra],
                       cwd=tmp_path, env=env(ANSIBLE_ROLES_PATH=str(roles)), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    hosts = {"ini": ["ini-host", "yaml-host"], "extra_vars": ["extra-host"]}[source]
    assert sorted(p.stem for p in out.iterdir()) == sorted(hosts)
    for host in hosts:
        written = out / f"{host}.yaml"
        assert typed(yaml.safe_load(written.read_text())) == typed(RENDERED), host
        check = subprocess.run([str(VENV_BIN / "omdiscd"), "--check-config", "-c", str(written)],
                               capture_output=True, text=True)
        assert check.returncode == 0, f"{host}: {check.stderr}"


def unit(c: Container) -> dict[str, str]:
    out = c.sh("systemctl show -p ActiveState,UnitFileState,ExecMainStartTimestampMonotonic omdiscd").stdout
    return dict(line.split("=", 1) for line in out.split())


def playbook(inventory: Path, *args: str, home: Path, prefix: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ansible-playbook", "-i", str(inventory), "playbooks/site.yml", *args], cwd=ANSIBLE,
                       env=env(OMDISC_LAB_PREFIX=prefix, HOME=str(home)), capture_output=True, text=True,
                       timeout=600)
    print(r.stdout[-4000:])
    return r


def test_site_from_ini_inventory_with_string_values(apt_repos: Path, tmp_path: Path) -> None:
    """`ansible-playbook -i inventory playbooks/site.yml`, the inventory in INI with
    omdiscd_service_enabled=false on one host: that host installed and never started, the others
    running and finding each other, the settings written as YAML booleans and numbers, which
    omdiscd --check-config accepts; a second run changes nothing."""
    prefix = new_prefix()
    home = Path(tempfile.mkdtemp(prefix="omdi", dir="/tmp"))  # ssh's ControlPath must fit 108 bytes
    lab_dir = tmp_path / "lab"
    inventory = tmp_path / "inventory"
    (inventory / "host_vars").mkdir(parents=True)
    (inventory / "hosts").write_text(INI.format(key=molecule_lab.ssh_key(lab_dir), ssh=REPO / "tests/lab/netns-ssh"))
    for host, text in INI_HOST_VARS.items():
        (inventory / "host_vars" / f"{host}.yml").write_text(text)
    extra = [arg for e in INI_EXTRA for arg in ("-e", e)]
    try:
        with molecule_lab.booted(lab_dir, prefix, str(apt_repos)) as (c1, c2, c3):
            t0 = time.monotonic()
            first = playbook(inventory / "hosts", *extra, home=home, prefix=prefix)
            print(f"first run: {time.monotonic() - t0:.1f} s")
            assert first.returncode == 0, first.stdout[-8000:] + first.stderr

            for c, node_id in ((c1, 201), (c2, 202), (c3, 203)):
                written = yaml.safe_load(c.sh("cat /etc/omdiscd/conf.d/50-ansible.yaml").stdout)
                assert typed(written) == typed(ini_settings(node_id)), c.name
                check = c.sh("omdiscd --check-config", check=False)
                assert check.returncode == 0, f"{c.name}: {check.stderr}"
            # c3: omdiscd_service_enabled=false - installed, stopped, disabled, never started at all
            assert unit(c3) == {"ActiveState": "inactive", "UnitFileState": "disabled",
                                "ExecMainStartTimestampMonotonic": "0"}
            for c in (c1, c2):
                assert {k: unit(c)[k] for k in ("ActiveState", "UnitFileState")} == \
                    {"ActiveState": "active", "UnitFileState": "enabled"}, c.name

            def maps() -> dict[str, set[int]]:
                return {c.name: entries_ids(json.loads(c.sh("showmap --json").stdout)["entries"]) for c in (c1, c2)}

            wait_for(lambda: all(ids == {201, 202} for ids in maps().values()), 30, interval=0.5,
                     what="c1 and c2 to list each other, and only each other")

            t0 = time.monotonic()
            second = playbook(inventory / "hosts", *extra, home=home, prefix=prefix)
            print(f"second run: {time.monotonic() - t0:.1f} s")
            assert second.returncode == 0, second.stdout[-8000:] + second.stderr
            recap = second.stdout[second.stdout.rindex("PLAY RECAP"):]
            assert recap.count(" changed=0 ") == 3 and recap.count(" failed=0 ") == 3, recap
            assert unit(c3)["ActiveState"] == "inactive"
    finally:
        shutil.rmtree(home, ignore_errors=True)
        left = sweep(prefix)
    assert left == [], f"the lab left namespaces: {left}"
