"""A small driver for server-role tests: feed bytes, collect events, answer with a policy.

``drive()`` feeds a ServerConnection the given chunks one after the other, runs
``next_event()`` until it needs data, answers every event that has a reply due
with a *policy* (by default ``conn.accept()``), does the "TLS handshake" the
moment it is asked for, and returns the events and every byte the server wrote.
A ``RemoteProtocolError`` ends the run and is recorded as the last "event".

``check_three_ways()`` is h11's reader check for a whole server: the same bytes
fed at once, byte by byte, and with trailing bytes that must stay untouched in
the receive buffer, must give the same events and the same output.

``run_transcript()`` checks a C:/S: transcript: ``C: `` lines are what the
client sends (CRLF added), ``S: `` lines the exact bytes the server must write.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest

from smtpcore import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Event,
    MessageData,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    TlsHandshake,
)

Policy = Callable[[ServerConnection, Event], None]


def accept_all(conn: ServerConnection, event: Event) -> None:
    conn.accept()


def make_server(config: ServerConfig | None = None, greet: bool = True, **options: Any) -> ServerConnection:
    if config is None:
        config = ServerConfig(**options)
    conn = ServerConnection(config)
    if greet:
        conn.accept()
    return conn


class Driver:
    """Feeds one connection and keeps what came out; ``feed()`` may be called again."""

    def __init__(self, conn: ServerConnection, policy: Policy | None = None, tls: bool = True) -> None:
        self.conn = conn
        self.policy = policy or accept_all
        self.tls = tls
        self.events: list[Any] = []
        self.output = bytearray()
        #: The most output one next_event() call queued by itself (the core's own replies).
        self.largest_write = 0
        self.done = False

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self.conn.receive_data(data)
        self.pump()

    def pump(self) -> None:
        conn = self.conn
        while not self.done:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self.events.append(exc)
                self.done = True
                break
            finally:
                out = conn.data_to_send()
                self.output += out
                self.largest_write = max(self.largest_write, len(out))
            if event is NEED_DATA or event is PAUSED:
                # PAUSED: a policy that left the reply to the test, or a TLS
                # handshake the test holds back.
                break
            assert isinstance(event, Event)
            self.events.append(event)
            if isinstance(event, ConnectionClosed):
                self.done = True
            elif isinstance(event, TlsHandshake):
                if self.tls:
                    conn.tls_established()
            elif conn.reply_due:
                self.policy(conn, event)
            self.output += conn.data_to_send()


def drive(
    chunks: bytes | Iterable[bytes],
    config: ServerConfig | None = None,
    policy: Policy | None = None,
    conn: ServerConnection | None = None,
    close: bool = False,
    tls: bool = True,
) -> tuple[list[Any], bytes]:
    """Feed ``chunks`` (bytes = one chunk) and return (events, output bytes)."""
    if conn is None:
        conn = make_server(config)
    driver = Driver(conn, policy, tls)
    driver.output += conn.data_to_send()
    for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
        # An empty chunk only runs the machine: closing is ``close=True``.
        if chunk:
            driver.feed(chunk)
        else:
            driver.pump()
    if close:
        driver.feed(b"")
    return driver.events, bytes(driver.output)


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = [0, *sorted(cut for cut in cuts if 0 < cut < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def normalise(events: Iterable[Any]) -> list[Any]:
    """Events with adjacent MessageData merged (their boundaries depend on the feed)."""
    out: list[Any] = []
    for event in events:
        if isinstance(event, MessageData) and out and isinstance(out[-1], MessageData):
            out[-1] = MessageData(out[-1].data + event.data)
        elif isinstance(event, RemoteProtocolError):
            out.append(("RemoteProtocolError", event.reply))
        else:
            out.append(event)
    return out


def content(events: Iterable[Any]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, MessageData))


def check_three_ways(
    data: bytes,
    config: ServerConfig | None = None,
    policy: Policy | None = None,
    trailing: bytes = b"",
) -> tuple[list[Any], bytes]:
    """Whole, byte by byte, and (if ``trailing`` is given) with trailing bytes left untouched.

    ``trailing`` must be bytes the machine will not read in the state ``data``
    leaves it in (e.g. after a command that pauses, or after QUIT): the events
    and output must be the same as without them, and the bytes must still be in
    the receive buffer afterwards.
    """
    whole_events, whole_out = drive(data, config, policy)
    drip_events, drip_out = drive(byte_by_byte(data), config, policy)
    assert normalise(drip_events) == normalise(whole_events)
    assert drip_out == whole_out
    if trailing:
        conn = make_server(config)
        events, out = drive(data + trailing, conn=conn, policy=policy)
        assert normalise(events) == normalise(whole_events)
        assert out == whole_out
        if conn.state.value != "closed":
            assert bytes(conn._buffer.peek()).endswith(trailing)
    return normalise(whole_events), whole_out


# --- transcripts ----------------------------------------------------------------------------------


def parse_transcript(text: str) -> tuple[list[bytes], bytes]:
    """Split a transcript into the client's lines and the server's exact output."""
    client: list[bytes] = []
    server = bytearray()
    for line in text.splitlines():
        # Leading indentation is ignored, so transcripts can be indented and built from pieces.
        line = line.lstrip()
        if not line:
            continue
        tag, body = line[:3], line[3:]
        if tag == "C: ":
            client.append(body.encode("utf-8") + b"\r\n")
        elif tag == "S: ":
            server += body.encode("utf-8") + b"\r\n"
        elif line == "C:":
            client.append(b"\r\n")
        else:
            raise ValueError(f"transcript line must start with 'C: ' or 'S: ': {line!r}")
    return client, bytes(server)


def run_transcript(
    text: str,
    config: ServerConfig | None = None,
    policy: Policy | None = None,
    modes: Sequence[str] = ("lines", "whole", "bytes"),
    close: bool = False,
    greeting: Reply | None = None,
) -> list[Any]:
    """Check the server writes exactly the ``S:`` lines when sent the ``C:`` lines.

    ``lines`` feeds one client line at a time (as a client waiting for each
    reply would), ``whole`` everything in one burst (pipelining), ``bytes`` one
    byte at a time.  A transcript whose meaning depends on timing (STARTTLS)
    passes ``modes=("lines",)``.  Returns the events of the first mode.
    """
    client, expected = parse_transcript(text)
    first: list[Any] | None = None
    for mode in modes:
        if mode == "lines":
            chunks = client
        elif mode == "whole":
            chunks = [b"".join(client)]
        else:
            chunks = byte_by_byte(b"".join(client))
        conn = ServerConnection(config or ServerConfig())
        if greeting is None:
            conn.accept()
        else:
            conn.send(greeting)
        events, out = drive(chunks, conn=conn, policy=policy, close=close)
        got = [mode, *out.decode("utf-8", "replace").split("\r\n")]
        assert got == [mode, *expected.decode("utf-8", "replace").split("\r\n")]
        if first is None:
            first = events
        else:
            assert normalise(events) == normalise(first), mode
    assert first is not None
    return first


# --- descriptors ----------------------------------------------------------------------------------

#: Skips a test that counts the process's sockets where /proc cannot tell them (not Linux).
counts_sockets = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd (Linux)"
)


def open_sockets() -> int:
    """How many sockets this process holds open: a leak shows as one more after than before."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (the directory's own descriptor, gone by now)
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count
