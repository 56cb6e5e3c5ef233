"""What a SNAPSHOT tells, and what a receiver makes of where its records are. Pure."""

from __future__ import annotations

from collections.abc import Callable

from omdisc.core.membership import Claim, Member, Membership
from omdisc.core.protocol import FLAG_GATEWAY, MEMBER_INDIRECT, IPAddress, MemberRecord, Message

AliveAt = Callable[[Member, float], "float | None"]  # when the failure detector last knew a member alive


def records_for(membership: Membership, interface: str, routing: bool, now: float,
                alive_at: AliveAt = lambda m, now: None) -> list[MemberRecord]:
    """What a SNAPSHOT on `interface` tells: what we heard first-hand (never hearsay, so a made-up
    node goes no further than the host that made it up), the most recently heard first. A host
    that does not route between its networks tells each only of the nodes it heard there: it must
    not join them itself. A record's age is from when we last heard the node, or from when our
    probes last knew it alive if that is later (`alive_at`): nodes announce rarely once probes
    find failures, and a joiner of an older release drops a record older than its dead_interval."""
    members = sorted(membership.firsthand(), key=lambda m: (m.last_heard, str(m.primary)), reverse=True)
    # the joiner is told too: the other nodes joining at the same time learn from this SNAPSHOT as
    # well, and a node about to answer sees that its knowledge of the joiner was told
    return [m.record(now, MEMBER_INDIRECT if m.via is not None or m.interface != interface else 0, alive_at(m, now))
            for m in members
            if routing or not interface or m.interface == interface]


RecordPath = tuple[IPAddress | None, bool]  # (the gateway we reach a record's node through, whether that is known)


def paths(msg: Message, claim: Claim, membership: Membership) -> Callable[[MemberRecord], RecordPath]:
    """For a SNAPSHOT: through which gateway we reach each node it tells of, and whether that is
    known. What depends on the SNAPSHOT alone is worked out once, not once per record."""
    gateways: list[IPAddress] | None = None

    def the_gateway_here() -> IPAddress | None:
        nonlocal gateways
        if gateways is None:
            gateways = [m.primary for m in membership.members.values()
                        if m.flags & FLAG_GATEWAY and m.firsthand and m.via is None and m.interface == claim.interface]
        return gateways[0] if len(gateways) == 1 else None

    def path_of(rec: MemberRecord) -> RecordPath:
        indirect = bool(rec.flags & MEMBER_INDIRECT)
        if claim.via is not None:  # the SNAPSHOT came through a gateway
            if claim.via in rec.addresses:
                return None, True  # the gateway itself, our neighbour
            return (claim.via, True) if not indirect else (None, False)
        if not indirect:
            return None, True  # on the sender's network, which is ours
        if msg.flags & FLAG_GATEWAY:
            return msg.origin, True
        gw = the_gateway_here()
        return gw, gw is not None

    return path_of
