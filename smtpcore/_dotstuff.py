"""Preparing message content for DATA: line endings, dot-stuffing, the terminator.

After DATA the server ends the message at the first CRLF "." CRLF, so a client
must (RFC 5321 §4.5.2) double every "." that starts a line, and must never emit
a bare CR or LF: a receiver that treats one as a line end is how "SMTP
smuggling" hides a second message inside the first.  The content arrives in
chunks of any size, so every rule must hold across chunk boundaries too: a "."
at the very start of the message, a CRLF split between two chunks, a "." right
after such a split.

The work is done with C-level ``bytes`` operations (``count``, ``split``,
``join``, ``startswith``) on whole chunks, never with a Python loop over bytes or lines.
Two facts are carried from one chunk to the next:

* whether the output so far ends with CRLF (or nothing was written), so that a
  leading "." in the next chunk must be doubled;
* whether it ends with a CR whose LF is still owed (``after_cr``): the chunk
  ended with CR.  If the next chunk starts with LF, that LF completes the CRLF
  and nothing is changed; otherwise the CR was bare, and NORMALISE writes the
  owed LF while REJECT raises.  Passing the CR through instead of holding it
  back keeps the common path free of copies.

Under REJECT, bytes may already have gone out when a bare CR or LF is found in
a later chunk, so the caller must then abandon the connection without sending
the terminator (the driver does); a truncated message is never ended with
"." CRLF.  :class:`LineEndings` is the same line-ending work without the
stuffing, for BDAT.
"""

from __future__ import annotations

from ._config import BareNewlinePolicy
from ._errors import LocalProtocolError

__all__ = ["DotStuffer", "LineEndings", "stuff"]


def stuff(data: bytes) -> bytes:
    """The DATA form of whole content whose every line ending is CRLF (no terminator).

    For content this package normalised itself: one ``replace`` doubles every
    line-start dot, the first line's included.  :meth:`DotStuffer.feed_stuffed`
    then sends it in pieces.
    """
    data = _double_line_start_dots(data)
    return b"." + data if data.startswith(b".") else data


def _double_line_start_dots(data: bytes) -> bytes:
    """Every CRLF "." made CRLF "..", for the dots of every line but the first.

    Split and join rather than ``replace``: with a longer replacement,
    ``replace`` scans the data twice (once to count, once to copy), where
    ``split`` finds each match once and ``join`` copies once -- half the time
    for 100 KiB with a dotted line, no slower with none, and when nothing
    matches both hand back the same object, uncopied.
    """
    return b"\r\n..".join(data.split(b"\r\n."))


class LineEndings:
    """Streaming bare CR / bare LF handling under a :class:`BareNewlinePolicy`."""

    __slots__ = ("after_cr", "policy")

    def __init__(self, policy: BareNewlinePolicy = BareNewlinePolicy.NORMALISE) -> None:
        if policy is BareNewlinePolicy.ACCEPT:
            raise LocalProtocolError("a client never sends bare CR or LF: use NORMALISE or REJECT")
        self.policy = policy
        #: The output ends with a CR whose LF has not been written yet.
        self.after_cr = False

    def feed(self, data: bytes) -> bytes:
        """``data`` with every line ending written as CRLF (or an error under REJECT).

        The result may end with a CR; its LF comes with the next call or :meth:`finish`.
        """
        if not data:
            return b""
        head = b""
        if self.after_cr:
            self.after_cr = False
            if data.startswith(b"\n"):
                # The CRLF was split between two chunks: rare, so the copy is cheap.
                data = data[1:]
            elif self.policy is BareNewlinePolicy.REJECT:
                self._bare("CR")
            head = b"\n"
            if not data:
                return head
        ends_cr = data.endswith(b"\r")
        crlf = data.count(b"\r\n")
        if data.count(b"\n") != crlf or data.count(b"\r") != crlf + ends_cr:
            if self.policy is BareNewlinePolicy.REJECT:
                self._bare("CR or LF")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
            if ends_cr:
                data = data[:-1]  # the trailing CR's LF is owed to the next chunk
        self.after_cr = ends_cr
        return head + data if head else data

    def finish(self) -> bytes:
        """The content ended: the LF still owed to a final CR, if any."""
        if not self.after_cr:
            return b""
        self.after_cr = False
        if self.policy is BareNewlinePolicy.REJECT:
            self._bare("CR")
        return b"\n"

    def _bare(self, what: str) -> None:
        raise LocalProtocolError(f"message content contains a bare {what} (policy REJECT)")


# Where the output stands at a chunk boundary.
_LINE_START, _AFTER_CR, _MID_LINE = 0, 1, 2


class DotStuffer:
    """Turns message content into the DATA wire form, chunk by chunk.

    ``feed(chunk)`` returns the bytes to send for ``chunk``; ``finish()`` returns
    the missing final CRLF (if any) and the terminating ``.`` CRLF.
    """

    __slots__ = ("_endings", "_where")

    def __init__(self, policy: BareNewlinePolicy = BareNewlinePolicy.NORMALISE) -> None:
        self._endings = LineEndings(policy)
        self._where = _LINE_START

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._stuff(self._endings.feed(data if isinstance(data, bytes) else bytes(data)))

    def feed_stuffed(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """A piece of what :func:`stuff` made, passed on as it is.

        The driver stuffs a whole message while it waits for the server (the
        work then overlaps the server's); only where the piece ends is noted,
        so that :meth:`finish` knows whether a CRLF is still owed.
        """
        tail = bytes(data[-1:])
        if tail:
            self._where = _LINE_START if tail == b"\n" else _AFTER_CR if tail == b"\r" else _MID_LINE
        return data

    def _stuff(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        chunk = _double_line_start_dots(chunk)
        if self._where == _LINE_START and chunk.startswith(b"."):
            chunk = b"." + chunk
        elif self._where == _AFTER_CR and chunk.startswith(b"\n."):
            chunk = b"\n." + chunk[1:]
        # Normalised output has no bare LF, so a final LF ends a CRLF (maybe split).
        self._where = _LINE_START if chunk.endswith(b"\n") else _AFTER_CR if chunk.endswith(b"\r") else _MID_LINE
        return chunk

    def finish(self) -> bytes:
        owed = self._endings.finish()
        where, self._where = self._where, _LINE_START
        if owed or where == _LINE_START:
            return owed + b".\r\n"
        return b"\r\n.\r\n"
