"""Table-driven parse cases for every command and parameter, through the whole server.

Each case sends a prefix that puts the session in the right state (EHLO, and
MAIL for RCPT cases), then one command line, and checks either the event the
application receives or the exact reply the core wrote.  Every case is also
checked whole and byte by byte with trailing bytes left untouched.
"""

from __future__ import annotations

import re
import string
from typing import Any

import pytest
from helpers import check_three_ways, drive
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtpcore import (
    Auth,
    AuthPolicy,
    Bdat,
    CommandRejected,
    Data,
    DeliverBy,
    Expn,
    Hello,
    Help,
    Mail,
    MailParams,
    Noop,
    Quit,
    Rcpt,
    RcptParams,
    RemoteProtocolError,
    Rset,
    ServerConfig,
    StartTls,
    TlsHandshake,
    TlsPolicy,
    Vrfy,
    _abnf,
    _commands,
)
from smtpcore._commands import PARSERS, Context, Refusal, decode_line

EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<a@example.com>\r\n"
# Every extension whose parameters the registry knows.
FULL = ServerConfig(
    dsn=True,
    extra_extensions=("MT-PRIORITY", "DELIVERBY", "FUTURERELEASE", "RRVS", "AUTH PLAIN", "REQUIRETLS"),
    vrfy_enabled=True,
    expn_enabled=True,
    tls=TlsPolicy.OPTIONAL,
)


def last(prefix: bytes, line: bytes, config: ServerConfig = FULL) -> tuple[Any, bytes]:
    """The last event and the last reply line after ``prefix`` and ``line``."""
    # Trailing bytes without a CRLF stay buffered, except after DATA/BDAT (content)
    # and STARTTLS (discarded).
    trailing = b"" if line[:4].upper() in (b"DATA", b"BDAT", b"STAR") else b"NO"
    events, out = check_three_ways(prefix + line + b"\r\n", config, trailing=trailing)
    if isinstance(events[-1], TlsHandshake):
        assert isinstance(events[-2], StartTls)
        events.pop()
    return events[-1], out.split(b"\r\n")[-2]


# --- commands that parse into events ----------------------------------------------------------------

GOOD = [
    (b"", b"EHLO client.example", Hello("client.example", "EHLO")),
    (b"", b"ehlo client.example", Hello("client.example", "EHLO")),
    (b"", b"HELO client.example", Hello("client.example", "HELO")),
    (b"", b"EhLo [192.0.2.1]", Hello("[192.0.2.1]", "EHLO")),
    (b"", b"EHLO [IPv6:2001:db8::1]", Hello("[IPv6:2001:db8::1]", "EHLO")),
    (b"", b"EHLO localhost", Hello("localhost", "EHLO")),
    (EHLO, b"MAIL FROM:<a@example.com>", Mail("a@example.com")),
    (EHLO, b"mail from:<a@example.com>", Mail("a@example.com")),
    (EHLO, b"MAIL FROM:<>", Mail("")),
    (EHLO, b"MAIL FROM: <a@example.com>", Mail("a@example.com")),
    (EHLO, b"MAIL FROM:   <a@example.com>", Mail("a@example.com")),
    (EHLO, b'MAIL FROM:<"john doe"@example.com>', Mail('"john doe"@example.com')),
    (EHLO, b'MAIL FROM:<"a>b"@example.com>', Mail('"a>b"@example.com')),
    (EHLO, b'MAIL FROM:<"a\\"b"@example.com>', Mail('"a\\"b"@example.com')),
    (EHLO, b"MAIL FROM:<user@[192.0.2.1]>", Mail("user@[192.0.2.1]")),
    (EHLO, b"MAIL FROM:<user@[IPv6:::1]>", Mail("user@[IPv6:::1]")),
    (EHLO, b"MAIL FROM:<@relay.example,@b.example:a@example.com>", Mail("a@example.com")),
    (EHLO, b"MAIL FROM:<a@example.com> SIZE=1000", Mail("a@example.com", MailParams(size=1000))),
    (EHLO, b"MAIL FROM:<a@example.com> size=0", Mail("a@example.com", MailParams(size=0))),
    (EHLO, b"MAIL FROM:<a@example.com> BODY=8bitmime", Mail("a@example.com", MailParams(body="8BITMIME"))),
    (EHLO, b"MAIL FROM:<a@example.com> BODY=7BIT", Mail("a@example.com", MailParams(body="7BIT"))),
    (EHLO, b"MAIL FROM:<a@example.com> BODY=BINARYMIME", Mail("a@example.com", MailParams(body="BINARYMIME"))),
    (EHLO, b"MAIL FROM:<a@example.com> SMTPUTF8", Mail("a@example.com", MailParams(smtputf8=True))),
    (
        EHLO,
        "MAIL FROM:<j\u00f6rg@b\u00fccher.example> SMTPUTF8".encode(),
        Mail("j\u00f6rg@b\u00fccher.example", MailParams(smtputf8=True)),
    ),
    (
        EHLO,
        b"MAIL FROM:<a@example.com> RET=HDRS ENVID=QQ+2B1",
        Mail("a@example.com", MailParams(ret="HDRS", envid="QQ+1")),
    ),
    (EHLO, b"MAIL FROM:<a@example.com> AUTH=<>", Mail("a@example.com", MailParams(auth="<>"))),
    (EHLO, b"MAIL FROM:<a@example.com> REQUIRETLS", Mail("a@example.com", MailParams(requiretls=True))),
    (EHLO, b"MAIL FROM:<a@example.com> MT-PRIORITY=-3", Mail("a@example.com", MailParams(mt_priority=-3))),
    (EHLO, b"MAIL FROM:<a@example.com> BY=120;RT", Mail("a@example.com", MailParams(by=DeliverBy(120, "R", True)))),
    (EHLO, b"MAIL FROM:<a@example.com> HOLDFOR=60", Mail("a@example.com", MailParams(hold_for=60))),
    (
        EHLO,
        b"MAIL FROM:<a@example.com> HOLDUNTIL=2030-01-01T00:00:00Z",
        Mail("a@example.com", MailParams(hold_until="2030-01-01T00:00:00Z")),
    ),
    (EHLO + MAIL, b"RCPT TO:<b@example.com>", Rcpt("b@example.com")),
    (EHLO + MAIL, b"rcpt to: <b@example.com>", Rcpt("b@example.com")),
    (EHLO + MAIL, b"RCPT TO:<Postmaster>", Rcpt("Postmaster")),
    (EHLO + MAIL, b"RCPT TO:<postMASTER>", Rcpt("Postmaster")),
    (EHLO + MAIL, b"RCPT TO:<@hop.example:b@example.com>", Rcpt("b@example.com")),
    (
        EHLO + MAIL,
        b"RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.com",
        Rcpt("b@example.com", RcptParams(notify=("SUCCESS", "FAILURE"), orcpt=("rfc822", "b@example.com"))),
    ),
    (EHLO + MAIL, b"RCPT TO:<b@example.com> NOTIFY=never", Rcpt("b@example.com", RcptParams(notify=("NEVER",)))),
    (
        EHLO + MAIL,
        b"RCPT TO:<b@example.com> RRVS=2014-04-03T23:01:00Z;C",
        Rcpt("b@example.com", RcptParams(rrvs="2014-04-03T23:01:00Z;C")),
    ),
    (EHLO, b"VRFY someone", Vrfy("someone")),
    (EHLO, b"EXPN list", Expn("list")),
    (EHLO, b"STARTTLS", StartTls()),
    (EHLO, b"starttls", StartTls()),
]


@pytest.mark.parametrize(("prefix", "line", "expected"), GOOD)
def test_good_command(prefix: bytes, line: bytes, expected: Any) -> None:
    event, _ = last(prefix, line)
    assert event == expected


# Commands the core answers itself: the event and the reply.
ANSWERED = [
    (b"NOOP", Noop(), b"250 OK"),
    (b"noop anything", Noop("anything"), b"250 2.0.0 OK"),
    (b"HELP", Help(), b"214 2.0.0 See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)"),
    (b"HELP MAIL", Help("MAIL"), b"214 2.0.0 See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)"),
    (b"RSET", Rset(), b"250 2.0.0 Reset OK"),
    (b"QUIT", Quit(), b"221 2.0.0 Bye"),
]


@pytest.mark.parametrize(("line", "event", "reply"), ANSWERED)
def test_answered_by_core(line: bytes, event: Any, reply: bytes) -> None:
    prefix = b"" if line == b"NOOP" else EHLO  # NOOP before EHLO: no enhanced code yet
    events, out = drive(prefix + line + b"\r\n", FULL)
    assert event in events
    assert out.split(b"\r\n")[-2] == reply


def test_bdat_parses() -> None:
    events, _ = drive(EHLO + MAIL + b"RCPT TO:<b@example.com>\r\nBDAT 3\r\nabcbdat 0 last\r\n")
    assert [e for e in events if isinstance(e, Bdat)] == [Bdat(3, False), Bdat(0, True)]


def test_auth_parses() -> None:
    config = ServerConfig(auth=FULL.auth.OPTIONAL, allow_insecure_auth=True)
    events, out = drive(EHLO + b"auth plain AGEAYg==\r\n", config)
    assert out.endswith(b"235 2.7.0 Authentication successful\r\n")
    assert events[-1].username == "a"
    assert Auth("PLAIN", b"\0a\0b").mechanism == "PLAIN"


# --- refusals: the reply the core writes ------------------------------------------------------------

BAD = [
    # Unknown verbs and framing.
    (EHLO, b"FOO", b"500 5.5.1 Command unrecognized"),
    (EHLO, b"", b"500 5.5.1 Command unrecognized"),
    (EHLO, b"MAILFROM:<a@example.com>", b"500 5.5.1 Command unrecognized"),
    (EHLO, b"MAIL\x00 FROM:<a@example.com>", b"500 5.5.2 Command contains a bare CR, LF or control character"),
    (EHLO, b"NOOP\rRSET", b"500 5.5.2 Command contains a bare CR, LF or control character"),
    (EHLO, b"NOOP\rRSET", b"500 5.5.2 Command contains a bare CR, LF or control character"),
    (EHLO, b"NOOP\tx", b"500 5.5.2 Command contains a bare CR, LF or control character"),
    (EHLO, b"NOOP \x7f", b"500 5.5.2 Command contains a bare CR, LF or control character"),
    (EHLO, b"NOOP \xff\xfe", b"500 5.5.2 Command is not valid UTF-8"),
    (EHLO, b"MAIL FROM:<\xc3(@example.com>", b"500 5.5.2 Command is not valid UTF-8"),
    (EHLO, b"NOOP " + b"x" * 600, b"500 5.5.2 Line too long"),
    # HELO/EHLO arguments.
    (b"", b"EHLO", b"501 EHLO needs a domain name or address literal"),
    (b"", b"HELO", b"501 HELO needs a domain name or address literal"),
    (b"", b"EHLO HP! LaserJet", b"501 Invalid EHLO argument: 'HP! LaserJet' is not a domain name or address literal"),
    (b"", b"EHLO a..", b"501 Invalid EHLO argument: 'a..' is not a domain name or address literal"),
    (b"", b"EHLO fe80::zz", b"501 Invalid EHLO argument: 'fe80::zz' is not a domain name or address literal"),
    (b"", b"EHLO bad_domain!", b"501 Invalid EHLO argument: 'bad_domain!' is not a domain name or address literal"),
    (b"", b"EHLO [192.0.2.300]", b"501 Invalid EHLO argument: [192.0.2.300] is not a valid IPv4 address literal"),
    (b"", b"LHLO client.example", b"500 Command unrecognized"),
    # MAIL syntax.
    (EHLO, b"MAIL", b"501 5.5.2 Syntax: FROM:<address> [parameters]"),
    (EHLO, b"MAIL TO:<a@example.com>", b"501 5.5.2 Syntax: FROM:<address> [parameters]"),
    (EHLO, b"MAIL FROM:a@example.com", b"501 5.5.2 Address must be in angle brackets"),
    (EHLO, b"MAIL FROM:<a@example.com", b"501 5.5.2 Address must be in angle brackets"),
    (EHLO, b"MAIL FROM:<a@example.com>SIZE=10", b"501 5.5.2 Space required between address and parameters"),
    (
        EHLO,
        b"MAIL FROM:<a b@example.com>",
        b"501 5.1.7 Bad sender address syntax: <a b@example.com> is not a valid path",
    ),
    (EHLO, b"MAIL FROM:<a@>", b"501 5.1.7 Bad sender address syntax: <a@> is not a valid path"),
    (EHLO, b"MAIL FROM:<Postmaster>", b"501 5.1.7 Bad sender address syntax: <Postmaster> is not a valid path"),
    (
        EHLO,
        b"MAIL FROM:<a@[300.1.1.1]>",
        b"501 5.1.7 Bad sender address syntax: [300.1.1.1] is not a valid IPv4 address literal",
    ),
    (EHLO, "MAIL FROM:<j\u00f6rg@example.com>".encode(), b"553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter"),
    # MAIL parameters.
    (EHLO, b"MAIL FROM:<a@example.com> FOO=BAR", b"555 5.5.4 Parameter FOO not recognized or not implemented"),
    (EHLO, b"MAIL FROM:<a@example.com> NOTIFY=NEVER", b"555 5.5.4 Parameter NOTIFY not recognized or not implemented"),
    (EHLO, b"MAIL FROM:<a@example.com> SIZE=1 SIZE=2", b"501 5.5.4 Parameter SIZE given twice"),
    (EHLO, b"MAIL FROM:<a@example.com> SIZE=", b"501 5.5.4 Malformed parameter SIZE="),
    (EHLO, b"MAIL FROM:<a@example.com> SIZE", b"501 5.5.4 Value must be ASCII digits"),
    (EHLO, b"MAIL FROM:<a@example.com> SIZE=2_5", b"501 5.5.4 Value must be ASCII digits"),
    (EHLO, b"MAIL FROM:<a@example.com> SIZE=+25", b"501 5.5.4 Value must be ASCII digits"),
    (EHLO, "MAIL FROM:<a@example.com> SIZE=\u00b2".encode(), b"501 5.5.4 Value must be ASCII digits"),
    (EHLO, b"MAIL FROM:<a@example.com> SIZE=" + b"9" * 21, b"501 5.5.4 Value must be ASCII digits"),
    (EHLO, b"MAIL FROM:<a@example.com> SIZE=99999999999", b"552 5.3.4 Message size exceeds fixed maximum message size"),
    (EHLO, b"MAIL FROM:<a@example.com> BODY=9BIT", b"504 5.5.4 Value 9BIT not supported"),
    (EHLO, b"MAIL FROM:<a@example.com> RET=ALL", b"504 5.5.4 Value ALL not supported"),
    (EHLO, b"MAIL FROM:<a@example.com> SMTPUTF8=yes", b"501 5.5.4 This parameter takes no value"),
    (EHLO, b"MAIL FROM:<a@example.com> ENVID=a+zz", b"501 5.5.4 Malformed xtext value"),
    (EHLO, b"MAIL FROM:<a@example.com> MT-PRIORITY=10", b"501 5.5.4 MT-PRIORITY must be an integer from -9 to 9"),
    (EHLO, b"MAIL FROM:<a@example.com> BY=120", b"501 5.5.4 BY must look like 120;R or 120;NT"),
    (EHLO, b"MAIL FROM:<a@example.com> HOLDFOR=9999999999", b"501 5.5.4 Value out of range"),
    (EHLO, b"MAIL FROM:<a@example.com> HOLDUNTIL=tomorrow", b"501 5.5.4 HOLDUNTIL must be an RFC 3339 date-time"),
    (EHLO, b"MAIL FROM:<a@example.com> =x", b"501 5.5.4 Malformed parameter =x"),
    # RCPT syntax and parameters.
    (EHLO + MAIL, b"RCPT TO:b@example.com", b"501 5.5.2 Address must be in angle brackets"),
    (EHLO + MAIL, b"RCPT FROM:<b@example.com>", b"501 5.5.2 Syntax: TO:<address> [parameters]"),
    (EHLO + MAIL, b"RCPT TO:<>", b"501 5.1.3 Bad recipient address syntax: <> is not a valid path"),
    (
        EHLO + MAIL,
        "RCPT TO:<j\u00f6rg@example.com>".encode(),
        b"553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter",
    ),
    (EHLO + MAIL, b"RCPT TO:<b@example.com> SIZE=10", b"555 5.5.4 Parameter SIZE not recognized or not implemented"),
    (
        EHLO + MAIL,
        b"RCPT TO:<b@example.com> NOTIFY=NEVER,SUCCESS",
        b"501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
    ),
    (
        EHLO + MAIL,
        b"RCPT TO:<b@example.com> ORCPT=nosemicolon",
        b"501 5.5.4 ORCPT must look like rfc822;user@example.com",
    ),
    (
        EHLO + MAIL,
        b"RCPT TO:<b@example.com> RRVS=soon",
        b"501 5.5.4 RRVS must be an RFC 3339 date-time, optionally ;C or ;R",
    ),
    # Commands without arguments, and arguments that need one.
    (EHLO, b"DATA now", b"501 5.5.4 This command takes no argument"),
    (EHLO, b"RSET x", b"501 5.5.4 This command takes no argument"),
    (EHLO, b"QUIT x", b"501 5.5.4 This command takes no argument"),
    (EHLO, b"STARTTLS x", b"501 5.5.4 This command takes no argument"),
    (EHLO, b"VRFY", b"501 5.5.4 Syntax: VRFY <string>"),
    (EHLO, b"EXPN", b"501 5.5.4 Syntax: EXPN <string>"),
    # AUTH syntax.
    (EHLO, b"AUTH", b"501 5.5.4 Syntax: AUTH <mechanism> [initial-response]"),
    (EHLO, b"AUTH PLAIN a b", b"501 5.5.4 Syntax: AUTH <mechanism> [initial-response]"),
]


@pytest.mark.parametrize(("prefix", "line", "reply"), BAD)
def test_refused(prefix: bytes, line: bytes, reply: bytes) -> None:
    event, out = last(prefix, line)
    assert isinstance(event, CommandRejected)
    assert out == reply


@pytest.mark.parametrize(
    "line",
    [
        b"BDAT",
        b"BDAT x",
        b"BDAT -1",
        b"BDAT +1",
        b"BDAT 1_0",
        "BDAT \u0661".encode(),  # an Arabic-Indic digit: int() reads it, RFC 3030 does not
        b"BDAT 1 FIRST",
        b"BDAT 1 LAST x",
        "BDAT 1 LA\u017fT".encode(),  # a long s: "LA\u017fT".upper() is LAST
        b"BDAT " + b"9" * 21,
        b"BDAT " + b"9" * 20,  # ASCII digits, but more than a chunk may be
        b"BDAT 1000000000000000 LAST",
        b"BDAT 1 " + b"x" * 520,  # over 512 octets
        b"BDAT 1 LAST" + b" " * 5000,  # over any command line: the buffer drops it as it comes
        b"BDAT\x0b1 LAST" + b" " * 5000,  # both: a blank other than a space, and over any line
        b"BDAT\t1 LAST" + b" " * 600,
        # Lines refused before their verb is read: still a BDAT, its chunk still follows.
        b"BDAT 1 LAST\r",
        b"bdat 1 LAST\x0b",
        b"BDAT 1 LAST\xff",
        b"BDAT\x001 LAST",
        "BDAT 1 LAST\u0085".encode(),
        # A verb we do not know, but BDAT to a peer that splits at any blank, or strips them first.
        "BDAT\u00a01 LAST".encode(),
        "bdat\u30001 LAST".encode(),
        "BDAT\u16801 LAST".encode(),
        b" BDAT 1 LAST",
        b"\tBDAT 1 LAST",
    ],
)
def test_a_bdat_that_cannot_be_read_ends_the_session(line: bytes) -> None:
    # Its chunk's octets follow, and where they end is unknown: read as commands, they
    # could be a transaction that a filter in front of us had passed as content.
    events, out = check_three_ways(EHLO + line + b"\r\nRSET\r\n")
    assert events[-1][0] == "RemoteProtocolError"
    assert out.endswith(b"501 5.5.4 Syntax: BDAT <size> [LAST]; closing, as the chunk cannot be told from commands\r\n")


def test_runs_of_spaces_in_bdat_are_one() -> None:
    # As Postfix reads them: read otherwise, the chunk would end the session above.
    event, _ = last(EHLO + MAIL + b"RCPT TO:<b@example.com>\r\n", b"BDAT 2  LAST")
    assert event == Bdat(2, last=True)


@pytest.mark.parametrize("line", ["MA\u0131L FROM:<a@example.com>", "R\u017fET", "\ufb06ARTTLS", "AUTH PLA\u0131N"])
def test_only_ascii_verbs_and_keywords_are_upper_cased(line: str) -> None:
    # str.upper() makes a dotless i an I, a long s an S, a ligature ST: Postfix, and a
    # filter in front of us matching octets, would see no MAIL, RSET, STARTTLS, PLAIN here.
    config = ServerConfig(tls=TlsPolicy.OPTIONAL, auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True)
    event, out = last(EHLO, line.encode(), config)
    assert isinstance(event, CommandRejected) and out.startswith((b"500 ", b"504 "))


def test_an_unknown_verb_is_handed_on_cut_to_16_characters() -> None:
    # The event names the verb for a log or a policy: a client's junk is not handed on whole.
    event, out = last(EHLO, b"x" * 40 + b" and more")
    assert isinstance(event, CommandRejected)
    assert event.command == "X" * 16
    assert out == b"500 5.5.1 Command unrecognized"


def test_rcpt_utf8_allowed_after_smtputf8_mail() -> None:
    line = "RCPT TO:<\u00fcser@b\u00fccher.example>".encode()
    event, out = last(EHLO + b"MAIL FROM:<a@example.com> SMTPUTF8\r\n", line)
    assert event == Rcpt("\u00fcser@b\u00fccher.example")
    assert out == b"250 2.1.5 Recipient OK"


def test_smtputf8_not_advertised_refuses_the_parameter() -> None:
    config = ServerConfig(smtputf8=False)
    _, out = last(EHLO, b"MAIL FROM:<a@example.com> SMTPUTF8", config)
    assert out == b"555 5.5.4 Parameter SMTPUTF8 not recognized or not implemented"


def test_binarymime_needs_its_extension() -> None:
    config = ServerConfig(binarymime=False)
    _, out = last(EHLO, b"MAIL FROM:<a@example.com> BODY=BINARYMIME", config)
    assert out == b"504 5.5.4 BODY=BINARYMIME not supported"


def test_extra_parameter_handed_over() -> None:
    config = ServerConfig(extra_parameters=frozenset({"XFOO", "XBAR"}))
    event, _ = last(EHLO, b"MAIL FROM:<a@example.com> XFOO=1 xbar", config)
    assert event.params.extra == (("XFOO", "1"), ("XBAR", None))


def test_overlong_line_then_next_command_works() -> None:
    events, out = check_three_ways(EHLO + b"NOOP " + b"y" * 5000 + b"\r\nMAIL FROM:<a@example.com>\r\n")
    assert out.split(b"\r\n")[-3:] == [b"500 5.5.2 Line too long", b"250 2.1.0 Sender OK", b""]
    assert events[-1] == Mail("a@example.com")


def test_line_of_exactly_the_limit_is_accepted() -> None:
    # 512 octets with the CRLF (RFC 5321 §4.5.3.1.4).
    line = b"NOOP " + b"x" * (512 - 7)
    event, out = last(EHLO, line)
    assert event == Noop("x" * (512 - 7))
    event, out = last(EHLO, line + b"x")
    assert out == b"500 5.5.2 Line too long"


@pytest.mark.parametrize("verb", [b"GET", b"POST", b"CONNECT", b"HEAD", b"PUT", b"OPTIONS", b"DELETE", b"get"])
def test_http_verbs_close(verb: bytes) -> None:
    events, out = check_three_ways(EHLO + verb + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert events[-1][0] == "RemoteProtocolError"
    assert events[-1][1].code == 521
    assert out.endswith(b"521 5.5.1 Protocol error: this is an SMTP server\r\n")


def test_http_verb_before_ehlo_closes() -> None:
    events, out = drive(b"POST /x HTTP/1.0\r\n")
    assert isinstance(events[-1], RemoteProtocolError)
    assert out.endswith(b"521 Protocol error: this is an SMTP server\r\n")


def test_helo_argument_must_be_ascii_domain_or_is_utf8() -> None:
    # EHLO takes a U-label (RFC 6531 §3.7.1 allows it when SMTPUTF8 is offered).
    event, _ = last(b"", "EHLO b\u00fccher.example".encode())
    assert event == Hello("b\u00fccher.example")


@pytest.mark.parametrize("name", ["DESKTOP_7QX2", "x_y.example", "_dmarc-check.example.org.", "a-_b"])
def test_a_hello_name_with_underscores_is_taken(name: str) -> None:
    # Windows clients send their NetBIOS name; Postfix, aiosmtpd and go-smtp take it.
    for verb in ("EHLO", "HELO"):
        event, _ = last(b"", f"{verb} {name}".encode())
        assert isinstance(event, Hello) and (event.verb, event.domain) == (verb, name)


def test_a_tolerated_hello_name_is_no_longer_than_a_domain_may_be() -> None:
    # 255 octets, as for a domain (RFC 5321 §4.5.3.1.2): the tolerance is no way round the bound.
    name = "a_" + "b" * 253
    event, _ = last(b"", f"EHLO {name}".encode())
    assert isinstance(event, Hello) and event.domain == name
    event, out = last(b"", f"EHLO {name}b".encode())
    assert isinstance(event, CommandRejected)
    assert out.startswith(b"501 ")


@pytest.mark.parametrize(
    "name", ["[192.0.2.1]", "[IPv6:2001:db8::1]", "mail.example.com.", "192.0.2.1", "fe80::1", "::ffff:192.0.2.1"]
)
def test_a_hello_name_that_real_clients_send_outside_the_grammar_is_taken(name: str) -> None:
    # smtplib says "HELO [192.0.2.1]" when the host has no name; devices send bare
    # addresses, resolvers' root dots reach EHLO.  Postfix and aiosmtpd take them all.
    for verb in ("EHLO", "HELO", "LHLO"):
        config = ServerConfig(lmtp=True) if verb == "LHLO" else FULL
        event, _ = last(b"", f"{verb} {name}".encode(), config)
        assert isinstance(event, Hello) and (event.verb, event.domain) == (verb, name)


@pytest.mark.parametrize(
    "name",
    [
        "fe80::1%eth0",
        "::1%a(b)c;d<e>",
        "::1%x@evil.example",
        "x\u0085y.example",
        "x\u009b31m.example",
        "\u202eelgoog.example",  # a right-to-left override: read as "google", backwards
        "a\u2066b.example",
    ],
)
def test_a_hello_name_with_a_zone_or_a_control_is_refused(name: str) -> None:
    # ipaddress takes any text after "%" as an RFC 4007 zone, and the name goes into
    # Received: "::1%(mx.trusted.example)" would forge a trace comment.  A C1 control
    # (U+0085 is a line break to str.splitlines, U+009B a terminal escape) is a control, and
    # so is a bidi override, which makes a name read in another order than it is.
    event, out = last(b"", f"EHLO {name}".encode())
    assert isinstance(event, CommandRejected)
    assert out.startswith((b"500 ", b"501 "))


@pytest.mark.parametrize(
    ("argument", "name"),
    [
        ("HP LaserJet", "HP"),
        ("printer.example HP LaserJet 4050", "printer.example"),
        ("[192.0.2.1] scanner", "[192.0.2.1]"),
        ("DESKTOP_7QX2 (Windows)", "DESKTOP_7QX2"),
    ],
)
def test_words_after_the_hello_name_are_left_out(argument: str, name: str) -> None:
    # Devices send them; go-smtp reads the first word as the name, as we do (Postfix
    # and aiosmtpd keep them all, which would hand a handler something not a host).
    for verb in ("EHLO", "HELO"):
        event, out = last(b"", f"{verb} {argument}".encode())
        assert isinstance(event, Hello) and (event.verb, event.domain) == (verb, name)
        assert out.startswith(b"250")


def test_data_is_an_event() -> None:
    event, out = last(EHLO + MAIL + b"RCPT TO:<b@example.com>\r\n", b"DATA")
    assert event == Data()
    assert out == b"354 End data with <CR><LF>.<CR><LF>"


# --- the fast paths agree with the general parser ---------------------------------------------------
# MAIL and RCPT parse the common <local@domain> shape in one match; the general
# parser stays callable as _mail_general / _rcpt_general and is the reference.

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
# What makes a near miss: quoting, brackets, routes, literals, UTF-8 (including
# characters that case-fold to ASCII), controls, Unicode spaces.
NEAR = '."\\<>@[]:, \u00e9\u212a\u017f\u0131\x00\t\u00a0'
CONTEXTS = [
    Context(frozenset(), frozenset()),
    Context(frozenset({"SIZE", "8BITMIME", "BINARYMIME", "SMTPUTF8", "DSN"}), frozenset({"XFOO"}), True),
    Context(frozenset({"SIZE", "8BITMIME"}), frozenset(), False),
]


def outcome(parser: Any, argument: str | None, context: Context) -> Any:
    """The event, or the reply of the refusal, or any other exception.

    The server never passes a parser a control character (decode_line refuses the
    line first), but the two parsers must agree even then.
    """
    try:
        return parser(argument, context)
    except Refusal as refusal:
        return ("refused", refusal.reply)
    except Exception as exc:  # compared, not hidden
        return ("raised", type(exc), str(exc))


def text_of(alphabet: str, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=st.sampled_from(alphabet), max_size=max_size)


local_parts = st.one_of(
    text_of(ATEXT + ".", 70),
    text_of(ATEXT + NEAR, 12),
    st.integers(58, 70).map(lambda n: "a" * n),  # around the 64-character bound
    st.sampled_from(['"john doe"', '"a>b"', "a..b", ".a", "a.", "Postmaster", "", "\u00fcser"]),
)
labels = st.one_of(
    text_of(string.ascii_letters + string.digits + "-", 66),
    text_of(string.ascii_letters + NEAR, 6),
    st.integers(60, 66).map(lambda n: "d" * n),  # around the 63-octet label limit
)
domains = st.one_of(
    st.lists(labels, min_size=1, max_size=5).map(".".join),
    st.sampled_from(["[192.0.2.1]", "[IPv6:::1]", "[x:y]", "b\u00fccher.example", "example.com."]),
)
paths = st.one_of(
    st.tuples(st.sampled_from(["<", "", "<@hop.example:", "<<"]), local_parts, st.sampled_from(["@", "", "@@"]),
              domains, st.sampled_from([">", "", ">>", "> "])).map("".join),
    st.sampled_from(["<>", "<Postmaster>", "<postmaster>", "<po\u017ftmaster>", "<a@b>"]),
)  # fmt: skip
suffixes = st.one_of(
    st.sampled_from(["", " ", "  ", "x", "\u00a0", " SIZE=1000", " BODY=8BITMIME SIZE=1", " SIZE=1 SIZE=2",
                     " NOTIFY=NEVER", " XFOO=1", " SMTPUTF8", " size=12\u00a0body=7bit", " BODY=BINARYMIME",
                     " FOO", " =x", " SIZE=\u0661"]),
    text_of(ATEXT + NEAR, 8),
)  # fmt: skip


def mutated(text: str, position: int, char: str, delete: bool) -> str:
    """``text`` with one character inserted (or removed) at ``position``: a near miss."""
    position %= len(text) + 1
    return text[:position] + text[position + 1 :] if delete else text[:position] + char + text[position:]


def arguments(prefix: str) -> st.SearchStrategy[str | None]:
    prefixes = st.sampled_from(
        [
            prefix,
            prefix.lower(),
            prefix.title(),
            prefix + " ",
            prefix + "   ",
            prefix[:-1],
            prefix.replace("O", "0"),
            prefix + "\t",
            "",
            "TO:" if prefix == "FROM:" else "FROM:",
        ]
    )
    # The fast path's own shape, from the grammar, with lengths on both sides of its bound ...
    plain = st.tuples(
        st.sampled_from([prefix, prefix.lower(), prefix + " "]),
        st.just("<"),
        st.from_regex(_abnf.DOT_STRING, fullmatch=True),
        st.just("@"),
        st.from_regex(_abnf.DOMAIN, fullmatch=True),
        st.just(">"),
        suffixes,
    ).map("".join)
    # ... that shape one character away from it ...
    near = st.builds(mutated, plain, st.integers(0, 100), st.sampled_from(NEAR + "A-."), st.booleans())
    # ... and anything put together from the pieces.
    built = st.tuples(prefixes, paths, suffixes).map("".join)
    return st.one_of(st.none(), plain, near, built, text_of(ATEXT + NEAR, 20))  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(arguments("TO:"), st.sampled_from(CONTEXTS))
@example("TO:<user1@example.org>", CONTEXTS[0])
@example("TO:<" + "a" * 52 + "@example.org>", CONTEXTS[0])  # 64 characters: fast
@example("TO:<" + "a" * 53 + "@example.org>", CONTEXTS[0])  # 65: general
@example("TO:<" + "a" * 65 + "@b.example>", CONTEXTS[0])
@example("TO:<a@" + "d" * 64 + ".example>", CONTEXTS[0])
def test_rcpt_fast_path_agrees_with_the_general_parser(argument: str | None, context: Context) -> None:
    assert outcome(_commands._rcpt, argument, context) == outcome(_commands._rcpt_general, argument, context)


@settings(max_examples=500, deadline=None)
@given(arguments("FROM:"), st.sampled_from(CONTEXTS))
@example("FROM:<sender@example.com> SIZE=1000 BODY=8BITMIME", CONTEXTS[1])
@example("FROM:<sender@example.com> SIZE=1000 BODY=8BITMIME", CONTEXTS[0])
@example("FROM:<" + "a" * 52 + "@example.org> SIZE=x", CONTEXTS[1])
@example("FROM:<a@b.example> SIZE=1 SIZE=2", CONTEXTS[1])
@example("FROM:<a@b.example>  SMTPUTF8", CONTEXTS[1])
def test_mail_fast_path_agrees_with_the_general_parser(argument: str | None, context: Context) -> None:
    assert outcome(_commands._mail, argument, context) == outcome(_commands._mail_general, argument, context)


@pytest.mark.parametrize(
    ("parser", "argument"),
    [
        (_commands._rcpt, "TO:<user1@example.org>"),
        (_commands._rcpt, "to: <first.last+tag@sub-1.example.org>"),
        (_commands._mail, "FROM:<sender@example.com> SIZE=1000 BODY=8BITMIME"),
        (_commands._mail, "from:<" + "a" * 52 + "@example.org>"),
    ],
)
def test_the_common_shape_takes_the_fast_path(parser: Any, argument: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The comparison above would pass with no fast path at all: show it is taken.
    def general(argument: str | None, context: Context) -> Any:
        raise AssertionError("the general parser was called")

    monkeypatch.setattr(_commands, "_rcpt_general", general)
    monkeypatch.setattr(_commands, "_mail_general", general)
    assert isinstance(parser(argument, CONTEXTS[1]), (Mail, Rcpt))


def test_the_fast_path_uses_the_grammar_rules() -> None:
    # Built from _abnf's own rule strings, not a copy of them.
    assert _abnf.DOT_STRING in _commands._PLAIN_PATH and _abnf.DOMAIN in _commands._PLAIN_PATH


def reference_decode(line: bytes) -> Any:
    """decode_line spelled out: trailing blanks off, strict UTF-8, then the control-character regex."""
    line = line.rstrip(b" \t")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "not utf-8"
    # C0, DEL, C1, the Unicode line and paragraph separators, the bidi overrides and isolates.
    return "control" if re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", text) else text


def checked_decode(line: bytes) -> Any:
    try:
        return decode_line(line)
    except Refusal as refusal:
        return "not utf-8" if "UTF-8" in refusal.reply.message else "control"


def test_isprintable_is_the_control_regex_on_ascii() -> None:
    # decode_line's shortcut: for every ASCII character, isprintable() is the
    # negation of the control-character class.
    for code in range(128):
        assert chr(code).isprintable() == (re.fullmatch(r"[\x00-\x1f\x7f]", chr(code)) is None), code


@given(st.binary(max_size=40) | st.text(max_size=20).map(str.encode))
@example(b"RCPT TO:<a@b>\x7f")
@example("NOOP \u00a0\u2028\u0085".encode())
def test_decode_line_agrees_with_the_regex(line: bytes) -> None:
    assert checked_decode(line) == reference_decode(line)


def test_only_an_ascii_space_separates_parameters() -> None:
    # U+00A0 is whitespace to str.split(), not to RFC 5321: the two "parameters"
    # are one malformed word, refused, on the fast path and the general one alike.
    context = Context(frozenset({"SIZE", "8BITMIME", "SMTPUTF8"}), frozenset())
    for path in ("<a@b.example>", '<"a b"@b.example>'):  # the fast path, then the general one
        line = f"FROM:{path} SIZE=10\u00a0BODY=8BITMIME"
        with pytest.raises(Refusal):
            PARSERS["MAIL"](line, context)
    # Several plain spaces are still tolerated, as before.
    event = PARSERS["MAIL"]("FROM:<a@b.example>  SIZE=10   BODY=8BITMIME", context)
    assert isinstance(event, Mail)
    assert event.params.size == 10 and event.params.body == "8BITMIME"


def test_postmaster_is_matched_with_ascii_case_folding_only() -> None:
    context = Context(frozenset(), frozenset())
    rcpt = PARSERS["RCPT"]("TO:<PostMaster>", context)
    assert isinstance(rcpt, Rcpt)
    assert rcpt.recipient == "Postmaster"
    with pytest.raises(Refusal):
        PARSERS["RCPT"]("TO:<po\u017ftmaster>", context)  # long s: not "s" in an ASCII session
