"""The gevent adapter's watchdog: the deadlines of reads and writes without a timer each.

A session's socket (``_WatchedSocket``) only writes down when its read or write
must end; one watchdog per server (``_Watchdog``) looks every ``TICK`` and throws
into the greenlet of a call that overran, from the hub.  The shared adapter
tests run whole sessions (a dripping command, a slow message, a shutdown's 421);
these pin the watchdog itself: a read and a write end on time, a shutdown ends a
waiting read at once, a call that has finished is never cut off (the throw must
not land in a hook), and a server with no session is left alone.

The tests run in this thread's gevent hub, on gevent's sockets, with no
monkey-patching.
"""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import Iterator

import gevent
import gevent.socket
import pytest
from test_blocking_server import assert_a_write_nobody_reads_is_lost

from adapters._handler import SHUTDOWN, TIMED_OUT
from adapters.blocking_server import TICK
from adapters.gevent_server import _Watchdog, _WatchedSocket


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = gevent.socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield server, client
    server.close()
    client.close()


@pytest.fixture
def aborting() -> list[bool]:
    return [False]


@pytest.fixture
def watchdog(aborting: list[bool]) -> _Watchdog:
    return _Watchdog(lambda: aborting[0])


def test_a_read_returns_what_arrives(pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog) -> None:
    server, client = pair
    io = _WatchedSocket(server, watchdog.aborting, watchdog)
    client.sendall(b"EHLO me\r\n")
    assert io.receive(5.0) == b"EHLO me\r\n"
    client.close()
    assert io.receive(5.0) == b""  # end of stream, not a timeout
    assert io.if_cut_off is None


@pytest.mark.parametrize("timeout", [TICK / 4, TICK * 2.5])
def test_a_read_ends_at_its_deadline(
    timeout: float, pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog
) -> None:
    server, client = pair
    io = _WatchedSocket(server, watchdog.aborting, watchdog)
    for _ in range(2):  # a cut-off read leaves the socket fit for the next one
        started = time.monotonic()
        assert io.receive(timeout) is TIMED_OUT
        elapsed = time.monotonic() - started
        assert timeout <= elapsed < timeout + TICK * 1.5, elapsed
    client.sendall(b"NOOP\r\n")
    assert io.receive(1.0) == b"NOOP\r\n"


def test_a_shutdown_ends_a_waiting_read_at_once(
    pair: tuple[socket.socket, socket.socket], aborting: list[bool], watchdog: _Watchdog
) -> None:
    server, _client = pair
    io = _WatchedSocket(server, watchdog.aborting, watchdog)

    def shut_down() -> None:  # what SMTPServer.shutdown() does at its deadline
        aborting[0] = True
        gevent.get_hub().loop.run_callback(watchdog.patrol)

    gevent.spawn_later(0.05, shut_down)
    started = time.monotonic()
    assert io.receive(60.0) is SHUTDOWN
    assert time.monotonic() - started < 1.0
    assert io.receive(60.0) is SHUTDOWN  # and no read waits from then on


def test_a_peer_that_never_reads_cannot_hold_a_write(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog
) -> None:
    server, client = pair
    assert_a_write_nobody_reads_is_lost(_WatchedSocket(server, watchdog.aborting, watchdog), client)


def test_a_finished_call_is_never_cut_off(pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog) -> None:
    server, client = pair
    io = _WatchedSocket(server, watchdog.aborting, watchdog)
    client.sendall(b"DATA\r\n")
    assert io.receive(TICK / 10) == b"DATA\r\n"
    # The read's deadline passes while the session does something else (a hook
    # that waits on gevent, say): the watchdog's ticks must leave it alone.
    gevent.sleep(TICK * 3)
    assert io.deadline < time.monotonic()
    watchdog.patrol()
    assert io.if_cut_off is None


def test_the_watchdog_sleeps_while_no_session_is_open(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog
) -> None:
    server, _client = pair
    timer = watchdog._timer
    assert not timer.active
    assert not timer.ref  # an idle server never keeps gevent.wait() waiting
    io = _WatchedSocket(server, watchdog.aborting, watchdog)
    assert timer.active
    del io
    gc.collect()
    gevent.sleep(TICK * 2.5)  # the next tick finds nobody and stops the timer
    assert not timer.active
