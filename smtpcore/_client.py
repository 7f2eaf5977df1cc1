"""The client role: :class:`ClientConnection`, an SMTP/LMTP client as a pure state machine.

How to read this module
-----------------------
The client speaks first with commands and the server answers each one, in
order, so the heart of the machine is a FIFO of *outstanding* commands: every
``send()`` of a command appends to it, every complete reply pops its head.
That is what makes pipelining (RFC 2920) correct by construction: replies pair
with commands in the order the commands were written, never by guessing from
codes.  The greeting is simply the first outstanding "command".  A reply that
arrives when nothing is outstanding is a protocol violation, never something to
hold for the next command (that would let a server, or someone in the middle,
answer a command before it is sent).

The shape is h11's and matches :class:`~smtpcore.ServerConnection`:
``receive_data()`` only appends (``b""`` means the server closed),
``next_event()`` returns a :class:`~smtpcore.Reply`, ``TlsHandshake``,
``ConnectionClosed``, ``NEED_DATA`` (read more) or ``PAUSED`` (nothing is
outstanding: send a command), ``send()`` serialises through the one writer
(``_writers``) into a buffer that ``data_to_send()`` drains.

What ``send()`` refuses (``LocalProtocolError``, nothing written): commands
pipelined when the server did not offer PIPELINING or after a command that must
end a group (EHLO, DATA, STARTTLS, AUTH, QUIT, NOOP, VRFY, EXPN, XCLIENT); MAIL
before a successful hello or inside a transaction; XCLIENT (Postfix's) the
server did not offer, with attributes it does not list, or inside a transaction
(its 220 starts the session over: EHLO again); RCPT, DATA, BDAT out of sequence;
MAIL parameters whose extension the server did not advertise; AUTH before TLS
unless ``allow_insecure_auth``; content outside DATA/BDAT; BDAT content that
does not total the announced size.

STARTTLS (RFC 3207): when the 220 is read, every byte already buffered after
it is discarded, and so is everything received until ``tls_established()``;
the next event is ``TlsHandshake``.  After the handshake the capabilities are
forgotten and only EHLO (or QUIT) may follow.  This is the defence against the
response injection of the "NO STARTTLS" paper (aiosmtplib GHSA-vxj7-4xrp-5vr4).

A 421 reply, to anything or with nothing outstanding (an idle connection timed
out), ends the session: the reply is returned, then ``ConnectionClosed``.  The
adapter enforces :attr:`ClientConnection.timeout`, the RFC 5321 §4.5.3.2 limit
for the current wait; the core has no clock, and
counts :attr:`~ClientConnection.replies_received` so the adapter can tell a
new wait from a reply still arriving.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ._capabilities import Capabilities
from ._config import ClientConfig, Timeout
from ._dotstuff import DotStuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    ENDS_GROUP,
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
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    TlsHandshake,
    XClient,
    XForward,
)
from ._params import required_extensions
from ._receivebuffer import ReceiveBuffer
from ._replies import Reply
from ._replyreader import ReplyReader
from ._sentinels import NEED_DATA, PAUSED, Sentinel
from ._writers import write_command

__all__ = ["ClientConnection"]

# These change the session in a way the client must see before it may send
# anything else; so does each SASL response, answered by the next challenge,
# and XCLIENT, after which the session starts over (a server may take it
# pipelined, but what could follow it before the new EHLO?).
_ENDS_GROUP = ENDS_GROUP | {AuthResponse, XClient}

# RFC 5321 §4.5.3.2: which timeout governs the wait for which reply.
_TIMEOUTS: dict[type[Event] | None, tuple[str, str]] = {
    None: ("greeting", "RFC 5321 §4.5.3.2.1"),
    Hello: ("hello", "RFC 5321 §4.5.3.2"),
    Mail: ("mail", "RFC 5321 §4.5.3.2.2"),
    Rcpt: ("rcpt", "RFC 5321 §4.5.3.2.3"),
    Data: ("data", "RFC 5321 §4.5.3.2.4"),
    EndOfMessage: ("data_end", "RFC 5321 §4.5.3.2.6"),
}


class _Transaction:
    """What the client has sent in the current mail transaction."""

    __slots__ = ("accepted", "body", "mode", "open", "recipients", "utf8")

    def __init__(self, mail: Mail) -> None:
        self.utf8 = mail.params.smtputf8 is True
        self.body = mail.params.body
        #: Still open on the client side (no end of data sent, MAIL not refused).
        self.open = True
        self.recipients = 0
        self.accepted = 0
        #: "data" or "bdat" once content has started.
        self.mode: str | None = None


class _Pending:
    """One outstanding command and how many replies it still expects."""

    __slots__ = ("event", "per_recipient", "remaining", "transaction")

    def __init__(self, event: Event | None, transaction: _Transaction | None = None, per_recipient: bool = False):
        self.event = event
        self.transaction = transaction
        #: LMTP end of data: one reply per accepted recipient, counted when the
        #: RCPT replies are all in (they come first in the FIFO).
        self.per_recipient = per_recipient
        self.remaining = 0 if per_recipient else 1


class ClientConnection:
    """One SMTP (or LMTP) connection, client side, with no I/O.

    Typical loop (the transaction driver in ``smtpcore.ClientDriver`` does all of
    this for you)::

        conn = ClientConnection(ClientConfig(local_hostname="client.example.com"))
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, Reply):
                ...                          # decide, then conn.send(Hello(...)), ...
                sock.sendall(conn.data_to_send())
            elif isinstance(event, ConnectionClosed):
                break
    """

    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config or ClientConfig()
        self._buffer = ReceiveBuffer()
        self._reader = ReplyReader(self.config)
        self._out = bytearray()
        self._outstanding: deque[_Pending] = deque([_Pending(None)])
        self._error: RemoteProtocolError | None = None
        self._broken: LocalProtocolError | None = None
        self._peer_closed = False
        self._closed = False
        self._closed_by_peer = False
        self._quit_sent = False
        # None, "announce" (TlsHandshake not yet returned) or "wait".
        self._tls: str | None = None
        #: The connection is encrypted (implicit TLS, or after STARTTLS).
        self.tls_active = self.config.implicit_tls
        #: The command the last reply answered (``None`` for the greeting).
        self.last_command: Event | None = None
        #: How many replies have been read.  RFC 5321 §4.5.3.2 bounds the wait for
        #: each *reply*, not each read: an adapter restarts its clock when this
        #: changes (or when it writes), so a server that sends its reply a byte at
        #: a time cannot hold the client past :attr:`timeout`.
        self.replies_received = 0
        self._reset_session()

    def _reset_session(self) -> None:
        """Forget what the server said: at the start and after TLS (RFC 3207 §4.2)."""
        #: The server's extensions after a successful hello (empty after HELO), else None.
        self.capabilities: Capabilities | None = None
        self._reader.enhanced_status_codes = False
        self._transaction: _Transaction | None = None
        self._content: str | None = None  # "data" (after 354) or "bdat"
        self._stuffer: DotStuffer | None = None
        self._chunk_left = 0
        self._auth_challenge = False
        # What the last EHLO's XCLIENT line listed, kept past the new greeting an
        # XCLIENT gets, for another XCLIENT before EHLO (a proxy splitting a long one).
        self._xclient_offered: tuple[str, ...] | None = None

    # --- inspection -------------------------------------------------------------------------------

    @property
    def outstanding(self) -> tuple[Event | None, ...]:
        """The commands still waiting for a reply, oldest first (``None``: the greeting)."""
        return tuple(pending.event for pending in self._outstanding)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def timeout(self) -> Timeout:
        """How long the adapter may wait now (RFC 5321 §4.5.3.2)."""
        timeouts = self.config.timeouts
        if self._tls is not None:
            return Timeout("tls_handshake", timeouts["tls_handshake"], "RFC 3207 §4")
        if self._content is not None:
            # Each write of content must finish within the data block timeout.
            return Timeout("data_block", timeouts["data_block"], "RFC 5321 §4.5.3.2.5")
        if self._outstanding:
            event = self._outstanding[0].event
            if isinstance(event, Bdat):
                name, rfc = ("data_end", "RFC 5321 §4.5.3.2.6") if event.last else ("data_block", "RFC 3030 §2")
            else:
                name, rfc = _TIMEOUTS.get(type(event) if event is not None else None, ("other", "RFC 5321 §4.5.3.2"))
            return Timeout(name, timeouts[name], rfc)
        return Timeout("other", timeouts["other"], "RFC 5321 §4.5.3.2")

    # --- input ------------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the server; ``b""`` means the server closed its side.

        ``data`` is copied: the caller may read into the same buffer again.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LocalProtocolError(f"receive_data() takes the bytes read, not {type(data).__name__}")
        if not data:
            self._peer_closed = True
            return
        if self._closed or self._tls is not None:
            # Between the STARTTLS 220 and the handshake nothing may be read:
            # such bytes were sent in plaintext and could be injected.
            return
        self._buffer.feed(data)

    def next_event(self) -> Event | Reply | Sentinel:
        """The next reply, ``TlsHandshake``, ``ConnectionClosed``, ``NEED_DATA`` or ``PAUSED``.

        Raises :class:`RemoteProtocolError` when the server broke the protocol;
        the connection is then over (and raises it again).
        """
        if self._error is not None:
            raise self._error
        if self._closed:
            return ConnectionClosed(by_peer=self._closed_by_peer)
        if self._tls is not None and self._peer_closed:  # gone before the handshake: nothing more will come
            self._close(by_peer=True)
            return ConnectionClosed(by_peer=True)
        if self._tls == "announce":
            self._tls = "wait"
            return TlsHandshake()
        if self._tls == "wait":
            return PAUSED
        if not self._outstanding:
            if self._buffer:
                return self._unsolicited_reply()
            if self._peer_closed:
                self._close(by_peer=True)
                return ConnectionClosed(by_peer=True)
            return PAUSED
        try:
            reply = self._reader.next_reply(self._buffer)
        except RemoteProtocolError as exc:
            self._fail(str(exc))
        if reply is None:
            if self._peer_closed:
                self._fail(self._closed_unanswered())
            return NEED_DATA
        self._on_reply(reply)
        return reply

    def _unsolicited_reply(self) -> Reply | Sentinel:
        """Bytes with no command outstanding: only a 421 may come so (RFC 5321 §3.8).

        A server closing an idle connection says 421 first; the caller gets it,
        then ``ConnectionClosed``.  Anything else is a reply to no command.
        """
        if not _may_be_421(self._buffer.peek()):
            self._fail("the server sent a reply when no command was outstanding")
        try:
            reply = self._reader.next_reply(self._buffer)
        except RemoteProtocolError as exc:
            self._fail(str(exc))
        if reply is None:
            if self._peer_closed:
                self._fail("the server closed the connection in the middle of a reply")
            return NEED_DATA
        self.replies_received += 1
        self._close(by_peer=True)
        return reply

    def _closed_unanswered(self) -> str:
        """What a server that closed mid-exchange left unanswered, named as the user sent it."""
        first = self._outstanding[0].event
        if first is None:
            awaited = "the greeting"
        elif isinstance(first, Hello):
            awaited = first.verb
        elif isinstance(first, EndOfMessage):
            awaited = "the end of the message"
        elif isinstance(first, AuthResponse):
            awaited = "an AUTH response"
        else:
            awaited = type(first).__name__.upper()
        more = len(self._outstanding) - 1
        also = f" (and {more} command{'s' if more > 1 else ''} after it)" if more else ""
        waited = "sending" if first is None else "replying to"
        return f"the server closed the connection without {waited} {awaited}{also}"

    def _fail(self, why: str) -> None:
        self._error = RemoteProtocolError(why)
        self._closed = True
        raise self._error

    def _close(self, by_peer: bool) -> None:
        self._closed = True
        self._closed_by_peer = by_peer
        self._outstanding.clear()
        self._buffer.clear()

    def _on_reply(self, reply: Reply) -> None:
        self.replies_received += 1
        pending = self._outstanding[0]
        if pending.per_recipient and pending.remaining == 0:
            transaction = pending.transaction
            assert transaction is not None
            pending.remaining = max(1, transaction.accepted)
        pending.remaining -= 1
        if pending.remaining == 0:
            self._outstanding.popleft()
        event = pending.event
        self.last_command = event
        if reply.code == 421:
            # RFC 5321 §3.8: the server is shutting the channel down.
            self._close(by_peer=True)
            return
        # Only the exact event classes are ever sent (write_command knows no others),
        # so the type decides: `is` tests, not a call to isinstance for each.
        kind = type(event)
        if kind is Rcpt:
            if reply.is_positive and pending.transaction is not None:
                pending.transaction.accepted += 1
        elif kind is Mail:
            if not reply.is_positive and pending.transaction is not None:
                pending.transaction.open = False
        elif kind is Data:
            if reply.code == 354:
                self._content = "data"
                self._stuffer = DotStuffer(self.config.bare_newlines)
        elif kind is Hello:
            assert isinstance(event, Hello)
            if reply.is_positive:
                self.capabilities = Capabilities.from_reply(reply) if event.verb != "HELO" else Capabilities()
                self._reader.enhanced_status_codes = self.capabilities.enhanced_status_codes
        elif kind is Auth or kind is AuthResponse:
            if reply.code == 334 and isinstance(event, AuthResponse) and event.cancel:
                # RFC 4954 §4: the server MUST answer "*" with 501.  Another challenge
                # would have the client cancel again, for ever.
                self._fail("the server sent another challenge after the client cancelled the AUTH exchange")
            self._auth_challenge = reply.code == 334
        elif kind is StartTls:
            if reply.code == 220:
                # Anything after the 220 was sent before TLS: drop it unread.
                self._buffer.clear()
                self._reader.reset()
                self._tls = "announce"
        elif kind is Quit:
            self._close(by_peer=False)
        elif kind is XClient:
            if reply.code == 220:
                # XCLIENT_README: the server greets again and the session starts over,
                # TLS aside: what the last EHLO said no longer holds.  (A 250, from
                # Postfix before 2.3, takes the attributes and leaves the session as it was.)
                caps = self.capabilities
                offered = caps.params("XCLIENT") if caps is not None else self._xclient_offered
                self._reset_session()
                self._xclient_offered = offered
        elif (kind is EndOfMessage or kind is Bdat) and (reply.code == 221 or 300 <= reply.code < 400):
            # RFC 5321 §4.3.2: no server ends a message with "closing" or "go ahead".  An
            # LMTP server one reply short hands the pipelined QUIT's 221 to the last
            # recipient, which would read as its delivery: the replies are out of step.
            self._fail(f"{reply.code} is no reply to the end of a message: the replies are out of step")

    # --- output -----------------------------------------------------------------------------------

    def send(self, event: Event) -> None:
        """Queue a command or message content; see the module doc for what is refused."""
        self._check_writable()
        kind = type(event)
        if kind is MessageData:
            assert isinstance(event, MessageData)
            self._send_content(event.data)
        elif kind is EndOfMessage:
            if self._content != "data":
                raise LocalProtocolError("EndOfMessage ends DATA content; BDAT content ends with Bdat(last=True)")
            assert self._stuffer is not None
            assert self._transaction is not None
            self._out += self._abandon_on_error(self._stuffer.finish)
            self._content = self._stuffer = None
            self._transaction.open = False
            self._outstanding.append(_Pending(event, self._transaction, per_recipient=self.config.lmtp))
        else:
            self._send_command(event)

    def _send_stuffed_content(self, data: bytes | memoryview) -> None:
        """``send(MessageData(...))`` for DATA content already in its wire form.

        Only for the driver, which normalised and stuffed the whole message
        itself (``_dotstuff.stuff``) while it waited for the server.
        """
        self._check_writable()
        self._send_content(data, stuffed=True)

    def _check_writable(self) -> None:
        if self._broken is not None:
            raise LocalProtocolError("the connection was abandoned in the middle of a message; close it")
        if self._closed or self._error is not None or self._quit_sent:
            raise LocalProtocolError("the connection is closed")
        if self._tls is not None:
            raise LocalProtocolError("finish the TLS handshake (tls_established()) first")
        if self._buffer and not self._outstanding and not self._buffer.peek().startswith(b"421"):
            # Bytes the server sent with nothing outstanding: a reply to a command not
            # yet written (see the module doc).  Found here, before writing, because
            # the command would take it for its own.  (A 421 may come at any time,
            # RFC 5321 §3.8: the next command's reply, it ends the session.  Only a
            # whole "421", though: a "4" could yet be any 4xx, injected ahead.)
            self._fail("the server sent a reply before the command it answers")

    def _send_content(self, data: bytes | bytearray | memoryview, stuffed: bool = False) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LocalProtocolError("message data must be bytes")
        if self._content == "data":
            stuffer = self._stuffer
            assert stuffer is not None
            if stuffed:
                self._out += stuffer.feed_stuffed(data)
            else:
                self._out += self._abandon_on_error(lambda: stuffer.feed(data))
        elif self._content == "bdat":
            size = len(data)
            if size > self._chunk_left:
                raise LocalProtocolError(f"{size} octets of content, but only {self._chunk_left} left in this BDAT")
            self._out += data
            self._chunk_left -= size
            if not self._chunk_left:
                self._content = None
        else:
            raise LocalProtocolError("message content is only sent after DATA got 354, or after BDAT")

    def _abandon_on_error(self, produce: Callable[[], bytes]) -> bytes:
        """Content refused half-way (a bare CR/LF under REJECT): part of the message
        may already be written, so the message must never be ended with "." CRLF,
        or a truncated message would be delivered.  The connection is abandoned."""
        try:
            return produce()
        except LocalProtocolError as exc:
            self._broken = exc
            raise

    def _send_command(self, event: Event) -> None:
        if not isinstance(event, Event):
            raise LocalProtocolError(f"send() takes an event, not {type(event).__name__}")
        if self._content == "bdat":
            raise LocalProtocolError(f"{self._chunk_left} octets of the BDAT chunk are still to be sent")
        if self._content == "data":
            raise LocalProtocolError("the message content is still open: send EndOfMessage()")
        self._check_pipelining(event)
        kind = type(event)
        if self._auth_challenge != (kind is AuthResponse):
            raise LocalProtocolError(
                "the server asked a SASL question: answer with AuthResponse"
                if self._auth_challenge
                else "AuthResponse only answers a 334 challenge"
            )
        transaction = self._transaction
        utf8 = transaction is not None and transaction.open and transaction.utf8
        self._check_sequence(event, transaction)
        line = write_command(event, utf8)  # raises before any state changes
        self._out += line
        self._auth_challenge = False
        per_recipient = False
        if kind is Rcpt:
            assert transaction is not None
            transaction.recipients += 1
        elif kind is Mail:
            assert isinstance(event, Mail)
            transaction = self._transaction = _Transaction(event)
        elif kind is Data:
            assert transaction is not None
            transaction.mode = "data"
        elif kind is Hello or kind is Rset:
            self._transaction = None
        elif kind is Bdat:
            assert isinstance(event, Bdat)
            assert transaction is not None
            transaction.mode = "bdat"
            if event.size:
                self._content = "bdat"
                self._chunk_left = event.size
            if event.last:
                transaction.open = False
                per_recipient = self.config.lmtp
        elif kind is Quit:
            self._quit_sent = True
        self._outstanding.append(_Pending(event, transaction, per_recipient))

    def _check_pipelining(self, event: Event) -> None:
        if not self._outstanding:
            return
        for pending in self._outstanding:
            if pending.event is None or type(pending.event) in _ENDS_GROUP:
                last = self._outstanding[-1].event
                raise LocalProtocolError(
                    f"wait for the reply to {type(last).__name__ if last else 'the greeting'} "
                    "before sending more (RFC 2920 §3.1)"
                )
        if type(event) is Quit:
            return  # QUIT may end any group
        if self.capabilities is None or not self.capabilities.pipelining:
            raise LocalProtocolError("the server did not offer PIPELINING: wait for each reply")

    def _check_sequence(self, event: Event, transaction: _Transaction | None) -> None:
        """Refuse what the server could only answer with 503 (or worse, misread)."""
        caps = self.capabilities
        is_open = transaction is not None and transaction.open
        kind = type(event)  # exact classes only, as in _on_reply
        if kind is Hello:
            assert isinstance(event, Hello)
            if (event.verb == "LHLO") != self.config.lmtp:
                raise LocalProtocolError("LMTP uses LHLO, SMTP uses EHLO or HELO")
        elif kind is Quit or kind is Rset or kind is Noop:
            pass
        elif kind is XClient or kind is XForward:
            assert isinstance(event, (XClient, XForward))
            verb = "XCLIENT" if kind is XClient else "XFORWARD"
            offered = caps.params(verb) if caps is not None else (self._xclient_offered if kind is XClient else None)
            if offered is None:
                raise LocalProtocolError(
                    f"the server did not advertise {verb}"
                    if caps is not None
                    else "send EHLO and wait for its 250 first"
                )
            # The EHLO line names the attributes the server takes (XCLIENT_README, XFORWARD_README).
            missing = set(event.attributes) - {name.upper() for name in offered}
            if missing:
                raise LocalProtocolError(f"the server's {verb} does not take {', '.join(sorted(missing))}")
            if is_open:
                raise LocalProtocolError(f"{verb} inside a mail transaction ({verb}_README): finish it or send RSET")
        elif caps is None:
            raise LocalProtocolError("send EHLO (or HELO/LHLO) and wait for its 250 first")
        elif kind is Mail:
            assert isinstance(event, Mail)
            if is_open:
                raise LocalProtocolError("a transaction is already open: finish it or send RSET")
            missing = required_extensions("MAIL", event.params) - caps.keywords
            if missing:
                raise LocalProtocolError(f"the server did not advertise {', '.join(sorted(missing))}")
        elif kind is Rcpt or kind is Data or kind is Bdat:
            if transaction is None or not is_open:
                raise LocalProtocolError(f"{type(event).__name__.upper()} needs an open transaction (send MAIL)")
            if kind is Rcpt:
                assert isinstance(event, Rcpt)
                if transaction.mode is not None:
                    raise LocalProtocolError("RCPT after the content started")
                missing = required_extensions("RCPT", event.params) - caps.keywords
                if missing:
                    raise LocalProtocolError(f"the server did not advertise {', '.join(sorted(missing))}")
            elif not transaction.recipients:
                raise LocalProtocolError("send RCPT before the content")
            elif kind is Data:
                if transaction.mode is not None:
                    raise LocalProtocolError("DATA after DATA or BDAT in one transaction")
                if transaction.body == "BINARYMIME":
                    raise LocalProtocolError("BODY=BINARYMIME content must be sent with BDAT (RFC 3030)")
            else:
                if transaction.mode == "data":
                    raise LocalProtocolError("BDAT after DATA in one transaction")
                if not caps.chunking:
                    raise LocalProtocolError("the server did not advertise CHUNKING")
        elif kind is StartTls:
            if self.tls_active:
                raise LocalProtocolError("TLS is already active")
            if is_open:
                raise LocalProtocolError("STARTTLS inside a mail transaction")
        elif kind is Auth:
            if not (self.tls_active or self.config.allow_insecure_auth):
                raise LocalProtocolError("refusing to send AUTH before TLS (set allow_insecure_auth to allow it)")
            if is_open:
                raise LocalProtocolError("AUTH inside a mail transaction")

    def data_to_send(self) -> bytes:
        """Everything queued for the server since the last call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # --- TLS --------------------------------------------------------------------------------------

    def tls_established(self) -> None:
        """The adapter finished the TLS handshake that ``TlsHandshake`` asked for.

        Everything learnt before TLS is forgotten; send EHLO again.
        """
        if self._tls is None:
            raise LocalProtocolError("tls_established() is only valid after STARTTLS got 220")
        self._tls = None
        self._buffer.clear()
        self._reader.reset()
        self.tls_active = True
        self._reset_session()


def _may_be_421(received: bytearray) -> bool:
    """Whether bytes received with no command outstanding are, or may become, a 421 reply."""
    return b"421".startswith(received[:3])  # (a "4210" is then refused as a malformed reply)
