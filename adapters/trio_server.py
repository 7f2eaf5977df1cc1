"""The trio adapter: one task per connection in the server's own nursery.

The story of every adapter, told with trio: read, feed, next_event, call the
(async) hook, send the reply, write.  The protocol is in ``smtpcore`` and the hook
dispatch in ``_handler.Dispatcher``; this file only moves bytes and keeps time.

Start it with ``server = await nursery.start(SMTPServer(handler, config, port=0).serve)``:
``task_status.started()`` hands back the server once it listens, so
``server.port`` is the real port.  Each read runs in its own cancel scope with
the deadline the dispatcher asked for; a graceful shutdown cancels the accept
loop, waits for the sessions, then cancels the reads of the rest (they answer
421 and close).  Every task lives in the server's nursery, so none outlives it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket as stdlib_socket
import ssl
from typing import Any

import trio

from smtpcore import ServerConfig

from ._handler import (
    LOST,
    READ_SIZE,
    SHUTDOWN,
    TIMED_OUT,
    AsyncHandler,
    CallHook,
    Close,
    Dispatcher,
    Receive,
    Send,
    Session,
    StartTls,
    TlsInfo,
    acall_hook,
    refusal,
    unused_hooks,
    wants_transcript,
)
from ._tls import server_context, tls_info

__all__ = ["SMTPServer", "serve"]

log = logging.getLogger("smtpcore.adapters")

_Stream = trio.abc.Stream


class _Connection:
    """One client: its stream, and the cancel scope of the read in progress."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.aborting = False
        self._read_scope: trio.CancelScope | None = None

    def abort(self) -> None:
        self.aborting = True
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def read(self, timeout: float) -> object:
        if self.aborting:
            return SHUTDOWN
        with trio.move_on_after(timeout) as scope:
            self._read_scope = scope
            try:
                return await self.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return LOST
            finally:
                self._read_scope = None
        return SHUTDOWN if self.aborting else TIMED_OUT

    async def write(self, data: bytes, timeout: float) -> object:
        with trio.move_on_after(timeout):
            try:
                await self.stream.send_all(data)
                return None
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return LOST
        return LOST

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> TlsInfo | None:
        tls = trio.SSLStream(self.stream, context, server_side=True)
        with trio.move_on_after(timeout):
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.info("TLS handshake failed: %s", exc)
                return None
            self.stream = tls
            return tls_info(tls)  # SSLStream forwards version(), cipher(), getpeercert()
        log.info("TLS handshake timed out")
        return None

    async def close(self) -> None:
        await trio.aclose_forcefully(self.stream)


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
        self.handler = handler
        self.config = config or ServerConfig()
        self.tls = server_context(tls, certfile, keyfile, self.config)
        self.max_connections = max_connections
        self._host, self._port, self._unix_path = host, port, unix_path
        self._listener: trio.SocketListener | None = None
        self._sessions: set[_Connection] = set()
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
            async with trio.open_nursery() as nursery:
                task_status.started(self)
                with self._accept_scope:
                    while True:
                        stream = await self._listener.accept()
                        if len(self._sessions) >= self.max_connections:
                            nursery.start_soon(self._refuse, stream)
                        else:
                            connection = _Connection(stream)
                            self._sessions.add(connection)
                            self._idle = trio.Event()
                            nursery.start_soon(self._run, connection)
                await self._listener.aclose()
                if self._unix_path is not None and os.path.exists(self._unix_path):
                    os.unlink(self._unix_path)
                with trio.move_on_after(self._grace):
                    await self._wait_idle()
                for connection in list(self._sessions):
                    connection.abort()
                with trio.move_on_after(1.0):
                    await self._wait_idle()
                nursery.cancel_scope.cancel()  # a hook that still runs is cancelled
        finally:
            self._stopped.set()

    async def _wait_idle(self) -> None:
        if self._sessions:
            await self._idle.wait()

    def shutdown_nowait(self, timeout: float = 30.0) -> None:
        """Start a graceful shutdown: stop accepting, give sessions ``timeout`` seconds, then 421."""
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
            await connection.close()
            self._sessions.discard(connection)
            if not self._sessions:
                self._idle.set()

    async def _session(self, connection: _Connection) -> None:
        raw = connection.stream
        assert isinstance(raw, trio.SocketStream)
        session = Session(peer=raw.socket.getpeername(), local=raw.socket.getsockname())
        if self.config.implicit_tls:
            assert self.tls is not None
            session.tls_info = await connection.start_tls(self.tls, self.config.tls_handshake_timeout)
            if session.tls_info is None:
                return
        actions = Dispatcher(
            self.config,
            session,
            clock=trio.current_time,
            transcript=wants_transcript(self.handler),
            unused=unused_hooks(self.handler),
        ).actions()
        result: Any = None
        try:
            while True:
                action = actions.send(result)
                result = None
                if isinstance(action, Receive):
                    result = await connection.read(action.timeout)
                elif isinstance(action, Send):
                    result = await connection.write(action.data, self.config.command_timeout)
                elif isinstance(action, CallHook):
                    result = await acall_hook(self.handler, action)
                elif isinstance(action, StartTls):
                    assert self.tls is not None
                    result = await connection.start_tls(self.tls, action.timeout)
                elif isinstance(action, Close):
                    await connection.close()
        except StopIteration:
            pass
        finally:
            actions.close()


async def serve(
    handler: AsyncHandler,
    config: ServerConfig | None = None,
    *,
    task_status: trio.TaskStatus[SMTPServer] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """``server = await nursery.start(serve, handler, config)``, with the options of :class:`SMTPServer`."""
    await SMTPServer(handler, config, **options).serve(task_status=task_status)
