"""The Debian package as users meet it: built, linted, installed by apt in booted systemd
containers, then reloaded, restarted, stopped, killed, run by its init script, upgraded and purged."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from tests.lab.containers import Cluster, Container
from tests.lab.netlab import REPO, entries_ids, wait_for
from tests.system.conftest import NEWER, VERSION, use_repo

JOIN = "b37eb46cae3441e39dc257f39a31b7a7"


def test_lintian_has_no_tags_at_all_on_the_source_and_the_binary(debs: dict[str, Path]) -> None:
    changes = next(debs["current"].parent.glob("*.changes"))
    assert re.search(r"^ \S+ \d+ omdiscd_\S+\.dsc$", changes.read_text(), flags=re.M)  # the source is checked too
    r = subprocess.run(["lintian", "--fail-on", "error,warning", "-I", "--pedantic", "--show-overrides",
                        str(changes)], capture_output=True, text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    tags = [line for line in r.stdout.splitlines() if re.match(r"^[EWIPXO]: ", line)]
    print(f"lintian (errors to pedantic, overrides shown): {len(tags)} tags\n{r.stdout}")
    assert tags == [] and r.returncode == 0


def test_the_packaged_unit_is_the_one_in_the_tree_and_debian_carries_no_copy(debs: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(debs["current"]), str(tmp_path)], check=True)
    assert (tmp_path / "lib/systemd/system/omdiscd.service").read_bytes() == \
        (REPO / "systemd" / "omdiscd.service").read_bytes()
    assert list((REPO / "debian").glob("*.service")) == []
    # dh_installsystemd still acts on it: enabled, started, restarted after an upgrade
    postinst = subprocess.run(["dpkg-deb", "-I", str(debs["current"]), "postinst"], check=True,
                              capture_output=True, text=True).stdout
    assert "deb-systemd-helper unmask 'omdiscd.service'" in postinst
    assert "deb-systemd-invoke $_dh_action 'omdiscd.service'" in postinst


def ids(c: Container) -> set[int]:
    r = c.sh("showmap --json", check=False)
    if r.returncode != 0:
        return set()
    return entries_ids(json.loads(r.stdout)["entries"])


def converged(cluster: Cluster, n: int, among: list[Container] | None = None) -> bool:
    return all(len(ids(c)) == n for c in (among or cluster.containers))


def main_pid(c: Container) -> str:
    return c.sh("systemctl show -p MainPID --value omdiscd").stdout.strip()


def kernel_seen(c: Container) -> dict[str, str]:
    """What the daemon under the unit reports of the openMosix kernel (showmap --json, "kernel")."""
    report: dict[str, str] = json.loads(c.sh("showmap --json").stdout)["kernel"]
    return report


def unit_sees(c: Container, path: str) -> bool:
    """Whether `path` exists in the /proc the service's own processes have (its mount namespace)."""
    return c.sh(f"nsenter -m -t {main_pid(c)} test -e {path}", check=False).returncode == 0


def restarted(c: Container, pid: str) -> bool:
    return c.sh("systemctl is-active omdiscd", check=False).stdout.strip() == "active" and main_pid(c) not in ("0", pid)


def exposure(c: Container) -> float:
    out = c.sh("systemd-analyze security --no-pager omdiscd").stdout
    m = re.search(r"Overall exposure level for omdiscd.service: (\d+\.\d+)", out)
    assert m, out
    return float(m.group(1))


def journal(c: Container, lines: int | None = None) -> str:
    """The service's messages, all or the last `lines`."""
    tail = f" -n {lines}" if lines else ""
    return c.sh(f"journalctl -u omdiscd -o cat{tail}").stdout


def first_maps(c: Container) -> list[int | None]:
    """How many nodes the first map of each of the service's lives had (the daemon logs each
    write); None for a life that has written none yet."""
    lives = re.split(r"^Starting omdiscd\.service.*$", journal(c), flags=re.M)[1:]
    return [int(m.group(1)) if (m := re.search(r"^map written: (\d+) nodes", life, flags=re.M)) else None
            for life in lives]


def knows_every_node(cluster: Cluster, c: Container) -> bool:
    """Whether c's running daemon has heard of every other container: its own state.json, not its
    map, which a restarted daemon keeps from its last life until then."""
    try:
        state = json.loads(c.sh("cat /run/omdiscd/state.json", check=False).stdout)
    except ValueError:
        return False
    return bool(state.get("pid") == int(main_pid(c)) and len(state["members"]) == len(cluster.containers) - 1)


def left_lines(c: Container, node_id: int) -> int:
    """How many times c's daemon logged node `node_id` leaving (a LEAVE it took)."""
    return len(re.findall(rf"^node #{node_id} \S+ (?:left|is leaving)", journal(c), flags=re.M))


def test_installed_by_apt_enabled_active_and_converged(cluster3: Cluster) -> None:
    for c in cluster3.containers:
        assert c.sh("dpkg-query -W -f '${Version}' omdiscd").stdout == VERSION
        assert c.sh("systemctl is-enabled omdiscd").stdout.strip() == "enabled"
        assert c.sh("systemctl is-active omdiscd").stdout.strip() == "active"
        # the package's system user (User=omdiscd)
        uid, user = c.sh(f"stat -c '%u %U' /proc/{main_pid(c)}").stdout.split()
        assert user == "omdiscd" and 0 < int(uid) < 1000
    wait_for(lambda: converged(cluster3, 3), 20, what="3 containers in every map")
    # showmap reads, as `setpe -r` does: on any user's PATH, and the map readable by all
    assert cluster3.containers[0].sh("runuser -u nobody -- sh -c 'command -v showmap && showmap'").stdout \
        .startswith("/usr/bin/showmap\n# this is openMosix node #11")
    status = cluster3.containers[0].sh("systemctl show -p StatusText --value omdiscd").stdout
    assert "3 nodes in the map" in status and "node #11" in status


def test_journal_has_structured_fields_per_peer(cluster3: Cluster) -> None:
    c1 = cluster3.containers[0]
    peer = cluster3.address(1)
    out = c1.sh(f"journalctl -u omdiscd -o json OMDISC_PEER={peer} MESSAGE_ID={JOIN}").stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert records, "no join event for the peer in the journal"
    assert records[0]["OMDISC_PEER_ID"] == "12" and records[0]["OMDISC_NODE_ID"] == "11"
    assert "joined" in records[0]["MESSAGE"]
    assert "Traceback" not in journal(c1)


def test_man_pages_render_in_the_container(cluster3: Cluster) -> None:
    c1 = cluster3.containers[0]
    page = c1.sh("man -P cat omdiscd 2>/dev/null").stdout
    assert "openMosix auto-discovery daemon" in page and "SIGUSR1" in page
    assert "multicast_ttl" in c1.sh("man -P cat 5 omdiscd.yaml 2>/dev/null").stdout
    showmap_page = c1.sh("man -P cat showmap 2>/dev/null").stdout.replace("\u2010", "-")  # groff's Unicode hyphen
    assert "--alpha-dir" in showmap_page


def test_security_exposure(cluster3: Cluster) -> None:
    level = exposure(cluster3.containers[0])
    print(f"systemd-analyze security omdiscd: exposure {level}")
    assert level <= 2.0


def test_the_unit_sees_proc_hpc_only_where_it_exists(cluster3: Cluster) -> None:
    """A container's procfs cannot have a /proc/hpc: the generator runs against a stand-in /proc of
    its own (a tmpfs in a mount namespace), and what it makes is then applied to the real unit."""
    c1 = cluster3.containers[0]
    # here (no /proc/hpc): the generator did nothing at boot, the unit's /proc shows processes only
    assert c1.sh("systemctl show -p ProcSubset --value omdiscd").stdout.strip() == "pid"
    assert "openmosix" not in c1.sh("systemctl cat omdiscd").stdout
    assert kernel_seen(c1) == {"mode": "auto", "map": "alpha files in /run/omdiscd", "proc_hpc": "hidden"}
    assert not unit_sees(c1, "/proc/cpuinfo") and unit_sees(c1, "/proc/self/status")
    tight = exposure(c1)
    c1.sh("unshare -m sh -c 'mount -t tmpfs stand-in /proc && mkdir -p /proc/hpc/admin && "
          "/lib/systemd/system-generators/omdiscd-generator /run/gen /run/gen /run/gen.late'")
    made = c1.sh("cat /run/gen.late/omdiscd.service.d/*.conf").stdout
    assert "\nProcSubset=all\n" in made
    c1.sh("mkdir -p /run/systemd/system/omdiscd.service.d && cp /run/gen.late/omdiscd.service.d/*.conf "
          "/run/systemd/system/omdiscd.service.d/ && systemctl daemon-reload")
    pid = main_pid(c1)
    c1.sh("systemctl restart omdiscd")
    wait_for(lambda: restarted(c1, pid), 15, what="the restart with the generator's drop-in")
    try:
        assert c1.sh("systemctl show -p ProcSubset --value omdiscd").stdout.strip() == "all"
        # the daemon looked at a whole /proc: /proc/hpc would have been seen; none in a container
        wait_for(lambda: kernel_seen(c1)["proc_hpc"] == "absent", 10, what="the new daemon's report")
        assert unit_sees(c1, "/proc/cpuinfo")  # a non-process /proc entry, as /proc/hpc is
        assert c1.sh(f"stat -c %u /proc/{main_pid(c1)}").stdout.strip() != "0"  # the system user again
        print(f"systemd-analyze security omdiscd: {tight} (ProcSubset=pid), {exposure(c1)} with the generator's "
              "ProcSubset=all (an openMosix kernel only)")
    finally:
        c1.sh("rm -r /run/systemd/system/omdiscd.service.d /run/gen.late && systemctl daemon-reload")
    pid = main_pid(c1)
    c1.sh("systemctl restart omdiscd")
    wait_for(lambda: restarted(c1, pid) and kernel_seen(c1)["proc_hpc"] == "hidden", 15, what="back to pid only")


def test_the_live_kernel_drop_in_runs_the_daemon_as_root_and_says_why_live_cannot_start(cluster3: Cluster) -> None:
    c1 = cluster3.containers[0]
    dropin = "/etc/systemd/system/omdiscd.service.d/live-kernel.conf"
    c1.sh(f"mkdir -p {Path(dropin).parent} && cp /usr/share/doc/omdiscd/examples/live-kernel.conf {dropin} "
          "&& systemctl daemon-reload")
    try:
        pid = main_pid(c1)
        c1.sh("systemctl restart omdiscd")
        wait_for(lambda: restarted(c1, pid), 15, what="the restart as root")
        assert c1.sh(f"stat -c %u /proc/{main_pid(c1)}").stdout.strip() == "0"
        assert c1.sh("systemctl show -p ProcSubset --value omdiscd").stdout.strip() == "all"
        wait_for(lambda: kernel_seen(c1).get("proc_hpc") == "absent", 10, what="the root daemon's report")
        c1.sh("mkdir -p /etc/omdiscd/conf.d && echo 'kernel: live' > /etc/omdiscd/conf.d/90-live.yaml")
        assert c1.sh("systemctl restart omdiscd", check=False).returncode != 0
        assert "kernel mode 'live' but /proc/hpc/admin does not exist (no openMosix kernel?)" in journal(c1, 20)
    finally:
        c1.sh(f"rm -rf {Path(dropin).parent} /etc/omdiscd/conf.d && systemctl daemon-reload && "
              "systemctl reset-failed omdiscd && systemctl restart omdiscd")
    assert c1.sh("systemctl is-active omdiscd").stdout.strip() == "active"
    assert c1.sh(f"stat -c %u /proc/{main_pid(c1)}").stdout.strip() != "0"
    wait_for(lambda: converged(cluster3, 3), 10, what="c1 back in every map")


def test_restart_sends_no_leave_the_peers_keep_the_node_and_take_its_next_life(cluster3: Cluster) -> None:
    c1, c2, c3 = cluster3.containers

    def seen_incarnation(c: Container) -> int:
        return next(m["incarnation"] for m in json.loads(c.sh("showmap --json").stdout)["members"] if m["id"] == 11)

    wait_for(lambda: converged(cluster3, 3), 10, what="3 in every map")
    before = {c.name: (seen_incarnation(c), left_lines(c, 11)) for c in (c2, c3)}
    pid = main_pid(c1)
    c1.sh("systemctl restart omdiscd")  # RestartKillSignal=SIGUSR2

    def next_life_taken() -> bool:  # dead_interval is 35 s: only a LEAVE could drop c1 in the meantime
        assert converged(cluster3, 3, [c2, c3]), "a peer dropped the restarting node"
        return all(seen_incarnation(c) > before[c.name][0] for c in (c2, c3))

    wait_for(next_life_taken, 15, interval=0.1, what="the peers to take c1's next life")
    assert restarted(c1, pid)
    assert all(left_lines(c, 11) == before[c.name][1] for c in (c2, c3))
    assert "stopping for a restart: no LEAVE" in journal(c1, 50)
    # and the next life learns the cluster: after the restarts of the tests before, c1's JOINs may
    # outrun the peers' answer rate (1 a second per source, a burst of 3); a JOIN retry gets it
    wait_for(lambda: knows_every_node(cluster3, c1) and first_maps(c1)[-1] is not None, 10,
             what="c1's next life to know every node and write its map")
    # meanwhile c1's own map kept every node: /run/omdiscd outlived the restart, and the next life
    # held the last map until it knew the others again, not a map of itself alone
    assert first_maps(c1)[-1] == 3, journal(c1, 40)


def test_reload_keeps_the_map(cluster3: Cluster) -> None:
    c1 = cluster3.containers[0]
    wait_for(lambda: knows_every_node(cluster3, c1), 10, what="c1 to know every node")
    c1.sh("sed -i 's/^debug: .*/debug: [membership]/' /etc/omdiscd/omdiscd.yaml && systemctl reload omdiscd")
    # systemctl returns once kill -HUP has run; the daemon says RELOADING=1, then READY=1 when the
    # files are read (milliseconds): "reloading" until then, never "failed" nor a restart
    wait_for(lambda: c1.sh("systemctl is-active omdiscd").stdout.strip() == "active", 10, interval=0.05,
             what="the reload to end")
    try:
        wait_for(lambda: "2 nodes kept" in journal(c1), 10, what="reload logged")
    except TimeoutError as e:  # what the daemon said instead is the diagnosis
        raise AssertionError(f"{e}; c1's journal ends:\n{journal(c1, 40)}") from e
    assert len(ids(c1)) == 3
    assert c1.sh("systemctl show -p NRestarts --value omdiscd").stdout.strip() == "0"


def test_a_cluster_key_reaches_the_sandboxed_service_on_reload_and_never_shows(cluster3: Cluster) -> None:
    c1 = cluster3.containers[0]
    assert "no cluster key: announcements are not authenticated" in journal(c1)
    key = c1.sh("omdiscd --gen-key").stdout.strip()
    for c in cluster3.containers:  # as the docs say: the same key file everywhere, then reload
        c.sh(f"umask 077 && echo '{key}' > /etc/omdiscd/cluster.key")
    for c in cluster3.containers:
        c.sh("systemctl reload omdiscd")
    for c in cluster3.containers:
        wait_for(lambda c=c: "cluster key from /run/omdiscd/cluster.key" in journal(c), 10, what="the key in force")
        assert c.sh("systemctl show -p NRestarts --value omdiscd").stdout.strip() == "0"
    assert c1.sh("stat -c '%a %U' /run/omdiscd/cluster.key").stdout.split()[0] == "400"
    wait_for(lambda: converged(cluster3, 3), 10, what="3 nodes in every map, keyed")

    def refused() -> int:  # datagrams the key did not vouch for (during the reloads: the unkeyed ones)
        return int(json.loads(c1.sh("cat /run/omdiscd/state.json").stdout)["stats"].get("auth", 0))

    time.sleep(2)
    before = refused()
    time.sleep(4)  # two state.json writes at least; every node announces several times, signed
    assert refused() == before and converged(cluster3, 3)
    shown = (c1.sh("journalctl -u omdiscd -o json").stdout + c1.sh("showmap --json").stdout
             + c1.sh("omdiscd --check-config").stdout)
    assert key not in shown and "cluster key: 1 key(s) in /etc/omdiscd/cluster.key" in shown
    c1.sh("chmod 644 /etc/omdiscd/cluster.key")  # readable by all: refused, the service keeps its key
    assert c1.sh("systemctl reload omdiscd", check=False).returncode != 0
    assert "may be read by others than its owner" in journal(c1)
    assert c1.sh("systemctl is-active omdiscd").stdout.strip() == "active"
    c1.sh("chmod 600 /etc/omdiscd/cluster.key && systemctl reload omdiscd")


def test_stop_removes_the_node_from_the_others_at_once(cluster3: Cluster) -> None:
    c1, c2, c3 = cluster3.containers
    c3.sh("systemctl stop omdiscd")
    # dead_interval is 35 s by default: only the LEAVE can explain a drop within 3 s
    wait_for(lambda: converged(cluster3, 2, [c1, c2]), 3, what="LEAVE to drop c3")
    c3.sh("systemctl start omdiscd")
    wait_for(lambda: converged(cluster3, 3), 10, what="c3 back")


def test_killed_service_is_restarted_and_rejoins(cluster3: Cluster) -> None:
    c3 = cluster3.containers[2]
    before = c3.sh("systemctl show -p MainPID --value omdiscd").stdout.strip()
    c3.sh("systemctl kill --kill-whom=main -s KILL omdiscd")  # main: nspawn here cannot list cgroup members
    wait_for(lambda: c3.sh("systemctl show -p NRestarts --value omdiscd").stdout.strip() == "1", 15,
             what="systemd to restart the killed daemon")
    wait_for(lambda: c3.sh("systemctl is-active omdiscd", check=False).stdout.strip() == "active", 15)
    assert c3.sh("systemctl show -p MainPID --value omdiscd").stdout.strip() != before
    wait_for(lambda: converged(cluster3, 3), 10, what="c3 back in every map")


def test_sysvinit_script_runs_the_classic_daemon_unprivileged(cluster3: Cluster) -> None:
    c1, c2, c3 = cluster3.containers
    # the script itself, as without systemd (lsb's init-functions otherwise hands it to systemctl)
    init = "SYSTEMCTL_SKIP_REDIRECT=1 /etc/init.d/omdiscd"
    c3.sh("systemctl stop omdiscd")
    wait_for(lambda: converged(cluster3, 2, [c1, c2]), 3, what="c3 gone")
    c3.sh(f"{init} start")
    assert c3.sh("systemctl is-active omdiscd", check=False).stdout.strip() == "inactive"  # not the unit's
    pid = c3.sh("cat /run/omdiscd/omdiscd.pid").stdout.strip()
    assert c3.sh(f"readlink /proc/{pid}/exe").stdout.strip().startswith("/usr/bin/python3")
    # the system user, as under systemd; the key (the test above left one) staged by root for it
    assert c3.sh(f"stat -c '%u %U' /proc/{pid}").stdout.split()[1] == "omdiscd"
    assert c3.sh(f"stat -c '%u' /proc/{pid}").stdout.strip() != "0"
    assert c3.sh("stat -c '%U %a' /run/omdiscd /run/omdiscd/omdiscd.pid /run/omdiscd/cluster.key").stdout.split() \
        == ["omdiscd", "755", "omdiscd", "644", "omdiscd", "400"]
    assert c3.sh(f"{init} status", check=False).returncode == 0
    wait_for(lambda: converged(cluster3, 3), 10, what="the classic daemon in every map (keyed)")
    # the state directory, out of systemd's private/ (the unit ran before): kept by this daemon
    assert c3.sh("stat -c '%F %U' /var/lib/omdiscd").stdout.strip() == "directory omdiscd"
    life = int(c3.sh("cat /var/lib/omdiscd/incarnation").stdout)
    left_before = [left_lines(c, 13) for c in (c1, c2)]
    c3.sh(f"{init} restart")  # SIGUSR2: no LEAVE, a newer life
    new_pid = c3.sh("cat /run/omdiscd/omdiscd.pid").stdout.strip()
    assert new_pid != pid and int(c3.sh("cat /var/lib/omdiscd/incarnation").stdout) > life
    wait_for(lambda: converged(cluster3, 3), 10, what="the restarted classic daemon in every map")
    assert [left_lines(c, 13) for c in (c1, c2)] == left_before
    c3.sh(f"{init} stop")
    wait_for(lambda: converged(cluster3, 2, [c1, c2]), 3, what="its LEAVE")
    assert c3.sh("test -e /run/omdiscd/omdiscd.pid", check=False).returncode != 0
    # the state as an earlier build's unit (DynamicUser=) left it: systemd moves it back for User=
    kept = int(c3.sh("cat /var/lib/omdiscd/incarnation").stdout)
    c3.sh("mkdir -p -m 0700 /var/lib/private && mv /var/lib/omdiscd /var/lib/private/omdiscd && "
          "ln -s private/omdiscd /var/lib/omdiscd")
    c3.sh("systemctl start omdiscd")
    wait_for(lambda: converged(cluster3, 3), 10, what="the service back")
    assert c3.sh("stat -c '%F %U' /var/lib/omdiscd").stdout.strip() == "directory omdiscd"
    assert c3.sh("test -e /var/lib/private/omdiscd", check=False).returncode != 0
    assert int(c3.sh("cat /var/lib/omdiscd/incarnation").stdout) >= kept  # the last life's, kept in the move


def test_upgrade_keeps_an_edited_conffile_and_restarts(cluster3: Cluster) -> None:
    c2 = cluster3.containers[1]
    c1, c3 = cluster3.containers[0], cluster3.containers[2]
    c2.sh("sed -i 's/^announce_interval: .*/announce_interval: 7.5/' /etc/omdiscd/omdiscd.yaml")
    pid = c2.sh("systemctl show -p MainPID --value omdiscd").stdout.strip()
    left_before = [left_lines(c, 12) for c in (c1, c3)]
    use_repo(c2, "newer")
    r = c2.sh("apt-get install -y -q omdiscd")
    assert "Configuration file" not in r.stdout  # no conffile prompt
    assert c2.sh("dpkg-query -W -f '${Version}' omdiscd").stdout == NEWER
    assert "announce_interval: 7.5" in c2.sh("cat /etc/omdiscd/omdiscd.yaml").stdout
    assert c2.sh("systemctl show -p MainPID --value omdiscd").stdout.strip() != pid
    assert c2.sh("systemctl is-active omdiscd").stdout.strip() == "active"
    wait_for(lambda: converged(cluster3, 3), 10, what="the upgraded node back in every map")
    # the postinst's restart is a restart (RestartKillSignal=SIGUSR2): the peers never saw c2 leave
    assert "stopped for a restart (no LEAVE sent)" in journal(c2)
    assert [left_lines(c, 12) for c in (c1, c3)] == left_before


def test_purge_leaves_nothing_behind(cluster3: Cluster) -> None:
    c1 = cluster3.containers[0]
    c1.sh("apt-get purge -y -q omdiscd")
    left = c1.sh("ls -d /etc/omdiscd /run/omdiscd /usr/sbin/omdiscd /usr/bin/showmap "
                 "/usr/lib/python3/dist-packages/omdisc /lib/systemd/system/omdiscd.service "
                 "/etc/systemd/system/multi-user.target.wants/omdiscd.service 2>/dev/null", check=False).stdout
    assert left == ""
    assert c1.sh("dpkg -l omdiscd 2>/dev/null | grep -c '^.i'", check=False).stdout.strip() in ("", "0")
    found = c1.sh("find / -xdev \\( -name '*omdisc*' \\) -not -path '/srv/*' -not -path '/proc/*' "
                  "-not -path '/var/lib/dpkg/*' -not -path '/var/cache/apt/*' -not -path '/var/lib/apt/lists/*' "
                  "-not -path '/var/log/*' -not -path '/var/cache/man/*' -not -path '/.omdisc-rootfs' 2>/dev/null",
                  check=False).stdout.split()  # man-db's cat cache of pages we displayed is man-db's
    assert found == [], found
