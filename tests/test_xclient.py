"""XCLIENT (Postfix's XCLIENT_README): a trusted proxy names the client it speaks for; and
XFORWARD (XFORWARD_README), its sibling for logging, at the end.

The server core offers and parses it (``ServerConfig(xclient=True)``) and starts
the session over when the application accepts it; the client core writes it,
xtext-encoded, and forgets the server's extensions at the new greeting; the
driver sends it from ``ClientConfig(xclient=...)``.  The adapters and the real
peers (swaks, Postfix's smtpd) are in test_peers.py and test_adapters_server.py.
"""

from __future__ import annotations

import ipaddress

import pytest
from client_helpers import PairResult, ServerPolicy, byte_split, pair, ready, reply, run_client_transcript
from helpers import drive, make_server
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore import (
    PAUSED,
    AuthCredentials,
    AuthPolicy,
    ClientConfig,
    ClientConnection,
    ClientDriver,
    CommandRejected,
    Credentials,
    Envelope,
    Event,
    Hello,
    LocalProtocolError,
    Mail,
    Reply,
    ServerConfig,
    ServerConnection,
    SMTPTransientError,
    State,
    TlsPolicy,
    XClient,
    XForward,
)
from smtpcore._commands import Context, Refusal, parse_xclient, parse_xforward
from smtpcore._writers import split_xforward, write_command
from smtpcore._xclient import XClientError, canonical_forward_value, canonical_value

CONFIG = ServerConfig(hostname="mx.example.com", xclient=True)
GREETING = b"220 mx.example.com ESMTP smtpcore\r\n"
EHLO = b"EHLO proxy.example\r\n"
REFUSED = Reply(550, "Insufficient authorization", "5.7.0")


def trusting(conn: ServerConnection, event: Event) -> None:
    conn.accept()


def distrusting(conn: ServerConnection, event: Event) -> None:
    conn.send(REFUSED) if isinstance(event, XClient) else conn.accept()


def replies(output: bytes) -> list[bytes]:
    """The one-line replies after the greeting (the EHLO replies, of several lines, left out)."""
    lines, in_ehlo = [], False
    for line in output.split(b"\r\n")[1:-1]:
        if not in_ehlo and line[3:4] != b"-":
            lines.append(line)
        in_ehlo = line[3:4] == b"-"
    return lines


# --- the server -------------------------------------------------------------------------------------


def test_not_offered_xclient_is_an_unknown_command() -> None:
    events, out = drive(EHLO + b"XCLIENT ADDR=192.0.2.7\r\n", ServerConfig())
    assert b"XCLIENT" not in out.split(b"\r\n500")[0]
    assert replies(out)[-1] == b"500 5.5.1 Command unrecognized"
    assert isinstance(events[-1], CommandRejected)


def test_offered_with_every_attribute_in_the_ehlo_reply() -> None:
    _, out = drive(EHLO, CONFIG)
    assert b"250 XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\r\n" in out
    _, lmtp = drive(b"LHLO proxy.example\r\n", ServerConfig(lmtp=True, xclient=True))
    assert b"XCLIENT NAME ADDR" in lmtp


def test_accepted_the_session_starts_over_with_a_greeting() -> None:
    conn = make_server(CONFIG)
    events, out = drive(
        EHLO + b"XCLIENT ADDR=192.0.2.7 NAME=mail.example.org\r\nMAIL FROM:<a@example.org>\r\n", conn=conn
    )
    # The greeting again, without an enhanced code though ENHANCEDSTATUSCODES was on
    # (RFC 2034 exempts the greeting); then the client must say EHLO again.
    assert replies(out) == [b"220 mx.example.com ESMTP smtpcore", b"503 Send EHLO first"]
    assert events[1] == XClient(addr="192.0.2.7", name="mail.example.org")
    assert conn.hello is None and conn.state is State.CONNECTED
    assert conn.xclient == XClient(addr="192.0.2.7", name="mail.example.org")
    _, out = drive(b"EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n", conn=conn)
    assert replies(out)[-1] == b"250 2.1.0 Sender OK"
    assert conn.hello == Hello("client.example.org")


def test_refused_nothing_changes_and_it_counts_as_an_error() -> None:
    conn = make_server(CONFIG)
    _, out = drive(EHLO + b"XCLIENT ADDR=192.0.2.7\r\nMAIL FROM:<a@example.org>\r\n", conn=conn, policy=distrusting)
    assert replies(out) == [b"550 5.7.0 Insufficient authorization", b"250 2.1.0 Sender OK"]
    assert conn.xclient is None and conn.hello == Hello("proxy.example")
    assert conn.error_count == 1


def test_the_accepting_reply_is_the_greeting_code() -> None:
    conn = make_server(CONFIG)
    drive(
        EHLO + b"XCLIENT NAME=a.example\r\n",
        conn=conn,
        policy=lambda c, e: None if isinstance(e, XClient) else c.accept(),
    )
    with pytest.raises(LocalProtocolError, match="250 is not a reply to XClient: use 220"):
        conn.send(Reply(250, "OK"))
    conn.send(Reply(220, "mx.example.com ready"))
    assert conn.data_to_send() == b"220 mx.example.com ready\r\n"


@pytest.mark.parametrize(
    "transaction",
    [b"MAIL FROM:<a@example.org>\r\n", b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"],
)
def test_not_inside_a_mail_transaction(transaction: bytes) -> None:
    conn = make_server(CONFIG)
    _, out = drive(EHLO + transaction + b"XCLIENT ADDR=192.0.2.7\r\nRSET\r\nXCLIENT ADDR=192.0.2.7\r\n", conn=conn)
    assert replies(out)[-3:] == [
        b"503 5.5.1 Mail transaction in progress; send RSET first",
        b"250 2.0.0 Reset OK",
        b"220 mx.example.com ESMTP smtpcore",
    ]


def test_between_bdat_chunks_it_is_inside_the_transaction() -> None:
    _, out = drive(
        EHLO + b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 1\r\nxXCLIENT NAME=a.example\r\n", CONFIG
    )
    assert replies(out)[-1] == b"503 5.5.1 Mail transaction in progress; send RSET first"


def test_before_any_ehlo_too() -> None:
    conn = make_server(CONFIG)
    _, out = drive(b"XCLIENT ADDR=192.0.2.7\r\n", conn=conn)
    assert out == GREETING * 2 and conn.xclient == XClient(addr="192.0.2.7")


@pytest.mark.parametrize(
    ("argument", "reply"),
    [
        (b"", b"501 5.5.4 Syntax: XCLIENT attribute=value ..."),
        (b" ", b"501 5.5.4 Syntax: XCLIENT attribute=value ..."),
        (b" ADDR", b"501 5.5.4 Syntax: XCLIENT attribute=value ..."),
        (b" FOO=1", b"501 5.5.4 Bad XCLIENT attribute name: FOO"),
        (b" ADDR=192.0.2.7 REVERSE_NAME=x.example", b"501 5.5.4 Bad XCLIENT attribute name: REVERSE_NAME"),
        (b" ADDR=", b"501 5.5.4 Bad XCLIENT value: ADDR must be a non-empty value without control characters"),
        (
            b" ADDR=192.0.2",
            b"501 5.5.4 Bad XCLIENT value: ADDR must be an IP address (IPV6: before an IPv6 one), not '192.0.2'",
        ),
        (
            b" ADDR=IPV6:192.0.2.7",
            b"501 5.5.4 Bad XCLIENT value: ADDR must be an IP address (IPV6: before an IPv6 one), not 'IPV6:192.0.2.7'",
        ),
        (
            b" ADDR=IPV6:::1%25",
            b"501 5.5.4 Bad XCLIENT value: ADDR must be an IP address (IPV6: before an IPv6 one), not 'IPV6:::1%25'",
        ),
        (b" PORT=65536", b"501 5.5.4 Bad XCLIENT value: PORT must be a port number from 0 to 65535, not '65536'"),
        (b" DESTPORT=-1", b"501 5.5.4 Bad XCLIENT value: DESTPORT must be a port number from 0 to 65535, not '-1'"),
        (b" PROTO=LMTP", b"501 5.5.4 Bad XCLIENT value: PROTO must be SMTP or ESMTP, not 'LMTP'"),
        (
            b" NAME=192.0.2.7.",
            b"501 5.5.4 Bad XCLIENT value: NAME must be a host name, [UNAVAILABLE] or [TEMPUNAVAIL], not '192.0.2.7.'",
        ),
        (
            b" NAME=[192.0.2.7]",
            b"501 5.5.4 Bad XCLIENT value: NAME must be a host name, [UNAVAILABLE] or [TEMPUNAVAIL], not '[192.0.2.7]'",
        ),
        (
            b" PORT=[TEMPUNAVAIL]",
            b"501 5.5.4 Bad XCLIENT value: [TEMPUNAVAIL] is for NAME only; PORT may be [UNAVAILABLE]",
        ),
        (
            b" LOGIN=[tempunavail]",
            b"501 5.5.4 Bad XCLIENT value: [TEMPUNAVAIL] is for NAME only; LOGIN may be [UNAVAILABLE]",
        ),
    ],
)
def test_malformed_commands_get_501_and_change_nothing(argument: bytes, reply: bytes) -> None:
    conn = make_server(CONFIG)
    events, out = drive(EHLO + b"XCLIENT" + argument + b"\r\n", conn=conn)
    assert replies(out) == [reply]
    assert isinstance(events[-1], CommandRejected) and conn.xclient is None and conn.state is State.READY


def test_a_line_over_512_octets_is_too_long() -> None:
    _, out = drive(EHLO + b"XCLIENT LOGIN=" + b"u" * 500 + b"\r\n", CONFIG)
    assert replies(out) == [b"500 5.5.2 Line too long"]


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("addr=192.0.2.7 port=25 Name=MAIL.example.org", XClient(addr="192.0.2.7", port="25", name="MAIL.example.org")),
        ("ADDR=IPV6:2001:DB8:0::7", XClient(addr="2001:db8::7")),
        ("ADDR=ipv6:::ffff:192.0.2.7", XClient(addr="::ffff:c000:207")),
        ("DESTADDR=198.51.100.1 DESTPORT=00587", XClient(destaddr="198.51.100.1", destport="587")),
        (
            "NAME=[tempunavail] ADDR=[Unavailable] PORT=[UNAVAILABLE]",
            XClient(name="[TEMPUNAVAIL]", addr="[UNAVAILABLE]", port="[UNAVAILABLE]"),
        ),
        ("NAME=desktop_7qx2.lan PROTO=esmtp", XClient(name="desktop_7qx2.lan", proto="ESMTP")),
        # xtext is decoded; a value that is not xtext is taken as it is (XCLIENT_README note 3, and nginx's LOGIN).
        ("LOGIN=joe+2Btag@example.org", XClient(login="joe+tag@example.org")),
        ("LOGIN=joe+tag@example.org", XClient(login="joe+tag@example.org")),
        ("LOGIN=user+ab@example.org", XClient(login="user+ab@example.org")),  # lower-case hex: not xtext
        ("LOGIN=sales+0a@example.org", XClient(login="sales+0a@example.org")),
        ("LOGIN=u+C3@example.org", XClient(login="u+C3@example.org")),  # xtext, but not UTF-8
        # No encoder writes "a" as "+61": read as xtext, the proxy's user "+61dmin" would become "admin".
        ("LOGIN=+61dmin@example.org", XClient(login="+61dmin@example.org")),
        ("LOGIN=+2Badmin@example.org", XClient(login="+admin@example.org")),
        # Xtext whose octets are control characters was no encoder's: taken as the text it is, never a line break.
        ("HELO=a+0D+0Ab LOGIN=+00", XClient(helo="a+0D+0Ab", login="+00")),
        # What stays ambiguous: an unencoded "+" before two upper-case hex digits.
        ("LOGIN=joe+2024@example.org", XClient(login="joe 24@example.org")),
        ("LOGIN=j+C3+B6rg HELO=[192.0.2.7]", XClient(login="jörg", helo="[192.0.2.7]")),
        ("HELO=my+20laptop", XClient(helo="my laptop")),
        # Given twice, the last value counts, as in Postfix.
        ("NAME=a.example NAME=b.example", XClient(name="b.example")),
    ],
)
def test_attributes_as_the_event_holds_them(argument: str, expected: XClient) -> None:
    assert parse_xclient(argument, Context(frozenset(), frozenset())) == expected


def test_a_login_authenticates_the_session() -> None:
    config = ServerConfig(xclient=True, auth=AuthPolicy.REQUIRED, allow_insecure_auth=True)
    conn = make_server(config)
    _, out = drive(
        EHLO + b"XCLIENT LOGIN=joe ADDR=192.0.2.7\r\nEHLO c.example\r\nMAIL FROM:<a@b.example>\r\n", conn=conn
    )
    assert replies(out)[-1] == b"250 2.1.0 Sender OK"
    assert conn.authenticated == AuthCredentials("XCLIENT", "joe")
    _, out = drive(b"RSET\r\nAUTH PLAIN AGpvZQB4\r\n", conn=conn)
    assert replies(out)[-1] == b"503 5.5.1 Already authenticated"
    # The next XCLIENT without LOGIN ends it, as in Postfix; [UNAVAILABLE] too.
    for command in (b"XCLIENT NAME=c.example\r\n", b"XCLIENT LOGIN=joe\r\nXCLIENT LOGIN=[UNAVAILABLE]\r\n"):
        _, out = drive(command + b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n", conn=conn)
        assert replies(out)[-1] == b"530 5.7.0 Authentication required"
        assert conn.authenticated is None


def test_what_lasts_from_one_xclient_to_the_next() -> None:
    conn = make_server(CONFIG)
    drive(b"XCLIENT NAME=a.example ADDR=192.0.2.7 PORT=1 HELO=h PROTO=SMTP LOGIN=u DESTPORT=25\r\n", conn=conn)
    drive(b"XCLIENT ADDR=192.0.2.8\r\n", conn=conn)
    # NAME, ADDR, PORT, DESTADDR and DESTPORT stay until changed; HELO, PROTO and LOGIN are reset.
    assert conn.xclient == XClient(name="a.example", addr="192.0.2.8", port="1", destport="25")


def test_tls_stays_and_starttls_is_not_offered_again() -> None:
    conn = make_server(ServerConfig(xclient=True, tls=TlsPolicy.REQUIRED))
    # Before TLS, as Postfix takes it: TLS is required of mail, not of the proxy's preamble.
    _, out = drive(EHLO + b"XCLIENT ADDR=192.0.2.7\r\nEHLO c.example\r\nSTARTTLS\r\n", conn=conn)
    assert b"220 2.0.0 Ready to start TLS" in out and conn.tls_active
    _, out = drive(b"EHLO c.example\r\nXCLIENT ADDR=192.0.2.8\r\nEHLO c.example\r\n", conn=conn)
    assert b"STARTTLS" not in out and conn.tls_active and conn.hello == Hello("c.example")


def test_pipelined_after_xclient_is_read_in_the_new_session() -> None:
    conn = make_server(ServerConfig(xclient=True, reject_improper_pipelining=True))
    _, out = drive([EHLO, b"XCLIENT ADDR=192.0.2.7\r\nEHLO c.example\r\n"], conn=conn)
    # XCLIENT_README: "may be pipelined"; the EHLO after it is answered after the new greeting.
    assert replies(out) == [b"220 localhost ESMTP smtpcore"] and out.endswith(
        b"250 XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\r\n"
    )
    assert conn.improper_pipelining is None and conn.hello == Hello("c.example")


def test_a_421_closes_the_connection() -> None:
    conn = make_server(CONFIG)
    _, out = drive(
        EHLO + b"XCLIENT ADDR=192.0.2.7\r\n",
        conn=conn,
        policy=lambda c, e: c.send(Reply(421, "Try later", "4.3.2")) if isinstance(e, XClient) else c.accept(),
    )
    assert replies(out)[-1] == b"421 4.3.2 Try later" and conn.state is State.CLOSED


# --- the event and the writer -----------------------------------------------------------------------


def test_the_event_refuses_what_could_not_be_sent() -> None:
    with pytest.raises(LocalProtocolError, match="at least one attribute"):
        XClient()
    with pytest.raises(LocalProtocolError, match="ADDR must be an IP address"):
        XClient(addr="mail.example.org")
    with pytest.raises(LocalProtocolError, match="control characters"):
        XClient(login="joe\r\nRSET")
    with pytest.raises(LocalProtocolError, match="HELO must be at most 255"):
        XClient(helo="h" * 256)
    with pytest.raises(LocalProtocolError, match="must be a string"):
        XClient(port=25)  # type: ignore[arg-type]
    assert XClient(addr="IPV6:2001:db8::7").addr == "2001:db8::7"
    assert XClient(name="[unavailable]").attributes == {"NAME": "[UNAVAILABLE]"}


def test_written_as_xtext_with_the_ipv6_prefix() -> None:
    event = XClient(addr="2001:db8::7", port="4242", login="joe+tag=x y", helo="h", destaddr="[UNAVAILABLE]")
    assert write_command(event) == (
        b"XCLIENT ADDR=IPV6:2001:db8::7 PORT=4242 HELO=h LOGIN=joe+2Btag+3Dx+20y DESTADDR=[UNAVAILABLE]\r\n"
    )
    # XCLIENT_README note 1: ADDR (and NAME) last, since a client that gave ADDR is judged by it;
    # and HELO, PROTO and LOGIN last too, since a server keeps them from the last command only.
    with pytest.raises(
        LocalProtocolError,
        match="PORT, DESTADDR and DESTPORT first, NAME, ADDR, HELO, PROTO and LOGIN in the last",
    ):
        write_command(XClient(helo="h" * 255, login="l" * 255))


names = st.from_regex(r"([a-z0-9]{1,20}\.){0,3}[a-z][a-z0-9]{0,19}", fullmatch=True)
values = st.text(st.characters(blacklist_categories=["Cc", "Cs", "Zl", "Zp"]), min_size=1, max_size=40)
addresses = st.one_of(st.ip_addresses().map(str), st.just("[UNAVAILABLE]"))
ports = st.one_of(st.integers(0, 65535).map(str), st.just("[UNAVAILABLE]"))
events = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(names, st.sampled_from(["[UNAVAILABLE]", "[TEMPUNAVAIL]"])),
        "addr": addresses,
        "port": ports,
        "proto": st.sampled_from(["SMTP", "ESMTP"]),
        "helo": values,
        "login": values,
        "destaddr": addresses,
        "destport": ports,
    },
).filter(bool)


@settings(max_examples=300, deadline=None)
@given(attributes=events)
def test_any_event_the_client_can_write_the_server_reads_back(attributes: dict[str, str]) -> None:
    try:
        event = XClient(**attributes)
        line = write_command(event)
    except LocalProtocolError as exc:
        error = str(exc)
    else:
        error = ""
    if error:
        # Only what the grammar refuses (a value with a bidi control, say), a line too long,
        # or a HELO or LOGIN that reads as NAME's marker.
        reasons = ("several XClient commands", "control characters", "for NAME only", "as xtext, over 255")
        assert any(reason in error for reason in reasons)
        return
    verb, _, argument = line[:-2].decode("ascii").partition(" ")
    assert verb == "XCLIENT"
    assert parse_xclient(argument, Context(frozenset(), frozenset())) == event
    if event.addr not in (None, "[UNAVAILABLE]"):
        assert str(ipaddress.ip_address(event.addr)) == event.addr


@settings(max_examples=300, deadline=None)
@given(argument=st.text(max_size=80))
def test_any_argument_is_an_event_or_a_501(argument: str) -> None:
    try:
        event: Event | Reply = parse_xclient(argument, Context(frozenset(), frozenset()))
    except Refusal as refusal:
        event = refusal.reply
    if isinstance(event, Reply):
        assert (event.code, event.enhanced) == (501, "5.5.4")
    else:
        assert isinstance(event, XClient) and event.attributes


# --- the client -------------------------------------------------------------------------------------

OFFERED = b"250-mx\r\n250-PIPELINING\r\n250 XCLIENT NAME ADDR PORT PROTO HELO\r\n"


def test_client_sends_only_what_the_server_offered() -> None:
    conn = ready(b"250-mx\r\n250 PIPELINING\r\n")
    with pytest.raises(LocalProtocolError, match="did not advertise XCLIENT"):
        conn.send(XClient(addr="192.0.2.7"))
    conn = ready(OFFERED)
    with pytest.raises(LocalProtocolError, match="does not take DESTPORT, LOGIN"):
        conn.send(XClient(addr="192.0.2.7", login="joe", destport="25"))
    conn.send(Mail("a@b.example"))
    with pytest.raises(LocalProtocolError, match="XCLIENT inside a mail transaction"):
        conn.send(XClient(addr="192.0.2.7"))


def test_client_forgets_the_extensions_at_the_new_greeting_and_waits_for_it() -> None:
    conn = ready(OFFERED)
    conn.send(XClient(addr="192.0.2.7", name="mail.example.org"))
    assert conn.data_to_send() == b"XCLIENT NAME=mail.example.org ADDR=192.0.2.7\r\n"
    with pytest.raises(LocalProtocolError, match="wait for the reply to XClient"):
        conn.send(Hello("c.example"))
    assert reply(conn, b"220 mx ESMTP\r\n").code == 220
    assert conn.capabilities is None and conn.next_event() is PAUSED
    with pytest.raises(LocalProtocolError, match="send EHLO"):
        conn.send(Mail("a@b.example"))
    conn.send(Hello("c.example"))
    reply(conn, OFFERED)
    assert conn.capabilities is not None and conn.capabilities.pipelining


def test_client_keeps_the_session_when_refused() -> None:
    conn = ready(OFFERED)
    conn.send(XClient(addr="192.0.2.7"))
    assert reply(conn, b"550 5.7.0 Insufficient authorization\r\n").code == 550
    assert conn.capabilities is not None
    conn.send(Mail("a@b.example"))


# --- the driver --------------------------------------------------------------------------------------


def run_driver(config: ClientConfig, server: ServerConfig, policy: ServerPolicy = trusting) -> PairResult:
    driver = ClientDriver(config, [(Envelope("a@b.example", ["c@d.example"]), b"Subject: x\r\n\r\nbody\r\n")])
    return pair(driver, server, policy)


def test_driver_speaks_for_the_named_client_then_says_its_ehlo_name() -> None:
    named = XClient(addr="192.0.2.7", name="mail.example.org", helo="client.example.org", login="joe")
    result = run_driver(ClientConfig(local_hostname="proxy.example", xclient=named), CONFIG)
    wire = result.wire_to_server
    assert wire.startswith(
        b"EHLO proxy.example\r\nXCLIENT NAME=mail.example.org ADDR=192.0.2.7 HELO=client.example.org LOGIN=joe\r\n"
        b"EHLO client.example.org\r\nMAIL FROM:<a@b.example>"
    )
    assert len(result.messages) == 1
    assert result.server.xclient == named and result.server.authenticated == AuthCredentials("XCLIENT", "joe")


@pytest.mark.parametrize("helo", ["[UNAVAILABLE]", "not a name!", None])
def test_driver_says_its_own_name_when_the_helo_cannot_be_an_ehlo(helo: str | None) -> None:
    result = run_driver(
        ClientConfig(local_hostname="proxy.example", xclient=XClient(addr="192.0.2.7", helo=helo)), CONFIG
    )
    assert result.wire_to_server.count(b"EHLO proxy.example\r\n") == 2


def test_driver_fails_the_session_when_xclient_is_not_offered_or_refused() -> None:
    named = XClient(addr="192.0.2.7")
    result = run_driver(ClientConfig(xclient=named), ServerConfig())
    error = result.driver.result.error
    # Transient: a setting to fix between the proxy and the server; the mail waits for it.
    assert isinstance(error, SMTPTransientError) and str(error) == "the server does not offer XCLIENT"
    assert not result.messages and result.wire_to_server.endswith(b"QUIT\r\n")
    result = run_driver(ClientConfig(xclient=XClient(addr="192.0.2.7", destport="25")), CONFIG)
    assert result.driver.result.error is None  # ours offers every attribute
    result = run_driver(ClientConfig(xclient=named), CONFIG, distrusting)
    error = result.driver.result.error
    # Transient: a refusal is about the proxy's trust, and the mail must not bounce for it.
    assert isinstance(error, SMTPTransientError) and str(error).startswith("XCLIENT refused: 550 5.7.0")
    assert b"XCLIENT" in result.wire_to_server and b"MAIL" not in result.wire_to_server


def test_client_config_takes_only_an_event() -> None:
    with pytest.raises(ValueError, match="xclient must be an XClient event"):
        ClientConfig(xclient={"addr": "192.0.2.7"})  # type: ignore[arg-type]


POSTFIX = """
    S: 220 postfix.test ESMTP Postfix
    C: EHLO proxy.example
    S: 250-postfix.test
    S: 250-PIPELINING
    S: 250-STARTTLS
    S: 250 XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT
    C: STARTTLS
    S: 220 2.0.0 Ready to start TLS
    TLS
    C: EHLO proxy.example
    S: 250-postfix.test
    S: 250-PIPELINING
    S: 250 XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT
    C: XCLIENT NAME=mail.example.org ADDR=IPV6:2001:db8::7 HELO=client.example.org
"""


@pytest.mark.parametrize("split", [None, byte_split])
def test_driver_against_postfix_after_starttls_and_before_the_mail(split: object) -> None:
    named = XClient(addr="2001:db8::7", name="mail.example.org", helo="client.example.org")
    messages = [(Envelope("a@b.example", ["c@d.example"]), b"Subject: x\r\n\r\nbody\r\n")]
    driver = ClientDriver(ClientConfig(local_hostname="proxy.example", xclient=named, use_chunking=False), messages)
    text = (
        POSTFIX
        + """
        S: 220 postfix.test ESMTP Postfix
        C: EHLO client.example.org
        S: 250-postfix.test
        S: 250 PIPELINING
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<c@d.example>
        C: DATA
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: x
        C:
        C: body
        C: .
        C: QUIT
        S: 250 2.0.0 Ok: queued as 4FqX
        S: 221 2.0.0 Bye
    """
    )
    run_client_transcript(text, driver, split=split)  # type: ignore[arg-type]
    assert driver.done and driver.result.error is None and driver.result.messages[0].delivered == ("c@d.example",)


def test_driver_takes_the_250_of_a_postfix_before_2_3_and_goes_on() -> None:
    named = XClient(addr="2001:db8::7", name="mail.example.org", helo="client.example.org")
    driver = ClientDriver(ClientConfig(local_hostname="proxy.example", xclient=named), [])
    run_client_transcript(POSTFIX + "S: 250 Ok\nC: QUIT\nS: 221 Bye\n", driver)
    assert driver.done and driver.result.error is None


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("421 4.3.2 Shutting down", "the server is closing the session: 421 4.3.2 Shutting down"),
        ("550 5.7.0 Error: insufficient authorization", "XCLIENT refused: 550 5.7.0 Error: insufficient authorization"),
        ("454 4.7.0 Try again", "XCLIENT refused: 454 4.7.0 Try again"),
    ],
)
def test_driver_fails_the_session_on_a_refusal(reply: str, error: str) -> None:
    named = XClient(addr="2001:db8::7", name="mail.example.org", helo="client.example.org")
    messages = [(Envelope("a@b.example", ["c@d.example"]), b"Subject: x\r\n\r\nbody\r\n")]
    driver = ClientDriver(ClientConfig(local_hostname="proxy.example", xclient=named), messages)
    quit = "" if reply.startswith("421") else "C: QUIT\nS: 221 Bye\n"
    run_client_transcript(POSTFIX + f"S: {reply}\n" + quit, driver)
    assert driver.done and str(driver.result.error) == error
    assert isinstance(driver.result.error, SMTPTransientError)
    assert driver.result.messages[0].delivered == ()


def test_driver_does_not_send_an_attribute_the_server_does_not_list() -> None:
    named = XClient(addr="192.0.2.7", destport="25", login="joe")
    driver = ClientDriver(ClientConfig(local_hostname="proxy.example", starttls=TlsPolicy.OFF, xclient=named), [])
    text = """
        S: 220 old.test ESMTP Postfix
        C: EHLO proxy.example
        S: 250-old.test
        S: 250 XCLIENT NAME ADDR PROTO HELO
        C: QUIT
        S: 221 Bye
    """
    run_client_transcript(text, driver)
    error = driver.result.error
    assert isinstance(error, SMTPTransientError)
    assert str(error) == "the server's XCLIENT does not take DESTPORT, LOGIN"


def test_the_writer_checks_an_event_built_unchecked() -> None:
    values = dict.fromkeys(("name", "addr", "port", "proto", "helo", "login", "destaddr", "destport"))
    with pytest.raises(LocalProtocolError, match="at least one attribute"):
        write_command(XClient._unchecked(**values))
    with pytest.raises(LocalProtocolError, match="control characters"):
        write_command(XClient._unchecked(**{**values, "login": "joe\r\nQUIT"}))


def test_what_xclient_said_in_plaintext_is_forgotten_at_the_tls_handshake() -> None:
    conn = make_server(ServerConfig(xclient=True, tls=TlsPolicy.OPTIONAL))
    drive(EHLO + b"XCLIENT ADDR=192.0.2.7 LOGIN=alice\r\n", conn=conn)
    assert conn.xclient is not None and conn.authenticated is not None
    drive([EHLO, b"STARTTLS\r\n"], conn=conn)
    # RFC 3207 §4.2: anyone on the path could have said it.
    assert conn.tls_active and conn.xclient is None and conn.authenticated is None


def test_improper_pipelining_is_the_connections_and_outlasts_xclient() -> None:
    # Noted once for the connection, as the refusing server would have closed it there.
    conn = make_server(CONFIG)
    drive(b"NOOP\r\nNOOP\r\n", conn=conn)
    drive(b"XCLIENT ADDR=192.0.2.7\r\n", conn=conn)
    assert conn.improper_pipelining == "NOOP"


def test_a_true_value_other_than_true_configures_it_too() -> None:
    conn = ServerConnection(ServerConfig(xclient=1, lmtp=0))  # type: ignore[arg-type]
    conn.accept()
    _, out = drive(b"XCLIENT ADDR=192.0.2.7\r\n", conn=conn)
    assert out.endswith(b"220 localhost ESMTP smtpcore\r\n")


def test_client_may_send_another_xclient_before_ehlo() -> None:
    # A proxy splitting attributes that do not fit in one line.
    conn = ready(OFFERED)
    conn.send(XClient(name="mail.example.org"))
    reply(conn, b"220 mx ESMTP\r\n")
    conn.send(XClient(addr="192.0.2.7", helo="client.example.org"))
    assert conn.data_to_send().endswith(b"XCLIENT ADDR=192.0.2.7 HELO=client.example.org\r\n")
    fresh = ClientConnection()
    reply(fresh, b"220 mx ESMTP\r\n")
    with pytest.raises(LocalProtocolError, match="send EHLO"):
        fresh.send(XClient(addr="192.0.2.7"))


def test_client_config_refuses_an_xclient_over_one_line() -> None:
    with pytest.raises(
        ValueError, match="xclient: its XCLIENT line would be 516 octets, over 512, and the driver sends one XCLIENT"
    ):
        ClientConfig(xclient=XClient(name="n" * 245, helo="h" * 250))


def test_driver_with_a_login_does_not_authenticate_again() -> None:
    config = ServerConfig(xclient=True, auth=AuthPolicy.REQUIRED, allow_insecure_auth=True)
    named = XClient(addr="192.0.2.7", login="joe")
    messages = [(Envelope("a@b.example", ["c@d.example"]), b"Subject: x\r\n\r\nbody\r\n")]
    client = ClientConfig(xclient=named, allow_insecure_auth=True)
    result = pair(ClientDriver(client, messages, credentials=Credentials("proxy", password="pw")), config, trusting)
    assert result.driver.result.error is None and len(result.messages) == 1
    assert b"AUTH" not in result.wire_to_server


def test_driver_says_its_own_name_when_the_helo_is_not_ascii() -> None:
    named = XClient(addr="192.0.2.7", helo="b\u00fccher.example")
    result = run_driver(ClientConfig(local_hostname="proxy.example", xclient=named), CONFIG)
    assert result.driver.result.error is None and result.wire_to_server.count(b"EHLO proxy.example\r\n") == 2


# --- XFORWARD ---------------------------------------------------------------------------------------

FORWARDING = ServerConfig(hostname="filter.example.com", xforward=True)


def test_xforward_offered_and_kept_for_the_transaction_that_follows() -> None:
    conn = make_server(FORWARDING)
    first = b"XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP\r\n"
    events, out = drive(EHLO + first + b"XFORWARD HELO=spike.porcupine.org\r\nMAIL FROM:<a@b.example>\r\n", conn=conn)
    assert b"250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n" in out
    assert replies(out) == [b"250 2.0.0 OK", b"250 2.0.0 OK", b"250 2.1.0 Sender OK"]
    assert isinstance(events[1], XForward) and events[1].attributes == {
        "NAME": "spike.porcupine.org",
        "ADDR": "168.100.189.2",
        "PROTO": "ESMTP",
    }
    # XFORWARD_README: the first one sets every attribute to [UNAVAILABLE], each then changes what it gives.
    assert conn.xforward == XForward(
        name="spike.porcupine.org",
        addr="168.100.189.2",
        port="[UNAVAILABLE]",
        proto="ESMTP",
        helo="spike.porcupine.org",
        ident="[UNAVAILABLE]",
        source="[UNAVAILABLE]",
    )
    # Not inside the transaction; forgotten when it ends; the session itself never changed.
    _, out = drive(b"XFORWARD IDENT=4FqX\r\nRCPT TO:<c@d.example>\r\nDATA\r\nhi\r\n.\r\n", conn=conn)
    assert out.startswith(b"503 5.5.1 Mail transaction in progress; send RSET first\r\n")
    assert conn.xforward is None and conn.hello == Hello("proxy.example") and conn.state is State.READY


@pytest.mark.parametrize("ending", [b"RSET\r\n", b"EHLO proxy.example\r\n"])
def test_xforward_is_forgotten_at_rset_and_a_new_ehlo(ending: bytes) -> None:
    conn = make_server(FORWARDING)
    drive(EHLO + b"XFORWARD ADDR=192.0.2.7\r\n", conn=conn)
    assert conn.xforward is not None
    drive(ending, conn=conn)
    assert conn.xforward is None


def test_xforward_refused_changes_nothing() -> None:
    conn = make_server(FORWARDING)
    policy = lambda c, e: c.send(REFUSED) if isinstance(e, XForward) else c.accept()  # noqa: E731
    _, out = drive(EHLO + b"XFORWARD ADDR=192.0.2.7\r\n", conn=conn, policy=policy)
    assert replies(out) == [b"550 5.7.0 Insufficient authorization"] and conn.xforward is None


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        # What the first MTA was told, whatever it was: a HELO need be no name (a refusal would only
        # lose the information).
        ("HELO=[192.0.2.7] NAME=unknown", XForward(helo="[192.0.2.7]", name="unknown")),
        ("HELO=my+20laptop IDENT=4FqX+2B1", XForward(helo="my laptop", ident="4FqX+1")),
        (
            "ADDR=IPV6:2001:db8::7 PORT=25 SOURCE=local PROTO=UTF8SMTPS",
            XForward(addr="2001:db8::7", port="25", source="LOCAL", proto="UTF8SMTPS"),
        ),
        ("NAME=[unavailable] SOURCE=[Unavailable]", XForward(name="[UNAVAILABLE]", source="[UNAVAILABLE]")),
    ],
)
def test_xforward_attributes(argument: str, expected: XForward) -> None:
    assert parse_xforward(argument, Context(frozenset(), frozenset())) == expected


@pytest.mark.parametrize(
    ("argument", "reply"),
    [
        (b"", b"501 5.5.4 Syntax: XFORWARD attribute=value ..."),
        (b" LOGIN=joe", b"501 5.5.4 Bad XFORWARD attribute name: LOGIN"),
        (
            b" ADDR=mail.example",
            b"501 5.5.4 Bad XFORWARD value: ADDR must be an IP address (IPV6: before an IPv6 one), not 'mail.example'",
        ),
        (b" SOURCE=ELSEWHERE", b"501 5.5.4 Bad XFORWARD value: SOURCE must be LOCAL or REMOTE, not 'ELSEWHERE'"),
        (b" PROTO=" + b"P" * 65, b"501 5.5.4 Bad XFORWARD value: PROTO must be at most 64 characters"),
        (b" IDENT=" + b"i" * 256, b"501 5.5.4 Bad XFORWARD value: IDENT must be at most 255 characters"),
    ],
)
def test_xforward_malformed(argument: bytes, reply: bytes) -> None:
    conn = make_server(FORWARDING)
    _, out = drive(EHLO + b"XFORWARD" + argument + b"\r\n", conn=conn)
    assert replies(out) == [reply] and conn.xforward is None


def test_xforward_not_offered_is_unknown_and_is_not_xclient() -> None:
    _, out = drive(EHLO + b"XFORWARD ADDR=192.0.2.7\r\nXCLIENT ADDR=192.0.2.7\r\n", FORWARDING.__class__(xclient=True))
    assert replies(out) == [b"500 5.5.1 Command unrecognized", b"220 localhost ESMTP smtpcore"]
    _, out = drive(EHLO + b"XCLIENT ADDR=192.0.2.7\r\n", FORWARDING)
    assert replies(out) == [b"500 5.5.1 Command unrecognized"]


def test_xforward_client_side_pipelines_before_mail() -> None:
    conn = ready(b"250-mx\r\n250-PIPELINING\r\n250 XFORWARD NAME ADDR PROTO HELO\r\n")
    with pytest.raises(LocalProtocolError, match="the server's XFORWARD does not take IDENT"):
        conn.send(XForward(ident="4FqX"))
    conn.send(XForward(name="spike.porcupine.org", addr="2001:db8::7", helo="my laptop"))
    conn.send(Mail("a@b.example"))  # not a command that ends a group: Postfix pipelines the two
    assert conn.data_to_send() == (
        b"XFORWARD NAME=spike.porcupine.org ADDR=IPV6:2001:db8::7 HELO=my+20laptop\r\nMAIL FROM:<a@b.example>\r\n"
    )
    with pytest.raises(LocalProtocolError, match="XFORWARD inside a mail transaction"):
        conn.send(XForward(name="x.example"))
    plain = ready(b"250-mx\r\n250 PIPELINING\r\n")
    with pytest.raises(LocalProtocolError, match="did not advertise XFORWARD"):
        plain.send(XForward(name="x.example"))


@settings(max_examples=300, deadline=None)
@given(
    attributes=st.fixed_dictionaries(
        {},
        optional={
            "name": values,
            "addr": addresses,
            "port": ports,
            "proto": values.filter(lambda v: len(v) <= 64),
            "helo": values,
            "ident": values,
            "source": st.sampled_from(["LOCAL", "REMOTE", "[UNAVAILABLE]"]),
        },
    ).filter(bool)
)
def test_any_xforward_the_client_can_write_the_server_reads_back(attributes: dict[str, str]) -> None:
    try:
        event = XForward(**attributes)
        line = write_command(event)
    except LocalProtocolError as exc:
        error = str(exc)
    else:
        error = ""
    if error:
        assert any(reason in error for reason in ("several XForward commands", "control characters", "as xtext, over"))
        return
    verb, _, argument = line[:-2].decode("ascii").partition(" ")
    assert verb == "XFORWARD" and parse_xforward(argument, Context(frozenset(), frozenset())) == event


def test_xforward_values_the_event_refuses_and_the_writers_bound() -> None:
    with pytest.raises(LocalProtocolError, match="HELO must be a string"):
        XForward(helo=5)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="IDENT must be a non-empty value without control characters"):
        XForward(ident="")
    # Postfix counts 255 on the value as sent: 100 spaces make a HELO of 199 characters 399 as xtext.
    with pytest.raises(LocalProtocolError, match="HELO is 397 characters as xtext, over 255"):
        write_command(XForward(helo=("a " * 100).strip()))
    with pytest.raises(ValueError, match="xclient: LOGIN is 300 characters as xtext, over 255"):
        ClientConfig(xclient=XClient(login="+" * 100))
    for canonical, verb in ((canonical_value, "XCLIENT"), (canonical_forward_value, "XFORWARD")):
        with pytest.raises(XClientError, match=f"'FOO' is not an {verb} attribute"):
            canonical("FOO", "x")


# --- XFORWARD from the driver: a content filter handing mail back to its MTA ----------------------

ORIGINAL = XForward(name="spike.example", addr="192.0.2.7", helo="laptop.example", ident="4FqX", source="REMOTE")


def forwarded_messages(*xforwards: XForward | None) -> list[tuple[Envelope, bytes]]:
    return [
        (Envelope(f"s{number}@b.example", ["c@d.bücher.example"], xforward=xforward), b"Subject: x\r\n\r\nbody\r\n")
        for number, xforward in enumerate(xforwards)
    ]


@pytest.mark.parametrize(
    "client", [ClientConfig(), ClientConfig(use_pipelining=False), ClientConfig(use_chunking=False)]
)
def test_driver_sends_each_messages_xforward_before_its_mail(client: ClientConfig) -> None:
    # The third goes ahead with the second's end when pipelining: its XFORWARD with it.  The
    # server has no SMTPUTF8, so the recipient's domain goes as A-labels: the XFORWARD stays.
    seen: list[XForward | None] = []

    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, Mail):
            seen.append(conn.xforward)
        conn.accept()

    messages = forwarded_messages(ORIGINAL, None, ORIGINAL)
    result = pair(ClientDriver(client, messages), ServerConfig(xforward=True, smtputf8=False), policy)
    assert result.driver.result.error is None
    assert [outcome.delivered for outcome in result.driver.result.messages] == [("c@d.bücher.example",)] * 3
    assert [xforward and xforward.ident for xforward in seen] == ["4FqX", None, "4FqX"]
    assert result.wire_to_server.count(b"XFORWARD NAME=spike.example ADDR=192.0.2.7 HELO=laptop.example") == 2


def test_driver_sends_only_what_the_server_lists_and_nothing_to_a_server_without_xforward() -> None:
    driver = ClientDriver(ClientConfig(starttls=TlsPolicy.OFF), forwarded_messages(ORIGINAL))
    text = """
        S: 220 postfix.test ESMTP
        C: EHLO localhost
        S: 250-postfix.test
        S: 250-PIPELINING
        S: 250 XFORWARD NAME ADDR PROTO HELO
        C: XFORWARD NAME=spike.example ADDR=192.0.2.7 HELO=laptop.example
        C: MAIL FROM:<s0@b.example>
        C: RCPT TO:<c@d.xn--bcher-kva.example>
        C: DATA
        S: 250 2.0.0 Ok
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: x
        C:
        C: body
        C: .
        C: QUIT
        S: 250 2.0.0 Ok: queued as 1
        S: 221 2.0.0 Bye
    """
    run_client_transcript(text, driver)
    assert driver.result.error is None
    plain = pair(ClientDriver(ClientConfig(), forwarded_messages(ORIGINAL)), ServerConfig())
    assert plain.driver.result.error is None and b"XFORWARD" not in plain.wire_to_server


def test_driver_goes_on_when_xforward_is_refused() -> None:
    # It only loses what the server would have logged, as Postfix's client goes on.
    def refuse(conn: ServerConnection, event: Event) -> None:
        conn.send(REFUSED) if isinstance(event, XForward) else conn.accept()

    result = pair(ClientDriver(ClientConfig(), forwarded_messages(ORIGINAL)), ServerConfig(xforward=True), refuse)
    assert result.driver.result.error is None and len(result.messages) == 1


def test_an_envelopes_xforward_is_checked_when_it_is_made() -> None:
    with pytest.raises(LocalProtocolError, match="xforward must be an XForward event"):
        Envelope("a@b.example", ["c@d.example"], xforward=XClient(addr="192.0.2.7"))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="HELO is 300 characters as xtext"):
        Envelope("a@b.example", ["c@d.example"], xforward=XForward(helo="+" * 100))
    # What needs two lines is no error: the driver says it in two commands.
    Envelope("a@b.example", ["c@d.example"], xforward=XForward(name="n" * 253, helo="h" * 253, ident="i" * 200))


def test_driver_resets_after_a_refused_mail_so_the_next_message_has_no_stale_xforward() -> None:
    seen: list[XForward | None] = []

    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, Mail):
            seen.append(conn.xforward)
            if event.sender == "s0@b.example":
                conn.send(Reply(452, "Try later", "4.3.1"))
                return
        conn.accept()

    for client in (ClientConfig(), ClientConfig(use_pipelining=False)):
        seen.clear()
        messages = forwarded_messages(ORIGINAL, None)
        result = pair(ClientDriver(client, messages), ServerConfig(xforward=True), policy)
        assert [outcome.delivered for outcome in result.driver.result.messages] == [(), ("c@d.bücher.example",)]
        assert b"RSET" in result.wire_to_server
        # XFORWARD_README: a refused MAIL is no end of a transaction; without the RSET the
        # second message would be logged under the first one's origin.
        assert [xforward and xforward.ident for xforward in seen] == ["4FqX", None]


def test_driver_says_a_long_xforward_in_several_commands() -> None:
    # Each value may be 255 octets, so all of them need not fit in one line; they add up.
    long = XForward(name="n" * 253, helo="h" * 253, ident="i" * 200, addr="192.0.2.7", source="REMOTE")
    seen: list[XForward | None] = []

    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, Mail):
            seen.append(conn.xforward)
        conn.accept()

    messages = [(Envelope("a@b.example", ["c@d.example"], xforward=long), b"Subject: x\r\n\r\nbody\r\n")]
    result = pair(ClientDriver(ClientConfig(), messages), ServerConfig(xforward=True), policy)
    assert result.driver.result.error is None
    assert result.wire_to_server.count(b"XFORWARD ") == 2
    (merged,) = seen
    assert merged is not None
    assert merged.attributes == {**long.attributes, "PORT": "[UNAVAILABLE]", "PROTO": "[UNAVAILABLE]"}


def test_one_xforward_line_over_512_is_refused_and_split_says_it_in_two() -> None:
    long = XForward(name="n" * 253, helo="h" * 253, ident="i" * 200)
    with pytest.raises(LocalProtocolError, match="over 512: send the attributes in several XForward commands"):
        write_command(long)
    assert [list(command.attributes) for command in split_xforward(long)] == [["NAME"], ["HELO", "IDENT"]]
    with pytest.raises(LocalProtocolError, match="XForward needs at least one attribute"):
        split_xforward(
            XForward._unchecked(**dict.fromkeys(("name", "addr", "port", "proto", "helo", "ident", "source")))
        )
