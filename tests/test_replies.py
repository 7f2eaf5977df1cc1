"""Reply: construction is validated, serialisation is exact (RFC 5321 §4.2, RFC 2034/3463)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore import LocalProtocolError, Reply, _replies
from smtpcore._replies import MAX_REPLY_TEXT

# --- codes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [200, 211, 220, 250, 259, 354, 421, 452, 500, 550, 554, 559])
def test_valid_codes(code: int) -> None:
    assert Reply(code, "x").code == code


@pytest.mark.parametrize(
    "code",
    [0, 1, 99, 100, 199, 260, 299, 360, 399, 460, 560, 599, 600, 999, 1000, -250, 2500, 250.0, "250", b"250", None],
)
def test_invalid_codes(code: Any) -> None:
    with pytest.raises(LocalProtocolError):
        Reply(code, "x")


@pytest.mark.parametrize("code", [True, False])
def test_bool_is_not_a_code(code: bool) -> None:
    with pytest.raises(LocalProtocolError):
        Reply(code)


@given(st.integers(-1000, 10000))
def test_code_rule(code: int) -> None:
    valid = 200 <= code <= 559 and (code // 10) % 10 <= 5
    if valid:
        assert Reply(code).code == code
    else:
        with pytest.raises(LocalProtocolError):
            Reply(code)


# --- enhanced codes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "enhanced"), [(250, "2.0.0"), (250, "2.1.5"), (451, "4.3.0"), (550, "5.7.1"), (550, "5.123.999")]
)
def test_valid_enhanced(code: int, enhanced: str) -> None:
    assert Reply(code, "x", enhanced).enhanced == enhanced


@pytest.mark.parametrize(
    ("code", "enhanced"),
    [
        (250, "5.0.0"),  # class must match the reply's first digit
        (550, "2.0.0"),
        (450, "5.0.0"),
        (354, "3.0.0"),  # there is no class 3
        (250, "1.0.0"),
        (250, "2.0"),
        (250, "2.0.0.0"),
        (250, "2.1000.0"),
        (250, "2.0.1000"),
        (250, "2..0"),
        (250, "2.0.0 "),
        (250, " 2.0.0"),
        (250, "2.0.0\r\n"),
        (250, "2.x.0"),
        (250, "2.\u0663.0"),
        (250, ""),
    ],
)
def test_invalid_enhanced(code: int, enhanced: str) -> None:
    with pytest.raises(LocalProtocolError):
        Reply(code, "x", enhanced)


# --- text -----------------------------------------------------------------------------------------

CONTROLS = [chr(c) for c in range(32) if c != 9] + ["\x7f"]


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: f"{ord(c):02x}")
def test_control_characters_refused(control: str) -> None:
    with pytest.raises(LocalProtocolError):
        Reply(250, f"OK{control}")
    with pytest.raises(LocalProtocolError):
        Reply(250, ["first", f"second{control}line"])


def test_forged_line_refused() -> None:
    with pytest.raises(LocalProtocolError):
        Reply(250, "OK\r\n250 Forged")
    with pytest.raises(LocalProtocolError):
        Reply(550, "no\n354 go ahead")


def test_tab_and_utf8_allowed() -> None:
    # RFC 5321 textstring includes HT; RFC 6531 allows UTF-8 text.
    assert Reply(250, "a\tb").to_bytes() == b"250 a\tb\r\n"
    assert Reply(250, "Grüße").to_bytes() == "250 Grüße\r\n".encode()


def test_text_must_be_str() -> None:
    for text in ([b"OK"], [1], (None,)):
        with pytest.raises(LocalProtocolError):
            Reply(250, text)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Reply(250, b"OK")  # type: ignore[arg-type]


def test_line_length_limit() -> None:
    assert MAX_REPLY_TEXT == 496
    longest = Reply(250, "a" * MAX_REPLY_TEXT, "2.0.0")
    # Even the longest line with the longest enhanced code fits in 512 octets.
    assert len(Reply(250, "a" * MAX_REPLY_TEXT, "2.123.456").to_bytes()) <= 512
    assert len(Reply(250, ["a" * MAX_REPLY_TEXT, "b"], "2.123.456").to_bytes().split(b"\r\n")[0]) + 2 <= 512
    assert longest.text == ("a" * MAX_REPLY_TEXT,)
    with pytest.raises(LocalProtocolError):
        Reply(250, "a" * (MAX_REPLY_TEXT + 1))
    with pytest.raises(LocalProtocolError):
        Reply(250, ["ok", "a" * (MAX_REPLY_TEXT + 1)])
    # Octets, not characters.
    Reply(250, "é" * (MAX_REPLY_TEXT // 2))
    with pytest.raises(LocalProtocolError):
        Reply(250, "é" * (MAX_REPLY_TEXT // 2 + 1))


# --- serialisation --------------------------------------------------------------------------------


def test_single_line() -> None:
    reply = Reply(250, "OK", "2.0.0")
    assert reply.to_bytes() == b"250 2.0.0 OK\r\n"
    assert reply.to_bytes(enhanced_status_codes=True) == b"250 2.0.0 OK\r\n"
    assert reply.to_bytes(enhanced_status_codes=False) == b"250 OK\r\n"
    assert Reply(250, "OK").to_bytes() == b"250 OK\r\n"
    assert Reply(250, "OK").to_bytes(enhanced_status_codes=False) == b"250 OK\r\n"


def test_multi_line() -> None:
    reply = Reply(250, ["mx.example.com", "PIPELINING", "SIZE 10240000"], "2.0.0")
    assert reply.to_bytes(False) == b"250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 10240000\r\n"
    # RFC 2034: every line carries the enhanced code.
    assert reply.to_bytes(True) == (b"250-2.0.0 mx.example.com\r\n250-2.0.0 PIPELINING\r\n250 2.0.0 SIZE 10240000\r\n")
    assert reply.text == ("mx.example.com", "PIPELINING", "SIZE 10240000")
    assert reply.message == "mx.example.com\nPIPELINING\nSIZE 10240000"
    # Any iterable of lines works.
    assert Reply(250, iter(["a", "b"])).text == ("a", "b")


def test_empty_text() -> None:
    assert Reply(250).text == ("",)
    assert Reply(250, []).text == ("",)
    assert Reply(250).to_bytes() == b"250\r\n"
    assert Reply(250, "").to_bytes(False) == b"250\r\n"
    assert Reply(250, "", "2.0.0").to_bytes(False) == b"250\r\n"
    assert Reply(250, "", "2.0.0").to_bytes(True) == b"250 2.0.0 \r\n"
    # An empty line inside a multi-line reply keeps its "-".
    assert Reply(250, ["a", "", "b"]).to_bytes() == b"250-a\r\n250-\r\n250 b\r\n"
    assert Reply(250, ["a", ""]).to_bytes() == b"250-a\r\n250\r\n"


REPLY_LINE = re.compile(rb"([2-5][0-5][0-9])([- ])([^\r\n]*)\r\n|([2-5][0-5][0-9])\r\n")

lines = st.lists(
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30) | st.just("a\tb"), min_size=1, max_size=5
)


@given(
    st.sampled_from([220, 250, 354, 421, 452, 550, 554]),
    lines,
    st.booleans(),
    st.booleans(),
)
def test_wire_form_parses_back(code: int, text: list[str], with_enhanced: bool, esc: bool) -> None:
    enhanced = None if code == 354 or not with_enhanced else f"{str(code)[0]}.0.0"
    reply = Reply(code, text, enhanced)
    wire = reply.to_bytes(esc)
    assert wire.endswith(b"\r\n")
    got = wire.split(b"\r\n")[:-1]
    assert len(got) == len(text)
    for index, line in enumerate(got):
        assert b"\r" not in line
        assert b"\n" not in line
        assert REPLY_LINE.fullmatch(line + b"\r\n")
        assert line.startswith(str(code).encode())
        last = index == len(got) - 1
        if not last:
            assert line[3:4] == b"-"
        else:
            assert line[3:4] in (b" ", b"")
        body = line[4:].decode()
        if esc and enhanced:
            assert body.startswith(enhanced + " ")
            body = body[len(enhanced) + 1 :]
        assert body == text[index]


def test_classification() -> None:
    assert Reply(250).is_positive
    assert not Reply(250).is_intermediate
    assert Reply(354).is_intermediate
    assert Reply(334).is_intermediate
    assert Reply(421).is_transient
    assert not Reply(421).is_permanent
    assert Reply(550).is_permanent
    assert not Reply(550).is_positive


def test_str_and_frozen() -> None:
    reply = Reply(550, "No such user", "5.1.1")
    assert str(reply) == "550 5.1.1 No such user"
    assert str(Reply(250, "OK")) == "250 OK"
    with pytest.raises(AttributeError):
        reply.code = 250  # type: ignore[misc]
    assert reply == Reply(550, ["No such user"], "5.1.1")
    assert hash(reply) == hash(Reply(550, "No such user", "5.1.1"))


def test_every_builtin_reply_is_consistent() -> None:
    # The core's own replies: valid, and (RFC 2034) each enhanced code matches
    # its reply class; 354 has none because class 3 does not exist.
    builtins = [value for value in vars(_replies).values() if isinstance(value, Reply)]
    assert len(builtins) > 30
    for reply in builtins:
        assert Reply(reply.code, reply.text, reply.enhanced) == reply
        if reply.code == 354:
            assert reply.enhanced is None
        else:
            assert reply.enhanced is not None, reply
            assert reply.enhanced[0] == str(reply.code)[0]
        assert len(reply.to_bytes()) <= 512


@pytest.mark.parametrize("text", [b"OK", bytearray(b"OK"), None, 250])
def test_reply_text_of_another_type_says_what_it_must_be(text: Any) -> None:
    # bytes iterate as ints: the error once blamed an int for what was bytes.
    with pytest.raises(LocalProtocolError, match=f"a str or a sequence of str, not {type(text).__name__}"):
        Reply(250, text)
