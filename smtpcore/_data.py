"""Message content after DATA: find the end, undo dot-stuffing, check the lines.

The end of the content is **only** CRLF "." CRLF, where the first CRLF ends the
last line of content, or the DATA command itself for an empty message (RFC 5321
§4.1.1.4).  No other mix of CR, LF, NUL and "." ends a message, whatever the
bare-newline policy: that is the whole defence against SMTP smuggling, so the
search runs on the raw bytes before anything is changed.

The reader works on whole buffers with C-level ``bytes`` operations and never
loops over bytes or lines in Python.  It hands out everything it has except a
tail of at most four bytes that could be the start of CRLF.CRLF, so memory stays
bounded and content flows as it arrives.  Because a CRLF is never split between
two pieces handed out, every check below can look at one piece at a time.

Speed comes from doing as few passes over each piece as the checks allow:

* **One search, two jobs.**  The end marker and every stuffed dot begin with
  CRLF ".", so a piece without a line-start dot has neither: one search for
  CRLF "." decides, and the end search and the unstuffing run only when it hits.
  It starts at the first "." (a memchr), so content without any dot, such as
  base64, is not searched at all.  The search is a compiled regular expression,
  not ``bytes.find``: for a pattern that is all literal, ``re`` runs a plain C
  loop over the octets, which in text (a CR every line, a "." in most) is twice
  as fast as ``find``'s skip search, and was slower in no case we measured (see
  ``_find_line_start_dot``).
* **Bare CR or LF: one translate and one scan for CR.**  Deleting every octet but
  CR and LF leaves a short string (two octets a line) that must read CR LF CR LF
  ...; then no CR may be followed by anything but LF, which ``re`` finds by
  stopping only at CRs.  Content of very short lines (many CRs) takes the older
  way, two translates and a compare, which costs the same whatever the octets
  (see :func:`_has_bare_newline`).
* **Long lines: hop from CRLF to CRLF.**  From a line end, the next one must
  begin within the limit; ``rfind`` of CRLF in that window jumps to the last line
  end there at once, so a 64 KiB piece takes a few dozen C-level searches, not one
  per line (see :meth:`DataReader._check_lines`).

Errors found in the content (a bare CR or LF, an overlong line, too many octets)
are only recorded here: the server answers them once, after the end of data.
"""

from __future__ import annotations

import re

__all__ = ["DataReader", "ChunkReader"]

_END = b"\r\n.\r\n"
# What the end marker and every stuffed dot begin with (RFC 5321 §4.5.2).
_LINE_START_DOT = b"\r\n."
# Suffixes of a buffer that may be the beginning of _END, longest first.
_END_PREFIXES = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")
# The first CRLF "." at or after a position.  re, not bytes.find: an all-literal
# pattern is a plain C loop that stops at each CR, where find's skip search
# stumbles over the "." that ends most lines of text (20 us against 44 for 64 KiB).
_find_line_start_dot = re.compile(re.escape(_LINE_START_DOT)).search
# translate() deletes these, leaving only the CRs and LFs of a piece, in order.
_ALL_BUT_CR_LF = bytes(octet for octet in range(256) if octet not in (0x0A, 0x0D))
# A CR followed by anything but LF (re stops only at CRs to try the rest).
_find_bare_cr = re.compile(rb"\r[^\n]").search
# _find_bare_cr pays for each CR it stops at, the two translates do not: it is
# used up to one CR in this many octets (where it costs about half of them; they
# break even near one in 5, content of four-octet lines).
_FEW_CRS = 16
# translate() tables: 1 where the octet is CR (or LF), 0 everywhere else.
_CR_MARKS = bytes(1 if octet == 0x0D else 0 for octet in range(256))
_LF_MARKS = bytes(1 if octet == 0x0A else 0 for octet in range(256))


def _has_bare_newline(piece: bytes) -> bool:
    """A CR not followed by LF, or an LF not after a CR, in a piece that splits no CRLF.

    The first and last octets are looked at on their own.  A piece never ends
    with CR (the reader keeps one back), so a piece that starts with LF has no CR
    before it: the answer for each piece is the answer for the whole content.

    Why the usual way is exact.  With every other octet deleted, the CRs and LFs
    must read CR LF CR LF ... (they alternate, k of each, a CR first): that is a
    count of CRLF in a string of two octets a line.  Then if no CR is followed by
    anything but LF (one scan that stops only at CRs), each of the k CRs is
    followed by its own LF, and that is all k LFs: none is bare.  Conversely a
    bare CR or LF breaks one of the two.  Together these cost about two thirds of
    the translates below on text, but the scan pays for each CR it stops at, so
    content of very short lines takes the other way.

    Why the other way is exact: mark the CRs with 1 and all else with 0, likewise
    the LFs.  The CR marks of octets 0..n-2 equal the LF marks of octets 1..n-1
    exactly when, for every i < n-1, octet i is CR if and only if octet i+1 is LF:
    that is every CR but a last one followed by LF, and every LF but a first one
    after a CR.
    """
    if piece[:1] == b"\n" or piece[-1:] == b"\r":
        return True
    newlines = piece.translate(None, _ALL_BUT_CR_LF)
    if newlines.count(b"\r\n") * 2 != len(newlines):
        return True  # not CR LF CR LF ...: a CR or LF on its own somewhere
    if not newlines:
        return False
    if len(newlines) * _FEW_CRS <= len(piece) * 2:
        return _find_bare_cr(piece) is not None
    cr_marks = piece.translate(_CR_MARKS)[:-1]
    # startswith(..., 1) compares octets 1.. of the LF marks without copying them.
    return not piece.translate(_LF_MARKS).startswith(cr_marks, 1)


class DataReader:
    """Reads dot-stuffed content up to CRLF.CRLF.

    ``feed_from(buffer)`` consumes what it can from a bytearray and returns the
    unstuffed content found and whether the end was reached.  Problems are
    recorded in ``bare_newline``, ``long_line`` and ``size``.
    """

    __slots__ = (
        "_at_start",
        "_line_length",
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
        # RFC 5321 §4.5.3.1.6 counts the CRLF in the 1000.
        self.max_text_line = max_line_length - 2
        self.bare_newline = False
        self.long_line = False
        #: The end of data has been found.
        self.done = False
        #: Content octets handed out so far, after unstuffing.
        self.size = 0

    def feed_from(self, buffer: bytearray) -> tuple[bytes, bool]:
        """Take what can be handed out from ``buffer``: (unstuffed content, end reached).

        Between calls the caller only appends to ``buffer``; after the end, the
        bytes that follow it (the next command) are left there untouched.
        """
        if self.done:
            # The caller may come back once more after the last piece: never read
            # past the end, the bytes after it are the next command.
            return b"", True
        if self._at_start:
            if not self._start(buffer):
                return b"", self.done
        elif len(buffer) < 5 and _END.startswith(buffer):
            # Only what the last call kept back (the server asks once more
            # before it says NEED_DATA): there is nothing to hand out.
            return b"", False
        # A line-start dot cannot come before the first dot (memchr finds that
        # at once, and content with no dot at all, like base64, skips the search).
        dot = buffer.find(b".")
        if dot >= 0:
            found = _find_line_start_dot(buffer, max(dot - 2, 0))
            dot = -1 if found is None else found.start()
        if dot < 0:
            # No line-start dot, so no end marker and nothing to unstuff.  Keep
            # back a final CR or CRLF: the next bytes may make it CRLF "." CRLF.
            keep = 2 if buffer.endswith(b"\r\n") else 1 if buffer.endswith(b"\r") else 0
            return self._content(self._take(buffer, keep)), False
        end = buffer.find(_END, dot)
        if end >= 0:
            self.done = True
            raw = bytes(buffer[: end + 2])  # the last line's CRLF is content
            del buffer[: end + 5]
        else:
            keep = 0
            for prefix in _END_PREFIXES:
                if buffer.endswith(prefix):
                    keep = len(prefix)
                    break
            raw = self._take(buffer, keep)
        # Every line-start "." goes (RFC 5321 §4.5.2).  Only dots go, so the
        # checks see the same CRs and LFs as the raw bytes had.  Split and join
        # rather than replace(), which scans twice (to count, then to copy):
        # a third less time for 64 KiB where every line starts with a dot.
        return self._content(b"\r\n".join(raw.split(_LINE_START_DOT))), self.done

    def _start(self, buffer: bytearray) -> bool:
        """The first bytes after DATA: can reading go on as for any other line?

        The DATA command's CRLF stands before the first line, so ".\r\n" here is
        the end of an empty message, and a "." starting anything else is the
        first line's transparency dot.  Once that is settled, no more is special
        about the first line: it is measured from 0 and never follows a CRLF in
        the buffer, so the searches below treat it like any other.
        """
        if not buffer:
            return False
        if buffer[:1] == b".":
            if len(buffer) < 3 and b".\r\n".startswith(buffer):
                return False  # could still be the end of an empty message
            if buffer[:3] == b".\r\n":
                del buffer[:3]
                self.done = True
                return False
            # The transparency dot (cheap: a bytearray moves its start).  Deleting
            # it cannot make an end marker: one at the new start would mean the
            # buffer began ".\r\n.\r\n", already taken as an empty message.
            del buffer[:1]
        self._at_start = False
        return True

    @staticmethod
    def _take(buffer: bytearray, keep: int) -> bytes:
        """Remove and return all of ``buffer`` but its last ``keep`` octets."""
        if not keep:
            piece = bytes(buffer)  # one copy, not two as bytes(buffer[:n]) makes
            buffer.clear()
            return piece
        count = len(buffer) - keep
        if count <= 0:
            return b""
        piece = bytes(buffer[:count])
        del buffer[:count]
        return piece

    def _content(self, piece: bytes) -> bytes:
        """Check and count one unstuffed piece; it starts and ends outside any CRLF."""
        if piece:
            if self.check_newlines and not self.bare_newline and _has_bare_newline(piece):
                self.bare_newline = True
            if self.check_lines and not self.long_line:
                self._check_lines(piece)
            self.size += len(piece)
        return piece

    def _check_lines(self, piece: bytes) -> None:
        """Is any CRLF-delimited line longer than ``max_text_line``?  Exact, in few searches.

        Lines are measured after unstuffing (RFC 5321 §4.5.3.1.6 does not count
        the transparency dot); a bare CR or LF is an octet of its line.

        Why hopping is exact: the line after a CRLF at ``at`` starts at ``at + 2``,
        so with the next CRLF at ``e`` it has ``e - at - 2`` octets, and it is
        short enough exactly when ``e <= at + 2 + limit``.  ``rfind`` from ``at + 1``
        to ``at + limit + 4`` sees exactly the CRLFs that start in that range and
        gives the last.  If there is none, the line after ``at`` is too long.  If
        there is one, every line in between is short too (their ends all lie in
        the range), and the search goes on from it.  The CRLF after it lies beyond
        the range, so every two hops move on more than ``limit`` octets: a 64 KiB
        piece under the smallest limit a server allows (998) takes at most ~130
        hops (ordinary text about 65), each a C-level search from the right of a
        range that stops at the first CRLF it meets.
        """
        limit = self.max_text_line
        first = piece.find(b"\r\n")
        if first < 0:
            # The line goes on from the last piece and into the next.
            self._line_length += len(piece)
            self.long_line = self._line_length > limit
            return
        if self._line_length + first > limit:
            self.long_line = True
            return
        last = piece.rfind(b"\r\n")
        at = first
        while at < last:
            at = piece.rfind(b"\r\n", at + 1, at + limit + 4)  # the CRLF must fit: start <= at + limit + 2
            if at < 0:
                self.long_line = True
                return
        self._line_length = len(piece) - last - 2
        self.long_line = self._line_length > limit


class ChunkReader:
    """Reads exactly ``size`` opaque octets (a BDAT chunk, RFC 3030)."""

    __slots__ = ("remaining",)

    def __init__(self, size: int) -> None:
        self.remaining = size

    @property
    def done(self) -> bool:
        """Every octet of the chunk has been read (at once, for an empty one)."""
        return self.remaining == 0

    def feed_from(self, buffer: bytearray) -> tuple[bytes, bool]:
        count = min(self.remaining, len(buffer))
        piece = bytes(buffer[:count])
        del buffer[:count]
        self.remaining -= count
        return piece, self.remaining == 0
