"""The gevent adapter: ``gevent.server.StreamServer``, one greenlet per connection.

The story of every adapter, told with gevent -- which is the blocking story on
cooperative sockets: the connection loop is :func:`adapters.blocking_server.serve_socket`,
run in a greenlet on gevent's sockets, with TLS through ``gevent.ssl`` so that a
handshake never blocks the hub.  No monkey-patching is needed or done.

The greenlets live in a :class:`gevent.pool.Group` owned by the server, so a
shutdown can wait for them and, at its deadline, make their reads answer 421;
``shutdown()`` returns only when every one has finished.  Reads and writes keep
their deadlines through one watchdog per server (:class:`_Watchdog`), as in the
trio adapter, rather than a gevent ``Timeout`` each; only a TLS handshake, once
per connection, has a ``Timeout`` of its own (:func:`_handshake_deadline`).
Replies that come before a read wait in the server's outbox for the hub's next
turn (``adapters._outbox``), as the asyncio and trio adapters' do.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import ssl
import time
import weakref
from collections.abc import Callable
from typing import Any

import gevent
import gevent.pool
import gevent.server
import gevent.socket
import gevent.ssl

from smtpcore import ServerConfig

from ._handler import FLUSH_AT, HOOK_FAILURES, LOST, READ_SIZE, SHUTDOWN, TIMED_OUT, Handler, check_handler, refusal
from ._outbox import SOCKETS_ARE_FILES, Outbox, write_at_once
from ._sockets import wrapped_for_tls
from ._tls import server_context
from .blocking_server import TICK, _TimedSocket, serve_socket

__all__ = ["SMTPServer"]

log = logging.getLogger("smtpcore.adapters")


#: What a hook fails with: a ``gevent.Timeout`` too, a ``BaseException``, with which a hook
#: bounds a lookup (``with gevent.Timeout(0.2):``); escaping the hook, it would end the
#: session with no reply.  The adapter never stops a hook with one of its own: a shutdown
#: kills the greenlet (``GreenletExit``, which must pass), the watchdog's :class:`_CutOff`
#: lands only in a read or a write, and a handshake's deadline raises a ``TimeoutError``.
_HOOK_FAILURES = (*HOOK_FAILURES, gevent.Timeout)


class _CutOff(BaseException):
    """Thrown into a session's greenlet blocked in a read or a write that overran its deadline.

    A ``BaseException``, as gevent's own ``Timeout`` is, so that no ``except
    Exception`` between the wait and :class:`_WatchedSocket` can swallow it.
    """


class _WatchedSocket(_TimedSocket):
    """A gevent socket whose reads and writes the server's :class:`_Watchdog` cuts off.

    gevent would time each wait with a ``Timeout`` of its own: a timer made,
    started and cancelled per read, after a ``settimeout`` per call.  Here a
    call writes its deadline down and waits with no timer at all.  (Measured
    with smtp-source, 20 sessions of kept-alive 1 KiB messages: 30-40 µs less
    server CPU a message, of about 190.)
    """

    slice_ended = TimeoutError  # never raised: the socket has no timeout
    sleep = staticmethod(gevent.sleep)  # a pause lets the other greenlets run

    def __init__(
        self, sock: socket.socket, aborting: Callable[[], bool], watchdog: _Watchdog, outbox: Outbox | None = None
    ) -> None:
        super().__init__(sock, aborting, watchdog.draining)
        sock.settimeout(None)  # no Python-side deadline: waits start no gevent timer
        # Replies before a read wait in the outbox for the hub's next turn (see
        # adapters._outbox); not on TLS, whose bytes only the SSL socket may write.
        self.outbox = outbox if SOCKETS_ARE_FILES and not isinstance(sock, gevent.ssl.SSLSocket) else None
        #: What the outbox wrote only in part: written as the socket drains, before anything else.
        self.unsent = b""
        # The watcher that writes it (made at the first write the socket took in part).
        self._writable: Any = None
        # Whether the last reply went into the outbox; then the next read waits
        # for the socket first, on this watcher (made at the first such read).
        self._after_reply = False
        self._readable: Any = None
        self.greenlet = gevent.getcurrent()
        #: When the call in progress must end.
        self.deadline = math.inf
        #: What the call in progress returns if it is cut off; None between calls.
        self.if_cut_off: object = None
        #: The read in progress is an idle one: a graceful shutdown cuts it off at once.
        self.idle = False
        watchdog.watch(self)

    def receive(self, timeout: float, idle: bool = False, limit: int | None = None) -> object:
        if self.shutting_down(idle):
            return SHUTDOWN
        self.deadline = time.monotonic() + timeout
        self.if_cut_off = TIMED_OUT
        self.idle = idle
        try:
            if self._after_reply:
                self._after_reply = False
                self._wait_readable()
            return self.sock.recv(READ_SIZE if limit is None else limit)
        except _CutOff:
            return SHUTDOWN if self.shutting_down(idle) else TIMED_OUT
        except OSError:
            return LOST
        finally:
            self.if_cut_off = None

    def _wait_readable(self) -> None:
        # A client waits for a reply before it sends more (one that pipelines
        # has sent it already, and the core has it), and this reply is still
        # in the outbox: gevent's recv would try the socket first, find
        # nothing, catch the error and only then wait.  Waiting first saves
        # that call and its exception on most reads (smtp-source, 1 KiB
        # messages kept alive: 58 -> 47 µs of user CPU a message).  One watcher
        # per connection, kept: gevent.socket.wait_read would make one a read.
        hub = gevent.get_hub()
        if self._readable is None:
            self._readable = hub.loop.io(self.sock.fileno(), 1)  # 1: readable
        hub.wait(self._readable)

    def send_before_read(self, data: bytes, timeout: float) -> object:
        if self.outbox is None or self.unsent or not self.outbox.put(self, data):
            return self.send(data, timeout)
        self._after_reply = True
        return None

    def write_now(self, data: bytes) -> None:
        """The outbox's write: what the socket takes at once; the rest, :attr:`unsent`, as it drains."""
        # Only put with nothing left over, and one at a time: nothing is ahead of it.
        assert not self.unsent
        # A closed socket's number is -1: nothing is written.
        self.unsent = write_at_once(self.sock.fileno(), data) or b""
        if self.unsent:
            # Not left for the session's next write: the session is waiting for
            # the client, and a client that pipelined waits for the rest of its
            # replies before it sends more; both would wait for the timeout.  The
            # hub writes it as the socket drains (as asyncio's transports do),
            # unless the session writes first (:meth:`_take_unsent`).
            if self._writable is None:
                self._writable = gevent.get_hub().loop.io(self.sock.fileno(), 2)  # 2: writable
            self._writable.start(self._write_unsent)

    def _write_unsent(self) -> None:
        """Write what the socket takes of :attr:`unsent`: the watcher's callback, in the hub."""
        self.unsent = write_at_once(self.sock.fileno(), self.unsent) or b""
        if not self.unsent:
            self._writable.stop()

    def _take_unsent(self) -> bytes:
        """What the outbox left, for the session's own write to send first (the watcher stops)."""
        if self._writable is not None:
            self._writable.stop()
        unsent, self.unsent = self.unsent, b""
        return unsent

    def close(self, timeout: float) -> None:
        if self.outbox is not None:
            self.outbox.flush()  # the last replies first
            if self.unsent:
                self.send(b"", timeout)
        self.abandon()

    def abandon(self) -> None:
        # The watchers go with the socket: a started one stays in the loop, and a
        # session killed with unsent bytes would leave its write watcher there.
        self.unsent = b""
        for watcher in (self._readable, self._writable):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self.sock.close()

    def send(self, data: bytes, timeout: float) -> object:
        if self.outbox is not None:
            self.outbox.flush()  # what was put before goes first
            if self.unsent:
                data = self._take_unsent() + data
        self.deadline = time.monotonic() + timeout
        self.if_cut_off = LOST
        try:
            result = super().send(data, timeout)
        except _CutOff:
            return LOST
        finally:
            self.if_cut_off = None
        if len(data) > FLUSH_AT:
            # A piece of the replies to a long pipelined burst (the dispatcher writes
            # them every FLUSH_AT): let the other greenlets run before the next piece,
            # as trio's send_all does at every write.  A socket that takes the write at
            # once never waits, and a 96 KiB read of NOOPs is some 55 ms of work.
            gevent.sleep(0)
        return result

    def _time_send(self, seconds: float) -> None:
        pass  # the deadline is written down in send()


class _Watchdog:
    """Cuts off the reads and writes that overran their deadlines, for every session of a server.

    A libev timer that fires every :data:`~adapters.blocking_server.TICK` in the
    hub while any session is open.  It looks at each session's call in progress
    and throws :class:`_CutOff` into the greenlet of one past its deadline, of an
    idle read once a graceful shutdown begins, or of any read once its grace
    period is over.  The throw happens in the hub, where
    every session's greenlet is suspended: one whose call is in progress is
    blocked in exactly that call, so the exception cannot land in a hook.  (This
    is what gevent's ``Timeout`` does, for one wait, from a timer of its own.)
    """

    def __init__(self, aborting: Callable[[], bool], draining: Callable[[], bool] = lambda: False) -> None:
        #: The shutdown's grace period is over: every read is cut off.
        self.aborting = aborting
        #: A graceful shutdown has begun: idle reads are cut off.
        self.draining = draining
        self._watched: weakref.WeakSet[_WatchedSocket] = weakref.WeakSet()
        self._timer = gevent.get_hub().loop.timer(TICK, TICK)
        self._timer.ref = False  # an idle server must not keep gevent.wait() waiting

    def watch(self, io: _WatchedSocket) -> None:
        self._watched.add(io)
        if not self._timer.active:
            self._timer.start(self.patrol)

    def patrol(self) -> None:
        """Cut off what is due; run in the hub (the timer, or ``loop.run_callback``)."""
        if not self._watched:
            self._timer.stop()  # no session: no wake-ups until the next one
            return
        now, aborting, draining = time.monotonic(), self.aborting(), self.draining()
        for io in list(self._watched):  # a cut-off session may end and leave the set
            due = io.if_cut_off
            if due is not None and (io.deadline <= now or (due is TIMED_OUT and (aborting or (draining and io.idle)))):
                io.greenlet.throw(_CutOff)


def _handshake_deadline(seconds: float) -> gevent.Timeout:
    """A TLS handshake's deadline: gevent's SSLSocket applies its timeout to each wait, so a
    client sending a byte at a time would never run out of it.  (A TimeoutError, which the
    handshake's caller takes as a failed handshake, as it does CPython's.)"""
    return gevent.Timeout(seconds, TimeoutError("TLS handshake timed out"))


class SMTPServer:
    """A gevent SMTP/LMTP server for a blocking :class:`~adapters.Handler`.

    Same arguments as :class:`adapters.blocking_server.SMTPServer`.  Call
    :meth:`start` (or use it as a context manager) from the hub's thread.
    """

    def __init__(
        self,
        handler: Handler,
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
        check_handler(handler, "gevent")
        self.handler = handler
        self.config = config or ServerConfig()
        self.tls = server_context(tls, certfile, keyfile, self.config)
        self.max_connections = max_connections
        self._unix_path = unix_path
        self._address = (host, port)
        self._group = gevent.pool.Group()
        # Sessions admitted and not yet over.  Not len(self._group): gevent spawns a
        # greenlet for each connection of a burst before the first one runs, so the
        # group counts the refused ones too, and the earliest would be refused.
        self._sessions = 0
        # A graceful shutdown has begun (idle sessions end), then its grace period is over (all do).
        self._draining = False
        self._aborting = False
        self._server: gevent.server.StreamServer | None = None
        self._watchdog: _Watchdog | None = None
        self._outbox: Outbox | None = None

    def _listener(self) -> Any:
        if self._unix_path is not None:
            if os.path.exists(self._unix_path):
                os.unlink(self._unix_path)
            sock = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(self._unix_path)
            sock.listen(128)
            return sock
        host = self._address[0]
        if ":" in host:
            sock = gevent.socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self._address)
            sock.listen(128)
            return sock
        return self._address

    def start(self) -> None:
        # Made here, not in __init__: the timer belongs to the hub of the thread that serves.
        self._watchdog = _Watchdog(lambda: self._aborting, lambda: self._draining)
        self._outbox = Outbox(gevent.get_hub().loop.run_callback)
        self._server = gevent.server.StreamServer(self._listener(), self._handle, spawn=self._group.spawn)
        self._server.start()

    @property
    def address(self) -> Any:
        """Where the server listens: ``(host, port, ...)`` with the real port, or the Unix path."""
        assert self._server is not None, "start() the server first"
        return self._server.socket.getsockname()

    @property
    def port(self) -> int:
        return int(self.address[1])

    @property
    def connections(self) -> int:
        return len(self._group)

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        # As the blocking server's: a reset as the wrap begins leaves no half-made TLS socket.
        return wrapped_for_tls(  # type: ignore[no-any-return]
            sock,
            lambda: gevent.ssl.SSLSocket(sock=sock, server_side=True, do_handshake_on_connect=False, _context=self.tls),
            gevent.ssl.SSLSocket,
            "client",
        )

    def _handle(self, sock: socket.socket, address: Any) -> None:
        if self._sessions >= self.max_connections:
            try:
                sock.settimeout(1.0)
                sock.sendall(refusal(self.config))
            except OSError:
                pass
            sock.close()
            return
        watchdog = self._watchdog
        assert watchdog is not None
        aborting, outbox = watchdog.aborting, self._outbox
        self._sessions += 1  # (greenlets: nothing runs between the test above and this)
        try:
            serve_socket(
                sock,
                self.handler,
                self.config,
                self._wrap_tls if self.tls else None,
                aborting,
                draining=watchdog.draining,  # (for the TLS handshake: the watchdog keeps the reads' time)
                peer=address,
                timed=lambda sock: _WatchedSocket(sock, aborting, watchdog, outbox),
                handshake_deadline=_handshake_deadline,
                hook_failures=_HOOK_FAILURES,
            )
        except Exception:
            log.exception("session with %s failed", address)
        finally:
            self._sessions -= 1

    def serve_forever(self) -> None:
        if self._server is None:
            self.start()
        assert self._server is not None
        self._server.serve_forever()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, 421 to the idle sessions now, let the others finish their transactions
        for up to ``timeout`` seconds, then 421 and close the rest."""
        if self._server is not None:
            self._server.close()
        if self._unix_path is not None and os.path.exists(self._unix_path):
            os.unlink(self._unix_path)
        self._draining = True
        if self._watchdog is not None:
            # Cut off the idle reads now, not at the next tick (from the hub: see _Watchdog).
            gevent.get_hub().loop.run_callback(self._watchdog.patrol)
        self._group.join(timeout=timeout)
        self._aborting = True
        if self._watchdog is not None:
            # Cut off the waiting reads now, not at the next tick (from the hub: see _Watchdog).
            gevent.get_hub().loop.run_callback(self._watchdog.patrol)
        self._group.join(timeout=max(1.0, TICK * 10))
        # A hook that still runs is killed.  The session ends as if the client had left: its
        # last hooks (message_aborted, connection_closed) run in the killed greenlet, for a
        # second at most (see serve_socket); one stuck in those too is killed for good.
        self._group.kill(block=True, timeout=1.0)
        gevent.killall(list(self._group), block=True, timeout=1.0)

    def __enter__(self) -> SMTPServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
