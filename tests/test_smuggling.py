"""SMTP smuggling: the end of data is CRLF "." CRLF and nothing else, through the whole server.

Each variant puts a fake end of data followed by smuggled commands inside a
message, then the real end.  The smuggled MAIL/RCPT/DATA must arrive as
content, never as events; the default policy refuses the message (550 5.6.11)
after the real end only; the ACCEPT policy delivers the content byte-exact.
"""

from __future__ import annotations

import pytest
from helpers import byte_by_byte, check_three_ways, content, drive

from smtpcore import (
    BareNewlinePolicy,
    Data,
    EndOfMessage,
    Mail,
    MessageData,
    MessageRejected,
    Rcpt,
    ServerConfig,
)

SETUP = b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
SMUGGLED = b"MAIL FROM:<admin@victim.example>\r\nRCPT TO:<target@example.com>\r\nDATA\r\nForged\r\n"
# Fake ends of data: each could end a message in some broken implementation.
FAKE_ENDS = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r.\n",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n. \r\n",
    b"\r\n.\r\r\n",
    b"\r\n.\n\r\n",
    b"\r\r\n.\r\n",  # the "\r\n.\r\n" inside IS an end: see test_cr_before_real_end
    b"\n\r\n.\r\n",  # likewise
    b"\r\n..\r\n",
    b"\x00\r\n.\r\n",  # NUL then a real end
]
REAL_ENDS = {b"\r\r\n.\r\n", b"\n\r\n.\r\n", b"\x00\r\n.\r\n"}
BARE = [end for end in FAKE_ENDS if end not in REAL_ENDS]
REJECTED = b"550 5.6.11 Message contains a bare CR or LF; use CRLF line endings\r\n"


def message(fake_end: bytes) -> bytes:
    return b"Subject: test\r\n\r\nbody" + fake_end + SMUGGLED


@pytest.mark.parametrize("fake_end", BARE)
def test_smuggled_commands_are_content(fake_end: bytes) -> None:
    data = SETUP + message(fake_end) + b".\r\nNOOP\r\n"
    events, out = check_three_ways(data)
    # Exactly one MAIL, one RCPT and one DATA: those of the real transaction.
    assert sum(isinstance(e, Mail) for e in events) == 1
    assert sum(isinstance(e, Rcpt) for e in events) == 1
    assert sum(isinstance(e, Data) for e in events) == 1
    # Content is handed out as it comes (the verdict waits for the end): the smuggled text is in it.
    assert b"MAIL FROM:<admin@victim.example>\r\nRCPT TO:<target@example.com>\r\nDATA\r\n" in content(events)
    if b"\r" in fake_end.replace(b"\r\n", b"") or b"\n" in fake_end.replace(b"\r\n", b""):
        # Default policy: refused, once, after the real end.
        assert isinstance(events[-2], MessageRejected)
        assert out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n" + REJECTED + b"250 2.0.0 OK\r\n")
    else:
        # NUL, ". ", ".." variants: no bare newline, accepted as content.
        assert EndOfMessage() in events
        assert out.endswith(b"250 2.0.0 OK: message accepted\r\n250 2.0.0 OK\r\n")


@pytest.mark.parametrize("fake_end", BARE)
def test_accept_policy_delivers_byte_exact(fake_end: bytes) -> None:
    config = ServerConfig(bare_newlines=BareNewlinePolicy.ACCEPT)
    body = message(fake_end)
    events, out = check_three_ways(SETUP + body + b".\r\n", config)
    assert sum(isinstance(e, Mail) for e in events) == 1
    assert EndOfMessage() in events
    # Dot-unstuffing is the only change: a line-start "." goes.
    assert content(events) == body.replace(b"\r\n.", b"\r\n")
    assert out.endswith(b"250 2.0.0 OK: message accepted\r\n")


@pytest.mark.parametrize("real_end", sorted(REAL_ENDS))
def test_cr_before_real_end(real_end: bytes) -> None:
    # "\r\r\n.\r\n" contains a real CRLF.CRLF: the message ends there, and what
    # follows is commands, as RFC 5321 requires; the stray CR still gets it refused.
    data = SETUP + b"body" + real_end + b"NOOP\r\n"
    events, out = check_three_ways(data)
    if b"\x00" in real_end:
        assert EndOfMessage() in events
        assert content(events) == b"body\x00\r\n"
    else:
        assert isinstance(events[-2], MessageRejected)
        assert out.endswith(REJECTED + b"250 2.0.0 OK\r\n")


@pytest.mark.parametrize(
    "body",
    [
        b".\r\n",  # not at a line start: "x.\r\n" is just a line ending in "."
        b"x.\r\nMAIL FROM:<e@v.example>\r\n",
        b"x\r\n .\r\nMAIL FROM:<e@v.example>\r\n",
        b"x\r\n.x\r\nMAIL FROM:<e@v.example>\r\n",
        b"x\r\n\r.\r\nMAIL FROM:<e@v.example>\r\n",
    ],
)
def test_dot_not_at_line_start_is_content(body: bytes) -> None:
    config = ServerConfig(bare_newlines=BareNewlinePolicy.ACCEPT)
    data = SETUP + b"x" + body + b".\r\n"
    events, _ = check_three_ways(data, config)
    assert sum(isinstance(e, Mail) for e in events) == 1
    assert EndOfMessage() in events


def test_first_line_dot_variants() -> None:
    # Right after DATA the DATA command's CRLF counts as the first CRLF.
    events, _ = check_three_ways(SETUP + b".\r\nNOOP\r\n")
    assert content(events) == b""
    assert EndOfMessage() in events
    events, _ = check_three_ways(SETUP + b".\n" + SMUGGLED + b".\r\n")
    assert sum(isinstance(e, Mail) for e in events) == 1
    assert content(events).startswith(b"\nMAIL FROM:<admin")
    events, _ = check_three_ways(SETUP + b"..\r\n.\r\n")
    assert content(events) == b".\r\n"


def test_smuggling_with_every_two_way_split() -> None:
    data = SETUP + message(b"\n.\n") + b".\r\nQUIT\r\n"
    _, expected = drive(data)
    for cut in range(1, len(data)):
        events, out = drive([data[:cut], data[cut:]])
        assert out == expected
        assert sum(isinstance(e, Mail) for e in events) == 1


def test_lf_only_client_never_ends_the_message() -> None:
    # A client that only sends LF never gets its message ended: there is no CRLF.CRLF.
    events, out = drive(byte_by_byte(SETUP + b"hello\n.\nQUIT\n"))
    assert not any(isinstance(e, (EndOfMessage, MessageRejected)) for e in events)
    assert out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    assert isinstance(events[-1], MessageData)


def test_commands_may_end_in_a_lone_lf_but_content_still_ends_only_at_crlf_dot_crlf() -> None:
    """LF-only clients are answered (as by Postfix, aiosmtpd, go-smtp), and their LF "." LF is still content."""
    stream = (
        b"EHLO c\nMAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\nDATA\n"
        b"Subject: x\n\nbody\n.\n" + SMUGGLED + b"\r\n.\r\nQUIT\n"
    )
    events, out = check_three_ways(stream)
    assert [type(e) for e in events].count(Mail) == 1
    assert content(events) == b"Subject: x\n\nbody\n.\n" + SMUGGLED + b"\r\n"
    assert out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n"
                        b"550 5.6.11 Message contains a bare CR or LF; use CRLF line endings\r\n"
                        b"221 2.0.0 Bye\r\n")  # fmt: skip
