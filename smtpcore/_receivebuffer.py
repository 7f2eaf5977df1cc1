"""The receive buffer: bytes in, lines out, in linear time and bounded space.

Two properties matter more than anything else here, and both come from h11:

* **Linear time when fed one byte at a time.**  The buffer remembers how far it
  has already searched for a line end, so each new byte is looked at a constant
  number of times however the input is split.
* **Bounded space whatever arrives.**  A line longer than its limit is not
  kept: the buffer drops what it holds, remembers that it is *skipping*, and
  throws bytes away until the line ends, at which point it reports the overlong
  line once.  Long runs of CR, of NUL or of anything without a line end cost
  nothing but the limit.

CRLF ends a line (RFC 5321 §2.3.8), and so does a lone LF.  Clients and servers
that end their lines with LF alone exist (scripts, devices, ported code), and
Postfix, aiosmtpd, go-smtp and smtplib all read such lines; refusing them here
left the peer waiting for a reply until its timeout.  It is no smuggling risk:
that is about where message content ends, which the content readers decide on
CRLF "." CRLF alone and never through this method.  A lone CR stays inside the
line, where the parsers refuse it.
"""

from __future__ import annotations

__all__ = ["OVERLONG", "ReceiveBuffer", "starts_bdat"]


class _Overlong:
    """Returned by :meth:`ReceiveBuffer.next_line` for a line that was too long."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OVERLONG"


OVERLONG = _Overlong()


def starts_bdat(line: bytes | bytearray) -> bool:
    """Whether ``line`` may be a BDAT command: "BDAT" and then anything but a letter or digit.

    Asked of a line the server refuses before reading its verb (too long, a
    control, bad UTF-8).  A client that meant it as BDAT sends a chunk next, of
    a size nobody read, so what follows must not be read as commands
    (smuggling): "BDAT\x0b35 LAST" is BDAT to a peer that takes any blank as a
    space.  One test for every such refusal, so none of them is looser.  Blanks
    before it count for nothing (" BDAT 35 LAST" is BDAT to a peer that strips them),
    up to 32 of them: only the line's head is looked at, never copied whole (``line``
    may be a buffer of many lines, asked once for each overlong one).
    """
    line = line[:37].lstrip(b" \t\x0b\x0c")
    return line[:4].upper() == b"BDAT" and not line[4:5].isalnum()


def _is_auth_line(data: bytearray) -> bool:
    """Whether ``data`` starts an AUTH command.

    RFC 4954 §4 has a client leave out an initial response that would make the
    line longer than 512 octets, but clients send XOAUTH2 bearer tokens of a few
    KiB that way all the same (smtplib among them): the server takes such a line
    up to the limit of a SASL response.  Only asked of a line already over the
    usual limit, so an ordinary command pays nothing for it.
    """
    return data[:5].upper() == b"AUTH "


class ReceiveBuffer:
    __slots__ = ("_data", "_overlong_bdat", "_searched", "_skipping")

    def __init__(self) -> None:
        self._data = bytearray()
        # Where the next search for LF starts (everything before has none).
        self._searched = 0
        # Inside an overlong line: discard until its end.
        self._skipping = False
        # The last overlong line was a BDAT command (see overlong_was_bdat).
        self._overlong_bdat = False

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    @property
    def overlong_was_bdat(self) -> bool:
        """The last line handed out as ``OVERLONG`` may have been BDAT (see
        :func:`starts_bdat`)."""
        return self._overlong_bdat

    @property
    def skipping(self) -> bool:
        """Inside a line already known to be over its limit (its bytes are being dropped)."""
        return self._skipping

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._data += data

    def clear(self) -> None:
        """Forget everything (STARTTLS: nothing received before TLS may be used)."""
        self._data.clear()
        self._searched = 0
        self._skipping = False

    def next_line(self, limit: int, auth_limit: int = 0) -> bytes | _Overlong | None:
        """The next line without its CRLF (or lone LF), ``OVERLONG``, or ``None`` if incomplete.

        ``limit`` counts the CRLF (RFC 5321 §4.5.3.1.4 counts it; a line that
        ends in a lone LF is measured as if it had a CRLF).  The buffer never
        holds more than ``limit`` octets of an incomplete line, or ``auth_limit``
        if the line is an AUTH command (whose initial response may be long: see
        :func:`_is_auth_line`).
        """
        data = self._data
        end = data.find(b"\n", self._searched)
        if end < 0:
            self._searched = len(data)
            if len(data) >= limit and not (len(data) < auth_limit and _is_auth_line(data)):
                # At least ``limit`` octets and no line end yet: over the limit
                # whatever comes next, so nothing of it is kept.
                if not self._skipping:
                    self._overlong_bdat = starts_bdat(data)
                self._skipping = True
                data.clear()
                self._searched = 0
            return None
        stop = end - 1 if end and data[end - 1] == 13 else end  # (13: CR)
        if self._skipping or (stop + 2 > limit and not (stop + 2 <= auth_limit and _is_auth_line(data))):
            if not self._skipping:
                self._overlong_bdat = starts_bdat(data)
            del data[: end + 1]
            self._searched = 0
            self._skipping = False
            return OVERLONG
        line = bytes(data[:stop])
        del data[: end + 1]
        self._searched = 0
        return line

    def peek(self) -> bytearray:
        """The buffered bytes themselves, for a content reader that consumes them
        in place.  Call :meth:`rewind` after changing them.  It is the same
        bytearray for the buffer's whole life (it is only ever changed in place)."""
        return self._data

    def rewind(self) -> None:
        """Forget how far the line search got: the bytes were changed under it."""
        self._searched = 0
