"""The asyncio adapter: a small ``asyncio.Protocol`` and one task per connection.

The story of every adapter, told with asyncio: read, feed, next_event, call the
(async) hook, send the reply, write.  The protocol is in ``smtpcore`` and the hook
dispatch in ``_handler.Dispatcher``; this file only moves bytes and keeps time.

Why a Protocol and not streams: ``StreamWriter.start_tls`` only exists from
Python 3.11, and a protocol is both faster and the one place where flow control
is visible.  :class:`_Stream` buffers at most :data:`HIGH_WATER` octets before it
pauses the transport, so a large message never piles up here.  STARTTLS uses
``loop.start_tls()``; whatever was buffered before the handshake is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Any

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
    acall_hook,
    refusal,
    unused_hooks,
    wants_transcript,
)
from ._tls import server_context, tls_info

__all__ = ["SMTPServer", "serve"]

log = logging.getLogger("smtpcore.adapters")

#: Octets buffered before the transport stops reading (flow control).
HIGH_WATER = 4 * READ_SIZE


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class _Stream(asyncio.Protocol):
    """Bytes in, bytes out, with back-pressure both ways; woken early by an abort."""

    def __init__(self, server: SMTPServer) -> None:
        self._server = server
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self.aborting = False

    # Protocol callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.transport is None:  # not again after start_tls()
            self.transport = transport
            self._server._connection_made(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep the write side open for the last replies; we close it ourselves

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # What the session task calls ---------------------------------------------------------------

    def abort(self) -> None:
        """The shutdown deadline passed: the next (or current) read gets SHUTDOWN."""
        self.aborting = True
        self._wake()

    async def read(self, timeout: float) -> object:
        if not (self._buffer or self._eof or self.aborting):
            # A timer on the future itself: asyncio.wait_for() costs a task switch
            # and several callbacks per read, a real share of a short command's time.
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            except asyncio.TimeoutError:
                return TIMED_OUT
            finally:
                timer.cancel()
                self._waiter = None
        if self.aborting:
            return SHUTDOWN
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data  # b"" at end of file

    async def write(self, data: bytes, timeout: float) -> object:
        assert self.transport is not None
        if self.transport.is_closing():
            return LOST
        self.transport.write(data)
        if self._drain is not None:
            try:  # a client that does not read its replies is as gone as one that left
                await asyncio.wait_for(asyncio.shield(self._drain), timeout)
            except asyncio.TimeoutError:
                self.transport.abort()
                return LOST
        return LOST if self.transport.is_closing() else None

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> object:
        assert self.transport is not None
        self._buffer.clear()  # plaintext sent after STARTTLS is never read
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self.transport, self, context, server_side=True, ssl_handshake_timeout=timeout
            )
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            log.info("TLS handshake failed: %s", exc)
            self.transport.abort()
            return None
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._reading_paused = False
        return tls_info(transport.get_extra_info("ssl_object"))


class SMTPServer:
    """An asyncio SMTP/LMTP server for an :class:`~adapters.AsyncHandler`.

    ``async with SMTPServer(handler, config, host="127.0.0.1", port=0) as server``
    listens on TCP (``"::1"`` for IPv6) or, with ``unix_path=``, on a Unix
    socket; ``server.port`` is the real port.  ``tls=`` (an ``ssl.SSLContext``) or
    ``certfile=``/``keyfile=`` enable STARTTLS or implicit TLS, as ``config`` says.
    Leaving the block is a graceful :meth:`shutdown`.
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
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.handler = handler
        self.config = config or ServerConfig()
        self.tls = server_context(tls, certfile, keyfile, self.config)
        self.max_connections = max_connections
        self.shutdown_timeout = shutdown_timeout
        self._host, self._port, self._unix_path = host, port, unix_path
        self._server: asyncio.Server | None = None
        self._sessions: dict[asyncio.Task[None], _Stream] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        implicit = self.tls if self.config.implicit_tls else None
        timeout = self.config.tls_handshake_timeout if implicit else None
        if self._unix_path is not None:
            if os.path.exists(self._unix_path):
                os.unlink(self._unix_path)
            self._server = await loop.create_unix_server(
                lambda: _Stream(self), self._unix_path, ssl=implicit, ssl_handshake_timeout=timeout
            )
        else:
            self._server = await loop.create_server(
                lambda: _Stream(self), self._host, self._port, ssl=implicit, ssl_handshake_timeout=timeout
            )

    @property
    def address(self) -> Any:
        """Where the server listens: ``(host, port, ...)`` with the real port, or the Unix path."""
        assert self._server is not None, "start() the server first"
        return self._server.sockets[0].getsockname()

    @property
    def port(self) -> int:
        return int(self.address[1])

    @property
    def connections(self) -> int:
        return len(self._sessions)

    def _connection_made(self, stream: _Stream) -> None:
        assert stream.transport is not None
        if len(self._sessions) >= self.max_connections or self._server is None or not self._server.is_serving():
            stream.transport.write(refusal(self.config))
            stream.transport.close()
            return
        task = asyncio.get_running_loop().create_task(self._run(stream))
        self._sessions[task] = stream
        task.add_done_callback(self._sessions.pop)

    async def _run(self, stream: _Stream) -> None:
        transport = stream.transport
        assert transport is not None
        session = Session(peer=transport.get_extra_info("peername"), local=transport.get_extra_info("sockname"))
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            session.tls_info = tls_info(ssl_object)
        handler = self.handler
        actions = Dispatcher(
            self.config, session, transcript=wants_transcript(handler), unused=unused_hooks(handler)
        ).actions()
        result: Any = None
        try:
            while True:
                action = actions.send(result)
                result = None
                if isinstance(action, Receive):
                    result = await stream.read(action.timeout)
                elif isinstance(action, Send):
                    result = await stream.write(action.data, self.config.command_timeout)
                elif isinstance(action, CallHook):
                    result = await acall_hook(self.handler, action)
                elif isinstance(action, StartTls):
                    assert self.tls is not None
                    result = await stream.start_tls(self.tls, action.timeout)
                elif isinstance(action, Close):
                    assert stream.transport is not None
                    stream.transport.close()
        except StopIteration:
            pass
        except Exception:
            log.exception("session with %s failed", session.peer)
        finally:
            actions.close()
            if stream.transport is not None:
                stream.transport.close()

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            await self.shutdown()
            raise

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, let sessions finish for up to ``timeout`` seconds, then 421 and close the rest."""
        timeout = self.shutdown_timeout if timeout is None else timeout
        if self._server is not None:
            self._server.close()
        if self._unix_path is not None and os.path.exists(self._unix_path):
            os.unlink(self._unix_path)
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=timeout)
        for stream in self._sessions.values():
            stream.abort()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=1.0)
        for task in list(self._sessions):  # stuck in a hook: cancel it
            task.cancel()
        if self._sessions:
            await asyncio.wait(list(self._sessions))

    async def __aenter__(self) -> SMTPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()


async def serve(handler: AsyncHandler, config: ServerConfig | None = None, **options: Any) -> SMTPServer:
    """Start an :class:`SMTPServer` (like ``asyncio.start_server``) and return it."""
    server = SMTPServer(handler, config, **options)
    await server.start()
    return server
