"""Events: the small frozen values that cross between the machine and the application.

The same classes serve both roles, as in h11: a client *sends* ``Mail(...)`` and
the server *receives* the very same ``Mail(...)`` from its ``next_event()``.
Replies go the other way as :class:`~smtpcore.Reply` values.  A few events exist
for one role only (``AuthCredentials``, ``CommandRejected`` for the server,
which runs the SASL exchange and answers bad commands itself).

Every event an application may build validates its fields in the constructor,
so an event that could not be sent correctly cannot exist.  The server's parser
builds events through ``_unchecked`` because it has already applied the same
grammar.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from . import _abnf
from ._address import AddressError, check_domain, check_mailbox
from ._errors import LocalProtocolError
from ._params import MailParams, RcptParams
from ._replies import Reply
from ._xclient import (
    ATTRIBUTES,
    FORWARD_ATTRIBUTES,
    TEMPUNAVAIL,
    UNAVAILABLE,
    XClientError,
    canonical_forward_value,
    canonical_value,
)

__all__ = [
    "Auth",
    "AuthCredentials",
    "AuthRefused",
    "AuthResponse",
    "Bdat",
    "CommandRejected",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Event",
    "Expn",
    "Hello",
    "Help",
    "Mail",
    "MessageData",
    "MessageRejected",
    "Noop",
    "ProxyHeader",
    "Quit",
    "Rcpt",
    "Rset",
    "StartTls",
    "TlsHandshake",
    "Vrfy",
    "XClient",
    "XForward",
]

_E = TypeVar("_E", bound="Event")

# RFC 4422 §3.1: sasl-mech = 1*20mech-char ; mech-char = UPPER-ALPHA / DIGIT / HYPHEN / UNDERSCORE
SASL_MECHANISM_RE = re.compile(r"[A-Z0-9_-]{1,20}")


class Event:
    """Base class of every event.

    Whether a server must answer an event it received is the connection's
    business, not the event's (VRFY is answered by the core unless the
    configuration hands it over): see ``ServerConnection.reply_due``.
    """

    __slots__ = ()

    @classmethod
    def _unchecked(cls: type[_E], **values: Any) -> _E:
        """Build without validation: for parsers that already applied the grammar."""
        self = object.__new__(cls)
        for name, value in values.items():
            object.__setattr__(self, name, value)
        return self


def _check_string(value: str | None, what: str, optional: bool) -> None:
    if value is None:
        if not optional:
            raise LocalProtocolError(f"{what} needs an argument")
        return
    # RFC 5321 §4.1.1 says String (an atom or a quoted string), and §3.5.1 shows
    # mailboxes as VRFY arguments: accept both, refuse anything else.
    if not isinstance(value, str) or not (
        _abnf.STRING_UTF8_RE.fullmatch(value) or _abnf.MAILBOX_UTF8_RE.fullmatch(value)
    ):
        raise LocalProtocolError(f"{what} argument {value!r} must be an atom, a quoted string or a mailbox")


# --- commands (client to server) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(Event):
    """EHLO, HELO or LHLO with the client's name (a domain or address literal).

    A server also reports the names outside the grammar that real clients send
    and Postfix takes (a root dot, a bare IPv6 address, a Windows name with an
    underscore: see docs/features.md).  Constructing one, to send it, takes
    only what RFC 5321 allows, so a test that expects such a name compares
    ``event.domain`` rather than building the event.
    """

    domain: str
    verb: Literal["EHLO", "HELO", "LHLO"] = "EHLO"

    def __post_init__(self) -> None:
        if self.verb not in ("EHLO", "HELO", "LHLO"):
            raise LocalProtocolError(f"verb must be EHLO, HELO or LHLO, not {self.verb!r}")
        if not isinstance(self.domain, str):
            raise LocalProtocolError(f"the {self.verb} name must be a str, not {type(self.domain).__name__}")
        try:
            check_domain(self.domain, utf8=True)
        except (AddressError, TypeError) as exc:
            raise LocalProtocolError(f"cannot send {self.verb} {self.domain!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Mail(Event):
    """MAIL FROM:<sender> with its parameters; ``sender=""`` is the null path ``<>``."""

    sender: str
    params: MailParams = field(default_factory=MailParams)

    def __post_init__(self) -> None:
        if not isinstance(self.sender, str):
            raise LocalProtocolError(f'the sender must be a str ("" for <>), not {type(self.sender).__name__}')
        if self.sender != "":
            try:
                check_mailbox(self.sender, utf8=True)
            except (AddressError, TypeError) as exc:
                raise LocalProtocolError(f"cannot send MAIL FROM:<{self.sender!r}>: {exc}") from None
        if not isinstance(self.params, MailParams):
            raise LocalProtocolError("params must be a MailParams")


@dataclass(frozen=True, slots=True)
class Rcpt(Event):
    """RCPT TO:<recipient> with this recipient's own parameters."""

    recipient: str
    params: RcptParams = field(default_factory=RcptParams)

    def __post_init__(self) -> None:
        if not isinstance(self.recipient, str):
            raise LocalProtocolError(f"the recipient must be a str, not {type(self.recipient).__name__}")
        if self.recipient.lower() != "postmaster":
            try:
                check_mailbox(self.recipient, utf8=True)
            except (AddressError, TypeError) as exc:
                raise LocalProtocolError(f"cannot send RCPT TO:<{self.recipient!r}>: {exc}") from None
        if not isinstance(self.params, RcptParams):
            raise LocalProtocolError("params must be an RcptParams")


# MAIL and RCPT are built once per command, so the parser has positional
# versions of ``_unchecked`` for them, without the keyword dictionary and its
# loop.  They fill the slots through the slots' own descriptors, which a frozen
# dataclass leaves working (it only overrides __setattr__): a third cheaper
# than object.__setattr__ by name (counted with callgrind).
_new = object.__new__
_set_mail_sender, _set_mail_params = Mail.__dict__["sender"].__set__, Mail.__dict__["params"].__set__
_set_rcpt_recipient, _set_rcpt_params = Rcpt.__dict__["recipient"].__set__, Rcpt.__dict__["params"].__set__


def unchecked_mail(sender: str, params: MailParams) -> Mail:
    """``Mail._unchecked(sender=sender, params=params)``."""
    self = _new(Mail)
    _set_mail_sender(self, sender)
    _set_mail_params(self, params)
    return self


def unchecked_rcpt(recipient: str, params: RcptParams) -> Rcpt:
    """``Rcpt._unchecked(recipient=recipient, params=params)``."""
    self = _new(Rcpt)
    _set_rcpt_recipient(self, recipient)
    _set_rcpt_params(self, params)
    return self


@dataclass(frozen=True, slots=True)
class Data(Event):
    """DATA: the server answers 354, then the content follows."""


@dataclass(frozen=True, slots=True)
class Bdat(Event):
    """BDAT <size> [LAST] (RFC 3030): exactly ``size`` octets of content follow.

    A server receives the octets as :class:`MessageData` events right after this
    one; the core answers each non-final chunk itself.  A client sends this and
    then ``MessageData`` totalling exactly ``size`` octets.
    """

    size: int
    last: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size < 10**15:
            raise LocalProtocolError(f"BDAT size must be a non-negative int, not {self.size!r}")
        if self.last is not True and self.last is not False:
            # The writer sends LAST only for True; a truthy 1 would end the transaction
            # in the client's books while the server still waits for the last chunk.
            raise LocalProtocolError(f"Bdat.last must be True or False, not {self.last!r}")


@dataclass(frozen=True, slots=True)
class MessageData(Event):
    """A piece of message content, in order, as it arrives.

    After DATA the server gives the content with the dot-stuffing removed and the
    client stuffs what it is given; after BDAT the octets are opaque.
    """

    data: bytes

    def __post_init__(self) -> None:
        data = self.data
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise LocalProtocolError(f"message data must be bytes, not {type(data).__name__}")
            # A copy: an event is a value (hashable, equal by content), never a view of a
            # buffer the caller goes on to change.
            _set_message_data(self, bytes(data))

    def __repr__(self) -> str:
        # A message can be megabytes: show its size and a little of it.
        head = bytes(self.data[:32])
        return f"MessageData(<{len(self.data)} bytes: {head!r}{'...' if len(self.data) > 32 else ''}>)"


_set_message_data = MessageData.__dict__["data"].__set__


def unchecked_message_data(data: bytes) -> MessageData:
    """``MessageData(data)`` for content the reader cut from the buffer (bytes by construction)."""
    self = _new(MessageData)
    _set_message_data(self, data)
    return self


@dataclass(frozen=True, slots=True)
class EndOfMessage(Event):
    """The end of the content: CRLF.CRLF after DATA, or the end of the BDAT LAST chunk."""


@dataclass(frozen=True, slots=True)
class Rset(Event):
    """RSET: abort the current transaction.  The core answers 250 itself."""


@dataclass(frozen=True, slots=True)
class Noop(Event):
    """NOOP [string].  The core answers 250 itself."""

    argument: str | None = None

    def __post_init__(self) -> None:
        _check_string(self.argument, "NOOP", optional=True)


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """QUIT.  The core answers 221 and the connection ends."""


@dataclass(frozen=True, slots=True)
class Vrfy(Event):
    """VRFY <string>.  Answered by the application only if the configuration says so."""

    argument: str

    def __post_init__(self) -> None:
        _check_string(self.argument, "VRFY", optional=False)


@dataclass(frozen=True, slots=True)
class Expn(Event):
    """EXPN <string>.  Answered by the application only if the configuration says so."""

    argument: str

    def __post_init__(self) -> None:
        _check_string(self.argument, "EXPN", optional=False)


@dataclass(frozen=True, slots=True)
class Help(Event):
    """HELP [string].  The core answers 214 itself."""

    argument: str | None = None

    def __post_init__(self) -> None:
        _check_string(self.argument, "HELP", optional=True)


@dataclass(frozen=True, slots=True)
class StartTls(Event):
    """STARTTLS (RFC 3207).  After a 220 both sides start the TLS handshake."""


@dataclass(frozen=True, slots=True)
class Auth(Event):
    """AUTH <mechanism> [initial-response] (RFC 4954); the response as raw bytes.

    ``initial_response=b""`` is sent as ``=`` (an empty initial response);
    ``None`` sends none, and the server will ask with a 334 challenge.
    """

    mechanism: str
    initial_response: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.mechanism, str) or not SASL_MECHANISM_RE.fullmatch(self.mechanism):
            raise LocalProtocolError(f"{self.mechanism!r} is not a SASL mechanism name (RFC 4422)")
        if self.initial_response is not None and not isinstance(self.initial_response, bytes):
            raise LocalProtocolError("initial_response must be bytes")


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """A response to a 334 challenge, as raw bytes; ``cancel=True`` sends ``*``."""

    data: bytes = field(default=b"", repr=False)
    cancel: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise LocalProtocolError("AuthResponse data must be bytes")
        if self.cancel is not True and self.cancel is not False:
            raise LocalProtocolError(f"AuthResponse.cancel must be True or False, not {self.cancel!r}")


class _Attributes(Event):
    """What XCLIENT and XFORWARD share: named attributes, each ``None`` when not given."""

    __slots__ = ()
    _ATTRIBUTES: ClassVar[tuple[str, ...]]

    @staticmethod
    def _canonical(name: str, value: str) -> str:
        """An attribute's value as the event holds it, or ``XClientError``."""
        raise NotImplementedError  # pragma: no cover - each event class has its own

    def __post_init__(self) -> None:
        given = False
        for attribute in self._ATTRIBUTES:
            value = getattr(self, attribute.lower())
            if value is not None:
                given = True
                try:
                    object.__setattr__(self, attribute.lower(), self._canonical(attribute, value))
                except XClientError as exc:
                    raise LocalProtocolError(str(exc)) from None
        if not given:
            raise LocalProtocolError(f"{type(self).__name__} needs at least one attribute")

    @property
    def attributes(self) -> dict[str, str]:
        """The attributes given, by their upper-case names, in the order of the EHLO line."""
        values = {attribute: getattr(self, attribute.lower()) for attribute in self._ATTRIBUTES}
        return {attribute: value for attribute, value in values.items() if value is not None}


@dataclass(frozen=True, slots=True)
class XClient(_Attributes):
    """XCLIENT (Postfix's XCLIENT_README): a trusted proxy names the client it speaks for.

    Each field is one attribute, ``None`` when the command did not give it, or
    ``"[UNAVAILABLE]"`` when the proxy does not know it (NAME may also be
    ``"[TEMPUNAVAIL]"``: its lookup failed for now).  ``addr`` and ``destaddr``
    are IP addresses (no ``IPV6:`` prefix here; the writer adds it), ``port``
    and ``destport`` decimal strings, ``proto`` ``"SMTP"`` or ``"ESMTP"``,
    ``login`` the name the proxy authenticated.  At least one is given.

    The server offers XCLIENT only with ``ServerConfig(xclient=True)``, and the
    application decides who may use it: a 220 accepts (the session starts over
    as if the proxy's client had connected), ``550 5.7.0`` refuses.
    """

    #: An attribute the proxy does not know; and NAME's lookup that failed for now.
    UNAVAILABLE: ClassVar[str] = UNAVAILABLE
    TEMPUNAVAIL: ClassVar[str] = TEMPUNAVAIL
    _ATTRIBUTES: ClassVar[tuple[str, ...]] = ATTRIBUTES
    _canonical = staticmethod(canonical_value)

    name: str | None = None
    addr: str | None = None
    port: str | None = None
    proto: str | None = None
    helo: str | None = None
    login: str | None = None
    destaddr: str | None = None
    destport: str | None = None


@dataclass(frozen=True, slots=True)
class XForward(_Attributes):
    """XFORWARD (Postfix's XFORWARD_README): where the mail of the next transaction came from, to log.

    Sent by an MTA that hands mail to a content filter (Postfix with
    ``smtp_send_xforward_command = yes``): the client it got the mail from
    (``name``, ``addr``, ``port``, its ``helo``), the protocol (``proto``), its own
    queue ID (``ident``) and whether the mail was ``"LOCAL"`` or ``"REMOTE"``
    (``source``).  ``"[UNAVAILABLE]"`` for what it does not know, ``None`` for what
    this command did not say.  Unlike XCLIENT it changes nothing about the
    session: the server answers 250 and keeps the attributes until the
    transaction that follows ends.  ``name``, ``helo``, ``proto`` and ``ident`` are
    whatever the first MTA was told (not necessarily DNS names); only ``addr``
    (an IP address), ``port`` and ``source`` have a grammar.
    """

    UNAVAILABLE: ClassVar[str] = UNAVAILABLE
    _ATTRIBUTES: ClassVar[tuple[str, ...]] = FORWARD_ATTRIBUTES
    _canonical = staticmethod(canonical_forward_value)

    name: str | None = None
    addr: str | None = None
    port: str | None = None
    proto: str | None = None
    helo: str | None = None
    ident: str | None = None
    source: str | None = None


#: RFC 2920 §3.1 (and RFC 3207, 4954 for STARTTLS and AUTH): the commands after
#: which a client must wait for the reply before it sends anything more.  The
#: client keeps to it; the server notes (or refuses) a client that does not.
ENDS_GROUP: frozenset[type[Event]] = frozenset({Hello, Data, Vrfy, Expn, Quit, Noop, StartTls, Auth})


# --- server-only events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthCredentials(Event):
    """A finished SASL exchange, for the server application to accept (235) or refuse (535).

    ``username`` is the authentication identity and ``authorization_id`` the
    identity to act as (often empty).  ``password`` is set for PLAIN and LOGIN;
    for mechanisms without a password in clear (CRAM-MD5) use :meth:`verify`;
    ``token`` holds an XOAUTH2 bearer token.  None of the secrets appear in the
    repr, so logging the event leaks nothing.
    """

    mechanism: str
    username: str
    authorization_id: str = ""
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    #: For a mechanism without the password in clear (CRAM-MD5): does this password
    #: give what the client sent?  Set by the mechanism; :meth:`verify` calls it.
    verifier: Callable[[str], bool] | None = field(default=None, repr=False, compare=False)

    def verify(self, password: str) -> bool:
        """Whether ``password`` is the one the client proved it knows."""
        if self.verifier is not None:
            return bool(self.verifier(password))
        if self.password is None:
            return False
        import hmac  # local: only the comparison needs it

        return hmac.compare_digest(self.password.encode("utf-8"), password.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class ProxyHeader(Event):
    """The PROXY protocol header (with ``ServerConfig(proxy_protocol=True)``): who the
    real client is.  ``None`` addresses for a proxy's own health checks (LOCAL,
    UNKNOWN).  The greeting is due after this event."""

    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    version: int


@dataclass(frozen=True, slots=True)
class AuthRefused(Event):
    """The client answered the error challenge of ``send_auth_error()``: the AUTH exchange is over.

    ``reply`` is queued: the refusal held back until now, or 501 if the client
    cancelled with ``*`` (RFC 4954 §4).  Nothing is due; the event is for the
    log, and tells an adapter that the next command starts now.
    """

    reply: Reply


@dataclass(frozen=True, slots=True)
class CommandRejected(Event):
    """The core refused a command itself (unknown verb, bad syntax, bad sequence).

    The reply is already queued; the event lets the application log or count it.
    ``cause`` is the exception an application's SASL mechanism raised (the
    client was told 454 4.7.0 and nothing of its text), for the log.
    """

    command: str
    reply: Reply
    cause: Exception | None = None


@dataclass(frozen=True, slots=True)
class MessageRejected(Event):
    """The message that just ended was refused by the core or by ``reject_message()``.

    The reply (for example 552 for size, 550 5.6.11 for a bare LF) is already
    queued; discard whatever content was received.
    """

    reply: Reply


# --- both roles -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsHandshake(Event):
    """Start the TLS handshake now, then call ``tls_established()``.

    Flush ``data_to_send()`` first: it ends with the 220 that tells the peer to
    begin.  Every byte received before ``tls_established()`` is discarded.
    """


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The connection is over: flush ``data_to_send()`` and close the socket.

    ``by_peer`` is true when the peer closed first (``receive_data(b"")``).
    """

    by_peer: bool = False
