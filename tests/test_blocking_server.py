"""The blocking server's two ways of waiting on a socket.

A plain socket in the blocking adapter waits with the kernel's timeouts
(``SO_RCVTIMEO``/``SO_SNDTIMEO``, see ``_KernelTimedSocket``); TLS and gevent
sockets poll with Python's timeouts (``_PolledSocket``).  The shared adapter
tests run whole sessions through both; these pin the deadlines themselves:
a read ends on time even when its deadline is shorter than a slice, a shutdown
ends a read within a slice, and a peer that never reads cannot hold a write.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from adapters import _sockets, blocking_server
from adapters._handler import LOST, SHUTDOWN, TIMED_OUT
from adapters._sockets import KERNEL_TIMEOUTS
from adapters.blocking_server import TICK, _KernelTimedSocket, _PolledSocket, _TimedSocket

Waiter = _TimedSocket


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield server, client
    server.close()
    client.close()


def waiter(kind: str, sock: socket.socket, aborting: list[bool], send_timeout: float = 5.0) -> Waiter:
    if kind == "kernel":
        if not KERNEL_TIMEOUTS:
            pytest.skip("kernel-kept socket timeouts are used on Linux only")
        return _KernelTimedSocket(sock, lambda: aborting[0], send_timeout)
    return _PolledSocket(sock, lambda: aborting[0])


KINDS = ["kernel", "polled"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_read_returns_what_arrives(kind: str, pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    io = waiter(kind, server, [False])
    client.sendall(b"EHLO me\r\n")
    assert io.receive(5.0) == b"EHLO me\r\n"
    client.close()
    assert io.receive(5.0) == b""  # end of stream, not a timeout


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("timeout", [TICK / 4, TICK * 2.5])
def test_a_read_ends_at_its_deadline(kind: str, timeout: float, pair: tuple[socket.socket, socket.socket]) -> None:
    server, _client = pair
    io = waiter(kind, server, [False])
    for _ in range(2):  # the second read starts after a shortened slice: it must not inherit it wrongly
        started = time.monotonic()
        assert io.receive(timeout) is TIMED_OUT
        elapsed = time.monotonic() - started
        assert timeout <= elapsed < timeout + TICK / 2, elapsed


@pytest.mark.parametrize("kind", KINDS)
def test_a_read_after_a_short_deadline_waits_a_full_slice_again(
    kind: str, pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, client = pair
    io = waiter(kind, server, [False])
    assert io.receive(TICK / 4) is TIMED_OUT
    slices: list[float] = []  # what the kernel is told from here on (the kernel waiter only)
    real = _sockets.set_kernel_timeout

    def recording(sock: socket.socket, option: int, seconds: float) -> None:
        slices.append(seconds)
        real(sock, option, seconds)

    monkeypatch.setattr(blocking_server, "set_kernel_timeout", recording)
    started = time.monotonic()
    assert io.receive(TICK * 1.5) is TIMED_OUT
    assert time.monotonic() - started >= TICK * 1.5
    if kind == "kernel":
        assert slices[0] == TICK  # the full slice is put back, then only the last one is short
        assert all(seconds < TICK for seconds in slices[1:])
    client.sendall(b"NOOP\r\n")
    assert io.receive(1.0) == b"NOOP\r\n"


@pytest.mark.parametrize("kind", KINDS)
def test_a_shutdown_ends_a_read_within_a_slice(kind: str, pair: tuple[socket.socket, socket.socket]) -> None:
    server, _client = pair
    aborting = [False]
    io = waiter(kind, server, aborting)
    assert io.receive(TICK / 2) is TIMED_OUT
    aborting[0] = True
    started = time.monotonic()
    assert io.receive(60.0) is SHUTDOWN
    assert time.monotonic() - started < TICK * 2


def test_a_peer_that_never_reads_cannot_hold_a_write(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    io = waiter("kernel", server, [False], send_timeout=0.3)
    started = time.monotonic()
    result = None
    for _ in range(10_000):  # fills both socket buffers, then a write waits out its timeout
        result = io.send(b"x" * 65536, 0.3)
        if result is not None:
            break
    assert result is LOST
    assert time.monotonic() - started < 5.0


def test_the_kernel_waiter_leaves_the_socket_in_blocking_mode(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _client = pair
    waiter("kernel", server, [False])
    assert server.gettimeout() is None  # a Python timeout would bring back the poll() before every call
