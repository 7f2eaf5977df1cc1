"""What happened to a message: typed errors and per-recipient results.

A sender's one real question after a failure is "may I retry?", and the answer
is in the class: :class:`SMTPTransientError` (a 4xx reply, greylisting, a 421,
a connection lost or a server that broke the protocol: retry later) or
:class:`SMTPPermanentError` (a 5xx, or a server that lacks what this message
needs: retrying the same thing fails again).  Both carry the reply (when there
was one) and the command it answered, so the decision never needs parsing of
message strings.

Outcomes are frozen values built by the driver.  In SMTP a recipient is
delivered when its RCPT was accepted and the end of data got a 2xx; in LMTP
each accepted recipient gets its own reply after the message.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._capabilities import Capabilities
from ._events import Event
from ._replies import Reply

__all__ = [
    "MessageOutcome",
    "RecipientOutcome",
    "SMTPAuthenticationError",
    "SMTPDeliveryError",
    "SMTPNotSupportedError",
    "SMTPPermanentError",
    "SMTPTransientError",
    "SessionOutcome",
    "error_for",
]


class SMTPDeliveryError(Exception):
    """A message (or recipient, or session) was not delivered.

    ``reply`` is the server's reply, or ``None`` when no reply caused it (a lost
    connection, a missing extension).  ``command`` is the command that got the
    reply (``None`` for the greeting or the connection itself).
    """

    #: Whether the same attempt may succeed later.
    transient: bool = False

    def __init__(self, message: str, reply: Reply | None = None, command: Event | None = None) -> None:
        super().__init__(message)
        self.reply = reply
        self.command = command


class SMTPTransientError(SMTPDeliveryError):
    """4xx, 421, a lost connection or a protocol violation by the server: retry later."""

    transient = True


class SMTPPermanentError(SMTPDeliveryError):
    """5xx: the server refused; the same attempt will fail again."""


class SMTPNotSupportedError(SMTPPermanentError):
    """The server lacks what the message or the policy needs (SMTPUTF8, 8BITMIME,
    STARTTLS when TLS is required, a size within its limit, an AUTH mechanism)."""


class SMTPAuthenticationError(SMTPPermanentError):
    """AUTH was refused with a 5xx (535: bad credentials).

    ``server_error`` is what an OAuth server said of the token before refusing
    it (XOAUTH2, OAUTHBEARER: the JSON of its error challenge, RFC 7628
    §3.2.2), else None.  Its ``"status"`` tells a token to refresh
    (``"invalid_token"``; Gmail's XOAUTH2 says ``"400"``) from one that lacks
    a scope, without parsing the message.
    """

    def __init__(
        self,
        message: str,
        reply: Reply | None = None,
        command: Event | None = None,
        server_error: bytes | None = None,
    ) -> None:
        super().__init__(message, reply, command)
        self.server_error = server_error


def error_for(reply: Reply, command: Event | None, what: str) -> SMTPDeliveryError:
    """The error class a negative reply calls for, with a readable message."""
    text = f"{what}: {reply}"
    if reply.code < 500:
        return SMTPTransientError(text, reply, command)
    return SMTPPermanentError(text, reply, command)


@dataclass(frozen=True)
class RecipientOutcome:
    """One recipient: its RCPT reply, and for LMTP its own end-of-data reply."""

    recipient: str
    #: The reply to RCPT (``None`` if it was never sent).
    rcpt_reply: Reply | None = None
    #: The reply that decided delivery: the end of data (SMTP: shared by all
    #: accepted recipients; LMTP: this recipient's own).
    data_reply: Reply | None = None
    #: ``None`` when delivered.
    error: SMTPDeliveryError | None = None

    @property
    def delivered(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class MessageOutcome:
    """One message: every recipient's outcome, and an error if it failed as a whole."""

    recipients: tuple[RecipientOutcome, ...]
    #: Set when no recipient got the message (MAIL refused, every recipient
    #: refused, the content refused, the session ended first).
    error: SMTPDeliveryError | None = None

    @property
    def delivered(self) -> tuple[str, ...]:
        return tuple(item.recipient for item in self.recipients if item.delivered)

    @property
    def refused(self) -> dict[str, SMTPDeliveryError]:
        """The recipients that did not get the message, with why (as smtplib returns)."""
        return {item.recipient: item.error for item in self.recipients if item.error is not None}


@dataclass(frozen=True)
class SessionOutcome:
    """A whole session: one outcome per message, and why the session ended early if it did."""

    messages: tuple[MessageOutcome, ...]
    #: Set when the session failed (greeting refused, TLS required but refused,
    #: AUTH failed, 421, connection lost, protocol violation).
    error: SMTPDeliveryError | None = None
    capabilities: Capabilities | None = None
    tls: bool = False

    def raise_for_error(self) -> None:
        """Raise the session's error, or the first message's that was delivered to nobody."""
        if self.error is not None:
            raise self.error
        for message in self.messages:
            if message.error is not None:
                raise message.error
