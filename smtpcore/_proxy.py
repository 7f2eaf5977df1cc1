"""The PROXY protocol header (HAProxy's spec, versions 1 and 2), read before any SMTP byte.

A load balancer that speaks the PROXY protocol opens each connection with one
header saying who the real client is.  The header comes before the greeting, so
the server reads it first and only then greets (as Postfix's postscreen does).

Both versions are parsed strictly and with a bound: version 1 is one text line
of at most 107 octets; version 2 is a 16-octet binary preamble plus a declared
length that we cap (``MAX_V2_LENGTH``), so a peer cannot make us buffer more.
TLVs in version 2 are skipped.  Anything else is a :class:`ProxyError`: a
connection that was supposed to come through the proxy and did not is refused.

On an implicit-TLS port the client's TLS handshake follows the header at once,
often in the same segment, and only the TLS layer may read it: neither
``ssl.SSLSocket`` nor asyncio's ``start_tls`` can be handed octets already read.
:func:`octets_left` says how much may be read without passing the header's end.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

__all__ = [
    "MAX_V1_LENGTH",
    "MAX_V2_LENGTH",
    "MIN_LENGTH",
    "ProxyError",
    "ProxyInfo",
    "octets_left",
    "read_proxy_header",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
MAX_V1_LENGTH = 107  # the spec's worst case, CRLF included
MAX_V2_LENGTH = 16 + 2048  # addresses plus generous room for TLVs
MIN_LENGTH = len(b"PROXY UNKNOWN\r\n")  # the shortest header of either version (v2's fixed part is 16)

# PROXY TCP4|TCP6 <src> <dst> <srcport> <dstport>, or PROXY UNKNOWN [anything]
_V1_RE = re.compile(
    rb"PROXY (?:(TCP4|TCP6) ([0-9A-Fa-f.:]{2,39}) ([0-9A-Fa-f.:]{2,39}) ([0-9]{1,5}) ([0-9]{1,5})"
    rb"|UNKNOWN(?: [^\r\n]*)?)"
)


class ProxyError(ValueError):
    """The connection did not start with a valid PROXY header."""


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """Who the proxy says the client is; ``None`` addresses for LOCAL / UNKNOWN."""

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def _port(text: bytes) -> int:
    port = int(text)
    if port > 65535 or (len(text) > 1 and text.startswith(b"0")):
        raise ProxyError("PROXY v1 port out of range")
    return port


def _v1(line: bytes) -> ProxyInfo:
    match = _V1_RE.fullmatch(line)
    if match is None:
        raise ProxyError("malformed PROXY v1 header")
    family = match.group(1)
    if family is None:
        return ProxyInfo(1, None, None)
    kind = ipaddress.IPv4Address if family == b"TCP4" else ipaddress.IPv6Address
    try:
        source = str(kind(match.group(2).decode()))
        destination = str(kind(match.group(3).decode()))
    except ValueError:
        raise ProxyError("PROXY v1 address does not match its family") from None
    return ProxyInfo(1, (source, _port(match.group(4))), (destination, _port(match.group(5))))


def _v2(command: int, family: int, body: bytes) -> ProxyInfo:
    if command == 0x0:  # LOCAL: a health check from the proxy itself
        return ProxyInfo(2, None, None)
    if command != 0x1:
        raise ProxyError("PROXY v2 command must be LOCAL or PROXY")
    transport_family = family >> 4
    if transport_family == 0x1 and len(body) >= 12:
        src, dst, sport, dport = struct.unpack("!4s4sHH", body[:12])
        return ProxyInfo(2, (str(ipaddress.IPv4Address(src)), sport), (str(ipaddress.IPv4Address(dst)), dport))
    if transport_family == 0x2 and len(body) >= 36:
        src, dst, sport, dport = struct.unpack("!16s16sHH", body[:36])
        return ProxyInfo(2, (str(ipaddress.IPv6Address(src)), sport), (str(ipaddress.IPv6Address(dst)), dport))
    if transport_family in (0x0, 0x3):  # UNSPEC, or UNIX sockets: no IP address to report
        return ProxyInfo(2, None, None)
    raise ProxyError("PROXY v2 address block too short for its family")


def read_proxy_header(buffer: bytearray) -> ProxyInfo | None:
    """Parse and remove a complete header from ``buffer``; ``None`` if more bytes are needed.

    Raises :class:`ProxyError` as soon as the bytes cannot be a header, without
    waiting for more than the bound.
    """
    head = bytes(buffer[:16])
    if head[:1] == b"P":
        if not V1_PREFIX.startswith(head[:6]) and not head.startswith(V1_PREFIX):
            raise ProxyError("connection did not start with a PROXY header")
        end = buffer.find(b"\r\n", 0, MAX_V1_LENGTH)
        if end < 0:
            if len(buffer) >= MAX_V1_LENGTH:
                raise ProxyError("PROXY v1 header longer than 107 octets")
            return None
        info = _v1(bytes(buffer[:end]))
        del buffer[: end + 2]
        return info
    if not V2_SIGNATURE.startswith(head[:12]) and not head.startswith(V2_SIGNATURE):
        raise ProxyError("connection did not start with a PROXY header")
    if len(buffer) < 16:
        return None
    version_command, family, length = struct.unpack("!BBH", head[12:16])
    if version_command >> 4 != 0x2:
        raise ProxyError("PROXY v2 header with an unknown version")
    if 16 + length > MAX_V2_LENGTH:
        raise ProxyError("PROXY v2 header longer than we accept")
    if len(buffer) < 16 + length:
        return None
    info = _v2(version_command & 0x0F, family, bytes(buffer[16 : 16 + length]))
    del buffer[: 16 + length]
    return info


def octets_left(received: bytes | bytearray) -> int:
    """How many more octets may be read without passing the end of the header ``received`` begins.

    The least that is left of *any* header that starts with ``received``, so a
    read of at most this many octets never takes one that follows the header:

    * nothing yet: :data:`MIN_LENGTH` (15), the shortest header;
    * version 2: what is missing of the 16-octet fixed part, then of the length
      it declares (exactly: the header ends there);
    * version 1: the line ends at its first CRLF, and no CR comes before it
      (the grammar has none), so once the shortest header's length is in, 1 if
      ``received`` ends with CR (its LF may be next) and 2 otherwise.

    0 once ``received`` holds a whole header, less than 0 when it holds more
    (``-n``: n octets past its end).  Octets that cannot begin a header get the
    version 1 answer: :func:`read_proxy_header` refuses them, and whatever was
    read after them is never used.
    """
    size = len(received)
    if received[:1] == V2_SIGNATURE[:1]:
        if size < 16:
            return 16 - size
        return 16 + int.from_bytes(received[14:16], "big") - size
    end = received.find(b"\r\n", 0, MAX_V1_LENGTH)
    if end >= 0:
        return end + 2 - size
    return max(MIN_LENGTH - size, 1 if received.endswith(b"\r") else 2)
