"""ServerConnection.redact: what a transcript may show of the client's bytes.

The secret must stay hidden however the reads split it, and a session without
AUTH must come out byte for byte.
"""

from __future__ import annotations

import base64

import pytest
from helpers import split_at
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtpcore import (
    NEED_DATA,
    AuthPolicy,
    ConnectionClosed,
    ServerConfig,
    ServerConnection,
    TlsHandshake,
    TlsPolicy,
)
from smtpcore._redact import Redactor

PLAIN = base64.b64encode(b"\0alice\0s3cret-pw")  # AGFsaWNlAHMzY3JldC1wdw==
USER = base64.b64encode(b"alice")  # YWxpY2U=
PASSWORD = base64.b64encode(b"s3cret-pw")  # czNjcmV0LXB3
SECRETS = (PLAIN, USER, PASSWORD)

CONFIG = ServerConfig(auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True)

# Sessions as a client sends them, each with the secret in a different place.
SESSIONS = {
    "plain, initial response": b"EHLO c.example\r\nAUTH PLAIN " + PLAIN + b"\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n",
    "plain, in the exchange": b"EHLO c.example\r\nAUTH PLAIN\r\n" + PLAIN + b"\r\nNOOP\r\nQUIT\r\n",
    "login": b"EHLO c.example\r\nAUTH LOGIN\r\n" + USER + b"\r\n" + PASSWORD + b"\r\nQUIT\r\n",
    "login, initial response": b"EHLO c.example\r\nauth login " + USER + b"\r\n" + PASSWORD + b"\r\nQUIT\r\n",
    "refused, then plain": b"EHLO c.example\r\nAUTH NOPE\r\nAUTH PLAIN " + PLAIN + b"\r\nQUIT\r\n",
    "malformed, refused": b"EHLO c.example\r\n AUTH PLAIN " + PLAIN + b"\r\nauth\tplain " + PLAIN + b"\r\nQUIT\r\n",
    "cancelled, then login": b"EHLO c.example\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN\r\n"
    + USER
    + b"\r\n"
    + PASSWORD
    + b"\r\n",
}
# The same from a client that ends its lines with LF alone, which the server reads as lines too.
SESSIONS.update({f"{name}, LF": session.replace(b"\r\n", b"\n") for name, session in list(SESSIONS.items())})


def transcript(reads: list[bytes], config: ServerConfig = CONFIG) -> bytes:
    """The client's side of a transcript, as the dispatcher makes it: each read
    redacted, then given to the session, which runs (accepting everything,
    credentials included) until it needs the next read."""
    conn = ServerConnection(config)
    conn.accept()
    shown = b""
    for data in reads:
        shown += conn.redact(data)
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if conn.reply_due:
                conn.accept()
    return shown


def four_grams(secret: bytes) -> set[bytes]:
    return {secret[i : i + 4] for i in range(len(secret) - 3)}


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    return split_at(data, draw(st.lists(st.integers(0, len(data)), max_size=12)))


@pytest.mark.parametrize("name", SESSIONS)
@given(data=st.data())
def test_no_split_of_the_reads_shows_a_secret(name: str, data: st.DataObject) -> None:
    session = SESSIONS[name]
    reads = data.draw(split(session))
    shown = transcript(reads)
    for secret in SECRETS:
        assert not four_grams(secret) & four_grams(shown), (reads, shown)
    assert shown.count(b"\r\n") == session.count(b"\r\n")  # every line is still there
    assert shown.count(b"\n") == session.count(b"\n")
    assert shown.startswith(session[: session.index(b"\n") + 1])  # the EHLO line


def test_the_grams_of_the_secrets_are_not_in_the_commands() -> None:
    # Else the property above could not tell a leak from a command.
    for session in SESSIONS.values():
        commands = session
        for secret in SECRETS:
            commands = commands.replace(secret, b"")
        for secret in SECRETS:
            assert not four_grams(secret) & four_grams(commands)


@pytest.mark.parametrize(
    ("reads", "expected"),
    [
        ([b"AUTH PLAIN " + PLAIN + b"\r\n"], b"AUTH PLAIN <redacted>\r\n"),
        # Split anywhere, the line still comes out whole, the secret once.
        ([b"AUTH PLA", b"IN " + PLAIN[:5], PLAIN[5:] + b"\r\n"], b"AUTH PLAIN <redacted>\r\n"),
        ([b"AUTH PLAIN ", PLAIN + b"\r\n"], b"AUTH PLAIN <redacted>\r\n"),
        # A CRLF split ends the line all the same: what follows it in the read is hidden.
        ([b"AUTH PLAIN " + PLAIN + b"\r", b"\nQUIT\r\n"], b"AUTH PLAIN <redacted>\r\n<redacted>\r\n"),
        # Pipelined after AUTH in the same read: SASL responses, hidden; the next read is a command.
        (
            [b"AUTH LOGIN\r\n" + USER + b"\r\n" + PASSWORD + b"\r\n", b"QUIT\r\n"],
            b"AUTH LOGIN\r\n<redacted>\r\n<redacted>\r\nQUIT\r\n",
        ),
        # The CRLF of "AUTH LOGIN" split: still an AUTH line, so what follows in the read is hidden.
        ([b"AUTH LOGIN\r", b"\n" + USER + b"\r\n"], b"AUTH LOGIN\r\n<redacted>\r\n"),
        # Lines that end in LF alone are lines to the server, and here.
        ([b"AUTH LOGIN\n" + USER + b"\n" + PASSWORD + b"\n", b"QUIT\n"], b"AUTH LOGIN\n<redacted>\n<redacted>\nQUIT\n"),
        ([b"AUTH PLAIN " + PLAIN + b"\nNOOP\r\n"], b"AUTH PLAIN <redacted>\n<redacted>\r\n"),
        # Inside the exchange every response is hidden, an empty one and a cancel too.
        ([b"AUTH LOGIN\r\n", USER + b"\r\n", b"\r\n"], b"AUTH LOGIN\r\n<redacted>\r\n<redacted>\r\n"),
        ([b"AUTH LOGIN\r\n", b"*\r\n", b"NOOP\r\n"], b"AUTH LOGIN\r\n<redacted>\r\nNOOP\r\n"),
        ([b"AUTH LOGIN\r\n", USER[:3], USER[3:] + b"\r\n"], b"AUTH LOGIN\r\n<redacted>\r\n"),
        # An AUTH line begun inside a hidden exchange and ended in the next read is still AUTH.
        (
            [b"AUTH PLAIN\r\n*\r\nAU", b"TH LOGIN\r\n" + USER + b"\r\n" + PASSWORD + b"\r\n"],
            b"AUTH PLAIN\r\n<redacted>\r\n<redacted>\r\n<redacted>\r\n<redacted>\r\n",
        ),
        # Nothing secret on these.
        ([b"AUTH LOGIN\r\n"], b"AUTH LOGIN\r\n"),
        ([b"AUTH\r\n", b"NOOP\r\n"], b"AUTH\r\nNOOP\r\n"),
        ([b"MAIL FROM:<a@b.example>\r\n"], b"MAIL FROM:<a@b.example>\r\n"),
        ([b"AUTHOR x y\r\n"], b"AUTHOR x y\r\n"),
        # "AUTH" in the middle of a line, even at the start of a read, is not a command.
        ([b"NOOP x", b"AUTH PLAIN y\r\n"], b"NOOP xAUTH PLAIN y\r\n"),
        # Malformed AUTH lines, which the server refuses: the secret was sent all the same.
        ([b"auth\tplain " + PLAIN + b"\r\nNOOP\r\n"], b"auth\tplain <redacted>\r\n<redacted>\r\n"),
        ([b" AUTH PLAIN " + PLAIN + b"\r\n"], b" AUTH PLAIN <redacted>\r\n"),
        ([b"\t", b"AUTH PLAIN\t" + PLAIN + b"\r\n"], b"\tAUTH PLAIN\t<redacted>\r\n"),
        ([b"AUTH\x00PLAIN\x00" + PLAIN + b"\r\n"], b"AUTH\x00PLAIN\x00<redacted>\r\n"),
        # Indented lines that are not AUTH lines pass as they are.
        ([b"  MAIL FROM:<a@b.example>\r\n\tauthor x\r\n"], b"  MAIL FROM:<a@b.example>\r\n\tauthor x\r\n"),
    ],
)
def test_what_a_transcript_shows(reads: list[bytes], expected: bytes) -> None:
    assert transcript([b"EHLO c.example\r\n", *reads]) == b"EHLO c.example\r\n" + expected


def test_a_line_left_unfinished_in_plaintext_does_not_join_the_first_under_tls() -> None:
    conn = ServerConnection(ServerConfig(tls=TlsPolicy.OPTIONAL, auth=AuthPolicy.OPTIONAL))
    conn.accept()
    # Bytes pipelined after STARTTLS in plaintext, which the core drops unread ...
    data = b"EHLO c.example\r\nSTARTTLS\r\nNOOP"
    assert conn.redact(data) == data
    conn.receive_data(data)
    while (event := conn.next_event()) is not NEED_DATA:
        if isinstance(event, TlsHandshake):
            conn.tls_established()
        elif conn.reply_due:
            conn.accept()
    assert conn.tls_active
    # ... and the redactor forgets too: the first read under TLS starts a line.
    assert conn.redact(b"AUTH PLAIN " + PLAIN + b"\r\n") == b"AUTH PLAIN <redacted>\r\n"


def test_any_bytes_like_read_is_taken() -> None:
    # A memoryview of a reused recv_into buffer, as docs/server.md allows for receive_data.
    conn = ServerConnection(CONFIG)
    read = bytearray(b"AUTH PLAIN " + PLAIN + b"\r\n")
    assert conn.redact(memoryview(read)) == b"AUTH PLAIN <redacted>\r\n"
    assert conn.redact(bytearray(b"NOOP\r\n")) == b"NOOP\r\n"


def test_a_mechanism_name_too_long_to_wait_for_hides_the_rest_of_its_line() -> None:
    redactor = Redactor()
    assert redactor.redact(b"AUTH " + b"X" * 200, in_exchange=False) == b"AUTH " + b"X" * 200
    assert redactor.redact(b"X" * 100, in_exchange=False) == b"<redacted>"
    assert redactor.redact(b" secret\r\nNOOP\r\n", in_exchange=False) == b"\r\nNOOP\r\n"


@given(st.binary(max_size=300), st.data())
def test_a_session_without_auth_is_shown_byte_for_byte(wire: bytes, data: st.DataObject) -> None:
    wire = wire.replace(b"A", b"a").replace(b"a", b"b")  # no "auth" in any case
    redactor = Redactor()
    reads = data.draw(split(wire))
    assert b"".join(redactor.redact(read, in_exchange=False) for read in reads) == wire


@given(st.lists(st.tuples(st.binary(max_size=60), st.booleans()), max_size=8))
@example([(b"\r", True), (b"\x00\n", False)])  # a secret's CR at a read's end, then no LF: no CRLF was sent
def test_any_bytes_keep_their_line_ends(reads: list[tuple[bytes, bool]]) -> None:
    redactor = Redactor()
    shown = b"".join(redactor.redact(data, in_exchange) for data, in_exchange in reads)
    wire = b"".join(data for data, _ in reads)
    assert shown.count(b"\r\n") == wire.count(b"\r\n")
    assert shown.count(b"\n") == wire.count(b"\n")


class LineByLine(Redactor):
    """The same rules with every line through ``_continue``: what the shortcuts of
    ``Redactor.redact`` (runs of lines that cannot be AUTH lines shown in one piece,
    the rest of a secret read marked in one go) must give too."""

    def redact(self, data: bytes, in_exchange: bool) -> bytes:
        if not data:
            return data
        out: list[bytes] = []
        data, hide_all = self._end_split_crlf(data, in_exchange, out)
        *lines, partial = data.split(b"\n")
        for line in lines:
            crlf = line.endswith(b"\r")
            self._continue(line[:-1] if crlf else line, hide_all, out)
            hide_all |= self._end_line(self._head)
            out.append(b"\r\n" if crlf else b"\n")
        if partial:
            self._continue(partial, hide_all, out, partial=True)
        return b"".join(out)


TOKENS = [b"AUTH", b"auth", b"A", b"a", b" ", b"  ", b"\t", b"\x00", b"PLAIN", b"x", b"\r\n", b"\r", b"\n", b"*"]


@settings(max_examples=500)
@given(st.lists(st.tuples(st.lists(st.sampled_from(TOKENS), max_size=12).map(b"".join), st.booleans()), max_size=8))
def test_the_shortcuts_change_nothing(reads: list[tuple[bytes, bool]]) -> None:
    fast, slow = Redactor(), LineByLine()
    for data, in_exchange in reads:
        assert fast.redact(data, in_exchange) == slow.redact(data, in_exchange), reads
