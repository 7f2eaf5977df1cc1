"""ClientConnection: the outstanding-command FIFO, what send() refuses, STARTTLS, 421, timeouts."""

from __future__ import annotations

from typing import cast

import pytest
from client_helpers import EHLO_ALL, ready, reply

from smtpcore import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    BareNewlinePolicy,
    Bdat,
    Capabilities,
    ClientConfig,
    ClientConnection,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Hello,
    LocalProtocolError,
    Mail,
    MailParams,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    RcptParams,
    RemoteProtocolError,
    Reply,
    Rset,
    StartTls,
    TlsHandshake,
)


def test_greeting_is_the_first_reply_and_pipelined_replies_pair_in_order() -> None:
    conn = ready()
    assert isinstance(conn.last_command, Hello)
    assert conn.last_command.verb == "EHLO"
    conn.send(Mail("a@x.org"))
    conn.send(Rcpt("b@y.org"))
    conn.send(Rcpt("c@y.org"))
    conn.send(Data())
    assert conn.data_to_send() == b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nRCPT TO:<c@y.org>\r\nDATA\r\n"
    assert [type(event).__name__ for event in conn.outstanding] == ["Mail", "Rcpt", "Rcpt", "Data"]
    conn.receive_data(b"250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n")
    seen = []
    while (event := conn.next_event()) is not PAUSED:
        assert isinstance(event, Reply)
        seen.append((event.code, type(conn.last_command).__name__))
    assert seen == [(250, "Mail"), (550, "Rcpt"), (250, "Rcpt"), (354, "Data")]
    assert conn.timeout.name == "data_block"
    conn.send(MessageData(b".x\r\n"))
    conn.send(EndOfMessage())
    assert conn.data_to_send() == b"..x\r\n.\r\n"
    assert conn.timeout.name == "data_end"
    assert conn.timeout.seconds == 600
    reply(conn, b"250 queued\r\n")
    conn.send(Quit())
    reply(conn, b"221 bye\r\n")
    assert conn.next_event() == ConnectionClosed(by_peer=False)
    assert conn.closed
    with pytest.raises(LocalProtocolError):
        conn.send(Noop())


def test_a_reply_with_nothing_outstanding_is_an_error_and_sticks() -> None:
    conn = ready()
    conn.receive_data(b"250 unsolicited\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.closed  # the session is over, not just this call
    with pytest.raises(LocalProtocolError):
        conn.send(Noop())
    # Even bytes left over after a reply count.
    conn = ClientConnection()
    conn.receive_data(b"220 hi\r\n250 extra\r\n")
    answer = conn.next_event()
    assert isinstance(answer, Reply)
    assert answer.code == 220
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_a_reply_before_its_command_is_an_error_even_when_nobody_asks_for_events() -> None:
    # A driver sends the next command as soon as the last reply is in, without asking
    # next_event() in between: the early bytes must not become that command's reply
    # (a "250" sent with the greeting would answer EHLO, or DATA).
    conn = ClientConnection()
    conn.receive_data(b"220 hi\r\n250 early\r\n")
    assert isinstance(conn.next_event(), Reply)
    with pytest.raises(RemoteProtocolError, match="before the command"):
        conn.send(Hello("client.example"))
    assert conn.data_to_send() == b""  # nothing was written
    # A 421 may come at any time: the next command's reply, it ends the session.
    conn = ClientConnection()
    conn.receive_data(b"220 hi\r\n421 shutting down\r\n")
    conn.next_event()
    conn.send(Hello("client.example"))
    reply = conn.next_event()
    assert isinstance(reply, Reply) and reply.code == 421
    assert isinstance(conn.next_event(), ConnectionClosed)


@pytest.mark.parametrize("then_closed", [False, True])
def test_a_421_on_an_idle_connection_is_returned_then_the_session_ends(then_closed: bool) -> None:
    # RFC 5321 §3.8: a server timing an idle client out says 421 with no command outstanding.
    conn = ready(b"250-mx\r\n250 ENHANCEDSTATUSCODES\r\n")
    for octet in b"421 4.4.2 mx Idle timeout\r\n":  # in any pieces
        assert conn.next_event() in (PAUSED, NEED_DATA)
        conn.receive_data(bytes([octet]))
    if then_closed:
        conn.receive_data(b"")
    reply = conn.next_event()
    assert isinstance(reply, Reply)
    assert (reply.code, reply.enhanced) == (421, "4.4.2")
    assert conn.next_event() == ConnectionClosed(by_peer=True)
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.send(Noop())


@pytest.mark.parametrize("early", [b"4", b"42", b"45"])
def test_a_partial_reply_before_a_command_is_still_an_error(early: bytes) -> None:
    # Only a whole "421" may go ahead of a command: a "4" could become any 4xx,
    # which the command would then take for its own reply (reply injection).
    conn = ready()
    conn.receive_data(early)
    with pytest.raises(RemoteProtocolError, match="before the command"):
        conn.send(Noop())
    assert conn.data_to_send() == b""


def test_an_idle_connection_closed_in_the_middle_of_a_421_is_an_error() -> None:
    conn = ready()
    conn.receive_data(b"421 4.4.2 mx Idle")
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a reply"):
        conn.next_event()


def test_peer_closing() -> None:
    conn = ready()
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(by_peer=True)
    conn = ready()
    conn.send(Noop())
    conn.receive_data(b"250 par")
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match=r"^the server closed the connection without replying to NOOP$"):
        conn.next_event()


def closed_by_server(conn: ClientConnection) -> str:
    """The error of a server that closes now, as the user reads it."""
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    return str(info.value)


def test_a_server_that_closes_mid_exchange_is_told_by_what_it_left_unanswered() -> None:
    # The error reaches a user as the reason a delivery failed: it names the
    # command the server walked out on, as the user sent it.
    closed = "the server closed the connection without"
    assert closed_by_server(ClientConnection()) == f"{closed} sending the greeting"
    conn = ready()
    for event in (Mail("a@x.org"), Rcpt("b@y.org"), Data()):
        conn.send(event)
    assert closed_by_server(conn) == f"{closed} replying to MAIL (and 2 commands after it)"
    conn = ready()
    for event in (Mail("a@x.org"), Rcpt("b@y.org"), Data()):
        conn.send(event)
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert [conn.next_event() for _ in range(3)] == [Reply(250, "ok"), Reply(250, "ok"), Reply(354, "go")]
    for content in (MessageData(b"hi\r\n"), EndOfMessage(), Quit()):
        conn.send(content)
    assert closed_by_server(conn) == f"{closed} replying to the end of the message (and 1 command after it)"
    conn = ClientConnection()
    reply(conn, b"220 hi\r\n")
    conn.send(Hello("me.example", verb="HELO"))
    assert closed_by_server(conn) == f"{closed} replying to HELO"
    conn = ready(b"250-mx\r\n250 AUTH LOGIN\r\n", allow_insecure_auth=True)
    conn.send(Auth("LOGIN"))
    reply(conn, b"334 VXNlcm5hbWU6\r\n")
    conn.send(AuthResponse(b"u"))
    assert closed_by_server(conn) == f"{closed} replying to an AUTH response"


def test_421_ends_the_session_after_the_reply() -> None:
    conn = ready()
    conn.send(Mail("a@x.org"))
    conn.send(Rcpt("b@y.org"))
    conn.receive_data(b"421 4.3.2 bye\r\n250 never read\r\n")
    answer = conn.next_event()
    assert isinstance(answer, Reply)
    assert answer.code == 421
    assert conn.next_event() == ConnectionClosed(by_peer=True)
    assert conn.outstanding == ()
    conn.receive_data(b"more")
    assert conn.next_event() == ConnectionClosed(by_peer=True)


def test_pipelining_rules() -> None:
    conn = ready(b"250 mx\r\n")
    conn.send(Mail("a@x.org"))
    with pytest.raises(LocalProtocolError, match="PIPELINING"):
        conn.send(Rcpt("b@y.org"))
    conn.send(Quit())  # QUIT may always end a group
    conn = ready()
    conn.send(Noop())
    with pytest.raises(LocalProtocolError, match="wait for the reply"):
        conn.send(Mail("a@x.org"))
    conn = ClientConnection()
    with pytest.raises(LocalProtocolError, match="greeting"):
        conn.send(Hello("c.example"))


def test_sequence_rules() -> None:
    conn = ClientConnection(ClientConfig())
    reply(conn, b"220 hi\r\n")
    for event in (Mail("a@x.org"), Rcpt("b@y.org"), Data(), Bdat(1), StartTls(), Auth("PLAIN")):
        with pytest.raises(LocalProtocolError, match="EHLO"):
            conn.send(event)
    with pytest.raises(LocalProtocolError, match="LHLO"):
        conn.send(Hello("c.example", "LHLO"))
    assert conn.data_to_send() == b""

    conn = ready()
    for event in (Rcpt("b@y.org"), Data(), Bdat(1)):
        with pytest.raises(LocalProtocolError, match="transaction"):
            conn.send(event)
    with pytest.raises(LocalProtocolError, match="DSN"):
        conn.send(Mail("a@x.org", MailParams(ret="FULL")))
    conn.send(Mail("a@x.org"))
    with pytest.raises(LocalProtocolError, match="already open"):
        conn.send(Mail("a@x.org"))
    with pytest.raises(LocalProtocolError, match="RCPT"):
        conn.send(Data())
    with pytest.raises(LocalProtocolError, match="DSN"):
        conn.send(Rcpt("b@y.org", RcptParams(notify=("NEVER",))))
    with pytest.raises(LocalProtocolError, match="STARTTLS inside"):
        conn.send(StartTls())
    conn.send(Rcpt("b@y.org"))
    conn.send(Bdat(2))
    with pytest.raises(LocalProtocolError, match="still to be sent"):
        conn.send(Rset())
    with pytest.raises(LocalProtocolError, match="only 2 left"):
        conn.send(MessageData(b"abc"))
    conn.send(MessageData(b"ab"))
    with pytest.raises(LocalProtocolError, match="DATA after DATA or BDAT"):
        conn.send(Data())
    with pytest.raises(LocalProtocolError, match="content started"):
        conn.send(Rcpt("c@y.org"))
    with pytest.raises(LocalProtocolError, match="EndOfMessage ends DATA"):
        conn.send(EndOfMessage())
    conn.send(Bdat(0, last=True))
    assert conn.data_to_send() == b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nBDAT 2\r\nabBDAT 0 LAST\r\n"


def test_data_and_bdat_do_not_mix_and_binarymime_needs_bdat() -> None:
    conn = ready()
    conn.send(Mail("a@x.org", MailParams(body="BINARYMIME")))
    conn.send(Rcpt("b@y.org"))
    with pytest.raises(LocalProtocolError, match="BINARYMIME"):
        conn.send(Data())
    conn = ready()
    conn.send(Mail("a@x.org"))
    conn.send(Rcpt("b@y.org"))
    conn.send(Data())
    conn.receive_data(b"250 ok\r\n250 ok\r\n451 not now\r\n")
    assert [cast(Reply, conn.next_event()).code for _ in range(3)] == [250, 250, 451]
    with pytest.raises(LocalProtocolError, match="BDAT after DATA"):
        conn.send(Bdat(1))
    with pytest.raises(LocalProtocolError, match="DATA after DATA"):
        conn.send(Data())
    with pytest.raises(LocalProtocolError, match="after DATA got 354"):
        conn.send(MessageData(b"x"))
    conn = ready(b"250 mx\r\n")
    conn.send(Mail("a@x.org"))
    reply(conn, b"250 ok\r\n")
    conn.send(Rcpt("b@y.org"))
    reply(conn, b"250 ok\r\n")
    with pytest.raises(LocalProtocolError, match="CHUNKING"):
        conn.send(Bdat(1))


def test_refused_mail_closes_the_transaction() -> None:
    conn = ready()
    conn.send(Mail("a@x.org"))
    conn.send(Rcpt("b@y.org"))
    conn.receive_data(b"550 no\r\n503 no\r\n")
    conn.next_event()
    conn.next_event()
    # The server has no transaction for a RCPT to join: it would answer 503.
    with pytest.raises(LocalProtocolError, match="needs an open transaction"):
        conn.send(Rcpt("c@y.org"))
    conn.send(Mail("a@x.org"))  # no RSET needed: the server has no transaction


def test_content_rules() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.send(MessageData(b"x"))
    with pytest.raises(LocalProtocolError):
        conn.send(EndOfMessage())
    with pytest.raises(LocalProtocolError):
        conn.send("MAIL FROM:<a@x.org>")  # type: ignore[arg-type]
    conn.send(Mail("a@x.org"))
    conn.send(Rcpt("b@y.org"))
    conn.send(Data())
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    for _ in range(3):
        conn.next_event()
    with pytest.raises(LocalProtocolError, match="still open"):
        conn.send(Rset())
    with pytest.raises(LocalProtocolError):
        conn.send(MessageData._unchecked(data="text"))
    conn.send(MessageData(memoryview(b"a\nb")))  # type: ignore[arg-type]  # accepted at run time; annotated bytes only
    conn.send(EndOfMessage())
    assert conn.data_to_send().endswith(b"DATA\r\na\r\nb\r\n.\r\n")


def test_reject_policy_abandons_the_connection_mid_content() -> None:
    conn = ready(bare_newlines=BareNewlinePolicy.REJECT)
    conn.send(Mail("a@x.org"))
    conn.send(Rcpt("b@y.org"))
    conn.send(Data())
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    for _ in range(3):
        conn.next_event()
    conn.send(MessageData(b"fine\r\n"))
    with pytest.raises(LocalProtocolError, match="bare"):
        conn.send(MessageData(b"bare\nLF"))
    with pytest.raises(LocalProtocolError, match="abandoned"):
        conn.send(EndOfMessage())
    assert not conn.data_to_send().endswith(b".\r\n")


def test_starttls_discards_everything_after_the_220() -> None:
    conn = ready()
    conn.send(StartTls())
    conn.receive_data(b"220 go\r\n250-injected\r\n250 AUTH PLAIN\r\n")
    answer = conn.next_event()
    assert isinstance(answer, Reply)
    assert answer.code == 220
    conn.receive_data(b"250 injected later\r\n")
    assert conn.timeout.name == "tls_handshake"
    assert conn.next_event() == TlsHandshake()
    assert conn.next_event() is PAUSED
    with pytest.raises(LocalProtocolError, match="handshake"):
        conn.send(Hello("c.example"))
    conn.tls_established()
    assert conn.tls_active
    assert conn.capabilities is None
    assert conn.next_event() is PAUSED  # nothing buffered survived
    with pytest.raises(LocalProtocolError, match="EHLO"):
        conn.send(Mail("a@x.org"))
    conn.send(Hello("c.example"))
    assert reply(conn, b"250-mx\r\n250 AUTH PLAIN\r\n").code == 250
    # cast: mypy keeps the "is None" narrowing from above across the calls that set it
    assert cast(Capabilities, conn.capabilities).auth_mechanisms == ("PLAIN",)
    with pytest.raises(LocalProtocolError, match="already active"):
        conn.send(StartTls())
    with pytest.raises(LocalProtocolError):
        conn.tls_established()


def test_reads_may_be_any_bytes_like_and_nothing_else() -> None:
    conn = ClientConnection()
    buffer = bytearray(b"220 mx ESMTP\r\n")
    conn.receive_data(memoryview(buffer))
    buffer[:3] = b"554"  # copied: the caller may read into the same buffer again
    assert isinstance(event := conn.next_event(), Reply) and event.code == 220
    with pytest.raises(LocalProtocolError, match="not str"):
        conn.receive_data("250 ok\r\n")  # type: ignore[arg-type]


def test_a_server_gone_before_the_tls_handshake_closes_the_connection() -> None:
    # Not PAUSED for ever: nothing will arrive, and no handshake can be done.
    for announced in (False, True):
        conn = ready()
        conn.send(StartTls())
        assert reply(conn, b"220 go\r\n").code == 220
        if announced:
            assert conn.next_event() == TlsHandshake()
        conn.receive_data(b"")
        assert conn.next_event() == ConnectionClosed(by_peer=True)
        assert conn.closed
        assert conn.next_event() == ConnectionClosed(by_peer=True)  # and says so again


def test_starttls_refused_changes_nothing() -> None:
    conn = ready()
    conn.send(StartTls())
    assert reply(conn, b"454 no\r\n").code == 454
    assert not conn.tls_active
    assert conn.capabilities is not None
    assert conn.capabilities.starttls


def test_auth_rules() -> None:
    conn = ready(b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n")
    with pytest.raises(LocalProtocolError, match="before TLS"):
        conn.send(Auth("PLAIN", b"\x00u\x00p"))
    conn = ready(b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n", allow_insecure_auth=True)
    with pytest.raises(LocalProtocolError, match="334"):
        conn.send(AuthResponse(b"x"))
    conn.send(Auth("LOGIN"))
    assert reply(conn, b"334 VXNlcm5hbWU6\r\n").text == ("VXNlcm5hbWU6",)
    with pytest.raises(LocalProtocolError, match="SASL"):
        conn.send(Noop())
    conn.send(AuthResponse(b"u"))
    reply(conn, b"334 UGFzc3dvcmQ6\r\n")
    conn.send(AuthResponse(b"p"))
    reply(conn, b"235 ok\r\n")
    assert conn.data_to_send() == b"AUTH LOGIN\r\ndQ==\r\ncA==\r\n"
    conn.send(Mail("a@x.org"))
    conn.receive_data(b"250 ok\r\n")
    conn.next_event()
    with pytest.raises(LocalProtocolError, match="AUTH inside"):
        conn.send(Auth("PLAIN"))
    conn = ClientConnection(ClientConfig(implicit_tls=True))
    reply(conn, b"220 hi\r\n")
    conn.send(Hello("c.example"))
    reply(conn, b"250 mx\r\n")
    conn.send(Auth("PLAIN", b"\x00u\x00p"))


def test_helo_session_has_no_extensions() -> None:
    conn = ClientConnection()
    reply(conn, b"220 hi\r\n")
    conn.send(Hello("c.example"))
    reply(conn, b"502 no\r\n")
    assert conn.capabilities is None
    conn.send(Hello("c.example", "HELO"))
    reply(conn, b"250 mx\r\n")
    # cast: mypy keeps the "is None" narrowing from above across the calls that set it
    assert cast(Capabilities, conn.capabilities).keywords == frozenset()
    with pytest.raises(LocalProtocolError, match="8BITMIME"):
        conn.send(Mail("a@x.org", MailParams(body="8BITMIME")))


def test_lmtp_end_of_data_gets_one_reply_per_accepted_recipient() -> None:
    conn = ready(b"250-lmtp\r\n250-PIPELINING\r\n250 CHUNKING\r\n", lmtp=True)
    conn.send(Mail("a@x.org"))
    conn.send(Rcpt("b@y.org"))
    conn.send(Rcpt("c@y.org"))
    conn.send(Rcpt("d@y.org"))
    conn.send(Bdat(1, last=True))  # pipelined before the RCPT replies are in
    conn.send(MessageData(b"x"))
    conn.receive_data(b"250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n250 b\r\n452 d\r\n")
    codes = []
    while (event := conn.next_event()) is not PAUSED:
        assert isinstance(event, Reply)
        codes.append(event.code)
    assert codes == [250, 250, 550, 250, 250, 452]
    conn.send(Mail("a@x.org"))
    conn.send(Rcpt("b@y.org"))
    conn.send(Bdat(0, last=True))
    conn.receive_data(b"250 ok\r\n550 no\r\n554 no valid recipients\r\n")
    assert [cast(Reply, conn.next_event()).code for _ in range(3)] == [250, 550, 554]
    assert conn.next_event() is PAUSED


def test_timeouts_follow_rfc_5321() -> None:
    conn = ClientConnection(ClientConfig(timeouts={"mail": 7}))
    assert (conn.timeout.name, conn.timeout.seconds, conn.timeout.rfc) == ("greeting", 300, "RFC 5321 §4.5.3.2.1")
    reply(conn, b"220 hi\r\n")
    assert conn.timeout.name == "other"
    conn.send(Hello("c.example"))
    assert conn.timeout.name == "hello"
    reply(conn, EHLO_ALL)
    conn.send(Mail("a@x.org"))
    assert (conn.timeout.name, conn.timeout.seconds) == ("mail", 7)
    conn.send(Rcpt("b@y.org"))
    conn.receive_data(b"250 ok\r\n")
    conn.next_event()
    assert (conn.timeout.name, conn.timeout.seconds) == ("rcpt", 300)
    conn.send(Data())
    conn.receive_data(b"250 ok\r\n")
    conn.next_event()
    assert (conn.timeout.name, conn.timeout.seconds) == ("data", 120)
    conn.receive_data(b"354 go\r\n")
    conn.next_event()
    assert (conn.timeout.name, conn.timeout.seconds) == ("data_block", 180)
    conn.send(EndOfMessage())
    assert (conn.timeout.name, conn.timeout.seconds) == ("data_end", 600)
    conn.receive_data(b"250 ok\r\n")
    conn.next_event()
    conn.send(Mail("a@x.org"))
    conn.send(Rcpt("b@y.org"))
    conn.send(Bdat(0))
    conn.receive_data(b"250 ok\r\n250 ok\r\n")
    conn.next_event()
    conn.next_event()
    assert conn.timeout.name == "data_block"
    conn.send(Bdat(0, last=True))
    conn.receive_data(b"250 ok\r\n")
    conn.next_event()
    assert conn.timeout.name == "data_end"
    conn.receive_data(b"250 ok\r\n")
    conn.next_event()
    conn.send(Noop())
    assert conn.timeout.name == "other"


def test_replies_received_moves_on_whole_replies_only() -> None:
    """The adapter's cue that a new wait begins: never a partial reply, every LMTP recipient's reply."""
    conn = ClientConnection()
    assert conn.replies_received == 0
    for byte in b"220-mx\r\n220 ESMTP":
        conn.receive_data(bytes([byte]))
        assert conn.next_event() is NEED_DATA
    assert conn.replies_received == 0
    reply(conn, b"\r\n")
    assert conn.replies_received == 1
    conn = ready(b"250-lmtp\r\n250 PIPELINING\r\n", lmtp=True)
    assert conn.replies_received == 2
    conn.send(Mail("a@x.org"))
    conn.send(Rcpt("b@y.org"))
    conn.send(Rcpt("c@y.org"))
    conn.send(Data())
    conn.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    while conn.next_event() is not PAUSED:
        pass
    assert conn.replies_received == 6
    conn.send(EndOfMessage())
    conn.receive_data(b"250 b\r\n452 c")
    assert isinstance(conn.next_event(), Reply)
    assert conn.next_event() is NEED_DATA
    assert conn.replies_received == 7
    reply(conn, b"\r\n")
    assert conn.replies_received == 8


def test_config_checks() -> None:
    for options in (
        {"chunk_size": 0},
        {"max_reply_line": 100},
        {"max_reply_size": 600, "max_reply_line": 1000},
        {"max_reply_lines": 0},
        {"bare_newlines": BareNewlinePolicy.ACCEPT},
        {"timeouts": {"greting": 5}},
        {"timeouts": {"mail": -1}},
        {"auth_mechanisms": ("plain",)},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each message differs
            ClientConfig(**options)


def test_client_guide_examples_run() -> None:
    """docs/client.md's examples, in order and in one namespace (later ones reuse `talk`)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "client.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 5
    namespace = {"__name__": "docs_example"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"client.md[{index}]", "exec"), namespace)
