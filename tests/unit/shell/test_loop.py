"""The daemon's own loop (shell/loop.py) and its pace (shell/pace.py): descriptors, timers, callbacks
soon, signals taken outside their handlers and given back, and the sleep a datagram can wake."""

from __future__ import annotations

import gc
import os
import signal
import socket
import weakref

import pytest

from omdisc.shell.loop import Loop
from omdisc.shell.pace import Sleep


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_timers_run_in_time_order_and_a_cancelled_one_never() -> None:
    loop = Loop()
    ran: list[str] = []
    now = loop.clock()
    loop.call_at(now + 0.03, lambda: ran.append("c"))
    loop.call_at(now + 0.01, lambda: ran.append("a"))
    loop.call_at(now + 0.01, lambda: ran.append("b"))  # the same time: in the order made
    loop.call_later(0.02, lambda: ran.append("x")).cancel()
    assert loop.run_until(lambda: len(ran) == 3, timeout=5)
    assert ran == ["a", "b", "c"]
    assert loop.run_until(lambda: False, timeout=0.05) is False
    assert ran == ["a", "b", "c"]
    loop.close()


def test_a_reader_is_called_while_its_descriptor_is_ready_and_no_longer_once_removed() -> None:
    loop = Loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    got: list[bytes] = []

    def readable() -> None:
        got.append(a.recv(100))

    loop.add_reader(a.fileno(), readable)
    b.send(b"one")
    assert loop.run_until(lambda: got == [b"one"], timeout=5)
    loop.remove_reader(a.fileno())
    b.send(b"two")
    loop.run_until(lambda: False, timeout=0.05)
    assert got == [b"one"]
    loop.close()
    a.close()
    b.close()


def test_a_writer_and_a_reader_on_one_descriptor() -> None:
    loop = Loop()
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
    seen: list[str] = []

    def writable() -> None:
        a.send(b"x")
        loop.remove_writer(a.fileno())
        seen.append("w")

    loop.add_reader(a.fileno(), lambda: seen.append(a.recv(10).decode()))
    loop.add_writer(a.fileno(), writable)
    assert loop.run_until(lambda: "w" in seen, timeout=5)
    assert b.recv(10) == b"x"
    b.send(b"y")
    assert loop.run_until(lambda: "y" in seen, timeout=5)
    assert seen == ["w", "y"]
    loop.close()
    a.close()
    b.close()


def test_what_a_pass_calls_soon_runs_at_its_end_and_what_that_calls_in_the_next() -> None:
    clock = Clock()
    loop = Loop(clock)
    order: list[str] = []

    def first() -> None:
        order.append("first")
        loop.call_soon(lambda: order.append("next pass"))

    loop.call_soon(first)
    loop.run_once(None)  # something is due: no waiting
    assert order == ["first"]
    loop.run_once(None)
    assert order == ["first", "next pass"]
    loop.close()


def test_a_callback_that_fails_is_said_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    loop = Loop()
    ran: list[int] = []
    loop.call_soon(lambda: [][1])
    loop.call_soon(lambda: ran.append(1))
    loop.run_once(0)
    assert ran == [1]
    assert "internal error" in caplog.text and "IndexError" in caplog.text
    loop.close()


def test_signals_run_their_callbacks_in_the_loop_and_are_given_back() -> None:
    before = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGHUP)
    loop = Loop()
    got: list[str] = []
    loop.handle_signals({signal.SIGUSR1: lambda: got.append("usr1"), signal.SIGHUP: lambda: got.append("hup")})
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGHUP)
    os.kill(os.getpid(), signal.SIGUSR1)
    assert got == []  # not in the handler: in the loop
    assert loop.run_until(lambda: len(got) == 3, timeout=5)
    assert got == ["usr1", "hup", "usr1"]
    loop.close()
    assert (signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGHUP)) == before
    assert signal.set_wakeup_fd(-1) == -1  # no wakeup descriptor left behind


def test_the_sleep_lasts_until_the_deadline_unless_woken() -> None:
    loop = Loop()
    sleep = Sleep(loop)
    start = loop.clock()
    sleep.sleep(start + 0.05)
    assert loop.clock() - start >= 0.05 and sleep.until == float("-inf")
    loop.call_later(0.01, sleep.wake)
    start = loop.clock()
    sleep.sleep(start + 30)
    assert loop.clock() - start < 5
    loop.close()


def test_a_datagram_wakes_the_sleep_only_for_an_earlier_deadline() -> None:
    loop = Loop()
    sleep = Sleep(loop)
    calls: list[float] = []

    def datagram() -> None:
        calls.append(loop.clock())
        sleep.wake_before(sleep.until + 1)  # later than the sleep's: no reason to wake
        if len(calls) == 2:
            sleep.wake_before(sleep.until - 1)

    loop.call_later(0.01, datagram)
    loop.call_later(0.03, datagram)
    start = loop.clock()
    sleep.sleep(start + 30)
    assert len(calls) == 2 and loop.clock() - start < 5
    loop.close()


def test_a_deadline_at_infinity_is_a_long_wait_not_an_error() -> None:
    loop = Loop()
    sleep = Sleep(loop)
    a, b = socket.socketpair()
    loop.add_reader(a.fileno(), lambda: (a.recv(10), sleep.wake()))
    b.send(b"x")
    sleep.sleep(float("inf"))  # no timer: only the datagram ends it
    loop.call_at(float("inf"), lambda: None)
    b.send(b"x")
    sleep.sleep(float("inf"))
    loop.close()
    a.close()
    b.close()


def test_a_sleep_past_its_deadline_still_reads_what_is_ready() -> None:
    """A late timer must not starve the sockets: one pass at least, whatever the deadline."""
    loop = Loop()
    sleep = Sleep(loop)
    ran: list[int] = []
    loop.call_soon(lambda: ran.append(1))
    sleep.sleep(loop.clock() - 10)
    assert ran == [1]
    loop.close()


class Held:
    """Stands for what a timer's callback keeps alive (a finished handler program, its document)."""


def test_a_cancelled_timer_lets_go_of_what_its_callback_holds_under_a_long_timer() -> None:
    loop = Loop(clock=lambda: 0.0)
    loop.call_at(3600.0, lambda: None)  # a hung handler's timeout, on top of the heap for an hour
    refs = []
    for _ in range(1000):
        held = Held()
        refs.append(weakref.ref(held))
        loop.call_at(10.0, lambda held=held: None).cancel()  # a run that ended in time
        del held
    gc.collect()
    assert all(r() is None for r in refs)
    fired: list[str] = []
    loop.call_at(0.0, lambda: fired.append("due"))
    loop.run_once(0.0)
    assert fired == ["due"]  # timers left after the heap was made again still run
