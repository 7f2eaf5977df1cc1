"""The trio adapter: one task per connection in the server's own nursery.

The story of every adapter, told with trio: read, feed, next_event, call the
(async) hook, send the reply, write.  The protocol is in ``smtpcore`` and the hook
dispatch in ``_handler.Dispatcher``; this file only moves bytes and keeps time.

Start it with ``server = await nursery.start(SMTPServer(handler, config, port=0).serve)``:
``task_status.started()`` hands back the server once it listens, so
``server.port`` is the real port.  Each session runs in a cancel scope that one
watchdog task per server cancels when a read or a write overruns the deadline
the dispatcher asked for (see :class:`_Watchdog`); a graceful shutdown cancels
the accept loop, waits for the sessions, then cuts off the reads of the rest
(they answer 421 and close).  Every task lives in the server's nursery, so none
outlives it.

Replies that come before a read are not written by the session but put in the
server's outbox (``adapters._outbox``), which one task (:class:`_OutboxTask`)
writes when the run loop next gets to it, every session's together.  Anything
else a session writes (a reply with no read after it, the 421 of a shutdown,
the reply before STARTTLS, what is left at a close) has the outbox write what
is pending first, so each connection's bytes keep their order.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket as stdlib_socket
import ssl
from collections.abc import Callable, Generator
from typing import Any

import trio

from smtpcore import ServerConfig

from ._handler import (
    LOST,
    READ_SIZE,
    SHUTDOWN,
    TIMED_OUT,
    Action,
    AsyncHandler,
    CallHook,
    Close,
    Dispatcher,
    Pause,
    Receive,
    Send,
    Session,
    StartTls,
    TlsInfo,
    acall_hook,
    check_handler,
    handshake_first,
    refusal,
    unused_hooks,
    wants_transcript,
)
from ._outbox import SOCKETS_ARE_FILES, Outbox, write_at_once
from ._tls import server_context, tls_info

__all__ = ["SMTPServer", "serve"]

log = logging.getLogger("smtpcore.adapters")

_Stream = trio.abc.Stream

#: What ``accept()`` fails with while the process or the system is out of descriptors or
#: memory (trio.serve_listeners' list): for the moment, not for good.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: How long the accept loop then waits before it tries again: a blocking worker's slice
#: (``adapters.blocking_server.TICK``), and trio.serve_listeners' wait too.
ACCEPT_RETRY = 0.1


class _CutOff(Exception):
    """A read or a write was cut off as it finished (see :meth:`_Connection._done`)."""


class _Watchdog:
    """Cuts off the reads and writes that overran their deadlines, for every connection.

    One task for the whole server, asleep until the soonest deadline it knows
    of.  A read or a write only writes its deadline down and wakes the watchdog
    sooner if it must; most deadlines are later than the one the watchdog sleeps
    towards, so a call costs a clock read and a comparison, where a
    ``move_on_after`` of its own costs about 7 µs (and a 1 KiB message makes
    eight calls).  On waking, the watchdog cuts off whatever has overrun and
    sleeps towards the soonest deadline still pending.
    """

    def __init__(self, connections: set[_Connection]) -> None:
        self.connections = connections
        self._alarm = trio.CancelScope()

    def wake_by(self, deadline: float) -> None:
        # Not min(): setting a scope's deadline is the costly part, and it is rarely needed.
        if deadline < self._alarm.deadline:  # noqa: PLR1730
            self._alarm.deadline = deadline

    async def run(self) -> None:
        while True:
            with self._alarm:
                await trio.sleep_forever()
            now, soonest = trio.current_time(), math.inf
            for connection in self.connections:
                if connection.deadline <= now:
                    connection.cut_off()
                else:
                    soonest = min(soonest, connection.deadline)
            self._alarm = trio.CancelScope(deadline=soonest)


class _OutboxTask:
    """The task that writes the server's outbox (see ``adapters._outbox``): trio has no loop callbacks.

    Waiting for work, it is woken by the first reply of a batch of tasks and
    runs with the next, writing what the batch put.  It never waits on a
    socket: it writes what each one takes at once (``os.write`` on a
    non-blocking socket) and leaves the rest with its connection
    (:attr:`_Connection.unsent`), which a task of its own writes as the socket
    drains, unless the session writes first and takes it over.
    """

    def __init__(self) -> None:
        self.outbox = Outbox(self._wake)
        self._waiting: trio.lowlevel.Task | None = None

    def _wake(self, flush: Callable[[], None]) -> None:
        if self._waiting is not None:
            task, self._waiting = self._waiting, None
            trio.lowlevel.reschedule(task)

    def _stop_waiting(self, raise_cancel: object) -> trio.lowlevel.Abort:
        self._waiting = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def run(self) -> None:
        while True:
            if self.outbox.empty:
                self._waiting = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._stop_waiting)
            self.outbox.flush()


class _Connection:
    """One client: its stream, and what ends the read or the write in progress.

    The session runs in a cancel scope (:attr:`scope`) that the watchdog cancels
    when a call's deadline has passed, and a shutdown cancels during a read.
    A cut-off call ends the scope; the session hands the dispatcher what the call
    returns when cut off (:meth:`cut_off_result`) and carries on in a new scope.
    """

    def __init__(
        self,
        stream: _Stream,
        watchdog: _Watchdog,
        clock: Callable[[], float],
        outbox: Outbox | None = None,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self.stream = stream
        self.watchdog = watchdog
        self.outbox = outbox if outbox is not None else Outbox(lambda flush: None)
        # The socket the outbox writes to; -1 where it may not (TLS, Windows, no outbox).
        self._fileno = -1
        if outbox is not None and SOCKETS_ARE_FILES and isinstance(stream, trio.SocketStream):
            self._fileno = stream.socket.fileno()
        #: What the outbox wrote only in part: written as the socket drains, before anything else.
        self.unsent = b""
        # Where the task that writes it runs (the server's nursery), and that task's scope.
        self._nursery = nursery
        self._writing_unsent: trio.CancelScope | None = None
        # The run's clock itself: trio.current_time() reaches it through two more calls.
        self.clock = clock
        #: A graceful shutdown has begun: idle reads end.  Then its grace period is over: every read does.
        self.draining = False
        self.aborting = False
        #: The read in progress is an idle one (no transaction open).
        self.idle = False
        self.scope = trio.CancelScope()
        # Whether this adapter cancelled the scope: the only canceller, it need not
        # ask scope.cancel_called, which reads the clock to check a deadline it never has.
        self._cancelled = False
        #: When the call in progress must end; infinite between calls.
        self.deadline = math.inf
        #: What the call in progress returns if it is cut off; None between calls.
        self.if_cut_off: object = None
        # The scope of the pause in progress (the core's error delay), which a shutdown's deadline ends.
        self._pausing: trio.CancelScope | None = None
        # The scope of the TLS handshake in progress, which a graceful shutdown ends at once.
        self._handshaking: trio.CancelScope | None = None
        self.closed = False

    def new_scope(self) -> trio.CancelScope:
        """The scope the session runs in until a call is cut off (and after that, the next)."""
        self.scope, self._cancelled = trio.CancelScope(), False
        return self.scope

    def _cancel(self) -> None:
        self._cancelled = True
        self.scope.cancel()

    def drain(self) -> None:
        self.draining = True
        if self.if_cut_off is TIMED_OUT and self.idle:  # an idle read is waiting: end it now
            self._cancel()
        if self._handshaking is not None:  # so does a TLS handshake (see start_tls)
            self._handshaking.cancel()

    def abort(self) -> None:
        self.aborting = True
        if self.if_cut_off is TIMED_OUT:  # a read is waiting: end it now
            self._cancel()
        if self._pausing is not None:  # and so does a pause: the replies it holds back go now
            self._pausing.cancel()

    def _shutting_down(self, idle: bool) -> bool:
        """Whether a read, idle or not, must end with SHUTDOWN now."""
        return self.aborting or (idle and self.draining)

    def cut_off(self) -> None:
        self.deadline = math.inf
        self._cancel()

    def cut_off_result(self) -> object:
        result, self.if_cut_off, self.deadline = self.if_cut_off, None, math.inf
        assert result is not None, "only a read or a write is ever cut off"
        return SHUTDOWN if result is TIMED_OUT and self._shutting_down(self.idle) else result

    def _start(self, timeout: float, if_cut_off: object) -> None:
        self.if_cut_off = if_cut_off
        self.deadline = deadline = self.clock() + timeout
        self.watchdog.wake_by(deadline)

    def _done(self) -> None:
        # The watchdog or a shutdown may have cancelled the scope in the same
        # scheduling round as the call finished; the cancellation would then
        # land on whatever runs next in the scope, a hook perhaps.  The call is
        # treated as cut off instead, which its deadline says it was.
        if self._cancelled:
            raise _CutOff
        self.deadline = math.inf
        self.if_cut_off = None

    async def read(
        self, timeout: float, *, after_reply: bool = False, idle: bool = False, limit: int | None = None
    ) -> object:
        """The next bytes from the client (``limit`` octets at most, if given); ``after_reply``
        when a reply was just put in the outbox."""
        if self._shutting_down(idle):
            return SHUTDOWN
        self.idle = idle
        self._start(timeout, TIMED_OUT)
        data: object
        try:
            size = READ_SIZE if limit is None else limit
            if after_reply:
                data = await self._read_when_readable(size)
            else:
                data = await self.stream.receive_some(size)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = LOST
        self._done()
        return data

    async def _read_when_readable(self, size: int) -> object:
        # A client waits for a reply before it sends more (one that pipelines
        # has sent it already, and the core has it), and this reply is still
        # in the outbox: receive_some's first recv would find nothing, raise
        # BlockingIOError and only then wait.  Waiting first saves that call
        # and its exception on most reads (smtp-source, 1 KiB messages: 258 ->
        # 235 µs of user CPU a message).  Only on the plain socket the outbox
        # writes to.
        assert self._fileno >= 0, "only after a reply the outbox took"
        while True:
            await trio.lowlevel.wait_readable(self._fileno)
            try:
                return os.read(self._fileno, size)
            except BlockingIOError:  # woken with nothing to read after all: wait again
                continue
            except OSError:  # reset by the peer, say: what receive_some calls broken
                return LOST

    def write_soon(self, data: bytes) -> bool:
        """Hand ``data`` to the outbox, if it may write to this socket and nothing is left over."""
        return self._fileno >= 0 and not self.unsent and self.outbox.put(self, data)

    def write_now(self, data: bytes) -> None:
        """The outbox's write: what the socket takes at once; the rest, :attr:`unsent`, as it drains."""
        if self.closed:  # its number may be another socket's by now
            return
        # Only put with nothing left over, and one at a time: nothing is ahead of it.
        assert not self.unsent
        self.unsent = write_at_once(self._fileno, data) or b""
        if self.unsent:
            # Not left for the session's next write: the session is waiting for
            # the client, and a client that pipelined waits for the rest of its
            # replies before it sends more; both would wait for the timeout.  A
            # task writes it as the socket drains (as asyncio's transports do),
            # unless the session writes first (:meth:`_take_unsent`).
            assert self._nursery is not None, "a connection the outbox writes to has a nursery"
            self._writing_unsent = trio.CancelScope()
            self._nursery.start_soon(self._write_unsent, self._writing_unsent)

    async def _write_unsent(self, scope: trio.CancelScope) -> None:
        """Write :attr:`unsent` as the socket takes it, until it is all gone or ``scope`` is cancelled."""
        with scope:
            while self.unsent and not scope.cancel_called:
                await trio.lowlevel.wait_writable(self._fileno)
                if not scope.cancel_called:  # (not taken over while this task was being woken)
                    self.unsent = write_at_once(self._fileno, self.unsent) or b""

    def _take_unsent(self) -> bytes:
        """What the outbox left, for the session's own write to send first (the task writing it stops)."""
        if self._writing_unsent is not None:
            # Its wait ends here and now, not at its next turn: trio lets only one
            # task at a time wait for the socket, and the session is about to.
            self._writing_unsent.cancel()
        unsent, self.unsent = self.unsent, b""
        return unsent

    async def write(self, data: bytes, timeout: float) -> object:
        self.outbox.flush()  # what was put before goes first
        if self.unsent:
            data = self._take_unsent() + data
        self._start(timeout, LOST)
        result: object = None
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            result = LOST
        self._done()
        return result

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` before the next write, or until the shutdown's grace period is over.

        As the blocking and gevent servers' pauses end: the client then gets the
        replies it was owed, and its 421 at the read after them.
        """
        if self.aborting:
            return
        try:
            with trio.CancelScope() as self._pausing:
                await trio.sleep(seconds)
        finally:
            self._pausing = None

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> TlsInfo | None:
        # The dispatcher wrote the 220 with a Send, which wrote everything put
        # before it; from here on only the TLS stream may write to the socket.
        assert not self.unsent, "STARTTLS's reply is written with a Send"
        self._fileno = -1
        # A graceful shutdown ends a handshake at once, as a failed one: mid-handshake
        # no SMTP can be spoken, so nothing is lost, and a client that opened port 465
        # and said nothing (a scanner) would otherwise hold the shutdown for its whole
        # grace period.  (Its own scope: the session's is the watchdog's, for reads and writes.)
        if self.draining:
            log.info("TLS handshake not begun: the server is shutting down")
            return None
        tls = trio.SSLStream(self.stream, context, server_side=True)
        try:
            with trio.move_on_after(timeout) as self._handshaking:
                try:
                    await tls.do_handshake()
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    log.info("TLS handshake failed: %s", exc)
                    return None
                self.stream = tls
                return tls_info(tls)  # SSLStream forwards version(), cipher(), getpeercert()
        finally:
            self._handshaking = None
        log.info("TLS handshake cut short: %s", "the server is shutting down" if self.draining else "timed out")
        return None

    async def close(self) -> None:
        # Called for the dispatcher's Close and again when the session ends: once is enough.
        if self.closed:
            return
        self.closed = True
        self._take_unsent()  # too late for it; its task must not wait on a closed socket
        if isinstance(self.stream, trio.SocketStream):
            # A plain socket closes at once; aclose_forcefully's cancelled scope
            # would only add a Cancelled raised and caught per connection.
            await self.stream.aclose()
        else:
            await trio.aclose_forcefully(self.stream)  # TLS: do not wait for close_notify


class SMTPServer:
    """A trio SMTP/LMTP server for an :class:`~adapters.AsyncHandler`.

    Listens on TCP (``host``, ``port``; ``"::1"`` for IPv6) or on ``unix_path``.
    ``tls=`` (an ``ssl.SSLContext``) or ``certfile=``/``keyfile=`` enable STARTTLS
    or implicit TLS, as ``config`` says.  Run :meth:`serve` in a nursery.
    """

    def __init__(
        self,
        handler: AsyncHandler,
        config: ServerConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 25,
        unix_path: str | None = None,
        tls: ssl.SSLContext | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        max_connections: int = 100,
    ) -> None:
        check_handler(handler, "trio")
        self.handler = handler
        self.config = config or ServerConfig()
        self.tls = server_context(tls, certfile, keyfile, self.config)
        self.max_connections = max_connections
        self._host, self._port, self._unix_path = host, port, unix_path
        self._listener: trio.SocketListener | None = None
        self._sessions: set[_Connection] = set()
        self._watchdog = _Watchdog(self._sessions)
        self._outbox = _OutboxTask()
        self._idle = trio.Event()
        self._accept_scope = trio.CancelScope()
        self._grace = 30.0
        self._stopped = trio.Event()

    @property
    def address(self) -> Any:
        """Where the server listens: ``(host, port, ...)`` with the real port, or the Unix path."""
        assert self._listener is not None, "serve() first"
        return self._listener.socket.getsockname()

    @property
    def port(self) -> int:
        return int(self.address[1])

    @property
    def connections(self) -> int:
        return len(self._sessions)

    async def _listen(self) -> trio.SocketListener:
        if self._unix_path is not None:
            if os.path.exists(self._unix_path):
                os.unlink(self._unix_path)
            sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
            await sock.bind(self._unix_path)
        else:
            family = stdlib_socket.AF_INET6 if ":" in self._host else stdlib_socket.AF_INET
            sock = trio.socket.socket(family, stdlib_socket.SOCK_STREAM)
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
            await sock.bind((self._host, self._port))
        sock.listen(128)
        return trio.SocketListener(sock)

    async def serve(self, *, task_status: trio.TaskStatus[SMTPServer] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until :meth:`shutdown`; reports ``self`` to ``nursery.start()``."""
        self._listener = await self._listen()
        try:
            clock = trio.lowlevel.current_clock().current_time
            async with trio.open_nursery() as nursery:
                task_status.started(self)
                nursery.start_soon(self._watchdog.run)
                nursery.start_soon(self._outbox.run)
                with self._accept_scope:
                    while True:
                        stream = await self._accept(self._listener)
                        if len(self._sessions) >= self.max_connections:
                            nursery.start_soon(self._refuse, stream)
                        else:
                            connection = _Connection(stream, self._watchdog, clock, self._outbox.outbox, nursery)
                            self._sessions.add(connection)
                            self._idle = trio.Event()
                            nursery.start_soon(self._run, connection)
                await self._listener.aclose()
                if self._unix_path is not None and os.path.exists(self._unix_path):
                    os.unlink(self._unix_path)
                for connection in list(self._sessions):
                    connection.drain()  # idle sessions: 421 now
                with trio.move_on_after(self._grace):
                    await self._wait_idle()
                for connection in list(self._sessions):
                    connection.abort()
                with trio.move_on_after(1.0):
                    await self._wait_idle()
                nursery.cancel_scope.cancel()  # a hook that still runs is cancelled (see _session)
        finally:
            self._stopped.set()

    async def _accept(self, listener: trio.SocketListener) -> trio.SocketStream:
        """The next connection.  Out of descriptors (EMFILE) or memory, wait and try again, as
        trio.serve_listeners does: raised out of :meth:`serve`, the error would end every session,
        and the connection waiting in the backlog is served once one is free."""
        while True:
            try:
                return await listener.accept()
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                log.error("cannot accept a connection (%s); trying again in %s s", exc, ACCEPT_RETRY)
                await trio.sleep(ACCEPT_RETRY)

    async def _wait_idle(self) -> None:
        if self._sessions:
            await self._idle.wait()

    def shutdown_nowait(self, timeout: float = 30.0) -> None:
        """Start a graceful shutdown: stop accepting, 421 to the idle sessions now, give the others
        ``timeout`` seconds to finish their transactions, then 421."""
        self._grace = timeout
        self._accept_scope.cancel()

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Graceful shutdown; returns when :meth:`serve` has finished."""
        self.shutdown_nowait(timeout)
        await self._stopped.wait()

    async def _refuse(self, stream: _Stream) -> None:
        with trio.move_on_after(1.0):
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(refusal(self.config))
        await trio.aclose_forcefully(stream)

    async def _run(self, connection: _Connection) -> None:
        try:
            await self._session(connection)
        except Exception:
            log.exception("session failed")
        finally:
            try:
                await connection.close()  # the socket is closed even if this is cancelled
            finally:
                self._sessions.discard(connection)
                if not self._sessions:
                    self._idle.set()

    async def _session(self, connection: _Connection) -> None:
        raw = connection.stream
        assert isinstance(raw, trio.SocketStream)
        try:
            session = Session(peer=raw.socket.getpeername(), local=raw.socket.getsockname())
        except OSError as exc:
            # A client that reset the connection before its session began (ENOTCONN: a port
            # scanner, a health check closing with SO_LINGER 0).  trio's accept() keeps no
            # address to fall back on; with none to show the hooks, there is no session, as
            # for a failed implicit-TLS handshake.  Not a failure of the server's.
            log.info("lost a connection before its session began: %s", exc)
            return
        if handshake_first(self.config):  # (behind a proxy, the dispatcher asks for it after the header)
            assert self.tls is not None
            session.tls_info = await connection.start_tls(self.tls, self.config.tls_handshake_timeout)
            if session.tls_info is None:
                return
        actions = Dispatcher(
            self.config,
            session,
            clock=connection.clock,
            transcript=wants_transcript(self.handler),
            unused=unused_hooks(self.handler),
        ).actions()
        result: Any = None
        try:
            while True:
                with connection.new_scope():
                    try:
                        await self._carry_out(connection, actions, result)
                        return
                    except _CutOff:
                        pass
                result = connection.cut_off_result()
        except trio.Cancelled:
            # The shutdown's deadline cancelled a hook still running: the session ends
            # as if the client had left, and its last hooks (message_aborted,
            # connection_closed) are still called, shielded, for a second at most.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 1.0):
                await self._carry_out(connection, actions, LOST)
            raise
        finally:
            actions.close()

    async def _carry_out(self, connection: _Connection, actions: Generator[Action, Any, None], result: Any) -> None:
        """Do what the dispatcher asks until the session ends; a cut-off call ends it sooner."""
        while True:
            try:
                action = actions.send(result)
            except StopIteration:
                return
            result = None
            if isinstance(action, Receive):
                if not action.send:
                    result = await connection.read(action.timeout, idle=action.idle, limit=action.limit)
                elif connection.write_soon(action.send):
                    result = await connection.read(
                        action.timeout, after_reply=True, idle=action.idle, limit=action.limit
                    )
                elif await connection.write(action.send, self.config.command_timeout) is LOST:
                    result = LOST
                else:
                    result = await connection.read(action.timeout, idle=action.idle, limit=action.limit)
            elif isinstance(action, Send):
                result = await connection.write(action.data, self.config.command_timeout)
            elif isinstance(action, CallHook):
                result = await acall_hook(self.handler, action)
            elif isinstance(action, StartTls):
                assert self.tls is not None
                result = await connection.start_tls(self.tls, action.timeout)
            elif isinstance(action, Pause):
                await connection.pause(action.seconds)
            elif isinstance(action, Close):
                connection.outbox.flush()  # its last replies first
                if connection.unsent:
                    await connection.write(b"", self.config.command_timeout)
                await connection.close()


async def serve(
    handler: AsyncHandler,
    config: ServerConfig | None = None,
    *,
    task_status: trio.TaskStatus[SMTPServer] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """``server = await nursery.start(serve, handler, config)``, with the options of :class:`SMTPServer`."""
    await SMTPServer(handler, config, **options).serve(task_status=task_status)
