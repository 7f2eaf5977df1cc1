"""Whole client sessions through the ClientDriver against scripted server replies.

Each test is a C:/S: transcript: the exact bytes the client must write, and the
server's replies.  Every transcript also runs with the server's bytes fed one at
a time, which must change nothing.
"""

from __future__ import annotations

import base64
import copy
import email
import email.policy
import hmac
import io
from collections.abc import Iterable, Iterator
from email.header import Header
from email.message import EmailMessage
from email.mime.text import MIMEText
from typing import Any

import pytest
from client_helpers import byte_split, pair, run_client_transcript, take_output

from smtpcore import (
    AuthResponse,
    BareNewlinePolicy,
    Bdat,
    ClientConfig,
    ClientDriver,
    Credentials,
    EndOfMessage,
    Envelope,
    Hello,
    LocalProtocolError,
    Mail,
    MailParams,
    Message,
    Rcpt,
    RcptParams,
    Recipient,
    Reply,
    ServerConfig,
    SessionOutcome,
    SMTPAuthenticationError,
    SMTPDeliveryError,
    SMTPNotSupportedError,
    SMTPPermanentError,
    SMTPTransientError,
    TlsPolicy,
)
from smtpcore._dotstuff import stuff

HOST = "client.example"
ENV = Envelope("a@x.org", ["b@y.org", "c@y.org"])
ONE = Envelope("a@x.org", ["b@y.org"])


def make(messages: Iterable[tuple[Envelope, Message]], **options: Any) -> ClientDriver:
    options.setdefault("local_hostname", HOST)
    options.setdefault("starttls", TlsPolicy.OFF)
    credentials = options.pop("credentials", None)
    mechanisms = options.pop("mechanisms", None)
    return ClientDriver(ClientConfig(**options), messages, credentials=credentials, mechanisms=mechanisms)


@pytest.mark.parametrize(
    ("address", "name"),
    [
        (None, "localhost"),  # a driver nobody told
        ("192.0.2.7", "[192.0.2.7]"),
        ("2001:db8::7", "[IPv6:2001:db8::7]"),
        ("::ffff:192.0.2.7", "[192.0.2.7]"),  # IPv4 through a dual-stack socket
        ("fe80::1%eth0", "[IPv6:fe80::1]"),
        ("/run/smtp.sock", "localhost"),  # no IP address: ignored
    ],
)
def test_without_a_configured_name_ehlo_names_the_local_address(address: str | None, name: str) -> None:
    driver = ClientDriver(ClientConfig(starttls=TlsPolicy.OFF))
    if address is not None:
        driver.set_local_address(address)
    driver.receive(b"220 mx ESMTP\r\n")
    assert driver.bytes_to_send() == f"EHLO {name}\r\n".encode()
    named = ClientDriver(ClientConfig(local_hostname="client.example"))
    named.set_local_address("192.0.2.7")
    named.receive(b"220 mx ESMTP\r\n")
    assert named.bytes_to_send() == b"EHLO client.example\r\n"


def test_misuse_of_the_driver_says_what_to_do() -> None:
    envelope = Envelope("a@b.example", ["c@d.example"])
    with pytest.raises(LocalProtocolError, match=r"\(Envelope, message\) pairs, not Envelope"):
        ClientDriver(ClientConfig(), [envelope])  # type: ignore[list-item]
    driver = ClientDriver(ClientConfig())
    with pytest.raises(LocalProtocolError, match="not str"):
        driver.receive("220 hi\r\n")  # type: ignore[arg-type]
    driver.receive(b"220 hi\r\n")
    with pytest.raises(LocalProtocolError, match="before the greeting"):  # the EHLO is already written
        driver.set_local_address("192.0.2.7")


def run(text: str, messages: Iterable[tuple[Envelope, Message]], **options: Any) -> SessionOutcome:
    """Run whole and byte by byte; both must give the same outcome."""
    whole = run_client_transcript(text, make(messages, **options))
    drip = run_client_transcript(text, make(messages, **options), split=byte_split)
    assert whole.done
    assert drip.done
    assert repr(drip.result) == repr(whole.result)
    return whole.result


def reply_of(error: SMTPDeliveryError | None) -> Reply:
    """The reply behind ``error``: asked for only where the test expects one."""
    assert error is not None and error.reply is not None
    return error.reply


EHLO_PIPE = """
S: 220 mx.y.org ESMTP
C: EHLO client.example
S: 250-mx.y.org
S: 250-PIPELINING
S: 250-SIZE 1000
S: 250-ENHANCEDSTATUSCODES
S: 250 8BITMIME
"""

EHLO_PLAIN = """
S: 220 mx.y.org ESMTP
C: EHLO client.example
S: 250 mx.y.org
"""


def test_pipelined_session_with_one_recipient_refused() -> None:
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=4
        C: RCPT TO:<b@y.org>
        C: RCPT TO:<c@y.org>
        C: DATA
        S: 250 2.1.0 ok
        S: 550 5.1.1 no such user
        S: 250 2.1.5 ok
        S: 354 go
        C: Hi
        C: .
        C: QUIT
        S: 250 2.0.0 queued
        S: 221 2.0.0 bye
        """,
        [(ENV, b"Hi\r\n")],
    )
    assert result.error is None
    message = result.messages[0]
    assert message.error is None
    assert message.delivered == ("c@y.org",)
    refused = message.refused["b@y.org"]
    assert isinstance(refused, SMTPPermanentError)
    assert not refused.transient
    assert refused.reply is not None
    assert refused.reply.code == 550
    assert refused.reply.enhanced == "5.1.1"
    assert isinstance(refused.command, Rcpt)
    assert refused.command.recipient == "b@y.org"
    assert message.recipients[1].data_reply is not None
    assert message.recipients[1].data_reply.code == 250
    assert result.capabilities is not None
    assert result.capabilities.pipelining


def test_without_pipelining_each_command_waits_and_content_is_stuffed() -> None:
    result = run(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: ..start
        C: middle
        C: ..
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b".start\nmiddle\r\n.")],
    )
    assert result.messages[0].delivered == ("b@y.org",)


def test_ehlo_refused_falls_back_to_helo_and_7bit_needs_nothing() -> None:
    result = run(
        """
        S: 220 old.example SMTP
        C: EHLO client.example
        S: 502 what
        C: HELO client.example
        S: 250 old.example
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: Hi
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"Hi")],
    )
    assert result.error is None
    assert result.capabilities is not None
    assert result.capabilities.keywords == frozenset()


def test_helo_session_refuses_8bit_content_before_mail() -> None:
    result = run(
        """
        S: 220 old.example SMTP
        C: EHLO client.example
        S: 500 what
        C: HELO client.example
        S: 250 old.example
        C: QUIT
        S: 221 bye
        """,
        [(ONE, "Grüße\r\n".encode())],
    )
    error = result.messages[0].error
    assert isinstance(error, SMTPNotSupportedError)
    assert "8BITMIME" in str(error)
    assert result.error is None


@pytest.mark.parametrize(("code", "kind"), [(554, SMTPPermanentError), (451, SMTPTransientError)])
def test_ehlo_and_helo_refused(code: int, kind: type[SMTPDeliveryError]) -> None:
    result = run(
        f"""
        S: 220 mx ESMTP
        C: EHLO client.example
        S: {code} go away
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
    )
    assert isinstance(result.error, kind)
    assert result.messages[0].error is result.error
    assert result.messages[0].recipients[0].error is result.error
    result = run(
        f"""
        S: 220 mx ESMTP
        C: EHLO client.example
        S: 502 no
        C: HELO client.example
        S: {code} go away
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
    )
    assert isinstance(result.error, kind)
    assert isinstance(result.error.command, Hello)
    assert result.error.command.verb == "HELO"


def test_greeting_554_quits_and_421_just_ends() -> None:
    result = run(
        """
        S: 554 no service
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
    )
    assert isinstance(result.error, SMTPPermanentError)
    assert result.error.reply is not None
    assert result.error.reply.code == 554
    assert result.error.command is None
    result = run("S: 421 busy", [(ONE, b"x")])
    assert isinstance(result.error, SMTPTransientError)
    assert result.error.transient


def test_every_recipient_refused_pipelined_sends_no_content_and_resets() -> None:
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=3
        C: RCPT TO:<b@y.org>
        C: RCPT TO:<c@y.org>
        C: DATA
        S: 250 ok
        S: 450 4.2.0 greylisted
        S: 451 4.3.0 later
        S: 554 5.5.1 no valid recipients
        C: RSET
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ENV, b"x\r\n")],
    )
    message = result.messages[0]
    assert isinstance(message.error, SMTPTransientError)  # every refusal was 4xx: retry later
    assert message.delivered == ()
    assert set(message.refused) == {"b@y.org", "c@y.org"}
    assert str(message.error) == "every recipient was refused (2 different replies; the last: 451 4.3.0 later)"


def test_every_recipient_refused_says_the_reply() -> None:
    # A caller who logs only the message's error must still see why.
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=3
        C: RCPT TO:<b@y.org>
        C: RCPT TO:<c@y.org>
        C: DATA
        S: 250 ok
        S: 504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname
        S: 504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname
        S: 554 5.5.1 no valid recipients
        C: RSET
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ENV, b"x\r\n")],
    )
    error = result.messages[0].error
    assert isinstance(error, SMTPPermanentError)
    assert str(error) == (
        "every recipient was refused: 504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"
    )


def test_every_recipient_refused_but_server_says_354_ends_empty_content() -> None:
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=3
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 550 no
        S: 354 go anyway
        C: .
        S: 554 no recipients
        C: RSET
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x\r\n")],
    )
    assert isinstance(result.messages[0].error, SMTPPermanentError)


def test_every_recipient_refused_without_pipelining_skips_data() -> None:
    result = run(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 550 no
        C: RCPT TO:<c@y.org>
        S: 451 later
        C: RSET
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ENV, b"x")],
    )
    error = result.messages[0].error
    assert isinstance(error, SMTPPermanentError)  # one refusal was permanent
    assert error.reply is not None
    assert error.reply.code == 451


def test_mail_refused_without_pipelining_sends_no_rcpt() -> None:
    result = run(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 553 sender rejected
        C: QUIT
        S: 221 bye
        """,
        [(ENV, b"x")],
    )
    message = result.messages[0]
    assert message.error is not None
    assert message.error.reply is not None
    assert message.error.reply.code == 553
    assert isinstance(message.error.command, Mail)
    assert message.error.command.sender == "a@x.org"
    assert all(item.rcpt_reply is None for item in message.recipients)


def test_421_in_the_middle_ends_the_session_without_quit() -> None:
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=3
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 421 4.3.2 shutting down
        """,
        [(ONE, b"x\r\n"), (ENV, b"y\r\n")],
    )
    assert isinstance(result.error, SMTPTransientError)
    assert result.error.reply is not None
    assert result.error.reply.code == 421
    assert [m.error for m in result.messages] == [result.error, result.error]


def test_a_421_keeps_the_refusals_that_came_before_it() -> None:
    # Postfix (and smtpcore's server) end a session at its 20th error with 421:
    # the recipients refused before it are refused for good, so that a relay
    # bounces them instead of retrying the same 550s for ever; the rest wait.
    three = Envelope("a@x.org", ["b@y.org", "c@y.org", "d@y.org", "e@y.org"])
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=3
        C: RCPT TO:<b@y.org>
        C: RCPT TO:<c@y.org>
        C: RCPT TO:<d@y.org>
        C: RCPT TO:<e@y.org>
        C: DATA
        S: 250 2.1.0 ok
        S: 250 2.1.5 ok
        S: 550 5.1.1 no such user
        S: 421 4.7.0 too many errors
        """,
        [(three, b"x\r\n"), (ONE, b"y\r\n")],
    )
    assert isinstance(result.error, SMTPTransientError)
    first, second = result.messages
    assert first.error is result.error and first.delivered == ()
    b, c, d, e = first.recipients
    assert reply_of(b.error) == reply_of(result.error)  # accepted, but no message went out
    assert b.rcpt_reply is not None and b.rcpt_reply.code == 250
    assert isinstance(c.error, SMTPPermanentError) and reply_of(c.error).code == 550
    assert isinstance(c.error.command, Rcpt) and c.error.command.recipient == "c@y.org"
    assert d.error is e.error is result.error and d.rcpt_reply is None
    assert second.error is result.error


def test_a_421_after_some_lmtp_recipients_keeps_their_deliveries() -> None:
    # Each LMTP recipient's reply is final: one delivered before the 421 must not
    # be retried (it would arrive twice), one refused before it stays refused.
    three = Envelope("a@x.org", ["b@y.org", "c@y.org", "d@y.org"])
    result = run(
        """
        S: 220 lmtp
        C: LHLO client.example
        S: 250-lmtp
        S: 250 PIPELINING
        C: MAIL FROM:<a@x.org>
        C: RCPT TO:<b@y.org>
        C: RCPT TO:<c@y.org>
        C: RCPT TO:<d@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: x
        C: .
        C: QUIT
        S: 250 delivered
        S: 452 mailbox full
        S: 421 going away
        """,
        [(three, b"x")],
        lmtp=True,
    )
    message = result.messages[0]
    assert message.delivered == ("b@y.org",)
    assert message.error is None
    assert message.recipients[0].data_reply is not None
    full = message.refused["c@y.org"]
    assert reply_of(full).code == 452 and isinstance(full.command, EndOfMessage)
    assert message.refused["d@y.org"] is result.error


@pytest.mark.parametrize("stray", ["221 bye", "354 go"])
def test_an_lmtp_server_a_reply_short_is_out_of_step_not_a_delivery(stray: str) -> None:
    # The QUIT pipelined behind the end of data got its 221, which was credited to the
    # last recipient as its delivery.  No server ends a message with 221 or a 3xx.
    two = Envelope("a@x.org", ["b@y.org", "c@y.org"])
    result = run(
        """
        S: 220 lmtp
        C: LHLO client.example
        S: 250-lmtp
        S: 250 PIPELINING
        C: MAIL FROM:<a@x.org>
        C: RCPT TO:<b@y.org>
        C: RCPT TO:<c@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: x
        C: .
        C: QUIT
        S: 250 delivered
        """
        + f"S: {stray}\n",
        [(two, b"x")],
        lmtp=True,
    )
    message = result.messages[0]
    assert message.delivered == ("b@y.org",)
    error = message.refused["c@y.org"]
    assert error.transient and "may have been delivered" in str(error)
    assert "out of step" in str(result.error)


def test_a_lost_connection_keeps_the_refusals_and_the_earlier_transactions() -> None:
    # RCPTMAX splits the recipients: the first transaction's outcome stands, the
    # second's 550 came before the connection broke, the one after it is unknown.
    envelope = Envelope("a@x.org", ["b@y.org", "c@y.org", "d@y.org", "e@y.org"])
    result = run(
        """
        S: 220 mx
        C: EHLO client.example
        S: 250-mx
        S: 250 LIMITS RCPTMAX=2
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: RCPT TO:<c@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: x
        C: .
        S: 250 ok
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<d@y.org>
        S: 550 no
        C: RCPT TO:<e@y.org>
        CLOSE
        """,
        [(envelope, b"x")],
    )
    message = result.messages[0]
    assert message.delivered == ("b@y.org", "c@y.org")
    assert message.error is None
    assert reply_of(message.refused["d@y.org"]).code == 550
    assert message.refused["e@y.org"] is result.error and result.error.transient


@pytest.mark.parametrize("chunking", [False, True])
def test_a_connection_lost_after_the_end_of_data_says_the_message_may_be_delivered(chunking: bool) -> None:
    # RFC 5321 §4.5.3.2.6: the server may have the message.  A relay must be able to tell
    # this from a message never sent (it once read the same as a loss after MAIL).
    envelope = Envelope("a@x.org", ["b@y.org", "c@y.org"])
    end = "C: BDAT 3 LAST\nC: x\r\n" if chunking else "C: DATA\nS: 354 go\nC: x\nC: .\n"
    result = run(
        "S: 220 mx\nC: EHLO client.example\nS: 250-mx\n"
        + ("S: 250 CHUNKING\n" if chunking else "S: 250 8BITMIME\n")
        + "C: MAIL FROM:<a@x.org>\nS: 250 ok\nC: RCPT TO:<b@y.org>\nS: 250 ok\nC: RCPT TO:<c@y.org>\nS: 550 no\n"
        + end
        + "CLOSE\n",
        [(envelope, b"x")],
    )
    message = result.messages[0]
    error = message.error
    assert isinstance(error, SMTPTransientError)
    assert "after the whole message was sent: it may have been delivered" in str(error)
    assert error.command == (Bdat(3, last=True) if chunking else EndOfMessage())
    assert message.refused["b@y.org"] is error
    assert reply_of(message.refused["c@y.org"]).code == 550  # refused before: stays refused
    # Lost before the end went out: never sent, and no such words.
    result = run(EHLO_PLAIN + "C: MAIL FROM:<a@x.org>\nS: 250 ok\nC: RCPT TO:<b@y.org>\nCLOSE\n", [(ENV, b"x")])
    assert result.messages[0].error is not None and "may have been delivered" not in str(result.messages[0].error)
    assert result.messages[0].error.command is None


def test_a_421_to_mail_leaves_every_recipient_to_retry() -> None:
    # Without pipelining nothing but MAIL was sent; and a refused MAIL decides
    # every recipient, whether its RCPT's reply came before the 421 or not.
    result = run(EHLO_PLAIN + "C: MAIL FROM:<a@x.org>\nS: 421 bye\n", [(ENV, b"x")])
    assert [r.error for r in result.messages[0].recipients] == [result.error, result.error]
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=3
        C: RCPT TO:<b@y.org>
        C: RCPT TO:<c@y.org>
        C: DATA
        S: 550 5.7.1 sender blocked
        S: 503 5.5.1 MAIL first
        S: 421 4.7.0 too many errors
        """,
        [(ENV, b"x\r\n")],
    )
    b, c = result.messages[0].recipients
    assert reply_of(b.error).code == 550 and isinstance(b.error, SMTPPermanentError)
    assert isinstance(b.error.command, Mail)
    assert b.rcpt_reply is not None and b.rcpt_reply.code == 503
    assert c.error is b.error  # its reply never came, but the refused MAIL decides it


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_250_to_data_is_no_delivery(pipelining: bool) -> None:
    # Not one byte of content went out: taking the 250 as the end-of-data reply would
    # report mail as delivered that was lost (smtplib raises SMTPDataError here).
    result = run(
        (EHLO_PIPE if pipelining else EHLO_PLAIN)
        + (
            "C: MAIL FROM:<a@x.org> SIZE=3\nC: RCPT TO:<b@y.org>\nC: DATA\nS: 250 ok\nS: 250 ok\n"
            if pipelining
            else "C: MAIL FROM:<a@x.org>\nS: 250 ok\nC: RCPT TO:<b@y.org>\nS: 250 ok\nC: DATA\n"
        )
        + "S: 250 2.0.0 ok\n",
        [(ONE, b"x\r\n")],
    )
    message = result.messages[0]
    assert message.delivered == () and isinstance(message.error, SMTPTransientError)
    assert "not 354" in str(result.error)


def test_server_closing_the_connection_is_transient() -> None:
    result = run(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        CLOSE
        """,
        [(ONE, b"x")],
    )
    assert isinstance(result.error, SMTPTransientError)


def test_protocol_violation_is_transient() -> None:
    result = run(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 2500 what
        """,
        [(ONE, b"x")],
    )
    assert isinstance(result.error, SMTPTransientError)
    assert "protocol" in str(result.error)


def test_data_refused_resets_and_final_refusal_reaches_every_recipient() -> None:
    result = run(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 451 not now
        C: RSET
        S: 250 ok
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: RCPT TO:<c@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: y
        C: .
        S: 554 5.7.1 spam
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x"), (ENV, b"y")],
    )
    first, second = result.messages
    assert isinstance(first.error, SMTPTransientError)
    assert first.error.command.__class__.__name__ == "Data"
    assert isinstance(second.error, SMTPPermanentError)
    assert {reply_of(item.error).code for item in second.recipients} == {554}


# --- STARTTLS --------------------------------------------------------------------------------------

EHLO_TLS = """
S: 220 mx ESMTP
C: EHLO client.example
S: 250-mx
S: 250-PIPELINING
S: 250 STARTTLS
C: STARTTLS
"""


def test_starttls_discards_injected_replies_and_starts_over() -> None:
    result = run(
        EHLO_TLS
        + """
        S: 220 go ahead
        S: 250-injected
        S: 250 PIPELINING
        TLS
        C: EHLO client.example
        S: 250-mx
        S: 250 AUTH PLAIN
        C: AUTH PLAIN AHVzZXIAc2VjcmV0
        S: 235 ok
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: x
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
        starttls=TlsPolicy.REQUIRED,
        credentials=Credentials("user", "secret"),
    )
    assert result.tls
    assert result.error is None
    assert result.capabilities is not None
    assert not result.capabilities.pipelining  # the pre-TLS capabilities were forgotten
    assert result.capabilities.auth_mechanisms == ("PLAIN",)


@pytest.mark.parametrize(("code", "kind"), [(454, SMTPTransientError), (502, SMTPPermanentError)])
def test_starttls_refused_with_tls_required_never_continues(code: int, kind: type[SMTPDeliveryError]) -> None:
    result = run(
        EHLO_TLS
        + f"""
        S: {code} TLS not available
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
        starttls=TlsPolicy.REQUIRED,
    )
    assert isinstance(result.error, kind)
    assert result.error.reply is not None
    assert result.error.reply.code == code
    assert not result.tls


def test_tls_required_but_not_offered() -> None:
    result = run(
        EHLO_PIPE
        + """
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
        starttls=TlsPolicy.REQUIRED,
    )
    assert isinstance(result.error, SMTPNotSupportedError)
    assert "STARTTLS" in str(result.error)


def test_opportunistic_tls_continues_in_plaintext_after_454() -> None:
    result = run(
        EHLO_TLS
        + """
        S: 454 no
        C: MAIL FROM:<a@x.org>
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: x
        C: .
        C: QUIT
        S: 250 ok
        S: 221 bye
        """,
        [(ONE, b"x")],
        starttls=TlsPolicy.OPTIONAL,
    )
    assert result.error is None
    assert not result.tls


# --- AUTH ------------------------------------------------------------------------------------------

EHLO_AUTH = """
S: 220 mx ESMTP
C: EHLO client.example
S: 250-mx
S: 250 AUTH LOGIN PLAIN CRAM-MD5 XOAUTH2
"""


def test_auth_with_a_server_that_lists_mechanisms_only_in_the_old_form() -> None:
    result = run(
        """
        S: 220 mx ESMTP
        C: EHLO client.example
        S: 250-old
        S: 250-AUTH=LOGIN PLAIN
        S: 250 SIZE
        C: AUTH PLAIN AHVzZXIAcHc=
        S: 235 ok
        C: QUIT
        S: 221 bye
        """,
        [],
        credentials=Credentials("user", "pw"),
        allow_insecure_auth=True,
    )
    assert result.error is None


def test_auth_never_before_tls_without_permission() -> None:
    result = run(
        EHLO_AUTH
        + """
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
        credentials=Credentials("user", "pw"),
    )
    assert isinstance(result.error, SMTPNotSupportedError)
    assert "TLS" in str(result.error)


def test_auth_login_and_failure() -> None:
    user, password = base64.b64encode(b"user").decode(), base64.b64encode(b"pw").decode()
    result = run(
        EHLO_AUTH
        + f"""
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: {user}
        S: 334 UGFzc3dvcmQ6
        C: {password}
        S: 535 5.7.8 bad credentials
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
        credentials=Credentials("user", "pw"),
        allow_insecure_auth=True,
        auth_mechanisms=("LOGIN",),
    )
    assert isinstance(result.error, SMTPAuthenticationError)
    assert result.error.reply is not None
    assert result.error.reply.enhanced is None  # ENHANCEDSTATUSCODES was not advertised


def test_auth_cram_md5_and_transient_failure() -> None:
    challenge = b"<123@mx>"
    digest = hmac.new(b"pw", challenge, "md5").hexdigest()
    answer = base64.b64encode(b"user " + digest.encode()).decode()
    result = run(
        EHLO_AUTH
        + f"""
        C: AUTH CRAM-MD5
        S: 334 {base64.b64encode(challenge).decode()}
        C: {answer}
        S: 454 try later
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
        credentials=Credentials("user", "pw"),
        allow_insecure_auth=True,
    )
    assert isinstance(result.error, SMTPTransientError)


def test_after_a_5xx_the_next_mechanism_is_tried_each_once() -> None:
    # A server that keeps some passwords hashed: CRAM-MD5 gets 535, PLAIN gets in (smtplib
    # tries each in turn too).  XOAUTH2 has no token here, so it is never tried.
    challenge = base64.b64encode(b"<1@mx>").decode()
    cram = base64.b64encode(b"user " + hmac.new(b"pw", b"<1@mx>", "md5").hexdigest().encode()).decode()
    user, password = base64.b64encode(b"user").decode(), base64.b64encode(b"pw").decode()
    cram_then = f"""
        C: AUTH CRAM-MD5
        S: 334 {challenge}
        C: {cram}
        S: 535 5.7.8 bad credentials
        """
    result = run(
        EHLO_AUTH + cram_then + "C: AUTH PLAIN AHVzZXIAcHc=\nS: 235 ok\nC: QUIT\nS: 221 bye",
        [],
        credentials=Credentials("user", "pw"),
        implicit_tls=True,
    )
    assert result.error is None
    # Without TLS, never: a man in the middle would answer 535 to CRAM-MD5 to read the
    # password PLAIN sends next.
    result = run(
        EHLO_AUTH + cram_then + "C: QUIT\nS: 221 bye",
        [],
        credentials=Credentials("user", "pw"),
        allow_insecure_auth=True,
    )
    assert isinstance(result.error, SMTPAuthenticationError)
    assert result.error.server_error is None  # a password: no OAuth error challenge to keep
    # Every one refused: the error names each; the last reply is the error's.
    result = run(
        EHLO_AUTH
        + cram_then
        + f"""
        C: AUTH PLAIN AHVzZXIAcHc=
        S: 504 5.5.4 not for you
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: {user}
        S: 334 UGFzc3dvcmQ6
        C: {password}
        S: 535 5.7.8 no
        C: QUIT
        S: 221 bye
        """,
        [],
        credentials=Credentials("user", "pw"),
        implicit_tls=True,
    )
    assert isinstance(result.error, SMTPAuthenticationError)
    assert reply_of(result.error).code == 535 and isinstance(result.error.command, AuthResponse)
    assert all(each in str(result.error) for each in ("CRAM-MD5: 535", "PLAIN: 504", "LOGIN: 535"))
    # A 4xx stops at once.
    result = run(
        EHLO_AUTH + "C: AUTH PLAIN AHVzZXIAcHc=\nS: 454 4.7.0 try later\nC: QUIT\nS: 221 bye",
        [],
        credentials=Credentials("user", "pw"),
        allow_insecure_auth=True,
        auth_mechanisms=("PLAIN", "LOGIN"),
    )
    assert isinstance(result.error, SMTPTransientError)


def test_auth_xoauth2_error_challenge_gets_an_empty_response() -> None:
    initial = base64.b64encode(b"user=u@x\x01auth=Bearer tok\x01\x01").decode()
    result = run(
        EHLO_AUTH
        + f"""
        C: AUTH XOAUTH2 {initial}
        S: 334 eyJzdGF0dXMiOiI0MDEifQ==
        C:
        S: 535 bad token
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
        credentials=Credentials("u@x", token="tok"),
        allow_insecure_auth=True,
    )
    assert isinstance(result.error, SMTPAuthenticationError)


def test_auth_initial_response_too_long_for_the_line_answers_the_first_challenge() -> None:
    # RFC 4954 §4: an initial response that would make the AUTH line longer than 512
    # octets MUST NOT go on it; it goes as the answer to the server's empty 334.
    token = "t" * 400
    response = base64.b64encode(f"user=u@x\x01auth=Bearer {token}\x01\x01".encode()).decode()
    assert len(f"AUTH XOAUTH2 {response}\r\n") > 512
    result = run(
        EHLO_AUTH
        + f"""
        C: AUTH XOAUTH2
        S: 334
        C: {response}
        S: 235 2.7.0 ok
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: x
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
        credentials=Credentials("u@x", token=token),
        allow_insecure_auth=True,
    )
    assert result.error is None and result.messages[0].delivered == ("b@y.org",)


def test_auth_bad_challenge_is_cancelled() -> None:
    result = run(
        EHLO_AUTH
        + """
        C: AUTH LOGIN
        S: 334 not*base64
        C: *
        S: 501 cancelled
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"x")],
        credentials=Credentials("user", "pw"),
        allow_insecure_auth=True,
        auth_mechanisms=("LOGIN",),
    )
    assert isinstance(result.error, SMTPAuthenticationError)
    assert isinstance(result.error.command, AuthResponse)
    assert result.error.command.cancel


def test_a_challenge_after_the_client_cancelled_ends_the_session() -> None:
    # RFC 4954 §4: "*" MUST get 501.  A server answering 334 again would have the
    # client cancel for ever, each reply in time, so no timeout would end it.
    result = run(
        EHLO_AUTH
        + """
        C: AUTH LOGIN
        S: 334 not*base64
        C: *
        S: 334 again
        """,
        [(ONE, b"x")],
        credentials=Credentials("user", "pw"),
        allow_insecure_auth=True,
        auth_mechanisms=("LOGIN",),
    )
    assert isinstance(result.error, SMTPTransientError)
    assert "after the client cancelled" in str(result.error)


def test_a_mechanism_that_never_gives_up_is_cancelled_after_ten_challenges() -> None:
    class Chatty:
        name = "X-CHATTY"

        def __init__(self, credentials: Credentials) -> None:
            pass

        def initial_response(self) -> bytes | None:
            return None

        def respond(self, challenge: bytes) -> bytes:
            return b"more"

    more = base64.b64encode(b"more").decode()
    exchange = "".join(f"S: 334 \nC: {more}\n" for _ in range(10))
    result = run(
        "S: 220 mx\nC: EHLO client.example\nS: 250-mx\nS: 250 AUTH X-CHATTY\nC: AUTH X-CHATTY\n"
        + exchange
        + "S: 334 \nC: *\nS: 501 5.7.0 cancelled\nC: QUIT\nS: 221 bye\n",
        [(ONE, b"x")],
        credentials=Credentials("user", "pw"),
        allow_insecure_auth=True,
        auth_mechanisms=("X-CHATTY",),
        mechanisms={"X-CHATTY": Chatty},
    )
    assert isinstance(result.error, SMTPAuthenticationError)


def test_auth_no_common_mechanism_and_bad_credentials() -> None:
    result = run(
        EHLO_AUTH + "C: QUIT\nS: 221 bye",
        [(ONE, b"x")],
        credentials=Credentials("user", "pw"),
        allow_insecure_auth=True,
        auth_mechanisms=("SCRAM-SHA-256",),
    )
    assert isinstance(result.error, SMTPNotSupportedError)
    assert "LOGIN PLAIN" in str(result.error)
    result = run(
        EHLO_AUTH + "C: QUIT\nS: 221 bye",
        [(ONE, b"x")],
        credentials=Credentials("user", "p\x00w"),
        allow_insecure_auth=True,
        auth_mechanisms=("PLAIN",),
    )
    assert isinstance(result.error, SMTPNotSupportedError)
    assert "NUL" in str(result.error)
    # A Latin-1 password read from a UTF-8 environment: os.environ holds "p\udce9ss".  The
    # UnicodeEncodeError escaped receive(), leaving the driver unfinished and no QUIT sent.
    for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
        result = run(
            EHLO_AUTH + "C: QUIT\nS: 221 bye",
            [(ONE, b"x")],
            credentials=Credentials("user", "p\udce9ss"),
            allow_insecure_auth=True,
            auth_mechanisms=(mechanism,),
        )
        assert isinstance(result.error, SMTPNotSupportedError), mechanism
        assert "password is not valid Unicode text" in str(result.error)


def test_custom_mechanism() -> None:
    class Anonymous:
        name = "ANONYMOUS"

        def __init__(self, credentials: Credentials) -> None:
            self.trace = credentials.username.encode()

        def initial_response(self) -> bytes:
            return self.trace

        def respond(self, challenge: bytes) -> bytes:
            return self.trace

    result = run(
        """
        S: 220 mx
        C: EHLO client.example
        S: 250-mx
        S: 250 AUTH ANONYMOUS
        C: AUTH ANONYMOUS dHJhY2U=
        S: 235 ok
        C: QUIT
        S: 221 bye
        """,
        [],
        credentials=Credentials("trace"),
        allow_insecure_auth=True,
        auth_mechanisms=("ANONYMOUS",),
        mechanisms={"ANONYMOUS": Anonymous},
    )
    assert result.error is None


# --- parameters ------------------------------------------------------------------------------------

EHLO_ALL = """
S: 220 mx ESMTP
C: EHLO client.example
S: 250-mx
S: 250-PIPELINING
S: 250-SIZE 100000
S: 250-8BITMIME
S: 250-SMTPUTF8
S: 250-DSN
S: 250-REQUIRETLS
S: 250 ENHANCEDSTATUSCODES
"""


def test_8bit_utf8_and_dsn_parameters() -> None:
    envelope = Envelope(
        "ä@x.org",
        [Recipient("b@y.org", RcptParams(notify=("SUCCESS", "FAILURE"), orcpt=("rfc822", "b+1@y.org")))],
        MailParams(ret="HDRS", envid="id=1"),
    )
    content = "Subject: é\r\n\r\nbody\r\n".encode()
    result = run(
        EHLO_ALL
        + f"""
        C: MAIL FROM:<ä@x.org> SIZE={len(content)} BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+3D1
        C: RCPT TO:<b@y.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2B1@y.org
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: Subject: é
        C:
        C: body
        C: .
        C: QUIT
        S: 250 ok
        S: 221 bye
        """,
        [(envelope, content)],
    )
    assert result.messages[0].error is None


def test_an_internationalised_domain_goes_as_its_a_label_to_a_server_without_smtputf8() -> None:
    # RFC 5321 §2.3.5 wants A-labels in SMTP; Postfix converts so too.  The outcomes
    # name each recipient as the caller did.
    envelope = Envelope("a@x.org", ["b@Bücher.example", "c@mañana.example"])
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=3
        C: RCPT TO:<b@xn--bcher-kva.example>
        C: RCPT TO:<c@xn--maana-pta.example>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 550 5.1.1 no such user
        S: 354 go
        C: x
        C: .
        C: QUIT
        S: 250 ok
        S: 221 bye
        """,
        [(envelope, b"x\r\n")],
    )
    message = result.messages[0]
    assert message.delivered == ("b@Bücher.example",)
    assert list(message.refused) == ["c@mañana.example"]
    assert "c@xn--maana-pta.example" in str(message.refused["c@mañana.example"])  # what was sent


@pytest.mark.parametrize(
    "envelope",
    [
        Envelope("a@x.org", ["jörg@y.org"]),  # a UTF-8 local part has no ASCII form
        Envelope("a@x.org", ["b@straße.example"]),  # IDNA 2003 would send it to strasse.example
        Envelope("a@x.org", ["b@bücher.example", "jörg@y.org"]),  # all or nothing
    ],
)
def test_an_address_with_no_exact_ascii_form_still_needs_smtputf8(envelope: Envelope) -> None:
    result = run(EHLO_PIPE + "C: QUIT\nS: 221 bye", [(envelope, b"x\r\n")])
    error = result.messages[0].error
    assert isinstance(error, SMTPNotSupportedError) and "SMTPUTF8" in str(error)


def test_utf8_header_alone_needs_smtputf8_and_missing_extensions_fail_early() -> None:
    content = "Subject: é\r\n\r\nbody\r\n".encode()
    result = run(
        EHLO_PIPE + "C: QUIT\nS: 221 bye",
        [
            (ONE, content),
            (Envelope("a@x.org", ["b@y.org"], MailParams(requiretls=True)), b"x"),
            (Envelope("a@x.org", [Recipient("b@y.org", RcptParams(notify=("NEVER",)))]), b"x"),
            (ONE, b"x\r\n" * 400),
        ],
    )
    errors = [message.error for message in result.messages]
    assert all(isinstance(error, SMTPNotSupportedError) for error in errors)
    assert "SMTPUTF8" in str(errors[0])
    assert "REQUIRETLS" in str(errors[1])
    assert "DSN" in str(errors[2])
    assert "1000" in str(errors[3])


@pytest.mark.parametrize("policy", [TlsPolicy.OFF, TlsPolicy.OPTIONAL])
def test_requiretls_is_never_sent_in_plaintext_whatever_the_server_says(policy: TlsPolicy) -> None:
    # RFC 8689 §4.2.1: a REQUIRETLS message MUST NOT go over a connection without TLS.
    # A REQUIRETLS advertised in plaintext (an attacker stripping STARTTLS) changes nothing;
    # the next message, which does not require TLS, still goes.
    result = run(
        EHLO_ALL
        + """
        C: MAIL FROM:<a@x.org> SIZE=3
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: y
        C: .
        C: QUIT
        S: 250 ok
        S: 221 bye
        """,
        [(Envelope("a@x.org", ["b@y.org"], MailParams(requiretls=True)), b"secret"), (ONE, b"y")],
        starttls=policy,
    )
    secret, plain = result.messages
    assert isinstance(secret.error, SMTPNotSupportedError)
    assert "STARTTLS" in str(secret.error) and "not TLS-protected" in str(secret.error)
    assert plain.delivered == ("b@y.org",)


def test_requiretls_goes_out_after_starttls() -> None:
    result = run(
        EHLO_TLS
        + """
        S: 220 go ahead
        TLS
        C: EHLO client.example
        S: 250-mx
        S: 250-PIPELINING
        S: 250 REQUIRETLS
        C: MAIL FROM:<a@x.org> REQUIRETLS
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: secret
        C: .
        C: QUIT
        S: 250 ok
        S: 221 bye
        """,
        [(Envelope("a@x.org", ["b@y.org"], MailParams(requiretls=True)), b"secret")],
        starttls=TlsPolicy.REQUIRED,
    )
    assert result.tls and result.messages[0].delivered == ("b@y.org",)


def test_a_message_that_starts_with_the_empty_line_is_all_body() -> None:
    # RFC 5322: an empty header section, so its 8-bit text is body (8BITMIME), not a UTF-8
    # header (SMTPUTF8).  With no empty line at all, the whole text is header section.
    body = "\r\nGrüße aus Köln\r\n".encode()
    result = run(
        EHLO_PIPE
        + f"""
        C: MAIL FROM:<a@x.org> SIZE={len(body)} BODY=8BITMIME
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C:
        C: Grüße aus Köln
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ONE, body), (ONE, "Grüße aus Köln\r\n".encode())],
    )
    as_body, as_header = result.messages
    assert as_body.delivered == ("b@y.org",)
    assert isinstance(as_header.error, SMTPNotSupportedError) and "SMTPUTF8" in str(as_header.error)


def test_size_is_only_sent_when_advertised_and_counts_octets() -> None:
    result = run(
        """
        S: 220 mx
        C: EHLO client.example
        S: 250-mx
        S: 250 8BITMIME
        C: MAIL FROM:<a@x.org> BODY=8BITMIME
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: Subject: x
        C:
        C: ü
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(Envelope("a@x.org", ["b@y.org"], MailParams(size=5)), "Subject: x\r\n\r\nü".encode())],
    )
    assert result.error is None


EHLO_CHUNKING = """
S: 220 mx ESMTP
C: EHLO client.example
S: 250-mx
S: 250-PIPELINING
S: 250-8BITMIME
S: 250-BINARYMIME
S: 250 CHUNKING
"""


def test_bdat_in_chunks_and_binarymime_for_nul() -> None:
    result = run(
        EHLO_CHUNKING
        + """
        C: MAIL FROM:<a@x.org> BODY=BINARYMIME
        C: RCPT TO:<b@y.org>
        S: 250 ok
        S: 250 ok
        C: BDAT 4
        C: a\x00
        S: 250 4 octets
        C: BDAT 4 LAST
        C: bc
        C: QUIT
        S: 250 done
        S: 221 bye
        """,
        [(ONE, b"a\x00\r\nbc")],
        chunk_size=4,
    )
    assert result.messages[0].delivered == ("b@y.org",)


def test_a_line_over_998_octets_is_named_and_sent_only_when_asked() -> None:
    # RFC 5322 §2.1.1: 998 octets at most.  Without BINARYMIME the message fails, and the
    # error says which line; with send_long_lines it goes as it is (as smtplib sends it).
    long = b"Subject: long\r\n\r\n<p>" + b"x" * 1200 + b"</p>\r\n"
    ehlo = "S: 220 mx\nC: EHLO client.example\nS: 250-mx\nS: 250-SIZE\nS: 250 PIPELINING\n"
    result = run(ehlo + "C: QUIT\nS: 221 bye", [(ONE, long)])
    error = result.messages[0].error
    assert isinstance(error, SMTPNotSupportedError)
    assert "line 3 is 1207 octets; RFC 5322 allows 998" in str(error) and "send_long_lines" in str(error)
    result = run(
        ehlo
        + f"""
        C: MAIL FROM:<a@x.org> SIZE={len(long)}
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: Subject: long
        C:
        C: <p>{"x" * 1200}</p>
        C: .
        C: QUIT
        S: 250 ok
        S: 221 bye
        """,
        [(ONE, long)],
        send_long_lines=True,
    )
    assert result.messages[0].delivered == ("b@y.org",)
    # A server that takes BINARYMIME still gets it so; NUL always needs it.
    driver = make([(ONE, long), (ONE, b"nul\x00\r\n")], send_long_lines=True)
    run_client_transcript(EHLO_CHUNKING, driver, complete=False)
    assert take_output(driver).startswith(b"MAIL FROM:<a@x.org> BODY=BINARYMIME")
    result = run(ehlo + "C: QUIT\nS: 221 bye", [(ONE, b"nul\x00\r\n")], send_long_lines=True)
    assert "NUL" in str(result.messages[0].error)


def test_bdat_chunk_refused_resets() -> None:
    result = run(
        EHLO_CHUNKING
        + """
        C: MAIL FROM:<a@x.org>
        C: RCPT TO:<b@y.org>
        S: 250 ok
        S: 250 ok
        C: BDAT 3
        C: a
        S: 552 too big
        C: RSET
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"a\r\nb\r\n")],
        chunk_size=3,
    )
    error = result.messages[0].error
    assert isinstance(error, SMTPPermanentError)
    assert isinstance(error.command, Bdat)
    assert error.command.size == 3


def test_explicit_binarymime_is_byte_exact_and_needs_chunking() -> None:
    envelope = Envelope("a@x.org", ["b@y.org"], MailParams(body="BINARYMIME"))
    driver = make([(envelope, b"\r\n\r")])  # the client never sends a bare CR outside BINARYMIME
    run_client_transcript(
        EHLO_CHUNKING
        + """
        C: MAIL FROM:<a@x.org> BODY=BINARYMIME
        C: RCPT TO:<b@y.org>
        S: 250 ok
        S: 250 ok
        """,
        driver,
        complete=False,
    )
    assert take_output(driver) == b"BDAT 3 LAST\r\n\r\n\rQUIT\r\n"  # QUIT pipelined behind the last chunk
    run_client_transcript("S: 250 ok\nS: 221 bye", driver)
    assert driver.result.messages[0].delivered == ("b@y.org",)
    result = run(EHLO_PIPE + "C: QUIT\nS: 221 bye", [(envelope, b"x")])
    assert isinstance(result.messages[0].error, SMTPNotSupportedError)
    result = run(EHLO_PIPE + "C: QUIT\nS: 221 bye", [(ONE, b"long" * 300)])
    assert "BINARYMIME" in str(result.messages[0].error)


def test_rcptmax_splits_recipients_into_transactions() -> None:
    envelope = Envelope("a@x.org", ["b@y.org", "c@y.org", "d@y.org"])
    result = run(
        """
        S: 220 mx
        C: EHLO client.example
        S: 250-mx
        S: 250 LIMITS RCPTMAX=2 MAILMAX=5
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: RCPT TO:<c@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: x
        C: .
        S: 250 ok
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<d@y.org>
        S: 452 no
        C: RSET
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(envelope, [b"x"])],
    )
    message = result.messages[0]
    assert message.error is None
    assert message.delivered == ("b@y.org", "c@y.org")
    assert message.refused["d@y.org"].transient


def test_a_stream_split_by_rcptmax_is_read_whole_before_its_plan() -> None:
    # It goes out once per transaction, so it is read whole: the same checks, BODY
    # and SIZE as for bytes given whole.  8-bit content to a server without
    # 8BITMIME fails before MAIL, as it does in one transaction.
    envelope = Envelope("a@x.org", ["b@y.org", "c@y.org"])
    limits = "S: 220 mx\nC: EHLO client.example\nS: 250-mx\nS: 250-SIZE\nS: 250 LIMITS RCPTMAX=1\n"
    result = run(limits + "C: QUIT\nS: 221 bye", [(envelope, ["Grüße\r\n".encode()])])
    error = result.messages[0].error
    assert isinstance(error, SMTPNotSupportedError) and "8BITMIME" in str(error)

    class Broken:
        def __iter__(self) -> Iterator[bytes]:
            yield b"x\r\n"
            raise OSError("disk gone")

    # A stream that fails while read: that message alone fails (nothing of it was
    # sent), with the stream's error as its cause; the next goes.
    result = run(
        limits
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: y
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(envelope, Broken()), (ONE, [b"y\r\n"])],
    )
    failed, sent = result.messages
    assert failed.error is not None and failed.error.transient and "disk gone" in str(failed.error)
    assert isinstance(failed.error.__cause__, OSError)
    assert sent.delivered == ("b@y.org",) and result.error is None


THREE = Envelope("a@x.org", ["b@y.org", "c@y.org", "d@y.org"])


def test_recipients_over_the_servers_limit_go_in_the_next_transaction() -> None:
    # RFC 5321 §4.5.3.1.10: a client "SHOULD be prepared to transmit in ...
    # chunks" when the server takes no more recipients (452, RFC 3463 X.5.3).
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=3
        C: RCPT TO:<b@y.org>
        C: RCPT TO:<c@y.org>
        C: RCPT TO:<d@y.org>
        C: DATA
        S: 250 2.1.0 ok
        S: 250 2.1.5 ok
        S: 250 2.1.5 ok
        S: 452 4.5.3 too many recipients
        S: 354 go
        C: x
        C: .
        S: 250 2.0.0 queued as 1
        C: MAIL FROM:<a@x.org> SIZE=3
        C: RCPT TO:<d@y.org>
        C: DATA
        S: 250 2.1.0 ok
        S: 250 2.1.5 ok
        S: 354 go
        C: x
        C: .
        C: QUIT
        S: 250 2.0.0 queued as 2
        S: 221 bye
        """,
        [(THREE, b"x\r\n")],
    )
    message = result.messages[0]
    assert message.error is None and not message.refused
    assert message.delivered == ("b@y.org", "c@y.org", "d@y.org")  # in the envelope's order
    assert [r.data_reply.text for r in message.recipients if r.data_reply] == [("queued as 1",)] * 2 + [
        ("queued as 2",)
    ]


def test_a_552_for_too_many_recipients_is_a_452_and_the_rest_follow_one_at_a_time() -> None:
    # RFC 821 servers said 552; RFC 5321 §4.5.3.1.10 asks clients to take it as 452.
    # This server takes one recipient a transaction: three transactions, in order.  Without
    # PIPELINING the client stops at the first refusal for the limit: the rest would get it too.
    rounds = ""
    for first, rest in (("b", ["c", "d"]), ("c", ["d"]), ("d", [])):
        rounds += f"C: MAIL FROM:<a@x.org>\nS: 250 ok\nC: RCPT TO:<{first}@y.org>\nS: 250 ok\n"
        if rest:
            rounds += f"C: RCPT TO:<{rest[0]}@y.org>\nS: 552 Too many recipients\n"
        rounds += f"C: DATA\nS: 354 go\nC: x\nC: .\nS: 250 {first} ok\n"
    result = run(EHLO_PLAIN + rounds + "C: QUIT\nS: 221 bye\n", [(THREE, b"x\r\n")])
    message = result.messages[0]
    assert message.delivered == ("b@y.org", "c@y.org", "d@y.org")
    assert [r.data_reply.text for r in message.recipients if r.data_reply] == [("b ok",), ("c ok",), ("d ok",)]


@pytest.mark.parametrize(
    ("why", "refusal", "end"),
    [
        ("no recipient got the message", "452 4.5.3 too many recipients", "554 5.7.1 no"),
        ("other 452s are no limit", "452 4.7.1 greylisted", "250 ok"),
        ("other 552s are no limit", "552 5.2.2 mailbox full", "250 ok"),
    ],
)
def test_no_next_transaction_without_progress_or_a_recipient_limit(why: str, refusal: str, end: str) -> None:
    result = run(
        EHLO_PLAIN
        + f"""
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: RCPT TO:<c@y.org>
        S: {refusal}
        C: DATA
        S: 354 go
        C: x
        C: .
        S: {end}
        """
        + "C: QUIT\nS: 221 bye\n",
        [(ENV, b"x\r\n")],
    )
    refused = result.messages[0].refused["c@y.org"]
    assert reply_of(refused).code == int(refusal[:3]), why
    assert refused.transient == (refusal[4:9] in ("4.5.3", "4.7.1")), why


def test_a_streamed_message_leaves_the_recipients_over_the_limit_for_later() -> None:
    # A stream is read once: its content cannot go again in a second transaction.
    result = run(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: RCPT TO:<c@y.org>
        S: 452 4.5.3 too many recipients
        C: DATA
        S: 354 go
        C: x
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ENV, [b"x\r\n"])],
    )
    message = result.messages[0]
    assert message.delivered == ("b@y.org",)
    assert message.refused["c@y.org"].transient


def test_a_421_in_the_next_transaction_keeps_what_the_first_delivered() -> None:
    four = Envelope("a@x.org", ["b@y.org", "c@y.org", "d@y.org", "e@y.org"])
    result = run(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: RCPT TO:<c@y.org>
        S: 452 4.5.3 too many recipients
        C: DATA
        S: 354 go
        C: x
        C: .
        S: 250 ok
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<c@y.org>
        S: 250 ok
        C: RCPT TO:<d@y.org>
        S: 550 5.1.1 no such user
        C: RCPT TO:<e@y.org>
        S: 421 4.3.2 going away
        """,
        [(four, b"x\r\n")],
    )
    message = result.messages[0]
    assert [r.recipient for r in message.recipients] == ["b@y.org", "c@y.org", "d@y.org", "e@y.org"]
    assert message.delivered == ("b@y.org",) and message.error is None
    assert message.refused["c@y.org"] is message.refused["e@y.org"] is result.error
    assert reply_of(message.refused["d@y.org"]).code == 550


def test_the_next_transaction_stops_when_the_server_takes_none() -> None:
    result = run(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: RCPT TO:<c@y.org>
        S: 452 4.5.3 too many recipients
        C: DATA
        S: 354 go
        C: x
        C: .
        S: 250 ok
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<c@y.org>
        S: 452 4.5.3 too many recipients today
        C: RSET
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ENV, b"x\r\n")],
    )
    message = result.messages[0]
    assert message.delivered == ("b@y.org",)
    assert message.refused["c@y.org"].transient
    assert reply_of(message.refused["c@y.org"]).text == ("4.5.3 too many recipients today",)  # no ENHANCEDSTATUSCODES


def test_lmtp_reports_each_recipient() -> None:
    result = run(
        """
        S: 220 lmtp
        C: LHLO client.example
        S: 250-lmtp
        S: 250-PIPELINING
        S: 250 ENHANCEDSTATUSCODES
        C: MAIL FROM:<a@x.org>
        C: RCPT TO:<b@y.org>
        C: RCPT TO:<c@y.org>
        C: DATA
        S: 250 2.1.0 ok
        S: 250 2.1.5 ok
        S: 250 2.1.5 ok
        S: 354 go
        C: x
        C: .
        C: QUIT
        S: 250 2.0.0 delivered
        S: 452 4.2.2 mailbox full
        S: 221 bye
        """,
        [(ENV, b"x")],
        lmtp=True,
    )
    message = result.messages[0]
    assert message.delivered == ("b@y.org",)
    assert reply_of(message.refused["c@y.org"]).enhanced == "4.2.2"
    assert message.error is None


def test_lmtp_bdat_reports_each_recipient() -> None:
    result = run(
        """
        S: 220 lmtp
        C: LHLO client.example
        S: 250-lmtp
        S: 250 CHUNKING
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: RCPT TO:<c@y.org>
        S: 250 ok
        C: BDAT 3 LAST
        C: x
        S: 550 no
        S: 551 no
        C: QUIT
        S: 221 bye
        """,
        [(ENV, b"x")],
        lmtp=True,
    )
    message = result.messages[0]
    assert reply_of(message.error).code == 550
    assert reply_of(message.refused["c@y.org"]).code == 551


# --- content ---------------------------------------------------------------------------------------


def test_streamed_chunks_keep_dots_and_split_crlf() -> None:
    result = run(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: ..a
        C: ..b
        C: c
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ONE, [b".a\r", b"\n", b".b\r\n", b"", b"c"])],
    )
    assert result.error is None


def test_streamed_8bit_to_7bit_server_is_abandoned_without_terminator() -> None:
    driver = make([(ONE, iter([b"ok\r\n", "ü".encode()]))])
    run_client_transcript(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: ok
        """,
        driver,
    )
    assert driver.done
    assert isinstance(driver.result.error, SMTPPermanentError)
    assert isinstance(driver.result.error.__cause__, LocalProtocolError)


@pytest.mark.parametrize("bad", [b"G\xc3\xbc\xc3\x9fe\r\n", "str"])
def test_an_abandoned_message_leaves_the_untried_ones_to_retry(bad: bytes | str) -> None:
    # Only the message whose content was at fault fails for good; the ones after it were
    # never offered to the server, so a relay must retry them, not bounce them.
    stream: Iterator[Any] = iter([b"ok\r\n", bad])  # (a str chunk: refused on purpose)
    driver = make([(ONE, stream), (ENV, b"fine\r\n"), (ONE, b"fine too\r\n")])
    run_client_transcript(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: ok
        """,
        driver,
    )
    abandoned, *untried = driver.result.messages
    assert isinstance(abandoned.error, SMTPPermanentError)
    assert isinstance(driver.result.error, SMTPPermanentError)  # (why the session ended)
    for message in untried:
        assert isinstance(message.error, SMTPTransientError)
        assert "ended before this message was tried" in str(message.error)
        assert message.error.__cause__ is driver.result.error  # what ended the session, for the log
        assert all(isinstance(item.error, SMTPTransientError) for item in message.recipients)
    assert [len(message.recipients) for message in untried] == [2, 1]


def test_streamed_8bit_to_a_7bit_server_over_bdat_is_abandoned_too() -> None:
    # RFC 6152: no 8-bit octet to a server without 8BITMIME, whether DATA or BDAT carries it.
    driver = make([(ONE, iter([b"ok\r\n", "ü\r\n".encode()]))], chunk_size=3)
    run_client_transcript(
        """
        S: 220 mx
        C: EHLO client.example
        S: 250-mx
        S: 250 CHUNKING
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        """,
        driver,
    )
    assert driver.done  # (the chunk after the first is read before the first is sent)
    assert isinstance(driver.result.error, SMTPPermanentError)
    assert "8BITMIME" in str(driver.result.error)


def test_a_stream_that_cannot_be_read_ends_the_session_with_what_went_before() -> None:
    # The caller's file or generator fails mid-content (a disk error): that message is
    # abandoned (never ended with "."), and the one delivered before it keeps its outcome.
    def failing() -> Iterator[bytes]:
        yield b"part\r\n"
        raise OSError(5, "Input/output error")

    driver = make([(ONE, b"first\r\n"), (ONE, failing())])
    run_client_transcript(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: first
        C: .
        S: 250 ok
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: part
        """,
        driver,
    )
    assert driver.done
    first, second = driver.result.messages
    assert first.delivered == ("b@y.org",)
    assert isinstance(second.error, SMTPTransientError) and isinstance(second.error.__cause__, OSError)
    assert "reading it failed" in str(second.error)


def test_a_stream_that_cannot_be_read_at_all_fails_its_message_alone() -> None:
    # Its first chunk is read before its MAIL: when that fails nothing of it was sent,
    # so the session goes on with the next message, and this one is to be retried.
    def failing() -> Iterator[bytes]:
        raise OSError(5, "Input/output error")
        yield b""  # (a generator)

    driver = make([(ONE, failing()), (ONE, b"fine\r\n")])
    run_client_transcript(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: fine
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        driver,
    )
    unread, sent = driver.result.messages
    assert isinstance(unread.error, SMTPTransientError) and isinstance(unread.error.__cause__, OSError)
    assert sent.delivered == ("b@y.org",)


def test_reject_policy_abandons_stream_and_refuses_whole_content_up_front() -> None:
    driver = make([(ONE, iter([b"ok\r\n", b"bare\nlf"]))], bare_newlines=BareNewlinePolicy.REJECT)
    run_client_transcript(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: ok
        """,
        driver,
    )
    assert driver.done
    assert "bare" in str(driver.result.error)
    result = run(
        EHLO_PLAIN + "C: QUIT\nS: 221 bye",
        [(ONE, b"bare\nlf")],
        bare_newlines=BareNewlinePolicy.REJECT,
    )
    assert isinstance(result.messages[0].error, SMTPPermanentError)
    assert result.error is None


def test_streamed_bdat_is_rechunked_and_normalised() -> None:
    driver = make([(ONE, [b"a", b"\r", b"\nb\r", b"", b"c\nd"])], chunk_size=4)
    run_client_transcript(
        EHLO_CHUNKING
        + """
        C: MAIL FROM:<a@x.org> BODY=8BITMIME
        C: RCPT TO:<b@y.org>
        S: 250 ok
        S: 250 ok
        """,
        driver,
        complete=False,
    )
    # "a\r\nb\r\nc\r\nd" plus the final CRLF, in pieces of 4.
    assert take_output(driver) == b"BDAT 4\r\na\r\nb"
    driver.receive(b"250 ok\r\n")
    assert take_output(driver) == b"BDAT 4\r\n\r\nc\r"
    driver.receive(b"250 ok\r\n")
    assert take_output(driver) == b"BDAT 4 LAST\r\n\nd\r\nQUIT\r\n"  # QUIT pipelined behind the last chunk
    run_client_transcript("S: 250 ok\nS: 221 bye", driver)
    assert driver.result.messages[0].delivered == ("b@y.org",)


def test_streamed_bdat_ending_in_a_bare_cr_ends_with_its_crlf() -> None:
    # The final CR's LF is owed until the stream ends; it must still go out (and
    # no second CRLF after it).
    driver = make([(ONE, [b"a\r\nb\r"])])
    run_client_transcript(
        EHLO_CHUNKING
        + """
        C: MAIL FROM:<a@x.org> BODY=8BITMIME
        C: RCPT TO:<b@y.org>
        S: 250 ok
        S: 250 ok
        """,
        driver,
        complete=False,
    )
    assert take_output(driver) == b"BDAT 6 LAST\r\na\r\nb\r\nQUIT\r\n"


def test_email_message_is_serialised_by_the_stdlib() -> None:
    message = EmailMessage()
    message["Subject"] = "Grüße"
    message["From"] = "a@x.org"
    message.set_content(".dot first\n")
    expected = message.as_bytes(policy=__import__("email.policy").policy.SMTP)
    assert b"=?utf-8?" in expected
    driver = make([(ONE, message)])
    run_client_transcript(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        """,
        driver,
        complete=False,
    )
    sent = take_output(driver)
    assert sent == expected.replace(b"\r\n.dot", b"\r\n..dot") + b".\r\n"


def test_compat32_messages_are_serialised_as_smtplib_does() -> None:
    # MIMEText, MIMEMultipart and message_from_bytes give compat32 Messages, not
    # EmailMessages; smtplib's send_message takes them, so does the driver: written with
    # their own policy and CRLF (an email.header.Header value included), Bcc left out.
    legacy = MIMEText("Hello from MIMEText\n")
    legacy["Subject"] = Header("Grüße", "utf-8")  # type: ignore[assignment]  # as legacy code does, typeshed or not
    legacy["From"], legacy["To"], legacy["Bcc"] = "a@x.org", "b@y.org", "hidden@z.org"
    envelope = Envelope.from_message(legacy)
    assert (envelope.sender, [r.address for r in envelope.recipient_list]) == ("a@x.org", ["b@y.org", "hidden@z.org"])
    parsed = email.message_from_bytes(b"From: a@x.org\r\nTo: b@y.org\r\nSubject: parsed\r\n\r\nbody\r\n")
    assert not isinstance(legacy, EmailMessage) and not isinstance(parsed, EmailMessage)
    driver = make([(ONE, legacy), (ONE, parsed)])
    run_client_transcript(EHLO_PIPE, driver, complete=False)
    sent = take_output(driver)
    without_bcc = copy.copy(legacy)
    del without_bcc["Bcc"]
    expected = without_bcc.as_bytes(policy=legacy.policy.clone(linesep="\r\n"))
    assert b"=?utf-8?b?R3LDvMOfZQ==?=" in expected and b"hidden" not in expected
    assert sent == b"MAIL FROM:<a@x.org> SIZE=%d\r\nRCPT TO:<b@y.org>\r\nDATA\r\n" % len(expected)
    run_client_transcript("S: 250 ok\nS: 250 ok\nS: 354 go", driver, complete=False)
    assert take_output(driver).startswith(expected + b".\r\nMAIL FROM:<a@x.org>")
    run_client_transcript("S: 250 ok\nS: 250 ok\nS: 250 ok\nS: 354 go", driver, complete=False)
    assert take_output(driver) == b"From: a@x.org\r\nTo: b@y.org\r\nSubject: parsed\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    run_client_transcript("S: 250 ok\nS: 221 bye", driver)
    assert [m.delivered for m in driver.result.messages] == [("b@y.org",), ("b@y.org",)]
    assert legacy["Bcc"] == "hidden@z.org"  # the caller's message keeps it


def test_a_utf8_address_in_a_header_needs_smtputf8_even_with_an_ascii_envelope() -> None:
    # Without SMTPUTF8 the stdlib would write it as encoded words ("user@=?utf-8?q?b=C3=BCcher?=.de",
    # or the whole field for a compat32 message): the reader shows it, and no reply reaches it.
    modern = EmailMessage()
    modern["From"], modern["Reply-To"], modern["Subject"] = "a@x.org", "Jö <jö@bücher.de>", "hi"
    modern.set_content("hi\n")
    legacy = MIMEText("hi\n")
    legacy["From"], legacy["Cc"] = "a@x.org", "user@bücher.de"
    # A UTF-8 display name is what RFC 2047 is for: no SMTPUTF8 needed.
    named = EmailMessage()
    named["From"], named["To"] = "a@x.org", "Jö Ärger <b@y.org>"
    named.set_content("hi\n")
    driver = make([(ONE, modern), (ONE, legacy), (ONE, named)])
    run_client_transcript(EHLO_PLAIN, driver, complete=False)
    run_client_transcript(
        """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        """,
        driver,
        complete=False,
    )
    assert take_output(driver) == named.as_bytes(policy=email.policy.SMTP) + b".\r\n"
    run_client_transcript("S: 250 ok\nC: QUIT\nS: 221 bye", driver)
    refused, refused_too, delivered = driver.result.messages
    for outcome in (refused, refused_too):
        assert isinstance(outcome.error, SMTPNotSupportedError) and "SMTPUTF8" in str(outcome.error)
    assert delivered.delivered == ("b@y.org",)
    # With SMTPUTF8 the address goes as it is, in a UTF-8 header (RFC 6532).
    driver = make([(ONE, modern)])
    size = len(modern.as_bytes(policy=email.policy.SMTPUTF8))
    run_client_transcript(
        EHLO_ALL
        + f"""
        C: MAIL FROM:<a@x.org> SIZE={size} BODY=8BITMIME SMTPUTF8
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        """,
        driver,
        complete=False,
    )
    assert "Reply-To: Jö <jö@bücher.de>\r\n".encode() in take_output(driver)


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_message_the_email_package_cannot_write_fails_alone(pipelining: bool) -> None:
    # The stdlib raises UnicodeEncodeError for a str payload with no charset.  Prepared
    # while the message before it waits for its reply (with pipelining), it must not
    # take that message, the session or the ones after it down with it.
    legacy = email.message.Message()
    legacy["Subject"] = "x"
    legacy.set_payload("Grüße")
    modern = EmailMessage()
    modern.set_payload("Grüße")
    with pytest.raises(UnicodeEncodeError):
        legacy.as_bytes()
    good = Envelope("a@x.org", ["ok@y.org"])
    driver = make([(good, b"first\r\n"), (ONE, legacy), (ONE, modern), (good, b"last\r\n")])
    pair(driver, ServerConfig(pipelining=pipelining))
    first, bad, bad_too, last = driver.result.messages
    assert first.delivered == last.delivered == ("ok@y.org",)
    for outcome in (bad, bad_too):
        assert isinstance(outcome.error, SMTPPermanentError)
        assert "email package" in str(outcome.error) and isinstance(outcome.error.__cause__, LocalProtocolError)
        assert isinstance(outcome.error.__cause__.__cause__, UnicodeEncodeError)
    assert driver.result.error is None


def test_an_8bit_message_object_is_made_7bit_for_a_server_without_8bitmime() -> None:
    # RFC 6152 §3: the client may convert.  The stdlib re-encodes an EmailMessage's (or a
    # compat32 Message's) 8-bit parts; bytes are never rewritten, and a part the stdlib
    # cannot convert (8-bit text with no charset) is refused as before.
    modern = EmailMessage()
    modern["Subject"] = "Grüße"
    modern.set_content("Grüße aus Köln\n")
    parsed = email.message_from_bytes(
        "Content-Type: text/plain; charset=utf-8\r\nSubject: parsed\r\n\r\nGrüße\r\n".encode()
    )
    no_charset = email.message_from_bytes("Subject: parsed\r\n\r\nGrüße\r\n".encode())
    converted = [
        modern.as_bytes(policy=email.policy.SMTP.clone(cte_type="7bit")),
        parsed.as_bytes(policy=parsed.policy.clone(linesep="\r\n", cte_type="7bit")),
    ]
    assert all(item.isascii() and b"Content-Transfer-Encoding: base64" in item for item in converted)
    driver = make([(ONE, modern), (ONE, parsed), (ONE, no_charset), (ONE, "Grüße\r\n".encode())])
    run_client_transcript(EHLO_PLAIN, driver, complete=False)
    for expected in converted:
        run_client_transcript(
            """
            C: MAIL FROM:<a@x.org>
            S: 250 ok
            C: RCPT TO:<b@y.org>
            S: 250 ok
            C: DATA
            S: 354 go
            """,
            driver,
            complete=False,
        )
        assert take_output(driver) == stuff(expected) + b".\r\n"
        driver.receive(b"250 ok\r\n")
    run_client_transcript("C: QUIT\nS: 221 bye", driver)
    delivered, delivered_too, no_charset_outcome, raw = driver.result.messages
    assert delivered.delivered == delivered_too.delivered == ("b@y.org",)
    for refused in (no_charset_outcome, raw):
        assert isinstance(refused.error, SMTPNotSupportedError) and "8BITMIME" in str(refused.error)


def test_a_stream_of_str_is_refused_before_its_mail() -> None:
    # A text-mode file or a generator of str: found out from its first chunk, before its
    # MAIL, like a str message; never an abandoned DATA (and the next message still goes).
    text_file = io.StringIO("Subject: text mode\n\nbody\n")
    messages: list[tuple[Envelope, Any]] = [  # (not Messages: refused on purpose)
        (ONE, iter(["Subject: str\r\n\r\n"])),
        (ONE, iter(text_file.readline, "")),
        (ONE, 42),
        (ONE, b"fine\r\n"),
    ]
    driver = make(messages)
    run_client_transcript(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: fine
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        driver,
    )
    result = driver.result
    (generator, text, number, fine) = result.messages
    for refused, kind in ((generator, "str"), (text, "str"), (number, "int")):
        assert isinstance(refused.error, SMTPPermanentError)
        assert isinstance(refused.error.__cause__, LocalProtocolError)
        assert f"not {kind}" in str(refused.error)
    assert "'rb'" in str(text.error)
    assert fine.delivered == ("b@y.org",)
    assert result.error is None


def test_bad_message_types_and_envelopes() -> None:
    with pytest.raises(LocalProtocolError):
        Envelope("a@x.org", [])
    with pytest.raises(LocalProtocolError):
        Envelope("a@x.org", "b@y.org")
    with pytest.raises(LocalProtocolError):
        Envelope("a@x.org\r\nRCPT TO:<evil@x.org>", ["b@y.org"])
    with pytest.raises(LocalProtocolError):
        Recipient("b@y.org>\r\nDATA")
    with pytest.raises(LocalProtocolError):
        ClientDriver(ClientConfig(), [("not an envelope", b"x")])  # type: ignore[list-item]  # refused on purpose
    result = run(EHLO_PLAIN + "C: QUIT\nS: 221 bye", [(ONE, "text")])  # type: ignore[list-item]  # str: refused on purpose
    assert result.messages[0].error is not None
    assert isinstance(result.messages[0].error.__cause__, LocalProtocolError)
    driver = make([(ONE, [b"ok\r\n", 5])])  # type: ignore[list-item]  # an int piece: refused on purpose
    run_client_transcript(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: ok
        """,
        driver,
    )
    assert driver.done
    assert "bytes" in str(driver.result.error)


def test_driver_misuse_and_quit_without_221() -> None:
    driver = make([(ONE, b"x")])
    with pytest.raises(LocalProtocolError):
        driver.result  # noqa: B018
    with pytest.raises(LocalProtocolError):
        driver.tls_established()
    assert driver.timeout.name == "greeting"
    assert driver.timeout.seconds == 300
    result = run(EHLO_PLAIN + "C: QUIT\nCLOSE", [])
    assert result.error is None
    with pytest.raises(SMTPPermanentError):
        run("S: 554 no\nC: QUIT\nS: 221 bye", []).raise_for_error()
    outcome = run(EHLO_PLAIN + "C: MAIL FROM:<a@x.org>\nS: 550 no\nC: QUIT\nS: 221 bye", [(ONE, b"x")])
    with pytest.raises(SMTPPermanentError):
        outcome.raise_for_error()
    run(EHLO_PLAIN + "C: QUIT\nS: 221 bye", []).raise_for_error()


# --- abort(): failures the adapter sees itself ---------------------------------------------------


def test_abort_mid_content_stops_reading_the_stream_and_sends_nothing_more() -> None:
    taken: list[bytes] = []

    def stream() -> Iterator[bytes]:
        for piece in (b"one\r\n", b"two\r\n", b"three\r\n", b"four\r\n"):
            taken.append(piece)
            yield piece

    driver = make([(ONE, stream())], use_chunking=False)
    run_client_transcript(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: one
        """,
        driver,
        complete=False,
    )
    cause = TimeoutError("no progress")
    driver.abort("the data block timed out", cause)
    assert driver.done
    assert driver.bytes_to_send() == b""
    assert taken == [b"one\r\n"]
    outcome = driver.result
    assert outcome.error is not None
    assert outcome.error.transient
    assert outcome.error.__cause__ is cause
    assert outcome.messages[0].refused["b@y.org"] is outcome.error
    driver.abort("again")  # already over: nothing changes
    assert driver.result.error is outcome.error


def test_abort_while_waiting_for_quits_reply_keeps_every_outcome_and_adds_no_error() -> None:
    # The server never answers QUIT, or resets the connection: every message has its
    # outcome already, and an error would have the caller send delivered mail again.
    driver = make([(ONE, b"x")])
    run_client_transcript(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: x
        C: .
        S: 250 queued
        C: QUIT
        """,
        driver,
        complete=False,
    )
    driver.abort("no progress within timeout=0.5 s", TimeoutError())
    assert driver.done
    assert driver.result.error is None
    assert driver.result.messages[0].delivered == ("b@y.org",)
    # A session that failed keeps its own error, not the QUIT's.
    driver = make([(ONE, b"x")])
    run_client_transcript("S: 554 go away\nC: QUIT", driver, complete=False)
    driver.abort("connection reset", ConnectionResetError())
    error = driver.result.error
    assert error is not None and not error.transient and "554" in str(error)
    assert driver.result.messages[0].error is error


@pytest.mark.parametrize(
    "replies",
    [
        # Pipelined: the 421 answers DATA.
        "S: 250-mx\nS: 250 PIPELINING\nC: MAIL FROM:<a@x.org>\nC: RCPT TO:<b@y.org>\nC: RCPT TO:<c@y.org>\n"
        "C: DATA\nS: 250 ok\nS: 550 5.1.1 no such user\nS: 550 5.1.1 no such user\nS: 421 4.7.0 too many errors",
        # One command at a time: the 421 answers RSET.
        "S: 250 mx\nC: MAIL FROM:<a@x.org>\nS: 250 ok\nC: RCPT TO:<b@y.org>\nS: 550 5.1.1 no such user\n"
        "C: RCPT TO:<c@y.org>\nS: 550 5.1.1 no such user\nC: RSET\nS: 421 4.7.0 too many errors",
    ],
)
def test_recipients_refused_for_good_before_a_421_make_the_messages_error_permanent(replies: str) -> None:
    # The session's 421 is transient, but nobody is left for it: a relay that took
    # the message's error would try again, for ever, what was refused for good.
    envelope = Envelope("a@x.org", ["b@y.org", "c@y.org"])
    driver = make([(envelope, b"x\r\n")])
    run_client_transcript("S: 220 mx\nC: EHLO client.example\n" + replies, driver)
    result = driver.result
    assert result.error is not None and result.error.transient  # the session's own
    message = result.messages[0]
    assert all(not error.transient for error in message.refused.values())
    assert isinstance(message.error, SMTPPermanentError)
    assert str(message.error) == "every recipient was refused: 550 5.1.1 no such user"


def test_a_mail_refused_for_good_before_a_421_is_the_messages_error() -> None:
    driver = make([(ONE, b"x\r\n")])
    run_client_transcript(
        "S: 220 mx\nC: EHLO client.example\nS: 250-mx\nS: 250 PIPELINING\n"
        "C: MAIL FROM:<a@x.org>\nC: RCPT TO:<b@y.org>\nC: DATA\n"
        "S: 553 5.1.8 sender refused\nS: 421 4.7.0 closing",
        driver,
    )
    message = driver.result.messages[0]
    assert isinstance(message.error, SMTPPermanentError) and "553" in str(message.error)
    assert message.refused["b@y.org"] is message.error


def test_abort_when_the_tls_handshake_fails() -> None:
    driver = make([(ONE, b"x")], starttls=TlsPolicy.REQUIRED)
    run_client_transcript(
        """
        S: 220 mx.y.org ESMTP
        C: EHLO client.example
        S: 250-mx.y.org
        S: 250 STARTTLS
        C: STARTTLS
        S: 220 go ahead
        """,
        driver,
    )
    assert driver.wants_tls
    driver.abort("TLS handshake failed: certificate verify failed")
    assert driver.done
    assert not driver.wants_tls
    assert driver.result.tls is False
    assert "certificate" in str(driver.result.error)


# --- pipelining across messages (RFC 2920 §3.1: content may open a group) ---------------------------


def test_next_message_goes_out_with_the_end_of_the_last_one() -> None:
    # One round trip per message: ".", then the next MAIL/RCPT/DATA, in one write;
    # the last message carries QUIT the same way.
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=5
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: one
        C: .
        C: MAIL FROM:<a@x.org> SIZE=5
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 first queued
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: two
        C: .
        C: QUIT
        S: 250 second queued
        S: 221 bye
        """,
        [(ONE, b"one"), (ONE, b"two")],
    )
    assert [m.delivered for m in result.messages] == [("b@y.org",), ("b@y.org",)]
    assert result.messages[1].recipients[0].data_reply is not None
    assert result.messages[1].recipients[0].data_reply.text == ("second queued",)


def test_the_last_piece_and_the_end_of_data_are_one_write() -> None:
    driver = make([(ONE, b"x" * 10)], chunk_size=4)
    run_client_transcript(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=12
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        """,
        driver,
        complete=False,
    )
    writes = []
    while out := driver.bytes_to_send():
        writes.append(out)
    assert writes == [b"xxxx", b"xxxx", b"xx\r\n.\r\nQUIT\r\n"]


def test_a_refused_message_does_not_touch_the_one_pipelined_behind_it() -> None:
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=5
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: one
        C: .
        C: MAIL FROM:<a@x.org> SIZE=5
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 554 5.7.1 spam
        S: 250 ok
        S: 550 no such user
        S: 554 no valid recipients
        C: RSET
        S: 250 ok
        C: MAIL FROM:<a@x.org> SIZE=7
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: three
        C: .
        C: QUIT
        S: 250 ok
        S: 221 bye
        """,
        [(ONE, b"one"), (ONE, b"two"), (ONE, b"three")],
    )
    first, second, third = result.messages
    assert first.error is not None and reply_of(first.error).code == 554
    assert reply_of(second.refused["b@y.org"]).code == 550
    assert third.delivered == ("b@y.org",)


def test_a_421_after_the_end_fails_the_message_pipelined_behind_it() -> None:
    result = run(
        EHLO_PIPE
        + """
        C: MAIL FROM:<a@x.org> SIZE=5
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: one
        C: .
        C: MAIL FROM:<a@x.org> SIZE=5
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 421 4.3.2 shutting down
        CLOSE
        """,
        [(ONE, b"one"), (ONE, b"two")],
    )
    first, second = result.messages
    assert first.error is not None and first.error.transient
    assert second.error is not None and second.error.transient
    assert second.delivered == ()


def test_a_message_that_cannot_be_sent_is_not_pipelined() -> None:
    # The second message needs 8BITMIME, which this server lacks: it fails before
    # a byte of it is written, and the third goes out behind the first instead of it.
    result = run(
        """
        S: 220 mx ESMTP
        C: EHLO client.example
        S: 250-mx
        S: 250 PIPELINING
        C: MAIL FROM:<a@x.org>
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: one
        C: .
        S: 250 ok
        C: MAIL FROM:<a@x.org>
        C: RCPT TO:<b@y.org>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: three
        C: .
        C: QUIT
        S: 250 ok
        S: 221 bye
        """,
        [(ONE, b"one"), (ONE, "caf\u00e9".encode()), (ONE, b"three")],
    )
    first, second, third = result.messages
    assert first.delivered == third.delivered == ("b@y.org",)
    assert isinstance(second.error, SMTPNotSupportedError)


def test_no_pipelining_no_commands_ahead() -> None:
    result = run(
        EHLO_PLAIN
        + """
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: one
        C: .
        S: 250 ok
        C: MAIL FROM:<a@x.org>
        S: 250 ok
        C: RCPT TO:<b@y.org>
        S: 250 ok
        C: DATA
        S: 354 go
        C: two
        C: .
        S: 250 ok
        C: QUIT
        S: 221 bye
        """,
        [(ONE, b"one"), (ONE, b"two")],
    )
    assert all(m.delivered == ("b@y.org",) for m in result.messages)


def test_the_next_message_is_prepared_while_the_server_works() -> None:
    # Normalising a message is most of the client's work: it happens after a group
    # is written and before its replies are read, so it overlaps the server's turn.
    prepared: list[str] = []

    class Recorded(EmailMessage):
        def as_bytes(self, *args: Any, **kwargs: Any) -> bytes:
            prepared.append(self["Subject"])
            return super().as_bytes(*args, **kwargs)

    def message(subject: str) -> EmailMessage:
        item = Recorded()
        item["Subject"] = subject
        item.set_content("hi")
        return item

    driver = make([(ONE, message("one")), (ONE, message("two")), (ONE, message("three"))])
    run_client_transcript(EHLO_PIPE, driver, complete=False)
    assert take_output(driver).startswith(b"MAIL FROM:<a@x.org>")
    assert driver.bytes_to_send() == b""  # now waiting for the replies...
    assert prepared == ["one", "two"]  # ...with the second message already prepared


def test_mail_params_the_client_cannot_remember_still_go_out() -> None:
    # The plan's MailParams are remembered by value; one holding a list (where the
    # type says tuple) cannot be, and must still be sent as it is.
    for extra in ([("X-TRACE", "abc")], (("X-TRACE", "abc"),)):
        result = run(
            """
            S: 220 mx
            C: EHLO client.example
            S: 250 mx
            C: MAIL FROM:<a@x.org> X-TRACE=abc
            S: 250 ok
            C: RCPT TO:<b@y.org>
            S: 250 ok
            C: DATA
            S: 354 go
            C: hi
            C: .
            S: 250 ok
            C: QUIT
            S: 221 bye
            """,
            [(Envelope("a@x.org", ["b@y.org"], MailParams(extra=extra)), b"hi\r\n")],  # type: ignore[arg-type]
        )
        assert result.error is None
