"""The client driver and the server machine, joined in memory: what goes in comes out.

For any envelope (ASCII and UTF-8 addresses, every parameter) and any message
bytes, with PIPELINING, CHUNKING and SMTPUTF8 each on and off, the server
application must receive exactly the sender, the recipients with their
parameters, and the content the client application gave (with line endings
normalised and a final CRLF added, which is what the client promises to send).
"""

from __future__ import annotations

import itertools
import smtplib
import string
from email.message import EmailMessage
from typing import Any

import pytest
from client_helpers import pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpcore import (
    AuthCredentials,
    AuthPolicy,
    ClientConfig,
    ClientDriver,
    Credentials,
    DeliverBy,
    Envelope,
    Event,
    LocalProtocolError,
    MailParams,
    RcptParams,
    Recipient,
    ServerConfig,
    ServerConnection,
    SMTPNotSupportedError,
    SMTPPermanentError,
    TlsPolicy,
    XForward,
)
from smtpcore._xclient import FORWARD_ATTRIBUTES

ATOM = st.text(alphabet=string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=10)
UTF8_ATOM = st.text(alphabet="äöüßéñ漢字" + string.ascii_lowercase, min_size=1, max_size=8)
DOMAIN = st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True), min_size=1, max_size=3).map(
    ".".join
)


@st.composite
def addresses(draw: st.DrawFn, utf8: bool) -> str:
    local = draw(st.one_of(ATOM, UTF8_ATOM) if utf8 else ATOM)
    return f"{local}@{draw(DOMAIN)}"


XTEXT_SOURCE = st.text(alphabet=string.printable.strip() + " é", min_size=1, max_size=20)
# ENVID is US-ASCII (RFC 3461 §4.4): "é" goes only into ORCPT addresses.
ENVID_SOURCE = st.text(alphabet=string.printable.strip() + " ", min_size=1, max_size=20)


@st.composite
def envelopes(draw: st.DrawFn, dsn: bool, utf8: bool) -> Envelope:
    params = MailParams()
    if dsn:
        params = MailParams(
            ret=draw(st.sampled_from([None, "FULL", "HDRS"])),
            envid=draw(st.none() | ENVID_SOURCE),
        )
    params = MailParams(
        ret=params.ret,
        envid=params.envid,
        mt_priority=draw(st.none() | st.integers(-9, 9)),
        by=draw(st.none() | st.builds(DeliverBy, st.integers(1, 10**6), st.sampled_from(["N", "R"]), st.booleans())),
        hold_for=draw(st.none() | st.integers(0, 10**6)),
    )
    recipients: list[Recipient] = []
    for address in draw(st.lists(addresses(utf8), min_size=1, max_size=5, unique_by=str.lower)):
        rcpt = RcptParams()
        if dsn:
            rcpt = RcptParams(
                notify=draw(st.none() | st.sampled_from([("NEVER",), ("SUCCESS",), ("FAILURE", "DELAY")])),
                orcpt=draw(st.none() | XTEXT_SOURCE.map(lambda text: ("rfc822", text))),
            )
        recipients.append(Recipient(address, rcpt))
    sender = draw(st.just("") | addresses(utf8))
    # Where a content filter got the message (XFORWARD): free text, an address, a port.
    xforward = draw(
        st.none()
        | st.builds(
            XForward,
            name=st.none()
            | st.text(
                st.characters(codec="utf-8", exclude_categories=["Cc", "Cs", "Zl", "Zp"]), min_size=1, max_size=30
            ),
            addr=st.none() | st.ip_addresses().map(str),
            port=st.none() | st.integers(0, 65535).map(str),
            ident=st.just("4FqX"),
        )
    )
    return Envelope(sender, recipients, params, xforward)


def expected_content(data: bytes) -> bytes:
    normalised = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    return normalised


CONTENT = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b".", b"..", b"\r\n", b"\r", b"\n", b"a", b"\xc3\xa9", b"x" * 50]), max_size=40).map(
        b"".join
    ),
)

SERVER_EXTENSIONS = ("MT-PRIORITY", "DELIVERBY 60", "FUTURERELEASE 604800 2012-01-01T00:00:00Z")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    pipelining=st.booleans(),
    chunking=st.booleans(),
    smtputf8=st.booleans(),
    dsn=st.booleans(),
    chunk_size=st.sampled_from([1, 3, 7, 64, 4096]),
    stream=st.booleans(),
    xforward=st.booleans(),
)
def test_roundtrip(
    data: st.DataObject,
    pipelining: bool,
    chunking: bool,
    smtputf8: bool,
    dsn: bool,
    chunk_size: int,
    stream: bool,
    xforward: bool,
) -> None:
    envelope = data.draw(envelopes(dsn, utf8=smtputf8))
    content = data.draw(CONTENT)
    server_config = ServerConfig(
        pipelining=pipelining,
        chunking=chunking,
        smtputf8=smtputf8,
        dsn=dsn,
        extra_extensions=SERVER_EXTENSIONS,
        xforward=xforward,
        max_line_length=100_000,
        # Our client pipelines only where RFC 2920 allows: the server would say if not.
        reject_improper_pipelining=True,
    )
    if stream:
        cuts = sorted(data.draw(st.lists(st.integers(0, len(content)), max_size=6)))
        bounds = [0, *cuts, len(content)]
        message: bytes | list[bytes] = [content[a:b] for a, b in itertools.pairwise(bounds)]
    else:
        message = content
    driver = ClientDriver(ClientConfig(starttls=TlsPolicy.OFF, chunk_size=chunk_size), [(envelope, message)])
    result = pair(driver, server_config)
    outcome = result.driver.result
    assert outcome.error is None, outcome.error
    message_outcome = outcome.messages[0]
    expected = expected_content(content)
    # A stream is not inspected ahead of time (its properties cannot be known).
    needs_binary = not stream and (b"\x00" in expected or any(len(line) > 998 for line in expected.split(b"\r\n")))
    # 8-bit text in the header section needs SMTPUTF8 (RFC 6532); a message that starts
    # with the empty line has none (RFC 5322 §2.1): its 8-bit text is body, 8BITMIME's.
    headers = b"" if expected.startswith(b"\r\n") else expected.split(b"\r\n\r\n", 1)[0]
    needs_utf8 = not stream and not headers.isascii()
    if (needs_binary and not chunking) or (needs_utf8 and not smtputf8):
        assert isinstance(message_outcome.error, SMTPNotSupportedError)
        assert result.messages == []
        return
    assert message_outcome.error is None, (message_outcome.error, result.rejected)
    assert message_outcome.delivered == tuple(r.address for r in envelope.recipient_list)
    [received] = result.messages
    assert received.mail.sender == envelope.sender
    sent_params = envelope.params
    got = received.mail.params
    assert (got.ret, got.envid, got.mt_priority, got.by, got.hold_for) == (
        sent_params.ret,
        sent_params.envid,
        sent_params.mt_priority,
        sent_params.by,
        sent_params.hold_for,
    )
    assert got.smtputf8 == (envelope.needs_smtputf8 or needs_utf8)
    if not stream:
        assert got.size == len(expected)
    assert [(r.recipient, r.params) for r in received.recipients] == [
        (r.address, r.params) for r in envelope.recipient_list
    ]
    assert received.content == expected
    # The envelope's XFORWARD went before its MAIL, to a server that offers it: what it gave, the rest unknown.
    if xforward and envelope.xforward is not None:
        sent = envelope.xforward.attributes
        assert received.xforward is not None
        assert received.xforward.attributes == {name: sent.get(name, "[UNAVAILABLE]") for name in FORWARD_ATTRIBUTES}
    else:
        assert received.xforward is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(1, 320),
    pipelining=st.booleans(),
    chunking=st.booleans(),
    advertise_limits=st.booleans(),
    lmtp=st.booleans(),
)
def test_any_number_of_recipients_reaches_a_server_that_takes_100_at_a_time(
    count: int, pipelining: bool, chunking: bool, advertise_limits: bool, lmtp: bool
) -> None:
    # The limit advertised (LIMITS RCPTMAX) or met on the way (452 4.5.3): either
    # way every recipient gets the message, in transactions of at most 100, in order.
    recipients = [f"r{n}@example.org" for n in range(count)]
    server_config = ServerConfig(
        max_recipients=100,
        pipelining=pipelining,
        chunking=chunking,
        advertise_limits=advertise_limits,
        lmtp=lmtp,
        reject_improper_pipelining=True,
    )
    driver = ClientDriver(ClientConfig(starttls=TlsPolicy.OFF, lmtp=lmtp), [(Envelope("a@x.org", recipients), b"hi")])
    result = pair(driver, server_config)
    outcome = result.driver.result
    assert outcome.error is None and outcome.messages[0].delivered == tuple(recipients)
    assert [len(m.recipients) for m in result.messages] == [100] * (count // 100) + [count % 100] * (count % 100 > 0)
    assert [r.recipient for m in result.messages for r in m.recipients] == recipients
    assert all(m.content == b"hi\r\n" for m in result.messages)


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=200), chunk_size=st.sampled_from([1, 5, 100]))
def test_binary_roundtrip_over_bdat(content: bytes, chunk_size: int) -> None:
    envelope = Envelope("a@x.org", ["b@y.org"], MailParams(body="BINARYMIME"))
    driver = ClientDriver(ClientConfig(starttls=TlsPolicy.OFF, chunk_size=chunk_size), [(envelope, content)])
    result = pair(driver, ServerConfig())
    assert result.driver.result.error is None
    [received] = result.messages
    assert received.content == content
    assert received.mail.params.body == "BINARYMIME"


def test_several_messages_lmtp_and_tls_over_the_server() -> None:
    messages = [
        (Envelope("a@x.org", ["b@y.org", "c@y.org"]), b"one\r\n"),
        (Envelope("a@x.org", ["d@y.org"]), b".two"),
    ]
    for lmtp in (False, True):
        driver = ClientDriver(ClientConfig(lmtp=lmtp, starttls=TlsPolicy.REQUIRED), messages)
        result = pair(driver, ServerConfig(lmtp=lmtp, tls=TlsPolicy.REQUIRED, reject_improper_pipelining=True))
        outcome = result.driver.result
        assert outcome.error is None
        assert outcome.tls
        assert [m.content for m in result.messages] == [b"one\r\n", b".two\r\n"]
        assert [m.delivered for m in outcome.messages] == [("b@y.org", "c@y.org"), ("d@y.org",)]


def test_server_refusals_reach_the_right_recipients() -> None:
    def policy(server: ServerConnection, event: Event) -> None:
        from smtpcore import Rcpt, Reply

        if isinstance(event, Rcpt) and event.recipient.startswith("no"):
            server.send(Reply(550, "no such user", "5.1.1"))
        else:
            server.accept()

    envelope = Envelope("a@x.org", ["no1@y.org", "yes@y.org", "no2@y.org"])
    for pipelining in (True, False):
        driver = ClientDriver(ClientConfig(starttls=TlsPolicy.OFF), [(envelope, b"x")])
        result = pair(driver, ServerConfig(pipelining=pipelining), policy)
        outcome = result.driver.result.messages[0]
        assert outcome.delivered == ("yes@y.org",)
        assert sorted(outcome.refused) == ["no1@y.org", "no2@y.org"]
        refusal = outcome.refused["no1@y.org"]
        assert refusal.reply is not None
        assert refusal.reply.enhanced == "5.1.1"


# --- an envelope from the message's own headers, and Bcc never sent ---------------------------------


def _message(**headers: str | list[str]) -> EmailMessage:
    message = EmailMessage()
    for name, value in headers.items():
        for item in [value] if isinstance(value, str) else value:
            message[name.replace("_", "-")] = item
    message.set_content("Hello\n")
    return message


def test_bcc_recipients_get_the_message_and_no_one_sees_them() -> None:
    message = _message(From="Ann <ann@x.org>", To="bob@y.org", Cc="Cy <cy@y.org>", Bcc="Dee <dee@z.org>, eve@z.org")
    envelope = Envelope.from_message(message)
    assert (envelope.sender, [r.address for r in envelope.recipient_list]) == (
        "ann@x.org",
        ["bob@y.org", "dee@z.org", "eve@z.org", "cy@y.org"],  # smtplib's order: To, Bcc, Cc
    )
    result = pair(ClientDriver(ClientConfig(starttls=TlsPolicy.OFF), [(envelope, message)]), ServerConfig())
    [received] = result.messages
    assert [r.recipient for r in received.recipients] == ["bob@y.org", "dee@z.org", "eve@z.org", "cy@y.org"]
    assert b"\r\nTo: bob@y.org\r\n" in received.content and b"Bcc" not in received.content
    # Only in the RCPT commands: neither address is in what was sent after them.
    assert result.wire_to_server.count(b"dee@z.org") == result.wire_to_server.count(b"eve@z.org") == 1
    assert message["Bcc"] == "Dee <dee@z.org>, eve@z.org"  # the caller's message is as it was


def test_envelope_from_message_follows_smtplib() -> None:
    # Sender before From (RFC 5322 §3.6.2); To, Bcc and Cc, each address once;
    # groups and display names; UTF-8 addresses make the envelope need SMTPUTF8.
    message = _message(
        From="Ann <ann@x.org>",
        Sender="list-owner@x.org",
        To="bob@y.org, Team: cy@y.org, BOB@y.org;",
        Cc="undisclosed-recipients:;, dee@z.org",
        Bcc="jörg@exämple.com",
    )
    envelope = Envelope.from_message(message, MailParams(envid="e1"))
    assert envelope.sender == "list-owner@x.org" and envelope.params.envid == "e1"
    assert [r.address for r in envelope.recipient_list] == ["bob@y.org", "cy@y.org", "jörg@exämple.com", "dee@z.org"]
    assert envelope.needs_smtputf8
    # A message being resent (one Resent- block): its Resent- fields, not the original ones.
    resent = _message(From="ann@x.org", To="bob@y.org", Resent_Date="Mon, 7 Dec 2026 00:00:00 +0000")
    resent["Resent-From"] = "fwd@x.org"
    resent["Resent-To"] = "new@y.org"
    resent["Resent-Bcc"] = "hidden@y.org"
    envelope = Envelope.from_message(resent)
    assert (envelope.sender, [r.address for r in envelope.recipient_list]) == (
        "fwd@x.org",
        ["new@y.org", "hidden@y.org"],
    )
    result = pair(ClientDriver(ClientConfig(starttls=TlsPolicy.OFF), [(envelope, resent)]), ServerConfig())
    assert b"hidden@y.org" not in result.messages[0].content
    assert b"Resent-To: new@y.org" in result.messages[0].content


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"To": "bob@y.org"}, "no From address"),
        ({"From": "undisclosed-recipients:;", "To": "bob@y.org"}, "no From address"),
        ({"From": "ann@x.org"}, "no To, Cc or Bcc address"),
        ({"From": "ann@x.org", "To": "undisclosed-recipients:;"}, "no To, Cc or Bcc address"),
        ({"From": "ann@x.org", "To": "b@y.org", "Resent_Date": ["Mon, 7 Dec 2026 00:00:00 +0000"] * 2}, "Resent-"),
        ({"From": "ann@x.org", "To": "b@y.org", "Resent_Date": "Mon, 7 Dec 2026 00:00:00 +0000"}, "no Resent-From"),
    ],
)
def test_envelope_from_message_says_what_is_missing(headers: dict[str, str | list[str]], says: str) -> None:
    with pytest.raises(LocalProtocolError, match=says):
        Envelope.from_message(_message(**headers))


@pytest.mark.parametrize(
    "headers",
    [
        {"From": "Ann <ann@x.org>", "To": "bob@y.org, Cy <cy@y.org>", "Bcc": "dee@z.org"},
        {"From": "ann@x.org", "Sender": "owner@x.org", "Cc": "Team: a@y.org, b@y.org;", "Bcc": "c@z.org"},
        {"From": "ann@x.org", "To": "jörg@exämple.com", "Cc": "bob@y.org, BOB@y.org"},
        {"From": "ann@x.org", "To": "bob@y.org", "Resent_Date": "Mon, 7 Dec 2026 00:00:00 +0000"},
    ],
)
def test_envelope_from_message_agrees_with_smtplib(headers: dict[str, str]) -> None:
    # smtplib's own send_message, stopped where it hands the envelope to sendmail.
    message = _message(**headers)
    if "Resent_Date" in headers:
        message["Resent-From"], message["Resent-To"], message["Resent-Bcc"] = "fwd@x.org", "new@y.org", "h@y.org"
    seen: dict[str, Any] = {}

    def sendmail(from_addr: str, to_addrs: list[str], msg: bytes, *args: Any) -> dict[str, Any]:
        seen.update(sender=from_addr, recipients=to_addrs, content=msg)
        return {}

    client = smtplib.SMTP()
    client.sendmail = sendmail  # type: ignore[method-assign, assignment]
    client.ehlo_resp, client.esmtp_features = b"", {"smtputf8": ""}  # what it asks before SMTPUTF8
    client.send_message(message)
    envelope = Envelope.from_message(message)
    assert envelope.sender == seen["sender"]
    once: dict[str, str] = {}  # smtplib sends an address as often as the headers name it; we, once
    for address in seen["recipients"]:
        once.setdefault(address.lower(), address)
    assert [r.address for r in envelope.recipient_list] == list(once.values())
    result = pair(ClientDriver(ClientConfig(starttls=TlsPolicy.OFF), [(envelope, message)]), ServerConfig())
    assert b"Bcc" not in seen["content"] and b"Bcc" not in result.messages[0].content  # neither sends it


@pytest.mark.parametrize("token_length", [100, 3000])
def test_xoauth2_bearer_tokens_short_and_long_reach_the_server(token_length: int) -> None:
    # A long token goes as the answer to an empty 334 (RFC 4954 §4), a short one on the AUTH line.
    token = "t" * token_length
    config = ServerConfig(auth=AuthPolicy.REQUIRED, allow_insecure_auth=True, auth_mechanisms=("XOAUTH2",))
    seen: list[AuthCredentials] = []

    def policy(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, AuthCredentials):
            seen.append(event)
        conn.accept()

    driver = ClientDriver(
        ClientConfig(starttls=TlsPolicy.OFF, allow_insecure_auth=True),
        [(Envelope("a@x.org", ["b@y.org"]), b"hi")],
        credentials=Credentials("u@x.org", token=token),
    )
    result = pair(driver, config, policy)
    assert result.driver.result.error is None and len(result.messages) == 1
    assert [(c.username, c.token) for c in seen] == [("u@x.org", token)]
    assert (b"AUTH XOAUTH2\r\n" in result.wire_to_server) == (token_length > 300)


def test_a_message_whose_commands_cannot_be_written_fails_alone_before_any_of_it_is_sent() -> None:
    # A parameter value with a space, or a RCPT line too long even for its extensions,
    # shows only when written: the message fails there, the ones around it go.
    address = "a" * 64 + "@" + ".".join(["d" * 60] * 3)
    bad_value = Envelope("a@x.org", ["b@y.org"], MailParams(extra=(("X-TAG", "a b"),)))
    too_long = Envelope("a@x.org", [Recipient(address, RcptParams(extra=(("X-LONG", "v" * 400),)))])
    # A lone surrogate (what sys.argv holds for octets that are not UTF-8) is no text to send.
    surrogate = Envelope("a@x.org", [Recipient("b@y.org", RcptParams(orcpt=("rfc822", "b\udcff@y.org")))])
    good = Envelope("a@x.org", ["c@y.org"])
    for pipelining in (True, False):
        driver = ClientDriver(
            ClientConfig(starttls=TlsPolicy.OFF),
            [(good, b"one"), (bad_value, b"two"), (too_long, b"three"), (surrogate, b"3b"), (good, b"four")],
        )
        result = pair(driver, ServerConfig(pipelining=pipelining, dsn=True))
        outcome = result.driver.result
        assert outcome.error is None
        assert [m.delivered for m in outcome.messages] == [("c@y.org",), (), (), (), ("c@y.org",)]
        for failed in outcome.messages[1:4]:
            assert isinstance(failed.error, SMTPPermanentError) and "cannot send" in str(failed.error)
        assert "lone surrogate" in str(outcome.messages[3].error)
        assert [m.content for m in result.messages] == [b"one\r\n", b"four\r\n"]
        assert b"X-TAG" not in result.wire_to_server and b"X-LONG" not in result.wire_to_server
