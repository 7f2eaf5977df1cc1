"""Edges no test held until mutation testing changed them unnoticed (2026-12-07).

Each test pins one behaviour a mutant of the core changed while every other test
passed: a reply code the client must not take, a boundary of a limit, a control
character that must not pass.  They are grouped here by module rather than
spread through the larger suites, so that what they guard stays visible.
"""

from __future__ import annotations

from typing import Any

import pytest
from client_helpers import ready, reply

from smtpcore import (
    NEED_DATA,
    PAUSED,
    Bdat,
    ClientConfig,
    ClientConnection,
    Data,
    EndOfMessage,
    LocalProtocolError,
    Mail,
    MessageData,
    Rcpt,
    RcptParams,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    StartTls,
    TlsHandshake,
)
from smtpcore._address import AddressError, check_address_literal, parse_path
from smtpcore._params import ParamError, parse_params
from smtpcore._receivebuffer import OVERLONG, ReceiveBuffer
from smtpcore._replyreader import ReplyReader

# --- client: replies the machine must not take -------------------------------------------------------


def _in_transaction() -> ClientConnection:
    conn = ready()
    conn.send(Mail("a@example.com"))
    conn.send(Rcpt("b@example.com"))
    reply(conn, b"250 ok\r\n")
    reply(conn, b"250 ok\r\n")
    return conn


def test_only_220_to_starttls_starts_tls() -> None:
    # RFC 3207 §4: 220, or a refusal.  A 250 is neither: no handshake follows it.
    conn = ready()
    conn.send(StartTls())
    conn.receive_data(b"250 not really\r\n")
    assert conn.next_event() == Reply(250, "not really")
    assert conn.next_event() in (NEED_DATA, PAUSED)
    assert not isinstance(conn.next_event(), TlsHandshake)


def test_an_unsolicited_reply_other_than_421_is_a_protocol_error() -> None:
    # Only a whole 421 may come with nothing outstanding (an idle timeout, RFC 5321 §3.8).
    conn = ready()
    conn.receive_data(b"450 unsolicited\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_content_goes_only_after_354_not_after_another_3xx() -> None:
    # A "350" to DATA is no go-ahead: content sent now would be read as commands.
    conn = _in_transaction()
    conn.send(Data())
    conn.receive_data(b"350 go on\r\n")
    assert conn.next_event() == Reply(350, "go on")
    with pytest.raises(LocalProtocolError, match="only sent after DATA got 354"):
        conn.send(MessageData(b"RSET\r\n"))


@pytest.mark.parametrize("reply", [b"221 bye", b"354 go", b"334 x", b"350 what"])
@pytest.mark.parametrize("end", ["DATA", "BDAT"])
def test_no_221_or_3xx_ends_a_message(end: str, reply: bytes) -> None:
    conn = _in_transaction()
    if end == "BDAT":
        conn.send(Bdat(3, last=True))
        conn.send(MessageData(b"x\r\n"))
    else:
        conn.send(Data())
        conn.receive_data(b"354 go\r\n")
        conn.next_event()
        conn.send(MessageData(b"x\r\n"))
        conn.send(EndOfMessage())
    conn.receive_data(reply + b"\r\n")
    with pytest.raises(RemoteProtocolError, match="no reply to the end of a message"):
        conn.next_event()


# --- the reply reader ----------------------------------------------------------------------------


def _read(raw: bytes) -> Reply:
    buffer = ReceiveBuffer()
    buffer.feed(raw)
    reader = ReplyReader(ClientConfig())
    reader.enhanced_status_codes = True
    reply = reader.next_reply(buffer)
    assert isinstance(reply, Reply)
    return reply


@pytest.mark.parametrize("raw", [b"150 x\r\n", b"150-a\r\n150 b\r\n", b"050 x\r\n", b"650 x\r\n"])
def test_a_reply_code_must_begin_with_2_to_5(raw: bytes) -> None:
    # RFC 5321 §4.2: 1yz replies are not used in SMTP; the first digit is 2, 3, 4 or 5.
    with pytest.raises(RemoteProtocolError, match="malformed reply line"):
        _read(raw)


def test_a_malformed_reply_line_is_shown_in_part() -> None:
    # The error repeats what the server sent, for the log: its first 60 octets, not a
    # 512-octet line (nor, from a hostile server, whatever it packed into one).
    with pytest.raises(RemoteProtocolError) as caught:
        _read(b"XYZ " + b"q" * 500 + b"\r\n")
    assert str(caught.value) == f"malformed reply line {(b'XYZ ' + b'q' * 56)!r}..."


def test_an_enhanced_code_has_at_most_three_digits_a_part() -> None:
    # RFC 3463 §2: class.subject.detail, subject and detail 1 to 3 digits; "2.1.1234" is text.
    assert _read(b"250 2.1.123 x\r\n").enhanced == "2.1.123"
    reply = _read(b"250 2.1.1234 x\r\n")
    assert reply.enhanced is None and reply.text == ("2.1.1234 x",)


# --- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "word",
    [
        "ORCPT=utf-8;a\\x{85}b@example.com",  # a C1 control (NEL, a line break to splitlines)
        "ORCPT=utf-8;a\\x{9B}31mb@example.com",  # a terminal escape
        "ORCPT=utf-8;a\\x{202E}moc.elgoog@example.com",  # a bidi override
        "ORCPT=utf-8;a\\x{2028}b@example.com",
        "ORCPT=utf-8;a\\x{7F}b@example.com",
        "ORCPT=rfc822;a+C2+85b@example.com",  # the same, as xtext
        "ORCPT=rfc822;a+E2+80+AEb@example.com",
    ],
)
def test_an_orcpt_address_refuses_every_control_a_name_refuses(word: str) -> None:
    # It travels on into DSNs and logs, as every other address does.
    with pytest.raises(ParamError) as info:
        parse_params("RCPT", [word], frozenset({"DSN", "SMTPUTF8"}), utf8=True)
    assert info.value.reply.code == 501
    with pytest.raises(ValueError, match=r"RcptParams\.orcpt"):
        RcptParams(orcpt=("utf-8", "a\u202eb@example.com"))


def test_rcpt_lines_take_the_dsn_allowance() -> None:
    # RFC 3461 §4: a server offering DSN takes RCPT lines 500 octets longer, for ORCPT.
    from helpers import drive

    # An original address of 254 octets, much of it as xtext's "+XX": the longest ORCPT lines.
    encoded = "".join(f"+{ord(char):02X}" for char in "o" * 64 + "@" + "d" * 60 + "." + "d" * 30)
    original = encoded + "." + ".".join(["d" * 60] * 2) + "." + "d" * 36
    recipient = "b" * 64 + "@" + "e" * 60 + ".example"
    line = f"RCPT TO:<{recipient}> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;{original}".encode()
    # Over what MAIL's own allowances (SIZE, SMTPUTF8, DSN's 100) would take, within RCPT's.
    assert 512 + 26 + 10 + 100 < len(line) + 2 <= 512 + 500
    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\n" + line + b"\r\n", ServerConfig(dsn=True))
    assert out.endswith(b"250 2.1.5 Recipient OK\r\n"), out[-60:]


# --- addresses -----------------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["[ipv6:not-an-address]", "[IpV6:1:2:3:4:5:6:7:8:9]", "[ipv6:zz]"])
def test_the_ipv6_tag_is_case_insensitive_so_its_address_is_checked(literal: str) -> None:
    # RFC 5234 §2.3: "IPv6:" matches in any case; read as a general literal, anything passed.
    with pytest.raises(AddressError, match="not a valid IPv6 address literal"):
        check_address_literal(literal)
    with pytest.raises(AddressError):
        parse_path(f"<user@{literal}>", utf8=False, null_allowed=False, postmaster_allowed=False)


@pytest.mark.parametrize(
    ("domain", "why"),
    [("d" * 64 + ".example", "label longer than 63"), (".".join(["d" * 63] * 4) + ".example", "longer than 255")],
)
def test_a_path_with_dots_out_of_place_keeps_the_length_limits(domain: str, why: str) -> None:
    # <a..b@...> is read as "a..b"@...; its domain must still fit RFC 5321 §4.5.3.1.
    with pytest.raises(AddressError, match=why):
        parse_path(f"<a..b@{domain}>", utf8=False, null_allowed=False, postmaster_allowed=False)


# --- the receive buffer --------------------------------------------------------------------------


def _line(data: bytes, limit: int = 512, auth_limit: int = 2048) -> Any:
    buffer = ReceiveBuffer()
    buffer.feed(data)
    return buffer.next_line(limit, auth_limit)


def test_an_auth_line_of_exactly_the_auth_limit_is_taken() -> None:
    # The limits count the CRLF, as RFC 5321 §4.5.3.1.4 does; one more octet is over.
    exact = b"AUTH PLAIN " + b"A" * (2048 - 13) + b"\r\n"
    assert _line(exact) == exact[:-2]
    assert _line(exact[:-2] + b"A\r\n") is OVERLONG


def test_only_an_auth_command_gets_the_auth_limit() -> None:
    assert _line(b"AUTHX" + b"A" * 593 + b"\r\n") is OVERLONG
    assert _line(b"AUTH " + b"A" * 593 + b"\r\n") == b"AUTH " + b"A" * 593
