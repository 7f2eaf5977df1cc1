"""ServerConnection calls for adapters: end_session(), receiving_content, idle, and the PROXY protocol."""

from __future__ import annotations

import pytest

from smtpcore import (
    NEED_DATA,
    Auth,
    AuthPolicy,
    Bdat,
    ConnectionClosed,
    Data,
    Expn,
    Hello,
    Help,
    LocalProtocolError,
    Mail,
    MessageData,
    Noop,
    ProxyHeader,
    Quit,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Rset,
    ServerConfig,
    ServerConnection,
    StartTls,
    TlsHandshake,
    TlsPolicy,
    Vrfy,
)

SHUTDOWN = Reply(421, "Server shutting down", "4.3.2")


def greeted(config: ServerConfig | None = None) -> ServerConnection:
    conn = ServerConnection(config or ServerConfig())
    conn.accept()
    conn.data_to_send()
    return conn


def answer_all(conn: ServerConnection) -> list[object]:
    events: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
        if conn.reply_due:
            conn.accept()
    return events


def test_end_session_without_enhanced_codes_before_ehlo() -> None:
    conn = greeted()
    conn.end_session(SHUTDOWN)
    assert conn.data_to_send() == b"421 Server shutting down\r\n"
    assert conn.next_event() == ConnectionClosed(by_peer=False)
    conn.end_session(SHUTDOWN)  # already closed: nothing more
    assert conn.data_to_send() == b""


def test_end_session_mid_message_keeps_earlier_replies_and_drops_the_message() -> None:
    conn = greeted()
    conn.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\npart")
    events = answer_all(conn)
    assert isinstance(events[-1], MessageData)
    assert conn.receiving_content
    conn.end_session(SHUTDOWN)
    out = conn.data_to_send()
    assert out.startswith(b"250-")
    assert out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n421 4.3.2 Server shutting down\r\n")
    assert not conn.receiving_content
    conn.receive_data(b"more\r\n.\r\n")
    assert conn.next_event() == ConnectionClosed(by_peer=False)


def test_end_session_while_a_reply_is_due() -> None:
    conn = greeted()
    conn.receive_data(b"EHLO c.example\r\n")
    conn.next_event()
    assert conn.reply_due
    conn.end_session(SHUTDOWN)
    assert not conn.reply_due
    assert conn.data_to_send() == b"421 Server shutting down\r\n"


@pytest.mark.parametrize("reply", [Reply(221, "Bye"), Reply(554, "No"), "421 text"])
def test_end_session_takes_only_a_421(reply: object) -> None:
    with pytest.raises(LocalProtocolError, match="421"):
        greeted().end_session(reply)  # type: ignore[arg-type]


def test_receiving_content_covers_data_and_bdat_chunks_only() -> None:
    conn = greeted()
    conn.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    answer_all(conn)
    assert not conn.receiving_content
    conn.receive_data(b"BDAT 10\r\n12345")
    answer_all(conn)
    assert conn.receiving_content
    conn.receive_data(b"67890")
    answer_all(conn)
    assert not conn.receiving_content  # between chunks: a command is awaited
    conn.receive_data(b"BDAT 0 LAST\r\n")
    answer_all(conn)
    assert not conn.receiving_content


def test_idle_while_a_command_is_awaited_with_nothing_under_way() -> None:
    # What a graceful shutdown may cut off at once: nothing a client started is lost.
    conn = greeted(ServerConfig(tls=TlsPolicy.OPTIONAL, auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True))
    seen: list[tuple[str, bool]] = [("greeted", conn.idle)]
    for line in [
        b"EHLO c.example\r\n",
        b"AUTH LOGIN\r\n",  # a SASL exchange: 334 sent, its answer awaited
        b"*\r\n",  # cancelled
        b"MAIL FROM:<a@b.example>\r\n",
        b"RCPT TO:<c@d.example>\r\n",
        b"BDAT 3\r\nabc",  # between chunks: the transaction is still open
        b"BDAT 0 LAST\r\n",
        b"DATA\r\n",  # refused (no transaction): a bad sequence leaves it idle
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\npart",  # in the content
        b"\r\n.\r\n",
    ]:
        conn.receive_data(line)
        answer_all(conn)
        seen.append((line.split(b" ")[0].split(b"\r")[0].decode(), conn.idle))
    conn.receive_data(b"STARTTLS\r\n")
    assert isinstance(conn.next_event(), StartTls)
    conn.accept()
    assert isinstance(conn.next_event(), TlsHandshake)
    seen.append(("STARTTLS", conn.idle))  # the handshake is awaited
    conn.tls_established()
    seen.append(("after TLS", conn.idle))
    assert seen == [
        ("greeted", True),
        ("EHLO", True),
        ("AUTH", False),
        ("*", True),
        ("MAIL", False),
        ("RCPT", False),
        ("BDAT", False),
        ("BDAT", True),
        ("DATA", True),
        ("MAIL", False),
        ("", True),
        ("STARTTLS", False),
        ("after TLS", True),
    ]
    conn.end_session(SHUTDOWN)
    assert not conn.idle  # closed: nothing is awaited


def test_not_idle_while_a_reply_is_owed() -> None:
    # A command the application is still deciding on is under way, even one that opens nothing.
    conn = greeted(ServerConfig(vrfy_enabled=True))
    for line, event_type in [(b"EHLO c.example\r\n", Hello), (b"VRFY ann\r\n", Vrfy)]:
        conn.receive_data(line)
        assert isinstance(conn.next_event(), event_type)
        assert conn.reply_due and not conn.idle
        conn.accept()
        assert conn.idle
    conn.receive_data(b"NOOP\r\n")  # answered by the core: nothing is owed
    assert isinstance(conn.next_event(), Noop) and conn.idle
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\n")
    assert isinstance(conn.next_event(), Mail)
    assert not conn.idle
    conn.send(Reply(451, "Try again later", "4.3.0"))  # refused: no transaction after all
    assert conn.idle


def test_idle_after_a_554_greeting_but_not_before_the_greeting_or_the_proxy_header() -> None:
    refused = ServerConnection(ServerConfig())
    refused.send(Reply(554, "No service"))
    assert refused.idle  # only QUIT is accepted, and nothing can be under way
    behind_proxy = ServerConnection(ServerConfig(proxy_protocol=True))
    assert not behind_proxy.idle  # the PROXY header first: the adapter knows that wait apart
    assert not ServerConnection(ServerConfig()).idle  # the greeting is owed


def test_recipient_count_follows_the_accepted_recipients() -> None:
    conn = greeted()
    conn.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n")
    answer_all(conn)
    assert conn.recipient_count == 0
    for address, reply in ((b"x@d.example", None), (b"no@d.example", Reply(550, "No such user", "5.1.1")),
                           (b"y@d.example", Reply(251, "User not local; will forward", "2.1.5"))):  # fmt: skip
        conn.receive_data(b"RCPT TO:<" + address + b">\r\n")
        assert isinstance(conn.next_event(), Rcpt)
        conn.send(reply) if reply is not None else conn.accept()
    assert conn.recipient_count == len(conn.recipients) == 2  # the refused one is not counted
    assert [rcpt.recipient for rcpt in conn.recipients] == ["x@d.example", "y@d.example"]
    conn.receive_data(b"RSET\r\n")
    answer_all(conn)
    assert conn.recipient_count == 0


def test_data_to_send_size_is_what_data_to_send_would_return() -> None:
    conn = greeted()
    assert conn.data_to_send_size == 0
    conn.receive_data(b"EHLO c.example\r\nNOOP\r\n")
    answer_all(conn)
    queued = conn.data_to_send_size
    out = conn.data_to_send()
    assert queued == len(out) > 0 and out.startswith(b"250-")
    assert conn.data_to_send_size == 0


# --- the PROXY protocol ---------------------------------------------------------------------------


def test_proxy_header_comes_before_the_greeting() -> None:
    conn = ServerConnection(ServerConfig(proxy_protocol=True))
    assert not conn.reply_due  # no greeting before the header
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 25\r\n")
    event = conn.next_event()
    assert event == ProxyHeader(("192.0.2.1", 40000), ("198.51.100.2", 25), 1)
    assert conn.proxy is not None
    assert conn.proxy.source == ("192.0.2.1", 40000)
    assert conn.reply_due
    conn.accept()
    assert conn.data_to_send().startswith(b"220 ")
    conn.receive_data(b"EHLO client.example\r\n")
    assert isinstance(conn.next_event(), Hello)


@pytest.mark.parametrize("early", [b"EH", b"EHLO too.early\r\n"])
def test_greeting_straight_after_the_header_still_refuses_an_early_talker(early: bytes) -> None:
    # An application that greets as soon as the ProxyHeader event comes, without
    # asking next_event() again, must not let bytes sent before the 220 through.
    conn = ServerConnection(ServerConfig(proxy_protocol=True))
    conn.receive_data(b"PROXY UNKNOWN\r\n" + early)
    assert conn.next_event() == ProxyHeader(None, None, 1)
    conn.accept()
    # (No enhanced code: none is sent before EHLO.)
    assert conn.data_to_send() == b"554 Protocol violation: client sent data before the greeting\r\n"
    with pytest.raises(RemoteProtocolError, match="before the greeting"):
        conn.next_event()
    # With reject_early_talkers off, the bytes are the first command's.
    conn = ServerConnection(ServerConfig(proxy_protocol=True, reject_early_talkers=False))
    conn.receive_data(b"PROXY UNKNOWN\r\nEHLO client.example\r\n")
    conn.next_event()
    conn.accept()
    assert conn.data_to_send().startswith(b"220 ")
    assert isinstance(conn.next_event(), Hello)


def test_bytes_fed_before_the_greeting_are_early_talk() -> None:
    conn = ServerConnection()
    conn.receive_data(b"EHLO too.early\r\n")
    conn.accept()
    assert conn.data_to_send().startswith(b"554 ")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_talking_right_after_the_header_is_early_talk() -> None:
    conn = ServerConnection(ServerConfig(proxy_protocol=True))
    conn.receive_data(b"PROXY UNKNOWN\r\nEHLO too.early\r\n")
    assert conn.next_event() == ProxyHeader(None, None, 1)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.reply is not None
    assert info.value.reply.code == 554


def test_a_connection_without_the_header_is_closed_without_a_word() -> None:
    conn = ServerConnection(ServerConfig(proxy_protocol=True))
    conn.receive_data(b"EHLO direct.client\r\n")
    with pytest.raises(RemoteProtocolError, match="PROXY"):
        conn.next_event()
    assert conn.data_to_send() == b""
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_peer_closing_before_the_header() -> None:
    conn = ServerConnection(ServerConfig(proxy_protocol=True))
    conn.receive_data(b"PROXY TCP4 ")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(by_peer=True)


# --- the per-command shortcuts and the tables they rest on ----------------------------------------


def test_the_state_namespace_is_the_enum() -> None:
    from smtpcore._server import S, State

    names = [name for name in vars(S) if not name.startswith("_")]
    assert names == list(State.__members__)
    assert all(getattr(S, name) is State[name] for name in names)
    assert {state: state.name for state in State}[State.READY] == "READY"  # the identity hash works as a key


def test_one_reply_defaults_are_what_send_would_write() -> None:
    from smtpcore import EndOfMessage
    from smtpcore._server import (
        _DEFAULT_REPLIES,
        _LMTP_ONE_REPLY,
        _POSITIVE,
        _SMTP_ONE_REPLY,
        _wire,
        _with_enhanced_code,
    )

    assert _SMTP_ONE_REPLY.keys() == _DEFAULT_REPLIES.keys()
    assert _LMTP_ONE_REPLY.keys() == _DEFAULT_REPLIES.keys() - {EndOfMessage}
    for kind, (accepted, plain, enhanced) in _SMTP_ONE_REPLY.items():
        reply = _DEFAULT_REPLIES[kind]
        # send() would accept this reply for this kind, and it does not close.
        assert accepted == (reply.code < 400)
        assert reply.code in _POSITIVE[kind] or not accepted
        assert reply.code != 421
        assert plain == _wire(_with_enhanced_code(reply, False), False)
        assert enhanced == _wire(_with_enhanced_code(reply, True), True)


def test_http_verbs_are_not_smtp_verbs() -> None:
    # The server looks for them only among the verbs it does not know.
    from smtpcore._commands import _NON_SMTP_VERBS, PARSERS

    assert not _NON_SMTP_VERBS & PARSERS.keys()


def test_replies_made_once_per_server_still_follow_each_connection() -> None:
    # The greeting and the EHLO reply are remembered by server name and
    # extension lines: connections of different servers, interleaved, and the
    # same connection before and after TLS each get their own.
    def ehlo(conn: ServerConnection, reply: Reply | None = None) -> bytes:
        conn.receive_data(b"EHLO c.example\r\n")
        assert isinstance(conn.next_event(), Hello)
        conn.send(reply) if reply else conn.accept()
        return conn.data_to_send()

    plain = greeted(ServerConfig(hostname="mx.example"))
    lmtp = ServerConnection(ServerConfig(hostname="mx.example", lmtp=True))
    lmtp.accept()
    assert lmtp.data_to_send() == b"220 mx.example LMTP smtpcore\r\n"
    tls = greeted(ServerConfig(hostname="mx.example", tls=TlsPolicy.OPTIONAL, dsn=True))
    assert ehlo(plain).startswith(b"250-mx.example\r\n250-PIPELINING\r\n")
    first = ehlo(tls, Reply(250, "mx.example greets c.example"))
    assert first.startswith(b"250-mx.example greets c.example\r\n") and b"250-DSN\r\n" in first
    assert b"STARTTLS" in first and b"DSN" not in ehlo(greeted(ServerConfig(hostname="mx.example")))
    tls.receive_data(b"STARTTLS\r\n")
    tls.next_event()
    tls.accept()
    tls.next_event()  # TlsHandshake
    tls.tls_established()
    assert tls.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"
    again = ehlo(tls, Reply(250, "mx.example greets c.example"))
    assert b"STARTTLS" not in again and again.startswith(b"250-mx.example greets c.example\r\n")
    assert tls.extensions == {line[4:].split(b" ")[0].decode() for line in again.splitlines()[1:]}
    assert "STARTTLS" not in tls.extensions and "DSN" in tls.extensions
    assert "DSN" not in plain.extensions


@pytest.mark.parametrize("tls", [TlsPolicy.OFF, TlsPolicy.OPTIONAL])
@pytest.mark.parametrize("auth", [AuthPolicy.OFF, AuthPolicy.OPTIONAL])
def test_policy_check_is_skipped_only_where_it_finds_nothing(tls: TlsPolicy, auth: AuthPolicy) -> None:
    # _command skips _policy_refusal for kinds outside _POLICED unless TLS or
    # AUTH is REQUIRED: in every state, it would have answered None for them.
    from smtpcore._server import _POLICED

    events = [Hello("c.example"), Mail("a@b.example"), Rcpt("c@d.example"), Data(), Rset(), Noop(), Quit()]
    events += [Help(), Vrfy("x"), Expn("y"), StartTls(), Auth("PLAIN"), Bdat(1)]
    config = ServerConfig(tls=tls, auth=auth, allow_insecure_auth=True)
    conn = greeted(config)
    for line in [b"", b"EHLO c\r\n", b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<d@e.f>\r\n"]:
        conn.receive_data(line)
        answer_all(conn)
        assert not conn._restricted
        for event in events:
            if type(event) not in _POLICED:
                assert conn._policy_refusal(event) is None, (conn.state, event)


def test_receive_data_copies_a_view_so_the_caller_may_read_into_its_buffer_again() -> None:
    # asyncio's adapter hands the core a memoryview of one buffer every connection reads into.
    buffer = bytearray(96)
    conn = greeted()
    line = b"EHLO one.example\r\nMAIL FROM:<a@one.example>\r\nRCPT TO:<b@two.example>\r\nDATA"
    buffer[: len(line)] = line
    conn.receive_data(memoryview(buffer)[: len(line)])
    buffer[:] = b"\0" * 96  # the next read lands
    events = answer_all(conn)
    assert [type(event) for event in events] == [Hello, Mail, Rcpt]
    rest = b"\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
    conn.receive_data(memoryview(rest))
    assert conn.bytes_received == len(line) + len(rest)
    events = answer_all(conn)
    assert events[0] == Data()
    assert b"".join(event.data for event in events if isinstance(event, MessageData)) == b"Subject: x\r\n\r\nhi\r\n"


def test_a_reply_with_none_due_says_what_to_do() -> None:
    # With the PROXY protocol the greeting waits for the header: the documented loop's first
    # accept() must come after the ProxyHeader event, and the error says so.
    with pytest.raises(LocalProtocolError, match="after the ProxyHeader event"):
        ServerConnection(ServerConfig(proxy_protocol=True)).accept()
    conn = ServerConnection()
    conn.accept()
    with pytest.raises(LocalProtocolError, match="call next_event"):
        conn.send(Reply(250, "OK"))


def test_a_positive_ehlo_reply_of_several_lines_is_refused_not_cut() -> None:
    # The core puts the extension lines after the application's first line: the others were
    # dropped without a word (and as extension lines a client would have misread them).
    conn = ServerConnection()
    conn.accept()
    conn.receive_data(b"EHLO c.example\r\n")
    assert isinstance(conn.next_event(), Hello)
    with pytest.raises(LocalProtocolError, match="one line"):
        conn.send(Reply(250, ["mx.example.com greets you", "second line"]))
    conn.send(Reply(550, ["not from you", "go away"]))  # a refusal may have several
    assert conn.data_to_send().endswith(b"550-not from you\r\n550 go away\r\n")


def test_an_applications_220_to_starttls_gets_an_enhanced_code_like_any_reply() -> None:
    # RFC 2034 §3 exempts only the greeting and the reply to EHLO; Postfix says "220 2.0.0".
    conn = greeted(ServerConfig(hostname="mx.example", tls=TlsPolicy.OPTIONAL))
    conn.data_to_send()
    conn.receive_data(b"EHLO c.example\r\n")
    answer_all(conn)
    conn.receive_data(b"STARTTLS\r\n")
    assert isinstance(conn.next_event(), StartTls)
    conn.send(Reply(220, "go ahead"))
    conn.next_event()  # TlsHandshake
    conn.tls_established()
    assert conn.data_to_send().endswith(b"\r\n220 2.0.0 go ahead\r\n")
    # Before EHLO offered enhanced codes (after HELO) the same reply has none.
    helo = greeted(ServerConfig(hostname="mx.example", tls=TlsPolicy.OPTIONAL))
    helo.receive_data(b"HELO c.example\r\n")
    answer_all(helo)
    helo.receive_data(b"STARTTLS\r\n")
    assert isinstance(helo.next_event(), StartTls)
    helo.send(Reply(220, "go ahead"))
    helo.next_event()
    helo.tls_established()
    assert helo.data_to_send().endswith(b"\r\n220 go ahead\r\n")
