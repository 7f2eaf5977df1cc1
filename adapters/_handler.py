"""The handler interface, and the one place where events become hook calls.

Why this module exists
----------------------
An application writes its server logic once, as a :class:`Handler` (plain
functions, for the blocking and gevent adapters) or an :class:`AsyncHandler`
(coroutines, for asyncio and trio).  Both have the same hooks with the same
names; every hook is optional.

Which hook an event calls, what a hook's result means, how an exception becomes
a reply, when the envelope starts and ends: all of that is decided here, by
:class:`Dispatcher`, and by nothing in the adapters.  The dispatcher is a
generator of *actions*, in the style of a sans-IO protocol:

* :class:`Receive` -- write its ``send`` bytes if it has any (the replies owed
  so far), then read some bytes (within ``timeout`` seconds, and no more than
  its ``limit`` if it has one) and send back the bytes, ``b""`` at end of file,
  :data:`TIMED_OUT` or :data:`SHUTDOWN` (:data:`LOST` if the write failed).  A
  graceful shutdown answers :data:`SHUTDOWN` at once to a read marked ``idle``
  (no transaction is open), and to every read once its grace period is over;
* :class:`Send` -- write these bytes, send back ``None``;
* :class:`CallHook` -- call the hook through :func:`call_hook` /
  :func:`acall_hook` and send back what it returns; :data:`LOST` if the
  adapter had to stop it (a hook still running at a shutdown's deadline is
  cancelled, or its greenlet killed);
* :class:`StartTls` -- do the TLS handshake now; send back a :class:`TlsInfo`,
  or ``None`` if it failed (after STARTTLS's 220, and on an implicit-TLS port
  behind a PROXY-protocol proxy, after the proxy's header);
* :class:`Pause` -- wait ``seconds``, send back ``None`` (the core's error delay,
  before a write; a shutdown's deadline may end it sooner);
* :class:`Close` -- close the socket, send back ``None``.

So each adapter is the same short loop -- read, feed, next_event, call hook,
send reply, write -- in its own dialect, with no SMTP knowledge at all.

:data:`LOST` in answer to any action ends the session as a client that left
does: the dispatcher then asks for a :class:`Close`, ``message_aborted`` (if
content had started) and ``connection_closed``.  An adapter that stops a
session in the middle of an action (a shutdown's deadline) answers it
:data:`LOST` and carries out these last actions too, rather than closing the
generator, so that the handler hears of the end it was promised.

An exception the dispatcher does not expect (a bug, in the core or here) ends
the session the same way: it is logged, the client gets the replies still owed
and ``421 4.3.0`` (never the error's text), and the same last actions follow.
The generator itself does not raise.

Replies are flushed only before a read, a handshake or a close, so the replies
to a pipelined burst leave in one write.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from smtpcore import (
    NEED_DATA,
    AuthCredentials,
    Bdat,
    CommandRejected,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Hello,
    LocalProtocolError,
    Mail,
    MailParams,
    MessageData,
    MessageRejected,
    OAuthError,
    ProxyHeader,
    Rcpt,
    RcptParams,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    State,
    TlsHandshake,
    XClient,
    XForward,
)

__all__ = [
    "HOOK_FAILURES",
    "LOST",
    "SHUTDOWN",
    "TIMED_OUT",
    "INSUFFICIENT_AUTHORIZATION",
    "AsyncHandler",
    "CallHook",
    "Close",
    "Dispatcher",
    "Envelope",
    "Handler",
    "Pause",
    "Receive",
    "Recipient",
    "SMTPError",
    "Send",
    "Session",
    "StartTls",
    "TlsInfo",
    "acall_hook",
    "call_hook",
    "handshake_first",
    "refusal",
    "unused_hooks",
    "wants_transcript",
]

log = logging.getLogger("smtpcore.adapters")

#: What an unexpected exception in a hook turns into (its text is only logged).
LOCAL_ERROR = Reply(451, "Requested action aborted: local error in processing", "4.3.0")
#: The default answer to XCLIENT and XFORWARD: whom to believe is the application's decision.
INSUFFICIENT_AUTHORIZATION = Reply(550, "Insufficient authorization", "5.7.0")
#: The greeting when a hook failed before the session could begin, and the last reply of a
#: session the dispatcher could not carry on (something it did not expect was raised).
GREETING_ERROR = Reply(421, "Service not available, closing transmission channel", "4.3.0")
#: The greeting when the server already has ``max_connections`` sessions.
TOO_MANY_CONNECTIONS = Reply(421, "Too many connections, try again later", "4.3.2")
#: Sent when a wait governed by ``conn.timeout`` ran out.
TIMEOUT_REPLY = Reply(421, "Timeout exceeded, closing connection", "4.4.2")
#: Sent to sessions still open when a graceful shutdown reaches its deadline.
SHUTDOWN_REPLY = Reply(421, "Server shutting down, closing connection", "4.3.2")
#: The default answer of the ``auth`` hook: nobody is let in unless the handler says so.
AUTH_FAILED = Reply(535, "Authentication credentials invalid", "5.7.8")

#: How many octets an adapter reads at once.
READ_SIZE = 65536


class SMTPError(Exception):
    """Raise from a hook to answer with this reply: ``SMTPError(550, "5.1.1", "No such user")``."""

    def __init__(self, code: int, enhanced_code: str | None = None, text: str = "") -> None:
        self.reply = Reply(code, text, enhanced_code)
        super().__init__(str(self.reply))


# --- what the handler sees --------------------------------------------------------------------------


@dataclass
class Recipient:
    """One accepted recipient: ``address`` is what the ``rcpt_to`` hook made of ``original``."""

    address: str
    params: RcptParams
    original: str


#: The parameters of an envelope without a sender yet: frozen, so every such envelope shares it
#: (a new envelope is made after every message, and making MailParams takes a microsecond).
_NO_PARAMS = MailParams()


@dataclass
class Envelope:
    """The current mail transaction: sender, accepted recipients, content size."""

    mail_from: str | None = None
    mail_params: MailParams = _NO_PARAMS
    rcpt_tos: list[Recipient] = field(default_factory=list)
    #: Octets of content handed to ``data_chunk`` so far.
    size: int = 0
    #: ``time.time()`` when the sender was accepted.
    started_at: float | None = None
    #: ``data_start`` was called (so ``message_complete`` or ``message_aborted`` will be).
    data_started: bool = False
    #: Where the message came from, as the MTA in front said it with XFORWARD before
    #: MAIL (``ServerConfig(xforward=True)``), or None.
    xforward: XForward | None = None

    @property
    def recipients(self) -> list[str]:
        return [rcpt.address for rcpt in self.rcpt_tos]


@dataclass
class TlsInfo:
    """What an adapter learnt from the handshake (``ssl`` objects give all three)."""

    version: str | None = None
    cipher: str | None = None
    peer_certificate: dict[str, Any] | None = None


@dataclass
class Session:
    """Everything a hook may want to know about the connection, kept up to date by the dispatcher."""

    #: ``(host, port[, ...])`` for TCP, the socket path (often ``""``) for Unix sockets.
    peer: Any = None
    local: Any = None
    #: ``time.time()`` when the connection was accepted.
    connected_at: float = field(default_factory=time.time)
    #: The name the client gave in EHLO/HELO/LHLO, once accepted.
    hello: str | None = None
    hello_verb: str | None = None
    tls: bool = False
    tls_info: TlsInfo | None = None
    #: The accepted AUTH exchange (``credentials.username`` is the identity).  After
    #: an accepted XCLIENT with LOGIN, its mechanism is ``"XCLIENT"``.
    credentials: AuthCredentials | None = None
    envelope: Envelope = field(default_factory=Envelope)
    bytes_received: int = 0
    #: Free for the application (a database handle, a temporary file, ...).
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The session's connection, set by the dispatcher, for what is read from it
        # directly.  Not a field: dataclasses.asdict() would deep-copy it.
        self._conn: ServerConnection | None = None

    @property
    def improper_pipelining(self) -> str | None:
        """The command after which the client first sent more without waiting for its
        reply (``"DATA"``, ``"EHLO"``...), or None: RFC 2920 §3.1, see
        ``ServerConfig.reject_improper_pipelining``.  A policy may refuse such a
        client at DATA, as Postfix's reject_unauth_pipelining does."""
        return self._conn.improper_pipelining if self._conn is not None else None

    @property
    def xclient(self) -> XClient | None:
        """What the accepted XCLIENT commands said (NAME, HELO, PROTO...), or None;
        ``peer`` and ``local`` then hold ADDR/PORT and DESTADDR/DESTPORT.  Forgotten
        at a STARTTLS handshake, with ``peer`` and ``local`` back to the connection's."""
        return self._conn.xclient if self._conn is not None else None

    @property
    def xforward(self) -> XForward | None:
        """What the accepted XFORWARD commands said for the coming (or current)
        transaction, or None; ``envelope.xforward`` keeps it with the message."""
        return self._conn.xforward if self._conn is not None else None

    @property
    def authenticated(self) -> str | None:
        """The authenticated identity, or None."""
        return self.credentials.username if self.credentials is not None else None

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        return self.tls_info.peer_certificate if self.tls_info else None

    @property
    def transaction_started_at(self) -> float | None:
        return self.envelope.started_at


# --- the hooks --------------------------------------------------------------------------------------

#: What ``message_complete`` may return: one reply, or (LMTP) one per recipient.
CompleteResult = Reply | list[Reply | None] | None


class Handler:
    """Blocking hooks (blocking and gevent adapters).  Override the ones you need.

    Return ``None`` for the standard reply, a :class:`~smtpcore.Reply` to choose
    the reply, or raise :class:`SMTPError`.  Any other exception is logged and
    the client gets ``451 4.3.0``; the session continues.
    """

    def connection_opened(self, session: Session) -> Reply | None:
        """Refuse the connection by returning a 554 or 421 reply."""
        return None

    def hello(self, session: Session, hello: Hello) -> Reply | None:
        return None

    def mail_from(self, session: Session, mail: Mail) -> Reply | None:
        return None

    def rcpt_to(self, session: Session, rcpt: Rcpt) -> Reply | str | None:
        """Return a string to accept the recipient under another address."""
        return None

    def data_start(self, session: Session) -> Reply | None:
        return None

    def data_chunk(self, session: Session, data: bytes) -> Reply | None:
        """A piece of content; returning a 4xx/5xx reply refuses the message (after its end)."""
        return None

    def message_complete(self, session: Session, envelope: Envelope) -> CompleteResult:
        return None

    def message_aborted(self, session: Session, reply: Reply | None) -> None:
        """A message whose content had started will not be delivered (``reply`` is None if the client left)."""

    def auth(self, session: Session, credentials: AuthCredentials) -> bool | Reply | OAuthError | None:
        """True accepts (235); False or None refuses (535).

        An ``OAuthError`` refuses an XOAUTH2 or OAUTHBEARER token the way those
        mechanisms do: its JSON in a challenge first, then its reply (535).
        """
        return False

    def xclient(self, session: Session, xclient: XClient) -> Reply | None:
        """XCLIENT (``ServerConfig(xclient=True)``): None accepts, and the session starts over
        as the named client's; the default refuses (550 5.7.0).

        Accept it only from the proxies you trust, by ``session.peer``: once one
        is accepted, ``session.peer`` is the named client's, so a second XCLIENT
        is judged by that address, as Postfix judges it.
        """
        return INSUFFICIENT_AUTHORIZATION

    def xforward(self, session: Session, xforward: XForward) -> Reply | None:
        """XFORWARD (``ServerConfig(xforward=True)``): None accepts (250), and
        ``session.xforward`` and then ``envelope.xforward`` say where the next message
        came from; the default refuses (550 5.7.0).  Accept it from the MTA that
        hands you mail (Postfix with ``smtp_send_xforward_command = yes``), by
        ``session.peer``: it only says what to log, but logs are evidence.
        """
        return INSUFFICIENT_AUTHORIZATION

    def tls_established(self, session: Session) -> None:
        return None

    def connection_closed(self, session: Session) -> None:
        return None

    def transcript(self, session: Session, direction: str, data: bytes) -> None:
        """The wire bytes, ``direction`` ``"C"`` (from the client) or ``"S"`` (ours).

        Called only if a handler overrides it.  SASL secrets arrive redacted
        (``ServerConnection.redact``).
        """
        return


class AsyncHandler:
    """The same hooks as :class:`Handler`, as coroutines (asyncio and trio adapters)."""

    async def connection_opened(self, session: Session) -> Reply | None:
        return None

    async def hello(self, session: Session, hello: Hello) -> Reply | None:
        return None

    async def mail_from(self, session: Session, mail: Mail) -> Reply | None:
        return None

    async def rcpt_to(self, session: Session, rcpt: Rcpt) -> Reply | str | None:
        return None

    async def data_start(self, session: Session) -> Reply | None:
        return None

    async def data_chunk(self, session: Session, data: bytes) -> Reply | None:
        return None

    async def message_complete(self, session: Session, envelope: Envelope) -> CompleteResult:
        return None

    async def message_aborted(self, session: Session, reply: Reply | None) -> None:
        return None

    async def auth(self, session: Session, credentials: AuthCredentials) -> bool | Reply | OAuthError | None:
        return False

    async def xclient(self, session: Session, xclient: XClient) -> Reply | None:
        """As :meth:`Handler.xclient`."""
        return INSUFFICIENT_AUTHORIZATION

    async def xforward(self, session: Session, xforward: XForward) -> Reply | None:
        """As :meth:`Handler.xforward`."""
        return INSUFFICIENT_AUTHORIZATION

    async def tls_established(self, session: Session) -> None:
        return None

    async def connection_closed(self, session: Session) -> None:
        return None

    async def transcript(self, session: Session, direction: str, data: bytes) -> None:
        """As :meth:`Handler.transcript`."""
        return


# --- actions: what the dispatcher asks an adapter to do ---------------------------------------------
#
# Not frozen: a message makes about ten of them, and a frozen dataclass's
# __init__ (object.__setattr__ per field) costs twice a plain one.  Nothing
# keeps an action after carrying it out.


@dataclass(slots=True)
class Receive:
    """Write ``send`` first (the replies owed so far, if any), then read what has
    come (``READ_SIZE`` octets at most, or the adapter's own read size) within
    ``timeout`` seconds.  A failed write is ``LOST``.

    What was read may come as a ``memoryview`` of the adapter's read buffer
    (asyncio's, which every connection shares): it is valid only until the
    dispatcher's next action, so the dispatcher copies whatever it keeps longer
    (the core copies what it is fed)."""

    timeout: float
    send: bytes = b""
    #: The session waits for a command with nothing under way (the core's
    #: ``ServerConnection.idle``), or for the PROXY header: a graceful shutdown need
    #: not wait for it, and cuts it off at once (with a 421, unless no SMTP has been
    #: spoken yet).
    idle: bool = False
    #: The most octets this read may take, or None for the adapter's usual read
    #: size.  Set only for the PROXY header on an implicit-TLS port (the core's
    #: ``ServerConnection.max_read``): the octets after it are the client's TLS
    #: handshake, which only the TLS layer may read, so the adapter must not read
    #: one more, nor read ahead of the next ``Receive`` (asyncio stops reading).
    limit: int | None = None


@dataclass(slots=True)
class Send:
    data: bytes


@dataclass(slots=True)
class CallHook:
    name: str
    args: tuple[Any, ...]


@dataclass(slots=True)
class StartTls:
    """Do the server side of the TLS handshake within ``timeout`` seconds."""

    timeout: float


@dataclass(slots=True)
class Pause:
    """Wait ``seconds`` before going on: the replies about to be written are held back.

    The core's error delay (``ServerConfig.error_delay``): a client that keeps
    making errors waits for its replies, as Postfix makes it wait."""

    seconds: float


@dataclass(slots=True)
class Close:
    pass


Action = Receive | Send | CallHook | StartTls | Pause | Close


class _Signal:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: Replies are written before each read, the replies to a pipelined burst together;
#: past this many octets they are written at once, so a burst cannot make the
#: replies waiting in memory grow with it.  Checked after every event: the core
#: returns one for each command, those it answers itself (NOOP, HELP...) included,
#: and queues a reply or two at most before it does.
FLUSH_AT = 64 * 1024

#: Send back for a :class:`Receive` whose timeout ran out.
TIMED_OUT = _Signal("TIMED_OUT")
#: Send back for a :class:`Receive` interrupted by a graceful shutdown: at its start
#: if the read is ``idle``, else at the end of its grace period.
SHUTDOWN = _Signal("SHUTDOWN")
#: Send back for any action that failed because the connection is gone (reset, broken pipe).
LOST = _Signal("LOST")


class _ConnectionLost(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _HookFailed:
    error: BaseException


#: What a hook may raise and still be a hook that failed (logged, answered 451).
HOOK_FAILURES: tuple[type[BaseException], ...] = (Exception,)


def call_hook(handler: Handler, action: CallHook, failures: tuple[type[BaseException], ...] = HOOK_FAILURES) -> Any:
    """Run a blocking hook; an exception comes back as a value for the dispatcher.

    ``failures`` are the exceptions that count as the hook's failure.  An adapter
    whose library raises a ``BaseException`` of its own to bound a wait (gevent's
    ``Timeout``) adds it, so that a hook bounding a lookup with it fails as any
    other hook does; what the adapter itself stops a hook with must stay out.
    """
    try:
        return getattr(handler, action.name)(*action.args)
    except failures as exc:
        return _HookFailed(exc)


async def acall_hook(handler: AsyncHandler, action: CallHook) -> Any:
    """Run an async hook; an exception comes back as a value for the dispatcher."""
    try:
        hook: Callable[..., Awaitable[Any]] = getattr(handler, action.name)
        return await hook(*action.args)
    except Exception as exc:
        return _HookFailed(exc)


#: Hooks whose answer does not matter: if one raises, the error is only logged.
_NOTIFICATIONS = frozenset({"tls_established", "connection_closed", "message_aborted", "transcript"})

#: Hooks whose base version does nothing and returns None.
_NO_OP_HOOKS = (
    "connection_opened",
    "hello",
    "mail_from",
    "rcpt_to",
    "data_start",
    "data_chunk",
    "message_complete",
    "message_aborted",
    "tls_established",
    "connection_closed",
)


def check_handler(handler: object, server: str) -> None:
    """Refuse a handler of the other kind, which would answer 451 to every hook it overrides.

    ``server`` names the adapter: an asyncio or trio server takes an
    :class:`AsyncHandler` (it awaits what a hook returns), a blocking or gevent one
    a :class:`Handler` (it calls the hooks in its own thread or greenlet).
    """
    wants_async = server in ("asyncio", "trio")
    wrong = Handler if wants_async else AsyncHandler
    if isinstance(handler, wrong) and not isinstance(handler, AsyncHandler if wants_async else Handler):
        right, other = ("AsyncHandler", "Handler") if wants_async else ("Handler", "AsyncHandler")
        raise TypeError(
            f"the {server} server takes an adapters.{right}, not an adapters.{other} "
            f"({type(handler).__name__}): {other} is for the "
            + ("blocking and gevent servers" if wants_async else "asyncio and trio servers")
        )


def unused_hooks(handler: object) -> frozenset[str]:
    """The no-op hooks ``handler`` leaves as they are: the dispatcher need not call them.

    A hook call is a round trip through the adapter (for asyncio and trio a
    coroutine and an await); skipping one whose answer is known to be ``None``
    changes nothing but the time it takes.
    """
    instance = getattr(handler, "__dict__", {})
    unused = set()
    for name in _NO_OP_HOOKS:
        hook = getattr(type(handler), name, None)
        if name not in instance and hook in (getattr(Handler, name), getattr(AsyncHandler, name)):
            unused.add(name)
    return frozenset(unused)


def wants_transcript(handler: object) -> bool:
    """Whether ``handler`` overrides the ``transcript`` hook (the dispatcher skips it otherwise)."""
    hook = getattr(type(handler), "transcript", None)
    overridden = hook is not None and hook not in (Handler.transcript, AsyncHandler.transcript)
    # A handler may also switch it off per instance (``transcript_enabled = False``).
    return overridden and bool(getattr(handler, "transcript_enabled", True))


def handshake_first(config: ServerConfig) -> bool:
    """Whether the adapter makes the implicit-TLS handshake as the connection opens,
    before the dispatcher starts (and then sets ``Session.tls_info`` itself).

    Not behind a PROXY-protocol proxy: its header comes first, in plaintext, and
    the dispatcher asks for the handshake (a :class:`StartTls`) once it has read it.
    """
    return config.implicit_tls and not config.proxy_protocol


def refusal(config: ServerConfig, reply: Reply = TOO_MANY_CONNECTIONS) -> bytes:
    """The bytes of a greeting that refuses the connection (the adapters' connection limit).

    None on an implicit-TLS port: the client expects a handshake first, and would
    take a plaintext 421 for a TLS error ("wrong version number").  A 421 over TLS
    would cost a handshake, a private-key operation, for each connection past the
    limit, which is what a flood makes; a close without a word costs nothing, and
    the client takes it for a failed connection, to try again later.
    """
    if config.implicit_tls:
        return b""
    conn = ServerConnection(config)
    conn.send(reply)
    return conn.data_to_send()


# --- the dispatcher ---------------------------------------------------------------------------------


class Dispatcher:
    """Drives one :class:`ServerConnection` and turns its events into hook calls.

    ``actions()`` is a generator; the adapter sends back each action's result
    (see the module docstring).
    """

    def __init__(
        self,
        config: ServerConfig,
        session: Session,
        clock: Callable[[], float] = time.monotonic,
        transcript: bool = False,
        unused: frozenset[str] = frozenset(),
    ) -> None:
        self.conn = ServerConnection(config)
        #: Report every read and write to the ``transcript`` hook.
        self.transcript = transcript
        #: Hooks not to call: the handler does not override them (see :func:`unused_hooks`).
        self.unused = unused
        self.session = session
        self.session.tls = self.conn.tls_active
        self.session._conn = self.conn
        self._clock = clock
        # Deadlines: a command must be complete by _deadline; content must keep to min_rate.
        self._deadline: float | None = None
        self._content_start: tuple[float, int] | None = None
        # The Hello the session was last brought up to date with (see _sync).
        self._hello: Hello | None = None
        # session.peer and session.local before the first accepted XCLIENT named others.
        self._unnamed: tuple[Any, Any] | None = None

    # The generator the adapter drives.
    def actions(self) -> Generator[Action, Any, None]:
        actions = self._actions()
        return self._transcribed(actions) if self.transcript else actions

    def _actions(self) -> Generator[Action, Any, None]:
        try:
            config = self.conn.config
            if config.proxy_protocol:
                # Behind a proxy an implicit-TLS connection is TLS only once the handshake after the header is made.
                self.session.tls = self.conn.tls_active and not config.implicit_tls
                if not (yield from self._proxy_header()):
                    raise _ConnectionLost
                if config.implicit_tls and not (yield from self._handshake_after_proxy()):
                    raise _ConnectionLost
            if (yield from self._greet()):
                yield from self._session()
            yield from self._flush()
        except _ConnectionLost:
            log.info("lost the connection to %s", self.session.peer)
        except Exception:
            # A bug, here or in the core (which raised what it never should), and not
            # the client's doing: the session cannot go on, but it still ends as every
            # session does.  Without this the generator died: no reply, no close, and
            # none of the last hooks, so a handler's spool file and per-client count
            # were never released.  (An adapter's own signals -- trio's Cancelled,
            # asyncio's CancelledError, GreenletExit, GeneratorExit -- are
            # BaseExceptions, and pass; none is raised in here anyway.)
            log.exception("session with %s failed; answering %s", self.session.peer, GREETING_ERROR)
            with contextlib.suppress(_ConnectionLost):
                yield from self._last_reply(GREETING_ERROR)
        yield Close()
        # LOST here too means a hook was stopped (a shutdown's deadline): the next one is still called.
        with contextlib.suppress(_ConnectionLost):
            yield from self._abort_message(None)
        with contextlib.suppress(_ConnectionLost):
            yield from self._hook("connection_closed", self.session)

    def _last_reply(self, reply: Reply) -> Generator[Action, Any, None]:
        """Write the replies still owed and ``reply`` (a 421) after them, as far as the core can.

        A core that has closed the session already adds nothing (its own last
        reply is queued or written).  Nothing at all while a PROXY header is
        owed: no SMTP has been spoken, and a shutdown closes such a connection
        without a word too.
        """
        conn = self.conn
        if conn.state is State.PROXY:
            return
        try:
            out = self._abort_bytes(reply)
        except Exception:  # the core is broken beyond that: the error is logged, the close follows
            return
        if out:
            yield from self._io(Send(out))

    def _transcribed(self, actions: Generator[Action, Any, None]) -> Generator[Action, Any, None]:
        """``actions``, with every write and every read also shown to the ``transcript`` hook.

        A filter around the session rather than a test in it: a handler without
        a transcript then pays nothing for the feature on each read and write.
        """
        try:
            result: Any = None
            while True:
                try:
                    action = actions.send(result)
                except StopIteration:
                    return
                try:
                    if isinstance(action, Send):
                        yield from self._hook("transcript", self.session, "S", action.data)
                    elif isinstance(action, Receive) and action.send:
                        yield from self._hook("transcript", self.session, "S", action.send)
                    result = yield action
                    if type(result) is memoryview:  # the hook may wait, and the buffer be read into again
                        result = bytes(result)
                    if isinstance(action, Receive) and isinstance(result, bytes) and result:
                        # Redacted before the session is given the read: what is secret
                        # depends on the state the read arrived in.
                        yield from self._hook("transcript", self.session, "C", self.conn.redact(result))
                except _ConnectionLost:  # the transcript hook was stopped: the session hears LOST
                    result = LOST
        finally:
            actions.close()

    def _session(self) -> Generator[Action, Any, None]:
        conn, session = self.conn, self.session
        on_event = self._ON_EVENT
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                log.info("closing %s: %s", session.peer, exc)
                return
            if event is NEED_DATA:
                delay = conn.take_reply_delay()  # (inline, not _pause(): this is every read)
                if delay:
                    yield from self._io(Pause(delay))
                # The replies so far and the next read, in one action: this is every
                # read of the session, and a round trip through the adapter less than
                # a Send and a Receive (3% of a kept-alive message's instructions).
                data = yield Receive(self._wait_timeout(), conn.data_to_send(), conn.idle)
                if data is LOST:
                    raise _ConnectionLost
                if data is TIMED_OUT or data is SHUTDOWN:
                    reply = TIMEOUT_REPLY if data is TIMED_OUT else SHUTDOWN_REPLY
                    log.info("closing %s: %s", session.peer, reply)
                    yield from self._io(Send(self._abort_bytes(reply)))
                    return
                conn.receive_data(data)
                session.bytes_received = conn.bytes_received
                continue
            self._deadline = None  # progress: the next command gets a fresh deadline
            kind = type(event)
            handle = on_event.get(kind)
            if handle is not None:
                yield from handle(self, event)
            elif kind is ConnectionClosed:
                return
            elif kind is TlsHandshake:
                if not (yield from self._start_tls()):
                    return
            elif kind is CommandRejected:
                assert isinstance(event, CommandRejected)
                if event.cause is not None:  # an application's SASL mechanism raised
                    log.error("%s: AUTH mechanism failed", session.peer, exc_info=event.cause)
                else:
                    log.debug("%s: %s refused with %s", session.peer, event.command or "line", event.reply)
            elif conn.reply_due:  # STARTTLS, VRFY, EXPN, RSET, NOOP...: the standard reply
                conn.accept()
            if conn.data_to_send_size > FLUSH_AT:  # a long pipelined burst: bound what waits to be written
                yield from self._pause()
                yield from self._io(Send(conn.data_to_send()))
            # Most events change nothing the session shows: look before doing the work.
            if (
                conn.hello is not self._hello
                or conn.authenticated is not session.credentials
                or (conn.mail is None and session.envelope.mail_from is not None)
            ):
                yield from self._sync()

    def _start_tls(self) -> Generator[Action, Any, bool]:
        """The handshake after STARTTLS's 220; False if it failed (the connection is then closed)."""
        conn = self.conn
        yield from self._flush()
        info = yield from self._io(StartTls(conn.config.tls_handshake_timeout))
        if info is None:
            log.info("TLS handshake with %s failed", self.session.peer)
            return False
        conn.tls_established()
        self.session.tls, self.session.tls_info = True, info
        if self._unnamed is not None:  # what XCLIENT said in plaintext is forgotten (conn.xclient too)
            self.session.peer, self.session.local = self._unnamed
            self._unnamed = None
        yield from self._sync()
        yield from self._hook("tls_established", self.session)
        return True

    def _proxy_header(self) -> Generator[Action, Any, bool]:
        """Read the PROXY header; the session then shows the real client's address."""
        conn = self.conn
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                log.info("closing %s: %s", self.session.peer, exc)
                return False
            except LocalProtocolError:  # an adapter that read past max_read: a bug, reported as one
                log.exception("closing %s without a word", self.session.peer)
                return False
            if isinstance(event, ProxyHeader):
                if event.source is not None:
                    self.session.peer, self.session.local = event.source, event.destination
                return True
            if event is not NEED_DATA:  # the connection closed before the header
                return False
            # Idle: until the header is in, there is nothing a shutdown could cut short.
            # Bounded on an implicit-TLS port, where the TLS handshake follows the header.
            data = yield from self._io(Receive(self._wait_timeout(), idle=True, limit=conn.max_read))
            if data is TIMED_OUT or data is SHUTDOWN:  # no SMTP has been spoken
                return False
            conn.receive_data(data)

    def _handshake_after_proxy(self) -> Generator[Action, Any, bool]:
        """The implicit-TLS handshake behind a proxy: after its header, before the greeting.

        From here the session is what it is on an implicit-TLS port without a
        proxy: TLS before the greeting, ``tls_info`` set for ``connection_opened``,
        and no ``tls_established`` hook (which is STARTTLS's).  A handshake that
        fails ends the connection without a word, as a bad header does.
        """
        info = yield from self._io(StartTls(self.conn.config.tls_handshake_timeout))
        if info is None:
            log.info("TLS handshake with %s failed", self.session.peer)
            return False
        self.session.tls, self.session.tls_info = True, info
        return True

    def _greet(self) -> Generator[Action, Any, bool]:
        """The greeting; False if the client left (or the server is shutting down) before it."""
        result = yield from self._hook("connection_opened", self.session)
        reply = self._as_reply(result, GREETING_ERROR)
        conn = self.conn
        config = conn.config
        if reply is None and config.reject_early_talkers and config.greet_delay:
            # Spam software talks at once; a real client waits for the 220.  What it
            # said (and what came in one read with a PROXY header) makes the core
            # answer the greeting with 554 and end the session at its next event.
            data = yield from self._io(Receive(config.greet_delay, idle=True))
            if data is SHUTDOWN or data == b"":
                return False
            if data is not TIMED_OUT:
                conn.receive_data(data)
        try:
            conn.send(reply) if reply is not None else conn.accept()
        except LocalProtocolError:
            log.exception("connection_opened returned an invalid greeting %r", reply)
            conn.send(GREETING_ERROR)
        return True

    # One method per event that calls a hook (see _ON_EVENT below).

    def _on_message_data(self, event: MessageData) -> Generator[Action, Any, None]:
        self.session.envelope.size += len(event.data)
        result = yield from self._hook("data_chunk", self.session, bytes(event.data))
        reply = self._as_reply(result, LOCAL_ERROR)
        if reply is not None:
            self._reject_message(reply)

    def _on_hello(self, event: Hello) -> Generator[Action, Any, None]:
        self._answer((yield from self._hook("hello", self.session, event)))

    def _on_mail(self, event: Mail) -> Generator[Action, Any, None]:
        self._answer((yield from self._hook("mail_from", self.session, event)))
        conn = self.conn
        if conn.mail is event:
            self.session.envelope = Envelope(event.sender, event.params, started_at=time.time(), xforward=conn.xforward)

    def _on_rcpt(self, event: Rcpt) -> Generator[Action, Any, None]:
        result = yield from self._hook("rcpt_to", self.session, event)
        address = event.recipient
        if isinstance(result, str):
            try:
                Rcpt(result)  # the rewritten address must be one: it may end up in a header or a command
            except LocalProtocolError as exc:
                log.error("rcpt_to returned %r, which is no address (%s); answering %s", result, exc, LOCAL_ERROR)
                result = LOCAL_ERROR
            else:
                address, result = result, None
        accepted = self.conn.recipient_count
        self._answer(result)
        if self.conn.recipient_count > accepted:  # the core took it (a 2xx reply)
            self.session.envelope.rcpt_tos.append(Recipient(address, event.params, event.recipient))

    def _on_data(self, event: Data) -> Generator[Action, Any, None]:
        envelope = self.session.envelope
        # Before the call: a data_start stopped by a shutdown gets message_aborted too.
        envelope.data_started = "data_start" not in self.unused
        sent = self._answer((yield from self._hook("data_start", self.session)))
        if self.conn.receiving_content:
            envelope.data_started = True
        elif envelope.data_started:
            # data_start was called and DATA refused: no content follows, and the
            # handler hears so (every data_start gets message_complete or
            # message_aborted, as a refused BDAT does).
            yield from self._abort_message(sent)

    def _on_bdat(self, event: Bdat) -> Generator[Action, Any, None]:
        envelope = self.session.envelope
        if not envelope.data_started:
            envelope.data_started = True
            reply = self._as_reply((yield from self._hook("data_start", self.session)), LOCAL_ERROR)
            if reply is not None:
                self._reject_message(reply)

    def _on_end_of_message(self, event: EndOfMessage) -> Generator[Action, Any, None]:
        conn, envelope = self.conn, self.session.envelope
        due = conn.recipient_count if conn.config.lmtp else 1
        # Called, whatever comes of it (an exception, or a shutdown that stops it):
        # not an aborted message.  The handler hears of each message once.
        envelope.data_started = False
        result = yield from self._hook("message_complete", self.session, envelope)
        if isinstance(result, list) and len(result) != due:
            log.error("message_complete returned %d replies for %d recipients", len(result), due)
            result = LOCAL_ERROR
        if isinstance(result, list):
            for item in result:
                # None is the standard reply here too, for its recipient alone: accept()
                # would answer all the rest with 250, the refusals after it among them.
                self._answer(item if item is not None else conn.standard_reply())
        else:
            reply = self._as_reply(result, LOCAL_ERROR)
            for _ in range(due if reply is not None else 1):
                self._answer(reply)

    def _on_message_rejected(self, event: MessageRejected) -> Generator[Action, Any, None]:
        yield from self._abort_message(event.reply)

    def _on_auth_credentials(self, event: AuthCredentials) -> Generator[Action, Any, None]:
        result = yield from self._hook("auth", self.session, event)
        if result is True:
            result = None
        elif result is False or result is None:
            result = AUTH_FAILED
        elif isinstance(result, OAuthError):
            # The reason in a challenge first where the mechanism has the step (XOAUTH2,
            # OAUTHBEARER); for the others the core sends the refusal alone.
            self.conn.send_auth_error(result)
            return
        self._answer(result)
        self.session.credentials = self.conn.authenticated

    def _on_xclient(self, event: XClient) -> Generator[Action, Any, None]:
        conn, session = self.conn, self.session
        before, proxy = conn.xclient, session.peer
        self._answer((yield from self._hook("xclient", session, event)))
        named = conn.xclient
        if named is before or named is None:  # refused
            return
        if self._unnamed is None:
            self._unnamed = (session.peer, session.local)
        if named.addr is not None:
            session.peer = _named_host(named.addr, named.port)
        if named.destaddr is not None:
            session.local = _named_host(named.destaddr, named.destport)
        log.info("%s: XCLIENT accepted, the session is now %s's: %s", proxy, session.peer, event.attributes)

    def _on_xforward(self, event: XForward) -> Generator[Action, Any, None]:
        self._answer((yield from self._hook("xforward", self.session, event)))

    #: The events that call a hook, and the method that does it.  Every other
    #: event is answered in ``_session`` (most with the standard reply).
    _ON_EVENT: ClassVar[dict[type[object], Callable[[Dispatcher, Any], Generator[Action, Any, None]]]] = {
        MessageData: _on_message_data,
        Hello: _on_hello,
        Mail: _on_mail,
        Rcpt: _on_rcpt,
        Data: _on_data,
        Bdat: _on_bdat,
        EndOfMessage: _on_end_of_message,
        MessageRejected: _on_message_rejected,
        AuthCredentials: _on_auth_credentials,
        XClient: _on_xclient,
        XForward: _on_xforward,
    }

    def _answer(self, result: object) -> Reply | None:
        """Answer the pending command with the hook's result (None: the standard reply);
        the reply sent, or None for the standard one."""
        conn = self.conn
        reply = None if result is None else self._as_reply(result, LOCAL_ERROR)
        try:
            conn.send(reply) if reply is not None else conn.accept()
        except LocalProtocolError:
            log.exception("a hook returned a reply that does not fit: %r", reply)
            while conn.reply_due:
                conn.send(LOCAL_ERROR)
            return LOCAL_ERROR
        return reply

    def _as_reply(self, result: object, fallback: Reply) -> Reply | None:
        """A hook's result as a reply: None, a Reply, an SMTPError, or the fallback for a failure."""
        if isinstance(result, _HookFailed):
            error = result.error
            if isinstance(error, SMTPError):
                return error.reply
            log.error("hook raised; answering %s", fallback, exc_info=error)
            return fallback
        if result is None or isinstance(result, Reply):
            return result
        log.error("hook returned %r; a hook returns a Reply or None", result)
        return fallback

    def _reject_message(self, reply: Reply) -> None:
        try:
            self.conn.reject_message(reply)
        except LocalProtocolError:
            log.exception("a data hook returned a reply that cannot refuse a message: %r", reply)
            self.conn.reject_message(LOCAL_ERROR)

    def _abort_message(self, reply: Reply | None) -> Generator[Action, Any, None]:
        envelope = self.session.envelope
        if envelope.data_started:
            envelope.data_started = False
            yield from self._hook("message_aborted", self.session, reply)

    def _hook(self, name: str, *args: Any) -> Generator[Action, Any, Any]:
        if name in self.unused:
            return None  # the base hook's answer, without the round trip
        result = yield CallHook(name, args)
        if result is LOST:  # the adapter stopped the hook: the session is over
            raise _ConnectionLost
        if isinstance(result, _HookFailed) and name in _NOTIFICATIONS:
            log.error("%s hook raised", name, exc_info=result.error)
        return result

    def _flush(self) -> Generator[Action, Any, None]:
        yield from self._pause()
        out = self.conn.data_to_send()
        if out:
            yield from self._io(Send(out))

    def _pause(self) -> Generator[Action, Any, None]:
        """Hold back the replies about to be written for as long as the core says (its error delay)."""
        delay = self.conn.take_reply_delay()
        if delay:
            yield from self._io(Pause(delay))

    def _io(self, action: Action) -> Generator[Action, Any, Any]:
        result = yield action
        if result is LOST:
            raise _ConnectionLost
        return result

    def _sync(self) -> Generator[Action, Any, None]:
        """Follow the core's session: a reset transaction (RSET, EHLO, end of data, TLS) is a new envelope.

        A transaction reset between BDAT chunks drops a message whose content had
        started: the handler hears of it through ``message_aborted``.
        """
        conn, session = self.conn, self.session
        self._hello = conn.hello
        session.hello = conn.hello.domain if conn.hello else None
        session.hello_verb = conn.hello.verb if conn.hello else None
        session.credentials = conn.authenticated
        if conn.mail is None and session.envelope.mail_from is not None:
            yield from self._abort_message(None)
            session.envelope = Envelope()

    # Timeouts -------------------------------------------------------------------------------------

    def _wait_timeout(self) -> float:
        """Seconds the next read may take, from ``conn.timeout``.

        A command must be complete within ``seconds`` of the moment the server
        started waiting for it (a deadline, not an idle timer).  During content
        the client gets ``seconds`` of credit plus one second per ``min_rate``
        octets received since the content began (Postfix's minimum data rate),
        and no single read may take longer than ``seconds``.
        """
        conn = self.conn
        timeout = conn.timeout
        now = self._clock()
        if conn.receiving_content:
            received = conn.bytes_received
            if self._content_start is None:
                self._content_start = (now, received)
            if not timeout.min_rate:  # no minimum rate configured: an idle timer per read
                return timeout.seconds
            start, base = self._content_start
            deadline = start + timeout.seconds + (received - base) / timeout.min_rate
            return max(0.0, min(deadline - now, timeout.seconds))
        self._content_start = None
        if self._deadline is None:  # a new command: its whole time is left (most reads)
            self._deadline = now + timeout.seconds
            return timeout.seconds
        return max(0.0, self._deadline - now)

    def _abort_bytes(self, reply: Reply) -> bytes:
        self.conn.end_session(reply)
        return self.conn.data_to_send()


def _named_host(address: str, port: str | None) -> tuple[str, int] | None:
    """``Session.peer`` (or ``local``) as XCLIENT names it: None for an unavailable address, port 0 for a port."""
    if address == XClient.UNAVAILABLE:
        return None
    return address, int(port) if port is not None and port != XClient.UNAVAILABLE else 0
