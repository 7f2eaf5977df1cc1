"""The grammar's SMTPUTF8 character classes (RFC 6531 §3.3) admit exactly what the RFC adds.

Each ``*_UTF8`` class is written as the ASCII characters it leaves out, for the
time ``re`` takes to compile the range U+0080-U+10FFFF (see ``_abnf._or_non_ascii``).
These check that each still means "the ASCII class, or any code point above
U+007F": every ASCII character, and non-ASCII ones from each plane and edge.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore import _abnf

# (the UTF-8 class, the ASCII class it extends), as the RFCs write them.
CLASSES = [
    (_abnf.ATEXT_UTF8, f"[{_abnf.ATEXT}]"),  # atext (RFC 5322 §3.2.3)
    (_abnf.QTEXT_UTF8, r"[\x20\x21\x23-\x5b\x5d-\x7e]"),  # qtextSMTP (RFC 5321 §4.1.2)
    (_abnf.LET_DIG_UTF8, r"[A-Za-z0-9]"),  # Let-dig
    (_abnf.LDH_UTF8, r"[A-Za-z0-9\-]"),  # Ldh-str's characters
    (_abnf.ESMTP_VALUE_UTF8_RE.pattern.removesuffix("+"), r"[\x21-\x3c\x3e-\x7e]"),  # esmtp-value
]
NON_ASCII_EDGES = [
    0xA0,
    0xFF,
    0x100,
    0x7FF,
    0x800,
    0x2027,
    0x202F,
    0x2065,
    0x206A,
    0xD7FF,
    0xE000,
    0xFFFD,
    0xFFFF,
    0x10000,
    0x10FFFF,
]
# Non-ASCII, but controls, line breaks and bidi overrides: the C1 controls, U+2028 and U+2029,
# the embeddings and overrides U+202A-U+202E, the isolates U+2066-U+2069.
NON_ASCII_CONTROLS = [*range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


@pytest.mark.parametrize(("utf8_class", "ascii_class"), CLASSES)
def test_ascii_characters_as_the_ascii_class(utf8_class: str, ascii_class: str) -> None:
    utf8, ascii = re.compile(utf8_class), re.compile(ascii_class)
    admitted = [chr(code) for code in range(0x80) if utf8.fullmatch(chr(code))]
    assert admitted == [chr(code) for code in range(0x80) if ascii.fullmatch(chr(code))]
    assert admitted  # the class is not empty: the complement was taken of something


@pytest.mark.parametrize(("utf8_class", "ascii_class"), CLASSES)
def test_every_non_ascii_code_point_is_admitted(utf8_class: str, ascii_class: str) -> None:
    utf8 = re.compile(utf8_class)
    for code in NON_ASCII_EDGES:
        assert utf8.fullmatch(chr(code)), hex(code)
    for code in NON_ASCII_CONTROLS:
        assert not utf8.fullmatch(chr(code)), hex(code)
        assert _abnf.CONTROL_RE.fullmatch(chr(code)), hex(code)


@given(st.characters(min_codepoint=0x80))
def test_any_non_ascii_character_but_a_control_is_admitted(char: str) -> None:
    for utf8_class, _ in CLASSES:
        assert bool(re.fullmatch(utf8_class, char)) == (ord(char) not in NON_ASCII_CONTROLS)


def test_the_utf8_rules_use_the_classes() -> None:
    assert re.fullmatch(_abnf.DOT_STRING_UTF8, "jürgen.o'neil")
    assert not re.fullmatch(_abnf.DOT_STRING_UTF8, "jürgen..o")
    assert re.fullmatch(_abnf.DOMAIN_UTF8, "bücher.example")
    assert not re.fullmatch(_abnf.DOMAIN_UTF8, "-bücher.example")
    assert _abnf.MAILBOX_UTF8_RE.fullmatch('"jü rgen"@例え.テスト')
    assert _abnf.ESMTP_VALUE_UTF8_RE.fullmatch("wert=ß") is None  # "=" stays out
