"""Event handlers in real daemons: a join and a leave run the handler with the event in its
environment and the map (showmap --json) on stdin; a hung handler is killed while discovery goes on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.lab.netlab import Lab, wait_for


def recorder(directory: Path, name: str = "handler", body: str = "") -> Path:
    """A handler that keeps each run's OMDISC_* environment and stdin as a pair of files."""
    runs = directory / f"{name}-runs"
    runs.mkdir()
    path = directory / name
    path.write_text("#!/bin/sh\n"
                    f"f={runs}/$(date +%s%N).$$\n"
                    "env | grep '^OMDISC_' | sort > $f.tmp\n"
                    "cat > $f.json\n"
                    "mv $f.tmp $f.env\n" + body)
    path.chmod(0o755)
    return path


def runs(handler: Path) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """(environment, stdin map) of every finished run, oldest first."""
    out = []
    for env_file in sorted((handler.parent / f"{handler.name}-runs").glob("*.env")):
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        out.append((env, json.loads(env_file.with_suffix(".json").read_text())))
    return out


def member_ids(doc: dict[str, Any]) -> set[int]:
    return {m["id"] for m in doc.get("members", [])}


def test_join_and_leave_run_the_handler_with_the_event_and_the_map(lab: Lab) -> None:
    lan = lab.lan()
    a = lab.node("a", lan, "198.18.1.10/15")
    b = lab.node("b", lan, "198.18.1.20/15")
    handler = recorder(lab.tmp)
    da = a.start(dead_interval=60.0, handlers=[{"events": ["join", "leave"], "run": str(handler)}])
    db = b.start(dead_interval=60.0)
    b_id = 256 + 20

    def event(kind: str) -> tuple[dict[str, str], dict[str, Any]] | None:
        return next((r for r in runs(handler) if r[0]["OMDISC_EVENT"] == kind), None)

    joined = wait_for(lambda: event("join"), 10, what="the handler to run for b's join")
    env, doc = joined
    assert env == {"OMDISC_EVENT": "join", "OMDISC_NODE_ID": str(b_id), "OMDISC_NODE_ADDRESSES": "198.18.1.20"}
    assert doc["node_id"] == 256 + 10 and b_id in member_ids(doc)  # the map as it is when the handler runs
    assert {"entries", "members", "stats"} <= set(doc)

    assert db.stop() == 0
    left = wait_for(lambda: event("leave"), 10, what="the handler to run for b's leave")
    env, doc = left
    assert env == {"OMDISC_EVENT": "leave", "OMDISC_NODE_ID": str(b_id), "OMDISC_NODE_ADDRESSES": "198.18.1.20"}
    assert b_id not in member_ids(doc)
    # state.json follows within a second
    wait_for(lambda: da.state()["stats"].get("handler_runs", 0) >= 2, 3, what="the runs counted")
    assert da.state()["stats"].get("handler_failures", 0) == 0
    # logged once the program has exited and its output is read: just after its files are written
    wait_for(lambda: "for join of #276 exited 0" in da.log and "for leave of #276 exited 0" in da.log, 3,
             what="both runs in the log")


def test_a_hung_handler_is_killed_and_discovery_goes_on(lab: Lab) -> None:
    lan = lab.lan()
    a = lab.node("a", lan, "198.18.1.10/15")
    others = [lab.node(f"n{i}", lan, f"198.18.1.{20 + i}/15") for i in range(2)]
    hung = recorder(lab.tmp, "hung", "sleep 60\n")
    da = a.start(handlers=[{"events": ["join"], "run": str(hung)}], handler_timeout=1.0)
    others[0].start()
    wait_for(lambda: da.state().get("stats", {}).get("handler_runs", 0) >= 1, 10, what="the hung handler to start")
    others[1].start()  # a join while the handler hangs: in the map in the usual time
    wait_for(lambda: len(da.ids()) == 3, 5, what="the second join in a's map while the handler hangs")
    wait_for(lambda: da.state()["stats"].get("handler_timeouts", 0) >= 1, 5, what="the hung handler to be killed")
    assert "did not finish within 1s: killed" in da.log


def test_expire_collision_and_map_events_reach_the_handler(lab: Lab) -> None:
    lan = lab.lan()
    a = lab.node("a", lan, "198.18.1.10/15")
    b = lab.node("b", lan, "198.18.1.20/15")
    twin = lab.node("twin", lan, "198.19.1.10/15")  # 256 x 1 + 10: the same id as a (266), a higher address
    handler = recorder(lab.tmp)
    da = a.start(announce_interval=0.5, dead_interval=2.0,
                 handlers=[{"events": ["expire", "collision", "map"], "run": str(handler)}])
    db = b.start(announce_interval=0.5, dead_interval=2.0)
    wait_for(lambda: any(r[0]["OMDISC_EVENT"] == "map" and 276 in {e["id"] for e in r[1]["entries"]}
                         for r in runs(handler)), 10, what="a map event with b in the table")
    twin.start(announce_interval=0.5, dead_interval=2.0)
    collided = wait_for(lambda: next((r for r in runs(handler) if r[0]["OMDISC_EVENT"] == "collision"), None), 10,
                        what="the collision event")
    assert collided[0]["OMDISC_NODE_ID"] == "266"
    db.proc.kill()  # no LEAVE: it expires
    db.proc.wait()
    expired = wait_for(lambda: next((r for r in runs(handler) if r[0]["OMDISC_EVENT"] == "expire"), None), 10,
                       what="the expire event")
    assert expired[0] == {"OMDISC_EVENT": "expire", "OMDISC_NODE_ID": "276", "OMDISC_NODE_ADDRESSES": "198.18.1.20"}
    assert 276 not in member_ids(expired[1])
    assert da.alive()
