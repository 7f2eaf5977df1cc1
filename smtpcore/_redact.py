"""What a transcript may show of the client's bytes: the same bytes, SASL secrets replaced.

A transcript records reads, and a read is not a line: a client's ``AUTH PLAIN
<response>`` may arrive in two reads split anywhere, and a pipelining client may
send ``AUTH LOGIN``, its user name and its password in one read, before the
server has said a word.  Redacting each read on its own leaked the secret in
both cases, so the redactor follows the line under way from one read to the
next, and keeps the state of the connection out of it: the caller says whether
the server was awaiting a SASL response when the read arrived.

It errs one way only.  Everything after an ``AUTH`` line in the same read is
hidden, as it would be SASL responses if the server takes the ``AUTH`` (a client
that pipelines commands after it loses them from the transcript, never its
secret), and a message line that happens to read ``auth <word> ...`` is hidden
as if it were a command.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "Redactor"]

REDACTED = b"<redacted>"

# The verb and the mechanism of an AUTH line, up to its initial response
# ("AUTH" SP sasl-mech [SP initial-response], RFC 4954 §4; the case of neither
# matters).  Blanks before the verb, and runs of spaces, tabs, NULs or other
# control octets between the words, are allowed too: the server refuses such a
# line, but the client has sent its secret all the same.  (Not LF, which ends a
# line, as the server reads lines, nor CR, which may be the start of CRLF.)
_GAP = rb"[\x00-\x09\x0b\x0c\x0e-\x20]"
_WORD = rb"[^\x00-\x09\x0b\x0c\x0e-\x20]"
_AUTH_HEAD = re.compile(rb"(?i)[ \t]*AUTH" + _GAP + rb"+" + _WORD + rb"+" + _GAP + rb"+")
# A whole AUTH line without an initial response: the exchange starts after it.
_AUTH_ALONE = re.compile(rb"(?i)[ \t]*AUTH" + _GAP + rb"+" + _WORD + rb"+" + _GAP + rb"*")
# The start of a line that may still turn out an AUTH line with a response.
_MAY_BE_AUTH = re.compile(rb"(?i)[ \t]*(?:A(?:U(?:T(?:H(?:" + _GAP + rb"+" + _WORD + rb"*)?)?)?)?)?")
# Where the next line that may be an AUTH line begins (an A in any case, or a
# blank before it), after the LF that ends the line before (alone or in CRLF).
_NEXT_A_LINE = re.compile(rb"\n[Aa \t]")
# One whole line of a read that is secret from its start: its text, then its end kept.
_SECRET_LINE = re.compile(rb"[^\n]*?(\r?\n)")
# A line start kept undecided no longer than this: past it (a mechanism name of
# hundreds of octets) the rest of the line is hidden.  SASL names are at most 20
# characters (RFC 4422 §3.1).
_MAX_UNDECIDED = 256


class Redactor:
    """Client bytes in, read by read and in order; the same bytes out, secrets replaced."""

    __slots__ = ("_after_cr", "_auth_line", "_head", "_held_cr", "_hidden", "_hidden_head", "_marked")

    def __init__(self) -> None:
        self._after_cr = False  # the last read ended with CR: an LF first ends the line
        self._held_cr = False  # ... a CR of a secret, not shown unless that LF comes
        self._start_line()

    def _start_line(self) -> None:
        # The start of the line under way while it may still become an AUTH line
        # with a response; None once that is decided.
        self._head: bytes | None = b""
        self._hidden = False  # the rest of the line under way is secret
        self._marked = False  # ... and its marker is out already
        self._auth_line = False  # the line under way is an AUTH command
        # The start of a line hidden from its start as part of a SASL exchange: it
        # may still be an AUTH command (a read hid "AU", the next brings "TH LOGIN"),
        # whose responses after it must be hidden too.  Capped, like _head.
        self._hidden_head: bytes | None = None

    def redact(self, data: bytes, in_exchange: bool) -> bytes:
        """``data`` with SASL secrets replaced by ``<redacted>``, line endings kept.

        ``in_exchange``: the server was awaiting a SASL response when ``data``
        arrived, so every line of it is secret.
        """
        if not data:
            return data
        out: list[bytes] = []
        data, hide_all = self._end_split_crlf(data, in_exchange, out)
        pos, size = 0, len(data)
        while pos < size:
            if self._head == b"" and not self._hidden:  # a line starts at pos
                if hide_all:
                    # Every line from here is secret: marked in one go, not line by line.
                    rest = data[pos:]
                    whole = rest.rfind(b"\n") + 1
                    out.append(_SECRET_LINE.sub(REDACTED + rb"\1", rest[:whole]))
                    partial = rest[whole:]
                    if partial:
                        self._continue(partial, hide_all, out, partial=True)
                    break
                if data[pos] not in b"Aa \t":
                    # Neither this line nor any up to the next that starts with an A
                    # can be an AUTH line: shown as they are, in one piece (message
                    # content passes here, searched at C speed, not split into lines).
                    found = _NEXT_A_LINE.search(data, pos)
                    if found is None:
                        out.append(data[pos:])
                        if not data.endswith(b"\n"):
                            self._head = None  # the line under way is not an AUTH line
                        break
                    out.append(data[pos : found.start() + 1])
                    pos = found.start() + 1
            end = data.find(b"\n", pos)
            if end < 0:
                self._continue(data[pos:], hide_all, out, partial=True)
                break
            text_end = end - 1 if end > pos and data[end - 1] == 13 else end  # (13: the CR of a CRLF)
            self._continue(data[pos:text_end], hide_all, out)
            hide_all |= self._end_line(self._head)
            out.append(data[text_end : end + 1])
            pos = end + 1
        return b"".join(out)

    def _end_split_crlf(self, data: bytes, hide_all: bool, out: list[bytes]) -> tuple[bytes, bool]:
        """``data`` after the LF that completes a CRLF the last read began, and
        whether the rest of the read is secret (the line it ended was AUTH)."""
        held, self._held_cr = self._held_cr, False
        if self._after_cr and data[:1] == b"\n":
            hide_all |= self._end_line(self._head[:-1] if self._head else None)
            out.append(b"\r\n" if held else b"\n")
            data = data[1:]
        self._after_cr = data.endswith(b"\r")
        return data, hide_all

    def _continue(self, piece: bytes, hide_all: bool, out: list[bytes], partial: bool = False) -> None:
        """Show ``piece``, the next octets of the line under way, as far as it is not secret.

        ``partial``: the read ends inside the line.
        """
        if hide_all and not self._hidden:
            self._hidden = True
            self._hidden_head = self._head
            self._head = None
            # Every line of a SASL exchange is marked, even an empty one.
            out.append(REDACTED)
            self._marked = True
        if self._hidden:
            if self._hidden_head is not None and len(self._hidden_head) <= _MAX_UNDECIDED:
                self._hidden_head += piece[: _MAX_UNDECIDED + 1 - len(self._hidden_head)]
            self._hide(piece, out, partial)
            return
        head = self._head
        if head is None:  # decided: not an AUTH line
            out.append(piece)
            return
        line = head + piece
        auth = _AUTH_HEAD.match(line)
        if auth is not None:
            secret_from = max(auth.end(), len(head))
            out.append(line[len(head) : secret_from])
            self._auth_line = self._hidden = True
            self._head = None
            self._hide(line[secret_from:], out, partial)
        elif _MAY_BE_AUTH.fullmatch(line) is None:
            out.append(piece)
            self._head = None
        elif len(line) > _MAX_UNDECIDED:
            self._hidden = True
            self._head = None
            self._hide(piece, out, partial)
        else:
            out.append(piece)
            self._head = line

    def _end_line(self, undecided: bytes | None) -> bool:
        """The line under way has ended: True if it was an AUTH command.

        ``undecided`` is the line, if it was still undecided when it ended.
        """
        auth_line = self._auth_line or (undecided is not None and _AUTH_ALONE.fullmatch(undecided) is not None)
        hidden = self._hidden_head
        if hidden is not None and not auth_line:
            hidden = hidden.removesuffix(b"\r")  # (the CR of a CRLF split between reads)
            auth_line = _AUTH_HEAD.match(hidden) is not None or _AUTH_ALONE.fullmatch(hidden) is not None
        self._start_line()
        return auth_line

    def _hide(self, secret: bytes, out: list[bytes], partial: bool) -> None:
        if secret and not self._marked:
            out.append(REDACTED)
            self._marked = True
        if partial and secret.endswith(b"\r"):
            # Maybe the first half of the CRLF that the next read completes: shown
            # with its LF if that comes, so that the transcript still shows where
            # the line ends, and not at all if it does not (it was the secret's).
            self._held_cr = True
