"""SMTP replies: the one value that flows from server to client.

A reply is a three-digit code, optionally an RFC 3463 enhanced status code, and
one or more lines of text (RFC 5321 §4.2).  The same class is what a server
application sends and what a client application receives, so both roles
validate and serialise replies in exactly one place.

The enhanced code is stored apart from the text and written only when the
server advertised ENHANCEDSTATUSCODES (RFC 2034): the application never has to
know whether the extension is on.  Every reply the core itself writes comes from
this module, with a correct enhanced code, so the codes can be reviewed in one
table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ._errors import LocalProtocolError

__all__ = ["Reply"]

# RFC 5321 §4.2: Reply-code = %x32-35 %x30-35 %x30-39.  Codes with a second
# digit above 5 are not SMTP, so neither side may produce or accept them.
_CODE_RE = re.compile(r"[2-5][0-5][0-9]")
# RFC 3463 §2: class "." subject "." detail; subject 1-3 digits, detail 1-3.
ENHANCED_RE = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})")
# RFC 5321 §4.2: textstring = 1*(%d09 / %d32-126).  RFC 6531 lets the text carry
# UTF-8 too; what must never appear is CR, LF or another control character,
# because that is how a reply line could be forged.
_FORBIDDEN_TEXT_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including the code and
# CRLF.  We leave room for "ddd-x.xxx.xxx " (14 octets) and CRLF.
MAX_REPLY_TEXT = 512 - 14 - 2


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: ``Reply(250, "OK")`` or ``Reply(550, "No such user", "5.1.1")``.

    ``text`` may be one string or a sequence of lines (a multi-line reply).
    ``enhanced`` is the RFC 3463 code without the text, such as ``"2.1.5"``; its
    first digit must match the reply code's.
    """

    code: int
    text: tuple[str, ...]
    enhanced: str | None

    def __init__(self, code: int, text: str | Iterable[str] = "", enhanced: str | None = None) -> None:
        if isinstance(code, bool) or not isinstance(code, int) or not _CODE_RE.fullmatch(str(code)):
            raise LocalProtocolError(f"reply code must be an int from 200 to 559, not {code!r}")
        lines = (text,) if isinstance(text, str) else tuple(text)
        if not lines:
            lines = ("",)
        for line in lines:
            if not isinstance(line, str):
                raise LocalProtocolError(f"reply text must be str, not {type(line).__name__}")
            if _FORBIDDEN_TEXT_RE.search(line):
                raise LocalProtocolError(
                    f"reply text {line!r} contains a control character; split lines into a sequence instead"
                )
            if len(line.encode("utf-8")) > MAX_REPLY_TEXT:
                raise LocalProtocolError(f"reply line longer than {MAX_REPLY_TEXT} octets; split it into several lines")
        if enhanced is not None:
            match = ENHANCED_RE.fullmatch(enhanced)
            if match is None:
                raise LocalProtocolError(f"enhanced status code must look like '2.1.0', not {enhanced!r}")
            if match.group(1) != str(code)[0]:
                raise LocalProtocolError(f"enhanced code {enhanced} does not match the class of reply {code}")
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "text", lines)
        object.__setattr__(self, "enhanced", enhanced)

    @classmethod
    def _unchecked(cls, code: int, text: tuple[str, ...], enhanced: str | None) -> Reply:
        """Build a reply the parser has already validated (the hot path)."""
        self = object.__new__(cls)
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "enhanced", enhanced)
        return self

    @property
    def is_positive(self) -> bool:
        """2xx: the command succeeded."""
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        """3xx: the server wants more (354 after DATA, 334 during AUTH)."""
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        """4xx: failed for now; the same command may succeed later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5xx: failed; repeating the command as it is will fail again."""
        return self.code >= 500

    @property
    def message(self) -> str:
        """The text of every line joined with newlines, for humans and logs."""
        return "\n".join(self.text)

    def to_bytes(self, enhanced_status_codes: bool = True) -> bytes:
        """Serialise as the wire form, with or without the enhanced code."""
        code = str(self.code)
        prefix = f"{self.enhanced} " if (enhanced_status_codes and self.enhanced) else ""
        last = len(self.text) - 1
        out = []
        for index, line in enumerate(self.text):
            sep = " " if index == last else "-"
            body = prefix + line
            # "250\r\n" is a complete reply; a trailing space after the code is not needed.
            out.append(f"{code}{sep}{body}\r\n" if body or sep == "-" else f"{code}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        return f"{self.code} {prefix}{self.message}"
