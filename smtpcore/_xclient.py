"""XCLIENT and XFORWARD (Postfix): what their attributes may hold.

A proxy in front of an SMTP server (nginx's mail proxy, a content filter, a
test program) speaks for a client the server cannot see.  When the server
offers XCLIENT, the proxy sends ``XCLIENT ADDR=192.0.2.7 NAME=mail.example.org``
and the server takes those for the client's own, as if the proxy were that
client; the server then greets again (220) and the client starts over with EHLO.
The command is Postfix's (XCLIENT_README), also spoken by Dovecot and Exim.

XFORWARD is its sibling for logging: an MTA that hands mail to a content
filter (Postfix's smtp client, ``smtp_send_xforward_command``) says where the
mail came from, ``XFORWARD NAME=... ADDR=... HELO=... IDENT=...``, for the
transaction that follows; nothing about the session changes (XFORWARD_README).

This module is the one place that knows the attributes' grammar.  Both roles
use it: the server's parser to read a command, the event's constructor to
refuse a value that could not be sent, and the writer to encode one.  Values
travel as xtext (RFC 3461 §4, ``_params.xtext_encode``), so no value can end
the line or start another command.  Each is checked as Postfix checks it, and the ones that name a host
or an address must name one: they end up in logs and Received fields.
"""

from __future__ import annotations

import ipaddress
import re

from . import _abnf
from ._address import is_domain
from ._params import ParamError, xtext_decode

__all__ = [
    "ATTRIBUTES",
    "FORWARD_ATTRIBUTES",
    "TEMPUNAVAIL",
    "UNAVAILABLE",
    "XClientError",
    "canonical_forward_value",
    "canonical_value",
    "decode_value",
]

#: The attributes, in the order of the EHLO line (Postfix's own order).
ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT")
#: XFORWARD's attributes, in the order of its EHLO line (Postfix's own order).
FORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
#: The value of an attribute the proxy does not know (any case on the wire).
UNAVAILABLE = "[UNAVAILABLE]"
#: NAME only: the proxy's reverse DNS lookup failed for now, not for good.
TEMPUNAVAIL = "[TEMPUNAVAIL]"

_ADDRESSES = frozenset({"ADDR", "DESTADDR"})
_PORTS = frozenset({"PORT", "DESTPORT"})
# Postfix's limit for NAME and HELO (XCLIENT_README, note 1), the longest domain name.
_MAX_NAME = 255
# RFC 3461 §4 xtext with its upper-case hex digits only (``_abnf.XTEXT_RE`` takes
# lower case too, for MAIL parameters): see decode_value.
_UPPER_XTEXT_RE = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_HEXCHAR_RE = re.compile(r"\+([0-9A-F]{2})")


class XClientError(ValueError):
    """A value XCLIENT cannot carry; the message names the attribute and why."""


def canonical_value(name: str, value: str) -> str:
    """``value`` as an event holds it, or :class:`XClientError`.

    ``name`` is an upper-case attribute.  The markers are upper-cased
    (``[unavailable]`` is ``[UNAVAILABLE]``), PROTO too, and an address loses its
    ``IPV6:`` prefix and takes its compressed form (``2001:db8::7``).
    """
    if not isinstance(value, str):
        raise XClientError(f"{name} must be a string, not {type(value).__name__}")
    marker = value.upper() if value[:1] == "[" and value.isascii() else None
    if marker == UNAVAILABLE or (marker == TEMPUNAVAIL and name == "NAME"):
        # Every attribute may be unavailable (PROTO too, in Postfix's own tests); only a
        # name lookup can fail for now.
        return marker
    if marker == TEMPUNAVAIL:  # (else a LOGIN of that name would authenticate a user "[TEMPUNAVAIL]")
        raise XClientError(f"{TEMPUNAVAIL} is for NAME only; {name} may be {UNAVAILABLE}")
    if not value or _abnf.CONTROL_RE.search(value):
        # (A space may be in a HELO or LOGIN value, as xtext "+20"; the other
        # attributes' grammars have none.)
        raise XClientError(f"{name} must be a non-empty value without control characters")
    if name in _ADDRESSES:
        return _address(name, value)
    if name in _PORTS:
        return _port(name, value)
    if name == "PROTO":
        if not (value.isascii() and value.upper() in ("SMTP", "ESMTP")):
            raise XClientError(f"PROTO must be SMTP or ESMTP, not {value!r}")
        return value.upper()
    if name == "NAME":
        if len(value) > _MAX_NAME or not _is_host_name(value):
            raise XClientError(f"NAME must be a host name, {UNAVAILABLE} or {TEMPUNAVAIL}, not {value!r}")
        return value
    if name == "HELO":
        # Whatever the client said, as Postfix keeps it: a HELO name need not be a
        # host name (the next EHLO is what the server checks).
        if len(value) > _MAX_NAME:
            raise XClientError(f"HELO must be at most {_MAX_NAME} characters")
        return value
    if name == "LOGIN":
        return value
    raise XClientError(f"{name!r} is not an XCLIENT attribute ({', '.join(ATTRIBUTES)})")


def canonical_forward_value(name: str, value: str) -> str:
    """An XFORWARD attribute's ``value`` as an event holds it, or :class:`XClientError`.

    Looser than XCLIENT's: XFORWARD only says what to log, and what it forwards
    is what the first MTA was told by its client, whatever that was.  NAME and
    HELO need not be DNS names (``HELO=[192.0.2.7]``, a HELO with spaces), so any
    text goes but a control character; the application quotes what it logs.  A
    refusal would only lose the information (Postfix's smtp client logs a
    warning and goes on to MAIL), so nothing is refused that could be logged.
    ADDR, PORT and SOURCE keep their grammar.
    """
    if not isinstance(value, str):
        raise XClientError(f"{name} must be a string, not {type(value).__name__}")
    if value[:1] == "[" and value.isascii() and value.upper() == UNAVAILABLE:
        return UNAVAILABLE
    if not value or _abnf.CONTROL_RE.search(value):
        raise XClientError(f"{name} must be a non-empty value without control characters")
    if name == "ADDR":
        return _address(name, value)
    if name == "PORT":
        return _port(name, value)
    if name == "SOURCE":
        if not (value.isascii() and value.upper() in ("LOCAL", "REMOTE")):
            raise XClientError(f"SOURCE must be LOCAL or REMOTE, not {value!r}")
        return value.upper()
    if name not in FORWARD_ATTRIBUTES:
        raise XClientError(f"{name!r} is not an XFORWARD attribute ({', '.join(FORWARD_ATTRIBUTES)})")
    limit = 64 if name == "PROTO" else _MAX_NAME  # XFORWARD_README, note 1
    if len(value) > limit:
        raise XClientError(f"{name} must be at most {limit} characters")
    return value


def _port(name: str, value: str) -> str:
    if not (value.isascii() and value.isdigit() and len(value) <= 5 and int(value) <= 65535):
        raise XClientError(f"{name} must be a port number from 0 to 65535, not {value!r}")
    return str(int(value))


def _is_host_name(value: str) -> bool:
    """A domain, or a name with underscores (``DESKTOP_7QX2``) as Postfix's valid_hostname() takes it.

    An address is not a name, in brackets or not: a top label of digits only is
    refused as valid_hostname() refuses it ("192.0.2.7", "192.0.2.7.").
    """
    if value.startswith("[") or value.rstrip(".").rpartition(".")[2].isdigit():
        return False
    return is_domain(value) or _abnf.UNDERSCORED_NAME_RE.fullmatch(value) is not None


def _address(name: str, value: str) -> str:
    """An IPv4 address, or an IPv6 address after ``IPV6:`` (taken without it too: it is unambiguous)."""
    text = value[5:] if value[:5].upper() == "IPV6:" else value
    # (No "%": ipaddress takes an RFC 4007 zone with any text after it.)
    if "%" not in text:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            if text is value or address.version == 6:
                return str(address)
    raise XClientError(f"{name} must be an IP address (IPV6: before an IPv6 one), not {value!r}")


def decode_value(raw: str) -> str:
    """An attribute value as sent: xtext, decoded, or as it is if it is not xtext.

    XCLIENT_README note 3: Postfix before 2.3 sent values unencoded, and nginx
    still sends LOGIN so (``LOGIN=user+tag@example.org``).  A value is therefore
    decoded only if it is xtext as an encoder writes it: each ``+`` followed by
    two upper-case hex digits naming an octet xtext must encode (``+``, ``=``, a
    space, a control or a non-ASCII octet), and the octets UTF-8 without a control
    character.  Any other value is taken as it is, as Postfix takes a value it
    cannot unquote.  So ``user+ab@example.org``, ``sales+0a@example.org`` and
    ``+61dmin`` stay themselves (no encoder writes ``a`` as ``+61``: reading it so
    would authenticate ``admin``), and ``a+0D+0Ab`` is that text, never a line
    break.  What stays ambiguous is an unencoded ``+`` before the hex of such an
    octet (``joe+2024``, read as ``joe 24``): nginx's LOGIN cannot say which it
    meant.
    """
    if "+" not in raw or not _UPPER_XTEXT_RE.fullmatch(raw):
        return raw
    if any(_left_as_is(int(match.group(1), 16)) for match in _HEXCHAR_RE.finditer(raw)):
        return raw
    try:
        return xtext_decode(raw)
    except ParamError:  # not UTF-8, or a control character: not what an encoder writes
        return raw


def _left_as_is(octet: int) -> bool:
    """An octet xtext writes as itself, never as ``+XX`` (RFC 3461 §4: xchar)."""
    return 0x21 <= octet <= 0x7E and octet not in (0x2B, 0x3D)
