"""The MAIL/RCPT parameter registry: every row, every refusal, and the client's serialiser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore import LocalProtocolError
from smtpcore._abnf import ESMTP_VALUE_RE, XTEXT_RE
from smtpcore._params import (
    PARAMETERS,
    DeliverBy,
    MailParams,
    ParamError,
    RcptParams,
    format_params,
    parse_params,
    required_extensions,
    xtext_decode,
    xtext_encode,
)

ALL = frozenset(
    {
        "SIZE",
        "8BITMIME",
        "BINARYMIME",
        "SMTPUTF8",
        "DSN",
        "AUTH",
        "REQUIRETLS",
        "MT-PRIORITY",
        "DELIVERBY",
        "FUTURERELEASE",
        "RRVS",
    }
)


# Text without C0 controls or DEL: decoded xtext refuses those (see test_xtext_refuses_controls).
# What CONTROL_RE refuses in any name: C0, DEL, C1, the line separators, the bidi overrides and isolates.
CONTROLS = [*range(32), 127, *range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
NO_CONTROLS = st.characters(blacklist_categories=["Cs"], blacklist_characters=[chr(c) for c in CONTROLS])


def mail(*words: str, extensions: frozenset[str] = ALL, extra: frozenset[str] = frozenset(), utf8: bool = False) -> Any:
    return parse_params("MAIL", words, extensions, extra, utf8)


def rcpt(*words: str, extensions: frozenset[str] = ALL, extra: frozenset[str] = frozenset(), utf8: bool = False) -> Any:
    return parse_params("RCPT", words, extensions, extra, utf8)


def refused(command: str, word: str, extensions: frozenset[str] = ALL, utf8: bool = False) -> ParamError:
    with pytest.raises(ParamError) as info:
        parse_params(command, [word], extensions, frozenset(), utf8)  # type: ignore[arg-type]
    return info.value


# --- good values: (command, word, field, expected value) --------------------------------------------

GOOD = [
    ("MAIL", "SIZE=0", "size", 0),
    ("MAIL", "SIZE=1000", "size", 1000),
    ("MAIL", "size=1000", "size", 1000),
    ("MAIL", "SIZE=00012", "size", 12),
    ("MAIL", "SIZE=" + "9" * 20, "size", 10**20 - 1),
    ("MAIL", "BODY=7BIT", "body", "7BIT"),
    ("MAIL", "BODY=8BITMIME", "body", "8BITMIME"),
    ("MAIL", "body=8bitmime", "body", "8BITMIME"),
    ("MAIL", "BODY=BINARYMIME", "body", "BINARYMIME"),
    ("MAIL", "SMTPUTF8", "smtputf8", True),
    ("MAIL", "smtputf8", "smtputf8", True),
    ("MAIL", "RET=FULL", "ret", "FULL"),
    ("MAIL", "RET=hdrs", "ret", "HDRS"),
    ("MAIL", "ENVID=QQ314159", "envid", "QQ314159"),
    ("MAIL", "ENVID=a+2Bb+3Dc", "envid", "a+b=c"),
    ("MAIL", "ENVID=a+20b", "envid", "a b"),
    ("MAIL", "AUTH=<>", "auth", "<>"),
    ("MAIL", "AUTH=user+40example.com", "auth", "user@example.com"),
    ("MAIL", "REQUIRETLS", "requiretls", True),
    ("MAIL", "MT-PRIORITY=0", "mt_priority", 0),
    ("MAIL", "MT-PRIORITY=-9", "mt_priority", -9),
    ("MAIL", "MT-PRIORITY=+9", "mt_priority", 9),
    ("MAIL", "MT-PRIORITY=3", "mt_priority", 3),
    ("MAIL", "BY=120;R", "by", DeliverBy(120, "R", False)),
    ("MAIL", "BY=120;nt", "by", DeliverBy(120, "N", True)),
    ("MAIL", "BY=-5;R", "by", DeliverBy(-5, "R", False)),
    ("MAIL", "BY=+999999999;RT", "by", DeliverBy(999999999, "R", True)),
    ("MAIL", "HOLDFOR=0", "hold_for", 0),
    ("MAIL", "HOLDFOR=999999999", "hold_for", 999999999),
    ("MAIL", "HOLDUNTIL=2024-01-02T03:04:05Z", "hold_until", "2024-01-02T03:04:05Z"),
    ("MAIL", "HOLDUNTIL=2024-01-02t03:04:05.123+02:00", "hold_until", "2024-01-02t03:04:05.123+02:00"),
    ("RCPT", "NOTIFY=NEVER", "notify", ("NEVER",)),
    ("RCPT", "NOTIFY=never", "notify", ("NEVER",)),
    ("RCPT", "NOTIFY=SUCCESS", "notify", ("SUCCESS",)),
    ("RCPT", "NOTIFY=success,Failure,DELAY", "notify", ("SUCCESS", "FAILURE", "DELAY")),
    ("RCPT", "NOTIFY=DELAY,FAILURE", "notify", ("DELAY", "FAILURE")),
    ("RCPT", "ORCPT=rfc822;user+40example.com", "orcpt", ("rfc822", "user@example.com")),
    ("RCPT", "ORCPT=utf-8;us+2Ber@example.com", "orcpt", ("utf-8", "us+er@example.com")),
    # RFC 6533 §3: a utf-8 address writes \x{HEX} where xtext writes +XX.
    ("RCPT", "ORCPT=utf-8;j\\x{F6}rg\\x{2B}x@example.com", "orcpt", ("utf-8", "jörg+x@example.com")),
    ("RCPT", "ORCPT=UTF-8;a\\x{1F600}@example.com", "orcpt", ("UTF-8", "a\U0001f600@example.com")),
    ("RCPT", "RRVS=2014-04-03T23:01:00Z", "rrvs", "2014-04-03T23:01:00Z"),
    ("RCPT", "RRVS=2014-04-03T23:01:00-05:00;C", "rrvs", "2014-04-03T23:01:00-05:00;C"),
    ("RCPT", "RRVS=2014-04-03T23:01:00Z;r", "rrvs", "2014-04-03T23:01:00Z;r"),
]


@pytest.mark.parametrize(("command", "word", "name", "expected"), GOOD)
def test_good_value(command: str, word: str, name: str, expected: object) -> None:
    params = parse_params(command, [word], ALL)  # type: ignore[arg-type]
    assert isinstance(params, MailParams if command == "MAIL" else RcptParams)
    assert getattr(params, name) == expected
    # Nothing else is set.
    empty = MailParams() if command == "MAIL" else RcptParams()
    for other in type(params).__dataclass_fields__:
        if other != name:
            assert getattr(params, other) == getattr(empty, other)


def test_every_registry_row_has_a_good_case() -> None:
    covered = {(command, word.partition("=")[0].upper()) for command, word, _, _ in GOOD}
    assert covered == {(spec.command, spec.keyword) for spec in PARAMETERS}


def test_several_parameters_together() -> None:
    params = mail("SIZE=100", "BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=x", "REQUIRETLS", "MT-PRIORITY=2")
    assert params == MailParams(
        size=100, body="8BITMIME", smtputf8=True, ret="HDRS", envid="x", requiretls=True, mt_priority=2
    )
    assert rcpt("NOTIFY=FAILURE", "ORCPT=rfc822;a+40b") == RcptParams(notify=("FAILURE",), orcpt=("rfc822", "a@b"))
    assert mail() == MailParams()
    assert rcpt() == RcptParams()


# --- malformed values: 501 ------------------------------------------------------------------------

MALFORMED = [
    ("MAIL", "SIZE"),
    ("MAIL", "SIZE=-1"),
    ("MAIL", "SIZE=+25"),
    ("MAIL", "SIZE=2_5"),
    ("MAIL", "SIZE=1e3"),
    ("MAIL", "SIZE=0x10"),
    ("MAIL", "SIZE=12a"),
    ("MAIL", "SIZE=" + "1" * 21),
    ("MAIL", "SIZE="),
    ("MAIL", "SIZE==5"),
    ("MAIL", "BODY"),
    ("MAIL", "BODY="),
    ("MAIL", "SMTPUTF8=YES"),
    ("MAIL", "SMTPUTF8="),
    ("MAIL", "RET"),
    ("MAIL", "ENVID"),
    ("MAIL", "ENVID=a+2g"),
    ("MAIL", "ENVID=a+"),
    ("MAIL", "ENVID=a+4"),
    ("MAIL", "ENVID=a+G0"),
    ("MAIL", "ENVID=+FF"),
    ("MAIL", "ENVID=+C3"),
    ("MAIL", "ENVID=+C3+A9"),  # UTF-8: RFC 3461 §4.4 has printable US-ASCII (Postfix: 501)
    ("MAIL", "ENVID=a+C2+85b"),  # a C1 control, as every name refuses it
    ("MAIL", "ENVID=+E2+80+AEtoor"),  # a bidi override
    ("MAIL", "AUTH"),
    ("MAIL", "AUTH=a+zz"),
    ("MAIL", "REQUIRETLS=1"),
    ("MAIL", "MT-PRIORITY"),
    ("MAIL", "MT-PRIORITY=10"),
    ("MAIL", "MT-PRIORITY=-10"),
    ("MAIL", "MT-PRIORITY=a"),
    ("MAIL", "MT-PRIORITY=--1"),
    ("MAIL", "MT-PRIORITY=+"),
    ("MAIL", "BY"),
    ("MAIL", "BY=120"),
    ("MAIL", "BY=120;"),
    ("MAIL", "BY=120;X"),
    ("MAIL", "BY=120;RTT"),
    ("MAIL", "BY=1234567890;R"),
    ("MAIL", "BY=;R"),
    ("MAIL", "BY=12_0;R"),
    ("MAIL", "HOLDFOR"),
    ("MAIL", "HOLDFOR=-1"),
    ("MAIL", "HOLDFOR=1000000000"),
    ("MAIL", "HOLDFOR=1.5"),
    ("MAIL", "HOLDUNTIL"),
    ("MAIL", "HOLDUNTIL=2024-01-02"),
    ("MAIL", "HOLDUNTIL=2024-01-02T03:04:05"),
    ("MAIL", "HOLDUNTIL=tomorrow"),
    ("RCPT", "NOTIFY"),
    ("RCPT", "NOTIFY=NEVER,SUCCESS"),
    ("RCPT", "NOTIFY=SUCCESS,SUCCESS"),
    ("RCPT", "NOTIFY=SUCCESS,"),
    ("RCPT", "NOTIFY=,SUCCESS"),
    ("RCPT", "NOTIFY=ALWAYS"),
    ("RCPT", "ORCPT"),
    ("RCPT", "ORCPT=rfc822"),
    ("RCPT", "ORCPT=;user@example.com"),
    ("RCPT", "ORCPT=rfc 822;x"),
    ("RCPT", "ORCPT=rfc822;a+zz"),
    ("RCPT", "ORCPT=-rfc822;x"),
    ("RCPT", "RRVS"),
    ("RCPT", "RRVS=2014-04-03"),
    ("RCPT", "RRVS=2014-04-03T23:01:00Z;X"),
    # Not ESMTP grammar at all.
    ("MAIL", "=5"),
    ("MAIL", "-SIZE=5"),
    ("MAIL", "SI_ZE=5"),
    ("MAIL", "SIZE=5\r\n"),
    ("MAIL", "SIZE=\x005"),
    ("MAIL", "SIZE=5\x7f"),
    ("RCPT", "NOTIFY=SUCCESS\n"),
    ("MAIL", "SIZE =5"),
    ("MAIL", "SIZE= 5"),
]


@pytest.mark.parametrize(("command", "word"), MALFORMED)
def test_malformed_value_is_501(command: str, word: str) -> None:
    error = refused(command, word)
    assert error.reply.code == 501
    assert error.reply.enhanced == "5.5.4"


@pytest.mark.parametrize(
    "word",
    [
        "BODY=" + "A" * 490,  # 504, quoting the value
        "X" + "A" * 490,  # 555, quoting the keyword
        "SIZE=" + "1" * 490,  # 501
        "SIZE=1\r\nRSET",
        "X\x00Y=1",
    ],
)
def test_long_or_odd_words_get_a_reply_not_an_exception(word: str) -> None:
    # Whatever the peer sends, the reply quoting it must be buildable: bounded
    # and without controls.
    for utf8 in (False, True):
        error = refused("MAIL", word, utf8=utf8)
        assert error.reply.code in (501, 504, 555)
        assert len(error.reply.to_bytes()) < 120
        assert b"\r\nRSET" not in error.reply.to_bytes()


@pytest.mark.parametrize(
    "value", ["2_5", " 25", "+25", "25 ", "٣", "²", "\uff11\uff12", "1" * 21, "0" * 21, "-0", "", "\u0663\u0664"]
)
def test_numbers_python_would_accept_are_refused(value: str) -> None:
    size = next(spec for spec in PARAMETERS if spec.keyword == "SIZE")
    with pytest.raises(ParamError) as info:
        size.parse(value)
    assert info.value.reply.code == 501
    # Also through the registry, with UTF-8 values allowed so the value grammar
    # alone does not hide the check.
    if value and " " not in value:
        for utf8 in (False, True):
            assert refused("MAIL", f"SIZE={value}", utf8=utf8).reply.code == 501
            assert refused("MAIL", f"HOLDFOR={value}", utf8=utf8).reply.code == 501


def test_twenty_digits_is_the_bound() -> None:
    assert mail("SIZE=" + "0" * 19 + "7").size == 7
    assert refused("MAIL", "SIZE=" + "0" * 20 + "7").reply.code == 501


# --- unsupported values: 504 ----------------------------------------------------------------------

UNSUPPORTED = [
    ("MAIL", "BODY=9BIT"),
    ("MAIL", "BODY=8BIT"),
    ("MAIL", "BODY=8BITMIMEX"),
    ("MAIL", "RET=BOTH"),
    ("MAIL", "RET=NONE"),
]


@pytest.mark.parametrize(("command", "word"), UNSUPPORTED)
def test_unsupported_value_is_504(command: str, word: str) -> None:
    error = refused(command, word)
    assert error.reply.code == 504
    assert error.reply.enhanced == "5.5.4"


def test_binarymime_needs_binarymime_advertised() -> None:
    error = refused("MAIL", "BODY=BINARYMIME", extensions=ALL - {"BINARYMIME"})
    assert error.reply.code == 504
    assert "BINARYMIME" in error.reply.message
    assert mail("BODY=8BITMIME", extensions=ALL - {"BINARYMIME"}).body == "8BITMIME"
    assert mail("BODY=BINARYMIME", extensions=frozenset({"8BITMIME", "BINARYMIME"})).body == "BINARYMIME"


@pytest.mark.parametrize(
    ("command", "word"),
    [
        # Unicode case mapping must not turn these into keywords: DOTLESS I upper-cases
        # to "I" and LONG S to "S".
        ("MAIL", "BODY=8bitm\u0131me"),
        ("MAIL", "BODY=7b\u0131t"),
        ("MAIL", "RET=hdr\u017f"),
        ("RCPT", "NOTIFY=\u017fuccess"),
        ("RCPT", "NOTIFY=nevER,\u017fuccess"),
        ("MAIL", "BODY=\uff18BITMIME"),
    ],
)
def test_non_ascii_look_alikes_are_not_keywords(command: str, word: str) -> None:
    for utf8 in (False, True):
        assert refused(command, word, utf8=utf8).reply.code in (501, 504)


# --- unknown and unadvertised: 555 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "word"),
    [
        ("MAIL", "XFOO"),
        ("MAIL", "XFOO=bar"),
        ("MAIL", "FOO-BAR=1"),
        ("RCPT", "XFOO"),
        # A known keyword on the wrong command (go-smtp's issue #311 in reverse).
        ("MAIL", "NOTIFY=NEVER"),
        ("MAIL", "ORCPT=rfc822;a@b"),
        ("MAIL", "RRVS=2014-04-03T23:01:00Z"),
        ("RCPT", "SIZE=100"),
        ("RCPT", "BODY=8BITMIME"),
        ("RCPT", "BY=120;R"),
        ("RCPT", "MT-PRIORITY=1"),
        ("RCPT", "HOLDFOR=10"),
        ("RCPT", "ENVID=x"),
        ("RCPT", "RET=FULL"),
        ("RCPT", "SMTPUTF8"),
    ],
)
def test_unknown_keyword_is_555(command: str, word: str) -> None:
    error = refused(command, word)
    assert error.reply.code == 555
    assert error.reply.enhanced == "5.5.4"
    assert word.partition("=")[0].upper() in error.reply.message


@pytest.mark.parametrize("spec", PARAMETERS, ids=lambda spec: f"{spec.command}-{spec.keyword}")
def test_keyword_without_its_extension_is_555(spec: Any) -> None:
    word = next(w for c, w, _, _ in GOOD if c == spec.command and w.partition("=")[0].upper() == spec.keyword)
    error = refused(spec.command, word, extensions=ALL - {spec.extension})
    assert error.reply.code == 555
    # The same word is accepted with the extension on (checked by GOOD), and
    # refused with no extensions at all.
    assert refused(spec.command, word, extensions=frozenset()).reply.code == 555


# --- duplicates: 501 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("MAIL", ["SIZE=1", "SIZE=1"]),
        ("MAIL", ["SIZE=1", "size=2"]),
        ("MAIL", ["SMTPUTF8", "SMTPUTF8"]),
        ("MAIL", ["BODY=7BIT", "SIZE=5", "body=8BITMIME"]),
        ("MAIL", ["XFOO", "XFOO=1"]),
        ("RCPT", ["NOTIFY=NEVER", "NOTIFY=NEVER"]),
        ("RCPT", ["ORCPT=rfc822;a", "ORCPT=rfc822;b"]),
    ],
)
def test_duplicate_is_501(command: str, words: list[str]) -> None:
    with pytest.raises(ParamError) as info:
        parse_params(command, words, ALL, frozenset({"XFOO"}))  # type: ignore[arg-type]
    assert info.value.reply.code == 501
    assert "twice" in info.value.reply.message


# --- extra keywords -------------------------------------------------------------------------------


def test_extra_keywords_pass_through_untouched() -> None:
    params = mail("XFOO=Bar+baz", "xflag", "SIZE=5", extra=frozenset({"XFOO", "XFLAG"}))
    assert params.size == 5
    assert params.extra == (("XFOO", "Bar+baz"), ("XFLAG", None))
    params = rcpt("XFOO=1", extra=frozenset({"XFOO"}))
    assert params.extra == (("XFOO", "1"),)


def test_known_keyword_without_extension_may_be_an_extra() -> None:
    # The application handles MT-PRIORITY itself: it is not advertised through
    # the registry, but listed as an extra parameter.
    params = mail("MT-PRIORITY=whatever", extensions=frozenset(), extra=frozenset({"MT-PRIORITY"}))
    assert params.mt_priority is None
    assert params.extra == (("MT-PRIORITY", "whatever"),)


def test_extra_value_must_still_be_esmtp_grammar() -> None:
    for word in ("XFOO=", "XFOO=a=b", "XFOO=\x00", "XFOO=é"):
        with pytest.raises(ParamError) as info:
            mail(word, extra=frozenset({"XFOO"}))
        assert info.value.reply.code == 501
    assert mail("XFOO=é", "SMTPUTF8", extra=frozenset({"XFOO"}), utf8=True).extra == (("XFOO", "é"),)


@pytest.mark.parametrize("order", ["value first", "SMTPUTF8 first"])
def test_mail_takes_a_utf8_value_only_with_its_own_smtputf8(order: str) -> None:
    # RFC 6531 §3.4: a MAIL whose envelope needs the extension carries SMTPUTF8.
    # Advertising it (utf8=True) is not enough, and the keyword may come after
    # the value on the line.
    words = ["XFOO=é", "SMTPUTF8"] if order == "value first" else ["SMTPUTF8", "XFOO=é"]
    params = mail(*words, extra=frozenset({"XFOO"}), utf8=True)
    assert params.smtputf8 is True
    assert params.extra == (("XFOO", "é"),)
    with pytest.raises(ParamError) as info:
        mail("XFOO=é", "XBAR=ü", extra=frozenset({"XFOO", "XBAR"}), utf8=True)
    assert (info.value.reply.code, info.value.reply.enhanced) == (501, "5.5.4")
    assert info.value.reply.text == ("Malformed parameter XFOO=?: a UTF-8 value needs the SMTPUTF8 parameter",)
    # RCPT has no SMTPUTF8 of its own: there utf8 is the transaction's.
    assert rcpt("XFOO=é", extra=frozenset({"XFOO"}), utf8=True).extra == (("XFOO", "é"),)


def test_utf8_values_only_with_utf8() -> None:
    assert refused("MAIL", "ENVID=é").reply.code == 501
    # xtext itself is ASCII: even with SMTPUTF8 a raw "é" is not xtext.
    assert refused("MAIL", "ENVID=é", utf8=True).reply.code == 501


def test_each_rcpt_keeps_its_own_params() -> None:
    first = rcpt("NOTIFY=NEVER")
    second = rcpt("NOTIFY=SUCCESS")
    assert first.notify == ("NEVER",)
    assert second.notify == ("SUCCESS",)


# --- xtext ----------------------------------------------------------------------------------------

XTEXT_PAIRS = [
    ("", ""),
    ("abc", "abc"),
    ("a+b", "a+2Bb"),
    ("a=b", "a+3Db"),
    ("a b", "a+20b"),
    ("\r\n", "+0D+0A"),
    ("\x00", "+00"),
    ("~!", "~!"),
    ("\x7f", "+7F"),
    ("é", "+C3+A9"),
    ("<>", "<>"),
]


@pytest.mark.parametrize(("text", "encoded"), XTEXT_PAIRS)
def test_xtext_pairs(text: str, encoded: str) -> None:
    assert xtext_encode(text) == encoded
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        # Encodable, but a server refuses to decode controls into an envelope value.
        with pytest.raises(ParamError):
            xtext_decode(encoded)
    else:
        assert xtext_decode(encoded) == text


@pytest.mark.parametrize("bad", ["+", "+4", "+4g", "+zz", "a b", "a=b", "é", "\x00", "a\r\n", "+FF", "+C3", "++41"])
def test_malformed_xtext(bad: str) -> None:
    with pytest.raises(ParamError) as info:
        xtext_decode(bad)
    assert info.value.reply.code == 501


def test_a_utf8_orcpt_is_written_and_read_as_rfc_6533_says() -> None:
    params = RcptParams(orcpt=("utf-8", "jörg+tag=x@bücher.example"))
    word = format_params("RCPT", params)[0]
    assert word == "ORCPT=utf-8;j\\x{F6}rg\\x{2B}tag\\x{3D}x@b\\x{FC}cher.example"  # ASCII: fine without SMTPUTF8
    assert parse_params("RCPT", [word], ALL) == params
    # Raw UTF-8 (utf-8-addr-unitext) once SMTPUTF8 is in use.
    parsed = parse_params("RCPT", ["ORCPT=utf-8;jörg@bücher.example"], ALL, utf8=True)
    assert isinstance(parsed, RcptParams) and parsed.orcpt == ("utf-8", "jörg@bücher.example")
    for bad in ("a=b@x", "a\\b@x", "a\\x{0A}@x", "a\\x{110000}@x", "a\\x{D800}@x", "a\\x{DFFF}@x"):
        with pytest.raises(ParamError):
            parse_params("RCPT", [f"ORCPT=utf-8;{bad}"], ALL)
    # Only the surrogates are refused, not the characters either side of them.
    for code in (0xD7FF, 0xE000):
        parsed = parse_params("RCPT", [f"ORCPT=utf-8;a\\x{{{code:X}}}@x"], ALL)
        assert isinstance(parsed, RcptParams) and parsed.orcpt == ("utf-8", f"a{chr(code)}@x")


def test_a_utf8_orcpt_reads_xtext_octets_beside_raw_utf8_and_decodes_once() -> None:
    # "+XX" (RFC 3461 xtext, which some senders write for every addr-type) is an octet
    # of the UTF-8, wherever it stands; what it decodes to is not read a second time.
    for encoded, address in [
        ("jörg+2Btag@bücher.example", "jörg+tag@bücher.example"),
        ("j+C3+B6rg@x", "jörg@x"),
        ("j+C3\\x{B6}@x", None),  # half a character, then another: not UTF-8
        ("a+5Cx{41}@x", "a\\x{41}@x"),
        ("a\\x{2B}41@x", "a+41@x"),
    ]:
        if address is None:
            with pytest.raises(ParamError):
                parse_params("RCPT", [f"ORCPT=utf-8;{encoded}"], ALL, utf8=True)
        else:
            parsed = parse_params("RCPT", [f"ORCPT=utf-8;{encoded}"], ALL, utf8=True)
            assert isinstance(parsed, RcptParams) and parsed.orcpt == ("utf-8", address), encoded


def test_xtext_hex_digits_in_lower_case_are_taken_as_postfix_takes_them() -> None:
    assert xtext_decode("alice+2bsupport@example.com") == "alice+support@example.com"
    assert xtext_decode("+c3+A9+3d") == "é="


@pytest.mark.parametrize("encoded", ["a+0Db", "a+0A", "+00", "x+7F", "+09", "a+0d"])
def test_xtext_refuses_controls(encoded: str) -> None:
    with pytest.raises(ParamError) as info:
        xtext_decode(encoded)
    assert info.value.reply.code == 501


@given(st.text(NO_CONTROLS))
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext_encode(text)
    assert XTEXT_RE.fullmatch(encoded)
    assert encoded.isascii()
    if encoded:
        assert ESMTP_VALUE_RE.fullmatch(encoded)
    assert xtext_decode(encoded) == text


@given(st.text(max_size=20))
def test_xtext_decode_only_raises_param_error(text: str) -> None:
    error: ParamError | None = None
    try:
        decoded = xtext_decode(text)
    except ParamError as exc:
        error = exc
    if error is not None:
        assert error.reply.code == 501
    else:
        assert XTEXT_RE.fullmatch(text)
        assert xtext_decode(xtext_encode(decoded)) == decoded


# --- format_params (client side) ------------------------------------------------------------------


def test_format_every_field() -> None:
    params = MailParams(
        size=1000,
        body="8BITMIME",
        smtputf8=True,
        ret="HDRS",
        envid="a+b=c d",
        auth="<>",
        requiretls=True,
        mt_priority=-3,
        by=DeliverBy(60, "R", True),
        hold_for=10,
        hold_until="2024-01-02T03:04:05Z",
    )
    words = format_params("MAIL", params)
    assert words == [
        "SIZE=1000",
        "BODY=8BITMIME",
        "SMTPUTF8",
        "RET=HDRS",
        "ENVID=a+2Bb+3Dc+20d",
        "AUTH=<>",
        "REQUIRETLS",
        "MT-PRIORITY=-3",
        "BY=60;RT",
        "HOLDFOR=10",
        "HOLDUNTIL=2024-01-02T03:04:05Z",
    ]
    assert parse_params("MAIL", words, ALL) == params
    rcpt_params = RcptParams(notify=("SUCCESS", "DELAY"), orcpt=("rfc822", "a+b@c"), rrvs="2014-04-03T23:01:00Z;C")
    words = format_params("RCPT", rcpt_params)
    assert words == ["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;a+2Bb@c", "RRVS=2014-04-03T23:01:00Z;C"]
    assert parse_params("RCPT", words, ALL) == rcpt_params


def test_format_nothing() -> None:
    assert format_params("MAIL", MailParams()) == []
    assert format_params("RCPT", RcptParams()) == []


def test_format_xtext_encodes_plus_and_equals() -> None:
    assert format_params("MAIL", MailParams(envid="x+y=z")) == ["ENVID=x+2By+3Dz"]


@pytest.mark.parametrize(
    "value", ["a\rb", "a\nb", "a\r\nRSET", "a\x00b", "a b", "a=b", "", "\x01", "a\x7fb", "a\tb", b"bytes", 5]
)
def test_format_refuses_bad_extra_values(value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        format_params("MAIL", MailParams(extra=(("XFOO", value),)))
    with pytest.raises(LocalProtocolError):
        format_params("RCPT", RcptParams(extra=(("XFOO", value),)))


@pytest.mark.parametrize("keyword", ["", " XFOO", "XFOO ", "X=Y", "X\r\n", "-X", "X_Y", "É", "X\x00", None, b"XFOO"])
def test_format_refuses_bad_extra_keywords(keyword: Any) -> None:
    with pytest.raises(LocalProtocolError):
        format_params("MAIL", MailParams(extra=((keyword, None),)))


def test_format_extras() -> None:
    params = MailParams(size=5, extra=(("XFOO", "bar"), ("XFLAG", None), ("XUTF", "é")))
    assert format_params("MAIL", params) == ["SIZE=5", "XFOO=bar", "XFLAG", "XUTF=é"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("hold_until", "2024-01-02 03:04:05Z"), ("hold_until", "x\r\ny"), ("body", "8BITMIME\r\nRSET")],
)
def test_format_checks_typed_fields_too(field: str, value: str) -> None:
    # The constructor refuses these (below); the writer is the choke point for forged ones.
    params = MailParams()
    object.__setattr__(params, field, value)
    with pytest.raises(LocalProtocolError):
        format_params("MAIL", params)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: MailParams(ret="a=b"), "MailParams.ret"),  # type: ignore[arg-type]
        (lambda: MailParams(ret="full\r\nRSET"), "MailParams.ret"),  # type: ignore[arg-type]
        (lambda: MailParams(envid="id\r\nRSET"), "MailParams.envid"),
        (lambda: MailParams(envid="\u00e9-id"), "MailParams.envid"),  # a server refuses it (501)
        (lambda: RcptParams(notify=()), "RcptParams.notify"),
        (lambda: RcptParams(notify=("NEVER", "SUCCESS")), "RcptParams.notify"),  # RFC 3461 §4.1: NEVER alone
        (lambda: RcptParams(notify=("SUCCESS", "SUCCESS")), "RcptParams.notify"),
        (lambda: RcptParams(notify=("BOGUS",)), "RcptParams.notify"),
        (lambda: RcptParams(notify="SUCCESS"), "RcptParams.notify"),  # type: ignore[arg-type]  # not a tuple
        (lambda: RcptParams(orcpt=("rfc822;x", "b@d")), "RcptParams.orcpt"),
        (lambda: RcptParams(orcpt=("rfc822", "a\r\nb")), "RcptParams.orcpt"),
        (lambda: RcptParams(orcpt=("rfc822",)), "RcptParams.orcpt"),  # type: ignore[arg-type]
        # The client compares BODY in capitals: "binarymime" passed its BINARYMIME checks unseen.
        (lambda: MailParams(body="binarymime"), "MailParams.body"),  # type: ignore[arg-type]
        (lambda: MailParams(body="8BITMIME\r\nRSET"), "MailParams.body"),  # type: ignore[arg-type]
        (lambda: MailParams(body="bogus"), "MailParams.body"),  # type: ignore[arg-type]
        (lambda: MailParams(smtputf8="yes"), "MailParams.smtputf8"),  # type: ignore[arg-type]
        (lambda: MailParams(requiretls=1), "MailParams.requiretls"),  # type: ignore[arg-type]
        (lambda: MailParams(auth="a\r\nb@x.org"), "MailParams.auth"),
        (lambda: MailParams(by=(60, "R")), "MailParams.by"),  # type: ignore[arg-type]
        (lambda: DeliverBy(10**12, "N"), "DeliverBy.seconds"),
        (lambda: DeliverBy(True, "N"), "DeliverBy.seconds"),
        (lambda: DeliverBy(60, "X"), "DeliverBy.mode"),  # type: ignore[arg-type]
        (lambda: DeliverBy(60, "r"), "DeliverBy.mode"),  # type: ignore[arg-type]
        (lambda: DeliverBy(60, "R", trace="T"), "DeliverBy.trace"),  # type: ignore[arg-type]
        (lambda: MailParams(hold_until="tomorrow"), "MailParams.hold_until"),
        (lambda: MailParams(hold_until="2024-01-02 03:04:05Z"), "MailParams.hold_until"),
        (lambda: RcptParams(rrvs="soon"), "RcptParams.rrvs"),
        (lambda: RcptParams(rrvs="2026-12-24T18:00:00Z;X"), "RcptParams.rrvs"),
    ],
)
def test_values_a_server_would_refuse_are_refused_when_made(make: Callable[[], object], field: str) -> None:
    # Sent, each would get 501 (504 for BODY) and read as refused for good: the
    # application's mistake is reported where it is made instead.
    with pytest.raises(ValueError, match=field):
        make()


def test_format_refuses_an_empty_xtext_value() -> None:
    with pytest.raises(LocalProtocolError):
        format_params("MAIL", MailParams(envid=""))


def test_dsn_values_a_server_takes_are_taken() -> None:
    assert RcptParams(notify=("success", "DELAY")).notify == ("success", "DELAY")  # keywords in any case
    assert RcptParams(notify=("NEVER",)).notify == ("NEVER",)
    assert RcptParams(orcpt=("utf-8", "jörg@bücher.example")).orcpt == ("utf-8", "jörg@bücher.example")
    assert RcptParams(orcpt=("rfc822", "a+b=c@d")).orcpt == ("rfc822", "a+b=c@d")
    assert MailParams(ret="HDRS", envid="id=1 x").envid == "id=1 x"


def test_format_refuses_a_duplicate_keyword() -> None:
    # The server answers a duplicate with 501: the client must not write one.
    with pytest.raises(LocalProtocolError):
        format_params("MAIL", MailParams(size=5, extra=(("SIZE", "6"),)))
    with pytest.raises(LocalProtocolError):
        format_params("MAIL", MailParams(extra=(("XFOO", None), ("xfoo", "1"))))
    with pytest.raises(LocalProtocolError):
        format_params("RCPT", RcptParams(notify=("NEVER",), extra=(("notify", "NEVER"),)))


# --- required_extensions --------------------------------------------------------------------------


def test_required_extensions() -> None:
    assert required_extensions("MAIL", MailParams()) == set()
    assert required_extensions("RCPT", RcptParams()) == set()
    assert required_extensions("MAIL", MailParams(size=0)) == {"SIZE"}
    assert required_extensions("MAIL", MailParams(body="7BIT")) == {"8BITMIME"}
    assert required_extensions("MAIL", MailParams(body="BINARYMIME")) == {"8BITMIME", "BINARYMIME"}
    assert required_extensions("MAIL", MailParams(smtputf8=True, requiretls=True)) == {"SMTPUTF8", "REQUIRETLS"}
    assert required_extensions("MAIL", MailParams(ret="FULL", envid="x")) == {"DSN"}
    assert required_extensions("MAIL", MailParams(auth="<>")) == {"AUTH"}
    assert required_extensions("MAIL", MailParams(mt_priority=0)) == {"MT-PRIORITY"}
    assert required_extensions("MAIL", MailParams(by=DeliverBy(1, "N"))) == {"DELIVERBY"}
    assert required_extensions("MAIL", MailParams(hold_for=1, hold_until="2026-12-24T18:00:00Z")) == {"FUTURERELEASE"}
    assert required_extensions("RCPT", RcptParams(notify=("NEVER",), orcpt=("rfc822", "a@b"))) == {"DSN"}
    assert required_extensions("RCPT", RcptParams(rrvs="2014-04-03T23:01:00Z")) == {"RRVS"}
    # Extras are the application's business.
    assert required_extensions("MAIL", MailParams(extra=(("XFOO", None),))) == set()


@pytest.mark.parametrize("spec", PARAMETERS, ids=lambda spec: f"{spec.command}-{spec.keyword}")
def test_required_extensions_agree_with_the_parser(spec: Any) -> None:
    # Whatever a parsed parameter needs, required_extensions names exactly that.
    word = next(w for c, w, _, _ in GOOD if c == spec.command and w.partition("=")[0].upper() == spec.keyword)
    params = parse_params(spec.command, [word], ALL)
    needed = required_extensions(spec.command, params)
    assert spec.extension in needed
    parse_params(spec.command, [word], frozenset(needed))


# --- round trip -----------------------------------------------------------------------------------

printable = st.text(NO_CONTROLS, max_size=20)
mail_params = st.builds(
    MailParams,
    size=st.none() | st.integers(0, 10**20 - 1),
    body=st.none() | st.sampled_from(["7BIT", "8BITMIME", "BINARYMIME"]),
    smtputf8=st.booleans(),
    ret=st.none() | st.sampled_from(["FULL", "HDRS"]),
    # An empty ENVID or AUTH cannot be written (esmtp-value is 1*char): see below.
    envid=st.none() | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=20),
    auth=st.none() | printable.filter(bool),
    requiretls=st.booleans(),
    mt_priority=st.none() | st.integers(-9, 9),
    by=st.none()
    | st.builds(DeliverBy, st.integers(-(10**9) + 1, 10**9 - 1), st.sampled_from(["N", "R"]), st.booleans()),
    hold_for=st.none() | st.integers(0, 999_999_999),
    hold_until=st.none() | st.just("2030-12-31T23:59:59.5+01:00"),
)
rcpt_params = st.builds(
    RcptParams,
    notify=st.none()
    | st.just(("NEVER",))
    | st.lists(st.sampled_from(["SUCCESS", "FAILURE", "DELAY"]), min_size=1, max_size=3, unique=True).map(tuple),
    orcpt=st.none() | st.tuples(st.sampled_from(["rfc822", "utf-8", "x400"]), printable),
    rrvs=st.none() | st.just("2014-04-03T23:01:00Z;R"),
)


@given(mail_params)
def test_mail_params_round_trip(params: MailParams) -> None:
    words = format_params("MAIL", params)
    assert parse_params("MAIL", words, frozenset(required_extensions("MAIL", params))) == params


@given(rcpt_params)
def test_rcpt_params_round_trip(params: RcptParams) -> None:
    words = format_params("RCPT", params)
    assert parse_params("RCPT", words, frozenset(required_extensions("RCPT", params))) == params


@given(st.lists(st.text(max_size=12), max_size=4), st.sampled_from(["MAIL", "RCPT"]), st.booleans())
def test_arbitrary_words_only_raise_param_error(words: list[str], command: Any, utf8: bool) -> None:
    error: ParamError | None = None
    try:
        parse_params(command, words, ALL, frozenset({"XFOO"}), utf8)
    except ParamError as exc:
        error = exc
    if error is not None:
        assert error.reply.code in (501, 504, 555)


@pytest.mark.parametrize("command", ["MAIL", "RCPT"])
def test_no_words_is_what_the_loop_builds(command: Any) -> None:
    # parse_params answers an empty list with one shared frozen instance; an
    # iterator (truthy, so it takes the loop) builds its own: they are equal.
    shared = parse_params(command, [], ALL)
    assert shared == parse_params(command, iter([]), ALL) == (MailParams() if command == "MAIL" else RcptParams())
    assert type(shared) is (MailParams if command == "MAIL" else RcptParams)
    assert parse_params(command, (), ALL) is shared


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", -1),
        ("size", 10**20),  # 21 digits: SIZE is 1*20DIGIT, and a server refuses it
        ("size", True),
        ("size", "10"),
        ("mt_priority", 42),
        ("mt_priority", 10),
        ("mt_priority", -10),
        ("hold_for", -5),
        ("hold_for", 10**9),
    ],
)
def test_mail_params_refuse_values_out_of_range(field: str, value: object) -> None:
    # What the parser never builds, an application can: caught before a client sends it.
    with pytest.raises(ValueError, match=f"MailParams.{field} must be an int"):
        MailParams(**{field: value})  # type: ignore[arg-type]
    assert MailParams(**{field: 0}) == MailParams(**{field: 0})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("word", "params", "one_past"),
    [
        ("SIZE=" + "9" * 20, MailParams(size=10**20 - 1), lambda: MailParams(size=10**20)),
        ("MT-PRIORITY=9", MailParams(mt_priority=9), lambda: MailParams(mt_priority=10)),
        ("MT-PRIORITY=-9", MailParams(mt_priority=-9), lambda: MailParams(mt_priority=-10)),
        ("HOLDFOR=999999999", MailParams(hold_for=999_999_999), lambda: MailParams(hold_for=10**9)),
        ("BY=999999999;R", MailParams(by=DeliverBy(999_999_999, "R")), lambda: DeliverBy(10**9, "R")),
        ("BY=-999999999;N", MailParams(by=DeliverBy(-999_999_999, "N")), lambda: DeliverBy(-(10**9), "N")),
    ],
)
def test_the_largest_values_made_are_the_largest_a_server_reads(
    word: str, params: MailParams, one_past: Callable[[], object]
) -> None:
    # Each range's edge: the value an application may make is written as the
    # word a server parses back to it, and one step past it is refused when made.
    assert format_params("MAIL", params) == [word]
    assert mail(word) == params
    with pytest.raises(ValueError, match="must be an int"):
        one_past()
