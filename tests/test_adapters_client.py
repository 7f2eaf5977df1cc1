"""The four client adapters against real servers, on 127.0.0.1 with ephemeral ports.

Every test runs once per client adapter.  The servers run beside the test on
threads of their own: aiosmtpd's ``Controller``, smtpcore's own servers through
the plugin's ``smtp_server_factory`` (any server adapter), and the plugin's
scripted ``fake_smtp_server`` for the faults.  The clients are called from the
test thread in their own dialect: a plain call (blocking, gevent), one
``asyncio.run`` or one ``trio.run`` per call.

* ``test_aiosmtpd_*``: delivery to aiosmtpd, plain and STARTTLS.
* ``test_matrix``: the 4 x 4 matrix of our clients against our servers, one
  combined scenario per pair (STARTTLS required, AUTH, PIPELINING, CHUNKING/BDAT,
  SMTPUTF8, two messages on one connection, byte-exact content).
* ``test_data_*``, ``test_lmtp_*``, ``test_implicit_tls``: one feature each, every
  client against a different server adapter.
* ``test_fault_*``: 421, refused recipients, a hang-up, a slow server, STARTTLS
  required but not offered, a certificate that does not verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import io
import pathlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.mime.text import MIMEText
from typing import Any, BinaryIO

import pytest
import trio
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AiosmtpdSMTP
from aiosmtpd.smtp import Envelope as AiosmtpdEnvelope
from aiosmtpd.smtp import Session as AiosmtpdSession
from helpers import counts_sockets, open_sockets

import adapters._sockets
from adapters._fakeserver import FakeSMTPServer
from adapters._testserver import TlsMode
from adapters.pytest_plugin import SMTPServerFactory, TestCA
from smtpcore import (
    ClientConfig,
    Credentials,
    Envelope,
    MessageOutcome,
    Reply,
    ServerConfig,
    SessionOutcome,
    SMTPNotSupportedError,
    SMTPPermanentError,
    SMTPTransientError,
    TlsPolicy,
)

CLIENTS = ["blocking", "asyncio", "trio", "gevent"]
SERVERS = ["blocking", "asyncio", "trio", "gevent"]
#: Each client against a different server adapter, for the single-feature tests.
PAIRS = list(zip(CLIENTS, reversed(SERVERS), strict=True))

PLAIN = ClientConfig(starttls=TlsPolicy.OFF)
REQUIRED = ClientConfig(starttls=TlsPolicy.REQUIRED)

# Lines that dot-stuffing must survive, a long line, 8-bit text: what arrives must be exactly this.
CONTENT = (
    b"From: a@example.com\r\nTo: b@example.org\r\nSubject: test\r\n\r\n"
    b".leading dot\r\n.\r\n..two dots\r\n" + b"x" * 900 + b"\r\n" + "Grüße\r\n".encode() + b"last line\r\n"
)


def call(client: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``adapters.<client>_client.<name>`` from the test thread, in its own dialect."""
    function = getattr(importlib.import_module(f"adapters.{client}_client"), name)
    if client == "asyncio":
        return asyncio.run(function(*args, **kwargs))
    if client == "trio":
        return trio.run(functools.partial(function, *args, **kwargs))
    return function(*args, **kwargs)


def send(client: str, *args: Any, **kwargs: Any) -> MessageOutcome:
    outcome = call(client, "send_message", *args, **kwargs)
    assert isinstance(outcome, MessageOutcome)
    return outcome


def session(client: str, *args: Any, **kwargs: Any) -> SessionOutcome:
    outcome = call(client, "send_messages", *args, **kwargs)
    assert isinstance(outcome, SessionOutcome)
    return outcome


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- aiosmtpd -------------------------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.envelopes: list[AiosmtpdEnvelope] = []

    async def handle_DATA(self, server: AiosmtpdSMTP, session: AiosmtpdSession, envelope: AiosmtpdEnvelope) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 OK"


class _EphemeralController(Controller):
    """aiosmtpd 1.4's Controller checks it is up by connecting to ``self.port``: read port 0's real port first."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@pytest.fixture
def aiosmtpd_server(request: pytest.FixtureRequest, smtp_ca: TestCA) -> Iterator[tuple[_Sink, int]]:
    tls: bool = getattr(request, "param", False)
    sink = _Sink()
    options: dict[str, Any] = {"tls_context": smtp_ca.server_context(), "require_starttls": True} if tls else {}
    controller = _EphemeralController(sink, hostname="127.0.0.1", port=0, **options)
    controller.start()
    try:
        yield sink, controller.port
    finally:
        controller.stop()


@pytest.mark.parametrize("aiosmtpd_server", [False], indirect=True)
def test_aiosmtpd_plain(client: str, aiosmtpd_server: tuple[_Sink, int]) -> None:
    sink, port = aiosmtpd_server
    outcome = send(
        client, "127.0.0.1", port, "a@example.com", ["b@example.org", "c@example.org"], CONTENT, config=PLAIN
    )
    assert outcome.delivered == ("b@example.org", "c@example.org")
    (envelope,) = sink.envelopes
    assert envelope.mail_from == "a@example.com"
    assert envelope.rcpt_tos == ["b@example.org", "c@example.org"]
    assert envelope.original_content == CONTENT


@pytest.mark.parametrize("aiosmtpd_server", [True], indirect=True)
def test_aiosmtpd_starttls(client: str, aiosmtpd_server: tuple[_Sink, int], smtp_ca: TestCA) -> None:
    sink, port = aiosmtpd_server
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.org", "over TLS"
    message.set_content("Hello\n")
    result = session(
        client,
        "127.0.0.1",
        port,
        [(Envelope("a@example.com", ["b@example.org"]), message)],
        config=REQUIRED,
        tls_context=smtp_ca.client_context(),
    )
    assert result.error is None and result.tls
    (envelope,) = sink.envelopes
    assert envelope.original_content == message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


# --- our servers: the matrix ----------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_matrix(client: str, server: str, smtp_server_factory: SMTPServerFactory) -> None:
    """STARTTLS (required), AUTH PLAIN, PIPELINING, BDAT and SMTPUTF8; two messages on one connection."""
    srv = smtp_server_factory(server, tls="required", auth={"user": "secret"}, auth_required=True)
    utf8 = EmailMessage()
    utf8["From"], utf8["To"], utf8["Subject"] = "jörg@exämple.com", "b@example.org", "Grüße"
    utf8.set_content("Hallo\n")
    result = session(
        client,
        srv.host,
        srv.port,
        [
            (Envelope("a@example.com", ["b@example.org", "c@example.org"]), CONTENT),
            (Envelope("jörg@exämple.com", ["b@example.org"]), utf8),
        ],
        config=REQUIRED,
        tls_context=srv.client_context(),
        credentials=Credentials("user", "secret"),
    )
    assert result.error is None, result.error
    assert result.tls and result.capabilities is not None
    assert result.capabilities.pipelining and result.capabilities.chunking
    assert [m.delivered for m in result.messages] == [("b@example.org", "c@example.org"), ("b@example.org",)]
    first, second = srv.wait_for(2)
    assert first.raw == CONTENT and first.recipients == ["b@example.org", "c@example.org"]
    assert first.tls and first.authenticated == "user"
    assert second.mail_from == "jörg@exämple.com" and second.mail_params.smtputf8
    assert second["Subject"] == "Grüße"


# --- our servers: one feature each ----------------------------------------------------------------


class _CountingFile(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads.append(-1 if size is None else size)
        return super().read(size)


@pytest.mark.parametrize(("client", "server"), PAIRS)
def test_data_streamed_from_a_file(client: str, server: str, smtp_server_factory: SMTPServerFactory) -> None:
    """DATA with dot-stuffing across small chunk boundaries, from a file object read piece by piece."""
    srv = smtp_server_factory(server)
    body = b"".join(b".line %d\r\n" % i for i in range(5000)) + b".\r\n"
    source = _CountingFile(CONTENT + body)
    config = ClientConfig(starttls=TlsPolicy.OFF, use_chunking=False, chunk_size=1000)
    outcome = send(client, srv.host, srv.port, "a@example.com", ["b@example.org"], source, config=config)
    assert outcome.delivered == ("b@example.org",)
    assert srv.wait_for(1)[0].raw == CONTENT + body
    assert len(source.reads) > 50 and max(source.reads) == 1000  # never read whole


class _FailingFile(io.BytesIO):
    """A file whose second read fails, as a disk or a network file system may."""

    def read(self, size: int | None = -1, /) -> bytes:
        if self.tell():
            raise OSError(5, "Input/output error")
        return super().read(size)


@pytest.mark.parametrize(("client", "server"), PAIRS)
def test_a_message_that_cannot_be_read_or_sent_ends_the_session_at_once(
    client: str, server: str, smtp_server_factory: SMTPServerFactory
) -> None:
    """The message before it keeps its outcome, no exception escapes, and no read waits for a timeout."""
    srv = smtp_server_factory(server)
    config = ClientConfig(starttls=TlsPolicy.OFF, use_chunking=False, chunk_size=1000)
    for source, error in (
        (_FailingFile(CONTENT * 100), SMTPTransientError),
        (iter([b"ok\r\n", "str"]), SMTPPermanentError),
    ):
        started = time.monotonic()
        first = (Envelope("a@example.com", ["b@example.org"]), CONTENT)
        result = session(
            client, srv.host, srv.port, [first, (Envelope("a@example.com", ["c@example.org"]), source)], config=config
        )
        assert time.monotonic() - started < 5  # (the data timeout is 3 minutes)
        assert result.messages[0].delivered == ("b@example.org",)
        assert isinstance(result.messages[1].error, error), result.messages[1].error
    assert [m.recipients for m in srv.wait_for(2)] == [["b@example.org"]] * 2


@pytest.mark.parametrize(("client", "server"), PAIRS)
def test_compat32_messages_go_and_text_mode_files_are_refused_before_mail(
    client: str, server: str, smtp_server_factory: SMTPServerFactory, tmp_path: pathlib.Path
) -> None:
    """smtplib's send_message takes a MIMEText; a file opened in text mode is refused alone, before its MAIL."""
    srv = smtp_server_factory(server)
    legacy = MIMEText("Hello from MIMEText\n")
    legacy["Subject"], legacy["From"], legacy["To"] = "legacy", "a@example.com", "b@example.org"
    path = tmp_path / "message.eml"
    path.write_bytes(CONTENT)
    with path.open() as text_mode:  # (not "rb")
        result = session(
            client,
            srv.host,
            srv.port,
            [
                (Envelope.from_message(legacy), legacy),
                (Envelope("a@example.com", ["c@example.org"]), text_mode),
                (Envelope("a@example.com", ["d@example.org"]), CONTENT),
            ],
            config=PLAIN,
        )
    legacy_outcome, text_outcome, bytes_outcome = result.messages
    assert result.error is None
    assert legacy_outcome.delivered == ("b@example.org",) and bytes_outcome.delivered == ("d@example.org",)
    assert isinstance(text_outcome.error, SMTPPermanentError) and "'rb'" in str(text_outcome.error)
    first, second = srv.wait_for(2)
    assert first.raw == legacy.as_bytes(policy=legacy.policy.clone(linesep="\r\n"))
    assert second.recipients == ["d@example.org"]


@pytest.mark.parametrize(("client", "server"), PAIRS)
def test_bdat_binary_chunks(client: str, server: str, smtp_server_factory: SMTPServerFactory) -> None:
    """An iterable of chunks over BDAT, re-chunked by the driver; content arrives octet-exact."""
    srv = smtp_server_factory(server)
    pieces = [CONTENT[i : i + 7] for i in range(0, len(CONTENT), 7)]
    config = ClientConfig(starttls=TlsPolicy.OFF, chunk_size=100)
    outcome = send(client, srv.host, srv.port, "a@example.com", ["b@example.org"], iter(pieces), config=config)
    assert outcome.delivered == ("b@example.org",)
    assert srv.wait_for(1)[0].raw == CONTENT


@pytest.mark.parametrize(("client", "server"), PAIRS)
def test_more_recipients_than_the_server_takes_go_in_further_transactions(
    client: str, server: str, smtp_server_factory: SMTPServerFactory
) -> None:
    """Our server takes 100 recipients a transaction (452 4.5.3 past them): all 250 get the message."""
    srv = smtp_server_factory(server, config=ServerConfig(max_recipients=100))
    recipients = [f"r{n}@example.org" for n in range(250)]
    config = ClientConfig(starttls=TlsPolicy.OFF)
    outcome = send(client, srv.host, srv.port, "a@example.com", recipients, CONTENT, config=config)
    assert outcome.delivered == tuple(recipients)
    assert [len(m.recipients) for m in srv.wait_for(3)] == [100, 100, 50]
    assert all(m.raw == CONTENT for m in srv.messages)


@pytest.mark.parametrize(("client", "server"), PAIRS)
def test_lmtp_per_recipient(client: str, server: str, smtp_server_factory: SMTPServerFactory) -> None:
    srv = smtp_server_factory(server, lmtp=True)
    srv.reject_delivery("full@example.org", Reply(452, "Mailbox full", "4.2.2"))
    config = ClientConfig(starttls=TlsPolicy.OFF, lmtp=True)
    outcome = send(
        client, srv.host, srv.port, "a@example.com", ["b@example.org", "full@example.org"], CONTENT, config=config
    )
    assert outcome.delivered == ("b@example.org",)
    error = outcome.refused["full@example.org"]
    assert isinstance(error, SMTPTransientError) and error.reply is not None and error.reply.code == 452
    captured = srv.wait_for(1)[0]
    assert captured.raw == CONTENT


@pytest.mark.parametrize(("client", "server"), PAIRS)
def test_implicit_tls(client: str, server: str, smtp_server_factory: SMTPServerFactory) -> None:
    srv = smtp_server_factory(server, tls="implicit")
    config = ClientConfig(implicit_tls=True, starttls=TlsPolicy.OFF)
    outcome = send(
        client, srv.host, srv.port, "a@example.com", ["b@example.org"], CONTENT,
        config=config, tls_context=srv.client_context(),
    )  # fmt: skip
    assert outcome.delivered == ("b@example.org",)
    captured = srv.wait_for(1)[0]
    assert captured.tls and captured.raw == CONTENT


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_source_address(client: str, smtp_server_factory: SMTPServerFactory) -> None:
    srv = smtp_server_factory("blocking")
    port = _free_port()
    send(client, srv.host, srv.port, "a@example.com", ["b@example.org"], b"x\r\n",
         config=PLAIN, source_address=("127.0.0.1", port))  # fmt: skip
    assert srv.wait_for(1)[0].peer[1] == port


# --- faults ---------------------------------------------------------------------------------------


def test_ehlo_names_the_local_address_unless_a_name_is_configured(
    client: str, fake_smtp_server: FakeSMTPServer
) -> None:
    """Not "localhost", which Postfix's reject_non_fqdn_helo_hostname refuses: the literal, as smtplib sends."""
    send(client, fake_smtp_server.host, fake_smtp_server.port, "a@example.com", ["b@example.org"], CONTENT,
         config=PLAIN)  # fmt: skip
    assert fake_smtp_server.commands[0] == "EHLO [127.0.0.1]"
    fake_smtp_server.clear()
    named = ClientConfig(starttls=TlsPolicy.OFF, local_hostname="client.example.org")
    send(client, fake_smtp_server.host, fake_smtp_server.port, "a@example.com", ["b@example.org"], CONTENT,
         config=named)  # fmt: skip
    assert fake_smtp_server.commands[0] == "EHLO client.example.org"


def test_fault_421(client: str, fake_smtp_server: FakeSMTPServer) -> None:
    fake_smtp_server.close_at("MAIL")
    with pytest.raises(SMTPTransientError) as caught:
        send(client, fake_smtp_server.host, fake_smtp_server.port, "a@example.com", ["b@example.org"], CONTENT,
             config=PLAIN)  # fmt: skip
    assert caught.value.reply is not None and caught.value.reply.code == 421
    assert fake_smtp_server.messages == []


def test_fault_421_greeting_in_a_session(client: str, fake_smtp_server: FakeSMTPServer) -> None:
    fake_smtp_server.on("CONNECT", "421 4.3.2 Too busy", disconnect=True)
    envelope = Envelope("a@example.com", ["b@example.org"])
    result = session(client, fake_smtp_server.host, fake_smtp_server.port, [(envelope, b"x"), (envelope, b"y")],
                     config=PLAIN)  # fmt: skip
    assert isinstance(result.error, SMTPTransientError)
    assert all(isinstance(m.error, SMTPTransientError) for m in result.messages)
    assert fake_smtp_server.commands == []


def test_fault_some_recipients_refused(client: str, fake_smtp_server: FakeSMTPServer) -> None:
    fake_smtp_server.refuse_recipient("bad@example.org")
    fake_smtp_server.greylist("later@example.org")
    outcome = send(
        client, fake_smtp_server.host, fake_smtp_server.port, "a@example.com",
        ["b@example.org", "bad@example.org", "later@example.org"], CONTENT, config=PLAIN,
    )  # fmt: skip
    assert outcome.error is None and outcome.delivered == ("b@example.org",)
    assert isinstance(outcome.refused["bad@example.org"], SMTPPermanentError)
    assert isinstance(outcome.refused["later@example.org"], SMTPTransientError)
    (message,) = fake_smtp_server.messages
    assert message.recipients == ["b@example.org"] and message.data == CONTENT


def test_fault_every_recipient_refused(client: str, fake_smtp_server: FakeSMTPServer) -> None:
    fake_smtp_server.on("RCPT", "550 5.1.1 No such user")
    with pytest.raises(SMTPPermanentError):
        send(client, fake_smtp_server.host, fake_smtp_server.port, "a@example.com", ["b@example.org", "c@example.org"],
             CONTENT, config=PLAIN)  # fmt: skip
    assert fake_smtp_server.messages == []
    assert not any(line.startswith("x" * 10) for line in fake_smtp_server.transcript)  # no content sent


def test_fault_server_hangs_up_mid_data(client: str, fake_smtp_server: FakeSMTPServer) -> None:
    fake_smtp_server.disconnect_during_data(after_bytes=20)
    with pytest.raises(SMTPTransientError):
        send(client, fake_smtp_server.host, fake_smtp_server.port, "a@example.com", ["b@example.org"],
             CONTENT * 200, config=PLAIN)  # fmt: skip
    assert fake_smtp_server.messages == []


@contextlib.contextmanager
def _one_connection(serve: Any) -> Iterator[int]:
    """A listener on 127.0.0.1 whose first connection ``serve(sock)`` handles in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def run() -> None:
        with contextlib.suppress(OSError), listener.accept()[0] as sock:
            sock.settimeout(5)
            serve(sock)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(10)
        listener.close()


def _up_to_starttls(sock: socket.socket, extensions: bytes = b"") -> BinaryIO:
    """Greet, answer EHLO offering STARTTLS (after ``extensions``), read STARTTLS; the lines read so far."""
    lines = sock.makefile("rb")
    sock.sendall(b"220 mx ESMTP\r\n")
    lines.readline()
    sock.sendall(b"250-mx\r\n" + extensions + b"250 STARTTLS\r\n")
    lines.readline()
    return lines


def test_fault_server_that_resets_after_the_greeting(client: str) -> None:
    # The cause is the socket's error on every adapter, as client.md promises: asyncio
    # read a reset as the server closing, and trio gave its BrokenResourceError.
    def reset(sock: socket.socket) -> None:
        sock.sendall(b"220 mx ESMTP\r\n")
        sock.recv(100)  # the EHLO
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    with _one_connection(reset) as port, pytest.raises(SMTPTransientError) as caught:
        send(client, "127.0.0.1", port, "a@example.com", ["b@example.org"], CONTENT, config=PLAIN)
    assert isinstance(caught.value.__cause__, ConnectionError), repr(caught.value.__cause__)


def test_a_tls_connection_is_closed_after_221_without_waiting_for_the_server(client: str, smtp_ca: TestCA) -> None:
    # Many MTAs answer QUIT with 221 and wait for the client to close, sending no
    # close_notify of their own.  asyncio's close() waited for one, CLOSE_TIMEOUT (1 s).
    client_done = threading.Event()

    def lingering(raw: socket.socket) -> None:
        with smtp_ca.server_context().wrap_socket(raw, server_side=True) as sock:
            lines = sock.makefile("rb")
            sock.sendall(b"220 mx ESMTP\r\n")
            for reply in (b"250-mx\r\n250 8BITMIME\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
                lines.readline()
                sock.sendall(reply)
            while lines.readline() not in (b".\r\n", b""):
                pass
            sock.sendall(b"250 queued\r\n")
            lines.readline()
            sock.sendall(b"221 bye\r\n")
            client_done.wait(3)  # no close_notify, no close: the client's to end it

    config = ClientConfig(implicit_tls=True, starttls=TlsPolicy.OFF)
    with _one_connection(lingering) as port:
        started = time.monotonic()
        try:
            outcome = send(
                client, "127.0.0.1", port, "a@example.com", ["b@example.org"], CONTENT,
                config=config, tls_context=smtp_ca.client_context(),
            )  # fmt: skip
        finally:
            took = time.monotonic() - started
            client_done.set()
    assert outcome.delivered == ("b@example.org",)
    assert took < 0.9  # at once; asyncio waited its full second for the server's close_notify


def test_plaintext_behind_the_starttls_220_is_never_read_inside_tls(client: str, smtp_ca: TestCA) -> None:
    # A man in the middle answers STARTTLS with the 220, enough padding to fill the
    # client's read, and a forged EHLO reply, then relays the real handshake.  asyncio
    # on 3.10/3.11 read the forgery after clearing its buffer and before start_tls()
    # paused the transport, and took it for the first reply inside TLS (a SIZE of 10).
    forged: list[bytes] = []

    def injecting(sock: socket.socket) -> None:
        _up_to_starttls(sock, b"250-PIPELINING\r\n")
        go_ahead = b"220 2.0.0 go ahead\r\n"
        sock.sendall(go_ahead + b"X" * (65536 - len(go_ahead)) + b"250-forged.example\r\n250 SIZE 10\r\n")
        with contextlib.suppress(OSError), smtp_ca.server_context().wrap_socket(sock, server_side=True) as tls:
            tls_lines = tls.makefile("rb")
            forged.append(tls_lines.readline())  # the client's EHLO inside TLS, if it got that far
            tls.sendall(b"250-mx\r\n250 SIZE 100000\r\n")
            for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
                tls_lines.readline()
                tls.sendall(reply)
            while tls_lines.readline() not in (b".\r\n", b""):
                pass
            tls.sendall(b"250 queued\r\n")
            tls_lines.readline()
            tls.sendall(b"221 bye\r\n")

    with _one_connection(injecting) as port, pytest.raises((SMTPTransientError, SMTPPermanentError)) as caught:
        send(client, "127.0.0.1", port, "a@example.com", ["b@example.org"], CONTENT,
             config=REQUIRED, tls_context=smtp_ca.client_context(), timeout=5)  # fmt: skip
    # The padding and the forgery are not TLS: the handshake fails on them, on every adapter.
    assert isinstance(caught.value.__cause__, ssl.SSLError), repr(caught.value.__cause__)
    assert forged == []


@pytest.mark.parametrize("when", ["after the STARTTLS 220", "at once, on the implicit TLS port"])
def test_a_server_that_closes_where_the_handshake_should_begin_fails_at_once(client: str, when: str) -> None:
    # asyncio on 3.10/3.11 let an AssertionError out (start_tls() on a transport that
    # had closed under it returned None), or waited out the handshake timeout.
    def closing(sock: socket.socket) -> None:
        if when.startswith("after"):
            _up_to_starttls(sock)
            sock.sendall(b"220 2.0.0 go ahead\r\n")

    config = REQUIRED if when.startswith("after") else ClientConfig(implicit_tls=True, starttls=TlsPolicy.OFF)
    started = time.monotonic()
    with _one_connection(closing) as port, pytest.raises(SMTPTransientError) as caught:
        send(client, "127.0.0.1", port, "a@example.com", ["b@example.org"], CONTENT, config=config, timeout=5)
    assert time.monotonic() - started < 2
    assert isinstance(caught.value.__cause__, OSError), repr(caught.value.__cause__)
    assert str(caught.value).startswith(("cannot set up TLS with 127.0.0.1:", "lost the connection to 127.0.0.1:"))
    assert not str(caught.value).endswith(": ")  # (asyncio's own reset said nothing)


@counts_sockets
@pytest.mark.parametrize("reset", ["before the look", "after the look"])
def test_a_reset_before_the_tls_handshake_leaves_no_socket_open(
    client: str, reset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # blocking and gevent: ssl's wrap_socket took the descriptor, found the socket reset,
    # and raised with a TLS socket nobody could close, alive while the error was kept.
    # They look for a reset first (still_connected); one that comes after that look
    # reaches the wrap, as it does now and then on a loaded machine: without the look,
    # every reset does.
    if reset == "after the look":
        monkeypatch.setattr(adapters._sockets, "still_connected", lambda sock, peer="server": None)

    def resetting(sock: socket.socket) -> None:
        _up_to_starttls(sock)
        sock.sendall(b"220 2.0.0 go ahead\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    kept = []  # what a relay's retry queue keeps: each deferred message's error
    before = open_sockets()
    for _ in range(3):
        with _one_connection(resetting) as port, pytest.raises(SMTPTransientError) as caught:
            send(client, "127.0.0.1", port, "a@example.com", ["b@example.org"], CONTENT, config=REQUIRED, timeout=5)
        kept.append(caught.value)
    assert open_sockets() <= before
    assert all(isinstance(error.__cause__, OSError) for error in kept)


@pytest.mark.parametrize("port", [65536 + 25, 0, -1, "25", True])
def test_a_port_out_of_range_is_a_value_error(client: str, port: Any) -> None:
    # getaddrinfo() takes 65536 + 25 as 25: three adapters connected to another port
    # than the one asked for, and asyncio raised OverflowError.
    with pytest.raises(ValueError, match="port must be an int from 1 to 65535"):
        send(client, "127.0.0.1", port, "a@example.com", ["b@example.org"], CONTENT, config=PLAIN)


@pytest.mark.skipif(not hasattr(socket, "TCP_NOTSENT_LOWAT"), reason="TCP_NOTSENT_LOWAT is Linux's and macOS's")
def test_the_kernel_holds_little_unsent_so_a_data_block_wait_measures_the_server(
    client: str, fake_smtp_server: FakeSMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With megabytes queued a blocked write woke only once a third had drained: a server
    # reading 640 KB/s without a pause ran out a 1 s data_block wait in three adapters of
    # four.  trio sets the option on every stream itself; the others on their socket.
    if client == "trio":
        pytest.skip("trio's SocketStream sets TCP_NOTSENT_LOWAT itself")
    module = importlib.import_module(f"adapters.{'blocking' if client == 'gevent' else client}_client")
    real, seen = module.limit_unsent, []

    def checked(sock: Any) -> None:
        real(sock)
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT))

    monkeypatch.setattr(module, "limit_unsent", checked)
    server = fake_smtp_server
    send(client, server.host, server.port, "a@example.com", ["b@example.org"], CONTENT, config=PLAIN)
    assert seen == [16 * 1024]


def test_a_reset_mid_content_is_the_sockets_own_error(client: str) -> None:
    # asyncio made up a ConnectionResetError("the connection is closed") for the write
    # after the reset; the others raise the socket's error, with its errno.
    def resetting(sock: socket.socket) -> None:
        lines = sock.makefile("rb")
        sock.sendall(b"220 mx ESMTP\r\n")
        for reply in (b"250-mx\r\n250 PIPELINING\r\n", b"250 ok\r\n250 ok\r\n354 go\r\n"):
            lines.readline()
            sock.sendall(reply)
        lines.readline()  # (the RCPT and DATA lines are the second burst's)
        lines.readline()
        sock.recv(1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    big = b"Subject: x\r\n\r\n" + (b"y" * 76 + b"\r\n") * 100_000  # more than the socket buffers hold
    with _one_connection(resetting) as port, pytest.raises(SMTPTransientError) as caught:
        send(client, "127.0.0.1", port, "a@example.com", ["b@example.org"], big, config=PLAIN, timeout=5)
    cause = caught.value.__cause__
    assert isinstance(cause, OSError) and cause.errno is not None, repr(cause)


def test_fault_slow_server_times_out(client: str, fake_smtp_server: FakeSMTPServer) -> None:
    fake_smtp_server.slow("RCPT", 5.0)
    started = time.monotonic()
    with pytest.raises(SMTPTransientError) as caught:
        send(client, fake_smtp_server.host, fake_smtp_server.port, "a@example.com", ["b@example.org"], CONTENT,
             config=PLAIN, timeout=0.5)  # fmt: skip
    assert time.monotonic() - started < 3
    assert isinstance(caught.value.__cause__, TimeoutError)


def test_fault_per_command_timeout_from_the_config(client: str, fake_smtp_server: FakeSMTPServer) -> None:
    """Without ``timeout=``, the wait is the driver's: here RFC 5321's "MAIL" timeout, shortened."""
    fake_smtp_server.slow("MAIL", 5.0)
    config = ClientConfig(starttls=TlsPolicy.OFF, use_pipelining=False, timeouts={"mail": 0.5})
    started = time.monotonic()
    with pytest.raises(SMTPTransientError) as caught:
        send(client, fake_smtp_server.host, fake_smtp_server.port, "a@example.com", ["b@example.org"], CONTENT,
             config=config)  # fmt: skip
    assert time.monotonic() - started < 3
    assert "mail timeout" in str(caught.value.__cause__)


def _drip(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` a byte every 50 ms, until the client hangs up or for 5 s at most (then a
    client that missed its timeout fails all the same, if later)."""
    ends = time.monotonic() + 5
    with contextlib.suppress(OSError):
        for byte in data:
            if time.monotonic() > ends:
                break
            sock.sendall(bytes([byte]))
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("replies", "options"),
    [
        ([], {"timeout": 0.5}),  # the greeting drips
        ([b"220 drips.example ESMTP\r\n"], {"config": ClientConfig(starttls=TlsPolicy.OFF, timeouts={"hello": 0.5})}),
    ],
    ids=["greeting-timeout=", "ehlo-config"],
)
def test_fault_server_that_drips_a_reply_times_out(client: str, replies: list[bytes], options: dict[str, Any]) -> None:
    """RFC 5321 §4.5.3.2 bounds the wait for a reply, not for each read: a byte every 50 ms is no escape."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        sock, _ = listener.accept()
        with sock, sock.makefile("rb") as reader:
            for reply in replies:
                sock.sendall(reply)
                reader.readline()
            _drip(sock, b"250-drips.example\r\n" * 100)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    options.setdefault("config", PLAIN)
    started = time.monotonic()
    try:
        with pytest.raises(SMTPTransientError) as caught:
            send(client, "127.0.0.1", listener.getsockname()[1], "a@example.com", ["b@example.org"], CONTENT,
                 **options)  # fmt: skip
        assert time.monotonic() - started < 2.5
        assert isinstance(caught.value.__cause__, TimeoutError)
    finally:
        thread.join(10)
        listener.close()


def test_fault_server_that_drips_a_tls_record_times_out(client: str, smtp_ca: TestCA) -> None:
    """The same over TLS, where a read waits for its whole record: a greeting in one record, dripped."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    context = smtp_ca.server_context()

    def serve() -> None:
        sock, _ = listener.accept()
        with sock:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context.wrap_bio(incoming, outgoing, server_side=True)
            while True:  # an implicit-TLS handshake, at the usual pace
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    if not (data := sock.recv(65536)):
                        return
                    incoming.write(data)
            sock.sendall(outgoing.read())
            tls.write(b"220-drips.example\r\n" * 100)  # one record of 1,900 octets
            _drip(sock, outgoing.read())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    config = ClientConfig(implicit_tls=True, starttls=TlsPolicy.OFF)
    started = time.monotonic()
    try:
        with pytest.raises(SMTPTransientError) as caught:
            send(client, "127.0.0.1", listener.getsockname()[1], "a@example.com", ["b@example.org"], CONTENT,
                 config=config, tls_context=smtp_ca.client_context(), timeout=0.5)  # fmt: skip
        assert time.monotonic() - started < 2.5
        assert isinstance(caught.value.__cause__, TimeoutError)
        assert "waiting: greeting" in str(caught.value.__cause__)
    finally:
        thread.join(10)
        listener.close()


def test_fault_server_that_stops_reading_content_times_out(client: str) -> None:
    """A write that the server never drains ends at the data block timeout (RFC 5321 §4.5.3.2.5).

    Within it, not a multiple of it: the kernel may take part of a write before
    it stalls, and the rest has only what is left of the same wait.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    held: list[socket.socket] = []

    def serve() -> None:
        sock, _ = listener.accept()
        held.append(sock)  # kept open, and never read once the content starts
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"220 stalls.example ESMTP\r\n")
        reader = sock.makefile("rb")
        for reply in (b"250 stalls.example\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go ahead\r\n"):
            reader.readline()
            sock.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    config = ClientConfig(starttls=TlsPolicy.OFF, use_pipelining=False, timeouts={"data_block": 1.5})
    started = time.monotonic()
    try:
        with pytest.raises(SMTPTransientError) as caught:
            send(client, "127.0.0.1", listener.getsockname()[1], "a@example.com", ["b@example.org"],
                 b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 100_000, config=config)  # fmt: skip
        assert time.monotonic() - started < 2.5  # (a second write's timeout, or a close waiting on the buffer: 3)
        assert isinstance(caught.value.__cause__, TimeoutError)
    finally:
        thread.join(5)
        for sock in held:
            sock.close()
        listener.close()


def test_fault_starttls_required_not_offered(client: str, fake_smtp_server: FakeSMTPServer) -> None:
    with pytest.raises(SMTPNotSupportedError):
        send(client, fake_smtp_server.host, fake_smtp_server.port, "a@example.com", ["b@example.org"], CONTENT,
             config=REQUIRED, credentials=Credentials("user", "secret"))  # fmt: skip
    verbs = [line.split(" ")[0].upper() for line in fake_smtp_server.commands]
    assert "MAIL" not in verbs and "AUTH" not in verbs and not any("STARTTLS" in v for v in verbs)
    assert fake_smtp_server.messages == []


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_fault_certificate_not_trusted(client: str, tls: TlsMode, smtp_server_factory: SMTPServerFactory) -> None:
    """The test CA is not in the default trust store: the default context refuses the server."""
    srv = smtp_server_factory("blocking", tls=tls)
    config = ClientConfig(implicit_tls=True, starttls=TlsPolicy.OFF) if tls == "implicit" else REQUIRED
    with pytest.raises(SMTPTransientError) as caught:
        send(client, srv.host, srv.port, "a@example.com", ["b@example.org"], CONTENT, config=config)
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    with pytest.raises(ssl.SSLCertVerificationError) as raised:
        session(client, srv.host, srv.port, [(Envelope("a@example.com", ["b@example.org"]), CONTENT)], config=config)
    assert raised.value.__cause__ is None  # ssl's own error, not chained to a dialect's wrapper of it
    assert srv.messages == []


#: A ServerHello record of 122 octets (its start, then zeros): it takes 6 s to drip whole.
_SERVER_HELLO = bytes.fromhex("160303007a020000760303") + bytes(116)


@pytest.mark.parametrize("server", ["silent", "drips"])
@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_fault_tls_handshake_that_stalls_times_out(client: str, tls: TlsMode, server: str) -> None:
    """Within the timeout (no wait for a close behind it), and said as a TLS failure in every dialect.

    A server that sends its handshake a byte at a time gets no more: the bound is on the whole handshake.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        sock, _ = listener.accept()
        with sock, sock.makefile("rb") as reader:
            if tls == "starttls":
                for reply in (b"220 stalls.example ESMTP\r\n", b"250-stalls.example\r\n250 STARTTLS\r\n"):
                    sock.sendall(reply)
                    reader.readline()
                sock.sendall(b"220 go ahead\r\n")
            if server == "drips":
                sock.recv(65536)  # the ClientHello
                _drip(sock, _SERVER_HELLO)
            reader.read()  # (never a whole TLS message back: until the client hangs up)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    config = ClientConfig(implicit_tls=True, starttls=TlsPolicy.OFF) if tls == "implicit" else REQUIRED
    started = time.monotonic()
    try:
        with pytest.raises(SMTPTransientError) as caught:
            send(client, "127.0.0.1", listener.getsockname()[1], "a@example.com", ["b@example.org"], CONTENT,
                 config=config, timeout=1.0)  # fmt: skip
        assert time.monotonic() - started < 1.6  # (a close waiting on the handshake: 2)
        assert str(caught.value).startswith("cannot set up TLS with 127.0.0.1:")
        assert str(caught.value.__cause__) == "the TLS handshake with 127.0.0.1 took over 1 s"
        assert isinstance(caught.value.__cause__, TimeoutError)
    finally:
        thread.join(10)
        listener.close()


def test_fault_connection_refused(client: str) -> None:
    # The same error in every dialect (trio's own is a plain OSError, "all attempts ... failed").
    port = _free_port()
    with pytest.raises(SMTPTransientError) as caught:
        send(client, "127.0.0.1", port, "a@example.com", ["b@example.org"], CONTENT, config=PLAIN)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    with pytest.raises(ConnectionRefusedError):
        session(client, "127.0.0.1", port, [(Envelope("a@example.com", ["b@example.org"]), CONTENT)], config=PLAIN)
