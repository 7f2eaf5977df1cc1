"""Glue the four client adapters share; none of it is SMTP.

Every SMTP decision (what to send, which reply means what, which error class a
failure gets) is made by :class:`smtpcore.ClientDriver`.  What is left for an
adapter is the same handful of chores in every dialect, so they live here once:
turning a file into chunks, building the driver, choosing the TLS context,
picking the bound on the current wait, and letting the driver finish when the
socket failed under it.

The driver has no call for "the connection failed locally" (a timeout, a reset
while writing), so :func:`abandon` tells it the server closed the connection and
lets it run to its end with no I/O at all: the driver then gives every
unfinished message an ``SMTPTransientError``, which is what a lost connection
is.  The real cause (a ``TimeoutError``, an ``OSError``) replaces the error's
``__cause__``, which would otherwise point at the end of file we made up.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from email.message import Message
from typing import Any, Protocol, TypeAlias, runtime_checkable

from smtpcore import (
    ClientConfig,
    ClientDriver,
    Credentials,
    Envelope,
    MailParams,
    MessageOutcome,
    Recipient,
    SessionOutcome,
    SMTPTransientError,
    TlsPolicy,
)
from smtpcore import Message as DriverMessage

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "READ_SIZE",
    "MessageSource",
    "HandshakeTimeout",
    "Messages",
    "Waits",
    "abandon",
    "chunks",
    "connect_failed",
    "handshake_limit",
    "limit",
    "make_driver",
    "one_message",
    "single",
    "tell_local_address",
    "timed_out",
    "tls_context_for",
]

#: Octets asked for per read.
READ_SIZE = 65536
#: The shortest wait handed to a socket: zero would mean "do not wait" to some and "for ever" to others.
MIN_WAIT = 0.001
#: Seconds allowed to open the TCP connection (RFC 5321 sets none; smtplib has none, we do).
DEFAULT_CONNECT_TIMEOUT = 30.0


@runtime_checkable
class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


#: What the helpers accept as a message: an ``email.message.Message`` (an
#: ``EmailMessage``, a ``MIMEText``...), bytes, a binary file object (read in chunks,
#: never whole) or an iterable of ``bytes`` chunks.  (A text-mode file is refused by
#: the driver before its MAIL: its first chunk is a str.)
MessageSource: TypeAlias = "Message | bytes | bytearray | memoryview | _Readable | Iterable[bytes]"
#: The session form's messages: (envelope, message) pairs.
Messages: TypeAlias = "Iterable[tuple[Envelope, MessageSource]]"


def chunks(source: _Readable, size: int) -> Iterator[bytes]:
    """A binary file object as a stream of chunks of at most ``size`` octets."""
    while True:
        piece = source.read(size)
        if not piece:
            return
        yield piece


def _as_driver_message(source: MessageSource, size: int) -> DriverMessage:
    if isinstance(source, (Message, bytes, bytearray, memoryview)):
        return source
    if isinstance(source, _Readable):  # before iter(): a file object also iterates, by lines
        return chunks(source, size)
    return source


def single(
    sender: str, recipients: Sequence[str | Recipient], message: MessageSource, mail_params: MailParams | None
) -> list[tuple[Envelope, MessageSource]]:
    """The one (envelope, message) pair of ``send_message``."""
    envelope = Envelope(sender, recipients, mail_params if mail_params is not None else MailParams())
    return [(envelope, message)]


def check_port(port: int) -> None:
    """A TCP port, or ValueError: getaddrinfo() takes 65536 + 25 as 25, asyncio raises OverflowError."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an int from 1 to 65535, not {port!r}")


def make_driver(config: ClientConfig, messages: Messages, credentials: Credentials | None) -> ClientDriver:
    """The driver for ``messages``; file objects become chunk streams."""
    pairs = [(envelope, _as_driver_message(message, config.chunk_size)) for envelope, message in messages]
    return ClientDriver(config, pairs, credentials=credentials)


def tell_local_address(driver: ClientDriver, sockname: object) -> None:
    """Give the driver the connection's local IP address (``getsockname()``'s), for its EHLO name."""
    if isinstance(sockname, tuple) and sockname and isinstance(sockname[0], str):  # (not a Unix socket's path)
        driver.set_local_address(sockname[0])


def tls_context_for(config: ClientConfig, given: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The caller's context, or the default one (certificate and host name verified) when TLS may be used."""
    if given is not None:
        return given
    if config.implicit_tls or config.starttls is not TlsPolicy.OFF:
        return default_tls_context()
    return None


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """One verifying client context for the whole process.

    Building it loads the system's CA certificates, about 20 ms: paid once, not
    per connection (a session to a server without STARTTLS would otherwise pay
    it for nothing).  A context is safe to share between threads and sessions;
    nothing here changes it after it is made.
    """
    return ssl.create_default_context()


def limit(driver: ClientDriver, override: float | None) -> float:
    """Seconds the current wait may take: ``timeout=`` if given, else the driver's (RFC 5321 §4.5.3.2)."""
    return override if override is not None else driver.timeout.seconds


class Waits:
    """The seconds left for the current wait: one deadline per reply, not per read.

    RFC 5321 §4.5.3.2 bounds the wait for each reply.  A timer started afresh
    for every read would let a server that sends a byte a second hold the client
    for ever, so a wait begins only with a write, or with a read after one that
    completed a reply (``driver.replies_received`` moved); any other read gets
    what is left of the wait it continues.  Writes are each one wait (each data
    block has its own timeout); the adapter bounds a write as a whole.
    """

    __slots__ = ("_deadline", "_driver", "_override", "_replies")

    def __init__(self, driver: ClientDriver, override: float | None) -> None:
        self._driver = driver
        self._override = override
        self._deadline = 0.0
        self._replies = -1  # (never a count of replies: the next read starts a wait)

    def _start(self) -> float:
        seconds = limit(self._driver, self._override)
        self._deadline = time.monotonic() + seconds
        return seconds

    def for_write(self) -> float:
        """Seconds the next write may take, as a whole; the read after it starts a new wait."""
        self._replies = -1
        return self._start()

    def for_read(self) -> float:
        """Seconds the next read may take."""
        replies = self._driver.replies_received
        if replies != self._replies:
            self._replies = replies
            return self._start()
        # A wait that has run out still reads what is already there, briefly.
        return max(MIN_WAIT, self.left())

    def left(self) -> float:
        """Seconds left of the current wait (zero or less once it ran out)."""
        return self._deadline - time.monotonic()


def handshake_limit(config: ClientConfig, override: float | None) -> float:
    """Seconds an implicit-TLS handshake may take: ``timeout=`` if given, else ``tls_handshake``."""
    return override if override is not None else config.timeouts["tls_handshake"]


def timed_out(driver: ClientDriver, override: float | None) -> TimeoutError:
    """A readable cause for a wait that ran out."""
    current = driver.timeout
    if override is not None:
        return TimeoutError(f"no progress within timeout={override:g} s (waiting: {current.name})")
    return TimeoutError(f"no progress within the {current.name} timeout of {current.seconds:g} s ({current.rfc})")


def abandon(driver: ClientDriver, cause: BaseException) -> None:
    """The connection failed locally (a timeout, a broken write): end the session, sending nothing."""
    driver.abort(f"the connection failed: {cause}", cause)


class HandshakeTimeout(TimeoutError):
    """A TLS handshake that did not finish in time, in the same words whichever the dialect."""

    def __init__(self, host: str, seconds: float) -> None:
        super().__init__(f"the TLS handshake with {host} took over {seconds:g} s")


def connect_failed(host: str, port: int, exc: OSError) -> SMTPTransientError:
    """``send_message``'s error for a connection that could not be opened, secured or kept."""
    if isinstance(exc, (ssl.SSLError, HandshakeTimeout)):
        what = "cannot set up TLS with"
    elif isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        what = "lost the connection to"  # (it was made: refused, unreachable and timed out are not these)
    else:
        what = "cannot connect to"
    error = SMTPTransientError(f"{what} {host}:{port}: {exc or type(exc).__name__}")
    error.__cause__ = exc
    return error


def send_one(
    send_messages: Callable[..., SessionOutcome],
    host: str,
    port: int,
    messages: Messages,
    **options: Any,
) -> MessageOutcome:
    """Every blocking ``send_message``: ``single(...)`` through that adapter's ``send_messages``."""
    try:
        outcome = send_messages(host, port, messages, **options)
    except OSError as exc:
        raise connect_failed(host, port, exc) from exc
    return one_message(outcome)


async def asend_one(
    send_messages: Callable[..., Awaitable[SessionOutcome]],
    host: str,
    port: int,
    messages: Messages,
    **options: Any,
) -> MessageOutcome:
    """Every async ``send_message``: as :func:`send_one`, awaited."""
    try:
        outcome = await send_messages(host, port, messages, **options)
    except OSError as exc:
        raise connect_failed(host, port, exc) from exc
    return one_message(outcome)


def one_message(outcome: SessionOutcome) -> MessageOutcome:
    """``send_message``'s result: the message's outcome, or its error when nobody got it."""
    message = outcome.messages[0]
    if message.error is not None:
        raise message.error
    return message
