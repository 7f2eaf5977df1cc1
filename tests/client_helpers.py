"""Helpers for client-role tests: scripted-server transcripts and an in-memory server pair.

``run_client_transcript()`` plays a C:/S: transcript against a
:class:`ClientDriver`: ``S: `` lines are fed to the client (consecutive lines
as one read, or split as the ``split`` argument says), ``C: `` lines are what
the client must write (consecutive lines may come in one write: pipelining).
Two directives: ``TLS`` (the client must want the handshake now; it is
"done") and ``CLOSE`` (the server closes the connection).

``read_replies()`` runs a bare :class:`ClientConnection` over reply bytes and
returns what ``next_event()`` gave, for the three-way reader checks.

``pair()`` joins a driver and a :class:`ServerConnection` in memory and
returns what the server application received.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from smtpcore import (
    NEED_DATA,
    PAUSED,
    ClientConfig,
    ClientConnection,
    ClientDriver,
    ConnectionClosed,
    EndOfMessage,
    Event,
    Hello,
    Mail,
    MessageData,
    MessageRejected,
    Rcpt,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    TlsHandshake,
    XForward,
)


def parse_client_transcript(text: str) -> list[tuple[str, bytes]]:
    """Blocks of ("C", bytes), ("S", bytes), ("TLS", b""), ("CLOSE", b"")."""
    blocks: list[tuple[str, bytes]] = []
    for line in textwrap.dedent(text).strip("\n").splitlines():
        line = line.lstrip()  # transcripts are built by concatenation, so indents differ
        if not line:
            continue
        if line in ("C:", "S:"):
            line += " "
        if line.strip() in ("TLS", "CLOSE"):
            blocks.append((line.strip(), b""))
            continue
        tag, body = line[:3], line[3:]
        if tag not in ("C: ", "S: "):
            raise ValueError(f"transcript line must start with 'C: ' or 'S: ': {line!r}")
        who = tag[0]
        data = body.encode("utf-8") + b"\r\n"
        if blocks and blocks[-1][0] == who:
            blocks[-1] = (who, blocks[-1][1] + data)
        else:
            blocks.append((who, data))
    return blocks


def take_output(driver: ClientDriver, limit: int | None = None) -> bytes:
    """Everything the driver has to write now (content comes one piece per call)."""
    out = bytearray()
    while limit is None or len(out) < limit:
        piece = driver.bytes_to_send()
        if not piece:
            break
        out += piece
    return bytes(out)


def run_client_transcript(
    text: str,
    driver: ClientDriver,
    split: Callable[[bytes], Sequence[bytes]] | None = None,
    complete: bool = True,
) -> ClientDriver:
    """Play ``text``; with ``complete=False`` the client may still have bytes to write."""
    for who, data in parse_client_transcript(text):
        if who == "C":
            got = take_output(driver, len(data))
            assert got == data, f"client wrote {got!r}, transcript says {data!r}"
        elif who == "S":
            extra = take_output(driver)
            assert extra == b"", f"the client wrote {extra!r} before the server's {data!r}"
            for piece in split(data) if split else [data]:
                driver.receive(piece)
        elif who == "TLS":
            assert take_output(driver) == b""
            assert driver.wants_tls
            driver.tls_established()
        else:
            driver.receive(b"")
    if complete:
        assert take_output(driver) == b"", "the client wrote more than the transcript says"
    return driver


def read_replies(data: bytes | Sequence[bytes], expected: int, config: ClientConfig | None = None) -> list[Any]:
    """Feed reply bytes to a connection that has ``expected`` commands outstanding
    (the greeting plus NOOPs); return every reply / error / final sentinel."""
    conn = ClientConnection(config or ClientConfig())
    conn._outstanding.extend(conn._outstanding[0].__class__(None) for _ in range(expected - 1))
    chunks = [data] if isinstance(data, bytes) else list(data)
    events: list[Any] = []
    for chunk in [*chunks, None]:
        if chunk is not None:
            conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                events.append(("error", str(exc).split(" ")[0]))
                return events
            if event is NEED_DATA or event is PAUSED:
                if chunk is None:
                    events.append(event)
                break
            events.append(event)
            if isinstance(event, ConnectionClosed):
                # A closed connection answers ConnectionClosed for ever (as h11 does):
                # stop here, or a 421 in the stream makes this loop endless.
                return events
    return events


# --- an in-memory client/server pair -------------------------------------------------------------


@dataclass
class Received:
    """What the server application saw for one message."""

    mail: Mail
    recipients: list[Rcpt]
    content: bytes
    #: What XFORWARD said for the message (a server with ``xforward=True``), or None.
    xforward: XForward | None = None


@dataclass
class PairResult:
    driver: ClientDriver
    server: ServerConnection
    messages: list[Received] = field(default_factory=list)
    rejected: list[Reply] = field(default_factory=list)
    wire_to_server: bytes = b""


ServerPolicy = Callable[[ServerConnection, Event], None]


def pair(
    driver: ClientDriver,
    server_config: ServerConfig | None = None,
    policy: ServerPolicy | None = None,
    max_steps: int = 100_000,
) -> PairResult:
    """Run a driver against a real ServerConnection in memory until the driver is done."""
    server = ServerConnection(server_config or ServerConfig())
    server.accept()
    result = PairResult(driver, server)
    current: list[Any] = []
    wire = bytearray()
    for _ in range(max_steps):
        if driver.done:
            break
        out = driver.bytes_to_send()
        if out:
            wire += out
            server.receive_data(out)
        elif driver.wants_tls:
            driver.tls_established()
            continue
        while True:
            event = server.next_event()
            if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
                break
            if isinstance(event, TlsHandshake):
                server.tls_established()
                continue
            if isinstance(event, Mail):
                current = [event, b""]
            elif isinstance(event, MessageData):
                current[1] += bytes(event.data)
            elif isinstance(event, EndOfMessage):
                result.messages.append(Received(current[0], list(server.recipients), current[1], server.xforward))
            elif isinstance(event, MessageRejected):
                result.rejected.append(event.reply)
            assert isinstance(event, Event)  # NEED_DATA and PAUSED broke out above
            if server.reply_due:
                (policy or (lambda conn, ev: conn.accept()))(server, event)
        reply_bytes = server.data_to_send()
        if reply_bytes:
            driver.receive(reply_bytes)
        elif not out and not driver.wants_tls and not driver.done:
            driver.receive(b"")  # the server has nothing to say: it hung up
    else:  # pragma: no cover
        raise AssertionError("the session did not finish")
    result.wire_to_server = bytes(wire)
    return result


def byte_split(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


#: An EHLO reply offering what the client machine's tests need.
EHLO_ALL = b"250-mx\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250 STARTTLS\r\n"


def reply(conn: ClientConnection, data: bytes) -> Reply:
    conn.receive_data(data)
    event = conn.next_event()
    assert isinstance(event, Reply), event
    return event


def ready(ehlo: bytes = EHLO_ALL, **options: Any) -> ClientConnection:
    conn = ClientConnection(ClientConfig(**options))
    assert conn.next_event() is NEED_DATA
    reply(conn, b"220 mx ESMTP\r\n")
    assert conn.next_event() is PAUSED
    conn.send(Hello("client.example", "LHLO" if options.get("lmtp") else "EHLO"))
    reply(conn, ehlo)
    conn.data_to_send()
    return conn
