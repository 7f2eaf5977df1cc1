"""A real smtpcore server for tests: any adapter, on a thread of its own, that keeps what it receives.

Why it is built this way
------------------------
A test is blocking code: it calls ``smtplib`` or the code under test and then
looks at what arrived.  So the server always runs *beside* the test, on a
background thread -- the blocking adapter's own threads, or one thread that
owns an asyncio loop, a trio run or a gevent hub -- and everything the test
touches (``messages``, ``wait_for``, ``reject_recipient``) is guarded by one
lock and one condition variable.

The handler is written once, as plain methods on :class:`_Capture`; the asyncio
and trio servers get the same methods through :class:`_AsyncCapture`.  The
methods never block (a dictionary lookup, a list append), so calling them on an
event loop is fine.  A message is recorded *before* ``message_complete``
returns, so by the time the client sees 250 it is already in ``messages``.

Nothing here imports trustme, trio or gevent until a test asks for TLS or that
adapter: the plugin is loaded by every pytest run of a project that installs
smtpcore, and must cost nothing there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import queue
import smtplib
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import TYPE_CHECKING, Any, Literal

from smtpcore import (
    AuthCredentials,
    AuthPolicy,
    Mail,
    MailParams,
    OAuthError,
    Rcpt,
    Reply,
    ServerConfig,
    TlsPolicy,
    XClient,
    XForward,
)

from ._handler import AsyncHandler, CompleteResult, Envelope, Handler, Recipient, Session

if TYPE_CHECKING:
    import trustme

__all__ = [
    "ADAPTERS",
    "CapturedMessage",
    "SMTPTestServer",
    "TestCA",
    "TlsMode",
]

#: The adapters a test server can run on.
ADAPTERS = ("blocking", "asyncio", "trio", "gevent")

#: ``tls=`` values: STARTTLS offered, STARTTLS required before mail, or TLS from the first byte (port 465).
TlsMode = Literal["starttls", "required", "implicit"]
_TLS_MODES = ("starttls", "required", "implicit")

HOST = "127.0.0.1"
MESSAGE_REFUSED = Reply(554, "Message refused", "5.6.0")
_CONTENT = "smtpcore.pytest.content"


class TestCA:
    """A throwaway certificate authority (trustme) and the server certificate it issued.

    ``ca`` is the ``trustme.CA``; ``ca_file`` its certificate in PEM, for clients
    that want a file (``--ca-file``, ``SSL_CERT_FILE``).
    """

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, ca_file: str) -> None:
        try:
            import trustme
        except ImportError:  # pragma: no cover - trustme is in the test extra
            raise RuntimeError("TLS test servers need trustme: pip install trustme") from None
        self.ca: trustme.CA = trustme.CA()
        self.ca.cert_pem.write_to_path(ca_file)
        self.ca_file = ca_file
        self._leaf = self.ca.issue_cert("localhost", HOST, "::1")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._leaf.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA (and verifies host names as usual)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@dataclass
class CapturedMessage:
    """One accepted message: the parsed ``message`` and its envelope, exactly as received.

    ``captured["Subject"]`` is a shortcut for ``captured.message["Subject"]``.
    """

    #: The content parsed with ``email.policy.default`` from ``raw``.
    message: EmailMessage
    #: The content as received: dot-stuffing removed (DATA) or octet-exact (BDAT), CRLF line ends.
    raw: bytes
    #: The MAIL FROM address (``""`` for the null sender ``<>``).
    mail_from: str
    mail_params: MailParams
    #: The recipients the message was delivered to, with their RCPT parameters.
    rcpt_tos: list[Recipient]
    #: The client's address, ``(host, port)``.
    peer: Any
    #: The EHLO/HELO/LHLO name.
    hello: str | None
    #: Whether the session was encrypted (implicit TLS or after STARTTLS), and with which version.
    tls: bool
    tls_version: str | None
    #: The AUTH identity (or XCLIENT's LOGIN), or None.
    authenticated: str | None
    #: What an accepted XCLIENT said (with ``ServerConfig(xclient=True)``), or None;
    #: ``peer`` is then the address it named.
    xclient: XClient | None = None
    #: Where the message came from, as an XFORWARD before its MAIL said it (with
    #: ``ServerConfig(xforward=True)``), or None.
    xforward: XForward | None = None

    @property
    def recipients(self) -> list[str]:
        return [rcpt.address for rcpt in self.rcpt_tos]

    def __getitem__(self, header: str) -> Any:
        return self.message[header]


@dataclass
class _Rules:
    """What the test asked the server to refuse; read by the hooks, under the server's lock."""

    senders: dict[str, Reply] = field(default_factory=dict)
    recipients: dict[str, Reply] = field(default_factory=dict)
    deliveries: dict[str, Reply] = field(default_factory=dict)
    message: Reply | None = None
    xclient: Reply | None = None
    xforward: Reply | None = None


class _Capture(Handler):
    """The handler: refuse what the rules say, verify AUTH against ``users``, keep every message."""

    def __init__(self, server: SMTPTestServer) -> None:
        self.server = server

    def mail_from(self, session: Session, mail: Mail) -> Reply | None:
        with self.server._lock:
            return self.server._rules.senders.get(mail.sender.lower())

    def rcpt_to(self, session: Session, rcpt: Rcpt) -> Reply | str | None:
        with self.server._lock:
            return self.server._rules.recipients.get(rcpt.recipient.lower())

    def data_start(self, session: Session) -> Reply | None:
        session.extra[_CONTENT] = bytearray()
        return None

    def data_chunk(self, session: Session, data: bytes) -> Reply | None:
        session.extra[_CONTENT] += data
        return None

    def message_complete(self, session: Session, envelope: Envelope) -> CompleteResult:
        raw = bytes(session.extra.pop(_CONTENT, b""))
        server = self.server
        with server._lock:
            if server._rules.message is not None:
                return server._rules.message
            refusals = [server._rules.deliveries.get(rcpt.address.lower()) for rcpt in envelope.rcpt_tos]
        delivered = [rcpt for rcpt, refusal in zip(envelope.rcpt_tos, refusals, strict=True) if refusal is None]
        if delivered:
            server._record(
                CapturedMessage(
                    message=_parse(raw),
                    raw=raw,
                    mail_from=envelope.mail_from or "",
                    mail_params=envelope.mail_params,
                    rcpt_tos=list(delivered),
                    peer=session.peer,
                    hello=session.hello,
                    tls=session.tls,
                    tls_version=session.tls_info.version if session.tls_info else None,
                    authenticated=session.authenticated,
                    xclient=session.xclient,
                    xforward=envelope.xforward,
                )
            )
        if not server.config.lmtp or not any(refusals):
            return None
        return [refusal or Reply(250, "Delivered", "2.0.0") for refusal in refusals]

    def message_aborted(self, session: Session, reply: Reply | None) -> None:
        session.extra.pop(_CONTENT, None)

    def xclient(self, session: Session, xclient: XClient) -> Reply | None:
        # Trusted from anyone: the test server is there to test the proxy that sends it.
        with self.server._lock:
            return self.server._rules.xclient

    def xforward(self, session: Session, xforward: XForward) -> Reply | None:
        with self.server._lock:
            return self.server._rules.xforward

    def auth(self, session: Session, credentials: AuthCredentials) -> bool | Reply | OAuthError | None:
        if credentials.token is not None:  # XOAUTH2, OAUTHBEARER
            token = self.server.tokens.get(credentials.username)
            if token is not None and hmac.compare_digest(token.encode(), credentials.token.encode()):
                return True
            # What Gmail does: the reason in a 334 first, so the client's retry logic runs.
            return OAuthError("invalid_token")
        password = self.server.users.get(credentials.username)
        return password is not None and credentials.verify(password)


class _AsyncCapture(AsyncHandler):
    """The same hooks for the asyncio and trio servers (none of them blocks)."""

    def __init__(self, inner: _Capture) -> None:
        self.inner = inner

    async def mail_from(self, session: Session, mail: Mail) -> Reply | None:
        return self.inner.mail_from(session, mail)

    async def rcpt_to(self, session: Session, rcpt: Rcpt) -> Reply | str | None:
        return self.inner.rcpt_to(session, rcpt)

    async def data_start(self, session: Session) -> Reply | None:
        return self.inner.data_start(session)

    async def data_chunk(self, session: Session, data: bytes) -> Reply | None:
        return self.inner.data_chunk(session, data)

    async def message_complete(self, session: Session, envelope: Envelope) -> CompleteResult:
        return self.inner.message_complete(session, envelope)

    async def message_aborted(self, session: Session, reply: Reply | None) -> None:
        self.inner.message_aborted(session, reply)

    async def xclient(self, session: Session, xclient: XClient) -> Reply | None:
        return self.inner.xclient(session, xclient)

    async def xforward(self, session: Session, xforward: XForward) -> Reply | None:
        return self.inner.xforward(session, xforward)

    async def auth(self, session: Session, credentials: AuthCredentials) -> bool | Reply | OAuthError | None:
        return self.inner.auth(session, credentials)


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=default_policy).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def build_config(
    config: ServerConfig | None,
    *,
    tls: TlsMode | bool | None,
    auth: Mapping[str, str] | None,
    auth_required: bool,
    allow_insecure_auth: bool,
    lmtp: bool,
    tokens: Mapping[str, str] | None = None,
) -> ServerConfig:
    """``config`` (or the defaults) with the fixture's options applied on top."""
    base = config if config is not None else ServerConfig()
    changes: dict[str, Any] = {}
    if tls is True:
        tls = "starttls"
    if tls:
        if tls not in _TLS_MODES:
            raise ValueError(f"tls must be one of {', '.join(map(repr, _TLS_MODES))} or True, not {tls!r}")
        if tls == "implicit":
            changes.update(implicit_tls=True, tls=TlsPolicy.OFF)
        else:
            changes["tls"] = TlsPolicy.REQUIRED if tls == "required" else TlsPolicy.OPTIONAL
    if auth is not None or tokens is not None or auth_required:
        changes["auth"] = AuthPolicy.REQUIRED if auth_required else AuthPolicy.OPTIONAL
    if tokens is not None:
        # Bearer tokens are checked by XOAUTH2 and OAUTHBEARER; passwords (auth=) by the rest.
        passwords = base.auth_mechanisms if auth is not None else ()
        changes["auth_mechanisms"] = tuple(dict.fromkeys((*passwords, "XOAUTH2", "OAUTHBEARER")))
    if allow_insecure_auth:
        changes["allow_insecure_auth"] = True
    if lmtp:
        changes["lmtp"] = True
    return dataclasses.replace(base, **changes) if changes else base


class SMTPTestServer:
    """A real smtpcore server on ``127.0.0.1`` with an ephemeral port, running on a background thread.

    Made by the ``smtp_server`` and ``smtp_server_factory`` fixtures, which start
    it and stop it; see docs/testing.md.
    """

    __test__ = False

    def __init__(
        self,
        adapter: str = "blocking",
        config: ServerConfig | None = None,
        *,
        users: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        ca: TestCA | None = None,
        shutdown_timeout: float = 1.0,
    ) -> None:
        if adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {', '.join(ADAPTERS)}, not {adapter!r}")
        self.adapter = adapter
        self.config = config if config is not None else ServerConfig()
        self.users: dict[str, str] = dict(users or {})
        #: OAuth2 bearer tokens by user, for XOAUTH2 and OAUTHBEARER.
        self.tokens: dict[str, str] = dict(tokens or {})
        self.needs_tls = self.config.implicit_tls or self.config.tls is not TlsPolicy.OFF
        if self.needs_tls and ca is None:
            raise ValueError("this configuration needs TLS: pass ca=TestCA(...)")
        #: The test CA when the server speaks TLS, else None.
        self.ca_bundle = ca if self.needs_tls else None
        self.shutdown_timeout = shutdown_timeout
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._messages: list[CapturedMessage] = []
        self._rules = _Rules()
        self._address: tuple[str, int] | None = None
        self._stop: Callable[[float], None] | None = None
        self._thread: threading.Thread | None = None

    # --- where it listens ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def address(self) -> tuple[str, int]:
        assert self._address is not None, "the server is not running"
        return self._address

    @property
    def ca(self) -> trustme.CA:
        """The ``trustme.CA`` that signed the server's certificate (TLS servers only)."""
        if self.ca_bundle is None:
            raise AttributeError("this server does not speak TLS (use tls='starttls', 'required' or 'implicit')")
        return self.ca_bundle.ca

    @property
    def ca_file(self) -> str:
        """The CA certificate as a PEM file (TLS servers only)."""
        if self.ca_bundle is None:
            raise AttributeError("this server does not speak TLS (use tls='starttls', 'required' or 'implicit')")
        return self.ca_bundle.ca_file

    def client_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` that trusts the server's certificate (for STARTTLS or implicit TLS)."""
        if self.ca_bundle is None:
            raise AttributeError("this server does not speak TLS (use tls='starttls', 'required' or 'implicit')")
        return self.ca_bundle.client_context()

    def client(self, timeout: float = 10.0) -> smtplib.SMTP:
        """A connected ``smtplib`` client of the right kind: ``SMTP``, ``SMTP_SSL`` (implicit TLS) or ``LMTP``."""
        if self.config.lmtp:
            return smtplib.LMTP(self.host, self.port, timeout=timeout)
        if self.config.implicit_tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=timeout, context=self.client_context())
        return smtplib.SMTP(self.host, self.port, timeout=timeout)

    # --- what arrived --------------------------------------------------------------------------

    @property
    def messages(self) -> list[CapturedMessage]:
        """The accepted messages so far, in order (a copy)."""
        with self._lock:
            return list(self._messages)

    def _record(self, captured: CapturedMessage) -> None:
        with self._arrived:
            self._messages.append(captured)
            self._arrived.notify_all()

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[CapturedMessage]:
        """Block until at least ``count`` messages arrived; return them all.

        Raises ``TimeoutError`` saying how many arrived (and from whom) if they
        did not within ``timeout`` seconds.
        """
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._messages) >= count, timeout):
                got = ", ".join(f"<{m.mail_from}> to {m.recipients}" for m in self._messages) or "none"
                raise TimeoutError(
                    f"expected {count} message(s) within {timeout:g} s on {self.host}:{self.port}; "
                    f"{len(self._messages)} arrived ({got})"
                )
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages received so far (the refusal rules stay)."""
        with self._lock:
            self._messages.clear()

    # --- what to refuse ------------------------------------------------------------------------

    def reject_sender(self, address: str, reply: Reply | None = None) -> None:
        """Answer MAIL FROM:<address> with ``reply`` (default ``550 5.7.1``); ``""`` is the null sender."""
        with self._lock:
            self._rules.senders[address.lower()] = reply or Reply(550, "Sender refused", "5.7.1")

    def reject_recipient(self, address: str, reply: Reply | None = None) -> None:
        """Answer RCPT TO:<address> with ``reply`` (default ``550 5.1.1 No such user``)."""
        with self._lock:
            self._rules.recipients[address.lower()] = reply or Reply(550, "No such user", "5.1.1")

    def reject_delivery(self, address: str, reply: Reply | None = None) -> None:
        """LMTP: accept the recipient, then answer ``reply`` for it after the message (default ``550 5.2.1``)."""
        if not self.config.lmtp:
            raise ValueError("reject_delivery is for LMTP servers (a per-recipient reply after DATA)")
        with self._lock:
            self._rules.deliveries[address.lower()] = reply or Reply(550, "Mailbox unavailable", "5.2.1")

    def reject_messages(self, reply: Reply | None = MESSAGE_REFUSED) -> None:
        """Answer every message after its content with ``reply`` (nothing is captured); ``None`` stops."""
        with self._lock:
            self._rules.message = reply

    def reject_xclient(self, reply: Reply | None = None) -> None:
        """Answer XCLIENT with ``reply`` (default ``550 5.7.0``); it is accepted from anyone otherwise."""
        with self._lock:
            self._rules.xclient = reply or Reply(550, "Insufficient authorization", "5.7.0")

    def reject_xforward(self, reply: Reply | None = None) -> None:
        """Answer XFORWARD with ``reply`` (default ``550 5.7.0``); it is accepted from anyone otherwise."""
        with self._lock:
            self._rules.xforward = reply or Reply(550, "Insufficient authorization", "5.7.0")

    def reset_rules(self) -> None:
        """Accept everything again."""
        with self._lock:
            self._rules = _Rules()

    # --- running -------------------------------------------------------------------------------

    def start(self) -> SMTPTestServer:
        assert self._stop is None, "already started"
        handler = _Capture(self)
        tls = self.ca_bundle.server_context() if self.ca_bundle is not None else None
        options: dict[str, Any] = {"host": HOST, "port": 0, "tls": tls}
        starter = {
            "blocking": _start_blocking,
            "asyncio": _start_asyncio,
            "trio": _start_trio,
            "gevent": _start_gevent,
        }[self.adapter]
        address, self._stop, self._thread = starter(handler, self.config, options)
        self._address = (str(address[0]), int(address[1]))
        return self

    def stop(self) -> None:
        """Graceful shutdown: open sessions get ``shutdown_timeout`` seconds, then 421; every thread ends."""
        stop, self._stop = self._stop, None
        if stop is None:
            return
        stop(self.shutdown_timeout)
        if self._thread is not None:
            self._thread.join(self.shutdown_timeout + 10)
            if self._thread.is_alive():
                raise RuntimeError(f"the {self.adapter} test server's thread did not stop")

    def __enter__(self) -> SMTPTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self._address else "not running"
        return f"<SMTPTestServer {self.adapter} {where} messages={len(self._messages)}>"


# --- one starter per adapter: each returns (address, stop(timeout), thread to join) ---------------

_Started = tuple[Any, Callable[[float], None], "threading.Thread | None"]


def _start_blocking(handler: _Capture, config: ServerConfig, options: dict[str, Any]) -> _Started:
    from .blocking_server import SMTPServer

    server = SMTPServer(handler, config, **options)
    server.start()
    return server.address, server.shutdown, None


def _start_asyncio(handler: _Capture, config: ServerConfig, options: dict[str, Any]) -> _Started:
    from .asyncio_server import SMTPServer

    loop = asyncio.new_event_loop()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="smtp-test-asyncio", daemon=True)
    thread.start()
    server = SMTPServer(_AsyncCapture(handler), config, **options)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        raise

    def stop(timeout: float) -> None:
        try:
            asyncio.run_coroutine_threadsafe(server.shutdown(timeout), loop).result(timeout + 10)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    return server.address, stop, thread


def _start_trio(handler: _Capture, config: ServerConfig, options: dict[str, Any]) -> _Started:
    import trio

    from .trio_server import SMTPServer

    ready: queue.Queue[tuple[SMTPServer, trio.lowlevel.TrioToken] | BaseException] = queue.Queue()

    def run() -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(SMTPServer(_AsyncCapture(handler), config, **options).serve)
                ready.put((server, trio.lowlevel.current_trio_token()))

        try:
            trio.run(main)
        except BaseException as exc:  # a failed start: hand it to the waiting test
            ready.put(exc)

    thread = threading.Thread(target=run, name="smtp-test-trio", daemon=True)
    thread.start()
    started = ready.get(timeout=10)
    if isinstance(started, BaseException):
        thread.join(10)
        raise started
    server, token = started

    def stop(timeout: float) -> None:
        trio.from_thread.run(server.shutdown, timeout, trio_token=token)

    return server.address, stop, thread


def _start_gevent(handler: _Capture, config: ServerConfig, options: dict[str, Any]) -> _Started:
    ready: queue.Queue[Any] = queue.Queue()
    stop_requests: queue.Queue[float] = queue.Queue()

    def run() -> None:
        import gevent

        from .gevent_server import SMTPServer

        try:
            server = SMTPServer(handler, config, **options)
            server.start()
        except BaseException as exc:
            ready.put(exc)
            return
        ready.put(server.address)
        while stop_requests.empty():  # the hub runs the sessions while this greenlet sleeps
            gevent.sleep(0.02)
        server.shutdown(stop_requests.get())

    thread = threading.Thread(target=run, name="smtp-test-gevent", daemon=True)
    thread.start()
    address = ready.get(timeout=10)
    if isinstance(address, BaseException):
        thread.join(10)
        raise address
    return address, stop_requests.put, thread
