"""Benchmark: what the omdiscd program imports, `python -X importtime`, the median of several starts;
the daemon's lines apart from those of its front's child (omdisc/front.py), which would interleave
on a shared stderr. Prints the slowest lines of each; asserts nothing.

  python -m tests.bench.importtime [--runs N] [--lines K] [--python PATH]

Each start is `omdiscd --version` as the package runs it (debian/sbin/omdiscd, Debian's python3
-S): the daemon imports all it runs with before it reads the front's answer. In the measured
program the child's stderr goes to a file of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

from tests.lab.netlab import PACKAGED_PROGRAM, REPO, as_installed

# os.fork wrapped: in the child, stderr (where -X importtime writes) is the file named in argv[1]
PROGRAM = """
import os, sys
log = sys.argv.pop(1)
fork = os.fork
def split():
    pid = fork()
    if pid == 0:
        os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
    return pid
os.fork = split
sys.argv[0] = {program!r}
exec(compile(open(sys.argv[0]).read(), sys.argv[0], "exec"))
"""

Lines = dict[str, list[tuple[int, int]]]  # module line (indented as printed) -> (self, cumulative) per run


def parse(text: str, into: Lines) -> int:
    """Add one run's lines; its total: the sum of the outermost lines' cumulative times (us). The
    child's outermost lines are nested under omdisc.daemon, whose import forked it."""
    rows = []
    for line in text.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            own, cumulative, name = line[len("import time:"):].split("|")
            into[name.rstrip()].append((int(own), int(cumulative)))
            rows.append((len(name) - len(name.lstrip()), int(cumulative)))
    outermost = min((depth for depth, _ in rows), default=0)
    return sum(cumulative for depth, cumulative in rows if depth == outermost)


def table(lines: Lines, runs: int, keep: int) -> list[str]:
    seen = {name: (statistics.median(s for s, _ in v), statistics.median(c for _, c in v))
            for name, v in lines.items() if len(v) * 2 > runs}  # in most runs
    out = ["import time: self [us] | cumulative | imported package"]
    for name, (own, cumulative) in sorted(seen.items(), key=lambda kv: -kv[1][1])[:keep]:
        out.append(f"import time: {own:9.0f} | {cumulative:10.0f} |{name}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--python", default="/usr/bin/python3")
    args = parser.parse_args()
    as_installed()
    daemon: Lines = defaultdict(list)
    front: Lines = defaultdict(list)
    totals: list[tuple[int, int]] = []
    program = PROGRAM.format(program=PACKAGED_PROGRAM[0])
    with tempfile.TemporaryDirectory() as tmp:
        child_log = Path(tmp) / "front"
        for _ in range(args.runs):
            r = subprocess.run([args.python, "-S", "-X", "importtime", "-c", program, str(child_log), "--version"],
                               capture_output=True, text=True, cwd=REPO, check=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
            totals.append((parse(r.stderr, daemon), parse(child_log.read_text(), front)))
    print(f"omdiscd --version, {args.runs} starts ({args.python} -S): the daemon's imports "
          f"{statistics.median(t for t, _ in totals) / 1000:.1f} ms, its front's child's "
          f"{statistics.median(t for _, t in totals) / 1000:.1f} ms (medians)\n")
    print("the daemon:", *table(daemon, args.runs, args.lines), "", "its front's child:",
          *table(front, args.runs, args.lines // 2), sep="\n")


if __name__ == "__main__":
    main()
