"""Message content after DATA: find the end, undo dot-stuffing, check the lines.

The end of the content is **only** CRLF "." CRLF, where the first CRLF ends the
last line of content, or the DATA command itself for an empty message (RFC 5321
§4.1.1.4).  No other mix of CR, LF, NUL and "." ends a message, whatever the
bare-newline policy: that is the whole defence against SMTP smuggling, so the
search runs on the raw bytes before anything is changed.

The reader works on whole buffers with C-level ``bytes`` operations (``find``,
``replace``, ``count``) and never loops over bytes or lines in Python.  It hands
out everything it has except a tail of at most four bytes that could be the
start of CRLF.CRLF, so memory stays bounded and content flows as it arrives.
Because a CRLF is never split between two pieces handed out, per-piece checks for
bare CR and LF are exact.

Errors found in the content (a bare CR or LF, an overlong line, too many octets)
are only recorded here: the server answers them once, after the end of data.
"""

from __future__ import annotations

__all__ = ["DataReader", "ChunkReader"]

_END = b"\r\n.\r\n"
# Suffixes of a buffer that may be the beginning of _END, longest first.
_END_PREFIXES = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")


class DataReader:
    """Reads dot-stuffed content up to CRLF.CRLF.

    ``feed_from(buffer)`` consumes what it can from a bytearray and returns the
    unstuffed content found and whether the end was reached.  Problems are
    recorded in ``bare_newline``, ``long_line`` and ``size``.
    """

    __slots__ = (
        "_at_start",
        "_line_length",
        "_strip_lead",
        "bare_newline",
        "check_lines",
        "check_newlines",
        "done",
        "long_line",
        "max_text_line",
        "size",
    )

    def __init__(self, max_line_length: int, check_newlines: bool = True, check_lines: bool = True) -> None:
        #: Look for bare CR / LF and for long lines; a server whose policy accepts
        #: them skips the scans (the end-of-data search never depends on them).
        self.check_newlines = check_newlines
        self.check_lines = check_lines
        # The DATA command's CRLF is the "first CRLF" of an immediate end.
        self._at_start = True
        # Octets of the current line already handed out (to spot long lines).
        self._line_length = 0
        self._strip_lead = False
        # RFC 5321 §4.5.3.1.6 counts the CRLF in the 1000.
        self.max_text_line = max_line_length - 2
        self.bare_newline = False
        self.long_line = False
        #: The end of data has been found.
        self.done = False
        #: Content octets handed out so far, after unstuffing.
        self.size = 0

    def feed_from(self, buffer: bytearray) -> tuple[bytes, bool]:
        if self.done:
            # The caller may come back once more after the last piece: never read
            # past the end, the bytes after it are the next command.
            return b"", True
        piece, self.done = self._feed_from(buffer)
        return piece, self.done

    def _feed_from(self, buffer: bytearray) -> tuple[bytes, bool]:
        if self._at_start:
            if not buffer:
                return b"", False
            if buffer[:1] == b".":
                if len(buffer) < 3 and b".\r\n".startswith(buffer):
                    return b"", False  # could still be the end of an empty message
                if buffer[:3] == b".\r\n":
                    del buffer[:3]
                    return b"", True
            # Pretend the DATA command's CRLF is in front, so the first line is
            # unstuffed and checked like every other.
            buffer[:0] = b"\r\n"
            self._at_start = False
            self._strip_lead = True
        end = buffer.find(_END)
        if end >= 0:
            raw = bytes(buffer[: end + 2])
            del buffer[: end + 5]
            return self._content(raw), True
        keep = 0
        for prefix in _END_PREFIXES:
            if buffer.endswith(prefix):
                keep = len(prefix)
                break
        cut = len(buffer) - keep
        if cut <= 0:
            return b"", False
        raw = bytes(buffer[:cut])
        del buffer[:cut]
        return self._content(raw), False

    def _content(self, raw: bytes) -> bytes:
        """Check and unstuff one piece that starts and ends outside any CRLF."""
        # Every line-start "." goes (RFC 5321 §4.5.2); the end marker is already cut off.
        # Lines are measured after this: RFC 5321 §4.5.3.1.6 does not count the
        # dot added for transparency, so a 998-octet line starting "." is not long.
        # Only dots go, so the CR and LF counts are those of the raw bytes.
        # (replace() hands back the very same object when nothing matches: no copy.)
        content = raw.replace(b"\r\n.", b"\r\n")
        crlf = -1  # not counted yet
        if self.check_lines and not self.long_line:
            # One split gives both the line lengths and the CRLF count; it is the
            # cheapest exact test for a long line that C-level bytes offer.
            lines = content.split(b"\r\n")
            crlf = len(lines) - 1
            if crlf == 0:
                self._line_length += len(content)
                longest = self._line_length
            else:
                # The first line continues the last piece's; the last goes on in the next.
                longest = max(self._line_length + len(lines[0]), *map(len, lines))
                self._line_length = len(lines[-1])
            if longest > self.max_text_line:
                self.long_line = True
        if self.check_newlines and not self.bare_newline:
            if crlf < 0:
                crlf = content.count(b"\r\n")
            if content.count(b"\n") != crlf or content.count(b"\r") != crlf:
                self.bare_newline = True
        if self._strip_lead:
            # Drop the CRLF that stood in for the DATA command's own.
            self._strip_lead = False
            content = content[2:]
        self.size += len(content)
        return content


class ChunkReader:
    """Reads exactly ``size`` opaque octets (a BDAT chunk, RFC 3030)."""

    __slots__ = ("remaining",)

    def __init__(self, size: int) -> None:
        self.remaining = size

    def feed_from(self, buffer: bytearray) -> tuple[bytes, bool]:
        count = min(self.remaining, len(buffer))
        piece = bytes(buffer[:count])
        del buffer[:count]
        self.remaining -= count
        return piece, self.remaining == 0
