#!/usr/bin/env bash
# Build omdiscd_VERSION_all.deb from this tree with dpkg-buildpackage, in a scratch copy.
# Usage: tools/builddeb.sh OUTDIR [VERSION]
#   VERSION: build as this newer version (a changelog entry is added to the copy), e.g. 0.1.0+1
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
version=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

src=$work/omdiscd
mkdir -p "$src"
# What git tracks and what it would track (new files), never build products or the venv.
(cd "$top" && git ls-files -z -co --exclude-standard) | (cd "$top" && xargs -0 cp -a --parents -t "$src")
if [[ -n $version ]]; then
    {
        printf 'omdiscd (%s) bookworm; urgency=medium\n\n  * Rebuild as %s.\n\n' "$version" "$version"
        printf ' -- omdisc developers <omdisc@lists.example.org>  %s\n\n' "$(date -R)"
        cat "$src/debian/changelog"
    } >"$src/debian/changelog.new"
    mv "$src/debian/changelog.new" "$src/debian/changelog"
fi
# Debian's own python3 and tools, whatever else is first on PATH (pyenv, a venv). Source and binary:
# lintian checks both from the .changes (the source's fields: Standards-Version, debian/source).
(cd "$src" && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc) >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }
cp "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$work"/*.dsc "$work"/*.tar.* "$out"/
cp "$work/build.log" "$out/build.log"
ls "$out"/*.deb
