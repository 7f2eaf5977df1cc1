"""The sans-IO transaction driver: envelope + message in, bytes out, outcomes at the end.

Every client adapter needs the same dialogue (greeting, EHLO, STARTTLS, AUTH,
MAIL/RCPT/DATA with the right parameters, QUIT) and the same decisions about
it.  Those decisions are protocol, so they live here, once, and an adapter's
"send a message" is this loop and nothing else::

    driver = ClientDriver(config, [(envelope, message)], credentials=...)
    while not driver.done:
        out = driver.bytes_to_send()
        if out:
            sock.sendall(out)                 # bounded by driver.timeout
        elif driver.wants_tls:
            sock = tls_context.wrap_socket(sock, server_hostname=host)
            driver.tls_established()
        else:
            driver.receive(sock.recv(65536))  # b"" when the server closed
    outcome = driver.result                   # SessionOutcome; .raise_for_error()

Inside, the dialogue is written as a generator (``_session``) that reads like
the RFC: it sends a command, then ``yield``\\ s until its reply is there.  It
pauses for one of three reasons: it needs input (resumed by ``receive``), it
has queued bytes and waits for them to be taken (resumed by ``bytes_to_send``:
a large message is never all in the output buffer, and the next message is
prepared only once a group is on the wire), or it waits for the TLS handshake
(resumed by ``tls_established``).

Decisions, with their RFCs:

* **Greeting** must be 220; anything else ends the session (QUIT after a 554).
* **Hello**: EHLO, falling back to HELO on 500/502 (RFC 5321 §3.2); LHLO for LMTP.
* **STARTTLS** per ``ClientConfig.starttls``.  REQUIRED: no STARTTLS
  capability, or any reply but 220, ends the session; it never continues in
  plaintext.  OPTIONAL: used when offered; a refusal continues in plaintext.
* **AUTH** only over TLS unless ``allow_insecure_auth``; the mechanism is the
  first of ``config.auth_mechanisms`` the server offers and the credentials fit,
  and after a 5xx (over TLS) the next such one, each once; a 4xx ends it (transient).
* **MAIL parameters** are derived from the content and the envelope:
  ``SIZE`` (octets, when known), ``BODY=8BITMIME`` for 8-bit content,
  ``BODY=BINARYMIME`` (over BDAT) for content with NUL or lines over 998
  octets (long lines go as they are to a server without it only with
  ``send_long_lines``), ``SMTPUTF8`` only for a UTF-8 address or UTF-8 header (an email
  message with 8-bit parts is written 7-bit for a server without 8BITMIME,
  RFC 6152 §3; bytes never are).  What the
  server lacks makes the message fail with ``SMTPNotSupportedError`` before a
  byte of it is sent.  The caller's own parameters (DSN, REQUIRETLS, extra)
  are kept and checked against the server's extensions the same way; a
  REQUIRETLS message also needs a TLS-protected session (RFC 8689 §4.2.1).
* **PIPELINING**: MAIL, every RCPT and DATA in one write; replies paired in
  order.  Every recipient refused: no content is sent (if a server still says
  354, an empty message is ended at once) and the transaction is reset.
  Content may open a group (RFC 2920 §3.1), so a message's end goes out with
  the next message's MAIL/RCPT/DATA, or with QUIT after the last: one round
  trip per message.  While the replies are on their way the next message is
  prepared (normalised, dot-stuffed), so that work overlaps the server's.
* **BDAT** when CHUNKING is offered (or BINARYMIME is needed), in pieces of
  ``config.chunk_size``; otherwise DATA with streamed dot-stuffing.
* **LIMITS RCPTMAX** (RFC 9422): recipients beyond it go in further
  transactions of the same message; so do those refused for the server's
  recipient limit on the way (452 4.5.3, RFC 5321 §4.5.3.1.10), as long as
  each transaction delivers to someone and the content can go again.
* **421** anywhere, a lost connection or a protocol violation: the session
  ends with an ``SMTPTransientError`` for every message not yet finished,
  but for what the replies already in decided (see ``_Progress``).

Content given as an iterable of chunks is streamed: its properties cannot be
known in advance, so it is declared ``BODY=8BITMIME`` when the server offers it
and sent without SIZE.  A problem found in a later chunk (a bare CR/LF under
REJECT, 8-bit bytes to a 7-bit server) abandons the connection without ending
the message, so a truncated message is never delivered; the messages after it
were never tried and get a transient error.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import email.message
import email.utils
import functools
import itertools
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.policy import SMTP, SMTPUTF8, EmailPolicy
from typing import TypeAlias, cast

from ._address import address_literal, ascii_form
from ._capabilities import Capabilities
from ._client import ClientConnection
from ._config import BareNewlinePolicy, ClientConfig, Timeout, TlsPolicy
from ._dotstuff import LineEndings, stuff
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    Auth,
    AuthResponse,
    Bdat,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Hello,
    Mail,
    MessageData,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    TlsHandshake,
    XClient,
    XForward,
    unchecked_mail,
    unchecked_rcpt,
)
from ._outcomes import (
    MessageOutcome,
    RecipientOutcome,
    SessionOutcome,
    SMTPAuthenticationError,
    SMTPDeliveryError,
    SMTPNotSupportedError,
    SMTPPermanentError,
    SMTPTransientError,
    error_for,
)
from ._params import BodyType, MailParams, RcptParams, required_extensions
from ._replies import Reply, shown
from ._sasl_client import TOKEN_MECHANISMS, ClientMechanism, Credentials, SaslError, usable_mechanisms
from ._sentinels import NEED_DATA
from ._writers import MAX_COMMAND_LINE, split_xforward, write_command

__all__ = ["ClientDriver", "Envelope", "Message", "Recipient"]

#: What the driver accepts as a message: bytes, chunks of bytes, or a message of the
#: stdlib's ``email`` package (``EmailMessage``, or a compat32 ``Message`` such as
#: ``MIMEText`` or ``email.message_from_bytes()`` gives).
Message: TypeAlias = "bytes | bytearray | memoryview | Iterable[bytes] | email.message.Message"

# The parameters of a caller who gave none (see _plan_for).
_NO_MAIL_PARAMS = MailParams()
_NO_RCPT_PARAMS = RcptParams()

# RFC 5321 §4.5.3.1.6: a text line is at most 998 octets plus CRLF.
_MAX_TEXT_LINE = 998
# 334 challenges one AUTH exchange may take before the client cancels it: the built-in
# mechanisms need one or two, SCRAM two, GSSAPI a few (smtplib allows 5).
_MAX_CHALLENGES = 10


@dataclass(frozen=True)
class Recipient:
    """One recipient and its own RCPT parameters (DSN NOTIFY/ORCPT, ...)."""

    address: str
    params: RcptParams = field(default_factory=lambda: _NO_RCPT_PARAMS)

    def __post_init__(self) -> None:
        Rcpt(self.address, self.params)  # validates (LocalProtocolError)


@dataclass(frozen=True)
class Envelope:
    """Sender, recipients and the caller's MAIL parameters (RET, ENVID, REQUIRETLS...).

    ``recipients`` may mix plain addresses and :class:`Recipient` values.  The
    driver adds SIZE, BODY and SMTPUTF8 itself; set ``params.body`` only to force
    a body type (``"BINARYMIME"`` sends the content byte-exact over BDAT).
    """

    sender: str
    recipients: Sequence[str | Recipient]
    params: MailParams = field(default_factory=lambda: _NO_MAIL_PARAMS)
    #: Where the message came from, for a content filter that hands it back to its
    #: MTA: sent as XFORWARD before MAIL when the server offers it (only the
    #: attributes it lists), and left out otherwise, as Postfix's client does.
    xforward: XForward | None = None

    def __post_init__(self) -> None:
        Mail(self.sender, self.params)  # validates (LocalProtocolError)
        if self.xforward is not None:
            if not isinstance(self.xforward, XForward):
                raise LocalProtocolError(f"xforward must be an XForward event, not {type(self.xforward).__name__}")
            split_xforward(self.xforward)  # what cannot be written fails here, not mid-session
        if isinstance(self.recipients, (str, bytes)):
            raise LocalProtocolError("recipients must be a sequence of addresses, not one string")
        items = tuple(item if isinstance(item, Recipient) else Recipient(item) for item in self.recipients)
        if not items:
            raise LocalProtocolError("an envelope needs at least one recipient")
        object.__setattr__(self, "recipients", items)

    @property
    def recipient_list(self) -> tuple[Recipient, ...]:
        return self.recipients  # type: ignore[return-value]

    @classmethod
    def from_message(cls, message: email.message.Message, params: MailParams | None = None) -> Envelope:
        """The envelope a message's own headers give, as smtplib's ``send_message`` finds it.

        The sender is the ``Sender`` header's address if there is one, else the
        ``From`` header's (RFC 5322 §3.6.2); the recipients are every address in
        ``To``, ``Bcc`` and ``Cc``, each once (the first time it appears).  A message with one ``Resent-Date``
        is being resent, and the ``Resent-`` fields count instead (§3.6.6).  Bcc
        headers are never sent (the driver drops them from what it writes), so
        their recipients are in the envelope only.  Raises ``LocalProtocolError``
        when a header is missing, names no address, or the resent blocks are
        ambiguous.
        """
        resent = message.get_all("Resent-Date") or []
        if len(resent) > 1:
            raise LocalProtocolError(
                "the message has more than one Resent- block: give the envelope (which block is being sent?)"
            )
        prefix = "Resent-" if resent else ""
        sender_fields = message.get_all(prefix + "Sender") or message.get_all(prefix + "From") or []
        senders = [address for _, address in email.utils.getaddresses([str(f) for f in sender_fields]) if address]
        if not senders:
            raise LocalProtocolError(f"the message has no {prefix}From address: give the envelope's sender")
        # In smtplib's order (To, Bcc, Cc), so that the RCPTs are the ones it would send.
        fields = [str(f) for name in ("To", "Bcc", "Cc") for f in message.get_all(prefix + name) or []]
        recipients: dict[str, str] = {}  # each address once (lower case), in the order of the headers
        for _, address in email.utils.getaddresses(fields):
            if address:
                recipients.setdefault(address.lower(), address)
        if not recipients:
            raise LocalProtocolError(f"the message has no {prefix}To, Cc or Bcc address: give the recipients")
        return cls(senders[0], list(recipients.values()), params if params is not None else MailParams())

    @property
    def needs_smtputf8(self) -> bool:
        """A UTF-8 address (RFC 6531 §3.4)."""
        return not self.sender.isascii() or any(not item.address.isascii() for item in self.recipient_list)


# --- content ------------------------------------------------------------------------------------


@dataclass
class _Content:
    """A message ready to send: whole bytes (with what we know of them) or a stream."""

    data: bytes | None
    stream: Iterator[bytes] | None = None
    eight_bit: bool = False
    #: NUL or a line over 998 octets: only BODY=BINARYMIME carries it as it is.
    binary: bool = False
    nul: bool = False
    #: The first line over 998 octets: (its number from 1, its length without CRLF).
    long_line: tuple[int, int] | None = None
    utf8_headers: bool = False
    #: Send as is (the caller asked for BINARYMIME): no line-ending changes.
    exact: bool = False
    #: ``data`` dot-stuffed for DATA (made while waiting for the server).
    stuffed: bytes | None = None
    #: The XFORWARD commands to send before each MAIL of the message (see Envelope.xforward).
    xforward: list[XForward] = field(default_factory=list)

    @property
    def size(self) -> int | None:
        return None if self.data is None else len(self.data)


@functools.lru_cache(maxsize=256)
def _replaced(params: MailParams, size: int | None, body: BodyType | None, smtputf8: bool) -> MailParams:
    return replace(params, size=size, body=body, smtputf8=smtputf8)


def _planned(params: MailParams, size: int | None, body: BodyType | None, smtputf8: bool) -> MailParams:
    """``params`` with the plan's SIZE, BODY and SMTPUTF8, remembered: a client sending
    one message after another asks for the same few every time, and
    ``dataclasses.replace`` (a dozen frozen fields, set one by one and checked)
    takes about 4 µs where the lookup takes 0.3."""
    try:
        return _replaced(params, size, body, smtputf8)
    except TypeError:  # an unhashable value in params.extra (a list for a tuple): nothing to remember
        return replace(params, size=size, body=body, smtputf8=smtputf8)


def _first_long_line(data: bytes) -> tuple[int, int] | None:
    """(number, length) of the first line over 998 octets in ``data``, whose every line ends with CRLF.

    A line within the limit has its LF at most 999 octets past its start, so
    from each line's start it hops to the *last* LF within that reach (one
    C-level ``rfind``): every line it jumps over is shorter still.  A hop covers
    about a thousand octets of ordinary text, where splitting the content into
    lines made an object of each (three times the time, and the memory).
    """
    start, size, rfind = 0, len(data), data.rfind
    while size - start > _MAX_TEXT_LINE:  # what is left could hold a line too long
        end = rfind(b"\n", start, start + _MAX_TEXT_LINE + 2)
        if end < 0:  # (rare: the error names the line, so find which and how long)
            stop = data.find(b"\r\n", start)
            return data.count(b"\n", 0, start) + 1, (size if stop < 0 else stop) - start
        start = end + 1
    return None


#: Content larger than this is not split into lines to normalise it when its line
#: endings are all CRLF already.  Splitting makes a list of line objects that takes
#: more memory than the content itself, and once the content outgrows the CPU's
#: caches it is also slower than counting (measured: equal near 1 MiB, twice as
#: slow at 4 MiB); below, it is the faster of the two (0.8x at 100 KiB).
_SPLIT_AT_MOST = 1 << 20


def _crlf_only(data: bytes) -> bool:
    """No bare CR and no bare LF in ``data``: three C-level counts."""
    crlf = data.count(b"\r\n")
    return data.count(b"\n") == crlf and data.count(b"\r") == crlf


def _whole_content(data: bytes, policy: BareNewlinePolicy, exact: bool) -> _Content:
    if exact:
        lines = data.split(b"\r\n")
        longest = max(map(len, lines), default=0)
        long_line = None
        if longest > _MAX_TEXT_LINE:  # (rare: the error names it, so find which)
            number = next(number for number, line in enumerate(lines, 1) if len(line) > _MAX_TEXT_LINE)
            long_line = (number, len(lines[number - 1]))
    else:
        if len(data) > _SPLIT_AT_MOST and _crlf_only(data):
            # Large content whose every line ending is already CRLF, as nearly every
            # message's is (the email package writes them so): nothing to rewrite.
            pass
        elif policy is BareNewlinePolicy.NORMALISE:
            # bytes.splitlines() breaks at CRLF, at a bare CR and at a bare LF alike, so
            # joining the lines with CRLF is the NORMALISE rule in two C-level passes.
            data = b"\r\n".join(data.splitlines()) + b"\r\n" if data else b""
        else:
            # REJECT must tell a bare CR or LF from a CRLF, which only the exact scan does.
            endings = LineEndings(policy)
            data = endings.feed(data) + endings.finish()
        # RFC 5322: a message ends with CRLF, and SIZE counts it.
        if data and not data.endswith(b"\r\n"):
            data += b"\r\n"
        long_line = _first_long_line(data)
    # RFC 5322 §2.1: the header section ends at the first empty line.  A message that
    # starts with one has an empty header section: all of it is body (8-bit text there
    # needs 8BITMIME, not SMTPUTF8).  A message with no empty line at all is all header
    # section, as the RFC reads (the body is optional), so its 8-bit text counts as a
    # UTF-8 header (RFC 6532) and needs SMTPUTF8.  Such text is often meant as a body
    # without headers, but guessing which lines are fields is not ours to do; a caller
    # who means a body gives it a leading CRLF.
    if data.startswith(b"\r\n"):
        headers = b""
    else:
        header_end = data.find(b"\r\n\r\n")
        headers = data if header_end < 0 else data[:header_end]
    nul = b"\x00" in data
    return _Content(
        data=data,
        eight_bit=not data.isascii(),
        binary=nul or long_line is not None,
        nul=nul,
        long_line=long_line,
        utf8_headers=not headers.isascii(),
        exact=exact,
    )


#: The header fields that hold addresses (RFC 5322 §3.6.2, §3.6.3, §3.6.6), in lower case.
_ADDRESS_HEADERS = frozenset(
    ("from", "sender", "reply-to", "to", "cc", "resent-from", "resent-sender", "resent-to", "resent-cc")
)


def _has_utf8_address(message: email.message.Message) -> bool:
    """Whether a header field holds an address with UTF-8 in it (a display name does not count).

    Only SMTPUTF8 carries such an address (RFC 6532).  Without it the stdlib's
    generator writes the field as RFC 2047 encoded words (``user@=?utf-8?q?b=C3=BCcher?=.de``,
    or the whole field for a compat32 message), which RFC 2047 §5 forbids in an
    address: the recipient's reader shows it, but no reply reaches it.  Bcc fields
    are left out: they are never sent.
    """
    for name, value in message.items():
        text = str(value)
        if (
            not text.isascii()
            and name.lower() in _ADDRESS_HEADERS
            and any(not address.isascii() for _, address in email.utils.getaddresses([text]))
        ):
            return True
    return False


#: Headers that name hidden recipients, which no recipient may see (RFC 5322 §3.6.3).
_HIDDEN_HEADERS = ("Bcc", "Resent-Bcc")


#: The SMTP policy for a server without 8BITMIME: 8-bit parts become base64 or quoted-printable.
_SMTP_7BIT = SMTP.clone(cte_type="7bit")


def _serialise(message: email.message.Message, utf8: bool, seven_bit: bool = False) -> bytes:
    if any(name in message for name in _HIDDEN_HEADERS):
        # Sent, a Bcc line would show every recipient who else got the message (smtplib's
        # send_message drops it too).  A copy: the caller's message keeps its headers
        # (deleting one makes a new header list, so the shallow copy is enough).
        message = copy.copy(message)
        for name in _HIDDEN_HEADERS:
            del message[name]
    if isinstance(message.policy, EmailPolicy):
        # The stdlib generator with the SMTP policy writes CRLF and RFC 2047 headers;
        # SMTPUTF8 writes UTF-8 headers, only for a session that uses SMTPUTF8.
        return message.as_bytes(policy=_SMTP_7BIT if seven_bit else SMTPUTF8 if utf8 else SMTP)
    # A compat32 message (MIMEText, MIMEMultipart, message_from_bytes): its own policy
    # with CRLF, as smtplib's send_message writes it.  Not the SMTP policy: that cannot
    # write the email.header.Header values such code sets (it has no UTF-8 mode either;
    # a Header encodes itself per RFC 2047).
    if seven_bit:
        return message.as_bytes(policy=message.policy.clone(linesep="\r\n", cte_type="7bit"))
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def _not_bytes(piece: object) -> str:
    """Why a chunk that is not bytes cannot be sent, naming its type."""
    text = f"message chunks must be bytes, not {type(piece).__name__}"
    return text + " (a file opened in text mode? open it with 'rb')" if isinstance(piece, str) else text


def _stream(message: object) -> Iterator[bytes]:
    """An iterable of chunks as a stream, refused now if its first chunk is not bytes.

    A text-mode file or a generator of str would otherwise be found out only
    after DATA's 354, and the message abandoned mid-content (RFC 5321 has no way
    to take back a DATA); checked here, it fails alone, before its MAIL.
    """
    try:
        stream = iter(cast("Iterable[bytes]", message))
    except TypeError:
        raise LocalProtocolError(
            f"a message is bytes (or chunks of bytes, or an email.message.Message), not {type(message).__name__}"
        ) from None
    try:
        first = next(stream, None)
    except Exception as exc:  # the caller's file or generator failed: this message only, nothing sent yet
        raise SMTPTransientError(f"reading the message failed: {exc!r}") from exc
    if first is None:
        return stream
    if not isinstance(first, (bytes, bytearray, memoryview)):
        raise LocalProtocolError(_not_bytes(first))
    return itertools.chain((first,), stream)


# --- internal control flow --------------------------------------------------------------------


class _Wait:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:  # pragma: no cover - for debugging
        return self.name


_INPUT = _Wait("INPUT")
_FLUSH = _Wait("FLUSH")
_TLS = _Wait("TLS")

_Steps = Generator[_Wait, None, None]

#: A message ready to go: its content, its MAIL, its RCPTs in batches (RCPTMAX), BDAT or not.
_Plan: TypeAlias = "tuple[_Content, Mail, list[list[Rcpt]], bool]"


def _server_error(mechanism: ClientMechanism) -> bytes | None:
    """What an OAuth server said of the token before refusing it (its error
    challenge, RFC 7628 §3.2.2): an expired token reads differently from a
    missing scope.  None for other mechanisms."""
    error = getattr(mechanism, "server_error", None)
    return error if isinstance(error, bytes) and error else None


def _offered_xforward(xforward: XForward | None, caps: Capabilities) -> list[XForward]:
    """The XFORWARD commands that say ``xforward``'s attributes the server's XFORWARD line
    lists, each within a command line; none if none is left."""
    offered = caps.params("XFORWARD")
    if xforward is None or offered is None:
        return []
    names = {name.upper() for name in offered}
    attributes = {name.lower(): value for name, value in xforward.attributes.items() if name in names}
    return split_xforward(XForward(**attributes)) if attributes else []


def _told(error: bytes | None) -> str:
    """``error`` for the failure's message; empty without one."""
    if error is None:
        return ""
    # Printable ASCII and bounded, as any peer's words we repeat: no control may reach a log line.
    return f" (the server said: {shown(error.decode('utf-8', 'replace'), 200)})"


def _over_recipient_limit(reply: Reply) -> bool:
    """A RCPT refused because the transaction has as many recipients as the server takes.

    RFC 5321 §4.5.3.1.10 has the server say it with 452 (RFC 821 used 552) and
    the client send the rest in further transactions; RFC 3463 names it X.5.3
    ("should normally result in the segmentation of the message").
    """
    if reply.code not in (452, 552):
        return False
    if reply.enhanced is not None:
        return reply.enhanced[1:] == ".5.3"
    return "too many recipients" in " ".join(reply.text).lower()


def _mail_refusal(mail: Mail, reply: Reply) -> SMTPDeliveryError:
    return error_for(reply, mail, f"MAIL FROM:<{mail.sender}> refused")


def _rcpt_refusal(rcpt: Rcpt, reply: Reply) -> SMTPDeliveryError:
    what = f"RCPT TO:<{rcpt.recipient}> refused"
    if _over_recipient_limit(reply):
        # A 552 too (RFC 821's code for it): RFC 5321 §4.5.3.1.10 says to take it as a 452.
        return SMTPTransientError(f"{what}: {reply}", reply, rcpt)
    return error_for(reply, rcpt, what)


def _delivered_or_not(rcpt: Rcpt, rcpt_reply: Reply | None, final: Reply, command: Event) -> RecipientOutcome:
    """An accepted recipient's outcome, from the reply after the content (``command``'s)."""
    refusal = None if final.is_positive else error_for(final, command, f"message to <{rcpt.recipient}> refused")
    return RecipientOutcome(rcpt.recipient, rcpt_reply, final, refusal)


class _Progress:
    """How far the message being sent got, for its outcome if the session ends midway.

    A 421 or a lost connection in the middle of a transaction must not throw
    away the replies already in: a recipient refused with 550 before the 421 is
    refused for good (a relay bounces it rather than try it again, and again),
    and in LMTP a recipient whose own reply came before is delivered.
    """

    __slots__ = ("decided", "ended", "final", "mail", "mail_reply", "positions", "rcpt_replies", "rcpts")

    def __init__(self, decided: list[RecipientOutcome | None]) -> None:
        #: Each recipient's outcome, in the envelope's order, once a transaction decided it.
        self.decided = decided
        # The transaction under way (set by _transaction): its MAIL and RCPTs, where
        # those stand among the message's recipients, and their replies so far.
        self.mail: Mail | None = None
        self.rcpts: list[Rcpt] = []
        self.positions: list[int] = []
        self.mail_reply: Reply | None = None
        self.rcpt_replies: list[Reply | None] = []
        #: The replies after the content so far: one in SMTP, one per accepted recipient in LMTP.
        self.final: list[Reply] = []
        #: The command that ended the content (EndOfMessage, or BDAT LAST) once it was sent.
        self.ended: Event | None = None

    def outcome(self, addresses: Sequence[str], error: SMTPDeliveryError) -> MessageOutcome:
        """The message's outcome: what the replies decided, ``error`` for every other recipient."""
        results = list(self.decided)
        mail = self.mail
        mail_error = None
        if mail is not None and self.mail_reply is not None and not self.mail_reply.is_positive:
            mail_error = _mail_refusal(mail, self.mail_reply)
        unknown = None
        if self.ended is not None and error.reply is None:
            # The whole message went out and no reply came back (a 421 is a reply: not
            # taken): the server may have it (RFC 5321 §4.5.3.2.6), which a caller must
            # tell from a message never sent.  ``command`` is the end whose reply is missing.
            unknown = SMTPTransientError(
                f"{error}, after the whole message was sent: it may have been delivered, "
                "and sending it again may deliver it twice",
                None,
                self.ended,
            )
            unknown.__cause__ = error.__cause__ or error
        accepted = 0
        for position, rcpt, reply in zip(self.positions, self.rcpts, self.rcpt_replies, strict=True):
            outcome = RecipientOutcome(rcpt.recipient, reply, error=mail_error or error)
            if mail_error is None and reply is not None:
                if not reply.is_positive:
                    outcome = RecipientOutcome(rcpt.recipient, reply, error=_rcpt_refusal(rcpt, reply))
                else:
                    if accepted < len(self.final):  # (LMTP: its own reply came before the end)
                        outcome = _delivered_or_not(rcpt, reply, self.final[accepted], EndOfMessage())
                    elif unknown is not None:
                        outcome = RecipientOutcome(rcpt.recipient, reply, error=unknown)
                    accepted += 1
            results[position] = outcome
        # The recipients of the transactions the session never reached.
        outcomes = tuple(
            item if item is not None else RecipientOutcome(address, error=error)
            for item, address in zip(results, addresses, strict=True)
        )
        if any(item.delivered for item in outcomes):
            return MessageOutcome(outcomes, None)
        if unknown is not None and any(item.error is unknown for item in outcomes):
            return MessageOutcome(outcomes, unknown)
        if all(item.error is not error for item in outcomes):
            # Every recipient has its own refusal (or MAIL's) from the replies before
            # the session ended.  The message's error is theirs, as when its
            # transaction ends normally: the session's (a 421, a lost connection)
            # would say to try again what was refused for good.
            return MessageOutcome(outcomes, _every_recipient_refused(outcomes))
        return MessageOutcome(outcomes, error)


def _every_recipient_refused(refused: Sequence[RecipientOutcome]) -> SMTPDeliveryError:
    """A message's error when no recipient took it: permanent unless every refusal was transient."""
    errors = [item.error for item in refused if item.error is not None]
    if all(item is errors[0] for item in errors):
        return errors[0]  # MAIL's refusal, which every recipient shares
    kind = SMTPTransientError if all(item.transient for item in errors) else SMTPPermanentError
    last = errors[-1]
    # The reply in the text: a caller who logs the exception (not each
    # recipient's) must still see why ("504 5.5.2 ... need fully-qualified hostname").
    distinct = len({str(item.reply) for item in errors})
    text = f"every recipient was refused: {last.reply}"
    if distinct > 1:
        text = f"every recipient was refused ({distinct} different replies; the last: {last.reply})"
    return kind(text, last.reply, last.command)


def _in_ascii(envelope: Envelope) -> Envelope:
    """``envelope`` for a server without SMTPUTF8: its internationalised domains as
    A-labels (see ``ascii_form``), or as it is when an address has no exact ASCII
    form (its plan then fails: the message needs SMTPUTF8)."""
    sender = ascii_form(envelope.sender)
    addresses = [ascii_form(item.address) for item in envelope.recipient_list]
    if sender is None or None in addresses:
        return envelope
    recipients = [
        replace(item, address=address)
        for item, address in zip(envelope.recipient_list, cast("list[str]", addresses), strict=True)
    ]
    return Envelope(sender, recipients, envelope.params, envelope.xforward)


def _as_given(outcome: MessageOutcome, envelope: Envelope) -> MessageOutcome:
    """``outcome`` naming each recipient as the caller did (its domain may have gone as A-labels)."""
    given = [item.address for item in envelope.recipient_list]
    if all(item.recipient == address for item, address in zip(outcome.recipients, given, strict=True)):
        return outcome
    recipients = tuple(
        replace(item, recipient=address) for item, address in zip(outcome.recipients, given, strict=True)
    )
    return replace(outcome, recipients=recipients)


def _untried(cause: SMTPDeliveryError) -> SMTPTransientError:
    """The error of a message the session never reached, because another message ended it."""
    error = SMTPTransientError(f"the session ended before this message was tried: {cause}")
    error.__cause__ = cause
    return error


class _SourceError(Exception):
    """Reading a streamed message failed (the caller's file or generator raised)."""


class _Abort(Exception):
    """Ends the session: ``error`` is its outcome; ``quit`` says QUIT may still be sent."""

    def __init__(self, error: SMTPDeliveryError, quit: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.quit = quit


class ClientDriver:
    """Sends messages over one session; see the module doc for the adapter loop.

    ``messages`` are (:class:`Envelope`, message) pairs, sent in order.
    ``credentials`` enables AUTH; ``mechanisms`` adds SASL mechanisms by name
    (list their names in ``config.auth_mechanisms`` too).
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        messages: Iterable[tuple[Envelope, Message]] = (),
        credentials: Credentials | None = None,
        mechanisms: Mapping[str, Callable[[Credentials], ClientMechanism]] | None = None,
    ) -> None:
        self.config = config or ClientConfig()
        self.connection = ClientConnection(self.config)
        self._messages = list(messages)
        for item in self._messages:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Envelope)):
                raise LocalProtocolError(f"messages are (Envelope, message) pairs, not {type(item).__name__}")
        self._credentials = credentials
        self._mechanisms = mechanisms
        self._outcomes: list[MessageOutcome] = []
        # Messages prepared ahead of their turn (see _send_ahead): index -> plan or refusal.
        self._plans: dict[int, _Plan | SMTPDeliveryError] = {}
        # The index of the message whose first MAIL/RCPT/DATA are already written.
        self._sent_ahead: int | None = None
        self._quit_sent = False
        # Every message has its outcome and only QUIT's reply is left (see abort).
        self._quitting = False
        # The message being sent, while its transactions are under way (see _Progress).
        self._progress: _Progress | None = None
        self._error: SMTPDeliveryError | None = None
        # The EHLO name when the config has none (see set_local_address).
        self._local_literal = "localhost"
        self._wait: _Wait | None = None
        self._steps = self._session()
        self._resume()

    # --- the adapter's side ------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """The session is over: close the connection and read :attr:`result`."""
        return self._wait is None

    @property
    def wants_tls(self) -> bool:
        """Do the TLS handshake now (``bytes_to_send()`` is empty), then call :meth:`tls_established`."""
        return self._wait is _TLS

    @property
    def timeout(self) -> Timeout:
        """The bound on the current wait (RFC 5321 §4.5.3.2)."""
        return self.connection.timeout

    @property
    def replies_received(self) -> int:
        """How many replies have been read: a new wait for :attr:`timeout` begins when this changes."""
        return self.connection.replies_received

    def set_local_address(self, address: str) -> None:
        """The connection's local IP address, from the adapter once connected.

        With no ``config.local_hostname``, EHLO names the client by it as an
        address literal (``EHLO [192.0.2.7]``), as smtplib does on a host without
        a fully qualified name, rather than "localhost", which servers that check
        the name refuse.  What is not an IP address (a Unix socket's path) is
        ignored.  Call it before the first :meth:`receive`: the EHLO follows the
        greeting at once.
        """
        if self.connection.replies_received:
            raise LocalProtocolError("set_local_address() must come before the greeting is received")
        with contextlib.suppress(ValueError):
            self._local_literal = address_literal(address)

    def bytes_to_send(self) -> bytes:
        """The next bytes to write; ``b""`` means read (or do TLS, or stop)."""
        conn = self.connection
        out = conn.data_to_send()
        while not out and self._wait is _FLUSH:
            self._resume()
            out = conn.data_to_send()
        return out

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes read from the server (copied); ``b""`` when it closed the connection."""
        self.connection.receive_data(data)
        if self._wait is _INPUT:
            self._resume()

    def tls_established(self) -> None:
        """The TLS handshake :attr:`wants_tls` asked for is done."""
        if self._wait is not _TLS:
            raise LocalProtocolError("tls_established() is only valid while wants_tls is true")
        self.connection.tls_established()
        self._resume()

    def abort(self, reason: str, cause: BaseException | None = None) -> None:
        """End the session now for a failure the adapter saw itself.

        A read or write that timed out, a connection that broke, a TLS handshake
        that failed: the connection is unusable, so nothing more is sent (not
        even QUIT) and no more content is taken from the messages (a streamed file
        is not read to its end).  Every message without an outcome gets an
        ``SMTPTransientError`` carrying ``reason`` (and ``cause`` as its
        ``__cause__``): the same attempt may well work later.
        """
        if self.done:
            return
        # Closing the generator unwinds the dialogue where it stands; it reads
        # and sends nothing more.
        self._steps.close()
        self._wait = None
        if self._quitting:
            # Only QUIT's reply was left: a connection lost now loses no mail, as a
            # server that hangs up instead of answering loses none (see _quit).  An
            # error would have a caller send again what was delivered.
            return
        error = SMTPTransientError(reason)
        error.__cause__ = cause
        self._fail(error)

    @property
    def result(self) -> SessionOutcome:
        """Every message's outcome; only once :attr:`done`."""
        if not self.done:
            raise LocalProtocolError("the session is not over yet")
        return SessionOutcome(
            tuple(self._outcomes), self._error, self.connection.capabilities, self.connection.tls_active
        )

    def _resume(self) -> None:
        try:
            self._wait = next(self._steps)
        except StopIteration:
            self._wait = None

    # --- dialogue helpers --------------------------------------------------------------------------

    def _reply(self) -> Generator[_Wait, None, Reply]:
        """The next reply; a 421 or the end of the connection ends the session."""
        conn = self.connection
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                yield _INPUT
                continue
            if isinstance(event, Reply):
                if event.code == 421:
                    raise _Abort(
                        SMTPTransientError(f"the server is closing the session: {event}", event, conn.last_command)
                    )
                return event
            if isinstance(event, ConnectionClosed):  # pragma: no cover - a 421 or an error comes first
                raise _Abort(SMTPTransientError("the server closed the connection"))
            raise AssertionError(f"unexpected {event!r} while waiting for a reply")  # pragma: no cover

    def _command(self, event: Event) -> Generator[_Wait, None, Reply]:
        self.connection.send(event)
        return (yield from self._reply())

    def _session(self) -> _Steps:
        try:
            yield from self._open()
            for index, (envelope, message) in enumerate(self._messages):
                outcome = yield from self._deliver(index, envelope, message)
                self._outcomes.append(_as_given(outcome, envelope))
            yield from self._quit()
        except _Abort as abort:
            self._fail(abort.error)
            if abort.quit:
                yield from self._quit()
        except RemoteProtocolError as exc:
            error: SMTPDeliveryError = SMTPTransientError(f"the server broke the protocol: {exc}")
            error.__cause__ = exc
            self._fail(error)
        except LocalProtocolError as exc:
            # Streamed content turned out unsendable after part of it went out:
            # the message is abandoned with the connection, never ended with ".".
            error = SMTPPermanentError(f"message abandoned mid-content: {exc}")
            error.__cause__ = exc
            self._fail(error, _untried(error))
        except _SourceError as exc:
            # The same, for a stream that could not be read: whatever went wrong
            # there (a disk error, a network file) may not go wrong next time.
            cause = exc.__cause__
            error = SMTPTransientError(f"message abandoned mid-content: reading it failed: {cause!r}")
            error.__cause__ = cause
            self._fail(error, _untried(error))

    def _fail(self, error: SMTPDeliveryError, untried: SMTPDeliveryError | None = None) -> None:
        """The session ended early: every message without an outcome gets ``error``
        (but for what the replies to the one under way already decided).

        ``untried``, when given, is for the messages after the one under way
        instead: when only that one's content was at fault, the others were never
        offered to the server, and nothing permanent is known about them.
        """
        self._error = error
        progress, self._progress = self._progress, None
        for envelope, _ in self._messages[len(self._outcomes) :]:
            addresses = [r.address for r in envelope.recipient_list]
            if progress is not None:
                self._outcomes.append(_as_given(progress.outcome(addresses, error), envelope))
                progress = None
                continue
            later = untried or error
            self._outcomes.append(MessageOutcome(tuple(RecipientOutcome(a, error=later) for a in addresses), later))

    def _quit(self) -> _Steps:
        self._quitting = True
        conn = self.connection
        if conn.closed:  # pragma: no cover - defensive: every caller has an open connection
            return
        # If the server hangs up first, nothing is lost.
        with contextlib.suppress(_Abort, RemoteProtocolError, LocalProtocolError):
            if self._quit_sent:  # already pipelined behind the last message
                yield from self._reply()
            else:
                yield from self._command(Quit())

    # --- session set-up ----------------------------------------------------------------------------

    def _open(self) -> _Steps:
        conn = self.connection
        greeting = yield from self._reply()
        if greeting.code != 220:
            raise _Abort(error_for(greeting, None, "the server refused the session"), quit=True)
        yield from self._hello()
        policy = self.config.starttls
        if not conn.tls_active and policy is not TlsPolicy.OFF:
            caps = conn.capabilities
            assert caps is not None
            if caps.starttls:
                reply = yield from self._command(StartTls())
                if reply.code == 220:
                    handshake = conn.next_event()
                    assert isinstance(handshake, TlsHandshake)
                    yield _TLS
                    yield from self._hello()
                elif policy is TlsPolicy.REQUIRED:
                    raise _Abort(error_for(reply, StartTls(), "STARTTLS refused and TLS is required"), quit=True)
            elif policy is TlsPolicy.REQUIRED:
                raise _Abort(SMTPNotSupportedError("the server does not offer STARTTLS and TLS is required"), quit=True)
        xclient = self.config.xclient
        if xclient is not None:
            yield from self._speak_for(xclient)
            if xclient.login not in (None, XClient.UNAVAILABLE):
                return  # the LOGIN is the authentication: an AUTH now would get 503 (already authenticated)
        if self._credentials is not None:
            yield from self._authenticate(self._credentials)

    def _speak_for(self, xclient: XClient) -> _Steps:
        """XCLIENT, then EHLO again: the session is the named client's from here on."""
        caps = self.connection.capabilities
        assert caps is not None
        offered = caps.params("XCLIENT")
        # Transient, as a refusal is below: a server that does not take XCLIENT (or
        # what it says) is a setting to fix between the proxy and it, and the mail
        # must wait for the fix, not bounce.
        if offered is None:
            raise _Abort(SMTPTransientError("the server does not offer XCLIENT"), quit=True)
        missing = set(xclient.attributes) - {name.upper() for name in offered}
        if missing:
            raise _Abort(
                SMTPTransientError(f"the server's XCLIENT does not take {', '.join(sorted(missing))}"), quit=True
            )
        reply = yield from self._command(xclient)
        if reply.code == 250:
            return  # Postfix before 2.3: the attributes are taken, the session goes on (no new greeting)
        if reply.code != 220:
            raise _Abort(SMTPTransientError(f"XCLIENT refused: {reply}", reply, xclient), quit=True)
        yield from self._hello(xclient.helo)

    def _hello(self, name: str | None = None) -> _Steps:
        hostname = self.config.local_hostname or self._local_literal
        if name is not None and name != XClient.UNAVAILABLE:
            # After XCLIENT: the named client's own EHLO name, which the server would
            # otherwise replace with ours (Postfix keeps the last one), if EHLO may carry
            # it (a name in UTF-8 may not: EHLO is ASCII).
            with contextlib.suppress(LocalProtocolError):
                write_command(Hello(name))
                hostname = name
        first = Hello(hostname, "LHLO" if self.config.lmtp else "EHLO")
        reply = yield from self._command(first)
        if reply.is_positive:
            return
        if not self.config.lmtp and reply.code in (500, 502):
            # RFC 5321 §3.2: an old server that does not know EHLO.
            fallback = Hello(hostname, "HELO")
            reply = yield from self._command(fallback)
            if reply.is_positive:
                return
            raise _Abort(error_for(reply, fallback, "HELO refused"), quit=True)
        raise _Abort(error_for(reply, first, f"{first.verb} refused"), quit=True)

    def _authenticate(self, credentials: Credentials) -> _Steps:
        """AUTH with the first usable mechanism; after a 5xx, with the next one.

        A 5xx to one mechanism may be about that mechanism only: a server that
        keeps some passwords hashed answers CRAM-MD5 with 535 and PLAIN with 235;
        534 and 538 say a mechanism is too weak or needs TLS.  So, as smtplib
        does, each usable mechanism of ``config.auth_mechanisms`` the server offers
        is tried in turn, each once: a few attempts stay under every server's
        error limit.  A token is the exception: a 535 to it is about the token,
        so the other token mechanism is not tried with it.  A 4xx (454: a
        temporary failure) ends it at once, transient.  Only over TLS: see below.
        """
        conn = self.connection
        caps = conn.capabilities
        assert caps is not None
        if not (conn.tls_active or self.config.allow_insecure_auth):
            raise _Abort(SMTPNotSupportedError("refusing to send credentials without TLS"), quit=True)
        candidates = usable_mechanisms(caps.auth_mechanisms, self.config.auth_mechanisms, credentials, self._mechanisms)
        if not candidates:
            offered = " ".join(caps.auth_mechanisms) or "none"
            raise _Abort(SMTPNotSupportedError(f"no usable AUTH mechanism (server offers: {offered})"), quit=True)
        if not conn.tls_active:
            # Without TLS (allow_insecure_auth) only the strongest is tried: else a man
            # in the middle answers 535 to CRAM-MD5 and reads the password that PLAIN
            # or LOGIN then sends (a downgrade smtplib allows).
            candidates = candidates[:1]
        refusals: list[str] = []
        token_refused = False
        server_error: bytes | None = None
        for name, factory in candidates:
            if token_refused and name in TOKEN_MECHANISMS:
                # A 535 to a token is about the token, which the next token mechanism
                # would carry again: one more failed login on the server, nothing learnt.
                continue
            try:
                mechanism = factory(credentials)
                initial = mechanism.initial_response()
            except LocalProtocolError as exc:
                raise _Abort(SMTPNotSupportedError(f"cannot use these credentials: {exc}"), quit=True) from exc
            reply, command = yield from self._sasl_exchange(mechanism, initial)
            if reply.is_positive:
                return
            said = _server_error(mechanism)
            text = f"authentication with {name} failed: {reply}{_told(said)}"
            if not reply.is_permanent:
                raise _Abort(SMTPTransientError(text, reply, command), quit=True)
            refusals.append(f"{name}: {reply}{_told(said)}")
            server_error = said or server_error
            token_refused = token_refused or (name in TOKEN_MECHANISMS and reply.code == 535)
        if len(refusals) > 1:
            text = f"authentication failed with every mechanism tried ({'; '.join(refusals)})"
        raise _Abort(SMTPAuthenticationError(text, reply, command, server_error), quit=True)

    def _sasl_exchange(
        self, mechanism: ClientMechanism, initial: bytes | None
    ) -> Generator[_Wait, None, tuple[Reply, Event]]:
        """One AUTH exchange; its final reply and the command that got it."""
        withheld = None
        if initial is not None and len(f"AUTH {mechanism.name} ") + 4 * -(-len(initial) // 3) + 2 > MAX_COMMAND_LINE:
            # RFC 4954 §4: an initial response that would make the AUTH line longer than a
            # command line is left out; it answers the server's first (empty) challenge.
            withheld, initial = initial, None
        command: Event = Auth(mechanism.name, initial)
        reply = yield from self._command(command)
        challenges = 0
        while reply.code == 334:
            challenges += 1
            try:
                if challenges > _MAX_CHALLENGES:
                    # A mechanism of the application's that answers every challenge, to a
                    # server that always sends another: cancel, and the exchange ends.
                    raise SaslError(f"more than {_MAX_CHALLENGES} challenges")
                if withheld is not None:
                    command, withheld = AuthResponse(withheld), None
                else:
                    challenge = base64.b64decode(reply.text[0].encode("ascii"), validate=True)
                    command = AuthResponse(mechanism.respond(challenge))
            except (binascii.Error, UnicodeEncodeError, ValueError, SaslError):
                command = AuthResponse(cancel=True)
            reply = yield from self._command(command)
        return reply, command

    # --- one message -------------------------------------------------------------------------------

    def _deliver(self, index: int, envelope: Envelope, message: Message) -> Generator[_Wait, None, MessageOutcome]:
        plan = self._plan_for(index)
        if isinstance(plan, SMTPDeliveryError):
            return MessageOutcome(tuple(RecipientOutcome(r.address, error=plan) for r in envelope.recipient_list), plan)
        content, mail, batches, use_bdat = plan
        sent_ahead, self._sent_ahead = self._sent_ahead == index, None
        assert len(batches) == 1 or content.data is not None  # (see _plan_for)
        count = len(envelope.recipient_list)
        decided: list[RecipientOutcome | None] = [None] * count
        progress = self._progress = _Progress(decided)
        # Each transaction's recipients, with where they stand in the envelope.
        if len(batches) == 1:
            pending = [(list(range(count)), batches[0])]
        else:
            pending = []
            for start, batch in zip(range(0, count, len(batches[0])), batches, strict=True):
                pending.append((list(range(start, start + len(batch))), batch))
        first_error: SMTPDeliveryError | None = None
        number = 0
        while number < len(pending):
            positions, batch = pending[number]
            progress.positions = positions
            outcomes, batch_error, over = yield from self._transaction(
                mail, batch, content, use_bdat, sent=sent_ahead and number == 0, ahead=number == len(pending) - 1
            )
            for position, outcome in zip(positions, outcomes, strict=True):
                decided[position] = outcome
            first_error = first_error or batch_error
            number += 1
            if over and any(item.delivered for item in outcomes):
                # The server's recipient limit (RFC 5321 §4.5.3.1.10, RFC 3463 X.5.3):
                # the recipients over it go in a transaction of their own, next.
                pending.insert(number, ([positions[i] for i in over], [batch[i] for i in over]))
        self._progress = None
        results = cast("tuple[RecipientOutcome, ...]", tuple(decided))  # every one decided by now
        if any(item.delivered for item in results):
            first_error = None
        return MessageOutcome(results, first_error)

    def _plan_for(self, index: int) -> _Plan | SMTPDeliveryError:
        """Message ``index`` ready to send (made once), or why it cannot be sent."""
        plan = self._plans.pop(index, None)
        if plan is not None:
            return plan
        envelope, message = self._messages[index]
        caps = self.connection.capabilities
        assert caps is not None
        try:
            if envelope.needs_smtputf8 and not caps.smtputf8 and not envelope.params.smtputf8:
                envelope = _in_ascii(envelope)
            content = self._prepare(envelope, message, caps)
            limit = caps.rcpt_max
            if content.stream is not None and limit is not None and len(envelope.recipient_list) > limit:
                # The content goes out once per transaction (the server's RCPTMAX), so a
                # stream is read whole now, before any of it is planned: BODY, SIZE and
                # every check see all of it, as they see bytes given whole.
                data = b"".join(self._pieces(content))
                content = _whole_content(data, self.config.bare_newlines, content.exact)
            params, use_bdat = self._plan(envelope, content, caps)
            # The Envelope validated the sender and every recipient when it was made,
            # and replace() the new parameters: the events need no second check.
            mail = unchecked_mail(envelope.sender, params)
            rcpts = [unchecked_rcpt(item.address, item.params) for item in envelope.recipient_list]
            # But a parameter of the caller's (an extra with a space in it, a line too
            # long even for its extensions) shows only when the command is written:
            # written once now, so that such a message fails alone, before any of it
            # is sent, and never mid-session.  (Without any, nothing can fail there.)
            if envelope.params is not _NO_MAIL_PARAMS:
                write_command(mail)
            for rcpt, item in zip(rcpts, envelope.recipient_list, strict=True):
                if item.params is not _NO_RCPT_PARAMS:
                    write_command(rcpt, params.smtputf8)
        except (SMTPDeliveryError, LocalProtocolError) as exc:
            error = exc if isinstance(exc, SMTPDeliveryError) else SMTPPermanentError(f"cannot send: {exc}")
            if error is not exc:
                error.__cause__ = exc
            return error
        except _SourceError as exc:  # (reading a stream whole, above: nothing of it was sent)
            error = SMTPTransientError(f"cannot send: reading the message failed: {exc.__cause__!r}")
            error.__cause__ = exc.__cause__
            return error
        limit = caps.rcpt_max or len(rcpts)
        if content.data is not None and not use_bdat:
            content.stuffed = stuff(content.data)
        content.xforward = _offered_xforward(envelope.xforward, caps)
        return content, mail, [rcpts[i : i + limit] for i in range(0, len(rcpts), limit)], use_bdat

    def _send_ahead(self) -> _Steps:
        """Write what follows a message's end in the same group, before its reply comes.

        RFC 2920 §3.1 lets message content open a group, so with PIPELINING the
        next message's MAIL, RCPT and DATA (or the session's QUIT) go out with
        the end of this one: a message costs one round trip instead of two.
        Their replies are read in order, after this message's own; whatever this
        message's fate, the next transaction stands on its own.
        """
        caps = self.connection.capabilities
        if caps is None or not (caps.pipelining and self.config.use_pipelining):
            return
        index = len(self._outcomes) + 1
        if index == len(self._messages):
            self.connection.send(Quit())
            self._quit_sent = True
            return
        plan = self._plans[index] = self._plan_for(index)
        if isinstance(plan, SMTPDeliveryError):
            return  # nothing to send for it; it gets its outcome in turn
        content, mail, batches, use_bdat = plan
        self._send_envelope(content.xforward, mail, batches[0], use_bdat)
        self._sent_ahead = index
        yield from self._prepare_while_waiting(index + 1)

    def _prepare_while_waiting(self, index: int) -> _Steps:
        """Send what is queued, then prepare message ``index`` before reading the replies.

        Normalising a large message is most of a client's work; done here, it
        overlaps the server's handling of the group just sent instead of
        following it.  Nothing of the message is sent or read from a stream.
        """
        yield _FLUSH
        if index < len(self._messages) and index not in self._plans:
            self._plans[index] = self._plan_for(index)

    def _send_envelope(self, xforward: list[XForward], mail: Mail, rcpts: list[Rcpt], use_bdat: bool) -> None:
        """XFORWARD, MAIL, every RCPT and (for DATA) DATA, in one group (RFC 2920)."""
        conn = self.connection
        for command in xforward:
            conn.send(command)
        conn.send(mail)
        for rcpt in rcpts:
            conn.send(rcpt)
        if not use_bdat:
            conn.send(Data())

    def _prepare(self, envelope: Envelope, message: Message, caps: Capabilities) -> _Content:
        exact = envelope.params.body == "BINARYMIME"
        policy = self.config.bare_newlines
        if isinstance(message, email.message.Message):  # (before iter(): it iterates over header names)
            try:
                utf8_address = _has_utf8_address(message)
                utf8 = (envelope.needs_smtputf8 or utf8_address) and caps.smtputf8
                data = _serialise(message, utf8)
            except Exception as exc:
                # The stdlib's generator raises what it meets: UnicodeEncodeError for
                # a str payload with no charset, LookupError for an unknown charset,
                # and so on.  That message fails alone; the session goes on.
                raise LocalProtocolError(f"the email package cannot write this message: {exc!r}") from exc
            content = _whole_content(data, policy, exact)
            # Without SMTPUTF8 the stdlib writes such an address as an RFC 2047 word,
            # which no reader takes for an address: the message needs SMTPUTF8 instead.
            content.utf8_headers = content.utf8_headers or utf8_address
            if content.eight_bit and not (caps.eight_bit_mime or content.utf8_headers or envelope.needs_smtputf8):
                # RFC 6152 §3 lets a client convert 8-bit content for a server without
                # 8BITMIME.  Bytes are never rewritten (a relay passes on what it got), but
                # a structured message costs nothing to convert: the stdlib writes its
                # 8-bit parts as base64 or quoted-printable.  A part it cannot convert
                # (8-bit text with no charset) leaves the message to be refused as before.
                with contextlib.suppress(Exception):  # (whatever the generator raises: see above)
                    seven_bit = _whole_content(_serialise(message, utf8, seven_bit=True), policy, exact)
                    if not seven_bit.eight_bit:
                        content = seven_bit
            return content
        if isinstance(message, (bytes, bytearray, memoryview)):
            return _whole_content(bytes(message), policy, exact)
        if isinstance(message, str):
            raise LocalProtocolError("a message is bytes (or chunks of bytes, or an email.message.Message), not str")
        return _Content(data=None, stream=_stream(message), exact=exact)

    def _plan(self, envelope: Envelope, content: _Content, caps: Capabilities) -> tuple[MailParams, bool]:
        """The MAIL parameters and DATA-or-BDAT, or SMTPNotSupportedError."""
        params = envelope.params
        if params.requiretls and not self.connection.tls_active:
            # RFC 8689 §4.2.1: such a message MUST NOT go over a connection that is not
            # TLS-protected, whatever the server advertises: a REQUIRETLS offered in
            # plaintext is exactly what a STARTTLS-stripping attacker would show.
            raise SMTPNotSupportedError(
                "the message requires TLS (REQUIRETLS) and the session is not TLS-protected: "
                "use STARTTLS (starttls=TlsPolicy.REQUIRED) or implicit TLS"
            )
        body = params.body
        binary_ok = caps.chunking and caps.binarymime
        if body is None:
            # Lines over 998 octets go as they are only when asked (send_long_lines) and
            # the server cannot take them as BINARYMIME: RFC 5322 §2.1.1 forbids them
            # in text, and servers refuse, cut or fold them.
            if content.nul or (content.binary and (binary_ok or not self.config.send_long_lines)):
                body = "BINARYMIME"
            elif content.eight_bit or (content.data is None and caps.eight_bit_mime):
                body = "8BITMIME"
        if body == "BINARYMIME" and not binary_ok:
            if content.long_line is not None and not content.nul:
                number, length = content.long_line
                raise SMTPNotSupportedError(
                    f"line {number} is {length} octets; RFC 5322 allows 998 in a text line: sent as it is, it "
                    "needs BODY=BINARYMIME, and the server lacks CHUNKING or BINARYMIME (wrap the line, encode "
                    "the part as quoted-printable or base64, or set ClientConfig(send_long_lines=True))"
                )
            raise SMTPNotSupportedError(
                "the message needs BODY=BINARYMIME (it has NUL or lines over 998 octets), "
                "which needs CHUNKING and BINARYMIME"
            )
        if body == "8BITMIME" and not caps.eight_bit_mime:
            raise SMTPNotSupportedError("the message has 8-bit content and the server lacks 8BITMIME")
        smtputf8 = params.smtputf8 or envelope.needs_smtputf8 or content.utf8_headers
        if smtputf8 and not caps.smtputf8:
            raise SMTPNotSupportedError("the message needs SMTPUTF8 (UTF-8 address or header), which the server lacks")
        size = params.size
        if content.size is not None and caps.has("SIZE"):
            size = content.size
            limit = caps.max_message_size
            if limit is not None and size > limit:
                raise SMTPNotSupportedError(f"the message is {size} octets; the server's limit is {limit}")
        if size is not None and not caps.has("SIZE"):
            size = None
        params = _planned(params, size, body, smtputf8)
        missing = set(required_extensions("MAIL", params))
        for recipient in envelope.recipient_list:
            missing |= required_extensions("RCPT", recipient.params)
        missing -= caps.keywords
        if missing:
            raise SMTPNotSupportedError(f"the server lacks {', '.join(sorted(missing))}, which the message needs")
        use_bdat = body == "BINARYMIME" or (caps.chunking and self.config.use_chunking)
        return params, use_bdat

    def _transaction(
        self,
        mail: Mail,
        rcpts: list[Rcpt],
        content: _Content,
        use_bdat: bool,
        *,
        sent: bool = False,
        ahead: bool = False,
    ) -> Generator[_Wait, None, tuple[list[RecipientOutcome], SMTPDeliveryError | None, list[int]]]:
        """One MAIL transaction; its outcomes, its error, and which recipients were over
        the server's limit (to go in another transaction when the content can go again).

        ``sent``: its commands already went out with the previous message's end.
        ``ahead``: send what follows (the next message's commands, or QUIT) with its own end.
        """
        conn = self.connection
        caps = conn.capabilities
        assert caps is not None
        # Every reply goes into progress as it comes (see _Progress).
        progress = self._progress
        assert progress is not None
        progress.mail, progress.rcpts, progress.mail_reply = mail, rcpts, None
        rcpt_replies: list[Reply | None] = [None] * len(rcpts)
        progress.rcpt_replies, progress.final, progress.ended = rcpt_replies, [], None
        data_reply: Reply | None = None
        if caps.pipelining and self.config.use_pipelining:
            if not sent:
                self._send_envelope(content.xforward, mail, rcpts, use_bdat)
                yield from self._prepare_while_waiting(len(self._outcomes) + 1)
            for _ in content.xforward:
                # Whatever it is: a refusal only loses what the server would have logged
                # (Postfix's client logs a warning and goes on too).
                yield from self._reply()
            mail_reply = progress.mail_reply = yield from self._reply()
            for index in range(len(rcpts)):
                rcpt_replies[index] = yield from self._reply()
            if not use_bdat:
                data_reply = yield from self._reply()
        else:
            for command in content.xforward:
                yield from self._command(command)  # (its reply as above)
            mail_reply = progress.mail_reply = yield from self._command(mail)
            if mail_reply.is_positive:
                for index, rcpt in enumerate(rcpts):
                    rcpt_reply = rcpt_replies[index] = yield from self._command(rcpt)
                    if _over_recipient_limit(rcpt_reply):
                        # The server's limit is reached: the rest would get the same
                        # reply (and cost a round trip each), so they wait with this one.
                        rcpt_replies[index:] = [rcpt_reply] * (len(rcpts) - index)
                        break
                if not use_bdat and any(reply and reply.is_positive for reply in rcpt_replies):
                    data_reply = yield from self._command(Data())

        if not mail_reply.is_positive:
            error = _mail_refusal(mail, mail_reply)
            if content.xforward:
                # XFORWARD_README: the server forgets it at RSET or the end of a message;
                # a refused MAIL is neither, and the next message must not be logged
                # under this one's origin (Postfix's client sends RSET here too).
                yield from self._command(Rset())
            return (
                [
                    RecipientOutcome(rcpt.recipient, reply, error=error)
                    for rcpt, reply in zip(rcpts, rcpt_replies, strict=True)
                ],
                error,
                [],
            )

        outcomes: dict[int, RecipientOutcome] = {}
        accepted: list[int] = []
        over: list[int] = []
        for index, (rcpt, reply) in enumerate(zip(rcpts, rcpt_replies, strict=True)):
            assert reply is not None
            if reply.is_positive:
                accepted.append(index)
                continue
            if _over_recipient_limit(reply):
                over.append(index)
            outcomes[index] = RecipientOutcome(rcpt.recipient, reply, error=_rcpt_refusal(rcpt, reply))
        if content.data is None:
            over = []  # a stream is read once: those recipients are for a later attempt
        elif over and accepted:
            ahead = False  # what follows this message waits for the next transaction

        def finish(
            error: SMTPDeliveryError | None,
        ) -> tuple[list[RecipientOutcome], SMTPDeliveryError | None, list[int]]:
            return [outcomes[index] for index in range(len(rcpts))], error, over

        if not accepted:
            if data_reply is not None and data_reply.code == 354:
                # A server that said 354 with no recipient: end the (empty) content at once.
                conn.send(EndOfMessage())
                yield from self._reply()
            yield from self._command(Rset())
            return finish(_every_recipient_refused([outcomes[index] for index in range(len(rcpts))]))

        final: list[Reply]
        final_command: Event
        if use_bdat:
            result = yield from self._send_bdat(
                content, len(accepted), ahead, progress.final, mail.params.body is not None
            )
            if isinstance(result, tuple):
                chunk_reply, final_command = result
                final = [chunk_reply] * len(accepted)
            else:
                final = result if self.config.lmtp else result * len(accepted)
                final_command = Bdat(0, True)
        else:
            assert data_reply is not None
            if data_reply.is_positive and data_reply.code != 354:
                # RFC 5321 §4.3.2: 354 or a refusal.  A 250 here would read as delivery
                # of content that was never sent: the server is broken, the mail not sent.
                raise RemoteProtocolError(f"DATA got {data_reply}, not 354: no content was sent")
            if data_reply.code != 354:
                final, final_command = [data_reply] * len(accepted), Data()
            else:
                yield from self._send_data(content, mail.params.body is not None)
                progress.ended = EndOfMessage()
                if ahead:
                    yield from self._send_ahead()
                final_command = EndOfMessage()
                final = progress.final
                for _ in range(len(accepted) if self.config.lmtp else 1):
                    final.append((yield from self._reply()))
                if not self.config.lmtp:
                    final *= len(accepted)
        for index, reply in zip(accepted, final, strict=True):
            outcomes[index] = _delivered_or_not(rcpts[index], rcpt_replies[index], reply, final_command)
        if not any(reply.is_positive for reply in final) and isinstance(final_command, Data):
            yield from self._command(Rset())
        refusals = [outcomes[index].error for index in accepted]
        return finish(refusals[0] if all(refusals) else None)

    def _send_data(self, content: _Content, eight_bit_ok: bool) -> _Steps:
        conn = self.connection
        if content.stuffed is not None:
            # Whole content, normalised and stuffed when it was prepared: each piece
            # goes out before the next is queued, the last with the "." that ends it.
            for count, piece in enumerate(self._slices(content.stuffed)):
                if count:
                    yield _FLUSH
                conn._send_stuffed_content(piece)
        else:
            # A stream is read no further ahead than the socket takes it, and checked
            # as it comes (whole content was checked before MAIL).
            for piece in self._pieces(content, eight_bit_ok):
                conn.send(MessageData(piece))
                yield _FLUSH
        conn.send(EndOfMessage())

    def _send_bdat(
        self, content: _Content, accepted: int, ahead: bool, replies: list[Reply], eight_bit_ok: bool
    ) -> Generator[_Wait, None, list[Reply] | tuple[Reply, Bdat]]:
        """Send BDAT chunks; the final replies (added to ``replies``), or (the refusing reply, its chunk)."""
        conn = self.connection
        pieces = self._pieces(content, eight_bit_ok)
        if content.data is None:
            pieces = self._rechunk(pieces, content)
        current = next(pieces, b"")
        while True:
            following = next(pieces, None)
            last = following is None
            chunk = Bdat(len(current), last)
            conn.send(chunk)
            if current:
                conn.send(MessageData(current))
            if last:
                assert self._progress is not None
                self._progress.ended = chunk
                if ahead:
                    yield from self._send_ahead()
                for _ in range(accepted if self.config.lmtp else 1):
                    replies.append((yield from self._reply()))
                return replies
            yield _FLUSH
            reply = yield from self._reply()
            if not reply.is_positive:
                yield from self._command(Rset())
                return (reply, chunk)
            assert following is not None
            current = following

    def _slices(self, data: bytes) -> Iterator[bytes]:
        """``data`` in pieces of at most ``chunk_size``, without copies."""
        size = self.config.chunk_size
        if len(data) <= size:
            yield data
            return
        view = memoryview(data)
        for start in range(0, len(view), size):
            # A view, not bytes: no copy of a large message.  Only this client's own
            # writers see it (MessageData accepts any bytes-like), and they only write it.
            yield view[start : start + size]  # type: ignore[misc]

    def _pieces(self, content: _Content, eight_bit_ok: bool = True) -> Iterator[bytes]:
        """Content in pieces of at most ``chunk_size`` (whole) or as streamed.

        A stream is checked as it comes (whole content was checked before MAIL):
        chunks must be bytes, and 7-bit unless the MAIL declared a BODY.
        """
        if content.data is not None:
            yield from self._slices(content.data)
            return
        stream = content.stream
        assert stream is not None
        while True:
            try:
                piece = next(stream, None)
            except Exception as exc:  # the caller's file or generator failed: not ours to crash on
                raise _SourceError(exc) from exc
            if piece is None:
                return
            if not isinstance(piece, (bytes, bytearray, memoryview)):
                raise LocalProtocolError(_not_bytes(piece))
            piece = bytes(piece)
            if not eight_bit_ok and not piece.isascii():
                raise LocalProtocolError("8-bit content for a server without 8BITMIME")
            yield piece

    def _rechunk(self, pieces: Iterator[bytes], content: _Content) -> Iterator[bytes]:
        """A stream for BDAT: line endings fixed, pieces of ``chunk_size``, a final CRLF."""
        size = self.config.chunk_size
        endings = None if content.exact else LineEndings(self.config.bare_newlines)
        pending = bytearray()
        tail = b""
        for piece in pieces:
            if endings is not None:
                piece = endings.feed(piece)
            pending += piece
            if piece:
                tail = (tail + piece)[-2:]
            while len(pending) > size:
                yield bytes(pending[:size])
                del pending[:size]
        if endings is not None:
            owed = endings.finish()
            pending += owed
            tail = (tail + owed)[-2:]
            if tail and tail != b"\r\n":
                pending += b"\r\n"
        while len(pending) > size:
            yield bytes(pending[:size])
            del pending[:size]
        if pending:
            yield bytes(pending)
