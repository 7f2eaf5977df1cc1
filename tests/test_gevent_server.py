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
import logging
import select
import socket
import ssl
import time
from collections.abc import Iterator

import gevent
import gevent.socket
import gevent.ssl
import pytest
from test_blocking_server import assert_a_write_nobody_reads_is_lost

from adapters import Handler, Session
from adapters._handler import SHUTDOWN, TIMED_OUT
from adapters._outbox import Outbox
from adapters.blocking_server import TICK
from adapters.gevent_server import SMTPServer, _Watchdog, _WatchedSocket
from smtpcore import Mail, Reply


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


# --- the outbox: replies before a read wait for the hub's next turn ------------------------------


@pytest.fixture
def outbox() -> Outbox:
    return Outbox(gevent.get_hub().loop.run_callback)


def _nothing_yet(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        client.recv(100)
    except BlockingIOError:
        return True
    finally:
        client.setblocking(True)
    return False


def test_a_reply_before_a_read_is_written_at_the_hubs_next_turn(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog, outbox: Outbox
) -> None:
    server, client = pair
    io = _WatchedSocket(server, watchdog.aborting, watchdog, outbox)
    assert io.send_before_read(b"250 a\r\n", 5.0) is None
    assert _nothing_yet(client)
    gevent.sleep(0)  # the hub runs its callbacks
    assert client.recv(100) == b"250 a\r\n"


def test_writes_and_a_close_go_behind_what_waits(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog, outbox: Outbox
) -> None:
    server, client = pair
    io = _WatchedSocket(server, watchdog.aborting, watchdog, outbox)
    io.send_before_read(b"250 a\r\n", 5.0)
    io.send_before_read(b"250 b\r\n", 5.0)  # the session outran the hub: it writes this itself, in order
    assert io.send(b"421 c\r\n", 5.0) is None
    io.send_before_read(b"221 d\r\n", 5.0)
    io.close(5.0)
    client.settimeout(5)
    received = b""
    while data := client.recv(100):
        received += data
    assert received == b"250 a\r\n250 b\r\n421 c\r\n221 d\r\n"


def test_a_long_burst_lets_the_other_greenlets_run_between_pieces_of_its_replies(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog
) -> None:
    from adapters._handler import FLUSH_AT

    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)  # takes each write at once
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    io = _WatchedSocket(server, watchdog.aborting, watchdog)
    turns = [0]

    def count_turns() -> None:
        while True:
            turns[0] += 1
            gevent.sleep(0)

    counter = gevent.spawn(count_turns)
    gevent.sleep(0)
    before = turns[0]
    assert io.send(b"250 2.0.0 OK\r\n", 5.0) is None
    assert turns[0] == before  # an ordinary write: no turn of the hub
    assert io.send(b"x" * (FLUSH_AT + 1), 5.0) is None
    assert turns[0] > before  # a piece of a burst's replies: the others ran
    counter.kill()


#: 4 MiB: more than the socket buffers take.
_BIG = bytes(range(256)) * 16384


def _half_written(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog, outbox: Outbox
) -> tuple[_WatchedSocket, gevent.Greenlet]:
    """A session whose outbox wrote part of :data:`_BIG`, and a greenlet reading all the client gets."""
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    io = _WatchedSocket(server, watchdog.aborting, watchdog, outbox)
    io.send_before_read(_BIG, 5.0)
    outbox.flush()
    assert io.unsent and len(io.unsent) < len(_BIG)
    return io, gevent.spawn(lambda: b"".join(iter(lambda: client.recv(1 << 20), b"")))


def test_what_the_socket_does_not_take_is_written_before_anything_else(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog, outbox: Outbox
) -> None:
    io, reader = _half_written(pair, watchdog, outbox)
    assert io.send_before_read(b"250 after\r\n", 5.0) is None  # written by the session, within its deadline
    assert not io.unsent
    io.close(5.0)
    assert reader.get(timeout=5) == _BIG + b"250 after\r\n"


def test_what_the_socket_does_not_take_goes_as_it_drains_while_the_session_reads(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog, outbox: Outbox
) -> None:
    # A client that pipelined waits for all its replies before it sends more, and
    # the session for the client: the rest cannot wait for the session's next write.
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    replies = _BIG[: 256 * 1024]
    io = _WatchedSocket(server, watchdog.aborting, watchdog, outbox)
    io.send_before_read(replies, 5.0)
    outbox.flush()  # what the hub's next turn does
    assert io.unsent

    def read_all_then_answer() -> bytes:
        data = b""
        while len(data) < len(replies):
            data += client.recv(65536)
        client.sendall(b"QUIT\r\n")
        return data

    reader = gevent.spawn(read_all_then_answer)
    started = time.monotonic()
    assert io.receive(5.0) == b"QUIT\r\n"
    assert time.monotonic() - started < 1.0
    assert reader.get(timeout=1) == replies
    assert not io.unsent
    assert io.send_before_read(b"221 bye\r\n", 5.0) is None  # the outbox writes again
    io.close(5.0)
    assert client.recv(100) == b"221 bye\r\n"


def test_a_tls_socket_writes_for_itself(watchdog: _Watchdog, outbox: Outbox) -> None:
    # Only the SSL socket may write the bytes of a TLS session.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls = gevent.ssl.SSLSocket(  # as the server wraps an accepted socket for STARTTLS
        sock=gevent.socket.socket(), server_side=True, do_handshake_on_connect=False, _context=context
    )
    io = _WatchedSocket(tls, watchdog.aborting, watchdog, outbox)
    assert io.outbox is None
    tls.close()


def test_a_close_writes_what_the_socket_did_not_take_first(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog, outbox: Outbox
) -> None:
    io, reader = _half_written(pair, watchdog, outbox)
    io.close(5.0)
    assert reader.get(timeout=5) == _BIG


def test_a_session_abandoned_with_unsent_bytes_leaves_no_watcher_in_the_loop(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog, outbox: Outbox
) -> None:
    # What serve_socket does when its greenlet is killed in a hook at a shutdown's
    # deadline: no close(), whose write would wait for the client.
    io, reader = _half_written(pair, watchdog, outbox)
    writable = io._writable
    assert writable is not None and writable.active
    io.abandon()
    assert not writable.active
    assert not io.unsent
    received = reader.get(timeout=5)  # the stream ends, short of what was owed
    assert _BIG.startswith(received) and len(received) < len(_BIG)
    io.abandon()  # twice is harmless (a session's close, then its end)


# --- a read after a reply in the outbox waits for the socket first ---------------------------------


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[_WatchedSocket]:
    """The sockets whose reads waited for readability before their recv, in order."""
    waited: list[_WatchedSocket] = []
    wait_readable = _WatchedSocket._wait_readable

    def recording(self: _WatchedSocket) -> None:
        waited.append(self)
        wait_readable(self)
        # It returns only once there is something to read (or the stream has ended).
        assert select.select([self.sock.fileno()], [], [], 0)[0]

    monkeypatch.setattr(_WatchedSocket, "_wait_readable", recording)
    return waited


def test_a_read_after_a_reply_in_the_outbox_waits_for_the_socket_first(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog, outbox: Outbox, waits: list[_WatchedSocket]
) -> None:
    server, client = pair
    io = _WatchedSocket(server, watchdog.aborting, watchdog, outbox)
    io.send_before_read(b"220 hi\r\n", 5.0)

    def answer_hello() -> bytes:
        data = client.recv(100)
        client.sendall(b"EHLO x\r\n")
        return data

    answer = gevent.spawn(answer_hello)
    assert io.receive(5.0) == b"EHLO x\r\n"
    assert answer.get(timeout=5) == b"220 hi\r\n"
    assert waits == [io]
    client.sendall(b"NOOP\r\n")
    assert io.receive(5.0) == b"NOOP\r\n"  # no reply went before it: recv at once
    assert io.send(b"250 ok\r\n", 5.0) is None
    client.sendall(b"QUIT\r\n")
    assert io.receive(5.0) == b"QUIT\r\n"  # nor a reply written at once
    assert waits == [io]
    io.send_before_read(b"221 bye\r\n", 5.0)
    client.close()
    assert io.receive(5.0) == b""  # the end of the stream, after the wait
    assert waits == [io, io]


def test_a_read_after_a_reply_ends_at_its_deadline_and_at_a_shutdown(
    pair: tuple[socket.socket, socket.socket],
    aborting: list[bool],
    watchdog: _Watchdog,
    outbox: Outbox,
    waits: list[_WatchedSocket],
) -> None:
    server, client = pair
    io = _WatchedSocket(server, watchdog.aborting, watchdog, outbox)
    io.send_before_read(b"220 hi\r\n", 5.0)
    started = time.monotonic()
    assert io.receive(TICK / 4) is TIMED_OUT
    assert time.monotonic() - started < TICK * 2
    io.send_before_read(b"250 ok\r\n", 5.0)

    def shut_down() -> None:  # what SMTPServer.shutdown() does at its deadline
        aborting[0] = True
        gevent.get_hub().loop.run_callback(watchdog.patrol)

    gevent.spawn_later(0.05, shut_down)
    assert io.receive(60.0) is SHUTDOWN
    assert waits == [io, io]
    client.sendall(b"NOOP\r\n")  # a cut-off wait leaves the socket fit for the next read
    aborting[0] = False
    assert io.receive(5.0) == b"NOOP\r\n"


class _Watcher:
    """Wraps the read watcher of a socket, to see it closed."""

    def __init__(self, watcher: object) -> None:
        self.watcher = watcher
        self.closed = False

    def stop(self) -> None:
        self.watcher.stop()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.closed = True
        self.watcher.close()  # type: ignore[attr-defined]


def test_the_read_watcher_is_closed_with_the_socket(
    pair: tuple[socket.socket, socket.socket], watchdog: _Watchdog, outbox: Outbox
) -> None:
    server, client = pair
    io = _WatchedSocket(server, watchdog.aborting, watchdog, outbox)
    io.send_before_read(b"220 hi\r\n", 5.0)
    client.sendall(b"QUIT\r\n")
    assert io.receive(5.0) == b"QUIT\r\n"
    watcher = io._readable = _Watcher(io._readable)
    io.close(5.0)
    assert watcher.closed


# --- hooks ------------------------------------------------------------------------------------------


class _BoundedLookup(Handler):
    """``mail_from`` bounds a slow lookup the gevent way, and the lookup overruns."""

    def __init__(self) -> None:
        self.closed = 0

    def mail_from(self, session: Session, mail: Mail) -> Reply | None:
        with gevent.Timeout(0.05):
            gevent.sleep(5)
        return None

    def connection_closed(self, session: Session) -> None:
        self.closed += 1


def test_a_gevent_timeout_out_of_a_hook_is_the_hooks_failure(caplog: pytest.LogCaptureFixture) -> None:
    # gevent.Timeout is a BaseException: let through, it ended the session with no reply
    # (and the hub printed a failed greenlet).  It is the hook's failure, as any other
    # exception is (handlers.md): logged, answered 451, and the session goes on.
    handler = _BoundedLookup()
    server = SMTPServer(handler, port=0)
    server.start()
    try:
        client = gevent.socket.create_connection(("127.0.0.1", server.port), timeout=5)
        reader = client.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        client.sendall(b"HELO me\r\nMAIL FROM:<a@example.com>\r\n")
        assert reader.readline().startswith(b"250 ")
        assert reader.readline() == b"451 Requested action aborted: local error in processing\r\n"
        client.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"221 ")
        assert reader.readline() == b""
        reader.close()
        client.close()
    finally:
        server.shutdown(1.0)
    assert handler.closed == 1
    [failure] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failure.getMessage().startswith("hook raised; answering 451")
    assert failure.exc_info is not None and isinstance(failure.exc_info[1], gevent.Timeout)
