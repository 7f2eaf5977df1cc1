"""C:/S: transcripts of whole server sessions, one per feature of the server role.

``run_transcript`` sends the ``C:`` lines (line by line, in one pipelined
burst, and byte by byte) and checks that the server wrote exactly the ``S:``
lines.  Policies decide what the application answers; by default it accepts.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import re
from typing import Any

import pytest
from helpers import Driver, check_three_ways, content, drive, make_server, run_transcript

from smtpcore import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    AuthPolicy,
    BareNewlinePolicy,
    Bdat,
    CommandRejected,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Expn,
    Hello,
    LocalProtocolError,
    LongLinePolicy,
    Mail,
    MessageData,
    MessageRejected,
    Noop,
    Quit,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Rset,
    SaslFailure,
    ServerConfig,
    ServerConnection,
    StartTls,
    State,
    TlsHandshake,
    TlsPolicy,
    Vrfy,
)

GREETING = "S: 220 localhost ESMTP smtpcore"
# The EHLO reply of the default configuration.
EHLO_DEFAULT = """
S: 250-localhost
S: 250-PIPELINING
S: 250-SIZE 10485760
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250-SMTPUTF8
S: 250-CHUNKING
S: 250 BINARYMIME
"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


B64_0 = b64(b"\0alice\0s3cret")
B64_1 = b64(b"admin\0alice\0nope")
B64_2 = b64(b"alice")
B64_3 = b64(b"s3cret")
B64_4 = b64(b"user=alice\x01auth=Bearer tok123\x01\x01")
B64_5 = b64(b"user=alice\x01\x01")
B64_6 = b64(b"\0alice\0wrong")
B64_7 = b64(b"\0alice\0s3cret")
B64_8 = b64(b"\0alice\0x")
B64_9 = b64(b"bob")
B64_10 = b64(b"who are you at localhost?")


# --- plain sessions ---------------------------------------------------------------------------------


def test_plain_smtp_session() -> None:
    events = run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        {EHLO_DEFAULT}
        C: MAIL FROM:<alice@example.com>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<bob@example.org>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: hi
        C:
        C: ..leading dot
        C: .
        S: 250 2.0.0 OK: message accepted
        C: QUIT
        S: 221 2.0.0 Bye
        """
    )
    assert [type(e) for e in events if not isinstance(e, MessageData)] == [
        Hello,
        Mail,
        Rcpt,
        Data,
        EndOfMessage,
        Quit,
        ConnectionClosed,
    ]
    assert content(events) == b"Subject: hi\r\n\r\n.leading dot\r\n"
    assert events[-1] == ConnectionClosed(by_peer=False)


def test_empty_message() -> None:
    events = run_transcript(
        f"""
        {GREETING}
        C: HELO client.example
        S: 250 localhost
        C: MAIL FROM:<>
        S: 250 Sender OK
        C: RCPT TO:<Postmaster>
        S: 250 Recipient OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 250 OK: message accepted
        """
    )
    assert content(events) == b""
    assert EndOfMessage() in events


def test_verp_and_srs_return_paths_past_64_octets_are_taken() -> None:
    """RFC 5321 §4.5.3.1's local-part size is a floor to accept, not a cap (Postfix takes these too)."""
    srs = "SRS0=HHH=TT=orig-domain.example=a-rather-long-user-name.with.parts@forwarder.example"
    verp = "bounces+1234567-abcd-" + "x" * 60 + "=example.org@em.example.net"
    events = run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        {EHLO_DEFAULT}
        C: MAIL FROM:<{srs}>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<{verp}>
        S: 250 2.1.5 Recipient OK
        """
    )
    assert Mail(srs) in events
    assert Rcpt(verp) in events


def test_local_parts_with_dots_out_of_place_are_taken_and_handed_on_quoted() -> None:
    events, out = check_three_ways(b"EHLO c\r\nMAIL FROM:<docomo.@b.example>\r\nRCPT TO:<a..b@example.com>\r\n")
    assert Mail('"docomo."@b.example') in events and Rcpt('"a..b"@example.com') in events
    assert out.endswith(b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n")


def test_trailing_blanks_and_extra_spaces_after_the_verb_are_tolerated() -> None:
    """RFC 5321 §4.1.1: receivers SHOULD tolerate trailing white space.  Refused, "BDAT 5 LAST "
    left its chunk to be read as commands; Postfix takes all of these."""
    stream = (
        b"EHLO  client.example \r\nMAIL FROM:<a@b.example> \r\nRCPT TO:<c@d.example>\t\r\n"
        b"BDAT 5 LAST \r\nhelloRSET \r\nNOOP\t\r\nQUIT \r\n"
    )
    events, out = check_three_ways(stream)
    assert [type(e) for e in events if not isinstance(e, MessageData)] == [
        Hello, Mail, Rcpt, Bdat, EndOfMessage, Rset, Noop, Quit, ConnectionClosed,
    ]  # fmt: skip
    assert Hello("client.example") in events
    assert content(events) == b"hello"
    assert b" 5.5." not in out  # no syntax error anywhere


def test_helo_has_no_extensions_and_refuses_parameters() -> None:
    run_transcript(
        f"""
        {GREETING}
        C: HELO client.example
        S: 250 localhost
        C: MAIL FROM:<a@example.com> BODY=8BITMIME
        S: 555 Parameter BODY not recognized or not implemented
        C: MAIL FROM:<a@example.com> SIZE=100
        S: 555 Parameter SIZE not recognized or not implemented
        C: MAIL FROM:<a@example.com>
        S: 250 Sender OK
        C: RCPT TO:<b@example.com> NOTIFY=NEVER
        S: 555 Parameter NOTIFY not recognized or not implemented
        """
    )


def test_helo_after_ehlo_turns_extensions_off() -> None:
    conn = make_server()
    drive(b"EHLO a.example\r\n", conn=conn)
    assert "PIPELINING" in conn.extensions
    _, out = drive(b"HELO a.example\r\nNOOP\r\n", conn=conn)
    assert conn.extensions == frozenset()
    assert out == b"250 localhost\r\n250 OK\r\n"


# --- EHLO extension list per configuration ----------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "lines"),
    [
        ({}, ["PIPELINING", "SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "BINARYMIME"]),
        (
            {
                "pipelining": False,
                "eight_bit_mime": False,
                "enhanced_status_codes": False,
                "smtputf8": False,
                "chunking": False,
                "max_message_size": 0,
            },
            ["SIZE 0"],
        ),
        (
            {"binarymime": False},
            ["PIPELINING", "SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"],
        ),
        (
            {
                "dsn": True,
                "tls": TlsPolicy.OPTIONAL,
                "requiretls": True,
                "advertise_limits": True,
                "max_recipients": 200,
                "extra_extensions": ("MT-PRIORITY", "XCLIENT NAME ADDR"),
                "chunking": False,
                "max_message_size": 65536,
            },
            [
                "PIPELINING",
                "SIZE 65536",
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
                "SMTPUTF8",
                "DSN",
                "STARTTLS",
                "LIMITS RCPTMAX=200",
                "MT-PRIORITY",
                "XCLIENT NAME ADDR",
            ],
        ),
        (
            {"auth": AuthPolicy.OPTIONAL, "allow_insecure_auth": True, "auth_mechanisms": ("PLAIN", "CRAM-MD5")},
            [
                "PIPELINING",
                "SIZE 10485760",
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
                "SMTPUTF8",
                "CHUNKING",
                "BINARYMIME",
                "AUTH PLAIN CRAM-MD5",
            ],
        ),
        # Neither AUTH (no TLS) nor REQUIRETLS (no TLS) before TLS.
        (
            {"auth": AuthPolicy.OPTIONAL, "requiretls": True, "chunking": False},
            ["PIPELINING", "SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"],
        ),
        # Implicit TLS: AUTH and REQUIRETLS, no STARTTLS.
        (
            {
                "implicit_tls": True,
                "tls": TlsPolicy.OPTIONAL,
                "auth": AuthPolicy.OPTIONAL,
                "requiretls": True,
                "chunking": False,
            },
            [
                "PIPELINING",
                "SIZE 10485760",
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
                "SMTPUTF8",
                "AUTH PLAIN LOGIN",
                "REQUIRETLS",
            ],
        ),
    ],
)
def test_ehlo_extensions(options: dict[str, Any], lines: list[str]) -> None:
    config = ServerConfig(**options)
    reply = "\n".join(f"S: 250{'-' if i < len(lines) else ' '}{line}" for i, line in enumerate(["localhost", *lines]))
    run_transcript(f"{GREETING}\nC: EHLO client.example\n{reply}", config)
    conn = make_server(config)
    drive(b"EHLO client.example\r\n", conn=conn)
    assert conn.extensions == frozenset(line.split()[0] for line in lines)


def test_ehlo_refused_by_application() -> None:
    def policy(conn: ServerConnection, event: Event) -> None:
        conn.send(Reply(550, "Go away", "5.7.1"))

    run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        S: 550 Go away
        C: MAIL FROM:<a@example.com>
        S: 503 Send EHLO first
        """,
        policy=policy,
    )


# --- PIPELINING -------------------------------------------------------------------------------------


def test_pipelined_burst_keeps_order_and_one_outstanding_command() -> None:
    conn = make_server()
    conn.receive_data(
        b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
        b"RCPT TO:<c@example.com>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n"
    )
    seen: list[Any] = []
    while True:
        event = conn.next_event()
        if isinstance(event, ConnectionClosed):
            break
        assert event is not NEED_DATA
        if event is PAUSED:
            continue
        seen.append(event)
        if conn.reply_due:
            # While a reply is due nothing more is parsed, however often we ask.
            assert conn.next_event() is PAUSED
            assert conn.next_event() is PAUSED
            if isinstance(event, Rcpt) and event.recipient.startswith("b"):
                conn.send(Reply(550, "No such user", "5.1.1"))
            else:
                conn.accept()
    out = conn.data_to_send()
    assert [type(e).__name__ for e in seen] == [
        "Hello",
        "Mail",
        "Rcpt",
        "Rcpt",
        "Data",
        "MessageData",
        "EndOfMessage",
        "Quit",
    ]
    assert out.split(b"\r\n")[9:] == [
        b"250 2.1.0 Sender OK",
        b"550 5.1.1 No such user",
        b"250 2.1.5 Recipient OK",
        b"354 End data with <CR><LF>.<CR><LF>",
        b"250 2.0.0 OK: message accepted",
        b"221 2.0.0 Bye",
        b"",
    ]
    assert conn.recipients == ()


def test_input_after_quit_is_not_acted_on() -> None:
    events, out = drive(b"EHLO c.example\r\nQUIT\r\nMAIL FROM:<a@example.com>\r\n")
    assert events[-2:] == [Quit(), ConnectionClosed()]
    assert out.endswith(b"221 2.0.0 Bye\r\n")
    assert b"Sender" not in out


def test_reply_due_before_data_refused_keeps_pipelined_content_as_commands() -> None:
    # DATA refused by the application: what follows are commands again (RFC 2920 §3.1).
    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, Data):
            conn.send(Reply(554, "No valid recipients", "5.5.1"))
        else:
            conn.accept()

    _events, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nNOOP\r\n", policy=policy)
    assert out.endswith(b"554 5.5.1 No valid recipients\r\n250 2.0.0 OK\r\n")


# --- SIZE -------------------------------------------------------------------------------------------

SMALL = ServerConfig(max_message_size=65536)
SETUP = """
C: EHLO client.example
S: 250-localhost
S: 250-PIPELINING
S: 250-SIZE 65536
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250-SMTPUTF8
S: 250-CHUNKING
S: 250 BINARYMIME
"""


def test_size_parameter_over_limit() -> None:
    run_transcript(
        f"""
        {GREETING}
        {SETUP}
        C: MAIL FROM:<a@example.com> SIZE=65537
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: MAIL FROM:<a@example.com> SIZE=65536
        S: 250 2.1.0 Sender OK
        """,
        SMALL,
    )


def test_content_over_limit_is_refused_after_end_of_data_only() -> None:
    body = "\n".join(f"C: {'x' * 998}" for _ in range(70))
    events = run_transcript(
        f"""
        {GREETING}
        {SETUP}
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<b@example.com>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        {body}
        C: .
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: NOOP
        S: 250 2.0.0 OK
        """,
        SMALL,
    )
    assert isinstance(events[-2], MessageRejected)
    assert len(content(events)) <= 65536
    assert EndOfMessage() not in events


def test_content_over_limit_says_nothing_mid_stream() -> None:
    conn = make_server(SMALL)
    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n", conn=conn)
    for _ in range(200):
        events, out = drive(b"y" * 998 + b"\r\n", conn=conn)
        assert out == b""
        assert not any(isinstance(e, MessageRejected) for e in events)
    _, out = drive(b".\r\n", conn=conn)
    assert out == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"


def test_a_refused_message_ends_its_transaction() -> None:
    # The refusal at the end of data ends the transaction as an accepted message
    # does: the next one starts with nothing of it (its size error included).
    conn = make_server(SMALL)
    drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n" + b"y" * 70000 + b"\r\n.\r\n", conn=conn)
    assert (conn.state, conn.mail, conn.recipients) == (State.READY, None, ())
    events, out = drive(b"MAIL FROM:<g@h.i>\r\nRCPT TO:<j@k.l>\r\nDATA\r\nsmall\r\n.\r\n", conn=conn)
    assert EndOfMessage() in events
    assert out.endswith(b"250 2.0.0 OK: message accepted\r\n")
    assert conn.recipients == ()


# --- 8BITMIME / BINARYMIME / CHUNKING ---------------------------------------------------------------


def test_8bit_content_passes_byte_exact() -> None:
    body = "C: caf\u00e9 \u2603"
    events = run_transcript(
        f"""
        {GREETING}
        {EHLO_DEFAULT.replace("C: ", "")}
        C: MAIL FROM:<a@example.com> BODY=8BITMIME
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<b@example.com>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        {body}
        C: .
        S: 250 2.0.0 OK: message accepted
        """.replace(GREETING, GREETING + "\nC: EHLO client.example", 1)
    )
    assert content(events) == "caf\u00e9 \u2603\r\n".encode()
    assert events[1].params.body == "8BITMIME"


def test_binarymime_requires_bdat() -> None:
    events = run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        {EHLO_DEFAULT}
        C: MAIL FROM:<a@example.com> BODY=BINARYMIME
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<b@example.com>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 503 5.5.1 BODY=BINARYMIME requires BDAT, not DATA
        C: BDAT 4 LAST
        C: ab
        S: 250 2.0.0 OK: message accepted
        """
    )
    assert content(events) == b"ab\r\n"


def test_bdat_chunks() -> None:
    data = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 5\r\n\r\n.\r\nBDAT 3\r\nQUIBDAT 0 LAST\r\nNOOP\r\n"
    events, out = drive(data)
    assert [type(e).__name__ for e in events[3:]] == [
        "Bdat",
        "MessageData",
        "Bdat",
        "MessageData",
        "Bdat",
        "EndOfMessage",
        "Noop",
    ]
    # Opaque octets: no dot logic, no end-of-data search; "QUIT" is content.
    assert content(events) == b"\r\n.\r\nQUI"
    assert out.split(b"\r\n")[-5:] == [
        b"250 2.0.0 5 octets received",
        b"250 2.0.0 8 octets received",
        b"250 2.0.0 OK: message accepted",
        b"250 2.0.0 OK",
        b"",
    ]
    for cut in range(1, len(data)):
        assert drive([data[:cut], data[cut:]])[1] == out


def test_bdat_cumulative_size() -> None:
    conn = make_server(SMALL)
    events, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 40000\r\n" + b"a" * 40000, conn=conn)
    assert out.endswith(b"250 2.0.0 40000 octets received\r\n")
    events, out = drive(b"BDAT 30000 LAST\r\n" + b"b" * 30000, conn=conn)
    # The chunk that crosses the limit is read but not handed out.
    assert Bdat(30000, True) in events
    assert not any(isinstance(e, MessageData) for e in events)
    assert isinstance(events[-1], MessageRejected)
    assert out == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    assert conn.state is State.READY


def test_bdat_over_limit_in_a_middle_chunk() -> None:
    conn = make_server(SMALL)
    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 70000\r\n" + b"a" * 70000, conn=conn)
    assert out.endswith(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")
    events, out = drive(b"BDAT 1 LAST\r\nx", conn=conn)
    assert isinstance(events[-1], MessageRejected)
    assert out == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"


def test_refused_bdat_still_consumes_its_octets() -> None:
    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, Rcpt):
            conn.send(Reply(550, "No such user", "5.1.1"))
        else:
            conn.accept()

    run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        {EHLO_DEFAULT}
        C: BDAT 12
        C: MAIL FROM:
        S: 503 5.5.1 Send MAIL first
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Sender OK
        C: BDAT 6 LAST
        C: QUIT
        S: 503 5.5.1 Send RCPT first
        C: RCPT TO:<nobody@example.com>
        S: 550 5.1.1 No such user
        C: BDAT 7 LAST
        C: RSET!
        S: 554 5.5.1 No valid recipients
        C: NOOP
        S: 250 2.0.0 OK
        """,
        policy=policy,
    )


def test_bdat_before_ehlo_and_in_refused_session_consumes_octets() -> None:
    run_transcript(
        f"""
        {GREETING}
        C: BDAT 6
        C: QUIT
        S: 503 Send EHLO first
        """
    )
    run_transcript(
        """
        S: 554 No service
        C: BDAT 6
        C: QUIT
        S: 503 Connection refused; only QUIT is accepted
        C: QUIT
        S: 221 Bye
        """,
        greeting=Reply(554, "No service"),
    )


def test_bdat_not_offered() -> None:
    run_transcript(
        f"""
        {GREETING}
        C: HELO client.example
        S: 250 localhost
        C: BDAT 6 LAST
        C: QUIT
        S: 502 Command not implemented
        """,
        ServerConfig(chunking=False),
    )


def test_data_after_bdat_and_bdat_refusal_states() -> None:
    run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        {EHLO_DEFAULT}
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<b@example.com>
        S: 250 2.1.5 Recipient OK
        C: BDAT 2
        C:
        S: 250 2.0.0 2 octets received
        C: DATA
        S: 503 5.5.1 DATA is not allowed after BDAT in the same transaction
        C: MAIL FROM:<a@example.com>
        S: 503 5.5.1 Sender already given; send RSET to start over
        C: RCPT TO:<c@example.com>
        S: 503 5.5.1 Bad sequence of commands
        C: RSET
        S: 250 2.0.0 Reset OK
        C: BDAT 1 LAST
        C: x
        S: 503 5.5.1 Send MAIL first
        S: 500 5.5.1 Command unrecognized
        """
    )


def test_bdat_with_lmtp_and_reject_message_in_chunking() -> None:
    conn = make_server()
    drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 2\r\nab", conn=conn)
    assert conn.state is State.CHUNKING
    conn.reject_message(Reply(554, "Spam", "5.7.1"))
    events, out = drive(b"BDAT 2\r\ncdBDAT 1 LAST\r\ne", conn=conn)
    assert out == b"554 5.7.1 Spam\r\n554 5.7.1 Spam\r\n"
    assert not any(isinstance(e, MessageData) for e in events)
    assert events[-1] == MessageRejected(Reply(554, "Spam", "5.7.1"))


# --- ENHANCEDSTATUSCODES ----------------------------------------------------------------------------

ESC_SESSION = """
C: EHLO c.example
C: FOO
C: MAIL FROM:<a@b.c> NOPE=1
C: RCPT TO:<d@e.f>
C: MAIL FROM:<a@b.c>
C: DATA
C: RCPT TO:<d@e.f>
C: VRFY x
C: EXPN x
C: HELP
C: NOOP
C: DATA
C: a
C: .
C: RSET
C: QUIT
"""


def test_enhanced_status_codes_on_every_core_reply() -> None:
    _events, out = drive(ESC_SESSION.replace("C: ", "").strip().replace("\n", "\r\n").encode() + b"\r\n")
    lines = out.decode().split("\r\n")[:-1]
    replies = [line for line in lines if line[3] == " " and not line.startswith(("220", "250 BINARYMIME"))]
    assert replies == [
        "500 5.5.1 Command unrecognized",
        "555 5.5.4 Parameter NOPE not recognized or not implemented",
        "503 5.5.1 Send MAIL first",
        "250 2.1.0 Sender OK",
        "554 5.5.1 No valid recipients" if False else "503 5.5.1 Send RCPT first",
        "250 2.1.5 Recipient OK",
        "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery",
        "502 5.5.1 EXPN not available",
        "214 2.0.0 See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)",
        "250 2.0.0 OK",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 OK: message accepted",
        "250 2.0.0 Reset OK",
        "221 2.0.0 Bye",
    ]
    for line in replies:
        code, rest = line[:3], line[4:]
        if code[0] in "245":
            assert rest.split(" ")[0].split(".")[0] == code[0]


def test_enhanced_status_codes_off() -> None:
    config = ServerConfig(enhanced_status_codes=False)
    _, out = drive(ESC_SESSION.replace("C: ", "").strip().replace("\n", "\r\n").encode() + b"\r\n", config)
    import re

    assert not re.search(rb"^[245][0-9][0-9][ -][245]\.[0-9]", out, re.MULTILINE)
    assert b"ENHANCEDSTATUSCODES" not in out
    assert b"221 Bye\r\n" in out


def test_application_reply_gets_a_generic_enhanced_code() -> None:
    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, Rcpt):
            conn.send(Reply(550, "Nope"))
        elif isinstance(event, Mail):
            conn.send(Reply(250, "Fine", "2.1.0"))
        else:
            conn.accept()

    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n", policy=policy)
    assert out.endswith(b"250 2.1.0 Fine\r\n550 5.0.0 Nope\r\n")
    _, out = drive(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n", policy=policy)
    assert out.endswith(b"250 Fine\r\n550 Nope\r\n")


def test_the_generic_enhanced_code_is_of_the_reply_class() -> None:
    # RFC 2034 §3: once advertised, a 2xx and a 4xx need a code too: X.0.0 of their class.
    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, Mail):
            conn.send(Reply(250, "Fine"))
        elif isinstance(event, Rcpt):
            conn.send(Reply(450, "Try later"))
        else:
            conn.accept()

    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n", policy=policy)
    assert out.endswith(b"250 2.0.0 Fine\r\n450 4.0.0 Try later\r\n")


@pytest.mark.parametrize("verb", ["EHLO", "HELO"])
def test_a_hello_reply_never_carries_an_enhanced_code(verb: str) -> None:
    # RFC 2034 gives the EHLO reply none, and after HELO nothing was advertised:
    # an enhanced code the application put in its 250 is left out.
    def policy(conn: ServerConnection, event: Event) -> None:
        conn.send(Reply(250, "mx.example greets you", "2.0.0")) if isinstance(event, Hello) else conn.accept()

    _, out = drive(f"{verb} c\r\n".encode(), policy=policy)
    assert out.split(b"\r\n")[1] in (b"250 mx.example greets you", b"250-mx.example greets you")


# --- SMTPUTF8, DSN, REQUIRETLS ----------------------------------------------------------------------


def test_smtputf8_session() -> None:
    events = run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        {EHLO_DEFAULT}
        C: MAIL FROM:<j\u00f6rg@b\u00fccher.example>
        S: 553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter
        C: MAIL FROM:<j\u00f6rg@b\u00fccher.example> SMTPUTF8
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<\u00e9l\u00e8ve@\u00e9cole.example>
        S: 250 2.1.5 Recipient OK
        """
    )
    assert events[-1] == Rcpt("\u00e9l\u00e8ve@\u00e9cole.example")


def test_dsn_parameters_per_recipient() -> None:
    config = ServerConfig(dsn=True)
    conn = make_server(config)
    drive(
        b"EHLO c\r\nMAIL FROM:<a@b.c> RET=FULL ENVID=abc+2Bdef\r\n"
        b"RCPT TO:<d@e.f> NOTIFY=DELAY ORCPT=rfc822;d@e.f\r\nRCPT TO:<g@e.f> NOTIFY=NEVER\r\nRCPT TO:<h@e.f>\r\n",
        conn=conn,
    )
    assert conn.mail is not None
    assert conn.mail.params.ret == "FULL"
    assert conn.mail.params.envid == "abc+def"
    assert [r.params.notify for r in conn.recipients] == [("DELAY",), ("NEVER",), None]
    assert conn.recipients[0].params.orcpt == ("rfc822", "d@e.f")
    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c> RET=FULL\r\n")
    assert out.endswith(b"555 5.5.4 Parameter RET not recognized or not implemented\r\n")


def test_requiretls_only_over_tls() -> None:
    config = ServerConfig(requiretls=True, tls=TlsPolicy.OPTIONAL)
    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c> REQUIRETLS\r\n", config)
    assert b"REQUIRETLS" not in out.split(b"555")[0]
    assert out.endswith(b"555 5.5.4 Parameter REQUIRETLS not recognized or not implemented\r\n")
    events, out = drive(b"EHLO c\r\nSTARTTLS\r\n", config)
    assert isinstance(events[-1], TlsHandshake)
    conn = make_server(config)
    drive([b"EHLO c\r\nSTARTTLS\r\n", b"EHLO c\r\nMAIL FROM:<a@b.c> REQUIRETLS\r\n"], conn=conn)
    assert conn.tls_active
    assert "REQUIRETLS" in conn.extensions
    assert conn.mail is not None
    assert conn.mail.params.requiretls


# --- STARTTLS ---------------------------------------------------------------------------------------

TLS = ServerConfig(tls=TlsPolicy.OPTIONAL, auth=AuthPolicy.OPTIONAL)
TLS_EHLO = """
S: 250-localhost
S: 250-PIPELINING
S: 250-SIZE 10485760
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250-SMTPUTF8
S: 250-CHUNKING
S: 250-BINARYMIME
S: 250 STARTTLS
"""
TLS_EHLO_AFTER = """
S: 250-localhost
S: 250-PIPELINING
S: 250-SIZE 10485760
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250-SMTPUTF8
S: 250-CHUNKING
S: 250-BINARYMIME
S: 250 AUTH PLAIN LOGIN
"""


def test_starttls_session() -> None:
    events = run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        {TLS_EHLO}
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Sender OK
        C: STARTTLS
        S: 503 5.5.1 Bad sequence of commands
        C: RSET
        S: 250 2.0.0 Reset OK
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        C: MAIL FROM:<a@example.com>
        S: 503 Send EHLO first
        C: EHLO client.example
        {TLS_EHLO_AFTER}
        C: STARTTLS
        S: 503 5.5.1 TLS already active
        """,
        TLS,
        modes=("lines",),
    )
    assert TlsHandshake() in events


def test_starttls_discards_pipelined_plaintext() -> None:
    # CVE-2011-0411 / aiosmtpd CVE-2024-34083: commands sent with STARTTLS in the
    # same packet must never be executed after the handshake.
    conn = make_server(TLS)
    driver = Driver(conn, tls=False)
    driver.feed(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@x.y>\r\n")
    assert isinstance(driver.events[-1], TlsHandshake)
    assert conn.state is State.TLS
    assert conn.timeout.name == "tls_handshake"
    # Bytes arriving before the handshake is reported done are dropped too.
    driver.feed(b"DATA\r\n")
    assert len(conn._buffer) == 0
    assert conn.next_event() is PAUSED
    conn.tls_established()
    assert conn.hello is None
    assert conn.mail is None
    assert conn.state is State.CONNECTED  # type: ignore[comparison-overlap]  # mypy keeps the TLS narrowing across the call
    driver.feed(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n")
    assert not any(isinstance(e, Mail) and e.sender == "evil@x.y" for e in driver.events)
    assert driver.events[-1] == Mail("a@b.c")
    assert b"evil" not in bytes(driver.output)
    assert bytes(driver.output).endswith(b"250-BINARYMIME\r\n250 AUTH PLAIN LOGIN\r\n250 2.1.0 Sender OK\r\n")


def test_starttls_discard_with_every_split() -> None:
    data = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.y>\r\n"
    for cut in range(1, len(data)):
        events, out = drive([data[:cut], data[cut:]], TLS, tls=False)
        assert not any(isinstance(e, (Mail, CommandRejected)) for e in events), cut
        assert out.endswith(b"220 2.0.0 Ready to start TLS\r\n")


def test_starttls_refused_keeps_session() -> None:
    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, StartTls):
            conn.send(Reply(454, "TLS not available now", "4.7.0"))
        else:
            conn.accept()

    _events, out = drive(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b.c>\r\n", TLS, policy=policy)
    assert out.endswith(b"454 4.7.0 TLS not available now\r\n250 2.1.0 Sender OK\r\n")


def test_starttls_not_offered_and_tls_established_misuse() -> None:
    _, out = drive(b"EHLO c\r\nSTARTTLS\r\n")
    assert out.endswith(b"502 5.5.1 Command not implemented\r\n")
    conn = make_server()
    with pytest.raises(LocalProtocolError):
        conn.tls_established()


def test_tls_required() -> None:
    run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        {TLS_EHLO}
        C: MAIL FROM:<a@example.com>
        S: 530 5.7.0 Must issue a STARTTLS command first
        C: VRFY x
        S: 530 5.7.0 Must issue a STARTTLS command first
        C: BDAT 3
        C: x
        S: 530 5.7.0 Must issue a STARTTLS command first
        C: NOOP
        S: 250 2.0.0 OK
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        C: EHLO client.example
        {TLS_EHLO_AFTER}
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Sender OK
        """,
        ServerConfig(tls=TlsPolicy.REQUIRED, auth=AuthPolicy.OPTIONAL),
        modes=("lines",),
    )


def test_implicit_tls_refuses_starttls() -> None:
    config = ServerConfig(tls=TlsPolicy.REQUIRED, implicit_tls=True)
    _, out = drive(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b.c>\r\n", config)
    assert out.endswith(b"503 5.5.1 TLS already active\r\n250 2.1.0 Sender OK\r\n")


# --- AUTH -------------------------------------------------------------------------------------------

AUTH = ServerConfig(
    auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True, auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2")
)
PASSWORDS = {"alice": "s3cret"}


def check_password(conn: ServerConnection, event: Event) -> None:
    if isinstance(event, AuthCredentials):
        if event.verify(PASSWORDS.get(event.username, "\0")):
            conn.accept()
        else:
            conn.send(Reply(535, "Authentication credentials invalid", "5.7.8"))
    else:
        conn.accept()


def auth(lines: bytes, config: ServerConfig = AUTH) -> tuple[list[Any], bytes]:
    events, out = drive(b"EHLO c\r\n" + lines, config, policy=check_password)
    return events[1:], out.split(b"250 AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2\r\n", 1)[-1]


def test_auth_plain_initial_response() -> None:
    events, out = auth(f"AUTH PLAIN {B64_0}\r\n".encode())
    assert out == b"235 2.7.0 Authentication successful\r\n"
    assert events == [AuthCredentials("PLAIN", "alice", "", password="s3cret")]
    assert "s3cret" not in repr(events[0])


def test_auth_plain_challenge_and_wrong_password() -> None:
    events, out = auth(f"AUTH PLAIN\r\n{B64_1}\r\n".encode())
    assert out == b"334 \r\n535 5.7.8 Authentication credentials invalid\r\n"
    assert events[0].authorization_id == "admin"
    assert "nope" not in repr(events[0])
    assert "nope" not in str(events[0])


def test_auth_login() -> None:
    _, out = auth(f"AUTH LOGIN\r\n{B64_2}\r\n{B64_3}\r\n".encode())
    assert out == b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"
    _, out = auth(f"AUTH LOGIN {B64_2}\r\n{B64_3}\r\n".encode())
    assert out == b"334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"


def test_auth_cram_md5_verified_with_stdlib_hmac() -> None:
    conn = make_server(AUTH)
    driver = Driver(conn, check_password)
    driver.feed(b"EHLO c\r\nAUTH CRAM-MD5\r\n")
    challenge_line = bytes(driver.output).split(b"\r\n")[-2]
    assert challenge_line.startswith(b"334 ")
    challenge = base64.b64decode(challenge_line[4:])
    assert challenge.startswith(b"<")
    assert challenge.endswith(b"@localhost>")
    digest = hmac.new(b"s3cret", challenge, "md5").hexdigest()
    driver.feed(b64(f"alice {digest}".encode()).encode() + b"\r\n")
    assert bytes(driver.output).endswith(b"235 2.7.0 Authentication successful\r\n")
    assert conn.authenticated is not None
    assert conn.authenticated.verify("s3cret")
    assert not conn.authenticated.verify("wrong")
    # A fresh challenge each time: a replayed response fails.
    conn2 = make_server(AUTH)
    driver2 = Driver(conn2, check_password)
    driver2.feed(b"EHLO c\r\nAUTH CRAM-MD5\r\n" + b64(f"alice {digest}".encode()).encode() + b"\r\n")
    assert bytes(driver2.output).endswith(b"535 5.7.8 Authentication credentials invalid\r\n")
    # A response to the challenge that is no "user hexdigest".
    # 32 characters but not hex digits: verify() would have raised TypeError comparing
    # non-ASCII text (a 451 to the client, a traceback in the log), not said False.
    for not_hex in (b"short", "\u00e9".encode() * 32, b"g" * 32, b"0" * 31 + b" "):
        _, out = auth(b"AUTH CRAM-MD5\r\n" + b64(b"alice " + not_hex).encode() + b"\r\n")
        assert out.startswith(b"334 ") and out.endswith(b"\r\n501 5.5.2 CRAM-MD5 response must be 'user hexdigest'\r\n")


@pytest.mark.parametrize(
    "response",
    [
        b"AUTH PLAIN " + base64.b64encode(b"\0admin\r\nX-Forged: 1\0pw"),
        b"AUTH PLAIN " + base64.b64encode(b"ad\x1b[31mmin\0alice\0pw"),  # in the authorization identity
        b"AUTH LOGIN " + base64.b64encode(b"ad\x1b[31mmin") + b"\r\n" + base64.b64encode(b"pw"),
        b"AUTH CRAM-MD5\r\n" + base64.b64encode("ad\x85min ".encode() + b"0" * 32),  # a C1 control (NEL)
        b"AUTH XOAUTH2 " + base64.b64encode(b"user=a\nb\x01auth=Bearer t\x01\x01"),
        b"AUTH XOAUTH2 " + base64.b64encode(b"user=a\x01auth=Bearer t\r\n\x01\x01"),
        # What str.splitlines() breaks at, and a bidi override ("\u202etoor" reads as root):
        # refused in every other name too.
        b"AUTH PLAIN " + base64.b64encode("\0admin\u2028X-Authenticated-As: root\0pw".encode()),
        b"AUTH PLAIN " + base64.b64encode("root\u2029x\0alice\0pw".encode()),
        b"AUTH PLAIN " + base64.b64encode("\0\u202etoor\0pw".encode()),
        b"AUTH XOAUTH2 " + base64.b64encode("user=a\u2028b@x\x01auth=Bearer t\x01\x01".encode()),
    ],
)
def test_a_name_or_token_with_a_control_character_is_refused(response: bytes) -> None:
    # SASLprep prohibits them (RFC 4013 §2.3); an application logs these names and may
    # put them in headers, where a CR LF or an escape sequence would forge a line.
    events, out = auth(response + b"\r\n")
    assert not any(isinstance(event, AuthCredentials) for event in events)
    assert re.search(rb"501 5\.5\.2 (user name|authzid|token) contains a control character\r\n", out)


def test_auth_xoauth2() -> None:
    events, out = auth(f"AUTH XOAUTH2 {B64_4}\r\n".encode())
    assert events[0].token == "tok123"
    assert "tok123" not in repr(events[0])
    assert out == b"535 5.7.8 Authentication credentials invalid\r\n"
    _, out = auth(f"AUTH XOAUTH2\r\n{B64_5}\r\n".encode())
    assert out == b"334 \r\n501 5.5.2 XOAUTH2 response needs user= and auth=Bearer\r\n"


@pytest.mark.parametrize(
    ("lines", "reply"),
    [
        (b"AUTH PLAIN =\r\n", b"501 5.5.2 PLAIN response must be authzid NUL authcid NUL password\r\n"),
        (b"AUTH PLAIN\r\n*\r\n", b"334 \r\n501 5.0.0 Authentication cancelled\r\n"),
        (b"AUTH LOGIN\r\n*\r\n", b"334 VXNlcm5hbWU6\r\n501 5.0.0 Authentication cancelled\r\n"),
        (b"AUTH PLAIN !!!!\r\n", b"501 5.5.2 Invalid base64 data\r\n"),
        (
            b"AUTH PLAIN\r\nAGFsaWNl\r\n",
            b"334 \r\n501 5.5.2 PLAIN response must be authzid NUL authcid NUL password\r\n",
        ),
        (b"AUTH PLAIN\r\nAGFsaWNlAHB\r\n", b"334 \r\n501 5.5.2 Invalid base64 data\r\n"),
        (b"AUTH PLAIN\r\n" + b"QUFB" * 4000 + b"\r\n", b"334 \r\n500 5.5.6 Authentication response too long\r\n"),
        (b"AUTH PLAIN " + b64(b"\0\xff\0x").encode() + b"\r\n", b"501 5.5.2 PLAIN field is not UTF-8\r\n"),
        # RFC 4954 §4: the server speaks first in CRAM-MD5; an initial response is refused
        # with 501, never read as the answer to a challenge that was not sent.
        (
            b"AUTH CRAM-MD5 " + b64(b"alice " + b"0" * 32).encode() + b"\r\n",
            b"501 5.5.2 CRAM-MD5 takes no initial response: send AUTH CRAM-MD5 alone\r\n",
        ),
        (b"AUTH CRAM-MD5 =\r\n", b"501 5.5.2 CRAM-MD5 takes no initial response: send AUTH CRAM-MD5 alone\r\n"),
        (b"AUTH GSSAPI\r\n", b"504 5.5.4 Unrecognized authentication mechanism\r\n"),
        (b"AUTH XOAUTH2 " + b64(b"user=a").encode() + b"\r\n", b"501 5.5.2 XOAUTH2 response must end with two ^A\r\n"),
    ],
)
def test_auth_failures(lines: bytes, reply: bytes) -> None:
    events, out = auth(lines + b"NOOP\r\n")
    assert out == reply + b"250 2.0.0 OK\r\n"
    assert isinstance(events[-2], CommandRejected)


def test_auth_long_response_within_limit_is_fine() -> None:
    # RFC 4954 §4: responses longer than a command line are allowed (12288 here).
    token = b"x" * 6000
    _, out = auth(b"AUTH PLAIN\r\n" + b64(b"\0alice\0" + token).encode() + b"\r\n")
    assert out == b"334 \r\n535 5.7.8 Authentication credentials invalid\r\n"


def test_auth_line_with_a_long_initial_response_is_taken_up_to_the_sasl_limit() -> None:
    # RFC 4954 §4 would have the client leave a long initial response out, but clients
    # send XOAUTH2 bearer tokens of a few KiB on the AUTH line (smtplib does): taken up
    # to max_auth_line, as a response on a line of its own would be; any other command
    # line stays within max_command_line.
    token = b"x" * 6000
    _, out = auth(b"auth plain " + b64(b"\0alice\0" + token).encode() + b"\r\nNOOP\r\n")
    assert out == b"535 5.7.8 Authentication credentials invalid\r\n250 2.0.0 OK\r\n"
    _, out = auth(b"AUTH PLAIN " + b"A" * 12300 + b"\r\nNOOP\r\n")
    assert out == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"  # past max_auth_line
    _, out = auth(b"NOOP " + b"A" * 6000 + b"\r\nNOOP\r\n")
    assert out == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"


def test_auth_sequence_rules() -> None:
    _, out = auth(f"MAIL FROM:<a@b.c>\r\nAUTH PLAIN {B64_0}\r\n".encode())
    assert out.endswith(b"503 5.5.1 AUTH is not allowed during a mail transaction\r\n")
    _, out = auth(f"AUTH PLAIN {B64_0}\r\nAUTH PLAIN\r\n".encode())
    assert out.endswith(b"235 2.7.0 Authentication successful\r\n503 5.5.1 Already authenticated\r\n")
    _, out = drive(b"AUTH PLAIN\r\n", AUTH)
    assert out.endswith(b"503 Send EHLO first\r\n")
    _, out = drive(b"EHLO c\r\nAUTH PLAIN\r\n")
    assert out.endswith(b"502 5.5.1 Command not implemented\r\n")


def test_auth_before_tls() -> None:
    config = ServerConfig(auth=AuthPolicy.OPTIONAL, tls=TlsPolicy.OPTIONAL)
    conn = make_server(config)
    _, out = drive(b"EHLO c\r\nAUTH PLAIN\r\n", conn=conn)
    assert b"AUTH PLAIN LOGIN" not in out
    assert out.endswith(b"538 5.7.11 Encryption required for requested authentication mechanism\r\n")
    _, out = drive(b"STARTTLS\r\n", conn=conn)
    _, out = drive(f"EHLO c\r\nAUTH PLAIN {B64_0}\r\n".encode(), conn=conn, policy=check_password)
    assert out.endswith(b"250 AUTH PLAIN LOGIN\r\n235 2.7.0 Authentication successful\r\n")


def test_auth_required() -> None:
    config = ServerConfig(auth=AuthPolicy.REQUIRED, allow_insecure_auth=True)
    run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        S: 250-localhost
        S: 250-PIPELINING
        S: 250-SIZE 10485760
        S: 250-8BITMIME
        S: 250-ENHANCEDSTATUSCODES
        S: 250-SMTPUTF8
        S: 250-CHUNKING
        S: 250-BINARYMIME
        S: 250 AUTH PLAIN LOGIN
        C: MAIL FROM:<a@example.com>
        S: 530 5.7.0 Authentication required
        C: AUTH PLAIN {B64_6}
        S: 535 5.7.8 Authentication credentials invalid
        C: MAIL FROM:<a@example.com>
        S: 530 5.7.0 Authentication required
        C: AUTH PLAIN {B64_7}
        S: 235 2.7.0 Authentication successful
        C: MAIL FROM:<a@example.com> AUTH=alice
        S: 250 2.1.0 Sender OK
        """,
        config,
        policy=check_password,
    )


def test_failed_logins_count_as_errors() -> None:
    config = ServerConfig(auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True, max_errors=3)
    events, out = drive(b"EHLO c\r\n" + f"AUTH PLAIN {B64_8}\r\n".encode() * 5, config, check_password)
    assert out.endswith(
        b"535 5.7.8 Authentication credentials invalid\r\n421 4.7.0 Too many errors; closing connection\r\n"
    )
    assert out.count(b"535") == 3
    assert isinstance(events[-1], RemoteProtocolError)


def test_delivering_mail_does_not_forgive_failed_logins() -> None:
    # Otherwise a client could guess passwords for ever with a message between guesses
    # (the other errors start over with each message).
    config = ServerConfig(auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True, max_errors=3)
    guess_then_deliver = f"AUTH PLAIN {B64_8}\r\n".encode() + MESSAGE
    events, out = drive(b"EHLO c\r\n" + guess_then_deliver * 4, config, check_password)
    assert out.count(b"535") == 3 and out.count(b"250 2.0.0 OK: message accepted") == 2
    assert out.endswith(
        b"535 5.7.8 Authentication credentials invalid\r\n421 4.7.0 Too many errors; closing connection\r\n"
    )
    assert isinstance(events[-1], RemoteProtocolError)


class Echo:
    """A custom mechanism: one challenge, then the response is the username."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def step(self, response: bytes | None) -> bytes | AuthCredentials:
        if response is None:
            return f"who are you at {self.hostname}?".encode()
        return AuthCredentials("X-ECHO", response.decode(), password="echo")


def test_custom_mechanism() -> None:
    config = ServerConfig(
        auth=AuthPolicy.OPTIONAL,
        allow_insecure_auth=True,
        auth_mechanisms=("X-ECHO",),
        auth_mechanism_factories={"X-ECHO": Echo},
    )
    events, out = drive(f"EHLO c\r\nAUTH x-echo\r\n{B64_9}\r\n".encode(), config)
    assert b"250 AUTH X-ECHO\r\n" in out
    assert out.endswith(f"334 {B64_10}\r\n235 2.7.0 Authentication successful\r\n".encode())
    assert events[-1] == AuthCredentials("X-ECHO", "bob", password="echo")
    _, out = drive(b"EHLO c\r\nAUTH PLAIN\r\n", config)
    assert out.endswith(b"504 5.5.4 Unrecognized authentication mechanism\r\n")


class Fussy:
    """A custom mechanism whose failure says more than a reply line can hold."""

    def __init__(self, hostname: str) -> None:
        pass

    def step(self, response: bytes | None) -> bytes | AuthCredentials:
        if response is None:
            return b""
        raise SaslFailure(response.decode())


@pytest.mark.parametrize(
    ("words", "reply"),
    [
        ("code rejected", b"501 5.5.2 code rejected"),
        ("code rejected\nsee https://example.com/otp", b"501 5.5.2 Malformed authentication response"),
        ("x" * 600, b"501 5.5.2 Malformed authentication response"),
    ],
)
def test_a_mechanisms_failure_is_always_answered_and_ends_the_exchange(words: str, reply: bytes) -> None:
    # Words that make no reply line once raised out of next_event(), left the client waiting
    # and kept the session in AUTH.
    config = ServerConfig(
        auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True, auth_mechanisms=("X-FUSSY",),
        auth_mechanism_factories={"X-FUSSY": Fussy},
    )  # fmt: skip
    response = base64.b64encode(words.encode())
    _, out = drive(b"EHLO c\r\nAUTH X-FUSSY\r\n" + response + b"\r\nNOOP\r\n", config)
    assert out.endswith(b"334 \r\n" + reply + b"\r\n250 2.0.0 OK\r\n")


class _Broken:
    """A mechanism of the application's that fails as code does: a lookup raises, or a
    challenge comes back as str."""

    def __init__(self, hostname: str) -> None:
        if hostname == "broken-factory":
            raise RuntimeError("secret-db-password in a traceback")

    def step(self, response: bytes | None) -> Any:
        if response is None:
            return "not bytes" if self.__class__.__name__ == "_StrChallenge" else b""
        raise KeyError("no row for user secret-db-password")


class _StrChallenge(_Broken):
    pass


@pytest.mark.parametrize(
    ("factory", "hostname", "lines"),
    [
        (_Broken, "mx", b"AUTH X-APP\r\nZm9v\r\n"),  # the step raises
        (_Broken, "mx", b"AUTH X-APP Zm9v\r\n"),  # ... on the initial response
        (_StrChallenge, "mx", b"AUTH X-APP\r\n"),  # a challenge that is no bytes
        (_Broken, "broken-factory", b"AUTH X-APP\r\n"),  # the factory raises
    ],
)
def test_a_mechanism_that_raises_gets_454_and_the_session_goes_on(factory: Any, hostname: str, lines: bytes) -> None:
    # RFC 4954 §6: 454 4.7.0.  Anything but SaslFailure escaped next_event() and left the
    # client's line unanswered, the session in AUTH.  The exception's text is the log's.
    config = ServerConfig(
        hostname=hostname, auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True, auth_mechanisms=("X-APP",),
        auth_mechanism_factories={"X-APP": factory},
    )  # fmt: skip
    events, out = drive(b"EHLO c\r\n" + lines + b"NOOP\r\n", config)
    assert out.endswith(b"454 4.7.0 Temporary authentication failure\r\n250 2.0.0 OK\r\n")
    assert b"secret" not in out
    rejected = [event for event in events if isinstance(event, CommandRejected)]
    assert len(rejected) == 1 and isinstance(rejected[0].cause, (KeyError, RuntimeError, TypeError))


def test_a_client_gone_before_the_tls_handshake_closes_the_connection() -> None:
    conn = make_server(TLS)
    driver = Driver(conn, tls=False)
    driver.feed(b"EHLO c\r\nSTARTTLS\r\n")
    assert isinstance(driver.events[-1], TlsHandshake)
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(by_peer=True)  # not PAUSED for ever
    assert conn.state is State.CLOSED


def test_client_closes_during_auth() -> None:
    events, _ = drive([b"EHLO c\r\nAUTH PLAIN\r\n", b"AGFs"], AUTH, close=True)
    assert events[-1] == ConnectionClosed(by_peer=True)


# --- LMTP -------------------------------------------------------------------------------------------

LMTP = ServerConfig(lmtp=True, chunking=True)
LHLO = EHLO_DEFAULT


def lmtp_policy(conn: ServerConnection, event: Event) -> None:
    if isinstance(event, Rcpt) and event.recipient.startswith("nobody"):
        conn.send(Reply(550, "No such user", "5.1.1"))
    elif isinstance(event, EndOfMessage):
        for rcpt in conn.recipients:
            if rcpt.recipient.startswith("full"):
                conn.send(Reply(452, "Mailbox full", "4.2.2"))
            else:
                conn.send(Reply(250, f"<{rcpt.recipient}> stored", "2.0.0"))
    else:
        conn.accept()


def test_lmtp_session() -> None:
    run_transcript(
        f"""
        S: 220 localhost LMTP smtpcore
        C: EHLO client.example
        S: 500 Command unrecognized
        C: HELO client.example
        S: 500 Command unrecognized
        C: MAIL FROM:<a@example.com>
        S: 503 Send LHLO first
        C: LHLO client.example
        {LHLO}
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<one@example.com>
        S: 250 2.1.5 Recipient OK
        C: RCPT TO:<nobody@example.com>
        S: 550 5.1.1 No such user
        C: RCPT TO:<full@example.com>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: hi
        C: .
        S: 250 2.0.0 <one@example.com> stored
        S: 452 4.2.2 Mailbox full
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<one@example.com>
        S: 250 2.1.5 Recipient OK
        C: RCPT TO:<two@example.com>
        S: 250 2.1.5 Recipient OK
        C: BDAT 3 LAST
        C: x
        S: 250 2.0.0 <one@example.com> stored
        S: 250 2.0.0 <two@example.com> stored
        """,
        LMTP,
        policy=lmtp_policy,
    )


def test_lmtp_accept_after_partial_replies_answers_the_rest() -> None:
    # Bug found: accept() used to answer *every* recipient again after some
    # replies had been sent, raising LocalProtocolError half-way.
    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, EndOfMessage):
            conn.send(Reply(451, "Try later", "4.3.0"))
        conn.accept()

    _, out = drive(
        b"LHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<g@e.f>\r\nRCPT TO:<h@e.f>\r\nDATA\r\nx\r\n.\r\n",
        LMTP,
        policy,
    )
    assert out.endswith(b"451 4.3.0 Try later\r\n250 2.1.5 <g@e.f> delivered\r\n250 2.1.5 <h@e.f> delivered\r\n")


def test_lmtp_standard_reply_answers_one_recipient() -> None:
    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, EndOfMessage):
            assert conn.standard_reply() == Reply(250, "<d@e.f> delivered", "2.1.5")
            conn.send(conn.standard_reply())
            conn.send(Reply(452, "Mailbox full", "4.2.2"))
            assert conn.standard_reply() == Reply(250, "<h@e.f> delivered", "2.1.5")
        conn.accept()

    _, out = drive(
        b"LHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<g@e.f>\r\nRCPT TO:<h@e.f>\r\nDATA\r\nx\r\n.\r\n",
        LMTP,
        policy,
    )
    assert out.endswith(b"250 2.1.5 <d@e.f> delivered\r\n452 4.2.2 Mailbox full\r\n250 2.1.5 <h@e.f> delivered\r\n")
    assert make_server(LMTP, greet=False).standard_reply() == Reply(220, "localhost LMTP smtpcore")
    with pytest.raises(LocalProtocolError, match="no command is waiting for a reply"):
        make_server(LMTP).standard_reply()


def test_lmtp_rejected_message_one_reply_per_recipient() -> None:
    _, out = drive(b"LHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<g@e.f>\r\nDATA\r\na\nb\r\n.\r\n", LMTP)
    assert out.endswith(
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
        + b"550 5.6.11 Message contains a bare CR or LF; use CRLF line endings\r\n" * 2
    )


# --- VRFY / EXPN / RSET / NOOP / HELP / QUIT --------------------------------------------------------


def test_vrfy_expn_defaults() -> None:
    events = run_transcript(
        f"""
        {GREETING}
        C: VRFY alice
        S: 252 Cannot VRFY user, but will accept message and attempt delivery
        C: EXPN staff
        S: 502 EXPN not available
        C: HELP
        S: 214 See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)
        C: NOOP
        S: 250 OK
        C: RSET
        S: 250 Reset OK
        C: QUIT
        S: 221 Bye
        """
    )
    assert Vrfy("alice") in events
    assert Expn("staff") in events


def test_vrfy_expn_answered_by_application() -> None:
    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, Vrfy):
            conn.send(Reply(250, "Alice <alice@example.com>", "2.1.5"))
        elif isinstance(event, Expn):
            conn.send(Reply(250, ["<a@example.com>", "<b@example.com>"], "2.1.5"))
        else:
            conn.accept()

    config = ServerConfig(vrfy_enabled=True, expn_enabled=True)
    run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        {EHLO_DEFAULT}
        C: VRFY alice
        S: 250 2.1.5 Alice <alice@example.com>
        C: EXPN staff
        S: 250-2.1.5 <a@example.com>
        S: 250 2.1.5 <b@example.com>
        """,
        config,
        policy=policy,
    )
    # accept(): the positive defaults, which are no error (a 502 to an enabled EXPN was, once).
    conn = make_server(ServerConfig(vrfy_enabled=True, expn_enabled=True, max_errors=1))
    _, out = drive(b"VRFY a\r\nEXPN b\r\nNOOP\r\n", conn=conn)
    assert out.endswith(
        b"252 Cannot VRFY user, but will accept message and attempt delivery\r\n"
        b"252 Cannot expand the list, but will accept message and attempt delivery\r\n250 OK\r\n"
    )
    conn = make_server(config)
    drive(b"VRFY a\r\n", conn=conn, policy=lambda c, e: None)
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(354, "no"))


def test_rset_clears_transaction_and_keeps_hello() -> None:
    conn = make_server()
    drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n", conn=conn)
    assert conn.recipients
    assert conn.mail is not None
    _, out = drive(b"RSET\r\nRCPT TO:<d@e.f>\r\n", conn=conn)
    assert conn.mail is None
    assert conn.recipients == ()
    assert conn.hello == Hello("c")
    assert out == b"250 2.0.0 Reset OK\r\n503 5.5.1 Send MAIL first\r\n"


def test_second_ehlo_resets_transaction() -> None:
    conn = make_server()
    drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nEHLO d\r\n", conn=conn)
    assert conn.mail is None
    assert conn.state is State.READY
    assert conn.hello == Hello("d")


def test_sequence_errors() -> None:
    run_transcript(
        f"""
        {GREETING}
        C: MAIL FROM:<a@example.com>
        S: 503 Send EHLO first
        C: EHLO client.example
        {EHLO_DEFAULT}
        C: RCPT TO:<b@example.com>
        S: 503 5.5.1 Send MAIL first
        C: DATA
        S: 503 5.5.1 Send MAIL first
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Sender OK
        C: DATA
        S: 503 5.5.1 Send RCPT first
        C: MAIL FROM:<a@example.com>
        S: 503 5.5.1 Sender already given; send RSET to start over
        """
    )


def test_data_after_recipients_refused_for_their_syntax_has_no_valid_recipients() -> None:
    # Tried, and refused before the application saw them: the RCPTs were sent, so
    # "send RCPT first" would be wrong; Postfix says "no valid recipients" too.
    run_transcript(
        f"""
        {GREETING}
        C: EHLO client.example
        {EHLO_DEFAULT}
        C: MAIL FROM:<a@example.com>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<no-brackets@example.com
        S: 501 5.5.2 Address must be in angle brackets
        C: RCPT TO:<jörg@example.com>
        S: 553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter
        C: DATA
        S: 554 5.5.1 No valid recipients
        C: BDAT 5 LAST
        C: abc
        S: 554 5.5.1 No valid recipients
        """
    )


def test_data_after_only_refused_recipients() -> None:
    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, Rcpt):
            conn.send(Reply(550, "No", "5.1.1"))
        else:
            conn.accept()

    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n", policy=policy)
    assert out.endswith(b"550 5.1.1 No\r\n554 5.5.1 No valid recipients\r\n")
    # RFC 2033 §4.2: in LMTP, DATA (and BDAT) after no successful RCPT "MUST fail with a 503".
    lmtp = ServerConfig(lmtp=True)
    stream = b"LHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nBDAT 0 LAST\r\n"
    _, out = drive(stream, config=lmtp, policy=policy)
    assert out.endswith(b"550 5.1.1 No\r\n503 5.5.1 No valid recipients\r\n503 5.5.1 No valid recipients\r\n")


# --- greeting, early talkers, limits ----------------------------------------------------------------


def test_greeting_554_then_only_quit() -> None:
    run_transcript(
        """
        S: 554 No SMTP service here
        C: EHLO client.example
        S: 503 Connection refused; only QUIT is accepted
        C: MAIL FROM:<a@example.com>
        S: 503 Connection refused; only QUIT is accepted
        C: QUIT
        S: 221 Bye
        """,
        greeting=Reply(554, "No SMTP service here", "5.7.1"),
    )


def test_greeting_misuse() -> None:
    conn = ServerConnection()
    assert conn.reply_due
    assert conn.state is State.GREETING
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "hello"))
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(550, "no"))
    conn.send(Reply(421, "Busy", "4.3.2"))
    assert conn.data_to_send() == b"421 Busy\r\n"  # no EHLO yet: no enhanced code
    assert conn.next_event() == ConnectionClosed(by_peer=False)


def test_early_talker() -> None:
    conn = ServerConnection()
    conn.receive_data(b"EHLO c\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.reply is not None
    assert info.value.reply.code == 554
    assert conn.data_to_send() == b"554 Protocol violation: client sent data before the greeting\r\n"
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert not conn.reply_due
    with pytest.raises(LocalProtocolError):
        conn.accept()


def test_early_talker_allowed_by_config() -> None:
    conn = ServerConnection(ServerConfig(reject_early_talkers=False))
    conn.receive_data(b"EHLO c\r\n")
    assert conn.next_event() is PAUSED
    conn.accept()
    events, _out = drive(b"", conn=conn)
    assert events[0] == Hello("c")


def test_error_limit() -> None:
    config = ServerConfig(max_errors=3)
    events, out = drive(b"EHLO c\r\nFOO\r\nRCPT TO:<a@b.c>\r\nMAIL FROM:<bad\r\nNOOP\r\n", config)
    assert [type(e).__name__ for e in events] == [
        "Hello",
        "CommandRejected",
        "CommandRejected",
        "CommandRejected",
        "RemoteProtocolError",
    ]
    assert out.endswith(
        b"501 5.5.2 Address must be in angle brackets\r\n421 4.7.0 Too many errors; closing connection\r\n"
    )
    assert events[-1].reply.code == 421


JUNK = b"NOOP\r\nRSET\r\nHELP\r\nVRFY x\r\nEXPN y\r\n"
MESSAGE = b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nhi\r\n.\r\n"


def test_junk_commands_past_their_limit_are_errors() -> None:
    # Else a client could hold a connection for ever on NOOPs (Postfix: smtpd_junk_command_limit).
    config = ServerConfig(max_junk_commands=5, max_errors=3)
    events, out = drive(b"EHLO c\r\n" + JUNK + b"NOOP\r\n" * 3 + b"NOOP\r\n", config)
    assert [type(e).__name__ for e in events][-5:] == ["Expn", "Noop", "Noop", "Noop", "RemoteProtocolError"]
    assert out.endswith(b"250 2.0.0 OK\r\n" * 3 + b"421 4.7.0 Too many errors; closing connection\r\n")


def test_a_greeting_said_again_is_junk() -> None:
    # RFC 5321 lets a client say EHLO again, but it changes nothing lasting: without a
    # limit, one EHLO every few minutes would hold the connection for ever.
    config = ServerConfig(max_junk_commands=5, max_errors=1)
    events, out = drive(b"EHLO c\r\n" * 7 + b"NOOP\r\n", config)
    assert [type(e).__name__ for e in events][-2:] == ["Hello", "RemoteProtocolError"]
    assert out.count(b"250-PIPELINING") == 7 and out.endswith(b"421 4.7.0 Too many errors; closing connection\r\n")


def test_messages_announced_too_big_are_errors() -> None:
    # 552 to each (RFC 1870 §6), and each an error as any refusal is: announcing one
    # oversized message after another must not hold the connection for ever.
    config = ServerConfig(max_message_size=65536, max_errors=3)
    events, out = drive(b"EHLO c\r\n" + b"MAIL FROM:<a@b.c> SIZE=65537\r\n" * 4, config)
    assert [type(e).__name__ for e in events][-2:] == ["CommandRejected", "RemoteProtocolError"]
    assert out.count(b"552 5.3.4") == 3 and out.endswith(b"421 4.7.0 Too many errors; closing connection\r\n")


def test_empty_bdat_chunks_are_junk() -> None:
    # "BDAT 0" adds nothing but is allowed (RFC 3030 §2); one every few minutes must
    # not hold the connection for ever either.  "BDAT 0 LAST" ends a message: not junk.
    config = ServerConfig(max_junk_commands=5, max_errors=1)
    start = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n"
    events, out = drive(start + b"BDAT 0\r\n" * 6 + b"BDAT 0 LAST\r\n", config)
    assert isinstance(events[-1], RemoteProtocolError)
    assert out.count(b"250 2.0.0 0 octets received") == 5  # the sixth, past the limit, gets the 421
    events, _ = drive(start + b"BDAT 0\r\n" * 5 + b"BDAT 0 LAST\r\n", config)
    assert isinstance(events[-1], EndOfMessage)


def test_recipients_over_the_limit_are_errors_past_an_overshoot_of_1000() -> None:
    # 452 for each: a pipelining client sends its RCPTs before it sees the first, and the
    # rest go in the next transaction.  Past 1000 of them (Postfix's overshoot), errors.
    config = ServerConfig(max_recipients=100, max_errors=3)
    rcpts = b"".join(b"RCPT TO:<r%d@example.org>\r\n" % n for n in range(100 + 1000))
    events, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n" + rcpts, config)
    assert out.count(b"452 4.5.3 Too many recipients") == 1000
    assert not any(isinstance(e, RemoteProtocolError) for e in events)
    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n" + rcpts + b"RCPT TO:<x@example.org>\r\n" * 3, config)
    assert out.endswith(b"452 4.5.3 Too many recipients\r\n421 4.7.0 Too many errors; closing connection\r\n")


def test_the_junk_count_starts_over_after_a_message_is_accepted() -> None:
    config = ServerConfig(max_junk_commands=5, max_errors=1)
    events, _ = drive(b"EHLO c\r\n" + JUNK + MESSAGE + JUNK + MESSAGE + JUNK + b"QUIT\r\n", config)
    assert not any(isinstance(e, RemoteProtocolError) for e in events)

    def refuse(conn: ServerConnection, event: object) -> None:
        conn.send(Reply(554, "No", "5.7.1")) if isinstance(event, EndOfMessage) else conn.accept()

    # In LMTP a message one recipient took counts, whatever the last recipient's reply.
    lmtp = make_server(ServerConfig(lmtp=True, max_junk_commands=5, max_errors=1))
    two = b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<full@e.f>\r\nDATA\r\nhi\r\n.\r\n"

    def full(conn: ServerConnection, event: object) -> None:
        if isinstance(event, EndOfMessage):
            conn.send(Reply(250, "<d@e.f> delivered", "2.1.5"))
            conn.send(Reply(452, "<full@e.f> mailbox full", "4.2.2"))
        else:
            conn.accept()

    events, _ = drive(b"LHLO c\r\n" + JUNK + two + JUNK + b"QUIT\r\n", conn=lmtp, policy=full)
    assert not any(isinstance(e, RemoteProtocolError) for e in events)

    # A refused message is not what the client came for: the count goes on (and
    # the refusal is an error of its own: two errors here).
    config = ServerConfig(max_junk_commands=5, max_errors=2)
    events, out = drive(b"EHLO c\r\n" + JUNK + MESSAGE + b"NOOP\r\n", config, policy=refuse)
    assert isinstance(events[-1], RemoteProtocolError)
    assert out.endswith(b"554 5.7.1 No\r\n250 2.0.0 OK\r\n421 4.7.0 Too many errors; closing connection\r\n")


def refuse_nobody(conn: ServerConnection, event: object) -> None:
    """Accept everything but recipients called nobody (550)."""
    if isinstance(event, Rcpt) and event.recipient.startswith("nobody@"):
        conn.send(Reply(550, "No such user", "5.1.1"))
    else:
        conn.accept()


NOBODY = b"RCPT TO:<nobody@e.f>\r\n"


def test_refusals_by_the_application_are_errors() -> None:
    # A client probing for addresses gets a 550 a guess: each is an error, as in
    # Postfix, so the probing ends at max_errors (directory harvest).
    config = ServerConfig(max_errors=3)
    conn = make_server(config)
    events, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n" + NOBODY * 5, conn=conn, policy=refuse_nobody)
    assert out.count(b"550 5.1.1 No such user") == 3
    assert out.endswith(b"550 5.1.1 No such user\r\n421 4.7.0 Too many errors; closing connection\r\n")
    assert isinstance(events[-1], RemoteProtocolError)
    assert conn.error_count == 3

    # Every command the application refuses counts, whatever it is.
    def refuse_all(conn: ServerConnection, event: object) -> None:
        conn.send(Reply(550, "No", "5.7.1")) if not isinstance(event, Hello) else conn.accept()

    conn = make_server(ServerConfig(vrfy_enabled=True))
    drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nVRFY x\r\n", conn=conn, policy=refuse_all)
    assert conn.error_count == 2
    # A 421 closes at once; accepted commands are no errors.
    conn = make_server()
    drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n" + MESSAGE, conn=conn)
    assert conn.error_count == 0


def test_the_error_count_starts_over_after_a_message_is_accepted() -> None:
    # "The maximal number of errors a client is allowed to make without
    # delivering mail" (Postfix's smtpd_hard_error_limit, which it resets too).
    config = ServerConfig(max_errors=3)
    conn = make_server(config)
    errors = b"FOO\r\nMAIL FROM:<a@b.c>\r\n" + NOBODY  # unknown command, refused RCPT
    drive(b"EHLO c\r\n" + errors + b"RCPT TO:<d@e.f>\r\nDATA\r\nhi\r\n.\r\n", conn=conn, policy=refuse_nobody)
    assert conn.error_count == 0
    drive(errors + b"RSET\r\n", conn=conn, policy=refuse_nobody)
    assert conn.error_count == 2
    assert conn.state is State.READY

    # A message refused at its end (by the application or by the core) is one error.
    def refuse(conn: ServerConnection, event: object) -> None:
        conn.send(Reply(554, "No", "5.7.1")) if isinstance(event, EndOfMessage) else conn.accept()

    conn = make_server(config)
    drive(b"EHLO c\r\n" + MESSAGE, conn=conn, policy=refuse)
    assert conn.error_count == 1
    drive(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nbare\nLF\r\n.\r\n", conn=conn)
    assert conn.error_count == 2

    # In LMTP a message one recipient took is delivered; one nobody took is one error.
    lmtp = ServerConfig(lmtp=True, max_errors=3)
    two = b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<full@e.f>\r\nDATA\r\nhi\r\n.\r\n"

    def answers(*codes: int) -> Any:
        def policy(conn: ServerConnection, event: object) -> None:
            if isinstance(event, EndOfMessage):
                for code in codes:
                    conn.send(Reply(code, "delivered" if code < 400 else "mailbox full"))
            else:
                conn.accept()

        return policy

    for codes, count in (((250, 452), 0), ((452, 250), 0), ((452, 452), 2)):
        conn = make_server(lmtp, greet=True)
        drive(b"LHLO c\r\nFOO\r\n" + two, conn=conn, policy=answers(*codes))
        assert conn.error_count == count, codes
    # Each message is judged by its own answers: one delivered before does not
    # make the next, which nobody took, a delivery.
    conn = make_server(lmtp, greet=True)
    drive(b"LHLO c\r\n" + two, conn=conn, policy=answers(250, 250))
    drive(two, conn=conn, policy=answers(452, 452))
    assert conn.error_count == 1


def test_error_delay() -> None:
    # Postfix's tarpit (smtpd_error_sleep_time, after smtpd_soft_error_limit): once
    # the client has made error_delay_after errors, each command owes error_delay.
    config = ServerConfig(error_delay=1.5, error_delay_after=2)
    conn = make_server(config)
    drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n" + NOBODY * 2, conn=conn, policy=refuse_nobody)
    assert conn.take_reply_delay() == 0.0  # two errors, but each command came before them
    drive(NOBODY + b"RCPT TO:<d@e.f>\r\n", conn=conn, policy=refuse_nobody)
    assert conn.take_reply_delay() == 3.0  # both replies wait: an accepted one too
    assert conn.take_reply_delay() == 0.0  # owed once
    drive(b"DATA\r\nhi\r\n.\r\n", conn=conn)
    assert conn.take_reply_delay() == 1.5  # DATA's 354; the end of data is no command
    drive(b"NOOP\r\n" + NOBODY, conn=conn, policy=refuse_nobody)
    assert conn.take_reply_delay() == 0.0  # mail was delivered: the count started over
    # Failed logins and the core's own refusals count the same way.
    conn = make_server(dataclasses.replace(config, auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True))
    drive(b"EHLO c\r\nFOO\r\n" + f"AUTH PLAIN {B64_8}\r\n".encode() * 3, conn=conn, policy=check_password)
    assert conn.take_reply_delay() == 3.0  # the second and third AUTH
    # No error_delay: nothing is ever owed.
    conn = make_server(ServerConfig(max_errors=100))
    drive(b"EHLO c\r\n" + b"FOO\r\n" * 50, conn=conn)
    assert conn.error_count == 50
    assert conn.take_reply_delay() == 0.0


def test_recipient_limit() -> None:
    config = ServerConfig(max_recipients=100)
    rcpts = b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(102))
    conn = make_server(config)
    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n" + rcpts + b"NOOP\r\n", conn=conn)
    assert len(conn.recipients) == 100
    assert out.endswith(b"452 4.5.3 Too many recipients\r\n" * 2 + b"250 2.0.0 OK\r\n")
    assert conn.error_count == 0  # the excess is not the client's error (RFC 5321 §4.5.3.1.10)


# --- content rejection, closing replies, misuse ----------------------------------------------------


def test_reject_message_reply_after_end_of_data() -> None:
    def policy(conn: ServerConnection, event: Event) -> None:
        conn.accept()

    conn = make_server()
    driver = Driver(conn, policy)
    driver.feed(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nfirst line\r\n")
    conn.reject_message(Reply(554, "Virus found", "5.7.1"))
    conn.reject_message(Reply(451, "second call is ignored", "4.3.0"))
    before = len(driver.output)
    driver.feed(b"more\r\nlines\r\n")
    assert len(driver.output) == before
    # Nothing handed out after the rejection (the CRLF held back before it is dropped too).
    assert content(driver.events) == b"first line"
    driver.feed(b".\r\nNOOP\r\n")
    assert bytes(driver.output[before:]) == b"554 5.7.1 Virus found\r\n250 2.0.0 OK\r\n"
    assert MessageRejected(Reply(554, "Virus found", "5.7.1")) in driver.events
    with pytest.raises(LocalProtocolError):
        conn.reject_message(Reply(554, "not now"))
    conn2 = make_server()
    drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n", conn=conn2)
    with pytest.raises(LocalProtocolError):
        conn2.reject_message(Reply(250, "fine"))
    conn2.reject_message(Reply(400, "lowest refusal"))  # every 4xx and 5xx refuses
    _, out = drive(b"x\r\n.\r\n", conn=conn2)
    assert out == b"400 lowest refusal\r\n"


@pytest.mark.parametrize("lmtp", [False, True])
def test_a_421_refusing_the_message_ends_the_session_after_its_end(lmtp: bool) -> None:
    # RFC 5321 §3.8: a 421 says the server is closing the channel.  A handler's
    # "disk full, closing" from data_chunk must not be followed by 250 to the next
    # command; said once, even to an LMTP client with two recipients.
    closing = Reply(421, "disk full, closing", "4.3.0")
    conn = make_server(ServerConfig(lmtp=lmtp))
    driver = Driver(conn)
    hello = b"LHLO c\r\n" if lmtp else b"EHLO c\r\n"
    driver.feed(hello + b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<g@e.f>\r\nDATA\r\nhi\r\n")
    conn.reject_message(closing)
    driver.feed(b".\r\nNOOP\r\n")
    assert bytes(driver.output).endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n421 4.3.0 disk full, closing\r\n")
    assert MessageRejected(closing) in driver.events
    assert driver.events[-1] == ConnectionClosed(by_peer=False)


def test_a_421_refusing_a_bdat_message_ends_the_session_at_its_chunk() -> None:
    closing = Reply(421, "spool unavailable, closing", "4.3.0")
    conn = make_server(ServerConfig(chunking=True))
    driver = Driver(conn)
    driver.feed(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 3\r\na")
    conn.reject_message(closing)
    driver.feed(b"bcBDAT 2 LAST\r\nde")
    assert bytes(driver.output).endswith(b"250 2.1.5 Recipient OK\r\n421 4.3.0 spool unavailable, closing\r\n")
    assert MessageRejected(closing) in driver.events
    assert driver.events[-1] == ConnectionClosed(by_peer=False)


def test_app_421_closes() -> None:
    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, Mail):
            conn.send(Reply(421, "Shutting down", "4.3.2"))
        else:
            conn.accept()

    events, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n", policy=policy)
    assert out.endswith(b"421 4.3.2 Shutting down\r\n")
    assert events[-1] == ConnectionClosed(by_peer=False)


def test_send_misuse() -> None:
    conn = make_server()
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "nothing is due"))
    with pytest.raises(LocalProtocolError):
        conn.accept()
    with pytest.raises(LocalProtocolError):
        conn.send("250 OK")  # type: ignore[arg-type]
    cases = [
        (b"EHLO c\r\n", Hello, Reply(354, "go")),
        (b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n", Mail, Reply(251, "x")),
        (b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n", Rcpt, Reply(354, "go")),
        (b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n", Data, Reply(250, "OK")),
        (b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n.\r\n", EndOfMessage, Reply(354, "again")),
    ]
    for data, kind, bad in cases:
        conn = make_server()

        def policy(c: ServerConnection, e: Event, k: type[Event] = kind) -> None:
            if not isinstance(e, k):
                c.accept()

        events, _ = drive(data, conn=conn, policy=policy)
        assert isinstance(events[-1], kind)
        with pytest.raises(LocalProtocolError):
            conn.send(bad)
        conn.send(Reply(451, "later", "4.3.0"))
        # No enhanced code on an EHLO reply (RFC 2034 §3), one on every other.
        assert conn.data_to_send().endswith(b"451 later\r\n" if kind is Hello else b"451 4.3.0 later\r\n")
    # 251 is a valid answer to RCPT.
    conn = make_server()
    drive(
        b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n",
        conn=conn,
        policy=lambda c, e: None if isinstance(e, Rcpt) else c.accept(),
    )
    conn.send(Reply(251, "User not local; will forward", "2.1.5"))
    assert conn.recipients == (Rcpt("d@e.f"),)


def test_timeouts_per_state() -> None:
    config = ServerConfig(
        command_timeout=111, data_timeout=222, tls_handshake_timeout=33, min_data_rate=0, tls=TlsPolicy.OPTIONAL
    )
    conn = make_server(config)
    assert conn.timeout.name == "command"
    assert conn.timeout.seconds == 111
    assert conn.timeout.rfc.startswith("RFC 5321")
    drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n", conn=conn)
    assert conn.timeout.name == "data"
    assert conn.timeout.seconds == 222
    assert conn.timeout.min_rate is None
    drive(b"x\r\n.\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 10\r\nabc", conn=conn)
    assert conn.state is State.CHUNK
    assert conn.timeout.name == "data"
    drive(b"defghij", conn=conn)
    assert conn.state is State.CHUNKING  # type: ignore[comparison-overlap]  # mypy keeps the CHUNK narrowing across drive()
    assert conn.timeout.name == "command"
    drive(b"RSET\r\nSTARTTLS\r\n", conn=conn, tls=False)
    assert conn.timeout.name == "tls_handshake"
    assert conn.timeout.seconds == 33
    assert make_server().timeout == make_server().timeout
    data_default = make_server()
    drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n", conn=data_default)
    assert data_default.timeout.min_rate == 500.0


def test_client_disconnects_mid_data() -> None:
    events, _out = drive([b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\npartial\r\n."], close=True)
    assert events[-1] == ConnectionClosed(by_peer=True)
    assert EndOfMessage() not in events
    assert content(events) == b"partial"  # the CRLF could have started CRLF.CRLF


def test_client_disconnects_mid_bdat_and_mid_line() -> None:
    events, _ = drive([b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 10\r\nabc"], close=True)
    assert events[-1] == ConnectionClosed(by_peer=True)
    events, _ = drive([b"EHLO c\r\nMAIL FR"], close=True)
    assert events[-1] == ConnectionClosed(by_peer=True)
    conn = make_server()
    drive(b"", conn=conn, close=True)
    assert conn.state is State.CLOSED
    conn.receive_data(b"more after close")
    assert conn.next_event() == ConnectionClosed(by_peer=True)


def test_bare_newline_and_long_line_policies() -> None:
    data = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"
    _, out = drive(data + b"x" * 1200 + b"\r\n.\r\n")
    assert out.endswith(b"550 5.6.0 Message contains a line longer than 998 octets\r\n")
    _, out = drive(data + b"x" * 1200 + b"\r\n.\r\n", ServerConfig(max_line_length=1100))
    assert out.endswith(b"550 5.6.0 Message contains a line longer than 1098 octets\r\n")  # the limit it has
    events, out = drive(data + b"x" * 1200 + b"\r\n.\r\n", ServerConfig(long_lines=LongLinePolicy.ACCEPT))
    assert out.endswith(b"250 2.0.0 OK: message accepted\r\n")
    assert content(events) == b"x" * 1200 + b"\r\n"
    events, out = drive(data + b"a\rb\nc\r\n.\r\n", ServerConfig(bare_newlines=BareNewlinePolicy.ACCEPT))
    assert out.endswith(b"250 2.0.0 OK: message accepted\r\n")
    assert content(events) == b"a\rb\nc\r\n"


POLICIES = [
    (bare, long)
    for bare in (BareNewlinePolicy.REJECT, BareNewlinePolicy.ACCEPT)
    for long in (LongLinePolicy.REJECT, LongLinePolicy.ACCEPT)
]


@pytest.mark.parametrize(("bare_newlines", "long_lines"), POLICIES, ids=lambda p: p.name)
@pytest.mark.parametrize(
    ("line", "has_bare", "has_long"),
    [
        (b"a" * 998, False, False),
        (b"a" * 999, False, True),
        (b".." + b"a" * 997, False, False),  # 998 octets of text after the transparency dot
        (b".." + b"a" * 998, False, True),
        (b"a" * 500 + b"\n" + b"a" * 400, True, False),
        (b"a" * 500 + b"\r" + b"a" * 600, True, True),  # bare CR: one line of 1101 octets
        (b"\r\n".join([b"b" * 998] * 70), False, False),  # lines at the limit, across the cut
    ],
    ids=lambda v: f"{v[:3]!r}..{len(v)}" if isinstance(v, bytes) else str(v),
)
@pytest.mark.parametrize("cut", [None, 0, 1, 500, 997, 998, 999, 1000])
def test_content_checks_by_policy_in_64k_pieces(
    line: bytes,
    has_bare: bool,
    has_long: bool,
    bare_newlines: BareNewlinePolicy,
    long_lines: LongLinePolicy,
    cut: int | None,
) -> None:
    # The line sits where a 64 KiB piece boundary falls ``cut`` octets into it.
    data = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"
    start = 65536 - (cut or 0) - len(data)
    filler = (b"f" * 62 + b"\r\n") * ((start - 2) // 64)
    filler += b"g" * (start - len(filler) - 2) + b"\r\n"
    stream = data + filler + line + b"\r\nafter\r\n.\r\n"
    assert stream.index(line) == 65536 - (cut or 0)
    chunks = [stream] if cut is None else [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    events, out = drive(chunks, ServerConfig(bare_newlines=bare_newlines, long_lines=long_lines))
    if has_bare and bare_newlines is BareNewlinePolicy.REJECT:
        assert out.endswith(b"550 5.6.11 Message contains a bare CR or LF; use CRLF line endings\r\n")
    elif has_long and long_lines is LongLinePolicy.REJECT:
        assert out.endswith(b"550 5.6.0 Message contains a line longer than 998 octets\r\n")
    else:
        assert out.endswith(b"250 2.0.0 OK: message accepted\r\n")
    assert content(events) == (filler + line + b"\r\nafter\r\n").replace(b"\r\n..", b"\r\n.")


def test_state_and_properties() -> None:
    conn = make_server()
    assert conn.state is State.CONNECTED
    drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n", conn=conn)
    assert conn.state is State.MAIL  # type: ignore[comparison-overlap]  # mypy keeps the CONNECTED narrowing across drive()
    assert conn.bytes_received == len(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n")
    assert conn.data_to_send() == b""


def test_extensions_make_room_for_their_parameters_on_the_command_line() -> None:
    # RFC 1870 (SIZE +26), RFC 4954 §5 (AUTH= +500), RFC 3461 §4 (DSN: MAIL +100, RCPT
    # +500), RFC 6531 (SMTPUTF8 +10): a client may send MAIL and RCPT lines that much
    # longer than 512 octets once they are advertised.
    config = ServerConfig(auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True, dsn=True)
    address = "a" * 64 + "@" + ".".join(["d" * 60] * 3)  # 248 octets
    mail = f"MAIL FROM:<{address}> SIZE=100 BODY=8BITMIME RET=HDRS AUTH=<{address}>\r\n".encode()
    rcpt = f"RCPT TO:<{address}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;{address}\r\n".encode()
    assert len(mail) > 540 and len(rcpt) > 540
    events, out = drive(b"EHLO c\r\n" + mail + rcpt, config)
    assert [type(e).__name__ for e in events] == ["Hello", "Mail", "Rcpt"], out
    # Before EHLO, or after HELO (no extensions), the line is 512 octets at most.
    _, out = drive(b"HELO c\r\n" + mail * 2, config)
    assert out.count(b"500 Line too long") == 2
    # And the room is bounded: a line past it is refused without being kept.
    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c> " + b"X" * 1300 + b"\r\n", config)
    assert out.endswith(b"500 5.5.2 Line too long\r\n")


@pytest.mark.parametrize(
    ("dsn", "auth", "longest"),
    [
        # 512, and 64 for the parameters whose RFCs say nothing, SIZE 26, SMTPUTF8 10: 612.
        (False, False, 612),
        # DSN: MAIL +100, RCPT +500.  A line is read before its verb is known, so the longest
        # either command may be is the limit: RCPT's 64 + 500.
        (True, False, 1076),
        # AUTH= +500 on MAIL too: MAIL's 64 + 26 + 10 + 100 + 500 = 700 is now the longer.
        (True, True, 1212),
    ],
)
def test_the_room_of_each_extension_is_exact(dsn: bool, auth: bool, longest: int) -> None:
    # Each number of RFC 1870, 3461 §4, 4954 §5 and 6531 held at its edge: a line of
    # ``longest`` octets is read (and its unknown parameter refused), one more is too long.
    config = ServerConfig(dsn=dsn, auth=AuthPolicy.OPTIONAL if auth else AuthPolicy.OFF, allow_insecure_auth=True)
    start = b"MAIL FROM:<a@b.c> X-PAD="
    for length, reply in (
        (longest, b"555 5.5.4 Parameter X-PAD not recognized or not implemented"),
        (longest + 1, b"500 5.5.2 Line too long"),
    ):
        line = start + b"x" * (length - len(start) - 2) + b"\r\n"
        _, out = drive(b"EHLO c\r\n" + line, config)
        assert out.endswith(b"\r\n" + reply + b"\r\n"), (length, out[-60:])


# --- found by mutation testing: behaviour no test held -----------------------------------------------


@pytest.mark.parametrize("room", [1, 2, 5])
def test_a_message_over_the_size_limit_is_handed_out_exactly_up_to_it(room: int) -> None:
    # Whatever piece crosses max_message_size, the application gets the octets up to the
    # limit and not one more (sv68: a piece that left one octet of room handed out none).
    limit = 65536
    config = ServerConfig(max_message_size=limit)
    first = b"x" * (limit - room)
    pieces = [b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<b@c.d>\r\nDATA\r\n", first, b"abcdefgh\r\n.\r\n"]
    events, out = drive(pieces, config)
    assert content(events) == first + b"abcdefgh"[:room]
    assert out.endswith(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")


def test_a_thousand_recipients_past_the_limit_are_no_error_and_the_next_is() -> None:
    # Postfix's smtpd_recipient_overshoot_limit (1000): the recipients a client sends past
    # max_recipients are refused with 452, and only those past a thousand more count as
    # errors, so that one list server's long envelope does not end its session.
    config = ServerConfig(max_recipients=100, max_errors=1, error_delay=0)
    rcpts = b"".join(b"RCPT TO:<u%d@x.example>\r\n" % i for i in range(100 + 1000))
    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n" + rcpts + b"NOOP\r\n", config)
    assert out.count(b"452 4.5.3 Too many recipients\r\n") == 1000 and out.endswith(b"\r\n250 2.0.0 OK\r\n")
    _, out = drive(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n" + rcpts + b"RCPT TO:<one@more.example>\r\nNOOP\r\n", config)
    assert out.endswith(b"452 4.5.3 Too many recipients\r\n421 4.7.0 Too many errors; closing connection\r\n")


def test_rset_before_ehlo_leaves_the_session_waiting_for_ehlo() -> None:
    # RSET is fine at any time, but it is no greeting: MAIL still needs EHLO or HELO first.
    _, out = drive(b"RSET\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n")
    assert out.split(b"\r\n")[1:-1] == [
        b"250 Reset OK",
        b"503 Send EHLO first",
        b"503 Send EHLO first",
    ]


@pytest.mark.parametrize("greeting", [None, Reply(554, "No service")])
def test_a_refused_chunk_is_read_and_dropped_never_handed_out_or_run(greeting: Reply | None) -> None:
    # Its octets are consumed (RFC 3030 §2), but they are no message content, and in a
    # session greeted with 554 they are not read as commands either ("NOOP" would get a
    # reply of its own).
    conn = make_server(ServerConfig(chunking=True), greet=greeting is None)
    if greeting is not None:
        conn.send(greeting)
    driver = Driver(conn)
    driver.feed((b"" if greeting else b"EHLO c\r\n") + b"BDAT 6 LAST\r\nNOOP\r\nQUIT\r\n")
    assert not any(isinstance(event, MessageData) for event in driver.events)
    replies = bytes(driver.output).split(b"\r\n")[:-1]
    # The BDAT's 503, then QUIT's 221: nothing answers the chunk's "NOOP".
    assert replies[-1].startswith(b"221 ") and replies[-2].startswith(b"503 ")
    assert not replies[-3].startswith(b"503 ")


@pytest.mark.parametrize("chunking", [False, True])
def test_a_message_of_exactly_the_size_limit_is_taken(chunking: bool) -> None:
    # RFC 1870: SIZE is the largest message the server takes, that one included.
    config = ServerConfig(chunking=True, max_message_size=65536)
    start = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n"
    for body, reply in [((b"x" * 62 + b"\r\n") * 1024, b"250 "), (b"x" + (b"x" * 62 + b"\r\n") * 1024, b"552 ")]:
        message = b"BDAT %d LAST\r\n" % len(body) + body if chunking else b"DATA\r\n" + body + b".\r\n"
        _, out = drive(start + message, config)
        assert out.rsplit(b"\r\n", 2)[-2].startswith(reply), (len(body), out[-80:])
