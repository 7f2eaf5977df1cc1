"""The blocking server's two ways of waiting on a socket.

A plain socket in the blocking adapter waits with the kernel's timeouts
(``SO_RCVTIMEO``/``SO_SNDTIMEO``, see ``_KernelTimedSocket``); TLS sockets poll
with Python's timeouts (``_PolledSocket``).  (gevent's sockets have a watchdog of
their own, pinned in ``test_gevent_server.py``.)  The shared adapter
tests run whole sessions through both; these pin the deadlines themselves:
a read ends on time even when its deadline is shorter than a slice, a shutdown
ends a read within a slice, and a peer that never reads cannot hold a write.

The server's pool of workers (threads that accept for themselves) is pinned at
the end: a thread serves one connection after another, the pool grows with
the sessions open at once and shrinks back to ``MAX_IDLE``, a write that fills
the socket's buffer still goes out whole, and a shutdown wakes the idle
workers at once.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from adapters import _sockets, blocking_server
from adapters._handler import LOST, SHUTDOWN, TIMED_OUT, Handler
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


def waiter(kind: str, sock: socket.socket, aborting: list[bool]) -> Waiter:
    if kind == "kernel":
        if not KERNEL_TIMEOUTS:
            pytest.skip("kernel-kept socket timeouts are used on Linux only")
        return _KernelTimedSocket(sock, lambda: aborting[0])
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


def assert_a_write_nobody_reads_is_lost(io: Waiter, client: socket.socket, timeout: float = 0.3) -> None:
    """Write to ``client``, which never reads, until a write gives up: in time, as LOST.

    (Shared with the gevent watchdog's tests.)
    """
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    started = time.monotonic()
    result = None
    for _ in range(10_000):  # fills both socket buffers, then a write waits out its timeout
        result = io.send(b"x" * 65536, timeout)
        if result is not None:
            break
    assert result is LOST
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("kind", KINDS)
def test_a_peer_that_never_reads_cannot_hold_a_write(kind: str, pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    assert_a_write_nobody_reads_is_lost(waiter(kind, server, [False]), client)


def _slow_reader(client: socket.socket, stop: threading.Event) -> threading.Thread:
    """A client that reads a little now and then: every read lets the next send() call take a little."""
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    def read() -> None:
        while not stop.wait(0.02):
            if not client.recv(1024):
                return

    reader = threading.Thread(target=read)
    reader.start()
    return reader


@pytest.mark.parametrize("kind", KINDS)
def test_a_peer_that_reads_a_little_now_and_then_cannot_hold_a_write_past_its_deadline(
    kind: str, pair: tuple[socket.socket, socket.socket]
) -> None:
    # Timed per send() call, this write went on as long as the client kept taking
    # a kilobyte a call: some 5 s for 256 KiB.  The deadline is the whole write's.
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stop = threading.Event()
    reader = _slow_reader(client, stop)
    try:
        started = time.monotonic()
        assert waiter(kind, server, [False]).send(b"x" * 256 * 1024, 0.5) is LOST
        assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        reader.join(5)


@pytest.mark.parametrize("kind", KINDS)
def test_at_the_end_of_a_shutdowns_grace_period_a_write_ends_within_a_slice(
    kind: str, pair: tuple[socket.socket, socket.socket]
) -> None:
    # As a read does: then the session ends, and its last hooks run, before shutdown() returns.
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    aborting = [False]
    io = waiter(kind, server, aborting)
    ended: list[object] = []
    writer = threading.Thread(target=lambda: ended.append(io.send(b"x" * 4 * 1024 * 1024, 60.0)))
    writer.start()
    time.sleep(3 * TICK)  # the buffers are full: the write waits for the client
    assert not ended
    aborting[0] = True
    started = time.monotonic()
    writer.join(5)
    assert ended == [LOST]
    assert time.monotonic() - started < TICK * 2


def test_the_kernel_waiter_leaves_the_socket_in_blocking_mode(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _client = pair
    waiter("kernel", server, [False])
    assert server.gettimeout() is None  # a Python timeout would bring back the poll() before every call


# --- the pool of workers ----------------------------------------------------------------------------


class ThreadRecorder(Handler):
    """Notes which thread greets each connection."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def connection_opened(self, session: object) -> None:
        self.threads.append(threading.current_thread())


def greeted(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert sock.recv(1024).startswith(b"220")
    return sock


def quit_session(sock: socket.socket) -> None:
    sock.sendall(b"QUIT\r\n")
    assert sock.recv(1024).startswith(b"221")
    assert sock.recv(1024) == b""
    sock.close()


def settled(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def workers(server: blocking_server.SMTPServer) -> int:
    return len(server._sessions())


def test_a_worker_serves_one_connection_after_another() -> None:
    recorder = ThreadRecorder()
    with blocking_server.SMTPServer(recorder, port=0) as server:
        for _ in range(6):
            quit_session(greeted(server.port))
            settled(lambda: server.connections == 0)  # its worker is idle again
    assert len(recorder.threads) == 6
    # The first worker started one spare before serving; no connection got a thread of its own.
    assert len(set(recorder.threads)) <= 2
    assert all(thread.name == "smtp-worker" for thread in recorder.threads)


def test_the_pool_grows_with_open_sessions_and_shrinks_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocking_server, "MAX_IDLE", 2)
    recorder = ThreadRecorder()
    with blocking_server.SMTPServer(recorder, port=0) as server:
        open_now = [greeted(server.port) for _ in range(8)]
        assert server.connections == 8
        assert len(set(recorder.threads)) == 8  # each open session holds a thread
        settled(lambda: workers(server) == 9)  # and one more waits for the next connection
        for sock in open_now:
            quit_session(sock)
        settled(lambda: workers(server) == 2)  # MAX_IDLE stay; the others ended
        assert server.connections == 0
        quit_session(greeted(server.port))  # the pool still serves


def test_the_connection_limit_is_kept_by_the_worker_that_accepts() -> None:
    with blocking_server.SMTPServer(Handler(), port=0, max_connections=3) as server:
        open_now = [greeted(server.port) for _ in range(3)]
        for _ in range(2):
            refused = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            assert refused.recv(1024).startswith(b"421")
            refused.close()
        quit_session(open_now.pop())
        settled(lambda: server.connections == 2)
        open_now.append(greeted(server.port))  # a place came free
        for sock in open_now:
            quit_session(sock)


def test_a_write_larger_than_the_socket_buffer_goes_out_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    io = waiter("polled", server, [False])
    data = bytes(range(256)) * 4096  # 1 MiB: one send() takes only part of it
    received = bytearray()

    def read() -> None:
        while len(received) < len(data):
            received.extend(client.recv(65536))

    reader = threading.Thread(target=read)
    reader.start()
    assert io.send(data, 5.0) is None
    reader.join(5)
    assert bytes(received) == data


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="elsewhere idle workers see a shutdown within a slice")
def test_shutdown_wakes_the_idle_workers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Slices of a second: a worker that only saw the flag at the end of its slice would be late.
    monkeypatch.setattr(blocking_server, "TICK", 1.0)
    server = blocking_server.SMTPServer(Handler(), port=0)
    server.start()
    port = server.port
    open_now = [greeted(server.port) for _ in range(3)]
    for sock in open_now:
        quit_session(sock)
    settled(lambda: server.connections == 0)
    assert workers(server) >= 3
    started = time.monotonic()
    server.shutdown(5.0)
    assert time.monotonic() - started < 0.1  # woken by shutdown(SHUT_RD), not by their slices
    assert server._sessions() == []
    with pytest.raises(ConnectionRefusedError):  # the listener is closed
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_out_of_descriptors_a_worker_backs_off_then_serves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # accept() failing with EMFILE must not spin a core: the worker says so, waits a slice and
    # tries again, and the connection waiting in the backlog is served once descriptors are free.
    real_accept = socket.socket.accept
    failures: list[float] = []

    def accept(self: socket.socket) -> tuple[socket.socket, object]:
        if len(failures) < 3:
            failures.append(time.monotonic())
            raise OSError(errno.EMFILE, "Too many open files")
        return real_accept(self)

    monkeypatch.setattr(socket.socket, "accept", accept)
    with blocking_server.SMTPServer(Handler(), port=0) as server:
        quit_session(greeted(server.port))
    assert len(failures) == 3
    assert failures[2] - failures[0] >= 1.5 * TICK  # a slice between tries, not a busy loop
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["cannot accept a connection ([Errno 24] Too many open files); trying again in 0.1 s"] * 3


class Stuck(Handler):
    """Every session's ``data_chunk`` hook waits until the test lets it go."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def data_chunk(self, session: object, data: bytes) -> None:
        self.entered.release()
        self.release.wait(30)


def test_shutdown_waits_one_more_second_in_all_for_threads_stuck_in_hooks() -> None:
    # A thread cannot be interrupted: shutdown() gives the stuck ones one more
    # second together, not one each (four would make it four seconds).
    handler = Stuck()
    server = blocking_server.SMTPServer(handler, port=0)
    server.start()
    socks = []
    try:
        for _ in range(4):
            sock = greeted(server.port)
            sock.sendall(b"HELO me\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nhi\r\n")
            socks.append(sock)
        for _ in socks:
            assert handler.entered.acquire(timeout=5)
        started = time.monotonic()
        server.shutdown(0.2)
        elapsed = time.monotonic() - started
        assert elapsed < 2 * (0.2 + 1.0), elapsed
    finally:
        handler.release.set()
        for sock in socks:
            sock.close()
    settled(lambda: server._sessions() == [])
