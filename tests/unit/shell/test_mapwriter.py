"""The map writer driven without a network (omdisc/shell/mapwriter.py, core/throttle.py): the
throttle of the map and of state.json, write errors counted and retried, a restart's first-map hold."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from ipaddress import ip_address
from pathlib import Path

from omdisc.core.answers import JoinAnswers
from omdisc.core.engine import Engine, LocalNode, Settings
from omdisc.core.protocol import IPAddress, MemberRecord, Message, MsgType, Snapshot, encode
from omdisc.core.table import Table
from omdisc.core.throttle import MAP_INTERVAL, STATE_AFTER_MAP
from omdisc.shell.mapwriter import MapWriter, first_map_wait
from omdisc.shell.sinks import AlphaSink, SinkError

ME = ip_address("198.18.0.1")



class ShortWrites(AlphaSink):
    """/proc that takes part of what is written: the sink raises SinkError."""

    def write(self, node_id: int, table: Table) -> None:
        raise SinkError("short write to /proc/hpc/admin/config")


def engine() -> Engine:
    return Engine(LocalNode(1, (ME,)), 1, Settings(), random.Random(1), wall=lambda: 1.0)


def test_a_short_write_to_the_kernel_is_counted_and_retried_not_fatal(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    writer = MapWriter(ShortWrites(tmp_path), tmp_path, stats, dict, lambda: None)
    e = engine()
    writer.flush(e, 0.0)
    assert stats["map_write_errors"] == 1 and stats["map_writes"] == 0
    assert writer.next_due(e) == MAP_INTERVAL  # tried again after the throttle


def test_map_writes_are_throttled_but_never_lost(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    writer = MapWriter(AlphaSink(tmp_path), tmp_path, stats, dict, lambda: None)
    e = engine()
    writer.flush(e, 0.0)
    for i in range(100):  # a hundred changes within 50 ms
        e.membership.version += 1
        writer.flush(e, i * 0.0005)
    assert stats["map_writes"] == 1
    assert writer.next_due(e) == MAP_INTERVAL
    writer.flush(e, MAP_INTERVAL)
    assert stats["map_writes"] == 2 and writer.next_due(e) > MAP_INTERVAL  # the last change is written


def test_a_newcomers_map_shows_the_first_answer_at_once_then_the_throttle_holds(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    writer = MapWriter(AlphaSink(tmp_path), tmp_path, stats, dict, lambda: None)
    e = engine()
    writer.flush(e, 0.0)  # at start: this node alone
    peers = [ip_address(f"198.18.0.{i}") for i in range(2, 12)]
    for i, peer in enumerate(peers):  # the SNAPSHOT's worth, 10 ms later, then a trickle
        e.receive(encode(Message(MsgType.ANNOUNCE, i + 2, 1, 1, (peer,))), 0.01 + i * 0.001, source=peer)
        writer.flush(e, 0.01 + i * 0.001)
    assert stats["map_writes"] == 2  # the cluster written with the first answer, not 50 ms on
    assert writer.next_due(e) == 0.01 + MAP_INTERVAL  # then the throttle, as for any burst


def address(node_id: int) -> IPAddress:
    return ip_address(f"198.18.{node_id // 250}.{node_id % 250 + 1}")


def announce(e: Engine, node_id: int, now: float) -> None:
    peer = address(node_id)
    e.receive(encode(Message(MsgType.ANNOUNCE, node_id, 1, 1, (peer,))), now, source=peer)


def test_state_json_shows_a_map_change_with_the_map_after_a_quiet_spell(tmp_path: Path) -> None:
    """showmap --members must not lag the kernel table: a counters' write just before does not hold it."""
    states: list[float] = []
    now = [0.0]
    writer = MapWriter(AlphaSink(tmp_path), tmp_path, Counter(), lambda: states.append(now[0]) or {}, lambda: None)
    e = engine()
    announce(e, 2, 0.0)
    writer.flush(e, 0.0)
    for t in (1.0, 2.0, 2.5, 3.0):  # counters change now and then: state.json written for them alone
        now[0] = t
        writer.touch()
        writer.flush(e, t)
    assert states == [0.0, 1.0, 2.0, 3.0]  # counters at most once a second
    now[0] = 3.1
    announce(e, 3, 3.1)  # a newcomer, 100 ms after a counters' write
    writer.flush(e, 3.1)
    assert states[-1] == 3.1 and len(json.loads((tmp_path / "state.json").read_text())["members"]) == 2


def test_a_newcomers_state_json_shows_the_first_answer_at_once(tmp_path: Path) -> None:
    states: list[float] = []
    now = [0.0]
    writer = MapWriter(AlphaSink(tmp_path), tmp_path, Counter(), lambda: states.append(now[0]) or {}, lambda: None)
    e = engine()
    writer.flush(e, 0.0)  # at start: this node alone, map and state.json
    now[0] = 0.01
    announce(e, 2, 0.01)
    writer.flush(e, 0.01)
    assert states == [0.0, 0.01]
    assert len(json.loads((tmp_path / "state.json").read_text())["members"]) == 1


def test_a_flood_of_map_changes_writes_state_json_at_most_four_times_a_second(tmp_path: Path) -> None:
    states: list[float] = []
    now = [0.0]
    writer = MapWriter(AlphaSink(tmp_path), tmp_path, Counter(), lambda: states.append(now[0]) or {}, lambda: None)
    e = engine()
    announce(e, 2, 0.0)
    for ms in range(2000):  # a new node every millisecond for 2 s, the loop flushing each time
        now[0] = ms / 1000
        announce(e, 3 + ms, now[0])
        writer.touch()
        writer.flush(e, now[0])
    assert len(states) <= 2 / STATE_AFTER_MAP + 1
    assert all(b - a >= STATE_AFTER_MAP for a, b in itertools.pairwise(states))
    now[0] = 2.0 + STATE_AFTER_MAP
    writer.flush(e, now[0])  # the last change is written, not lost
    assert len(json.loads((tmp_path / "state.json").read_text())["members"]) == 2001


def snapshot_from(peer_id: int, told: tuple[int, ...], part: int = 1, parts: int = 1) -> bytes:
    """Node `peer_id`'s SNAPSHOT (a part of it) answering our JOIN (engine()'s incarnation 1)."""
    records = tuple(MemberRecord(i, 1, 10, (address(i),)) for i in ((peer_id, *told) if part == 1 else told))
    answer = Snapshot(ME, 1, part, parts, records)
    return encode(Message(MsgType.SNAPSHOT, peer_id, 1, 1, (address(peer_id),), snapshot=answer))


LAST_MAP = frozenset({1, 2, 3, 4, 5})  # the last life's map: us (#1) and four others
FIRST_MAP_WAIT = first_map_wait(Settings(), len(LAST_MAP))


def restarted(tmp_path: Path, stats: Counter[str], last_map: frozenset[int] = LAST_MAP) -> tuple[MapWriter, Engine]:
    """A node that lived before, just started: its JOIN out, its first map held (as the daemon does)."""
    tmp_path.mkdir(exist_ok=True)
    writer = MapWriter(AlphaSink(tmp_path), tmp_path, stats, dict, lambda: None)
    writer.hold_first_map(last_map, FIRST_MAP_WAIT)
    e = engine()
    e.start(0.0)
    writer.flush(e, 0.0)
    return writer, e


def map_ids(writer: MapWriter) -> int:
    assert writer.written is not None
    return sum(entry.count for entry in writer.written.entries)


def test_a_restarted_nodes_first_map_waits_for_every_node_of_its_last_map(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    writer, e = restarted(tmp_path, stats)
    assert stats["map_writes"] == 0 and writer.next_due(e) == FIRST_MAP_WAIT  # only ourselves: held
    # one node's announcement comes before the SNAPSHOT: a map of it alone would take the rest of
    # the cluster out of the kernel's until the answer is written
    announce(e, 2, 0.05)
    writer.flush(e, 0.05)
    assert stats["map_writes"] == 0 and writer.next_due(e) == FIRST_MAP_WAIT
    # a node restarting with us answers first, knowing nobody; then a SNAPSHOT in two parts
    e.receive(snapshot_from(6, ()), 0.06, source=address(6))
    e.receive(snapshot_from(3, (2, 4), 1, 2), 0.07, source=address(3))
    writer.flush(e, 0.07)
    assert stats["map_writes"] == 0
    e.receive(snapshot_from(3, (5,), 2, 2), 0.08, source=address(3))
    writer.flush(e, 0.08)
    assert stats["map_writes"] == 1 and map_ids(writer) == 6  # the whole cluster, at once


def test_a_restarted_nodes_first_map_is_written_after_a_second_when_its_last_nodes_do_not_come(
        tmp_path: Path) -> None:
    alone, lone = restarted(tmp_path / "alone", Counter())
    alone.flush(lone, 0.5)
    assert alone.written is None
    alone.flush(lone, FIRST_MAP_WAIT)
    assert map_ids(alone) == 1  # nobody came: our own map after all
    lost, e = restarted(tmp_path / "lost", Counter())
    e.receive(snapshot_from(2, (3, 4)), 0.05, source=address(2))  # #5 died meanwhile
    lost.flush(e, 0.5)
    assert lost.written is None and lost.next_due(e) == FIRST_MAP_WAIT
    lost.flush(e, FIRST_MAP_WAIT)
    assert map_ids(lost) == 4


def test_a_restarted_nodes_first_write_that_fails_is_retried_after_the_throttle_not_held_again(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    writer = MapWriter(ShortWrites(tmp_path), tmp_path, stats, dict, lambda: None)
    writer.hold_first_map(LAST_MAP, FIRST_MAP_WAIT)
    e = engine()
    e.start(0.0)
    writer.flush(e, 0.5)
    assert stats["map_write_errors"] == 0  # held
    writer.flush(e, FIRST_MAP_WAIT)
    assert stats["map_write_errors"] == 1
    announce(e, 2, FIRST_MAP_WAIT + 0.1)
    writer.flush(e, FIRST_MAP_WAIT + 0.1)
    assert stats["map_write_errors"] == 2  # tried again after the throttle, not held again


def test_a_restarted_node_whose_last_map_held_nobody_else_takes_the_first_node_heard(tmp_path: Path) -> None:
    """Its last map held only itself, or could not be read: nothing to wait for but another node."""
    for name, last in (("itself", frozenset({1})), ("unread", frozenset())):
        writer, e = restarted(tmp_path / name, Counter(), last)
        assert writer.written is None
        announce(e, 2, 0.05)
        writer.flush(e, 0.05)
        assert map_ids(writer) == 2, name


def test_a_fresh_nodes_first_map_is_written_at_once(tmp_path: Path) -> None:
    writer = MapWriter(AlphaSink(tmp_path), tmp_path, Counter(), dict, lambda: None)
    e = engine()
    e.start(0.0)
    writer.flush(e, 0.0)  # no last life's map to keep: the kernel learns this node now
    assert map_ids(writer) == 1
    announce(e, 2, 0.01)
    writer.flush(e, 0.01)
    assert map_ids(writer) == 2  # the first other node at once too (a newcomer's first answer)


def test_state_json_for_counters_alone_is_written_less_often_the_larger_the_map(tmp_path: Path) -> None:
    for members, wait in ((10, 1.0), (500, 5.0), (3000, 10.0)):
        writer = MapWriter(AlphaSink(tmp_path), tmp_path, Counter(), dict, lambda: None)
        e = engine()
        for i in range(members):
            peer = ip_address(f"198.18.{10 + i // 250}.{i % 250 + 1}")
            e.receive(encode(Message(MsgType.ANNOUNCE, i + 2, 1, 1, (peer,))), 0.0, source=peer)
        writer.flush(e, 0.0)  # the map and state.json
        writer.touch()  # a counter changed
        assert writer.next_due(e) == wait, members


def test_a_node_restarted_faster_than_the_answer_rate_keeps_its_last_map_until_the_answer(tmp_path: Path) -> None:
    """Four lives in 0.6 s (systemctl restart in a loop, a restart then a reload): the peer answers
    three JOINs (its burst), then refuses the fourth life's JOIN and first retry for its rate, as it
    would a host flooding it. That life's last retry, 1 s after its start, is answered; its first
    map is held until then, so the kernel never gets a map of this node alone."""
    stats: Counter[str] = Counter()
    them = address(2)
    peer = Engine(LocalNode(2, (them,)), 1, Settings(), random.Random(2), wall=lambda: 1.0)
    peer.start(0.0)
    in_flight: list[tuple[float, bool, bytes]] = []  # (when it arrives, to the peer?, datagram)
    first_maps: list[int] = []

    def run(me: Engine, start: float, until: float, writer: MapWriter | None) -> None:
        now = start
        while now < until:
            arrived = [d for d in in_flight if d[0] <= now]
            for d in arrived:
                in_flight.remove(d)
                to, source = (peer, ME) if d[1] else (me, them)
                in_flight.extend((now + 0.005, not d[1], o.data) for o in to.receive(d[2], now, source=source))
            in_flight.extend((now + 0.005, True, o.data) for o in me.tick(now))  # 5 ms on the way
            in_flight.extend((now + 0.005, False, o.data) for o in peer.tick(now))
            if writer is not None:
                writer.flush(me, now)
                if writer.written is not None and not first_maps:
                    first_maps.append(map_ids(writer))
            now = round(now + 0.005, 3)

    for life in range(4):
        start = 0.2 * life
        me = Engine(LocalNode(1, (ME,)), life + 1, Settings(), random.Random(life), wall=lambda: 1.0)
        writer = None
        if life == 3:  # its last life's map: itself and the peer
            writer = MapWriter(AlphaSink(tmp_path), tmp_path, stats, dict, lambda: None)
            writer.hold_first_map(frozenset({1, 2}), start + first_map_wait(Settings(), 2))
        in_flight.extend((start + 0.005, True, o.data) for o in me.start(start))
        run(me, start, start + (0.2 if life < 3 else 3.0), writer)
    assert peer.stats["join_unanswered:rate"] == 2  # the fourth life's JOIN and its first retry
    assert first_maps == [2]  # the answer to its last retry, not a map of itself alone


class Latest(random.Random):
    """Every random delay at its longest."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_the_first_map_waits_for_the_latest_answer_any_cluster_size_allows_to_the_last_join_retry() -> None:
    """Should the node expected to answer first be gone, the others answer within a spread that
    grows with the cluster (answers.py); a node that knows part of it second-hand waits that spread
    again. The hold outlasts the latest of them to the last JOIN retry."""
    settings = Settings()
    last_retry = settings.join_retries[-1]
    for size in (2, 5, 50, 100, 1000):
        answers = JoinAnswers(settings.answers, Latest())
        assert answers.joined((address(9), 1), "eth0", None, size, last_retry, hearsay=True) is None
        latest = answers.pending[(address(9), 1)].due
        assert latest < first_map_wait(settings, size), size
