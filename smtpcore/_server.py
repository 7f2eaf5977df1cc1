"""The server role: :class:`ServerConnection`, an SMTP/LMTP server as a pure state machine.

How to read this module
-----------------------
The connection moves through the states of :class:`State`.  Which command may
come in which state, and where an accepted command leads, is the table
:data:`TRANSITIONS` below; anything not in it gets ``503 Bad sequence``.

The application drives it like h11: ``receive_data()`` appends bytes,
``next_event()`` parses at most one event, ``data_to_send()`` drains the replies
queued so far.  Receiving can itself produce output (the core answers a bad
command, a NOOP or a SASL step on its own), which is why replies are queued in
an outgoing buffer rather than returned by ``send()`` (as in h2).

**One command at a time.**  After an event that needs the application's answer
(``reply_due`` is true), ``next_event()`` returns ``PAUSED`` until ``send()`` or
``accept()`` is called.  Pipelined input meanwhile stays in the receive buffer,
so replies always go out in command order and nothing after a DATA, STARTTLS or
QUIT is acted on before that command is answered.

**Safety properties, and where they live.**  End of data is only CRLF.CRLF
(``_data.DataReader``).  Input that arrives after a STARTTLS is discarded when
the 220 is queued and until ``tls_established()`` (the CVE-2011-0411 class).
Every buffer is bounded: command lines by ``max_command_line`` and what the
advertised extensions add to it (overlong lines are skipped, not stored),
content by handing it out as it arrives.  Errors found
in message content are answered once, after the end of data.

There is no clock here: the adapter asks :attr:`ServerConnection.timeout` which
RFC 5321 §4.5.3.2 timeout governs the current wait and enforces it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

from . import _replies as R
from ._commands import PARSERS, Context, Refusal, decode_line, is_non_smtp, parse_xclient, parse_xforward, split_verb
from ._config import AuthPolicy, BareNewlinePolicy, LongLinePolicy, ServerConfig, Timeout, TlsPolicy
from ._data import ChunkReader, DataReader
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    ENDS_GROUP,
    Auth,
    AuthCredentials,
    AuthRefused,
    Bdat,
    CommandRejected,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Expn,
    Hello,
    Help,
    Mail,
    MessageRejected,
    Noop,
    ProxyHeader,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    TlsHandshake,
    Vrfy,
    XClient,
    XForward,
    unchecked_message_data,
)
from ._params import line_allowance
from ._proxy import ProxyError, ProxyInfo, octets_left, read_proxy_header
from ._receivebuffer import OVERLONG, ReceiveBuffer, starts_bdat
from ._redact import Redactor
from ._replies import Reply
from ._sasl_server import ERROR_CHALLENGE_MECHANISMS, MECHANISMS, OAuthError, SaslFailure, ServerMechanism
from ._sentinels import NEED_DATA, PAUSED, Sentinel
from ._xclient import ATTRIBUTES, FORWARD_ATTRIBUTES, UNAVAILABLE

__all__ = ["TRANSITIONS", "ServerConnection", "State"]


@functools.lru_cache(maxsize=512)
def _wire(reply: Reply, enhanced_status_codes: bool) -> bytes:
    """``reply.to_bytes()``, remembered: a session writes the same few replies over and over."""
    return reply.to_bytes(enhanced_status_codes)


class State(enum.Enum):
    """Where a server connection is.  The docs' diagram is drawn from :data:`TRANSITIONS`."""

    PROXY = "proxy"  # waiting for the PROXY protocol header (only with proxy_protocol)
    GREETING = "greeting"  # the application owes the greeting (220 or 554)
    REFUSED = "refused"  # greeted with 554: only QUIT is accepted (RFC 5321 §3.1)
    CONNECTED = "connected"  # greeted; no EHLO/HELO/LHLO yet (also right after TLS)
    READY = "ready"  # hello done, no mail transaction
    MAIL = "mail"  # sender accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # reading content after 354
    CHUNK = "chunk"  # reading the octets of one BDAT chunk
    CHUNKING = "chunking"  # between the BDAT chunks of one transaction
    AUTH = "auth"  # inside a SASL exchange (334 sent)
    TLS = "tls"  # 220 to STARTTLS queued; waiting for the handshake
    CLOSED = "closed"

    # Members are singletons compared by identity, so the identity hash agrees
    # with equality.  Enum's own __hash__ is Python code (it hashes the name),
    # and TRANSITIONS is looked up by state on every command.
    __hash__ = object.__hash__


class S:
    """The members of :class:`State` as plain class attributes: ``S.READY is State.READY``.

    On Python 3.10 and 3.11 ``State.READY`` goes through ``EnumType.__getattr__``
    (about 70 ns, ten times a plain attribute), and a command compares states
    half a dozen times.  A test keeps this list equal to the enum.
    """

    PROXY: Final = State.PROXY
    GREETING: Final = State.GREETING
    REFUSED: Final = State.REFUSED
    CONNECTED: Final = State.CONNECTED
    READY: Final = State.READY
    MAIL: Final = State.MAIL
    RCPT: Final = State.RCPT
    DATA: Final = State.DATA
    CHUNK: Final = State.CHUNK
    CHUNKING: Final = State.CHUNKING
    AUTH: Final = State.AUTH
    TLS: Final = State.TLS
    CLOSED: Final = State.CLOSED


_HELLO_STATES = (S.READY, S.MAIL, S.RCPT, S.CHUNKING)
#: Where next_event() reads command lines (SASL lines in AUTH): all but content,
#: the PROXY header and the TLS handshake.
_READS_COMMANDS = frozenset(State) - {S.DATA, S.CHUNK, S.PROXY, S.TLS}
#: Where a command is awaited with nothing under way (see ServerConnection.idle).
_IDLE = frozenset({S.CONNECTED, S.READY, S.REFUSED})

#: TRANSITIONS[state][command] -> the state after the application accepts it.
#: A command missing from a state's row gets a 503 (bad sequence).  NOOP, RSET,
#: QUIT, HELP, VRFY and EXPN are allowed in every state that reads commands and
#: change nothing but what their names say, so they are not repeated here.
TRANSITIONS: Final[dict[State, dict[type[Event], State]]] = {
    S.CONNECTED: {Hello: S.READY, XClient: S.CONNECTED, XForward: S.CONNECTED},
    S.READY: {Hello: S.READY, Mail: S.MAIL, StartTls: S.TLS, Auth: S.AUTH, XClient: S.CONNECTED, XForward: S.READY},
    S.MAIL: {Hello: S.READY, Rcpt: S.RCPT},
    S.RCPT: {Hello: S.READY, Rcpt: S.RCPT, Data: S.DATA, Bdat: S.CHUNK},
    S.CHUNKING: {Hello: S.READY, Bdat: S.CHUNK},
}
_ANYTIME = frozenset({Noop, Rset, Quit, Help, Vrfy, Expn})
_XCLIENT_FIELDS = tuple(attribute.lower() for attribute in ATTRIBUTES)
_XFORWARD_FIELDS = tuple(attribute.lower() for attribute in FORWARD_ATTRIBUTES)
#: The XCLIENT attributes that last until another XCLIENT changes them (the others: _accepted_xclient).
_XCLIENT_LASTING = ("name", "addr", "port", "destaddr", "destport")
# RCPTs past max_recipients in one transaction that are not errors (Postfix's default).
_RECIPIENT_OVERSHOOT = 1000
_NO_TRANSITIONS: dict[type[Event], State] = {}
#: Before TLS under TlsPolicy.REQUIRED only these get through (RFC 3207 §4).
_ALLOWED_BEFORE_TLS = (Hello, StartTls, Noop, Quit, Rset, XClient)
#: Under AuthPolicy.REQUIRED these wait for a successful AUTH (RFC 4954 §6).
_NEED_AUTH = (Mail, Rcpt, Data, Bdat, Vrfy, Expn)
_POLICED = frozenset({StartTls, Auth, Bdat})
#: RFC 4954 §4: AUTH with an initial response may be pipelined when its
#: mechanism ends in that one round trip.
_ONE_ROUND_TRIP_MECHANISMS = frozenset({"PLAIN", "EXTERNAL"})

# RFC 2033 §4.1: LMTP has LHLO and no HELO/EHLO; SMTP the other way round.  The
# wrong hello is simply not a verb of this connection: 500, like any unknown verb.
# XCLIENT and XFORWARD are verbs only where they are offered (Dovecot's LMTP takes XCLIENT too).
_SMTP_PARSERS = {verb: parser for verb, parser in PARSERS.items() if verb != "LHLO"}
_LMTP_PARSERS = {verb: parser for verb, parser in PARSERS.items() if verb not in ("HELO", "EHLO")}


@functools.lru_cache(maxsize=8)
def _parsers(lmtp: bool, xclient: bool, xforward: bool) -> dict[str, Callable[[str | None, Context], Event]]:
    parsers = dict(_LMTP_PARSERS if lmtp else _SMTP_PARSERS)
    if xclient:
        parsers["XCLIENT"] = parse_xclient
    if xforward:
        parsers["XFORWARD"] = parse_xforward
    return parsers


#: The EHLO lines are "followed by the names of the attributes that the ... implementation supports".
_XCLIENT_LINE = "XCLIENT " + " ".join(ATTRIBUTES)
_XFORWARD_LINE = "XFORWARD " + " ".join(FORWARD_ATTRIBUTES)


class _Greeting:
    """What is pending before the greeting: not a command, but it needs a reply."""

    __slots__ = ()


_GREETING = _Greeting()

# The positive replies each pending item may get; 4xx and 5xx are always allowed.
_POSITIVE: dict[type[object], frozenset[int]] = {
    _Greeting: frozenset({220}),
    Hello: frozenset({250}),
    Mail: frozenset({250}),
    Rcpt: frozenset({250, 251}),
    Data: frozenset({354}),
    EndOfMessage: frozenset({250}),
    StartTls: frozenset({220}),
    AuthCredentials: frozenset({235}),
    XClient: frozenset({220}),
    XForward: frozenset({250}),
    Vrfy: frozenset({250, 251, 252}),
    Expn: frozenset({250, 252}),
}


_DEFAULT_REPLIES: dict[type[object], Reply] = {
    Mail: R.SENDER_OK,
    Rcpt: R.RECIPIENT_OK,
    Data: R.START_DATA,
    EndOfMessage: R.MESSAGE_ACCEPTED,
    StartTls: R.READY_FOR_TLS,
    AuthCredentials: R.AUTH_OK,
    Vrfy: R.VRFY_DEFAULT,
    Expn: R.EXPN_ACCEPTED,
    XForward: R.OK,
}


def _with_enhanced_code(reply: Reply, esc: bool) -> Reply:
    """RFC 2034 §3: once advertised (``esc``), every reply carries an enhanced code.

    The two it exempts, the greeting and the reply to EHLO, never come here with
    ``esc`` set: the greeting precedes EHLO, and the EHLO reply is written apart.
    So a 220 here answers STARTTLS, and gets its code like any other reply.
    """
    if esc and reply.enhanced is None and reply.code // 100 in (2, 4, 5):
        return Reply._unchecked(reply.code, reply.text, f"{reply.code // 100}.0.0")
    return reply


# What every connection of one server says alike is made once per server, not
# once per connection: the greeting and the EHLO reply depend only on the
# server's name and configuration (and, for EHLO, on whether TLS is on).


@functools.lru_cache(maxsize=64)
def _greeting_and_defaults(hostname: str, lmtp: bool) -> tuple[Reply, Mapping[type[object], Reply]]:
    """accept()'s greeting, and its reply to everything but the greeting and LMTP's end of message."""
    greeting = Reply(220, f"{hostname} {'LMTP' if lmtp else 'ESMTP'} smtpcore")
    # XCLIENT is accepted with the greeting: the session starts over (XCLIENT_README).
    return greeting, {**_DEFAULT_REPLIES, Hello: Reply(250, hostname), XClient: greeting}


# The commands whose lines may be longer than max_command_line: MAIL and RCPT by
# what the extensions advertised allow, AUTH by its initial response.
_LONGER_LINES = frozenset({"MAIL", "RCPT", "AUTH"})


@functools.lru_cache(maxsize=64)  # asked at every EHLO, of the same few sets
def _line_allowance(extensions: frozenset[str]) -> int:
    """Octets the advertised ``extensions`` add to the longest command line a client
    may send: MAIL's or RCPT's, whichever they lengthen more (see LINE_ALLOWANCE)."""
    return max(line_allowance("MAIL", extensions), line_allowance("RCPT", extensions))


@functools.lru_cache(maxsize=64)
def _ehlo_reply(first_line: str, extensions: tuple[str, ...]) -> tuple[bytes, frozenset[str]]:
    """The EHLO/LHLO reply's wire form and the keywords it advertises (upper case)."""
    keywords = frozenset(line.split(" ", 1)[0].upper() for line in extensions)
    return Reply._unchecked(250, (first_line, *extensions), None).to_bytes(False), keywords


@functools.lru_cache(maxsize=64)
def _timeouts(command: float, data: float, min_rate: float, handshake: float) -> tuple[Timeout, Timeout, Timeout]:
    """The ``timeout`` property's answers: while reading commands, content, and during the TLS handshake."""
    return (
        Timeout("command", command, "RFC 5321 §4.5.3.2.7"),
        Timeout("data", data, "RFC 5321 §4.5.3.2.7", min_rate or None),
        Timeout("tls_handshake", handshake, "RFC 3207 §4"),
    )


# accept()'s defaults for the events that take one reply, ready to write:
# kind -> (accepted, wire form before ENHANCEDSTATUSCODES, wire form after).
# LMTP answers the end of a message once per recipient, so it has no entry there.
_OneReply = tuple[bool, bytes, bytes]
_SMTP_ONE_REPLY: dict[type[object], _OneReply] = {
    kind: (reply.code < 400, reply.to_bytes(False), _with_enhanced_code(reply, True).to_bytes(True))
    for kind, reply in _DEFAULT_REPLIES.items()
}
_LMTP_ONE_REPLY = {kind: value for kind, value in _SMTP_ONE_REPLY.items() if kind is not EndOfMessage}


class ServerConnection:
    """One SMTP (or LMTP) connection, server side, with no I/O.

    Typical loop::

        conn = ServerConnection(ServerConfig(hostname="mx.example.com"))
        conn.accept()                       # the 220 greeting
        while True:
            sock.sendall(conn.data_to_send())
            event = conn.next_event()
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, ConnectionClosed):
                break
            elif conn.reply_due:
                conn.accept()               # or conn.send(Reply(550, "No such user", "5.1.1"))
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self._buffer = ReceiveBuffer()
        # The buffer's bytes themselves (the same bytearray for its whole life):
        # "is anything buffered?" is then a C-level truth test, asked before every read.
        self._received = self._buffer.peek()
        self._out = bytearray()
        self._pending: object = _GREETING
        # Behind a PROXY-protocol proxy the header comes first, and only then the greeting.
        self._state = S.PROXY if self.config.proxy_protocol else S.GREETING
        self._replies_due = 0 if self.config.proxy_protocol else 1
        #: What the PROXY header said, once read (None without proxy_protocol).
        self.proxy: ProxyInfo | None = None
        #: What the accepted XCLIENT commands said, or None (see _accepted_xclient).
        self.xclient: XClient | None = None
        self._peer_closed = False
        self._error: RemoteProtocolError | None = None
        # Errors since the last accepted message, failed logins included (see max_errors).
        self._errors = 0
        self._failed_logins = 0  # credentials the application refused; never forgiven (see _transition)
        # NOOP, RSET, HELP, VRFY, EXPN, EHLO again since the last accepted message (max_junk_commands).
        self._junk = 0
        # The error delay: from this many errors on, each command owes config.error_delay
        # seconds, added up in _delay_owed until take_reply_delay().  (A number no count
        # reaches when there is no delay: one comparison per command either way.)
        self._delay_from = self.config.error_delay_after if self.config.error_delay else 1 << 62
        self._delay_owed = 0.0
        # Some recipient took the message being answered (LMTP answers once for each).
        self._message_taken = False
        # The longest line (without its CRLF) of a command that extensions do not lengthen.
        self._plain_line = self.config.max_command_line - 2
        self._sasl_line_limit = self.config.max_auth_line  # read on every command
        self._tls_announced = False
        self._context = Context(frozenset(), self.config.extra_parameters)
        # Read on every command; the configuration is fixed for the connection.
        self._parsers = _parsers(bool(self.config.lmtp), bool(self.config.xclient), bool(self.config.xforward))
        self._tls_required = self.config.tls is TlsPolicy.REQUIRED
        self._auth_required = self.config.auth is AuthPolicy.REQUIRED
        self._restricted = self._tls_required or self._auth_required
        self._timeouts = _timeouts(
            self.config.command_timeout,
            self.config.data_timeout,
            self.config.min_data_rate,
            self.config.tls_handshake_timeout,
        )
        # accept()'s one-reply defaults: every default but LMTP's per-recipient ones.
        self._one_reply_defaults = _LMTP_ONE_REPLY if self.config.lmtp else _SMTP_ONE_REPLY
        #: The connection is encrypted (implicit TLS, or after STARTTLS).
        self.tls_active = self.config.implicit_tls
        #: Total octets received, for logs and session objects.
        self.bytes_received = 0
        #: The verb (``"DATA"``, ``"EHLO"``...) after which the client first sent
        #: more without waiting for the reply (RFC 2920 §3.1), or None: a sign of
        #: bulk-mail software, for a policy to weigh (Postfix's
        #: reject_unauth_pipelining refuses such a client at DATA).  Only bytes
        #: that had arrived when the command was read count, so a client that
        #: writes in a hurry is seen as reliably as the reads catch it.
        self.improper_pipelining: str | None = None
        self._redactor: Redactor | None = None  # made by the first redact(): most servers keep no transcript
        self._reset_session()

    # --- session and transaction state ----------------------------------------------------------

    def _reset_session(self) -> None:
        """Forget everything learnt from the client: at start and after TLS (RFC 3207 §4.2)."""
        #: The accepted EHLO/HELO/LHLO, or None.
        self.hello: Hello | None = None
        #: The finished, accepted authentication, or None.
        self.authenticated: AuthCredentials | None = None
        self._extensions: frozenset[str] = frozenset()
        # The longest command line taken: max_command_line, and more once EHLO
        # advertised extensions that add parameters (see _line_allowance).
        self._command_line = self.config.max_command_line
        # PIPELINING was in the last EHLO/LHLO reply of this session.
        self._pipelining_offered = False
        self._esc = False
        self._mechanism: ServerMechanism | None = None
        #: The refusal send_auth_error() holds back until the client answers its challenge.
        self._auth_refusal: Reply | None = None
        self._reset_transaction()

    def _reset_transaction(self) -> None:
        #: The accepted MAIL of the current transaction, or None.
        self.mail: Mail | None = None
        #: What the accepted XFORWARD commands said for this transaction, or None
        #: (XFORWARD_README: kept until the transaction ends, RSET or the end of data).
        self.xforward: XForward | None = None
        self._recipients: list[Rcpt] = []
        self._rcpt_attempted = False
        self._recipients_over_limit = 0  # RCPTs refused for max_recipients
        self._reader: DataReader | ChunkReader | None = None
        self._message_error: Reply | None = None
        self._message_size = 0
        self._chunk_refusal: Reply | None = None
        self._chunk_last = False
        self._state_after_refused_chunk = S.READY

    @property
    def state(self) -> State:
        return self._state

    @property
    def recipients(self) -> tuple[Rcpt, ...]:
        """The accepted recipients of the current transaction, in RCPT order."""
        return tuple(self._recipients)

    @property
    def recipient_count(self) -> int:
        """``len(recipients)`` without the copy: asking after every RCPT stays linear."""
        return len(self._recipients)

    @property
    def extensions(self) -> frozenset[str]:
        """The EHLO keywords advertised in this session (empty before EHLO or after HELO)."""
        return self._extensions

    @property
    def receiving_content(self) -> bool:
        """True while message content (after DATA, or a BDAT chunk) is being read.

        The adapter uses it to apply the content timeout (a minimum data rate)
        instead of the command deadline.
        """
        return self._state in (S.DATA, S.CHUNK)

    @property
    def idle(self) -> bool:
        """True while the machine waits for a command with nothing under way.

        Greeted (220 or 554), with no reply owed, and no mail transaction, SASL
        exchange or TLS handshake in progress: a server shutting down may end the
        session here (``end_session``) and the client loses nothing by it.
        Elsewhere a graceful shutdown lets the session finish what it started.
        """
        return self._replies_due == 0 and self._state in _IDLE

    @property
    def reply_due(self) -> bool:
        """True while the machine waits for ``send()`` / ``accept()``."""
        return self._replies_due > 0

    @property
    def timeout(self) -> Timeout:
        """The wait the adapter must bound now (RFC 5321 §4.5.3.2)."""
        command, data, handshake = self._timeouts  # asked before every read: made once per server
        state = self._state
        if state is S.DATA or state is S.CHUNK:
            return data
        return handshake if state is S.TLS else command

    @property
    def max_read(self) -> int | None:
        """The most octets the adapter's next read may take, or ``None``: as many as have come.

        A bound only while the PROXY header of an implicit-TLS connection is
        read (``proxy_protocol`` with ``implicit_tls``): the client's TLS
        handshake follows the header at once, and only the TLS layer may read
        it, so the header is read in reads that cannot pass its end (see
        ``_proxy.octets_left``).  0 when a whole header is buffered already:
        ``next_event()`` has it.  Octets read past the header are an error
        (:class:`LocalProtocolError`, at the ``ProxyHeader`` event).  Without
        TLS the octets after the header are SMTP, and are read as they come.
        """
        if self._state is S.PROXY and self.config.implicit_tls:
            return max(0, octets_left(self._received))
        return None

    # --- input ----------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the client; ``b""`` means the client closed its side.

        ``data`` is copied: the caller may read into the same buffer again.
        """
        if not data:
            self._peer_closed = True
            return
        self.bytes_received += len(data)
        if self._state in (S.TLS, S.CLOSED):
            # Plaintext sent after STARTTLS must never be parsed (CVE-2011-0411),
            # and nothing after the end of the session matters.
            return
        self._buffer.feed(data)

    def redact(self, data: bytes | bytearray | memoryview) -> bytes:
        """``data``, as read from the client, fit for a transcript or a log: SASL
        secrets (an ``AUTH`` line's initial response, every response of the
        exchange) replaced by ``<redacted>``.

        Give it every read in order, each before :meth:`receive_data`: a secret
        may be split across reads, and what is secret depends on the state the
        read arrives in.  It hides more rather than less: whatever a client
        pipelines after an ``AUTH`` line in the same read, and a message line
        that reads like one.
        """
        if self._redactor is None:
            self._redactor = Redactor()
        return self._redactor.redact(data if type(data) is bytes else bytes(data), self._state is S.AUTH)

    def next_event(self) -> Event | Sentinel:
        """The next event, ``NEED_DATA`` or ``PAUSED``.

        Raises :class:`RemoteProtocolError` when the client broke the protocol
        beyond repair; its reply is already queued: flush and close.
        """
        if self._error is not None:
            raise self._error
        while True:
            state = self._state
            if state is S.CLOSED:
                return ConnectionClosed(by_peer=self._peer_closed)
            if self._errors >= self.config.max_errors:
                self._fatal(R.TOO_MANY_ERRORS, f"client made {self._errors} errors")
            if self._replies_due:
                if self._pending is _GREETING and self._buffer and self.config.reject_early_talkers:
                    self._fatal(R.EARLY_TALKER, "client sent data before the greeting")
                return PAUSED
            if state in _READS_COMMANDS:
                event = self._next_command_event()
            elif state is S.DATA or state is S.CHUNK:
                event = self._next_content_event()
            elif state is S.PROXY:
                return self._next_proxy_event()
            else:  # S.TLS
                if self._peer_closed:  # gone before the handshake: nothing will ever arrive
                    self._state = S.CLOSED
                    continue
                if not self._tls_announced:
                    self._tls_announced = True
                    return TlsHandshake()
                return PAUSED
            if event is not None:
                return event

    def _next_command_event(self) -> Event | Sentinel | None:
        if not self._received:  # half the calls: every reply is followed by a read
            return self._end_of_input() if self._peer_closed else NEED_DATA
        in_auth = self._state is S.AUTH
        limit = self._sasl_line_limit
        line = self._buffer.next_line(limit if in_auth else self._command_line, limit)
        if line is None:
            return self._end_of_input()
        if self._errors >= self._delay_from:
            # Postfix's tarpit: a client that keeps making errors without delivering
            # mail (probing for addresses, guessing passwords) waits for every reply.
            self._delay_owed += self.config.error_delay
        if in_auth:
            return self._auth_line(line)
        if not isinstance(line, bytes):  # OVERLONG
            if self._buffer.overlong_was_bdat:
                self._fatal(R.BDAT_UNREADABLE, "client sent a BDAT command longer than a command line")
            return self._reject("", R.SYNTAX_LINE_TOO_LONG)
        try:
            text = decode_line(line)
        except Refusal as refusal:
            if starts_bdat(line):  # "BDAT 35 LAST\r", "BDAT\x0035"
                self._fatal(R.BDAT_UNREADABLE, "client sent a BDAT command that cannot be read")
            return self._reject("", refusal.reply)
        verb, argument = split_verb(text)
        if len(line) > self._plain_line and verb not in _LONGER_LINES:
            # Read under the limit the extensions raise (see _line_allowance), which
            # only MAIL, RCPT and AUTH may use: any other command keeps its 512.
            if verb == "BDAT":
                self._fatal(R.BDAT_UNREADABLE, "client sent a BDAT command over 512 octets")
            return self._reject("", R.SYNTAX_LINE_TOO_LONG)
        parser = self._parsers.get(verb)
        if parser is None:
            # The HTTP verbs are not in PARSERS: this is the only place they can be.
            if is_non_smtp(verb):
                self._fatal(R.NON_SMTP_COMMAND, f"client sent a non-SMTP command ({verb})")
            if starts_bdat(line):  # "BDAT\u00a035 LAST": a BDAT to a peer that splits at any blank
                self._fatal(R.BDAT_UNREADABLE, "client sent a BDAT command that cannot be read")
            return self._reject(verb[:16], R.SYNTAX_UNRECOGNIZED)
        context = self._context  # one object, refreshed: cheaper than a new one per command
        context.extensions = self._extensions
        mail = self.mail
        context.transaction_utf8 = mail is not None and mail.params.smtputf8
        try:
            event = parser(argument, context)
        except Refusal as refusal:
            if refusal.reply is R.BDAT_UNREADABLE:
                self._fatal(refusal.reply, "client sent a BDAT command that cannot be read")
            if verb == "RCPT" and mail is not None:
                # A recipient tried and refused: DATA then gets "no valid recipients"
                # (554, as Postfix says it), not "send RCPT first".
                self._rcpt_attempted = True
            return self._reject(verb, refusal.reply)
        return self._command(verb, event)

    def _next_proxy_event(self) -> Event | Sentinel:
        try:
            info = read_proxy_header(self._buffer.peek())
        except ProxyError as exc:
            # Not a connection through our proxy: say nothing in SMTP, just close.
            self._state = S.CLOSED
            self._error = RemoteProtocolError(f"bad PROXY protocol header: {exc}")
            raise self._error from None
        self._buffer.rewind()
        if info is None:
            return self._end_of_input()
        if self._received and self.config.implicit_tls:
            # The octets after the header are the client's TLS handshake: the
            # adapter read past max_read.  They cannot be given back to the TLS
            # layer, and must neither be read as SMTP nor be lost without a word.
            self._state = S.CLOSED
            raise LocalProtocolError(
                f"{len(self._received)} octets were read past the PROXY header of an implicit-TLS "
                "connection: they are the TLS handshake's (read at most max_read octets)"
            )
        self.proxy = info
        self._state = S.GREETING
        self._replies_due = 1
        return ProxyHeader(info.source, info.destination, info.version)

    def _end_of_input(self) -> Event | Sentinel:
        if self._peer_closed:
            self._state = S.CLOSED
            return ConnectionClosed(by_peer=True)
        return NEED_DATA

    # --- commands -------------------------------------------------------------------------------

    def _command(self, verb: str, event: Event) -> Event | None:
        """Decide what to do with a well-formed command in the current state."""
        state = self._state
        config = self.config
        kind = type(event)
        if state is S.REFUSED:
            if kind is Quit:
                return self._quit(event)
            if kind is Bdat:
                # Its octets must still be read (RFC 3030 §2), or they would be parsed as commands.
                assert isinstance(event, Bdat)
                return self._start_chunk(event, R.REFUSED_SESSION)
            return self._reject(verb, R.REFUSED_SESSION)
        if self._received and (kind in ENDS_GROUP or not self._pipelining_offered):
            # More had arrived behind this command: fine for most commands once
            # PIPELINING is offered (the replies to the pipelined ones follow).
            self._check_pipelining(verb, event)
        # Only STARTTLS, AUTH and BDAT have rules of their own; the rest only
        # under TlsPolicy.REQUIRED or AuthPolicy.REQUIRED.
        refusal = self._policy_refusal(event) if kind in _POLICED or self._restricted else None
        if refusal is not None:
            if kind is Bdat:
                assert isinstance(event, Bdat)
                return self._start_chunk(event, refusal)
            return self._reject(verb, refusal)
        if kind in _ANYTIME:
            return self._anytime(event)
        if kind is Bdat:
            assert isinstance(event, Bdat)
            if not event.size and not event.last:
                # "BDAT 0" adds nothing: allowed, but a client could send it for ever.
                self._junk_command()
            return self._start_chunk(event, self._sequence_refusal(event))
        if kind not in TRANSITIONS.get(state, _NO_TRANSITIONS):
            return self._reject(verb, self._sequence_refusal(event))
        if kind is Rcpt and len(self._recipients) >= config.max_recipients:
            # 452, no error: a pipelining client sends its RCPTs before it sees the
            # first 452, and sends the rest in the next transaction.  Past 1000 of
            # them, each is an error (Postfix's smtpd_recipient_overshoot_limit), so
            # one RCPT every few minutes cannot hold the connection for ever.
            self._recipients_over_limit += 1
            return self._reject(verb, R.TOO_MANY_RECIPIENTS, count=self._recipients_over_limit > _RECIPIENT_OVERSHOOT)
        if kind is Hello and self.hello is not None:
            self._junk_command()  # said again: allowed (RFC 5321 §4.1.4), but it changes nothing lasting
        if kind is Rcpt:
            self._rcpt_attempted = True
        if kind is Data and self.mail is not None and self.mail.params.body == "BINARYMIME":
            return self._reject(verb, R.BINARYMIME_NEEDS_BDAT)
        if kind is Mail:
            assert isinstance(event, Mail)
            size = event.params.size
            if config.max_message_size and size is not None and size > config.max_message_size:
                # An error like any refusal: a client must not hold the connection by
                # announcing messages too big for ever.
                return self._reject(verb, R.MESSAGE_TOO_BIG)
        if kind is Auth:
            assert isinstance(event, Auth)
            return self._start_auth(event)
        self._pending = event  # _await_reply(event), inline: this is every MAIL and RCPT
        self._replies_due = 1
        return event

    def _check_pipelining(self, verb: str, event: Event) -> None:
        """The client sent more behind ``event``: note (or refuse) it if it had to wait."""
        kind = type(event)
        if kind is Quit or kind is Bdat:
            return  # nothing after QUIT matters; a BDAT's octets follow it by definition
        if kind is Auth:
            assert isinstance(event, Auth)
            if event.initial_response is not None and event.mechanism in _ONE_ROUND_TRIP_MECHANISMS:
                return
        if self.improper_pipelining is None:
            self.improper_pipelining = verb
        if self.config.reject_improper_pipelining:
            self._fatal(R.IMPROPER_PIPELINING, f"client sent more after {verb} without waiting for the reply")

    def _policy_refusal(self, event: Event) -> Reply | None:
        """The reply for a command the configuration or the session's security forbids."""
        config = self.config
        kind = type(event)
        if kind is StartTls:
            if config.tls is TlsPolicy.OFF:
                return R.NOT_IMPLEMENTED
            if self.tls_active:
                return R.ALREADY_TLS
        elif kind is Auth:
            if config.auth is AuthPolicy.OFF:
                return R.NOT_IMPLEMENTED
        elif kind is Bdat and not config.chunking:
            return R.NOT_IMPLEMENTED
        if self._tls_required and not self.tls_active and kind not in _ALLOWED_BEFORE_TLS:
            return R.STARTTLS_FIRST
        if kind is Auth and self._state in _HELLO_STATES:
            if self.authenticated is not None:
                return R.ALREADY_AUTHENTICATED
            if self.mail is not None:
                return R.AUTH_IN_TRANSACTION
            if not (self.tls_active or config.allow_insecure_auth):
                return R.AUTH_NEEDS_TLS
        if self._auth_required and self.authenticated is None and kind in _NEED_AUTH:
            return R.AUTH_FIRST
        return None

    def _sequence_refusal(self, event: Event) -> Reply | None:
        """The 503 (or 554) for a command out of sequence; None if it is in sequence."""
        state = self._state
        kind = type(event)
        if kind in TRANSITIONS.get(state, _NO_TRANSITIONS):
            return None
        if state is S.CONNECTED:
            return R.LHLO_FIRST if self.config.lmtp else R.HELLO_FIRST
        if kind is Mail and state in (S.MAIL, S.RCPT, S.CHUNKING):
            return R.NESTED_MAIL
        if kind in (Rcpt, Data, Bdat) and state is S.READY:
            return R.MAIL_FIRST
        if (kind is XClient or kind is XForward) and state in (S.MAIL, S.RCPT, S.CHUNKING):
            return R.TRANSACTION_IN_PROGRESS
        if kind in (Data, Bdat) and state is S.MAIL:
            if not self._rcpt_attempted:
                return R.RCPT_FIRST
            return R.NO_VALID_RECIPIENTS_LMTP if self.config.lmtp else R.NO_VALID_RECIPIENTS
        if kind is Data and state is S.CHUNKING:
            return R.DATA_AFTER_BDAT
        return R.BAD_SEQUENCE

    def _anytime(self, event: Event) -> Event:
        kind = type(event)
        if kind is Quit:
            return self._quit(event)
        self._junk_command()
        if kind is Rset:
            self._reset_transaction()
            if self._state in _HELLO_STATES:
                self._state = S.READY
            self._queue(R.RSET_OK)
        elif kind is Noop:
            self._queue(R.OK)
        elif kind is Help:
            self._queue(R.HELP_TEXT)
        elif kind is Vrfy and not self.config.vrfy_enabled:
            self._queue(R.VRFY_DEFAULT)
        elif kind is Expn and not self.config.expn_enabled:
            self._queue(R.EXPN_DEFAULT)
        else:
            self._await_reply(event)
        return event

    def _junk_command(self) -> None:
        # A command that changes nothing lasting (NOOP, RSET, HELP, VRFY, EXPN, a
        # second EHLO): past the limit, each is an error, and errors end the session.
        self._junk += 1
        if self._junk > self.config.max_junk_commands:
            self._errors += 1

    def _quit(self, event: Event) -> Event:
        self._queue(R.CLOSING)
        self._state = S.CLOSED
        return event

    def _reject(self, verb: str, reply: Reply | None, count: bool = True, cause: Exception | None = None) -> Event:
        """Answer a command ourselves and tell the application; count it as an error."""
        assert reply is not None
        self._queue(reply)
        if count:
            # Checked at the next next_event(): the application sees this event first.
            self._errors += 1
        return CommandRejected(verb, reply, cause)

    def _fatal(self, reply: Reply, why: str) -> None:
        self._queue(reply)
        self._state = S.CLOSED
        self._replies_due = 0
        self._error = RemoteProtocolError(why, reply)
        raise self._error

    # --- replies from the application -----------------------------------------------------------

    def _await_reply(self, pending: object, count: int = 1) -> None:
        self._pending = pending
        self._replies_due = count

    def send(self, reply: Reply) -> None:
        """Answer the pending event: 2xx/3xx accepts it, 4xx/5xx refuses it.

        For an LMTP ``EndOfMessage`` call it once per accepted recipient, in RCPT
        order.  A 421 ends the connection after the reply (the server is going
        away).  Raises :class:`LocalProtocolError` when no reply is due or the code
        does not fit the command (a 354 to RCPT, a 250 to DATA).
        """
        if not isinstance(reply, Reply):
            raise LocalProtocolError(f"send() takes a Reply, not {type(reply).__name__}")
        if not self._replies_due:
            raise LocalProtocolError(self._nothing_due())
        pending = self._pending
        accepted = reply.code < 400
        if accepted and reply.code not in _POSITIVE[type(pending)]:
            allowed = ", ".join(str(code) for code in sorted(_POSITIVE[type(pending)]))
            raise LocalProtocolError(
                f"{reply.code} is not a reply to {type(pending).__name__.strip('_')}: use {allowed}, 4xx or 5xx"
            )
        if isinstance(pending, _Greeting):
            if reply.code not in (220, 421, 554):
                raise LocalProtocolError("the greeting is 220, 421 or 554 (RFC 5321 §3.1)")
            if accepted and self._buffer and self.config.reject_early_talkers:
                # The client talked before its greeting: bytes that came in one read
                # with a PROXY header, or that the application fed before greeting.
                # next_event() would have said so; an application that greets
                # straight after the ProxyHeader event must not let them through.
                self._queue(R.EARLY_TALKER)
                self._state = S.CLOSED
                self._replies_due = 0
                self._error = RemoteProtocolError("client sent data before the greeting", R.EARLY_TALKER)
                return
        if accepted and isinstance(pending, Hello) and pending.verb != "HELO" and len(reply.text) > 1:
            # A client would read the lines after the first as extension keywords.
            raise LocalProtocolError(
                f"a positive reply to {pending.verb} is one line: the core adds the extension lines after it"
            )
        self._replies_due -= 1
        if accepted and type(pending) is EndOfMessage:
            # In LMTP any recipient that took the message, not only the last:
            # _transition sees only the last reply.
            self._message_taken = True
        if isinstance(pending, Hello):
            # The EHLO reply lists keywords; RFC 2034 gives it no enhanced code.
            self._out += self._hello_reply(pending, reply) if accepted else reply.to_bytes(False)
        elif accepted and type(pending) is XClient:
            self._out += reply.to_bytes(False)  # a greeting, which RFC 2034 exempts
        else:
            self._queue(_with_enhanced_code(reply, self._esc))
        if reply.code == 421:
            self._state = S.CLOSED
            self._replies_due = 0
            return
        if self._replies_due == 0:
            self._transition(pending, accepted)

    def _nothing_due(self) -> str:
        """Why no reply can be sent now, with what to do instead."""
        if self._state is S.PROXY:
            return "no reply is due: with proxy_protocol the greeting comes after the ProxyHeader event (next_event())"
        return "no command is waiting for a reply: call next_event() and answer when reply_due is true"

    def accept(self) -> None:
        """Send the standard reply for the pending event (the positive one where there is one).

        The greeting gets 220, EHLO the extension list, MAIL 250 2.1.0, RCPT
        250 2.1.5, DATA 354, the end of a message 250 (one per recipient in
        LMTP), STARTTLS 220, AUTH 235, VRFY 252, EXPN 252, XCLIENT the
        greeting again and XFORWARD 250 2.0.0.
        """
        if not self._replies_due:
            raise LocalProtocolError(self._nothing_due())
        pending = self._pending
        default = self._one_reply_defaults.get(type(pending))
        if default is not None:
            # What send(reply) does for these (every pending event but the
            # greeting, EHLO and LMTP's end of message), without building the
            # reply list, re-checking the reply, or serialising it: the defaults
            # fit their commands (a test holds them to _POSITIVE), none is a
            # 421, and each of these events is awaited with a single reply, so
            # only the queueing and the transition are left.
            accepted, plain, enhanced = default
            self._replies_due = 0
            self._out += enhanced if self._esc else plain
            self._transition(pending, accepted)
            return
        for reply in self._default_replies():
            self.send(reply)

    def standard_reply(self) -> Reply:
        """The reply :meth:`accept` would send first for the pending event.

        For LMTP's end of message, where ``accept()`` answers every recipient
        not answered yet, it is the next recipient's ``250 2.1.5 <...> delivered``:
        ``send(conn.standard_reply())`` answers that one recipient alone, for an
        application that refuses some recipients and delivers the others.
        """
        if not self._replies_due:
            raise LocalProtocolError(self._nothing_due())
        return self._default_replies()[0]

    def take_reply_delay(self) -> float:
        """Seconds to wait before writing the replies queued so far; 0 until more is owed.

        Only with ``config.error_delay``: once the client has made
        ``error_delay_after`` errors without delivering mail, each command it
        sends owes that long (Postfix's smtpd_error_sleep_time), so that probing
        for addresses or passwords gets slow long before ``max_errors`` ends the
        connection.  The core has no clock: the adapter waits, before its next
        write.  Each call returns what was owed since the last one.
        """
        owed, self._delay_owed = self._delay_owed, 0.0
        return owed

    @property
    def error_count(self) -> int:
        """The errors since the client last delivered mail, and all its failed logins (``config.max_errors``)."""
        return self._errors

    def _default_replies(self) -> list[Reply]:
        pending = self._pending
        greeting, defaults = _greeting_and_defaults(self.config.hostname, self.config.lmtp)
        if isinstance(pending, _Greeting):
            return [greeting]
        if isinstance(pending, EndOfMessage) and self.config.lmtp:
            # Only the recipients not answered yet: the application may have sent
            # some replies itself before calling accept() for the rest.
            remaining = self._recipients[len(self._recipients) - self._replies_due :]
            return [Reply(250, f"<{rcpt.recipient}> delivered", "2.1.5") for rcpt in remaining]
        return [defaults[type(pending)]] * self._replies_due

    def _transition(self, pending: object, accepted: bool) -> None:
        kind = type(pending)
        if accepted:
            # The commands of the table (the per-command case) come first: none
            # of them is a greeting, an end of message or AuthCredentials.
            next_state = TRANSITIONS.get(self._state, _NO_TRANSITIONS).get(kind)  # type: ignore[arg-type]
            if next_state is not None:  # VRFY and EXPN change nothing
                self._state = next_state
                then = self._ON_ACCEPTED.get(kind)
                if then is not None:
                    then(self, pending)
                return
        if kind is _Greeting:
            self._state = S.CONNECTED if accepted else S.REFUSED
            return
        if kind is EndOfMessage:
            self._reset_transaction()
            self._state = S.READY
            if accepted or self._message_taken:
                # A client that delivers mail is doing what it came for, but its
                # failed logins stay: mail between guesses must not buy more guesses.
                self._junk = 0
                self._errors = self._failed_logins
            else:
                self._errors += 1
            return
        if isinstance(pending, AuthCredentials):
            self._state = S.READY
            if accepted:
                self.authenticated = pending
            else:
                self._failed_logins += 1
        if not accepted:
            # The application refused the command: an error, as the core's own
            # refusals are, so that a client probing for addresses (a 550 per
            # unknown RCPT) or guessing passwords runs into max_errors, as in
            # Postfix, which counts every refusal.
            self._errors += 1

    # What accepting a command does beyond its move in TRANSITIONS (see _ON_ACCEPTED).

    def _accepted_rcpt(self, rcpt: Rcpt) -> None:
        self._recipients.append(rcpt)

    def _accepted_mail(self, mail: Mail) -> None:
        self.mail = mail

    def _accepted_hello(self, hello: Hello) -> None:
        self._reset_transaction()
        self.hello = hello
        self._esc = self.config.enhanced_status_codes and hello.verb != "HELO"

    def _accepted_data(self, data: Data) -> None:
        config = self.config
        self._reader = DataReader(
            config.max_line_length,
            check_newlines=config.bare_newlines is BareNewlinePolicy.REJECT,
            check_lines=config.long_lines is LongLinePolicy.REJECT,
        )

    def _accepted_starttls(self, starttls: StartTls) -> None:
        # Anything the client pipelined after STARTTLS was sent in plaintext
        # and could be an attacker's injection: it is dropped, never parsed.
        self._buffer.clear()
        self._tls_announced = False
        # A line left unfinished in plaintext must not join the first line under TLS.
        self._redactor = None

    def _accepted_xclient(self, xclient: XClient) -> None:
        """The session starts over as the named client's (XCLIENT_README), TLS aside.

        ``self.xclient`` keeps NAME, ADDR, PORT, DESTADDR and DESTPORT from earlier
        XCLIENT commands unless this one changes them; HELO, PROTO and LOGIN come
        from this one alone, as Postfix resets them.  A LOGIN is an authentication
        (the proxy did it): AUTH is then refused as done, and AuthPolicy.REQUIRED
        is met.  The client must say EHLO again.
        """
        earlier = self.xclient
        values = {attribute: getattr(xclient, attribute) for attribute in _XCLIENT_FIELDS}
        if earlier is not None:
            for attribute in _XCLIENT_LASTING:
                if values[attribute] is None:
                    values[attribute] = getattr(earlier, attribute)
        self.xclient = XClient._unchecked(**values)
        self._reset_session()
        login = xclient.login
        if login is not None and login != UNAVAILABLE:
            self.authenticated = AuthCredentials._unchecked(
                mechanism="XCLIENT", username=login, authorization_id="", password=None, token=None, verifier=None
            )

    def _accepted_xforward(self, xforward: XForward) -> None:
        # XFORWARD_README: the first XFORWARD sets every attribute to [UNAVAILABLE],
        # each one then changes those it gives.
        earlier = self.xforward
        values = {}
        for attribute in _XFORWARD_FIELDS:
            value = getattr(xforward, attribute)
            if value is None:
                value = getattr(earlier, attribute) if earlier is not None else UNAVAILABLE
            values[attribute] = value
        self.xforward = XForward._unchecked(**values)

    #: Accepted commands that change more than the state, and what they change
    #: (a lookup by type: cheaper than asking isinstance of each in turn).
    _ON_ACCEPTED: ClassVar[dict[type[object], Callable[[ServerConnection, Any], None]]] = {
        Rcpt: _accepted_rcpt,
        Mail: _accepted_mail,
        Hello: _accepted_hello,
        Data: _accepted_data,
        StartTls: _accepted_starttls,
        XClient: _accepted_xclient,
        XForward: _accepted_xforward,
    }

    def _hello_reply(self, hello: Hello, reply: Reply) -> bytes:
        """EHLO/LHLO: the application's first line, then the extensions (RFC 5321 §4.1.1.1).

        The wire form, without enhanced codes (RFC 2034 gives this reply none).
        """
        if hello.verb == "HELO":
            self._extensions = frozenset()
            self._pipelining_offered = False
            self._command_line = self.config.max_command_line
            return reply.to_bytes(False)
        wire, self._extensions = _ehlo_reply(reply.text[0], tuple(self._extension_lines()))
        self._pipelining_offered = "PIPELINING" in self._extensions
        self._command_line = self.config.max_command_line + _line_allowance(self._extensions)
        return wire

    def _extension_lines(self) -> list[str]:
        config = self.config
        lines = []
        if config.pipelining:
            lines.append("PIPELINING")
        lines.append(f"SIZE {config.max_message_size}")
        if config.eight_bit_mime:
            lines.append("8BITMIME")
        if config.enhanced_status_codes:
            lines.append("ENHANCEDSTATUSCODES")
        if config.smtputf8:
            lines.append("SMTPUTF8")
        if config.chunking:
            lines.append("CHUNKING")
            if config.binarymime:
                lines.append("BINARYMIME")
        if config.dsn:
            lines.append("DSN")
        if config.tls is not TlsPolicy.OFF and not self.tls_active:
            lines.append("STARTTLS")
        if config.auth is not AuthPolicy.OFF and (self.tls_active or config.allow_insecure_auth):
            lines.append("AUTH " + " ".join(config.auth_mechanisms))
        if config.requiretls and self.tls_active:
            lines.append("REQUIRETLS")
        if config.advertise_limits:
            lines.append(f"LIMITS RCPTMAX={config.max_recipients}")
        if config.xclient:
            lines.append(_XCLIENT_LINE)
        if config.xforward:
            lines.append(_XFORWARD_LINE)
        lines.extend(config.extra_extensions)
        return lines

    def _queue(self, reply: Reply) -> None:
        self._out += _wire(reply, self._esc)

    def end_session(self, reply: Reply) -> None:
        """End the session from the server's side: queue ``reply`` (a 421) and close.

        For what the client did not cause: a timeout, a shutdown, an overload.
        Valid in any state, whether or not a reply is due; any message being
        received is dropped.  The reply gets an enhanced code only if the session
        advertised ENHANCEDSTATUSCODES, like every other reply.
        """
        if not isinstance(reply, Reply) or reply.code != 421:
            raise LocalProtocolError("end_session() takes a 421 Reply (RFC 5321 §3.8)")
        if self._state is S.CLOSED:
            return
        self._queue(_with_enhanced_code(reply, self._esc))
        self._state = S.CLOSED
        self._replies_due = 0

    @property
    def data_to_send_size(self) -> int:
        """How many octets :meth:`data_to_send` would return now.

        A loop that writes only before it reads (so the replies to a pipelined
        burst leave together) should also write once this passes a bound of its
        own: one read can hold thousands of commands, and some replies are far
        longer than their commands (96 KiB of ``EHLO a`` lines is 1.6 MB of
        EHLO replies).  Looking after each event is enough: every command gives
        one, and a call queues a reply or two at most before returning.
        """
        return len(self._out)

    def data_to_send(self) -> bytes:
        """Everything queued for the client since the last call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # --- TLS --------------------------------------------------------------------------------------

    def tls_established(self) -> None:
        """The adapter finished the TLS handshake the ``TlsHandshake`` event asked for.

        The session starts over (RFC 3207 §4.2): the client must send EHLO again,
        and nothing learnt before TLS (hello, authentication, transaction, what an
        XCLIENT said) is kept.
        """
        if self._state is not S.TLS:
            raise LocalProtocolError("tls_established() is only valid after a TlsHandshake event")
        self._buffer.clear()
        self.tls_active = True
        self._reset_session()
        # Said in plaintext, where anyone on the path could have said it: a proxy
        # that speaks for a client over TLS says so again inside it.
        self.xclient = None
        self._state = S.CONNECTED

    # --- AUTH -------------------------------------------------------------------------------------

    def _start_auth(self, event: Auth) -> Event | None:
        config = self.config
        name = event.mechanism
        factory = config.auth_mechanism_factories.get(name) or MECHANISMS.get(name)
        if name not in config.auth_mechanisms or factory is None:
            return self._reject("AUTH", R.AUTH_UNKNOWN_MECHANISM)
        try:
            self._mechanism = factory(config.hostname)
        except Exception as exc:  # (an application's factory: see _sasl_step)
            return self._reject("AUTH", R.AUTH_TEMPORARY_FAILURE, cause=exc)
        initial = event.initial_response
        if initial is None:
            return self._sasl_step(None)
        if initial == b"=":  # RFC 4954 §4: "=" is an empty initial response
            return self._sasl_step(b"")
        return self._sasl_base64(initial)

    def _auth_line(self, line: bytes | object) -> Event | None:
        if self._auth_refusal is not None:
            return self._end_error_challenge(line)
        if line is OVERLONG:
            return self._end_auth(R.AUTH_LINE_TOO_LONG)
        assert isinstance(line, bytes)
        line = line.rstrip(b" \t")  # trailing blanks, tolerated as on command lines (see decode_line)
        if line == b"*":
            return self._end_auth(R.AUTH_CANCELLED)
        return self._sasl_base64(line)

    def _sasl_base64(self, data: bytes) -> Event | None:
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return self._end_auth(R.AUTH_BAD_BASE64)
        return self._sasl_step(decoded)

    def _sasl_step(self, response: bytes | None) -> Event | None:
        assert self._mechanism is not None
        # A mechanism may be the application's (auth_mechanism_factories): whatever it
        # raises, or a challenge that is not bytes, ends the exchange with RFC 4954's
        # 454, never with a client left waiting for a reply or an exception out of
        # next_event().  Its text stays out of the reply; the event carries it.
        try:
            result = self._mechanism.step(response)
            if not isinstance(result, AuthCredentials):
                # RFC 4954 §4: a challenge is "334" SP [base64]; an empty one is "334 ".
                challenge = b"334 " + base64.b64encode(result) + b"\r\n"
        except SaslFailure as failure:
            return self._end_auth(_sasl_failure_reply(failure))
        except Exception as exc:
            return self._end_auth(R.AUTH_TEMPORARY_FAILURE, cause=exc)
        if isinstance(result, AuthCredentials):
            self._mechanism = None
            self._state = S.READY
            self._await_reply(result)
            return result
        self._state = S.AUTH
        self._out += challenge
        return None

    def send_auth_error(self, error: OAuthError | bytes, reply: Reply | None = None) -> None:
        """Refuse the pending ``AuthCredentials`` after telling the client why, in a challenge.

        XOAUTH2 and OAUTHBEARER (RFC 7628 §3.2.2) refuse a token this way:
        ``334`` and the base64 of a JSON error, which says whether the token
        expired or lacks a scope.  ``error`` is an :class:`~smtpcore.OAuthError`
        (written for the mechanism in use: XOAUTH2 clients read Google's HTTP
        statuses) or the JSON itself.  The client answers (``^A``, or an empty
        line for XOAUTH2), and only then is the refusal sent: ``reply``, else
        the OAuthError's, else 535 5.7.8; an :class:`~smtpcore.AuthRefused` event
        says so.  It counts as a failed login then, as a refusal by :meth:`send`
        does.  Only XOAUTH2 and OAUTHBEARER have this step (any other
        mechanism's client would read the challenge as its next question):
        for the others the refusal goes at once, as :meth:`send` sends it.
        """
        if not isinstance(error, (OAuthError, bytes)):
            raise LocalProtocolError(f"send_auth_error() takes an OAuthError or bytes, not {type(error).__name__}")
        if reply is None:
            reply = (error.reply if isinstance(error, OAuthError) else None) or R.AUTH_FAILED
        if not isinstance(reply, Reply) or not 400 <= reply.code < 600 or reply.code == 421:
            raise LocalProtocolError("send_auth_error() refuses with a 4xx or 5xx Reply; a 421 goes with send()")
        if not self._replies_due:
            raise LocalProtocolError(self._nothing_due())
        pending = self._pending
        if not isinstance(pending, AuthCredentials):
            what = type(pending).__name__.strip("_")
            raise LocalProtocolError(f"send_auth_error() answers AuthCredentials, not {what}")
        if pending.mechanism not in ERROR_CHALLENGE_MECHANISMS:
            self.send(reply)
            return
        challenge = error.to_json(pending.mechanism) if isinstance(error, OAuthError) else error
        self._replies_due = 0
        self._auth_refusal = reply
        self._state = S.AUTH
        self._out += b"334 " + base64.b64encode(challenge) + b"\r\n"

    def _end_error_challenge(self, line: bytes | object) -> Event:
        # Whatever the client answered (RFC 7628's ^A, XOAUTH2's empty line, even a
        # line too long to read), the exchange ends with the refusal the application
        # chose; but a "*" cancels, and RFC 4954 §4 wants 501 for that.
        reply, self._auth_refusal = self._auth_refusal, None
        assert reply is not None
        if isinstance(line, bytes) and line.rstrip(b" \t") == b"*":
            reply = R.AUTH_CANCELLED
        self._queue(_with_enhanced_code(reply, self._esc))
        self._transition(self._pending, accepted=False)
        return AuthRefused(reply)

    def _end_auth(self, reply: Reply, cause: Exception | None = None) -> Event:
        self._mechanism = None
        self._state = S.READY
        return self._reject("AUTH", reply, cause=cause)

    # --- message content --------------------------------------------------------------------------

    def reject_message(self, reply: Reply) -> None:
        """Refuse the message being received; the reply goes out after its end.

        Content keeps being read (and no longer handed out) until the end of
        data, as RFC 5321 requires: nothing may be said mid-stream.
        """
        if not isinstance(reply, Reply) or reply.code < 400:
            raise LocalProtocolError("reject_message() takes a 4xx or 5xx Reply")
        if self._state not in (S.DATA, S.CHUNK, S.CHUNKING):
            raise LocalProtocolError("reject_message() is only valid while a message is being received")
        if self._message_error is None:
            self._message_error = reply

    def _start_chunk(self, event: Bdat, refusal: Reply | None) -> Event | None:
        """BDAT: its octets are read even when the command is refused (RFC 3030 §2),
        otherwise they would be parsed as commands."""
        if refusal is None and self.mail is not None and self._message_error is None:
            limit = self.config.max_message_size
            if limit and self._message_size + event.size > limit:
                self._message_error = R.MESSAGE_TOO_BIG
        self._chunk_refusal = refusal
        self._chunk_last = event.last
        self._state_after_refused_chunk = self._state
        self._reader = ChunkReader(event.size)
        self._state = S.CHUNK
        return event if refusal is None else None

    def _next_content_event(self) -> Event | Sentinel | None:
        reader = self._reader
        assert reader is not None
        if not self._received and not reader.done:  # every message, once, right after its 354
            return self._end_of_input()
        piece, done = reader.feed_from(self._received)  # the buffer's bytes, consumed in place
        self._buffer.rewind()
        if piece and self._chunk_refusal is None:
            limit = self.config.max_message_size
            room = limit - self._message_size
            self._message_size += len(piece)
            if self._message_error is None:
                if limit and len(piece) > room:
                    # Hand out exactly the octets up to the limit: the events must
                    # not depend on how the input happened to be split.
                    self._message_error = R.MESSAGE_TOO_BIG
                    if room > 0:
                        return unchecked_message_data(piece[:room])
                else:
                    return unchecked_message_data(piece)
        if not done:
            if not piece:
                return self._end_of_input()
            return None
        if self._state is S.CHUNK:
            return self._end_chunk()
        return self._end_message()

    def _end_chunk(self) -> Event | None:
        refusal = self._chunk_refusal
        if refusal is not None:
            self._chunk_refusal = None
            self._state = self._state_after_refused_chunk
            return self._reject("BDAT", refusal)
        if self._chunk_last or (self._message_error is not None and self._message_error.code == 421):
            return self._end_message()  # (a 421 ends the session at once: see there)
        self._state = S.CHUNKING
        if self._message_error is not None:
            self._queue(self._message_error)
        else:
            self._queue(Reply(250, f"{self._message_size} octets received", "2.0.0"))
        return None

    def _end_message(self) -> Event:
        error = self._message_error
        reader = self._reader
        if error is None and isinstance(reader, DataReader):
            if reader.bare_newline and self.config.bare_newlines is BareNewlinePolicy.REJECT:
                error = R.BARE_NEWLINE
            elif reader.long_line and self.config.long_lines is LongLinePolicy.REJECT:
                error = R.LINE_TOO_LONG_IN_DATA
                if self.config.max_line_length != 1000:  # the reply names the limit
                    text = f"Message contains a line longer than {self.config.max_line_length - 2} octets"
                    error = Reply(error.code, text, error.enhanced)
        count = len(self._recipients) if self.config.lmtp else 1
        if error is None:
            self._state = S.READY
            end = EndOfMessage()
            self._message_taken = False  # by any recipient, so far (LMTP answers once for each)
            self._await_reply(end, count)
            return end
        if error.code == 421:
            # The application's "closing" (RFC 5321 §3.8: the server is shutting the
            # channel): said once, not for each LMTP recipient, and the session ends,
            # as a 421 to a command ends it (see send()).
            self._queue(error)
            self._reset_transaction()
            self._state = S.CLOSED
            self._replies_due = 0
            return MessageRejected(error)
        for _ in range(count):
            self._queue(error)
        self._errors += 1  # a refused message is an error, as a refused command is
        self._reset_transaction()
        self._state = S.READY
        return MessageRejected(error)


def _sasl_failure_reply(failure: SaslFailure) -> Reply:
    """501 with a mechanism's own words when they make a reply line, else a fixed one.

    The words come from application code: one with a line break or too long for
    a line must not leave the exchange unanswered (the client would wait for
    ever) or raise out of ``next_event()``.
    """
    try:
        return Reply(501, str(failure) or R.AUTH_MALFORMED.text[0], "5.5.2")
    except LocalProtocolError:
        return R.AUTH_MALFORMED
