"""Mailboxes, paths and domains (RFC 5321 §4.1.2, §4.5.3.1; RFC 6531), table-driven."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore._address import (
    MAX_DOMAIN,
    MAX_LABEL,
    MAX_PATH,
    AddressError,
    ascii_form,
    check_address_literal,
    check_domain,
    check_mailbox,
    format_path,
    parse_path,
)

# --- domains --------------------------------------------------------------------------------------

GOOD_DOMAINS = [
    "example.com",
    "localhost",
    "a",
    "1",
    "mail-1.example.com",
    "EXAMPLE.COM",
    "xn--bcher-kva.example",
    "123.example",
    "a-b-c.d",
    "a" * 63 + ".com",
    "[127.0.0.1]",
    "[255.255.255.255]",
    "[0.0.0.0]",
    "[IPv6:::1]",
    "[IPv6:2001:db8::1]",
    "[ipv6:2001:DB8:0:0:0:0:0:1]",
    "[IPv6:::ffff:192.0.2.1]",
    "[IPv6:1:2:3:4:5:6::]",
    "[IPv6:1:2:3:4::1.2.3.4]",
    "[x-tag:anything-goes]",
    "[tag:a:b:c]",
]

BAD_DOMAINS = [
    "",
    ".",
    "example.com.",
    ".example.com",
    "example..com",
    "-example.com",
    "example-.com",
    "exa_mple.com",
    "exa mple.com",
    " example.com",
    "example.com ",
    "example.com\r\n",
    "example.com\n",
    "exa\rmple.com",
    "exa\x00mple.com",
    "exa\x7fmple.com",
    "exa\tmple.com",
    "a" * 64 + ".com",
    ".".join(["a" * 63] * 4) + "a",  # 256 octets
    "[]",
    "[1.2.3]",
    "[1.2.3.4.5]",
    "[256.1.1.1]",
    "[1.2.3.04]",
    "[01.2.3.4]",
    "[1.2.3.-1]",
    "[ 1.2.3.4]",
    "[1.2.3.4",
    "1.2.3.4]",
    "[IPv6:]",
    "[IPv6:1::2::3]",
    "[IPv6:12345::1]",
    "[IPv6:1:2:3:4:5:6:7:8:9]",
    "[IPv6:fe80::1%eth0]",  # a scope id is not RFC 5321 grammar
    "[IPv6:fe80::1%25eth0]",
    "[IPv6:1.2.3.4]",
    # RFC 5321 §4.1.3: "::" is at least two groups, so at most 6 others (4 with an IPv4 part).
    "[IPv6:1:2:3:4:5:6:7::]",
    "[IPv6:1::2:3:4:5:6:7]",
    "[IPv6:1:2:3:4:5::1.2.3.4]",
    "[001.002.003.004]",  # leading zeros: octal to some readers (CVE-2021-29921)
    "[tag:]",
    "[:content]",
    "[-tag:content]",
    "[ta_g:content]",
    "[tag:con\\tent]",
    "[tag:con[tent]",
    "[tag:con tent]",
    "[[1.2.3.4]]",
]


@pytest.mark.parametrize("domain", GOOD_DOMAINS)
def test_good_domain(domain: str) -> None:
    check_domain(domain)
    check_domain(domain, utf8=True)


@pytest.mark.parametrize("domain", BAD_DOMAINS)
def test_bad_domain(domain: str) -> None:
    for utf8 in (False, True):
        with pytest.raises(AddressError) as info:
            check_domain(domain, utf8=utf8)
        assert not info.value.non_ascii


def test_domain_length_limits() -> None:
    # 255 octets exactly is fine; 256 is not (RFC 5321 §4.5.3.1.2).
    labels = ["a" * 63] * 3 + ["a" * 63]
    domain = ".".join(labels)  # 4*63 + 3 = 255
    assert len(domain) == MAX_DOMAIN == 255
    check_domain(domain)
    with pytest.raises(AddressError, match="255"):
        check_domain(domain + "a")
    # A label of 63 octets is fine, 64 is not (RFC 1035).
    assert MAX_LABEL == 63
    check_domain("a" * 63)
    with pytest.raises(AddressError, match="63"):
        check_domain("a" * 64)
    with pytest.raises(AddressError, match="63"):
        check_domain("b." + "a" * 64 + ".c")


UTF8_DOMAINS = ["bücher.example", "例え.テスト", "пример.рф", "exämple.com"]


@pytest.mark.parametrize("domain", UTF8_DOMAINS)
def test_utf8_domain_needs_smtputf8(domain: str) -> None:
    check_domain(domain, utf8=True)
    with pytest.raises(AddressError) as info:
        check_domain(domain, utf8=False)
    assert info.value.non_ascii


def test_utf8_label_length_counts_octets() -> None:
    # 32 two-octet letters are 64 octets: over the label limit though only 32 characters.
    label = "é" * 32
    with pytest.raises(AddressError, match="63"):
        check_domain(label + ".example", utf8=True)
    check_domain("é" * 31 + ".example", utf8=True)


@pytest.mark.parametrize("domain", ["ü..example", "ü.example.", "-ü.example", "ü example", "ü\r\n.example"])
def test_bad_utf8_domain_is_a_syntax_error_not_non_ascii(domain: str) -> None:
    for utf8 in (False, True):
        with pytest.raises(AddressError) as info:
            check_domain(domain, utf8=utf8)
        assert not info.value.non_ascii


def test_check_domain_rejects_non_str() -> None:
    with pytest.raises((AddressError, TypeError)):
        check_domain(b"example.com")  # type: ignore[arg-type]


# --- address literals -----------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["[10.0.0.1]", "[IPv6:::]", "[IPv6:2001:db8::]", "[X-New:whatever]"])
def test_address_literal_good(literal: str) -> None:
    check_address_literal(literal)


@pytest.mark.parametrize(
    "literal", ["[10.0.0]", "[IPv6:::1%1]", "[IPv6:xyz::]", "[IPv6:::1/64]", "[tag-:x]", "[t@g:x]"]
)
def test_address_literal_bad(literal: str) -> None:
    with pytest.raises(AddressError):
        check_address_literal(literal)


# --- mailboxes ------------------------------------------------------------------------------------

GOOD_MAILBOXES = [
    "user@example.com",
    "first.last@example.com",
    "a@b",
    "USER@EXAMPLE.COM",
    "user+tag@example.com",
    "!#$%&'*+/=?^_`{|}~-@example.com",
    "postmaster@example.com",
    '"quoted"@example.com',
    '"with space"@example.com',
    '"with\\"quote"@example.com',
    '"with\\\\backslash"@example.com',
    '"a@b"@example.com',
    '"a..b"@example.com',
    '".leading"@example.com',
    '""@example.com',
    '"\\ "@example.com',
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "user@[tag:data]",
    "a" * 64 + "@example.com",
]

BAD_MAILBOXES = [
    "",
    "user",
    "@example.com",
    "user@",
    "user@@example.com",
    "us@er@example.com",
    "user@example.com.",
    "user.@example.com",
    ".user@example.com",
    "a..b@example.com",
    "us er@example.com",
    " user@example.com",
    "user@example.com ",
    "user@ example.com",
    "user\r\n@example.com",
    "user@example.com\r\n",
    "user@example.com\n",
    "us\rer@example.com",
    "us\ner@example.com",
    "us\x00er@example.com",
    "us\x01er@example.com",
    "us\x7fer@example.com",
    "us\ter@example.com",
    '"unterminated@example.com',
    '"a"b"@example.com',
    '"a\\"@example.com',
    '"cr\r"@example.com',
    '"lf\n"@example.com',
    '"nul\x00"@example.com',
    '"tab\t"@example.com',
    '"esc\\\r"@example.com',
    "user@[300.1.1.1]",
    "user@[IPv6:fe80::1%eth0]",
    "user@exa_mple.com",
    "<user@example.com>",
    "user@example.com>",
    "user@" + "a" * 64 + ".com",
]


@pytest.mark.parametrize("mailbox", GOOD_MAILBOXES)
def test_good_mailbox(mailbox: str) -> None:
    check_mailbox(mailbox)
    check_mailbox(mailbox, utf8=True)


@pytest.mark.parametrize("mailbox", BAD_MAILBOXES)
def test_bad_mailbox(mailbox: str) -> None:
    for utf8 in (False, True):
        with pytest.raises(AddressError) as info:
            check_mailbox(mailbox, utf8=utf8)
        assert not info.value.non_ascii, mailbox


def test_local_parts_longer_than_64_octets_are_taken_up_to_the_path_limit() -> None:
    """RFC 5321 §4.5.3.1's 64 is what every server must take, not a cap: VERP and SRS return paths pass it."""
    srs = "SRS0=HHH=TT=orig-domain.example=a-rather-long-user-name.with.parts@forwarder.example"
    assert len(srs.partition("@")[0]) > 64
    check_mailbox(srs)
    assert parse_path(f"<{srs}>", utf8=False, null_allowed=True, postmaster_allowed=False) == srs
    check_mailbox("a" * 250 + "@b.c")  # 254 octets: 256 with the brackets
    check_mailbox('"' + "a b" * 80 + '"@b')
    check_mailbox("é" * 120 + "@b.c", utf8=True)  # octets, not characters, count toward the path
    with pytest.raises(AddressError, match="256"):
        check_mailbox("é" * 126 + "@b.c", utf8=True)


def test_path_length_limit() -> None:
    # <local@domain> with brackets is at most 256 octets: mailbox at most 254.
    assert MAX_PATH == 256
    local = "a" * 64
    domain = ".".join(["d" * 63, "d" * 63, "d" * 59])  # 187 octets
    mailbox = f"{local}@{domain}"
    assert len(mailbox) == 252
    check_mailbox(mailbox)
    fits = f"{local}@{domain}.b"  # 254 octets
    check_mailbox(fits)
    assert parse_path(f"<{fits}>", utf8=False, null_allowed=False, postmaster_allowed=False) == fits
    too_long = f"{local}@{domain}.bc"  # 255 octets: 257 with brackets
    check_domain(f"{domain}.bc")  # the domain alone is fine
    with pytest.raises(AddressError, match="256"):
        check_mailbox(too_long)
    with pytest.raises(AddressError, match="256"):
        parse_path(f"<{too_long}>", utf8=False, null_allowed=False, postmaster_allowed=False)


UTF8_MAILBOXES = [
    "üser@example.com",
    "user@bücher.example",
    "用户@例子.广告",
    '"ü"@example.com',
    "δοκιμή@παράδειγμα.δοκιμή",
]


@pytest.mark.parametrize("mailbox", UTF8_MAILBOXES)
def test_utf8_mailbox(mailbox: str) -> None:
    check_mailbox(mailbox, utf8=True)
    with pytest.raises(AddressError) as info:
        check_mailbox(mailbox, utf8=False)
    assert info.value.non_ascii


@pytest.mark.parametrize("mailbox", ["ü..x@example.com", "ü @example.com", "ü@", "ü\r\n@example.com", '"ü\\é"@x'])
def test_bad_utf8_mailbox_is_a_syntax_error(mailbox: str) -> None:
    for utf8 in (False, True):
        with pytest.raises(AddressError) as info:
            check_mailbox(mailbox, utf8=utf8)
        assert not info.value.non_ascii


@pytest.mark.parametrize("mailbox", ["b\udcff@example.com", "b@ex\ud800mple.com"])
def test_a_lone_surrogate_is_no_address(mailbox: str) -> None:
    # What sys.argv holds for octets the locale cannot decode: an AddressError, not the
    # UnicodeEncodeError that counting its octets raised.
    with pytest.raises(AddressError, match="not valid Unicode"):
        check_mailbox(mailbox, utf8=True)


# --- paths ----------------------------------------------------------------------------------------

# (text, expected mailbox) for paths valid everywhere.
GOOD_PATHS = [
    ("<user@example.com>", "user@example.com"),
    ('<"a b"@example.com>', '"a b"@example.com'),
    ('<"a:b"@example.com>', '"a:b"@example.com'),
    ("<user@[192.0.2.1]>", "user@[192.0.2.1]"),
    ("<user@[IPv6:::1]>", "user@[IPv6:::1]"),
    # RFC 5321 §4.1.1.3 / appendix C: a source route is accepted and ignored.
    ("<@relay.example:user@example.com>", "user@example.com"),
    ("<@a.example,@b.example:user@example.com>", "user@example.com"),
    ('<@relay.example:"a:b"@example.com>', '"a:b"@example.com'),
    ("<Postmaster@example.com>", "Postmaster@example.com"),
]

BAD_PATHS = [
    "user@example.com",
    "<user@example.com",
    "user@example.com>",
    "<<user@example.com>>",
    "< user@example.com>",
    "<user@example.com >",
    "<user @example.com>",
    "<user@example.com.>",
    "<...@example.com>",  # dots alone, even read laxly
    "<user@example.com>\r\n",
    "<user\r\n@example.com>",
    "<user@exa\nmple.com>",
    "<us\x00er@example.com>",
    "<us\x1ber@example.com>",
    "<@relay.example user@example.com>",
    "<@relay.example:>",
    "<@:user@example.com>",
    "<relay.example:user@example.com>",
    "<@[1.2.3.4]:user@example.com>",
    "<@relay.example;user@example.com>",
    "<@a.example,b.example:user@example.com>",
    "<@relay..example:user@example.com>",
    "<user>",
    "<@>",
    "<",
    ">",
    "",
    "< >",
    "<postmaster@>",
]


@pytest.mark.parametrize(("text", "mailbox"), GOOD_PATHS)
@pytest.mark.parametrize("null_allowed", [False, True])
@pytest.mark.parametrize("postmaster_allowed", [False, True])
@pytest.mark.parametrize("utf8", [False, True])
def test_good_path(text: str, mailbox: str, null_allowed: bool, postmaster_allowed: bool, utf8: bool) -> None:
    got = parse_path(text, utf8=utf8, null_allowed=null_allowed, postmaster_allowed=postmaster_allowed)
    assert got == mailbox


@pytest.mark.parametrize(
    ("text", "mailbox"),
    [
        ("<a..b@example.com>", '"a..b"@example.com'),
        ("<docomo.@b.example>", '"docomo."@b.example'),
        ("<.x@y.example>", '".x"@y.example'),
        ("<@relay.example:a..b@c.example>", '"a..b"@c.example'),
    ],
)
def test_a_local_part_with_dots_out_of_place_is_read_and_handed_on_quoted(text: str, mailbox: str) -> None:
    """Not RFC 5321 (old Japanese mobile addresses are such), but Postfix and aiosmtpd take them."""
    assert parse_path(text, utf8=False, null_allowed=True, postmaster_allowed=False) == mailbox
    check_mailbox(mailbox)  # what the server hands on is valid: a client can send it on
    with pytest.raises(AddressError, match="SMTPUTF8"):
        parse_path("<ü..@x.example>", utf8=False, null_allowed=True, postmaster_allowed=False)
    assert parse_path("<ü..@x.example>", utf8=True, null_allowed=True, postmaster_allowed=False) == '"ü.."@x.example'


@pytest.mark.parametrize("text", BAD_PATHS)
def test_bad_path(text: str) -> None:
    for utf8 in (False, True):
        with pytest.raises(AddressError) as info:
            parse_path(text, utf8=utf8, null_allowed=True, postmaster_allowed=True)
        assert not info.value.non_ascii, text


def test_null_path_only_where_allowed() -> None:
    assert parse_path("<>", utf8=False, null_allowed=True, postmaster_allowed=False) == ""
    for postmaster_allowed in (False, True):
        with pytest.raises(AddressError):
            parse_path("<>", utf8=False, null_allowed=False, postmaster_allowed=postmaster_allowed)
    # No spaces, no source route on the null path.
    for text in ("< >", "<@a.example:>", "<>\r\n", "<<>>"):
        with pytest.raises(AddressError):
            parse_path(text, utf8=False, null_allowed=True, postmaster_allowed=False)


@pytest.mark.parametrize("text", ["<Postmaster>", "<postmaster>", "<POSTMASTER>", "<PostMaster>"])
def test_postmaster_only_where_allowed(text: str) -> None:
    assert parse_path(text, utf8=False, null_allowed=False, postmaster_allowed=True) == "Postmaster"
    for null_allowed in (False, True):
        with pytest.raises(AddressError):
            parse_path(text, utf8=False, null_allowed=null_allowed, postmaster_allowed=False)


@pytest.mark.parametrize(
    "text", ["<Postmaster >", "< Postmaster>", "<Postmaster\r\n>", "<@a.b:Postmaster>", "Postmaster"]
)
def test_postmaster_variants_refused(text: str) -> None:
    with pytest.raises(AddressError):
        parse_path(text, utf8=False, null_allowed=False, postmaster_allowed=True)


@pytest.mark.parametrize(
    ("text", "mailbox"),
    [
        ("<üser@example.com>", "üser@example.com"),
        ("<user@bücher.example>", "user@bücher.example"),
        ("<@relais.bücher.example:用户@例子.广告>", "用户@例子.广告"),
    ],
)
def test_utf8_path_needs_smtputf8(text: str, mailbox: str) -> None:
    assert parse_path(text, utf8=True, null_allowed=False, postmaster_allowed=False) == mailbox
    with pytest.raises(AddressError) as info:
        parse_path(text, utf8=False, null_allowed=False, postmaster_allowed=False)
    assert info.value.non_ascii


def test_format_path() -> None:
    assert format_path("user@example.com") == "<user@example.com>"
    assert format_path("") == "<>"


# --- properties -----------------------------------------------------------------------------------

ATEXT = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-"
atoms = st.text(alphabet=ATEXT, min_size=1, max_size=10)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
dot_strings = st.lists(atoms, min_size=1, max_size=4).map(".".join)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)


@given(dot_strings, domains)
def test_generated_mailboxes_round_trip(local: str, domain: str) -> None:
    mailbox = f"{local}@{domain}"
    check_mailbox(mailbox)
    assert parse_path(format_path(mailbox), utf8=False, null_allowed=False, postmaster_allowed=False) == mailbox


@given(
    dot_strings, domains, st.integers(0, 40), st.sampled_from(["\r", "\n", "\x00", " ", "\x7f", "\x1b", "\t", "\r\n"])
)
def test_a_control_character_anywhere_is_refused(local: str, domain: str, at: int, bad: str) -> None:
    text = f"<{local}@{domain}>"
    position = 1 + at % (len(text) - 1)  # somewhere after the "<"
    broken = text[:position] + bad + text[position:]
    for utf8 in (False, True):
        with pytest.raises(AddressError):
            parse_path(broken, utf8=utf8, null_allowed=True, postmaster_allowed=True)
    with pytest.raises(AddressError):
        check_mailbox(broken[1:-1] if broken.endswith(">") else broken, utf8=True)


@given(st.text(max_size=30))
def test_arbitrary_text_only_raises_address_error(text: str) -> None:
    for utf8 in (False, True):
        with contextlib.suppress(AddressError):
            parse_path(text, utf8=utf8, null_allowed=True, postmaster_allowed=True)
        try:
            check_domain(text, utf8=utf8)
        except AddressError:
            pass
        else:
            assert "\r" not in text
            assert "\n" not in text


# --- the ASCII form of an internationalised address -----------------------------------------------


@pytest.mark.parametrize(
    ("mailbox", "ascii"),
    [
        ("a@x.org", "a@x.org"),
        ("Postmaster", "Postmaster"),
        ("", ""),
        ("a@bücher.example", "a@xn--bcher-kva.example"),
        ("a@BÜCHER.example", "a@xn--bcher-kva.example"),  # IDNA folds the case, as DNS does
        ('"a@b"@mañana.example', '"a@b"@xn--maana-pta.example'),  # the last "@" ends the local part
        ("a@☃.net", "a@xn--n3h.net"),
        ("jörg@x.org", None),  # a UTF-8 local part has no ASCII form
        ("a@straße.example", None),  # IDNA 2003 maps it to strasse.example, another domain
        ("a@ςa.example", None),  # a final sigma to a sigma
        ("a@a\u200db.example", None),  # a joiner to nothing
        ("a@\uff42ücher.example", None),  # fullwidth letters to ASCII ones
        ("a@" + "ü" * 60 + ".example", None),  # a label past 63 octets once encoded
    ],
)
def test_ascii_form_converts_only_what_reads_back_as_the_same_name(mailbox: str, ascii: str | None) -> None:
    assert ascii_form(mailbox) == ascii
