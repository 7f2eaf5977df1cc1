"""The blocking client: a plain socket, the driver's loop, then QUIT and close.

The story of every client adapter, told with ``socket``: connect, then *write
what the driver gives, or do the TLS handshake it asks for, or read and feed
it*, until it is done.  Every SMTP decision is in :class:`smtpcore.ClientDriver`;
this file only moves bytes and keeps time.  :func:`run_session` is also the
loop of the gevent client, where the same code runs on cooperative sockets.

Each wait is bounded by ``driver.timeout`` (RFC 5321 §4.5.3.2: greeting 5 min,
MAIL and RCPT 5, DATA 2, each data block 3, end of data 10), or by
``timeout=`` when given.  What the two entry points return or raise:

* :func:`send_messages` returns the :class:`~smtpcore.SessionOutcome`, whatever
  the server said; a timeout or a connection lost mid-session is an
  ``SMTPTransientError`` in it.  It raises ``OSError`` only when no session
  could be set up: the connection failed, or a TLS handshake did (an
  ``ssl.SSLError``, such as a certificate that does not verify). Nothing of
  any message was sent then.
* :func:`send_message` returns the :class:`~smtpcore.MessageOutcome` when at
  least one recipient got the message (the others are in ``.refused``), and
  raises the ``SMTPTransientError`` / ``SMTPPermanentError`` otherwise, a
  connection or TLS failure included (as a transient error).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Sequence

from smtpcore import ClientConfig, ClientDriver, Credentials, MailParams, MessageOutcome, Recipient, SessionOutcome

from ._client_common import (
    DEFAULT_CONNECT_TIMEOUT,
    READ_SIZE,
    HandshakeTimeout,
    Messages,
    MessageSource,
    Waits,
    abandon,
    check_port,
    handshake_limit,
    limit,
    make_driver,
    send_one,
    single,
    tell_local_address,
    timed_out,
    tls_context_for,
)
from ._sockets import KERNEL_TIMEOUTS, limit_unsent, no_delay, set_kernel_timeout, wrapped_for_tls

__all__ = ["open_session", "run_session", "send_message", "send_messages"]

#: Do a client TLS handshake on a socket within the seconds given; return the TLS socket.
Secure = Callable[[socket.socket, float], socket.socket]
#: Open a TCP connection: ``(address, timeout, source_address) -> socket``.
Connect = Callable[[tuple[str, int], float, "tuple[str, int] | None"], socket.socket]


def _secure(context: ssl.SSLContext | None, host: str) -> Secure:
    def secure(sock: socket.socket, seconds: float) -> socket.socket:
        assert context is not None
        sock.settimeout(seconds)
        tls = wrapped_for_tls(
            sock, lambda: context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False), ssl.SSLSocket
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


def run_session(
    driver: ClientDriver,
    sock: socket.socket,
    secure: Secure,
    timeout: float | None = None,
    *,
    kernel_timeouts: bool = False,
) -> None:
    """Run ``driver`` on a connected socket until it is done, then close the socket.

    ``kernel_timeouts`` lets a plain socket wait with the kernel's timeouts (one
    system call per read or write, see ``adapters._sockets.KERNEL_TIMEOUTS``);
    it must stay off for gevent's sockets.  Either way the socket's timeout is
    set only when the wait's bound changes, which is seldom: a read that brings
    a whole reply, or a write the kernel takes at once, leaves it as it was.
    """
    kernel = kernel_timeouts and KERNEL_TIMEOUTS and not isinstance(sock, ssl.SSLSocket)
    if kernel:
        sock.settimeout(None)
    current: float | None = None  # the timeout the socket has now
    waits = Waits(driver, timeout)
    try:
        while not driver.done:
            out = driver.bytes_to_send()
            if not out and driver.done:  # it gave up while making them (content it cannot send)
                break
            if not out and driver.wants_tls:
                sock = secure(sock, limit(driver, timeout))  # an ssl.SSLError ends it here
                kernel, current = False, None  # a TLS socket keeps Python's timeouts
                driver.tls_established()
                continue
            try:
                if out:
                    seconds = waits.for_write()
                    if seconds != current:
                        current = _bound(sock, kernel, seconds)
                    sent = sock.send(out)
                    if sent < len(out):
                        current = _send_rest(sock, kernel, memoryview(out)[sent:], waits)
                else:
                    seconds = waits.for_read()
                    if seconds != current:
                        current = _bound(sock, kernel, seconds)
                    driver.receive(sock.recv(READ_SIZE))
            except (TimeoutError, BlockingIOError):  # BlockingIOError: a kernel timeout ran out
                abandon(driver, timed_out(driver, timeout))
            except OSError as exc:
                abandon(driver, exc)
    finally:
        sock.close()


def _bound(sock: socket.socket, kernel: bool, seconds: float) -> float:
    """Make each read and write on ``sock`` wait at most ``seconds``; return them."""
    if kernel:
        set_kernel_timeout(sock, socket.SO_RCVTIMEO, seconds)
        set_kernel_timeout(sock, socket.SO_SNDTIMEO, seconds)
    else:
        sock.settimeout(seconds)
    return seconds


def _send_rest(sock: socket.socket, kernel: bool, rest: memoryview, waits: Waits) -> float:
    """The rest of a write the kernel took in part, within what is left of its wait.

    ``sendall`` would start each ``send`` with the whole timeout again (with the
    kernel's timeouts) and could take a multiple of it.  Returns the socket's
    timeout now.  Raises ``TimeoutError`` when the wait ran out.
    """
    while True:
        left = waits.left()
        if left <= 0:
            raise TimeoutError
        current = _bound(sock, kernel, left)
        sent = sock.send(rest)
        if sent == len(rest):
            return current
        rest = rest[sent:]


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
        socket.create_connection,
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
        kernel_timeouts=True,
    )


def open_session(
    connect: Connect,
    make_secure: Callable[[ssl.SSLContext | None, str], Secure],
    host: str,
    port: int,
    messages: Messages,
    *,
    config: ClientConfig | None,
    tls_context: ssl.SSLContext | None,
    credentials: Credentials | None,
    timeout: float | None,
    connect_timeout: float,
    source_address: tuple[str, int] | None,
    kernel_timeouts: bool = False,
) -> SessionOutcome:
    """Connect with ``connect`` (``socket.create_connection`` or gevent's), then run the session.

    Shared with the gevent client, whose sockets only differ in how they wait.
    """
    config = config or ClientConfig()
    context = tls_context_for(config, tls_context)
    check_port(port)
    driver = make_driver(config, messages, credentials)
    secure = make_secure(context, host)
    sock = connect((host, port), connect_timeout, source_address)
    no_delay(sock)
    limit_unsent(sock)
    tell_local_address(driver, sock.getsockname())
    if config.implicit_tls:
        try:
            sock = secure(sock, handshake_limit(config, timeout))
        except BaseException:
            sock.close()
            raise
    run_session(driver, sock, secure, timeout, kernel_timeouts=kernel_timeouts)
    return driver.result


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
