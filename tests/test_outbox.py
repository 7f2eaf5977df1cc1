"""The outbox the asyncio, trio and gevent servers share (``adapters/_outbox.py``).

Each adapter's own tests show its loop writing the outbox; these pin the rules
they all rely on: one flush scheduled per turn, writes in the order they were
put, at most one write waiting per connection, and a socket that takes only
part of a write, or is gone, handled without waiting.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator

import pytest

from adapters._outbox import Outbox, write_at_once


class Log:
    """A writer that notes what it is given, in one log shared by every writer."""

    def __init__(self, name: str, log: list[tuple[str, bytes]]) -> None:
        self.name, self.log = name, log

    def write_now(self, data: bytes) -> None:
        self.log.append((self.name, data))


@pytest.fixture
def scheduled() -> list[Callable[[], None]]:
    return []


@pytest.fixture
def outbox(scheduled: list[Callable[[], None]]) -> Outbox:
    return Outbox(scheduled.append)


def test_the_first_write_of_a_turn_schedules_one_flush(outbox: Outbox, scheduled: list[Callable[[], None]]) -> None:
    log: list[tuple[str, bytes]] = []
    first, second = Log("first", log), Log("second", log)
    assert outbox.empty
    assert outbox.put(first, b"250 a\r\n")
    assert outbox.put(second, b"250 b\r\n")
    assert not outbox.empty
    assert len(scheduled) == 1 and not log  # nothing written before the loop's turn
    scheduled.pop()()
    assert log == [("first", b"250 a\r\n"), ("second", b"250 b\r\n")]
    assert outbox.empty
    assert outbox.put(first, b"250 c\r\n")  # the next turn's first write schedules the next flush
    assert len(scheduled) == 1


def test_a_connection_has_at_most_one_write_waiting(outbox: Outbox, scheduled: list[Callable[[], None]]) -> None:
    # Its next is refused: the session writes it itself, after a flush, so a
    # session that outruns its loop cannot make the outbox grow.
    log: list[tuple[str, bytes]] = []
    writer = Log("writer", log)
    assert outbox.put(writer, b"250 a\r\n")
    assert not outbox.put(writer, b"250 b\r\n")
    outbox.flush()
    assert log == [("writer", b"250 a\r\n")]
    assert outbox.put(writer, b"250 b\r\n")  # taken again once the first is out


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_write_at_once_writes_all_it_can(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    assert write_at_once(ours.fileno(), b"250 ok\r\n") == b""
    assert theirs.recv(100) == b"250 ok\r\n"


def test_write_at_once_gives_back_what_the_socket_does_not_take(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = os.urandom(4 << 20)
    rest = write_at_once(ours.fileno(), big)
    assert rest is not None and 0 < len(rest) < len(big)
    assert write_at_once(ours.fileno(), rest) == rest  # full: nothing more goes, nothing waits
    theirs.setblocking(False)
    received = b""
    while True:
        try:
            received += theirs.recv(1 << 20)
        except BlockingIOError:
            break
    assert big.startswith(received) and len(received) + len(rest) == len(big)


def test_write_at_once_to_a_socket_that_is_gone(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    theirs.close()
    assert write_at_once(ours.fileno(), b"250 ok\r\n") is None  # EPIPE, not an exception
    assert write_at_once(-1, b"250 ok\r\n") is None  # a closed socket's number
