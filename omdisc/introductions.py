"""Introductions (docs/protocol.md, "Joining", step 7): a settled node that missed a newcomer's
JOIN learns of it from the SNAPSHOTs that answer it, since every part names the joiner. It does
not take the joiner from them: a host could name anyone. It PINGs the joiner, and the joiner's
ACK, sent from the joiner itself, makes it a member as an announcement would. Without this, a
node that lost the JOIN waits for the newcomer's next announcement, which at 1,000 nodes comes
160 s later. Pure; the clock is injected; what a peer can make us send is bounded.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from .detector import Send
from .protocol import IPAddress, MsgType
from .ratelimit import KeyedBuckets

MAX_PENDING = 64  # joiners being PINGed at once
TRIES = 3  # PINGs to a joiner before we leave it to its next announcement
TIMEOUT = 0.5  # seconds to wait for each ACK
RATE, BURST = 8.0, 16.0  # introductions begun a second: what made-up SNAPSHOTs can make us send


@dataclass(slots=True)
class _Pending:
    incarnation: int
    interface: str
    nonce: int
    tries: int  # PINGs still to send after this one
    deadline: float


class Introductions:
    def __init__(self, rng: random.Random, stats: Counter[str]) -> None:
        self.stats = stats
        self._pending: dict[IPAddress, _Pending] = {}
        self._budget = KeyedBuckets(RATE, BURST, max_keys=1)
        self._nonce = rng.getrandbits(31)

    def heard_of(self, joiner: IPAddress, incarnation: int, interface: str, now: float) -> Send | None:
        """A SNAPSHOT answered `joiner`, a node we do not know: the PING that asks it to speak."""
        if joiner in self._pending:
            return None
        if len(self._pending) >= MAX_PENDING or not self._budget.take("all", now):
            self.stats["introductions_refused"] += 1
            return None
        self.stats["introductions"] += 1
        p = self._pending[joiner] = _Pending(incarnation, interface, 0, TRIES - 1, 0.0)
        return self._ping(joiner, p, now)

    def answered(self, origin: IPAddress, nonce: int) -> bool:
        """An ACK from `origin`: True when it answers our introduction (then it is over)."""
        p = self._pending.get(origin)
        if p is None or p.nonce != nonce:
            return False
        del self._pending[origin]
        self.stats["introductions_answered"] += 1
        return True

    def forget(self, node: IPAddress) -> None:
        """It became a member some other way (its announcement came): no more PINGs."""
        self._pending.pop(node, None)

    def pending(self) -> list[IPAddress]:
        return list(self._pending)

    def interface(self, node: IPAddress) -> str:
        p = self._pending.get(node)
        return p.interface if p is not None else ""

    def due(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def tick(self, now: float) -> list[Send]:
        """PINGs again for the joiners that have not answered yet; the last try's silence ends it."""
        out = []
        for joiner, p in list(self._pending.items()):
            if now < p.deadline:
                continue
            if not p.tries:
                del self._pending[joiner]
                self.stats["introductions_unanswered"] += 1
                continue
            p.tries -= 1
            out.append(self._ping(joiner, p, now))
        return out

    def _ping(self, joiner: IPAddress, p: _Pending, now: float) -> Send:
        self._nonce = (self._nonce + 1) & 0xFFFFFFFF
        p.nonce, p.deadline = self._nonce, now + TIMEOUT
        return Send(MsgType.PING, joiner, joiner, p.incarnation, p.nonce)
