"""The one choke point for client commands: exact wire forms, and no injection through any field."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from smtpcore import (
    Auth,
    AuthResponse,
    Bdat,
    ClientConfig,
    ClientConnection,
    Data,
    DeliverBy,
    Envelope,
    Expn,
    Hello,
    Help,
    LocalProtocolError,
    Mail,
    MailParams,
    Noop,
    Quit,
    Rcpt,
    RcptParams,
    Recipient,
    Rset,
    StartTls,
    Vrfy,
)
from smtpcore._events import Event
from smtpcore._writers import write_command

# Every C0 control and DEL; CR, LF and NUL first because they matter most.
CONTROLS = ["\r", "\n", "\x00", "\r\n", *[chr(c) for c in range(1, 32) if c not in (10, 13)], "\x7f"]
_CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]")

_T = TypeVar("_T")
_E = TypeVar("_E", bound=Event)


@pytest.mark.parametrize(
    ("event", "utf8", "wire"),
    [
        (Hello("client.example"), False, b"EHLO client.example\r\n"),
        (Hello("[192.0.2.1]", "HELO"), False, b"HELO [192.0.2.1]\r\n"),
        (Hello("c.example", "LHLO"), False, b"LHLO c.example\r\n"),
        (Mail(""), False, b"MAIL FROM:<>\r\n"),
        (
            Mail("a@x.org", MailParams(size=10, body="8BITMIME", ret="FULL", envid="a+b=c", requiretls=True)),
            False,
            b"MAIL FROM:<a@x.org> SIZE=10 BODY=8BITMIME RET=FULL ENVID=a+2Bb+3Dc REQUIRETLS\r\n",
        ),
        (
            Mail(
                "a@x.org", MailParams(mt_priority=-3, by=DeliverBy(60, "R", True), hold_for=5, extra=(("X-A", None),))
            ),
            False,
            b"MAIL FROM:<a@x.org> MT-PRIORITY=-3 BY=60;RT HOLDFOR=5 X-A\r\n",
        ),
        (Mail("ü@x.org", MailParams(smtputf8=True)), False, "MAIL FROM:<ü@x.org> SMTPUTF8\r\n".encode()),
        (
            Rcpt("b@y.org", RcptParams(notify=("NEVER",), orcpt=("rfc822", "b@y.org"))),
            False,
            b"RCPT TO:<b@y.org> NOTIFY=NEVER ORCPT=rfc822;b@y.org\r\n",
        ),
        (Rcpt("Postmaster"), False, b"RCPT TO:<Postmaster>\r\n"),
        (Rcpt("ü@y.org"), True, "RCPT TO:<ü@y.org>\r\n".encode()),
        (Data(), False, b"DATA\r\n"),
        (Bdat(0, True), False, b"BDAT 0 LAST\r\n"),
        (Bdat(123), False, b"BDAT 123\r\n"),
        (Rset(), False, b"RSET\r\n"),
        (Quit(), False, b"QUIT\r\n"),
        (Noop(), False, b"NOOP\r\n"),
        (Noop("x"), False, b"NOOP x\r\n"),
        (Help("MAIL"), False, b"HELP MAIL\r\n"),
        (Vrfy("user@x.org"), False, b"VRFY user@x.org\r\n"),
        (Vrfy('"john smith"@x.org'), False, b'VRFY "john smith"@x.org\r\n'),  # RFC 5321 §3.5.1
        (Expn('"list name"'), False, b'EXPN "list name"\r\n'),
        (StartTls(), False, b"STARTTLS\r\n"),
        (Auth("PLAIN", b"\x00u\x00p"), False, b"AUTH PLAIN AHUAcA==\r\n"),
        (Auth("PLAIN", b""), False, b"AUTH PLAIN =\r\n"),
        (Auth("LOGIN"), False, b"AUTH LOGIN\r\n"),
        (AuthResponse(b"user"), False, b"dXNlcg==\r\n"),
        (AuthResponse(b""), False, b"\r\n"),
        (AuthResponse(cancel=True), False, b"*\r\n"),
    ],
)
def test_wire_forms(event: Event, utf8: bool, wire: bytes) -> None:
    assert write_command(event, utf8) == wire


def test_utf8_only_with_smtputf8() -> None:
    with pytest.raises(LocalProtocolError):
        write_command(Mail("ü@x.org"))
    with pytest.raises(LocalProtocolError):
        write_command(Rcpt("ü@y.org"), False)
    with pytest.raises(LocalProtocolError):
        write_command(Hello("bücher.example"))  # EHLO is always ASCII (A-labels)
    with pytest.raises(LocalProtocolError, match="must be ASCII"):
        write_command(Vrfy("ü"), True)  # VRFY has its own SMTPUTF8 argument (RFC 6531 §3.7.4), not sent
    with pytest.raises(LocalProtocolError):
        write_command(Mail("a@x.org", MailParams(extra=(("X", "ü"),))))
    assert write_command(Mail("a@x.org", MailParams(smtputf8=True, extra=(("X", "ü"),)))).endswith("X=ü\r\n".encode())


def test_lengths() -> None:
    # 512 octets, and what the parameters' extensions allow (RFC 1870, 4954, 6531, 3461),
    # 64 octets between them for the others.
    with pytest.raises(LocalProtocolError, match="exceeds 576"):
        write_command(Mail("a@x.org", MailParams(extra=tuple((f"X{i}", "v" * 40) for i in range(14)))))
    address = "a" * 64 + "@" + ".".join(["d" * 60] * 3)  # 248 octets
    rcpt = write_command(Rcpt(address, RcptParams(notify=("SUCCESS", "FAILURE", "DELAY"), orcpt=("rfc822", address))))
    assert 512 < len(rcpt) <= 512 + 500 + 64  # RFC 3461 §4: NOTIFY and ORCPT, 500 more
    with pytest.raises(LocalProtocolError, match="exceeds 576"):
        write_command(Rcpt(address, RcptParams(extra=(("X-LONG", "v" * 400),))))
    mail = write_command(Mail(address, MailParams(size=10**9, auth=address, body="8BITMIME")))
    assert 512 < len(mail) <= 512 + 26 + 500 + 64
    assert len(write_command(Auth("PLAIN", b"x" * 9000))) < 12288
    with pytest.raises(LocalProtocolError):
        write_command(AuthResponse(b"x" * 9300))


# --- injection: every field, every control character --------------------------------------------


def _planted(kind: type[_T], **values: Any) -> _T:
    """Parameters with ``values`` set behind the constructor's back (as a bug or an attacker might)."""
    params = kind()
    for name, value in values.items():
        object.__setattr__(params, name, value)
    return params


def _unchecked(kind: type[_E], **values: Any) -> _E:
    """``Event._unchecked`` applied to ``kind``: ``values`` set without validation."""
    return kind._unchecked(**values)


def _fields(bad: str) -> list[tuple[str, Event]]:
    """Events with ``bad`` planted in one field, bypassing the constructors' checks."""
    u = _unchecked
    return [
        ("Hello.domain", u(Hello, domain=f"x{bad}y.org", verb="EHLO")),
        ("Hello.verb", u(Hello, domain="x.org", verb=f"EHLO{bad}")),
        ("Mail.sender", u(Mail, sender=f"a{bad}@x.org", params=MailParams())),
        ("Mail.sender-end", u(Mail, sender=f"a@x.org>{bad}RCPT TO:<e@x.org", params=MailParams())),
        ("Mail.size", u(Mail, sender="a@x.org", params=_planted(MailParams, size=f"1{bad}2"))),
        ("Mail.body", u(Mail, sender="a@x.org", params=_planted(MailParams, body=f"7BIT{bad}"))),
        ("Mail.ret", u(Mail, sender="a@x.org", params=_planted(MailParams, ret=f"FULL{bad}"))),
        ("Mail.envid", u(Mail, sender="a@x.org", params=_planted(MailParams, envid=f"id{bad}"))),
        ("Mail.auth", u(Mail, sender="a@x.org", params=_planted(MailParams, auth=f"a{bad}"))),
        ("Mail.mt_priority", u(Mail, sender="a@x.org", params=_planted(MailParams, mt_priority=f"1{bad}"))),
        ("Mail.hold_until", u(Mail, sender="a@x.org", params=_planted(MailParams, hold_until=f"2020{bad}"))),
        ("Mail.extra-key", u(Mail, sender="a@x.org", params=_planted(MailParams, extra=((f"X{bad}", None),)))),
        (
            "Mail.extra-value",
            u(Mail, sender="a@x.org", params=_planted(MailParams, extra=(("X", f"v{bad}"),))),
        ),
        ("Rcpt.recipient", u(Rcpt, recipient=f"b{bad}@y.org", params=RcptParams())),
        ("Rcpt.notify", u(Rcpt, recipient="b@y.org", params=_planted(RcptParams, notify=(f"NEVER{bad}",)))),
        (
            "Rcpt.orcpt-type",
            u(Rcpt, recipient="b@y.org", params=_planted(RcptParams, orcpt=(f"rfc822{bad}", "b"))),
        ),
        ("Rcpt.orcpt", u(Rcpt, recipient="b@y.org", params=_planted(RcptParams, orcpt=("rfc822", f"b{bad}")))),
        ("Rcpt.rrvs", u(Rcpt, recipient="b@y.org", params=_planted(RcptParams, rrvs=f"2020{bad}"))),
        ("Rcpt.extra", u(Rcpt, recipient="b@y.org", params=_planted(RcptParams, extra=(("X", f"v{bad}"),)))),
        ("Bdat.size", u(Bdat, size=f"1{bad}", last=False)),
        ("Vrfy", u(Vrfy, argument=f"u{bad}")),
        ("Expn", u(Expn, argument=f"u{bad}")),
        ("Help", u(Help, argument=f"u{bad}")),
        ("Noop", u(Noop, argument=f"u{bad}")),
        ("Auth.mechanism", u(Auth, mechanism=f"PLAIN{bad}", initial_response=None)),
        ("Auth.initial", u(Auth, mechanism="PLAIN", initial_response=f"x{bad}".encode())),
        ("AuthResponse", u(AuthResponse, data=f"x{bad}".encode(), cancel=False)),
    ]


@pytest.mark.parametrize("bad", CONTROLS, ids=repr)
def test_no_control_character_reaches_the_wire(bad: str) -> None:
    for name, event in _fields(bad):
        for utf8 in (False, True):
            try:
                wire = write_command(event, utf8)
            except LocalProtocolError:
                continue
            # Encoded (xtext, base64), never passed through: one CRLF, at the end.
            assert not _CONTROL_BYTES.search(wire[:-2]), (name, wire)
            assert wire.endswith(b"\r\n")


@pytest.mark.parametrize("bad", CONTROLS, ids=repr)
def test_constructors_refuse_controls(bad: str) -> None:
    """The public constructors refuse them too (the first line of defence)."""
    attempts: list[Callable[[], object]] = [
        lambda: Hello(f"x{bad}y.org"),
        lambda: Mail(f"a{bad}@x.org"),
        lambda: Rcpt(f"b{bad}@y.org"),
        lambda: Vrfy(f"u{bad}"),
        lambda: Expn(f"u{bad}"),
        lambda: Help(f"u{bad}"),
        lambda: Noop(f"u{bad}"),
        lambda: Auth(f"PLAIN{bad}"),
        lambda: Envelope(f"a{bad}@x.org", ["b@y.org"]),
        lambda: Envelope("a@x.org", [f"b{bad}@y.org"]),
        lambda: Recipient(f"b{bad}@y.org"),
    ]
    for attempt in attempts:
        with pytest.raises(LocalProtocolError):
            attempt()
    with pytest.raises(ValueError, match="hostname"):
        ClientConfig(local_hostname=f"client{bad}.example")


@pytest.mark.parametrize("bad", ["\r", "\n", "\x00", "\x7f"], ids=repr)
def test_send_writes_nothing_for_a_bad_event(bad: str) -> None:
    conn = ClientConnection(ClientConfig(allow_insecure_auth=True))
    conn.receive_data(b"220 hi\r\n")
    conn.next_event()
    conn.send(Hello("c.example"))
    conn.receive_data(b"250-mx\r\n250 PIPELINING\r\n")
    conn.next_event()
    conn.data_to_send()
    for name, event in _fields(bad):
        try:
            conn.send(event)
        except LocalProtocolError:
            assert conn.data_to_send() == b"", name
            continue
        wire = conn.data_to_send()
        assert not _CONTROL_BYTES.search(wire[:-2]), (name, wire)
        conn = ClientConnection(ClientConfig(allow_insecure_auth=True))  # start clean for the next field
        conn.receive_data(b"220 hi\r\n")
        conn.next_event()
        conn.send(Hello("c.example"))
        conn.receive_data(b"250-mx\r\n250 PIPELINING\r\n")
        conn.next_event()
        conn.data_to_send()


def test_not_a_client_command() -> None:
    from smtpcore import EndOfMessage, MessageData

    for event in (EndOfMessage(), MessageData(b"x")):
        with pytest.raises(LocalProtocolError):
            write_command(event)


def test_the_choke_point_itself_and_wrong_types() -> None:
    from smtpcore import _writers

    with pytest.raises(LocalProtocolError, match="containing"):
        _writers._finish("NOOP \x01", False)
    u = _unchecked
    wrong = [
        u(Mail, sender=5, params=MailParams()),
        u(Mail, sender="a@x.org", params=RcptParams()),
        u(Mail, sender="a@x.org", params=_planted(MailParams, size=10**21)),
        u(Mail, sender="a@x.org", params=_planted(MailParams, size=True)),
        u(Rcpt, recipient="b@y.org", params=MailParams()),
        u(Vrfy, argument=None),
        u(Auth, mechanism="PLAIN", initial_response="text"),
        u(AuthResponse, data="text", cancel=False),
    ]
    for event in wrong:
        with pytest.raises(LocalProtocolError):
            write_command(event)
