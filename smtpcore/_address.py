"""Mailbox, path and domain checks (RFC 5321 §4.1.2 and §4.5.3.1, RFC 6531).

Both roles use these: the server to parse what a client sent, the client to
refuse, before any byte is written, an address it could not send correctly.
Nothing is repaired: input either matches the grammar in ``_abnf`` or is
refused with the reason.
"""

from __future__ import annotations

import ipaddress
import re

from . import _abnf

__all__ = [
    "AddressError",
    "address_literal",
    "ascii_form",
    "check_domain",
    "exact_a_labels",
    "check_mailbox",
    "format_path",
    "is_domain",
    "parse_path",
]

# RFC 5321 §4.5.3.1: domain 255 octets, path 256 (with brackets).  Its 64 for a
# local part is not enforced: §4.5.3.1 makes these the sizes every implementation
# must take, says techniques that impose no limit should be used, and lets a
# client send more.  Real return paths do (VERP and SRS addresses such as
# "bounces+1234-user=example.org@..."), and Postfix, Exim, aiosmtpd and go-smtp
# take them; refusing one bounces a message, or loses its bounce.  The path
# bound keeps the command lines within RFC 5321's 512 octets.
MAX_DOMAIN = 255
MAX_PATH = 256
MAX_LABEL = 63

# ASCII case folding only: IGNORECASE alone would take "<po\u017ftmaster>" (the
# long s folds to "s") for the postmaster address in a session without SMTPUTF8.
_POSTMASTER_RE = re.compile(r"<postmaster>", re.IGNORECASE | re.ASCII)


class AddressError(ValueError):
    """An address, path or domain does not follow the grammar.

    ``non_ascii`` is true when the only problem is UTF-8 without SMTPUTF8, which
    RFC 6531 §3.6 answers differently (553 5.6.7) from a syntax error.
    """

    def __init__(self, message: str, non_ascii: bool = False) -> None:
        super().__init__(message)
        self.non_ascii = non_ascii


def _octets(text: str) -> int:
    # The limits count octets; an ASCII string (the usual case) needs no encoding.
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        # A lone surrogate (U+D800-U+DFFF), as a command-line argument that is not
        # UTF-8 becomes in sys.argv: no character, so no address (and no UTF-8 to send).
        raise AddressError(f"{text!r} is not valid Unicode (it has a lone surrogate)") from None


def check_address_literal(literal: str) -> None:
    """Check ``[1.2.3.4]``, ``[IPv6:...]`` or ``[tag:content]`` beyond its shape."""
    inner = literal[1:-1]
    tag, colon, rest = inner.partition(":")
    if not colon:
        # IPv4-address-literal = Snum 3("." Snum); Snum = 1*3DIGIT (0-255).  The
        # grammar lets a Snum have leading zeros; ipaddress refuses them (since
        # CVE-2021-29921: "010" is 8 to some readers, 10 to others), and so do we.
        try:
            ipaddress.IPv4Address(inner)
        except ValueError:
            raise AddressError(f"{literal} is not a valid IPv4 address literal") from None
    elif tag.lower() == "ipv6":
        # IPv6-addr is hex digits, ":" and (for an embedded IPv4) "." only; the
        # stdlib also takes a "%scope" suffix, which is not RFC 5321 grammar.
        try:
            if not re.fullmatch(r"[0-9A-Fa-f:.]+", rest):
                raise ValueError(rest)
            ipaddress.IPv6Address(rest)
            if "::" in rest:
                # RFC 5321 §4.1.3: "::" stands for at least two groups of zeros, so at
                # most 6 groups besides it (4 and the IPv4 address in IPv6v4-comp);
                # ipaddress also takes "1:2:3:4:5:6:7::", where it stands for one.
                groups = [group for group in rest.replace("::", ":").split(":") if group]
                embedded_ipv4 = bool(groups) and "." in groups[-1]
                if len(groups) - embedded_ipv4 > (4 if embedded_ipv4 else 6):
                    raise ValueError(rest)
        except ValueError:
            raise AddressError(f"{literal} is not a valid IPv6 address literal") from None
    elif not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?", tag) or not rest:
        raise AddressError(f"{literal} is not a valid address literal")


def _check_domain_part(domain: str) -> None:
    if domain.startswith("["):
        check_address_literal(domain)
        return
    length = _octets(domain)
    if length > MAX_DOMAIN:
        raise AddressError(f"domain longer than {MAX_DOMAIN} octets")
    if length > MAX_LABEL and any(_octets(label) > MAX_LABEL for label in domain.split(".")):
        raise AddressError(f"domain label longer than {MAX_LABEL} octets")


def check_domain(name: str, utf8: bool = False) -> None:
    """Check a HELO/EHLO argument: ``Domain / address-literal``."""
    if _abnf.ADDRESS_LITERAL_RE.fullmatch(name):
        check_address_literal(name)
        return
    if _abnf.DOMAIN_RE.fullmatch(name) is None:
        if utf8 and _abnf.DOMAIN_UTF8_RE.fullmatch(name):
            pass
        elif _abnf.DOMAIN_UTF8_RE.fullmatch(name):
            raise AddressError(f"{name!r} is not an ASCII domain", non_ascii=True)
        else:
            raise AddressError(f"{name!r} is not a domain name or address literal")
    _check_domain_part(name)


def is_domain(name: str, utf8: bool = False) -> bool:
    """Whether :func:`check_domain` takes ``name``."""
    try:
        check_domain(name, utf8)
    except AddressError:
        return False
    return True


def check_mailbox(address: str, utf8: bool = False) -> None:
    """Check ``local-part@domain`` (no angle brackets) against RFC 5321 / 6531."""
    match = _abnf.MAILBOX_RE.fullmatch(address)
    if match is None:
        utf8_match = _abnf.MAILBOX_UTF8_RE.fullmatch(address)
        if utf8_match is None:
            raise AddressError(f"{address!r} is not a valid mailbox (local-part@domain)")
        if not utf8:
            raise AddressError(f"{address!r} is a UTF-8 address; it needs SMTPUTF8", non_ascii=True)
        match = utf8_match
    _check_lengths(match, address)


def _check_lengths(match: re.Match[str], mailbox: str) -> None:
    """The RFC 5321 §4.5.3.1 limits that are enforced (see MAX_DOMAIN), for a mailbox the grammar has matched."""
    _check_domain_part(match.group("domain"))
    if _octets(mailbox) + 2 > MAX_PATH:
        raise AddressError(f"path longer than {MAX_PATH} octets")


def parse_path(text: str, *, utf8: bool, null_allowed: bool, postmaster_allowed: bool) -> str:
    """Parse ``<mailbox>`` (with an ignored source route) and return the mailbox.

    ``<>`` gives ``""`` where ``null_allowed`` (MAIL FROM); ``<Postmaster>``
    gives ``"Postmaster"`` where ``postmaster_allowed`` (RCPT TO).
    """
    if null_allowed and text == "<>":
        return ""
    if postmaster_allowed and _POSTMASTER_RE.fullmatch(text):
        return "Postmaster"
    if len(text) < 2 or text[0] != "<" or text[-1] != ">":
        raise AddressError("address must be in angle brackets: <user@example.com>")
    match = _abnf.PATH_RE.fullmatch(text)
    if match is None:
        match = _abnf.PATH_UTF8_RE.fullmatch(text)
        if match is None:
            return _parse_lax_path(text, utf8)
        if not utf8:
            raise AddressError(f"{text} is a UTF-8 address; it needs SMTPUTF8", non_ascii=True)
    # A source route's domains hold no ":" (nor quotes), so the first ":" ends it.
    mailbox = text[text.index(":") + 1 : -1] if text[1] == "@" else text[1:-1]
    _check_lengths(match, mailbox)
    return mailbox


def _parse_lax_path(text: str, utf8: bool) -> str:
    """A path whose local part has its dots out of place, as its quoted equivalent.

    ``<a..b@example.com>`` gives ``"a..b"@example.com``: the same mailbox
    (RFC 5321 §4.1.2 leaves its meaning to the domain either way), written in
    the grammar, so what the server hands on can be relayed and logged as is.
    Anything else is refused as not a path.
    """
    match = _abnf.LAX_PATH_RE.fullmatch(text)
    if match is None:
        match = _abnf.LAX_PATH_UTF8_RE.fullmatch(text)
        if match is not None and not utf8:
            raise AddressError(f"{text} is a UTF-8 address; it needs SMTPUTF8", non_ascii=True)
    if match is None or match.group("local").strip(".") == "":  # (dots alone are no local part)
        raise AddressError(f"{text} is not a valid path")
    mailbox = f'"{match.group("local")}"@{match.group("domain")}'
    _check_lengths(match, mailbox)
    return mailbox


def address_literal(address: str) -> str:
    """An IP address as RFC 5321 §4.1.3 writes it: ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``.

    An IPv4 address seen through an IPv6 socket (``::ffff:192.0.2.1``) is written
    as the IPv4 address it is; an IPv6 zone (``%eth0``) has no place in a literal.
    Raises ``ValueError`` for what is not an IP address.
    """
    ip = ipaddress.ip_address(address.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return f"[IPv6:{ip.compressed}]"
        ip = ip.ipv4_mapped
    return f"[{ip}]"


def ascii_form(mailbox: str) -> str | None:
    """``mailbox`` with its internationalised domain as A-labels, for a session without SMTPUTF8.

    RFC 5321 §2.3.5 wants A-labels in SMTP, and a server without SMTPUTF8 takes
    nothing else (Postfix converts so too).  None when there is no exact ASCII
    form: a UTF-8 local part has none, and the stdlib's codec is IDNA 2003,
    which maps some names to others (``straße`` to ``strasse``, a final sigma
    to a sigma, a joiner to nothing) where IDNA 2008 keeps them.  So a domain is
    converted only when its A-label reads back as the same name (letter case
    aside): then it is the Punycode of that very name, as IDNA 2008 writes it.
    """
    if mailbox.isascii():
        return mailbox
    local, at, domain = mailbox.rpartition("@")
    if not at or not local.isascii():
        return None
    labels = exact_a_labels(domain)
    return None if labels is None else f"{local}@{labels}"


def exact_a_labels(domain: str) -> str | None:
    """``domain`` in A-labels by the stdlib's IDNA 2003 codec, or None where that is not exact:
    the A-label must read back as the same name, letter case aside (see :func:`ascii_form`)."""
    try:
        labels = domain.encode("idna")
        if labels.decode("idna").lower() == domain.lower():
            return labels.decode("ascii")
    except UnicodeError:  # a label IDNA 2003 refuses, or one too long once encoded
        pass
    return None


def format_path(mailbox: str) -> str:
    """The wire form of a mailbox: ``<mailbox>``; the null path is ``<>``."""
    return f"<{mailbox}>"
