"""The gevent client: the blocking story on cooperative sockets.

The loop is :func:`adapters.blocking_client.run_session`, run on a
``gevent.socket`` with TLS through ``gevent.ssl``, so a read, a write or a
handshake yields to the hub instead of blocking it.  No monkey-patching is
needed or done: call :func:`send_message` from any greenlet.  Every SMTP
decision is in :class:`smtpcore.ClientDriver`.

gevent's sockets apply their timeout to each wait for the server, where
CPython's TLS sockets apply it to the whole call.  On a plain socket a read is
one wait; a TLS handshake, or a TLS read that waits for the rest of its record,
is many.  So the TLS socket here (:class:`_TlsSocket`) ends each call within the
timeout in all, as CPython's does, and a server that sends its records a byte
at a time cannot hold a wait beyond its bound.

Timeouts, and what :func:`send_messages` and :func:`send_message` return or
raise, are as in :mod:`adapters.blocking_client`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

import gevent
import gevent.socket
import gevent.ssl

from smtpcore import ClientConfig, Credentials, MailParams, MessageOutcome, Recipient, SessionOutcome

from ._client_common import (
    DEFAULT_CONNECT_TIMEOUT,
    HandshakeTimeout,
    Messages,
    MessageSource,
    send_one,
    single,
)
from ._sockets import wrapped_for_tls
from .blocking_client import Secure, open_session

__all__ = ["send_message", "send_messages"]


def _deadline(seconds: float | None) -> gevent.Timeout:
    """An end to a whole call, however many waits it makes: a ``TimeoutError``, as CPython's sockets raise."""
    return gevent.Timeout(seconds, TimeoutError("timed out"))


class _TlsSocket(gevent.ssl.SSLSocket):  # type: ignore[misc]  # (gevent has no type hints)
    """gevent's TLS socket, its handshake, reads and writes each ended within the socket's timeout in all.

    :func:`~adapters.blocking_client.run_session` sets that timeout to what is
    left of the current wait before each call, as it does for CPython's sockets.
    """

    def do_handshake(self) -> None:
        with _deadline(self.gettimeout()):
            super().do_handshake()

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        with _deadline(self.gettimeout()):
            return super().recv(buflen, flags)  # type: ignore[no-any-return]

    def send(self, data: bytes | memoryview, flags: int = 0) -> int:
        with _deadline(self.gettimeout()):
            return super().send(data, flags)  # type: ignore[no-any-return]


def _secure(context: ssl.SSLContext | None, host: str) -> Secure:
    def secure(sock: socket.socket, seconds: float) -> socket.socket:
        assert context is not None
        sock.settimeout(seconds)
        tls = wrapped_for_tls(
            sock,
            lambda: _TlsSocket(sock=sock, server_hostname=host, do_handshake_on_connect=False, _context=context),
            _TlsSocket,
        )
        try:
            tls.do_handshake()
        except TimeoutError:
            tls.close()
            raise HandshakeTimeout(host, seconds) from None
        except BaseException:
            tls.close()
            raise
        return tls

    return secure


def send_messages(
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
    return open_session(
        gevent.socket.create_connection,
        _secure,
        host,
        port,
        messages,
        config=config,
        tls_context=tls_context,
        credentials=credentials,
        timeout=timeout,
        connect_timeout=connect_timeout,
        source_address=source_address,
    )


def send_message(
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
    return send_one(
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
