"""The pure core: everything omdiscd decides, with no I/O of its own.

The wire protocol, node ids, the membership, the openMosix table, configuration parsing, the engine
and what it conducts (joining, answers, snapshots, gateway rules, the guard, the chronicle, failure
detection in `detection/`), the cluster key's MAC and replay window, the throttle's timing, what
state.json and the map document say, and the records all of them are made of. Clocks and randomness
are passed in; no module here imports os, socket, time, asyncio, subprocess, select, selectors or
signal, nor anything of omdisc.shell or the faces (tests/unit/test_architecture.py holds it to
that)."""
