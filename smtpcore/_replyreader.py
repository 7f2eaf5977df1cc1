"""Reading server replies (client side): bytes in, :class:`~smtpcore.Reply` out, strictly.

A client that guesses at malformed replies can be steered by whoever controls
the bytes, so this reader accepts exactly the RFC 5321 §4.2 grammar and refuses
everything else with :class:`~smtpcore.RemoteProtocolError`:

* each line is ``code`` then ``-`` (more lines follow), SP or nothing, then
  CRLF, where ``code`` is exactly ``[2-5][0-5][0-9]`` (so ``2500``, ``099``,
  ``250x`` and ``²50`` are all errors, never "about 250");
* every line of a multi-line reply carries the same code;
* the text holds no control character except HT (a bare CR or LF inside a line
  is how a second reply could be hidden in the first);
* each line, the whole reply and its number of lines are bounded by
  :class:`~smtpcore.ClientConfig`, and a line is refused as soon as it passes
  its bound rather than when its CRLF finally arrives.

Lines come from :meth:`ReceiveBuffer.next_line`, which remembers how far it has
searched, so feeding a reply one byte at a time costs linear time.  Only whole
lines are taken from the buffer: whatever follows the last CRLF of a reply stays
there untouched (the STARTTLS code depends on that to discard it).

Enhanced status codes (RFC 2034/3463) are split off into ``Reply.enhanced`` only
when the server advertised ENHANCEDSTATUSCODES and only when the code's class
matches the reply's first digit; otherwise the text is left exactly as sent.
Text is decoded as UTF-8 with replacement characters: a reply's text is for
humans and logs, and RFC 6531 servers may send UTF-8 in it.
"""

from __future__ import annotations

import re

from ._config import ClientConfig
from ._errors import RemoteProtocolError
from ._receivebuffer import OVERLONG, ReceiveBuffer
from ._replies import Reply

__all__ = ["ReplyReader"]

# RFC 5321 §4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF )
#                             Reply-code [ SP textstring ] CRLF
# (The CRLF has already been removed by the buffer.)
_LINE_RE = re.compile(rb"([2-5][0-5][0-9])(?:([ -])(.*))?", re.DOTALL)
# textstring = 1*(%d09 / %d32-126); UTF-8 is tolerated (RFC 6531), controls are not.
_BAD_TEXT_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A whole reply in one line, the usual case: a code, then nothing or SP and clean text.
# It is the general path's last line with its text check folded in; a line that does not
# match it goes the general way, which decides.  (No bound is at stake: the line is within
# max_reply_line, which max_reply_size is at least, and max_reply_lines is at least 1.)
_ONE_LINE_RE = re.compile(rb"([2-5][0-5][0-9])(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
# RFC 3463 §2: class "." subject "." detail, then a space before the text (or the end).
_ENHANCED_RE = re.compile(r"([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |$)")


def _show(line: bytes) -> str:
    return repr(line[:60]) + ("..." if len(line) > 60 else "")


class ReplyReader:
    """Assembles replies from a :class:`ReceiveBuffer`, one line at a time.

    ``enhanced_status_codes`` is set by the connection once the EHLO reply
    advertised ENHANCEDSTATUSCODES, and cleared when the session starts over.
    """

    __slots__ = ("_code", "_lines", "_size", "config", "enhanced_status_codes")

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.enhanced_status_codes = False
        self._code: bytes | None = None
        self._lines: list[bytes] = []
        self._size = 0

    @property
    def in_reply(self) -> bool:
        """Some lines of a reply have been read but not its last one."""
        return self._code is not None

    def reset(self) -> None:
        """Forget a partly read reply (STARTTLS: nothing before TLS is kept)."""
        self._code = None
        self._lines = []
        self._size = 0

    def next_reply(self, buffer: ReceiveBuffer) -> Reply | None:
        """The next complete reply, or ``None`` until more bytes arrive.

        Raises :class:`RemoteProtocolError` for anything outside the grammar or
        the bounds; the buffer then holds only bytes after the offending line.
        """
        config = self.config
        while True:
            line = buffer.next_line(config.max_reply_line)
            if line is None:
                if buffer.skipping:
                    raise RemoteProtocolError(f"reply line longer than {config.max_reply_line} octets")
                return None
            if line is OVERLONG:
                raise RemoteProtocolError(f"reply line longer than {config.max_reply_line} octets")
            assert isinstance(line, bytes)
            if self._code is None:
                whole = _ONE_LINE_RE.fullmatch(line)
                if whole is not None:
                    return self._reply(whole.group(1), [line[4:].decode("utf-8", "replace")])
            match = _LINE_RE.fullmatch(line)
            if match is None:
                raise RemoteProtocolError(f"malformed reply line {_show(line)}")
            code, separator, text = match.group(1), match.group(2), match.group(3) or b""
            if self._code is not None and code != self._code:
                raise RemoteProtocolError(
                    f"reply line {_show(line)} does not repeat the code {self._code.decode()} of its first line"
                )
            if _BAD_TEXT_RE.search(text):
                raise RemoteProtocolError(f"reply line {_show(line)} contains a control character")
            self._size += len(line) + 2
            if self._size > config.max_reply_size:
                raise RemoteProtocolError(f"reply longer than {config.max_reply_size} octets")
            if len(self._lines) >= config.max_reply_lines:
                raise RemoteProtocolError(f"reply has more than {config.max_reply_lines} lines")
            self._code = code
            self._lines.append(text)
            if separator != b"-":
                return self._finish()

    def _finish(self) -> Reply:
        code = self._code
        assert code is not None
        texts = [raw.decode("utf-8", "replace") for raw in self._lines]
        self.reset()
        return self._reply(code, texts)

    def _reply(self, code: bytes, texts: list[str]) -> Reply:
        enhanced: str | None = None
        if self.enhanced_status_codes:
            match = _ENHANCED_RE.match(texts[0])
            if match is not None and match.group(1)[0] == chr(code[0]):
                enhanced = match.group(1)
                # RFC 2034 §3 puts the code on every line of a multi-line reply.
                prefix, cut = enhanced + " ", len(enhanced) + 1
                texts = [t[cut:] if t.startswith(prefix) else ("" if t == enhanced else t) for t in texts]
        return Reply._unchecked(int(code), tuple(texts), enhanced)
