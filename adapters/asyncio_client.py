"""The asyncio client: a small ``asyncio.BufferedProtocol``, the driver's loop, then QUIT and close.

The story of every client adapter, told with asyncio: connect, then *write what
the driver gives, or do the TLS handshake it asks for, or read and feed it*,
until it is done.  Every SMTP decision is in :class:`smtpcore.ClientDriver`;
this file only moves bytes and keeps time.

Why a Protocol and not streams: ``StreamWriter.start_tls`` only exists from
Python 3.11, and a ``StreamReader`` may already hold plaintext that arrived
after the server's 220 to STARTTLS, which must never be read as part of the TLS
session.  Here the buffer is ours, and :meth:`_Stream.start_tls` empties it.
Reads pause the transport past :data:`HIGH_WATER` octets; writes wait for the
transport to drain, so a large message never piles up in memory.

Timeouts, and what :func:`send_messages` and :func:`send_message` return or
raise, are as in :mod:`adapters.blocking_client`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

from smtpcore import ClientConfig, ClientDriver, Credentials, MailParams, MessageOutcome, Recipient, SessionOutcome

from ._client_common import (
    DEFAULT_CONNECT_TIMEOUT,
    READ_SIZE,
    HandshakeTimeout,
    Messages,
    MessageSource,
    Waits,
    abandon,
    asend_one,
    check_port,
    handshake_limit,
    limit,
    make_driver,
    single,
    tell_local_address,
    timed_out,
    tls_context_for,
)
from ._sockets import limit_unsent

__all__ = ["send_message", "send_messages"]

#: Octets buffered before the transport stops reading (flow control).
HIGH_WATER = 4 * READ_SIZE
#: Seconds a close may take (a TLS close_notify exchange) before the connection is aborted.
CLOSE_TIMEOUT = 1.0
#: Seconds between looks at whether a TLS close_notify has left (see _Stream.close).
CLOSE_POLL = 0.01


class _Stream(asyncio.BufferedProtocol):
    """Bytes in and out of one connection, with back-pressure both ways.

    A BufferedProtocol: the transport reads into one 64 KiB landing buffer,
    where a plain Protocol gets a new 256 KiB ``bytes`` from every read, which
    the C allocator may serve with an ``mmap`` and a ``munmap`` each time.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # The TCP transport beneath, once start_tls() has put a TLS one above it.
        self._tcp: asyncio.Transport | None = None
        self._landing = memoryview(bytearray(READ_SIZE))
        self._buffer = bytearray()
        self._eof = False
        self._paused = False
        self._aborted = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._lost = asyncio.get_running_loop().create_future()
        # Why the connection was lost (a reset), raised by the read that finds it gone,
        # as a socket's recv() raises it in the other adapters.
        self._lost_by: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._landing

    def buffer_updated(self, nbytes: int) -> None:
        self._buffer += self._landing[:nbytes]
        if len(self._buffer) >= HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> None:
        self._eof = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost_by = exc
        if not self._lost.done():
            self._lost.set_result(None)
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self, timeout: float) -> bytes:
        """What arrived (``b""`` at the end); ``asyncio.TimeoutError`` when nothing did in time."""
        if not (self._buffer or self._eof):
            # A timer on the future itself: asyncio.wait_for() costs a task switch
            # and several callbacks per read, a real share of a small message's time.
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if not self._buffer and self._lost_by is not None:
            raise self._lost_by
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes, timeout: float) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            # The socket's own error where there was one (a reset, a broken pipe), as the
            # other adapters' send() raises it.
            raise self._lost_by or ConnectionResetError("the connection is closed")
        self.transport.write(data)
        if self._drain is not None:
            await asyncio.wait_for(asyncio.shield(self._drain), timeout)

    async def start_tls(self, context: ssl.SSLContext, host: str, timeout: float) -> None:
        """The TLS handshake (implicit TLS, or after STARTTLS's 220) within ``timeout`` seconds."""
        assert self.transport is not None
        # Plaintext after the 220 is never read as TLS-session data (RFC 3207 §4.2).
        # Reading stops first: on 3.10/3.11 wait_for() starts the handshake a turn
        # later, and a read queued in between would refill the buffer just cleared
        # (a forged first reply inside TLS).  start_tls() resumes reading, under TLS.
        self.transport.pause_reading()
        self._buffer.clear()
        if self._eof or self.transport.is_closing():
            # The server closed after its 220: start_tls() on a transport closed
            # under it returns None or never ends (3.10/3.11).
            raise self._lost_by or ConnectionResetError("the server closed the connection before the TLS handshake")
        loop = asyncio.get_running_loop()
        # Our own timer rather than only asyncio's ssl_handshake_timeout, which
        # fails with a ConnectionAbortedError in words of its own (Python 3.11+):
        # set past ours, it is the one that never runs out first.
        handshake = loop.start_tls(
            self.transport, self, context, server_hostname=host, ssl_handshake_timeout=timeout + 1
        )
        try:
            transport = await asyncio.wait_for(handshake, timeout)
        except asyncio.TimeoutError:
            self.abort()
            raise HandshakeTimeout(host, timeout) from None
        except ConnectionResetError as exc:
            self.abort()
            if exc.args:
                raise
            # asyncio's own, without a word: the others' ssl module says UNEXPECTED_EOF.
            raise ConnectionResetError("the server closed the connection during the TLS handshake") from None
        except BaseException:
            self.abort()
            raise
        if transport is None:  # (3.10/3.11: the connection was closed during the handshake)
            self.abort()
            raise ConnectionResetError("the server closed the connection during the TLS handshake")
        self._tcp, self.transport = self.transport, transport
        self._paused = False

    def abort(self) -> None:
        """Drop the connection now, with whatever is still buffered: it failed, and a close would wait on it."""
        if self.transport is not None:
            self.transport.abort()
            self._aborted = True

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close; abort if it is not over within ``timeout`` seconds.

        Over TLS, close() sends our close_notify and then waits for the server's,
        which a server that has said 221 need not send: the connection is aborted
        as soon as ours has left, as the other adapters close at once.
        """
        if self.transport is None or self._aborted:
            return
        self.transport.close()
        tcp = self._tcp
        if tcp is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not self._lost.done() and tcp.get_write_buffer_size() and loop.time() < deadline:
                await asyncio.sleep(CLOSE_POLL)
            if not self._lost.done():
                self.transport.abort()
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), timeout)
        except asyncio.TimeoutError:
            self.transport.abort()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


async def _run(
    driver: ClientDriver, stream: _Stream, context: ssl.SSLContext | None, host: str, timeout: float | None
) -> None:
    waits = Waits(driver, timeout)
    while not driver.done:
        out = driver.bytes_to_send()
        if not out and driver.done:  # it gave up while making them (content it cannot send)
            break
        if not out and driver.wants_tls:
            assert context is not None
            await stream.start_tls(context, host, limit(driver, timeout))  # an ssl.SSLError ends it here
            driver.tls_established()
            continue
        try:
            if out:
                await stream.write(out, waits.for_write())
            else:
                driver.receive(await stream.read(waits.for_read()))
        except asyncio.TimeoutError:
            stream.abort()
            abandon(driver, timed_out(driver, timeout))
        except OSError as exc:
            stream.abort()
            abandon(driver, exc)


async def send_messages(
    host: str,
    port: int,
    messages: Messages,
    *,
    config: ClientConfig | None = None,
    tls_context: ssl.SSLContext | None = None,
    credentials: Credentials | None = None,
    timeout: float | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    source_address: tuple[str, int] | None = None,
) -> SessionOutcome:
    """Send (envelope, message) pairs over one connection; the outcome of the whole session."""
    config = config or ClientConfig()
    context = tls_context_for(config, tls_context)
    check_port(port)
    driver = make_driver(config, messages, credentials)
    stream = _Stream()
    loop = asyncio.get_running_loop()
    connecting = loop.create_connection(lambda: stream, host, port, local_addr=source_address)
    try:
        await asyncio.wait_for(connecting, connect_timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"cannot connect to {host}:{port} within {connect_timeout:g} s") from None
    assert stream.transport is not None
    limit_unsent(stream.transport.get_extra_info("socket"))
    tell_local_address(driver, stream.transport.get_extra_info("sockname"))
    try:
        if config.implicit_tls:
            assert context is not None
            await stream.start_tls(context, host, handshake_limit(config, timeout))
        await _run(driver, stream, context, host, timeout)
    finally:
        await stream.close()
    return driver.result


async def send_message(
    host: str,
    port: int,
    sender: str,
    recipients: Sequence[str | Recipient],
    message: MessageSource,
    *,
    config: ClientConfig | None = None,
    tls_context: ssl.SSLContext | None = None,
    credentials: Credentials | None = None,
    mail_params: MailParams | None = None,
    timeout: float | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    source_address: tuple[str, int] | None = None,
) -> MessageOutcome:
    """Send one message; its outcome, or the typed error when no recipient got it."""
    return await asend_one(
        send_messages,
        host,
        port,
        single(sender, recipients, message, mail_params),
        config=config,
        tls_context=tls_context,
        credentials=credentials,
        timeout=timeout,
        connect_timeout=connect_timeout,
        source_address=source_address,
    )
