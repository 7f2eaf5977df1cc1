"""The gevent client: the blocking story on cooperative sockets.

The loop is :func:`adapters.blocking_client.run_session`, run on a
``gevent.socket`` with TLS through ``gevent.ssl``, so a read, a write or a
handshake yields to the hub instead of blocking it.  No monkey-patching is
needed or done: call :func:`send_message` from any greenlet.  Every SMTP
decision is in :class:`smtpcore.ClientDriver`.

Timeouts, and what :func:`send_messages` and :func:`send_message` return or
raise, are as in :mod:`adapters.blocking_client`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

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
from .blocking_client import Secure, open_session

__all__ = ["send_message", "send_messages"]


def _secure(context: ssl.SSLContext | None, host: str) -> Secure:
    def secure(sock: socket.socket, seconds: float) -> socket.socket:
        assert context is not None
        sock.settimeout(seconds)
        tls = gevent.ssl.SSLSocket(sock=sock, server_hostname=host, do_handshake_on_connect=False, _context=context)
        try:
            tls.do_handshake()
        except TimeoutError:
            tls.close()
            raise HandshakeTimeout(host, seconds) from None
        except BaseException:
            tls.close()
            raise
        return tls  # type: ignore[no-any-return]

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
