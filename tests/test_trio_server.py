"""The trio server's deadlines: one watchdog per server instead of a cancel scope per call.

A read or a write only notes its deadline; the watchdog sleeps towards the
soonest one it knows and cuts off what has overrun (see ``_Watchdog`` in
``adapters/trio_server.py``).  The shared adapter tests run timeouts and
shutdowns through it; these pin what that design could get wrong: a deadline
sooner than the one the watchdog sleeps towards, a write that never ends, a
hook that outlasts a timeout, many busy sessions that must not be cut off, and
a call that is cut off in the very round it finishes.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from collections.abc import Generator, Iterator
from socket import socketpair as stdlib_socket_pair
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import trio
    import trio.testing as trio_testing
else:
    trio = pytest.importorskip("trio")
    trio_testing = pytest.importorskip("trio.testing")

from adapters import AsyncHandler, Envelope, Session
from adapters._handler import LOST, TIMED_OUT, Action, Close, Receive
from adapters._outbox import Outbox
from adapters.trio_server import ACCEPT_RETRY, SMTPServer, _Connection, _CutOff, _OutboxTask, _Watchdog
from smtpcore import Reply, ServerConfig

TIMEOUT_REPLY = b"421 4.4.2 Timeout exceeded, closing connection\r\n"

#: The sockets a test here opens, closed when it ends (by _sockets_closed) however it ends.
#: They are kept as the stdlib sockets under trio's: trio's close() needs a running trio.
_opened: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _sockets_closed() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def _socketpair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    ours, theirs = stdlib_socket_pair()
    _opened.extend((ours, theirs))
    return trio.socket.from_stdlib_socket(ours), trio.socket.from_stdlib_socket(theirs)


class Recorder(AsyncHandler):
    def __init__(self, hook_delay: float = 0.0) -> None:
        self.hook_delay = hook_delay
        self.delivered = 0
        self.closed = 0

    async def message_complete(self, session: Session, envelope: Envelope) -> Reply | None:
        await trio.sleep(self.hook_delay)
        self.delivered += 1
        return None

    async def connection_closed(self, session: Session) -> None:
        self.closed += 1


async def _reply(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    """One whole reply, multi-line or not, or b"" at the end of the stream."""
    with trio.fail_after(5):
        while True:
            end = 0
            while (newline := buffer.find(b"\r\n", end)) >= 0:
                line, end = buffer[end : newline + 2], newline + 2
                if line[3:4] != b"-":
                    reply = bytes(buffer[:end])
                    del buffer[:end]
                    return reply
            data = await stream.receive_some(65536)
            if not data:
                return b""
            buffer += data


async def _connect(server: SMTPServer) -> tuple[trio.SocketStream, bytearray]:
    sock = socket.create_connection(("127.0.0.1", server.port))  # a local connect does not block
    _opened.append(sock)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    buffer = bytearray()
    assert (await _reply(stream, buffer)).startswith(b"220")
    return stream, buffer


def test_a_deadline_sooner_than_the_watchdogs_wakes_it_sooner() -> None:
    # The first session waits for content with a long deadline, so the watchdog
    # sleeps towards it; the second session's command deadline comes far sooner.
    async def test() -> None:
        config = ServerConfig(command_timeout=0.4, data_timeout=30, min_data_rate=0)
        async with trio.open_nursery() as nursery:
            server = await nursery.start(SMTPServer(Recorder(), config, port=0).serve)
            first, first_buffer = await _connect(server)
            await first.send_all(b"EHLO a\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
            for _ in range(4):
                await _reply(first, first_buffer)
            await trio.sleep(0.6)  # the watchdog's first alarm (the commands' 0.4 s) passes: now it sleeps ~30 s
            second, second_buffer = await _connect(server)
            started = trio.current_time()
            # Before EHLO a reply carries no enhanced status code (RFC 2034).
            assert await _reply(second, second_buffer) == b"421 Timeout exceeded, closing connection\r\n"
            assert 0.3 < trio.current_time() - started < 1.5
            await first.send_all(b"hi\r\n.\r\n")  # the first session, waiting on its longer deadline, is fine
            assert (await _reply(first, first_buffer)).startswith(b"250")
            await server.shutdown(1.0)

    trio.run(test)


def test_busy_sessions_are_never_cut_off_however_long_they_last() -> None:
    # Deadlines move on every call while the watchdog sleeps towards an old one:
    # when it wakes, it must see the new ones and leave the sessions be.
    async def test() -> None:
        handler = Recorder()
        async with trio.open_nursery() as nursery:
            server = await nursery.start(SMTPServer(handler, ServerConfig(command_timeout=0.3), port=0).serve)
            sessions = [await _connect(server) for _ in range(5)]
            for stream, buffer in sessions:
                await stream.send_all(b"EHLO c\r\n")
                await _reply(stream, buffer)
            for _ in range(10):  # 1 s of traffic, more than three timeouts, never idle for one
                for stream, buffer in sessions:
                    await stream.send_all(b"NOOP\r\n")
                    assert (await _reply(stream, buffer)).startswith(b"250")
                await trio.sleep(0.1)
            started = trio.current_time()
            for stream, buffer in sessions:  # then every one times out, on time
                assert await _reply(stream, buffer) == TIMEOUT_REPLY
            assert trio.current_time() - started < 1.0
            await server.shutdown(1.0)

    trio.run(test)


def test_a_hook_may_outlast_the_timeout() -> None:
    # A deadline covers a read or a write, never a hook: a slow store is not a slow client.
    async def test() -> None:
        handler = Recorder(hook_delay=0.6)
        async with trio.open_nursery() as nursery:
            server = await nursery.start(SMTPServer(handler, ServerConfig(command_timeout=0.2), port=0).serve)
            stream, buffer = await _connect(server)
            await stream.send_all(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
            for _ in range(4):
                await _reply(stream, buffer)
            await stream.send_all(b"hi\r\n.\r\nQUIT\r\n")
            assert (await _reply(stream, buffer)).startswith(b"250")
            assert (await _reply(stream, buffer)).startswith(b"221")
            assert handler.delivered == 1
            await server.shutdown(1.0)

    trio.run(test)


def test_a_client_that_never_reads_its_replies_is_cut_off() -> None:
    # EHLO's reply is many times longer than the command: a client that never
    # reads fills every buffer on the way, and the server's write must give up.
    async def test() -> None:
        handler = Recorder()
        async with trio.open_nursery() as nursery:
            # (A second EHLO is a junk command: no limit on them here, or the session would end first.)
            config = ServerConfig(command_timeout=0.4, max_junk_commands=10**9)
            server = await nursery.start(SMTPServer(handler, config, port=0).serve)
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect(("127.0.0.1", server.port))
            burst = b"EHLO c.example\r\n" * 2000
            started = trio.current_time()
            with trio.move_on_after(5):
                try:
                    while not handler.closed:
                        with trio.move_on_after(0.5):
                            await sock.send(burst)
                except OSError:  # reset by the server
                    pass
                while not handler.closed:
                    await trio.sleep(0.05)
            assert handler.closed == 1
            assert trio.current_time() - started < 5
            assert server.connections == 0
            sock.close()
            await server.shutdown(1.0)

    trio.run(test)


def test_shutdown_cuts_off_idle_sessions_with_421() -> None:
    async def test() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(SMTPServer(Recorder(), ServerConfig(), port=0).serve)
            sessions = [await _connect(server) for _ in range(3)]
            started = trio.current_time()
            await server.shutdown(0.2)
            assert trio.current_time() - started < 2
            for stream, buffer in sessions:
                assert (await _reply(stream, buffer)).startswith(b"421")
            assert server.connections == 0

    trio.run(test)


class _FinishesAsItIsCutOff:
    """A stream whose calls complete just as the watchdog cuts them off (in the same round)."""

    connection: _Connection
    cut = True

    async def receive_some(self, max_bytes: int) -> bytes:
        if self.cut:
            self.connection.cut_off()
        return b"NOOP\r\n"

    async def send_all(self, data: bytes) -> None:
        if self.cut:
            self.connection.cut_off()


@pytest.mark.parametrize("call", ["read", "write"])
def test_a_call_cut_off_as_it_finishes_counts_as_cut_off(call: str) -> None:
    """The cancellation would otherwise land on whatever runs next in the scope, a hook perhaps."""

    async def test() -> None:
        stream = _FinishesAsItIsCutOff()
        connection = stream.connection = _Connection(stream, _Watchdog(set()), trio.current_time)  # type: ignore[arg-type]
        with connection.new_scope():
            with pytest.raises(_CutOff):
                await (connection.read(5.0) if call == "read" else connection.write(b"250 ok\r\n", 5.0))
        assert connection.cut_off_result() is (TIMED_OUT if call == "read" else LOST)
        stream.cut = False
        with connection.new_scope():  # the session carries on in a fresh scope
            assert await connection.read(5.0) == b"NOOP\r\n"

    trio.run(test)


# --- the outbox: replies that precede a read are written together, by one task --------------------


async def _pair(outbox: Outbox, nursery: trio.Nursery | None = None) -> tuple[_Connection, trio.SocketStream]:
    """A connection on one end of a socket pair, with ``outbox``; the other end is the client.

    ``nursery`` runs the task that writes what the socket does not take of an outbox write.
    """
    ours, theirs = _socketpair()
    connection = _Connection(trio.SocketStream(ours), _Watchdog(set()), trio.current_time, outbox, nursery)
    return connection, trio.SocketStream(theirs)


async def _received(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    with trio.fail_after(5):
        while len(data) < size:
            data += await stream.receive_some(65536)
    return data


def test_a_reply_put_in_the_outbox_is_written_when_its_task_runs() -> None:
    async def test() -> None:
        writer = _OutboxTask()
        connection, client = await _pair(writer.outbox)
        assert connection.write_soon(b"250 first\r\n")
        with trio.move_on_after(0.1) as waited:
            await client.receive_some(100)
        assert waited.cancelled_caught  # nothing is written until the outbox's task runs
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            assert await _received(client, 11) == b"250 first\r\n"
            assert connection.write_soon(b"250 second\r\n")  # the task, waiting again, is woken
            assert await _received(client, 12) == b"250 second\r\n"
            nursery.cancel_scope.cancel()

    trio.run(test)


def test_a_write_goes_behind_the_replies_put_before_it() -> None:
    # A Send (a reply with no read after it, a shutdown's 421) must not overtake them.
    async def test() -> None:
        outbox = Outbox(lambda flush: None)  # flushed by hand
        connection, client = await _pair(outbox)
        other, other_client = await _pair(outbox)
        assert connection.write_soon(b"250 ok\r\n")
        assert other.write_soon(b"250 other\r\n")
        assert await connection.write(b"421 bye\r\n", 5.0) is None
        assert await _received(client, 16) == b"250 ok\r\n421 bye\r\n"
        assert await _received(other_client, 11) == b"250 other\r\n"  # every session's, at once

    trio.run(test)


def test_what_the_socket_does_not_take_is_written_by_the_session_first() -> None:
    async def test() -> None:
        outbox = Outbox(lambda flush: None)  # flushed by hand
        async with trio.open_nursery() as nursery:
            connection, client = await _pair(outbox, nursery)
            connection.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # type: ignore[attr-defined]
            big = bytes(range(256)) * 8192  # 2 MiB: more than the socket buffers take
            assert connection.write_soon(big)
            outbox.flush()
            assert connection.unsent and len(connection.unsent) < len(big)
            # Nothing more goes through the outbox while something is left over.
            assert not connection.write_soon(b"250 after\r\n")
            await trio_testing.wait_all_tasks_blocked()  # a task waits to write the rest as the socket drains

            async def write() -> None:
                assert await connection.write(b"250 after\r\n", 5.0) is None

            # The session's write takes the rest over: it waits for the socket in that task's stead.
            nursery.start_soon(write)
            await trio_testing.wait_all_tasks_blocked()
            assert await _received(client, len(big) + 11) == big + b"250 after\r\n"
            await trio_testing.wait_all_tasks_blocked()  # the write has returned
            assert not connection.unsent
            assert connection.write_soon(b"250 again\r\n")

    trio.run(test)


def test_a_close_ends_the_task_that_writes_what_the_socket_did_not_take() -> None:
    # The session ends (its client is gone, say) while that task waits for the socket.
    async def test() -> None:
        outbox = Outbox(lambda flush: None)  # flushed by hand
        async with trio.open_nursery() as nursery:
            connection, _client = await _pair(outbox, nursery)
            connection.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # type: ignore[attr-defined]
            assert connection.write_soon(bytes(range(256)) * 8192)  # 2 MiB: more than the socket buffers take
            outbox.flush()
            await trio_testing.wait_all_tasks_blocked()
            await connection.close()
        # The nursery ended: the task did too, and raised nothing.

    trio.run(test)


def test_what_the_socket_does_not_take_goes_as_it_drains_while_the_session_reads() -> None:
    # A client that pipelined waits for all its replies before it sends more, and
    # the session for the client: the rest cannot wait for the session's next write.
    async def test() -> None:
        outbox = Outbox(lambda flush: None)  # flushed by hand
        async with trio.open_nursery() as nursery:
            connection, client = await _pair(outbox, nursery)
            connection.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # type: ignore[attr-defined]
            replies = bytes(range(256)) * 1024  # 256 KiB: more than the socket takes at once
            assert connection.write_soon(replies)
            outbox.flush()
            assert connection.unsent

            async def read_all_then_answer() -> None:
                assert await _received(client, len(replies)) == replies
                await client.send_all(b"QUIT\r\n")

            nursery.start_soon(read_all_then_answer)
            started = trio.current_time()
            assert await connection.read(5.0, after_reply=True) == b"QUIT\r\n"
            assert trio.current_time() - started < 1.0
            assert not connection.unsent
            assert connection.write_soon(b"221 bye\r\n")  # the outbox writes again

    trio.run(test)


def test_a_reply_put_for_a_connection_that_closed_is_dropped() -> None:
    async def test() -> None:
        outbox = Outbox(lambda flush: None)  # flushed by hand
        connection, client = await _pair(outbox)
        assert connection.write_soon(b"250 ok\r\n")
        fd = connection.stream.socket.fileno()  # type: ignore[attr-defined]
        await connection.close()
        assert await client.receive_some(100) == b""
        # The kernel may give the number to the next socket opened: the reply must not go there.
        newcomer, newcomer_peer = stdlib_socket_pair()
        copied = newcomer.fileno() != fd
        if copied:  # the kernel chose another number: give the newcomer this one too
            os.dup2(newcomer.fileno(), fd)
        try:
            outbox.flush()
            newcomer_peer.setblocking(False)
            with pytest.raises(BlockingIOError):
                newcomer_peer.recv(100)
        finally:
            if copied:
                os.close(fd)
            newcomer.close()
            newcomer_peer.close()

    trio.run(test)


def test_the_last_reply_before_the_client_hangs_up_is_written_before_the_close() -> None:
    async def test() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(SMTPServer(Recorder(), ServerConfig(), port=0).serve)
            stream, buffer = await _connect(server)
            await stream.send_all(b"NOOP\r\n")
            await stream.send_eof()
            assert (await _reply(stream, buffer)).startswith(b"250")
            assert await _reply(stream, buffer) == b""
            await server.shutdown(1.0)

    trio.run(test)


_LONG_REPLY = b"250-" + b"x" * (2 << 20) + b"\r\n250 ok\r\n"


@pytest.mark.parametrize("reply", [b"250 ok\r\n", _LONG_REPLY], ids=["short", "2 MiB"])
def test_a_close_writes_what_is_pending_first(reply: bytes) -> None:
    # No outbox task runs here, so only the Close can write the reply put before
    # it; 2 MiB is more than the socket takes at once, and the rest goes too.
    async def test() -> None:
        server = SMTPServer(Recorder(), ServerConfig(), port=0)

        def actions() -> Generator[Action, object, None]:
            assert (yield Receive(5.0, reply)) == b"QUIT\r\n"
            yield Close()

        async with trio.open_nursery() as nursery:
            connection, client = await _pair(Outbox(lambda flush: None), nursery)
            await client.send_all(b"QUIT\r\n")
            nursery.start_soon(server._carry_out, connection, actions(), None)
            assert await _received(client, len(reply)) == reply
        assert await client.receive_some(100) == b""

    trio.run(test)


# --- a read after a reply in the outbox waits for the socket first ---------------------------------


class _NoReceiveSome:
    """Stands in for ``stream.receive_some`` where a read must wait for the socket instead."""

    async def __call__(self, max_bytes: int | None = None) -> bytes:
        raise AssertionError("a read after a reply in the outbox must not try recv first")


def test_a_read_after_a_reply_in_the_outbox_waits_for_the_socket_then_reads() -> None:
    async def test() -> None:
        outbox = Outbox(lambda flush: None)  # flushed by hand
        connection, client = await _pair(outbox)
        connection.stream.receive_some = _NoReceiveSome()  # type: ignore[method-assign]
        assert connection.write_soon(b"220 hi\r\n")
        async with trio.open_nursery() as nursery:

            async def session() -> None:
                assert await connection.read(5.0, after_reply=True) == b"EHLO x\r\n"
                assert await connection.read(5.0, after_reply=True) == b""  # the client's end

            nursery.start_soon(session)
            await trio_testing.wait_all_tasks_blocked()
            outbox.flush()
            assert await _received(client, 8) == b"220 hi\r\n"
            await client.send_all(b"EHLO x\r\n")
            await trio_testing.wait_all_tasks_blocked()
            await client.send_eof()

    trio.run(test)


def test_a_read_after_a_reply_reports_a_reset_connection_as_lost() -> None:
    async def test() -> None:
        connection, client = await _pair(Outbox(lambda flush: None))
        assert connection.write_soon(b"220 hi\r\n")
        # Close with unread data in the client's socket and a zero linger: the kernel sends a reset.
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        connection.outbox.flush()
        await trio_testing.wait_all_tasks_blocked()
        await client.aclose()
        assert await connection.read(5.0, after_reply=True) is LOST

    trio.run(test)


def test_a_read_woken_with_nothing_to_read_waits_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # epoll may say readable and recv then find nothing; the read must not return or fail then.
    real_wait = trio.lowlevel.wait_readable
    wakes = []

    async def wakes_once_for_nothing(fd: int) -> None:
        wakes.append(fd)
        if len(wakes) == 1:
            await trio.lowlevel.checkpoint()
        else:
            await real_wait(fd)

    async def test() -> None:
        connection, client = await _pair(Outbox(lambda flush: None))
        assert connection.write_soon(b"220 hi\r\n")
        monkeypatch.setattr(trio.lowlevel, "wait_readable", wakes_once_for_nothing)
        async with trio.open_nursery() as nursery:

            async def session() -> None:
                assert await connection.read(5.0, after_reply=True) == b"QUIT\r\n"

            nursery.start_soon(session)
            await trio_testing.wait_all_tasks_blocked()
            await client.send_all(b"QUIT\r\n")
        assert len(wakes) == 2

    trio.run(test)


def test_a_read_after_a_reply_is_cut_off_at_its_deadline() -> None:
    async def test() -> None:
        sessions: set[_Connection] = set()
        watchdog = _Watchdog(sessions)
        ours, theirs = _socketpair()
        connection = _Connection(trio.SocketStream(ours), watchdog, trio.current_time, Outbox(lambda flush: None))
        sessions.add(connection)
        assert connection.write_soon(b"220 hi\r\n")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog.run)
            with trio.fail_after(5), connection.new_scope():
                with pytest.raises(_CutOff):
                    await connection.read(0.05, after_reply=True)
            assert connection.cut_off_result() is TIMED_OUT
            nursery.cancel_scope.cancel()
        theirs.close()

    trio.run(test)


@pytest.mark.parametrize("outbox", [True, False], ids=["reply in the outbox", "reply written"])
def test_the_session_reads_after_a_reply_in_the_outbox_by_waiting_first(outbox: bool) -> None:
    # With no outbox (a TLS stream, say) the reply is written and receive_some reads as before.
    async def test() -> None:
        server = SMTPServer(Recorder(), ServerConfig(), port=0)
        ours, theirs = _socketpair()
        connection = _Connection(
            trio.SocketStream(ours), _Watchdog(set()), trio.current_time, Outbox(lambda flush: None) if outbox else None
        )
        client = trio.SocketStream(theirs)
        real_receive_some = connection.stream.receive_some
        calls = []

        async def receive_some(max_bytes: int | None = None) -> bytes | bytearray:
            calls.append(max_bytes)
            return await real_receive_some(max_bytes)

        connection.stream.receive_some = receive_some  # type: ignore[method-assign]
        await client.send_all(b"QUIT\r\n")

        def actions() -> Generator[Action, object, None]:
            assert (yield Receive(5.0, b"220 hi\r\n")) == b"QUIT\r\n"
            yield Close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._carry_out, connection, actions(), None)
            assert await _received(client, 8) == b"220 hi\r\n"
        assert len(calls) == (0 if outbox else 1)

    trio.run(test)


# --- the accept loop --------------------------------------------------------------------------------


def test_out_of_descriptors_the_server_backs_off_then_serves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # accept() failing with EMFILE must neither end serve() (and with it every session)
    # nor spin a core: the server says so, waits and tries again, as the blocking
    # server's workers do, and the connection waiting in the backlog is served.
    real_accept = trio.SocketListener.accept
    failures: list[float] = []

    async def accept(self: trio.SocketListener) -> trio.SocketStream:
        if len(failures) < 3:
            failures.append(trio.current_time())
            raise OSError(errno.EMFILE, "Too many open files")
        return await real_accept(self)

    monkeypatch.setattr(trio.SocketListener, "accept", accept)

    async def test() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(SMTPServer(Recorder(), ServerConfig(), port=0).serve)
            stream, buffer = await _connect(server)
            await stream.send_all(b"QUIT\r\n")
            assert (await _reply(stream, buffer)).startswith(b"221")
            await server.shutdown(1.0)

    trio.run(test)
    assert len(failures) == 3
    assert failures[2] - failures[0] >= 1.5 * ACCEPT_RETRY  # a wait between tries, not a busy loop
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["cannot accept a connection ([Errno 24] Too many open files); trying again in 0.1 s"] * 3


def test_a_client_that_resets_before_its_session_begins_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    # A port scanner or a health check connects and resets at once (SO_LINGER 0).  Here
    # the reset comes before the server has even accepted: no await runs in between, so
    # its session then finds the socket no longer connected (getpeername: ENOTCONN).
    caplog.set_level(logging.INFO, logger="smtpcore.adapters")

    async def test() -> None:
        handler = Recorder()
        async with trio.open_nursery() as nursery:
            server = await nursery.start(SMTPServer(handler, ServerConfig(), port=0).serve)
            for _ in range(5):
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            stream, buffer = await _connect(server)  # and the server goes on
            await stream.send_all(b"QUIT\r\n")
            assert (await _reply(stream, buffer)).startswith(b"221")
            await server.shutdown(1.0)
        assert handler.closed == 1  # the reset ones had no session: no hook was called for them

    trio.run(test)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    lost = [r for r in caplog.records if r.getMessage().startswith("lost a connection before its session began")]
    assert len(lost) == 5
