"""When the map and state.json may be written: the throttle, so that no flood of changes can keep
the loop writing, yet no change is lost and a newcomer's first answer is shown at once. Pure: the
times are passed in, and nothing is written here (the map writer asks, then writes)."""

from __future__ import annotations

INF = float("inf")

MAP_INTERVAL = 0.05  # the kernel map: at most 20 writes a second
# state.json: a map change is written with the map when none was in the last STATE_AFTER_MAP
# seconds (showmap --json and --members follow the kernel table at once after a quiet spell), else
# at most 4 a second; counters and ages alone at most one a second: no flood keeps the loop writing.
STATE_AFTER_MAP = 0.25
STATE_INTERVAL = 1.0
# counters alone: state.json's cost grows with the members, so beyond STATE_MEMBERS_A_SECOND of them
# it is written every (members / STATE_MEMBERS_A_SECOND) s at most, up to STATE_INTERVAL_MAX: the
# idle CPU stays flat with the cluster's size
STATE_MEMBERS_A_SECOND = 100
STATE_INTERVAL_MAX = 10.0


class Throttle:
    """What was written when, and so when the next write is due (inf: nothing to write)."""

    def __init__(self) -> None:
        # until then the first map waits for the nodes of the last life's map (a restart: the kernel
        # and showmap keep that map, not one of this node alone, or of the first node heard, while
        # the answers come)
        self.hold_until = -INF
        self._first = True  # no map written yet in this life
        self._written_version = -1  # the map version last written
        self._map_at = -INF  # a map write last tried, written or not
        self._lone = False  # the map last written was of this node alone
        self._state_at = -INF  # state.json last written, for whatever reason
        self._state_map_at = -INF  # ... last written with a map change
        self._state_dirty = True
        self._state_map_pending = False  # a written map that state.json does not show yet
        self._state_wait = STATE_INTERVAL

    def touch(self) -> None:
        """Something state.json shows has changed (counters, ages)."""
        self._state_dirty = True

    def map_due(self, version: int, members: int, knows_last_map: bool) -> float:
        """The earliest map `version` may be written (members: the others known; knows_last_map:
        they include every node of the last life's map): the throttle, and a restart's first-map
        hold; inf when it is the map last written."""
        if version == self._written_version:
            return INF
        return max(self._map_at + self._gap(members), self._held(members, knows_last_map))

    @property
    def holding(self) -> bool:
        """A restart's first map may be held back still (whether the last map's nodes are known counts)."""
        return self._first and self.hold_until != -INF

    def hold_over(self, now: float) -> None:
        """The hold's time is over: it ends for good, whether the first write succeeds or not."""
        if now >= self.hold_until:
            self.hold_until = -INF

    def state_due(self) -> float:
        """A map change waits only for the last map change's write, not for a counters' write."""
        if not self._state_dirty:
            return INF
        if self._state_map_pending:
            return self._state_map_at + STATE_AFTER_MAP
        return self._state_at + self._state_wait

    def _gap(self, members: int) -> float:
        """MAP_INTERVAL between writes, but none between a map of this node alone and the first
        with others (a newcomer's first answer): the kernel learns the cluster at once, not a
        MAP_INTERVAL later. Two writes per interval at most, whatever a peer does."""
        return 0.0 if self._lone and members else MAP_INTERVAL

    def _held(self, members: int, knows_last_map: bool) -> float:
        """Until when the first map is held back: while nobody else has been heard, or a node of the
        last life's map is not known yet. An announcement may come before the SNAPSHOT, a SNAPSHOT
        in parts, an empty one from a node restarting with us: a map of what is known then would
        take the rest of the cluster out of the kernel's for a moment."""
        return self.hold_until if self._first and not (members and knows_last_map) else -INF

    def map_tried(self, now: float) -> None:
        """A map write was tried: one that failed is tried again after the throttle, not at once."""
        self._map_at = now

    def map_written(self, version: int, members: int) -> None:
        """Map `version` is in the kernel table; state.json is to show it."""
        self._written_version = version
        if self._lone and members:
            # a newcomer's first answer: in state.json at once too, as in the kernel table (_gap)
            self._state_map_at = -INF
        self._lone = not members
        self._first = False
        self._state_dirty = self._state_map_pending = True

    def state_written(self, now: float, members: int) -> None:
        self._state_at = now
        if self._state_map_pending:
            self._state_map_at = now
        self._state_dirty = self._state_map_pending = False
        self._state_wait = min(STATE_INTERVAL_MAX, max(STATE_INTERVAL, members / STATE_MEMBERS_A_SECOND))
