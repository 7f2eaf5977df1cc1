"""The mail sink behind ``smtpcore serve``: Maildir delivery, recipient allowlists, AUTH from a file.

All of it is one plain class, :class:`MailSink`, whose methods are the handler
hooks; :class:`SinkHandler` and :class:`AsyncSinkHandler` only present it to the
blocking and async adapters.  The async variant calls the same methods directly,
but for two: Maildir writes are small buffered writes, which a mail sink can
afford on the event loop, while the password check (scrypt costs some 50 ms of
CPU by design) and the two ``fsync`` calls that make a delivery safe (0.5 ms on
a fast disk, tens on a slow one) would stall every other session for as long.
:func:`sink_handler` runs those two in a worker thread on asyncio, trio and
gevent, where the sessions go on meanwhile (scrypt and ``fsync`` release the
GIL) and several deliveries reach the disk at once.

Two promises matter here.  **Never an open relay**: a recipient is accepted only
if its address or its domain is on an allowlist (by default the server's own
name and ``localhost``; an IDN in either of its forms), is ``postmaster``
(bare, or at the server's own name), or is at the address literal of the
server's own address that the client reached (``you@[192.0.2.1]``, as RFC 1123
requires); anything else gets ``550 5.7.1``.
**Never lose an acknowledged message**: ``message_complete`` returns (and the
server answers 250) only after the Maildir delivery is fsynced and renamed into ``new/``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, overload

from smtpcore import AuthCredentials, Mail, Rcpt, Reply, XClient, XForward

from ._handler import INSUFFICIENT_AUTHORIZATION, AsyncHandler, CompleteResult, Envelope, Handler, Session, SMTPError
from .maildir import Delivery, MaildirStore, TraceInfo, address_key, domain_key, open_private, private_directory
from .passwords import hash_password, verify_password

__all__ = ["AsyncSinkHandler", "MailSink", "SinkHandler", "sink_handler"]

log = logging.getLogger("smtpcore.serve")

RELAY_DENIED = Reply(550, "Relaying denied: this server only accepts mail for its own domains", "5.7.1")
INSUFFICIENT_STORAGE = Reply(452, "Insufficient system storage", "4.3.1")
TOO_MANY_FROM_CLIENT = Reply(421, "Too many connections from your address; try again later", "4.7.0")
#: The file system is full (or the user's quota is): what Postfix answers when its queue
#: is, a transient failure the client retries (RFC 3463 X.3.1, "mail system full").
#: Any other write error is the dispatcher's 451 4.3.0, with its traceback in the log.
_FULL = (errno.ENOSPC, errno.EDQUOT)
_DELIVERY = "smtpcore.delivery"
_TRANSCRIPT = "smtpcore.transcript"
_COUNTED = "smtpcore.counted-client"


@contextlib.contextmanager
def _storage(step: str) -> Iterator[None]:
    """A full file system as ``452 4.3.1``: the client keeps the message and tries again later."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _FULL:
            raise
        log.warning("maildir %s failed: %s; answering 452 4.3.1", step, exc)
        # INSUFFICIENT_STORAGE, as an exception: a data hook answers by raising.
        raise SMTPError(452, "4.3.1", "Insufficient system storage") from exc


class MailSink:
    def __init__(
        self,
        store: MaildirStore | None,
        hostname: str,
        *,
        accept_domains: Iterable[str] = (),
        accept_addresses: Iterable[str] = (),
        users: dict[str, str] | None = None,
        lmtp: bool = False,
        transcript_dir: str | os.PathLike[str] | None = None,
        auth_failure_delay: float = 2.0,
        max_connections_per_client: int = 0,
        xclient_from: Iterable[str] = (),
        xforward_from: Iterable[str] = (),
    ) -> None:
        #: ``None`` discards every message (``--discard``).
        self.store = store
        self.hostname = hostname
        #: Domains and addresses as :func:`domain_key` and :func:`address_key` write them.
        self.accept_domains = {domain_key(d) for d in accept_domains} or {domain_key(hostname), "localhost"}
        self.accept_addresses = {address_key(a) for a in accept_addresses}
        self._own_domain = domain_key(hostname)
        self.users = users or {}
        # scrypt takes 16 MiB and a CPU for each check: no more at once than there
        # are CPUs, whatever the number of clients trying passwords.
        self._checks = threading.BoundedSemaphore(os.cpu_count() or 1)
        # What an unknown user's password is checked against (see auth), made
        # now so that even the first such check costs what the others do.
        self._nobodys_hash = hash_password(os.urandom(16).hex()) if self.users else ""
        if not auth_failure_delay >= 0:  # (NaN too)
            raise ValueError(f"auth_failure_delay must be 0 or more seconds, not {auth_failure_delay!r}")
        #: Seconds the session waits before a wrong password's 535, as Dovecot's
        #: auth_failure_delay does: a client guessing passwords gets one guess per
        #: delay on each connection, and the core closes the connection after
        #: ``max_errors`` failures.  The wait is the handler's (a sleep of the
        #: session's concurrency model), so other sessions go on meanwhile.
        self.auth_failure_delay = auth_failure_delay
        if max_connections_per_client < 0:
            raise ValueError("max_connections_per_client must be 0 (no limit) or more")
        #: Sessions one client address may have at once (0: no limit), as Postfix's
        #: smtpd_client_connection_count_limit: else one address can take every
        #: connection the server allows and hold each for the command timeout.
        self.max_connections_per_client = max_connections_per_client
        self._clients: dict[str, int] = {}
        self._clients_lock = threading.Lock()  # the blocking server's sessions are threads
        self.lmtp = lmtp
        #: The proxies whose XCLIENT is believed (``--xclient-from``); nobody else's is.
        self.xclient_from = tuple(_network(text, "--xclient-from") for text in xclient_from)
        #: The MTAs whose XFORWARD is believed (``--xforward-from``): a sink behind Postfix as a content filter.
        self.xforward_from = tuple(_network(text, "--xforward-from") for text in xforward_from)
        #: One file per session with its wire bytes (AUTH secrets redacted), or None.
        self.transcript_dir = Path(transcript_dir) if transcript_dir is not None else None
        if self.transcript_dir is not None:
            private_directory(self.transcript_dir)  # transcripts hold whole messages

    # --- hooks ---------------------------------------------------------------------------------

    def connection_opened(self, session: Session) -> Reply | None:
        if not self.max_connections_per_client:
            return None
        host = _host(session.peer)  # (behind a PROXY-protocol proxy, the real client's)
        with self._clients_lock:
            count = self._clients.get(host, 0)
            if count >= self.max_connections_per_client:
                log.warning("too many connections peer=%s count=%d", host, count)
                return TOO_MANY_FROM_CLIENT
            self._clients[host] = count + 1
        session.extra[_COUNTED] = host
        return None

    def xclient(self, session: Session, xclient: XClient) -> Reply | None:
        # Judged by the address the session has now: once a proxy has named a client,
        # that client may not name another (unless it is a trusted proxy itself).
        return self._trusted(session, self.xclient_from, "xclient")

    def xforward(self, session: Session, xforward: XForward) -> Reply | None:
        return self._trusted(session, self.xforward_from, "xforward")

    def _trusted(self, session: Session, networks: tuple[_Network, ...], command: str) -> Reply | None:
        """None if ``session.peer`` is in one of ``networks``, else the refusal (logged)."""
        host = _host(session.peer)
        try:
            address = _unmapped(host.partition("%")[0])
        except ValueError:  # a Unix socket, or an address XCLIENT left unavailable
            trusted = False
        else:  # (an IPv4 client of a dual-stack socket, or of a PROXY v2 header, is ::ffff:a.b.c.d)
            trusted = any(address in network for network in networks)
        if not trusted:
            log.warning("%s refused peer=%s", command, host)
            return INSUFFICIENT_AUTHORIZATION
        return None

    def mail_from(self, session: Session, mail: Mail) -> Reply | None:
        # A client that declares the size (RFC 1870) hears at once that it will not
        # fit, before it sends the message, as Postfix's smtpd tells it.
        size = mail.params.size
        if self.store is None or not size:
            return None
        free = self.store.free_space()
        if free is not None and free < size:
            log.warning("maildir has %d octets free, the message declares %d; answering 452 4.3.1", free, size)
            return INSUFFICIENT_STORAGE
        return None

    def rcpt_to(self, session: Session, rcpt: Rcpt) -> Reply | None:
        address = address_key(rcpt.recipient)
        if address == "postmaster" or address in self.accept_addresses:
            return None
        local, _, domain = address.rpartition("@")
        if domain in self.accept_domains or _is_own_address_literal(domain, session.local):
            return None
        # RFC 5321 §4.5.1: postmaster at every domain the server takes mail for, the
        # name it gives itself in the greeting, EHLO and Received among them.
        if local == "postmaster" and domain == self._own_domain:
            return None
        return RELAY_DENIED

    def data_start(self, session: Session) -> None:
        if self.store is None:
            return
        envelope = session.envelope
        trace = TraceInfo(
            sender=envelope.mail_from or "",
            recipients=envelope.recipients,
            helo=session.hello or "unknown",
            peer_host=_host(session.peer),
            hostname=self.hostname,
            protocol=_protocol(session, self.lmtp),
        )
        with _storage("begin"):
            session.extra[_DELIVERY] = self.store.begin(trace)

    def data_chunk(self, session: Session, data: bytes) -> None:
        delivery: Delivery | None = session.extra.get(_DELIVERY)
        if delivery is not None:
            with _storage("write"):
                delivery.write(data)

    def message_complete(self, session: Session, envelope: Envelope) -> CompleteResult:
        delivery: Delivery | None = session.extra.pop(_DELIVERY, None)
        with _storage("commit"):
            stored = delivery.commit() if delivery is not None else []
        duration = time.time() - (envelope.started_at or time.time())
        log.info(
            "message from=<%s> to=%s size=%d peer=%s%s tls=%s auth=%s result=stored%s duration=%.3fs",
            envelope.mail_from,
            ",".join(f"<{r}>" for r in envelope.recipients),
            envelope.size,
            _host(session.peer),
            _forwarded(envelope.xforward),
            session.tls,
            session.authenticated or "-",
            f" path={stored[0].name}" if stored else " (discarded)",
            duration,
        )
        return None  # the standard 250 (per recipient in LMTP), now that the message is safe

    def message_aborted(self, session: Session, reply: Reply | None) -> None:
        delivery: Delivery | None = session.extra.pop(_DELIVERY, None)
        if delivery is not None:
            delivery.abort()
        envelope = session.envelope
        log.info(
            "message from=<%s> to=%s peer=%s%s result=aborted%s",
            envelope.mail_from,
            ",".join(f"<{r}>" for r in envelope.recipients),
            _host(session.peer),
            _forwarded(envelope.xforward),
            f" reply={reply.code}" if reply is not None else "",
        )

    def auth(self, session: Session, credentials: AuthCredentials) -> bool:
        accepted = self._check_password(credentials)
        if not accepted:
            # One line per failure with the client's address, for fail2ban and the
            # like; no user name, which is now and then a password typed in the
            # wrong field (Postfix leaves it out too).
            log.warning("auth failed peer=%s mechanism=%s", _host(session.peer), credentials.mechanism)
        return accepted

    def _check_password(self, credentials: AuthCredentials) -> bool:
        encoded = self.users.get(credentials.username)
        # Acting as somebody else (a different authorization identity) is not offered.
        acting_as_self = credentials.authorization_id in ("", credentials.username)
        if credentials.password is None or not acting_as_self or not self.users:
            return False  # (with no users at all, a quick refusal tells nothing)
        with self._checks:
            if encoded is None:
                # An unknown user costs the same check as a known one with a wrong
                # password: how long the reply takes must not tell which users exist.
                verify_password(credentials.password, self._nobodys_hash)
                return False
            return verify_password(credentials.password, encoded)

    def transcript(self, session: Session, direction: str, data: bytes) -> None:
        """Append ``data`` to the session's transcript, each line marked ``C:`` or ``S:``."""
        if self.transcript_dir is None:
            return
        state = session.extra.get(_TRANSCRIPT)
        if state is None:
            name = f"{session.connected_at:.6f}-{_host(session.peer).replace(':', '_')}-{id(session):x}.log"
            state = session.extra[_TRANSCRIPT] = [open_private(self.transcript_dir / name, "ab"), None]
        file, open_line = state
        out = []
        for line in data.splitlines(keepends=True):
            # A line cut between two reads continues without a second marker.
            if open_line != direction:
                out.append(direction.encode() + b": ")
            out.append(line)
            open_line = None if line.endswith(b"\n") else direction
        state[1] = open_line
        file.write(b"".join(out))

    def connection_closed(self, session: Session) -> None:
        host = session.extra.pop(_COUNTED, None)
        if host is not None:
            with self._clients_lock:
                left = self._clients.pop(host) - 1
                if left:
                    self._clients[host] = left
        state = session.extra.pop(_TRANSCRIPT, None)
        if state is not None:
            state[0].close()
        if _DELIVERY in session.extra:  # the dispatcher normally aborted it already
            self.message_aborted(session, None)
        log.info(
            "connection peer=%s helo=%s tls=%s auth=%s improper_pipelining=%s bytes=%d duration=%.3fs",
            _host(session.peer),
            session.hello or "-",
            session.tls,
            session.authenticated or "-",
            session.improper_pipelining or "-",  # the command the client did not wait after
            session.bytes_received,
            time.time() - session.connected_at,
        )


def _is_own_address_literal(domain: str, local: object) -> bool:
    """Whether ``domain`` is ``[a.b.c.d]`` or ``[IPv6:...]`` naming the address the client connected to.

    RFC 1123 §5.2.17: a server MUST recognise a domain literal for its own IP
    addresses, whatever domains it serves (as it must accept ``postmaster``).
    The one the client reached is the one it can know without asking the system.
    """
    if not (domain.startswith("[") and isinstance(local, tuple) and local):
        return False
    inner = domain[1:-1].removeprefix("ipv6:")  # (the address comes lower-cased)
    try:
        return _unmapped(inner) == _unmapped(str(local[0]).partition("%")[0])
    except ValueError:  # a general literal ([tag:...]), or no IP address at all
        return False


def _unmapped(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # (how a dual-stack socket sees an IPv4 client)
    return address


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(text: str, option: str) -> _Network:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{option} {text!r}: not an IP address or network (192.0.2.7, 10.0.0.0/8)") from None
    mapped = network.network_address
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None and network.prefixlen >= 96:
        # "::ffff:10.0.0.5", as a dual-stack socket shows an IPv4 proxy: peers are compared unmapped.
        return ipaddress.ip_network(f"{mapped.ipv4_mapped}/{network.prefixlen - 96}")
    return network


def _forwarded(xforward: XForward | None) -> str:
    """`` forwarded=ADDR`` when an MTA said with XFORWARD where the mail came from (its
    other attributes are free text, for an application to quote as it logs them)."""
    if xforward is None or xforward.addr is None:
        return ""
    return f" forwarded={'unknown' if xforward.addr == XForward.UNAVAILABLE else xforward.addr}"


def _host(peer: object) -> str:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    if peer is None:  # an XCLIENT said ADDR=[UNAVAILABLE]
        return "unknown"
    return str(peer) or "unix"


def _protocol(session: Session, lmtp: bool) -> str:
    """RFC 3848 "with" keywords: ESMTP, ESMTPS (TLS), ESMTPA (AUTH), ESMTPSA, LMTP...;
    UTF8SMTP, UTF8SMTPS... and UTF8LMTP... for a transaction with SMTPUTF8 (RFC 6531 §3.7.3)."""
    utf8 = session.envelope.mail_params.smtputf8
    if lmtp:
        base = "UTF8LMTP" if utf8 else "LMTP"
    elif session.hello_verb == "HELO":
        return "SMTP"
    else:
        base = "UTF8SMTP" if utf8 else "ESMTP"
    return base + ("S" if session.tls else "") + ("A" if session.authenticated else "")


class SinkHandler(Handler):
    """:class:`MailSink` for the blocking and gevent servers.

    ``in_thread(call)`` runs a blocking call (a password check, a delivery's
    ``fsync``) in a worker thread and returns its result; without it they run
    right here (the blocking server has a thread per session).  ``sleep`` is the
    wait after a wrong password: ``time.sleep`` in a thread per session,
    ``gevent.sleep`` on gevent.
    """

    def __init__(
        self,
        sink: MailSink,
        in_thread: Callable[[Callable[[], Any]], Any] | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.sink = sink
        self.transcript_enabled = sink.transcript_dir is not None
        self._in_thread = in_thread
        self._sleep = sleep

    def transcript(self, session: Session, direction: str, data: bytes) -> None:
        self.sink.transcript(session, direction, data)

    def connection_opened(self, session: Session) -> Reply | None:
        return self.sink.connection_opened(session)

    def xclient(self, session: Session, xclient: XClient) -> Reply | None:
        return self.sink.xclient(session, xclient)

    def xforward(self, session: Session, xforward: XForward) -> Reply | None:
        return self.sink.xforward(session, xforward)

    def mail_from(self, session: Session, mail: Mail) -> Reply | None:
        return self.sink.mail_from(session, mail)

    def rcpt_to(self, session: Session, rcpt: Rcpt) -> Reply | None:
        return self.sink.rcpt_to(session, rcpt)

    def data_start(self, session: Session) -> None:
        self.sink.data_start(session)

    def data_chunk(self, session: Session, data: bytes) -> None:
        self.sink.data_chunk(session, data)

    def message_complete(self, session: Session, envelope: Envelope) -> CompleteResult:
        if self._in_thread is None or self.sink.store is None:
            return self.sink.message_complete(session, envelope)
        result: CompleteResult = self._in_thread(functools.partial(self.sink.message_complete, session, envelope))
        return result

    def message_aborted(self, session: Session, reply: Reply | None) -> None:
        self.sink.message_aborted(session, reply)

    def auth(self, session: Session, credentials: AuthCredentials) -> bool:
        if self._in_thread is None:
            accepted = self.sink.auth(session, credentials)
        else:
            accepted = self._in_thread(functools.partial(self.sink.auth, session, credentials))
        if not accepted and self.sink.auth_failure_delay:
            self._sleep(self.sink.auth_failure_delay)
        return bool(accepted)

    def connection_closed(self, session: Session) -> None:
        self.sink.connection_closed(session)


class AsyncSinkHandler(AsyncHandler):
    """:class:`MailSink` for the asyncio and trio servers.

    ``in_thread(call)`` runs a blocking call (a password check, a delivery's
    ``fsync``) in a worker thread and returns its result: ``asyncio.to_thread``,
    ``trio.to_thread.run_sync``.  ``sleep`` is the wait after a wrong password:
    ``asyncio.sleep``, ``trio.sleep``.
    """

    def __init__(
        self,
        sink: MailSink,
        in_thread: Callable[[Callable[[], Any]], Awaitable[Any]],
        sleep: Callable[[float], Awaitable[object]],
    ) -> None:
        self.sink = sink
        self.transcript_enabled = sink.transcript_dir is not None
        self._in_thread = in_thread
        self._sleep = sleep

    async def transcript(self, session: Session, direction: str, data: bytes) -> None:
        self.sink.transcript(session, direction, data)

    async def connection_opened(self, session: Session) -> Reply | None:
        return self.sink.connection_opened(session)

    async def xclient(self, session: Session, xclient: XClient) -> Reply | None:
        return self.sink.xclient(session, xclient)

    async def xforward(self, session: Session, xforward: XForward) -> Reply | None:
        return self.sink.xforward(session, xforward)

    async def mail_from(self, session: Session, mail: Mail) -> Reply | None:
        return self.sink.mail_from(session, mail)

    async def rcpt_to(self, session: Session, rcpt: Rcpt) -> Reply | None:
        return self.sink.rcpt_to(session, rcpt)

    async def data_start(self, session: Session) -> None:
        self.sink.data_start(session)

    async def data_chunk(self, session: Session, data: bytes) -> None:
        self.sink.data_chunk(session, data)

    async def message_complete(self, session: Session, envelope: Envelope) -> CompleteResult:
        if self.sink.store is None:  # discarding: nothing to wait for
            return self.sink.message_complete(session, envelope)
        result: CompleteResult = await self._in_thread(functools.partial(self.sink.message_complete, session, envelope))
        return result

    async def message_aborted(self, session: Session, reply: Reply | None) -> None:
        self.sink.message_aborted(session, reply)

    async def auth(self, session: Session, credentials: AuthCredentials) -> bool:
        accepted = await self._in_thread(functools.partial(self.sink.auth, session, credentials))
        if not accepted and self.sink.auth_failure_delay:
            await self._sleep(self.sink.auth_failure_delay)
        return bool(accepted)

    async def connection_closed(self, session: Session) -> None:
        self.sink.connection_closed(session)


@overload
def sink_handler(sink: MailSink, adapter: Literal["asyncio", "trio"]) -> AsyncSinkHandler: ...
@overload
def sink_handler(sink: MailSink, adapter: str) -> SinkHandler | AsyncSinkHandler: ...
def sink_handler(sink: MailSink, adapter: str) -> SinkHandler | AsyncSinkHandler:
    """The handler that presents ``sink`` to the server of ``adapter`` ("asyncio",
    "trio", "gevent" or "blocking"), with the password check and a delivery's
    ``fsync`` off the event loop or the gevent hub, and the wait after a wrong
    password in the adapter's own sleep."""
    if adapter == "asyncio":
        import asyncio

        return AsyncSinkHandler(sink, asyncio.to_thread, asyncio.sleep)
    if adapter == "trio":
        import trio

        return AsyncSinkHandler(sink, trio.to_thread.run_sync, trio.sleep)
    if adapter == "gevent":
        import gevent

        def in_the_hubs_threadpool(call: Callable[[], Any]) -> Any:
            # The hub of the thread that serves the session, looked up when the call is made.
            # The worker hands an exception back rather than raising it there: gevent would
            # print its traceback to stderr for every refusal (a full disk's 452 among them),
            # which the dispatcher answers and logs itself.
            def caught() -> tuple[Any, Exception | None]:
                try:
                    return call(), None
                except Exception as exc:
                    return None, exc

            result, error = gevent.get_hub().threadpool.apply(caught)
            if error is not None:
                raise error
            return result

        return SinkHandler(sink, in_the_hubs_threadpool, gevent.sleep)
    if adapter == "blocking":
        return SinkHandler(sink)
    raise ValueError(f"no such adapter: {adapter!r}")
