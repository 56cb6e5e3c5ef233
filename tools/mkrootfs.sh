#!/usr/bin/env bash
# Debootstrap the bookworm rootfs the systemd-container tests boot, once; later runs reuse it.
# The mirror is the one this machine's apt already uses (no host is named here).
# Usage: tools/mkrootfs.sh [DIR]   (default /var/cache/omdisc/rootfs-bookworm)
set -euo pipefail
dir=${1:-/var/cache/omdisc/rootfs-bookworm}
# Bump when the package list changes, so a stale cache is rebuilt. python3-debian: what Ansible's
# deb822_repository needs on a target (the containers have no way out to a mirror to fetch it).
# autopkgtest, dpkg-dev (its dpkg-source unpacks the .dsc): the package's DEP-8 tests run in a booted
# container (virt server null), never on the host.
stamp_want="v4"
pkgs=systemd,systemd-sysv,dbus,iproute2,openssh-server,python3,python3-apt,python3-yaml,python3-netifaces,python3-systemd,man-db,sudo,apt-utils,python3-debian,autopkgtest,dpkg-dev

if [[ -f $dir/.omdisc-rootfs && $(cat "$dir/.omdisc-rootfs") == "$stamp_want" ]]; then
    echo "rootfs: cached at $dir"
    exit 0
fi

mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
[[ -n $mirror ]] || mirror=$(awk '$1=="deb" && $3 ~ /bookworm/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[[ -n $mirror ]] || { echo "mkrootfs: cannot find this machine's Debian mirror in its apt sources" >&2; exit 1; }

tmp=$dir.tmp.$$
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$(dirname "$dir")"
echo "rootfs: debootstrapping bookworm into $dir (once; cached afterwards)"
debootstrap --variant=minbase --include="$pkgs" bookworm "$tmp" "$mirror" >"$tmp.log" 2>&1 \
    || { tail -n 20 "$tmp.log" >&2; rm -f "$tmp.log"; exit 1; }
rm -f "$tmp.log"
# Containers boot with root login over SSH only by key; no console getty to wait for.
chroot "$tmp" systemctl mask getty@tty1.service console-getty.service systemd-resolved.service >/dev/null 2>&1 || true
chroot "$tmp" systemctl enable ssh.service >/dev/null 2>&1 || true
sed -i 's/^#\?PermitRootLogin.*/PermitRootLogin prohibit-password/' "$tmp/etc/ssh/sshd_config"
echo "omdisc-lab" >"$tmp/etc/hostname"
# Each container makes its own host keys at boot (on its overlay), not one set baked in for all.
rm -f "$tmp"/etc/ssh/ssh_host_*
mkdir -p "$tmp/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    >"$tmp/etc/systemd/system/ssh.service.d/hostkeys.conf"
echo "$stamp_want" >"$tmp/.omdisc-rootfs"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "rootfs: ready at $dir"
