"""Failure detection (docs/protocol.md, "Failure detection"): unicast probes between neighbours on
rings drawn anew each round, SWIM style, and a short multicast suspicion. Four modules, each knowing
more than the one before it and owning it:

- timers.py, Timers: one node's probes, the PINGs it relays for others, its suspicions and checks,
  its local health. It knows nodes by address only: at each tick it is told whom to probe.
- rounds.py, Rounds: the rings of our networks, drawn anew each probe round: whom we probe, and
  who may judge whom.
- ring.py, Ring: what a PING, ACK, PING_REQ, SUSPECT or DEAD means here, whom to ask for help,
  our probe round, the nodes we took out (for DEADs still coming and reconnect PINGs).
- conductor.py, FailureDetection: what the engine sees: whether we probe at all (no Ring when probes
  are off), where each probe goes out, the refutation said twice, the members taken out of the map,
  the announcement after a healed partition, and how far apart announcements may grow.

None of them sends: they answer with Sends, which the engine numbers, encodes and signs.

Why rings drawn anew each round and not SWIM's random target: every node knows every member
(multicast), so each member can be given exactly one prober a round and a crash is noticed
within a round or two, not after a geometric wait; and as the prober changes each round, no
choice of addresses makes a host a node's only prober. Why the suspicion can be short
(memberlist's grows with log N): the suspect hears the SUSPECT by multicast and refutes it with
one datagram, no gossip has to reach it.
"""
