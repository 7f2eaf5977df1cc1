"""Events validate in their constructors: an event that could not be sent correctly cannot exist."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore import (
    Auth,
    AuthCredentials,
    AuthResponse,
    Bdat,
    CommandRejected,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Expn,
    Hello,
    Help,
    LocalProtocolError,
    Mail,
    MailParams,
    MessageData,
    MessageRejected,
    Noop,
    Quit,
    Rcpt,
    RcptParams,
    Reply,
    Rset,
    StartTls,
    TlsHandshake,
    Vrfy,
)
from smtpcore._events import unchecked_mail, unchecked_rcpt

# Every string argument of every event, with a valid value: (name, builder).
STRING_ARGUMENTS: list[tuple[str, Callable[[str], Event], str]] = [
    ("Hello.domain", Hello, "mail.example.com"),
    ("Hello.domain literal", Hello, "[192.0.2.1]"),
    ("Hello.verb", lambda s: Hello("example.com", s), "HELO"),  # type: ignore[arg-type]
    ("Mail.sender", Mail, "user@example.com"),
    ("Rcpt.recipient", Rcpt, "user@example.com"),
    ("Noop.argument", Noop, "hello"),
    ("Vrfy.argument", Vrfy, "user"),
    ("Vrfy.argument mailbox", Vrfy, "user@example.com"),
    ("Expn.argument", Expn, "list"),
    ("Help.argument", Help, "MAIL"),
    ("Auth.mechanism", Auth, "PLAIN"),
]

BAD_CHARACTERS = [*(chr(c) for c in range(32)), "\x7f", "\r\n", " "]


@pytest.mark.parametrize(("name", "build", "good"), STRING_ARGUMENTS, ids=[a[0] for a in STRING_ARGUMENTS])
def test_valid_string_argument(name: str, build: Callable[[str], Event], good: str) -> None:
    event = build(good)
    assert isinstance(event, Event)


@pytest.mark.parametrize(("name", "build", "good"), STRING_ARGUMENTS, ids=[a[0] for a in STRING_ARGUMENTS])
@pytest.mark.parametrize("bad", BAD_CHARACTERS, ids=lambda c: f"{ord(c[0]):02x}{len(c)}")
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_control_characters_refused_everywhere(
    name: str, build: Callable[[str], Event], good: str, bad: str, where: str
) -> None:
    value = {"start": bad + good, "middle": good[:2] + bad + good[2:], "end": good + bad}[where]
    with pytest.raises(LocalProtocolError):
        build(value)


@pytest.mark.parametrize(("name", "build", "good"), STRING_ARGUMENTS, ids=[a[0] for a in STRING_ARGUMENTS])
@pytest.mark.parametrize("bad", [None, b"x", 5, ["a"]])
def test_non_str_refused(name: str, build: Callable[[Any], Event], good: str, bad: Any) -> None:
    if bad is None and name.split(".", maxsplit=1)[0] in ("Noop", "Help"):
        return  # the argument is optional
    with pytest.raises(LocalProtocolError):
        build(bad)


# --- Hello ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["EHLO", "HELO", "LHLO"])
def test_hello_verbs(verb: Any) -> None:
    assert Hello("example.com", verb).verb == verb


@pytest.mark.parametrize("verb", ["ehlo", "HELLO", "", "EHLO ", "MAIL"])
def test_hello_bad_verb(verb: Any) -> None:
    with pytest.raises(LocalProtocolError):
        Hello("example.com", verb)


@pytest.mark.parametrize(
    "domain", ["", "example.com.", "a..b", "-a.com", "exa mple", "[1.2.3.999]", "[IPv6:zz::]", "a" * 64, "user@host"]
)
def test_hello_bad_domain(domain: str) -> None:
    with pytest.raises(LocalProtocolError):
        Hello(domain)


def test_hello_utf8_domain() -> None:
    # The client decides whether it may send it; the event itself allows RFC 6531.
    assert Hello("bücher.example").domain == "bücher.example"


# --- Mail and Rcpt --------------------------------------------------------------------------------


def test_mail_null_sender() -> None:
    mail = Mail("")
    assert mail.sender == ""
    assert mail.params == MailParams()


@pytest.mark.parametrize(
    "address",
    ["user", "@example.com", "user@", "<user@example.com>", "a..b@example.com", "a b@example.com", "a" * 253 + "@b"],
)
def test_mail_and_rcpt_bad_mailbox(address: str) -> None:
    with pytest.raises(LocalProtocolError):
        Mail(address)
    with pytest.raises(LocalProtocolError):
        Rcpt(address)


def test_rcpt_postmaster_and_no_null() -> None:
    assert Rcpt("Postmaster").recipient == "Postmaster"
    assert Rcpt("postmaster").recipient == "postmaster"
    with pytest.raises(LocalProtocolError):
        Rcpt("")
    with pytest.raises(LocalProtocolError):
        Rcpt("Postmaster ")
    with pytest.raises(LocalProtocolError):
        Mail("Postmaster")


def test_params_type_checked() -> None:
    assert Mail("a@b", MailParams(size=5)).params.size == 5
    assert Rcpt("a@b", RcptParams(notify=("NEVER",))).params.notify == ("NEVER",)
    with pytest.raises(LocalProtocolError):
        Mail("a@b", RcptParams())  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Rcpt("a@b", MailParams())  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Mail("a@b", {"size": 5})  # type: ignore[arg-type]


def test_utf8_addresses_allowed_in_events() -> None:
    assert Mail("üser@bücher.example").sender == "üser@bücher.example"
    assert Rcpt("用户@例子.广告").recipient == "用户@例子.广告"


# --- string arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["user", '"John Smith"', "user@example.com", '"a\\"b"', "üser"])
def test_string_arguments_good(argument: str) -> None:
    assert Vrfy(argument).argument == argument
    assert Expn(argument).argument == argument
    assert Noop(argument).argument == argument
    assert Help(argument).argument == argument


@pytest.mark.parametrize("argument", ["", "John Smith", '"unterminated', "a\tb", '"a"b"', "<user@example.com>"])
def test_string_arguments_bad(argument: str) -> None:
    for cls in (Vrfy, Expn, Noop, Help):
        with pytest.raises(LocalProtocolError):
            cls(argument)


def test_optional_arguments() -> None:
    assert Noop().argument is None
    assert Help().argument is None
    with pytest.raises(LocalProtocolError):
        Vrfy(None)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Expn(None)  # type: ignore[arg-type]


# --- Bdat and MessageData -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 65536, 10**15 - 1])
def test_bdat_good(size: int) -> None:
    assert Bdat(size).size == size
    assert Bdat(size, last=True).last


@pytest.mark.parametrize("size", [-1, -(10**9), 10**15, 10**100, True, False, 1.0, "5", b"5", None])
def test_bdat_bad_size(size: Any) -> None:
    with pytest.raises(LocalProtocolError):
        Bdat(size)


@pytest.mark.parametrize("flag", [1, 0, "yes", None])
def test_flags_must_be_bools(flag: Any) -> None:
    # The writer sends LAST (and "*") only for True, while the client machine read a
    # truthy 1 as the last chunk: client and server would disagree where the message ends.
    with pytest.raises(LocalProtocolError, match=r"Bdat\.last"):
        Bdat(5, last=flag)
    with pytest.raises(LocalProtocolError, match=r"AuthResponse\.cancel"):
        AuthResponse(cancel=flag)


def test_message_data_types() -> None:
    assert MessageData(b"abc").data == b"abc"
    # MessageData takes these at run time (its field is annotated ``bytes`` only) and keeps
    # a copy as bytes: an event is a value, hashable, never a view of a buffer that changes.
    buffer = bytearray(b"abc")
    event = MessageData(buffer)  # type: ignore[arg-type]
    buffer[0] = ord("x")
    assert type(event.data) is bytes and event.data == b"abc"
    assert event == MessageData(b"abc") and hash(event) == hash(MessageData(b"abc"))
    assert MessageData(memoryview(b"abc")[1:]).data == b"bc"  # type: ignore[arg-type]
    for bad in ("abc", 5, None, [1, 2]):
        with pytest.raises(LocalProtocolError):
            MessageData(bad)  # type: ignore[arg-type]


@given(st.binary(max_size=5000))
def test_message_data_repr_is_bounded(data: bytes) -> None:
    text = repr(MessageData(data))
    assert len(text) < 200
    assert str(len(data)) in text


def test_message_data_repr_huge() -> None:
    text = repr(MessageData(b"x" * 10**6))
    assert len(text) < 200
    assert "1000000 bytes" in text
    assert "..." in text
    assert "..." not in repr(MessageData(b"short"))
    # (accepted at run time; the field is annotated ``bytes`` only)
    assert repr(MessageData(memoryview(b"z" * 100))).count("z") == 32  # type: ignore[arg-type]


# --- SASL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "SCRAM-SHA-256", "A", "X_Y", "A" * 20])
def test_sasl_names_good(name: str) -> None:
    assert Auth(name).mechanism == name


@pytest.mark.parametrize("name", ["", "plain", "Plain", "A" * 21, "PL AIN", "PLAIN=", "PLAIN*", "ÜBER", "PLAIN\r\n"])
def test_sasl_names_bad(name: str) -> None:
    with pytest.raises(LocalProtocolError):
        Auth(name)


def test_auth_response_types() -> None:
    assert Auth("PLAIN", b"").initial_response == b""
    assert Auth("PLAIN").initial_response is None
    with pytest.raises(LocalProtocolError):
        Auth("PLAIN", "secret")  # type: ignore[arg-type]
    assert AuthResponse(b"abc").data == b"abc"
    assert AuthResponse(cancel=True).cancel
    with pytest.raises(LocalProtocolError):
        AuthResponse("abc")  # type: ignore[arg-type]


SECRET = "hunter2-Sup3rSecret"


def secret_forms() -> list[str]:
    raw = SECRET.encode()
    plain = b"\x00user\x00" + raw
    return [SECRET, repr(raw), base64.b64encode(raw).decode(), base64.b64encode(plain).decode(), repr(plain)]


def test_secrets_not_in_repr() -> None:
    raw = SECRET.encode()
    events = [
        Auth("PLAIN", b"\x00user\x00" + raw),
        Auth("LOGIN", raw),
        AuthResponse(raw),
        AuthResponse(base64.b64encode(raw)),
        AuthCredentials("PLAIN", "user", "", password=SECRET),
        AuthCredentials("XOAUTH2", "user", token=SECRET),
        AuthCredentials("CRAM-MD5", "user", verifier=lambda password: password == SECRET),
    ]
    for event in events:
        for text in (repr(event), str(event), f"{event}", f"{event!r}"):
            for form in secret_forms():
                assert form not in text, (type(event).__name__, text)
    # The non-secret parts are still shown, for logs.
    assert "PLAIN" in repr(events[0])
    assert "user" in repr(events[4])


def test_auth_credentials_verify() -> None:
    plain = AuthCredentials("PLAIN", "user", password=SECRET)
    assert plain.verify(SECRET)
    assert not plain.verify("wrong")
    assert not plain.verify("")
    assert AuthCredentials("PLAIN", "user", password="pässword").verify("pässword")
    cram = AuthCredentials("CRAM-MD5", "user", verifier=lambda password: password == SECRET)
    assert cram.verify(SECRET)
    assert not cram.verify("wrong")
    token = AuthCredentials("XOAUTH2", "user", token="tok")
    assert not token.verify("tok")  # a token is not a password


# --- the rest -------------------------------------------------------------------------------------


def test_events_without_fields() -> None:
    for cls in (Data, EndOfMessage, Rset, Quit, StartTls, TlsHandshake):
        assert cls() == cls()
        assert isinstance(cls(), Event)
    assert ConnectionClosed().by_peer is False
    assert ConnectionClosed(by_peer=True).by_peer is True
    reply = Reply(500, "Command unrecognized", "5.5.1")
    assert CommandRejected("FOO", reply).reply == reply
    assert MessageRejected(reply).reply == reply


@pytest.mark.parametrize(
    "event",
    [Hello("example.com"), Mail("a@b"), Rcpt("a@b"), Bdat(5), MessageData(b"x"), Noop(), Auth("PLAIN"), Quit()],
    ids=lambda e: type(e).__name__,
)
def test_events_are_frozen(event: Event) -> None:
    assert dataclasses.is_dataclass(event)
    field = dataclasses.fields(event)[0].name if dataclasses.fields(event) else "anything"
    # (A field-less slotted frozen dataclass raises TypeError here: still refused.)
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        setattr(event, field, None)
    # Slots: no per-instance dict to smuggle attributes into.
    assert not hasattr(event, "__dict__")


def test_unchecked_fast_path_builds_equal_events() -> None:
    assert Mail._unchecked(sender="a@b", params=MailParams()) == Mail("a@b")
    assert Bdat._unchecked(size=3, last=True) == Bdat(3, True)
    # The positional ones the parser uses for MAIL and RCPT.
    mail = unchecked_mail("a@b", MailParams(size=10))
    assert mail == Mail("a@b", MailParams(size=10)) == Mail._unchecked(sender="a@b", params=MailParams(size=10))
    rcpt = unchecked_rcpt("c@d", RcptParams(notify=("NEVER",)))
    assert rcpt == Rcpt("c@d", RcptParams(notify=("NEVER",)))
    assert type(mail) is Mail and type(rcpt) is Rcpt and not hasattr(rcpt, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rcpt.recipient = "e@f"  # type: ignore[misc]


@given(st.text(max_size=40))
def test_arbitrary_strings_only_raise_local_protocol_error(text: str) -> None:
    for build in (Hello, Mail, Rcpt, Vrfy, Expn, Noop, Help, Auth):
        try:
            event = build(text)
        except LocalProtocolError:
            continue
        # Whatever was accepted can be written on one line.
        assert not any(ch in text for ch in "\r\n\x00")
        assert isinstance(event, Event)


def test_names_and_addresses_of_another_type_say_so() -> None:
    # Not a regex's "cannot use a string pattern on a bytes-like object".
    with pytest.raises(LocalProtocolError, match="recipient must be a str, not bytes"):
        Rcpt(b"a@b.example")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="sender must be a str"):
        Mail(None)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="EHLO name must be a str, not int"):
        Hello(5)  # type: ignore[arg-type]
