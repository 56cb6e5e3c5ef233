#!/usr/bin/env bash
# Everything `make demo` and `make test` need on a fresh Debian bookworm machine (run as root):
# Debian packages, then a virtualenv (.venv) with the project and its dev tools from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=(
    iproute2 iputils-ping tcpdump nftables smcroute faketime # labs: namespaces, capture, counters, mrouting, a clock behind
    debootstrap systemd-container                            # booted systemd containers
    debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
    python3-yaml python3-netifaces python3-systemd python3-pytest  # the .deb and its build
    lintian mandoc man-db apt-utils fakeroot build-essential # packaging checks, local apt repo
    openssh-client procps                                    # Ansible over SSH; pgrep/pkill
    gpg gpg-agent gpgconf gpgv git                           # the tests' signed apt repository; the collection from git
    tmux                                                     # showmap --watch in a real terminal
    serf                                                     # make bench: the peer beside omdisc
    prometheus-node-exporter                                 # reads the metrics file (its service is never started)
    prometheus dnsmasq-base                                  # promtool checks file_sd; dnsmasq serves the hosts file
    python3-venv python3-dev libsystemd-dev pkg-config       # the venv builds systemd-python from PyPI
)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# The tests run node_exporter themselves, on 127.0.0.1, and need only promtool of Prometheus: their
# packaged services have no business here.
for unit in prometheus-node-exporter prometheus; do
    if command -v systemctl >/dev/null && systemctl is-enabled "$unit" >/dev/null 2>&1; then
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
done

venv=.venv
want=$(sha256sum pyproject.toml tools/setup.sh | sha256sum | cut -c1-16)
if [[ ! -f $venv/.omdisc-stamp || $(cat "$venv/.omdisc-stamp") != "$want" ]]; then
    echo "setup: building $venv"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
    "$venv/bin/pip" install -q --disable-pip-version-check -e ".[dev,ansible]"
    echo "$want" >"$venv/.omdisc-stamp"
fi
