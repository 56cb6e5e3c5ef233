"""Failure detection (docs/protocol.md, "Failure detection"): unicast probes between neighbours on
a ring, SWIM style, and a short multicast suspicion. Three levels, each knowing more than the one
below it and owning it:

- timers.py, Timers: one node's probes, the PINGs it relays for others, its suspicions and checks,
  its local health. It knows nodes by address only: at each tick it is told whom to probe.
- ring.py, Ring: the ring over the membership: who probes whom, whom to ask for help, who may judge
  whom, and what a PING, ACK, PING_REQ, SUSPECT or DEAD means here.
- conductor.py, FailureDetection: what the engine sees: whether we probe at all (no Ring when probes
  are off), where each probe goes out, the refutation said twice, the members taken out of the map,
  and how far apart announcements may grow.

None of them sends: they answer with Sends, which the engine numbers, encodes and signs.

Why a ring and not SWIM's random target: every node knows every member (multicast), so each member
is given `monitors` probers deterministically and a crash is noticed within one probe interval,
not after a geometric wait. Why the suspicion can be short (memberlist's grows with log N): the
suspect hears the SUSPECT by multicast and refutes it with one datagram, no gossip has to reach it.
"""
