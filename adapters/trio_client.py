"""The trio client: a ``trio`` stream, the driver's loop, then QUIT and close.

The story of every client adapter, told with trio: connect, then *write what
the driver gives, or do the TLS handshake it asks for, or read and feed it*,
until it is done.  Every SMTP decision is in :class:`smtpcore.ClientDriver`;
this file only moves bytes and keeps time.

Each read and write runs in its own cancel scope with what is left of the
current wait (:class:`~adapters._client_common.Waits`: the driver's timeout,
or ``timeout=``, per reply and per write).  trio reports a broken connection
or a failed TLS handshake as ``trio.BrokenResourceError``, and a connection
refused at every address as a plain ``OSError``; here each is the ``OSError``
behind it (the ``ConnectionResetError``, the ``ssl.SSLError``, the
``ConnectionRefusedError``), so every dialect raises the same thing.
Timeouts, and what :func:`send_messages` and :func:`send_message` return or
raise, are as in :mod:`adapters.blocking_client`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

import trio

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

__all__ = ["send_message", "send_messages"]


def _os_error(exc: BaseException, what: str) -> OSError:
    """The ``OSError`` behind a trio error, as the other dialects raise it.

    A stream's ``BrokenResourceError`` is raised from the reset or the broken
    pipe (over TLS from the TLS stream's own, raised from the socket's), or from
    the ``ssl.SSLError`` of a handshake.  One with no ``OSError`` behind it
    becomes a ``ConnectionError`` saying ``what`` failed, caused by it.
    """
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, OSError):
            return cause
        cause = cause.__cause__
    error = ConnectionError(f"{what}: {exc}" if str(exc) else what)
    error.__cause__ = exc
    return error


async def _connect(host: str, port: int, source_address: tuple[str, int] | None) -> trio.SocketStream:
    if source_address is None:
        try:
            return await trio.open_tcp_stream(host, port)
        except OSError as exc:
            # "all attempts to connect ... failed", from a group of each attempt's error.
            # When they all failed alike (refused, say), the last of them, as
            # socket.create_connection raises it: a ConnectionRefusedError in every dialect.
            attempts = getattr(exc.__cause__, "exceptions", ())
            if attempts and len({type(attempt) for attempt in attempts}) == 1 and isinstance(attempts[-1], OSError):
                raise attempts[-1] from None
            raise
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = trio.socket.socket(family, kind, proto)
        try:
            await sock.bind(source_address)
            await sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return trio.SocketStream(sock)
    raise error


async def _secure(
    stream: trio.abc.Stream, context: ssl.SSLContext | None, host: str, seconds: float
) -> trio.SSLStream[trio.abc.Stream]:
    assert context is not None
    tls = trio.SSLStream(stream, context, server_hostname=host)
    try:
        with trio.fail_after(seconds):
            await tls.do_handshake()
    except trio.TooSlowError:
        raise HandshakeTimeout(host, seconds) from None
    except trio.BrokenResourceError as exc:
        error = _os_error(exc, "TLS handshake failed")
        # The ssl.SSLError itself, as the other dialects raise it: not chained to trio's error.
        raise error from error.__cause__
    return tls


async def _run(
    driver: ClientDriver, stream: trio.abc.Stream, context: ssl.SSLContext | None, host: str, timeout: float | None
) -> None:
    waits = Waits(driver, timeout)
    while not driver.done:
        out = driver.bytes_to_send()
        if not out and driver.done:  # it gave up while making them (content it cannot send)
            break
        if not out and driver.wants_tls:
            stream = await _secure(stream, context, host, limit(driver, timeout))  # an ssl.SSLError ends it here
            driver.tls_established()
            continue
        cause: BaseException | None = None
        with trio.move_on_after(waits.for_write() if out else waits.for_read()) as scope:
            try:
                if out:
                    await stream.send_all(out)
                else:
                    driver.receive(bytes(await stream.receive_some(READ_SIZE)))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                cause = _os_error(exc, "the connection broke")  # docs/client.md: the cause is the OSError
        if scope.cancelled_caught:
            cause = timed_out(driver, timeout)
        if cause is not None:
            abandon(driver, cause)


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
    try:
        with trio.fail_after(connect_timeout):
            raw = await _connect(host, port, source_address)
    except trio.TooSlowError:
        raise TimeoutError(f"cannot connect to {host}:{port} within {connect_timeout:g} s") from None
    tell_local_address(driver, raw.socket.getsockname())
    try:
        stream: trio.abc.Stream = raw
        if config.implicit_tls:
            stream = await _secure(raw, context, host, handshake_limit(config, timeout))
        await _run(driver, stream, context, host, timeout)
    finally:
        await trio.aclose_forcefully(raw)
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
