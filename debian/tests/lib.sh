# Shared by the smoke tests (sourced, not a test). POSIX sh.
set -eu

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# Run "$@" until it succeeds, for at most $1 tenths of a second (the service answers in
# milliseconds; the bound is for a loaded testbed).
await() {
    tries=$1
    shift
    until "$@"; do
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || return 1
        sleep 0.1
    done
}

main_pid() {
    systemctl show -p MainPID --value omdiscd
}

# This node's id, as the daemon works it out here: "# in force here: ... node #N (...)".
node_id() {
    omdiscd --check-config | sed -n 's/^# in force here: .* node #\([0-9]*\) .*/\1/p'
}

# The map's node ids (ranges expanded), one per line, from showmap --json.
map_ids() {
    showmap --json | python3 -c '
import json, sys
doc = json.load(sys.stdin)
for e in doc["entries"]:
    if not e.get("alias"):
        for i in range(e.get("count", 1)):
            print(e["id"] + i)'
}
