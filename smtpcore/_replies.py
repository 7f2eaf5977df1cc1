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

# What a reply may show of the peer's input: printable ASCII (a client that did not
# say SMTPUTF8 expects no UTF-8 back, and no control may reach the wire).
_NOT_SHOWN_RE = re.compile(r"[^\x20-\x7e]")


def shown(text: str, limit: int = 40) -> str:
    """Text built around the peer's input, fit for a reply: printable ASCII, at most
    ``limit`` characters, cut in the middle (its start says what, its end says why).

    So the reply can always be built: a 500-octet argument gets its 5xx, not the
    exception a reply line over 512 octets would raise.
    """
    text = _NOT_SHOWN_RE.sub("?", text)
    if len(text) <= limit:
        return text
    head = (limit - 3) // 2
    return f"{text[:head]}...{text[len(text) - (limit - 3 - head) :]}"


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
        if isinstance(text, str):
            lines: tuple[str, ...] = (text,)
        elif isinstance(text, (bytes, bytearray, memoryview)) or not isinstance(text, Iterable):
            raise LocalProtocolError(f"reply text must be a str or a sequence of str, not {type(text).__name__}")
        else:
            lines = tuple(text)
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
        """Build a reply the parser has already validated (the hot path).

        The slots are filled through their own descriptors, which the frozen
        dataclass leaves working: a third cheaper than ``object.__setattr__``.
        """
        self = object.__new__(cls)
        _set_code(self, code)
        _set_text(self, text)
        _set_enhanced(self, enhanced)
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


_set_code, _set_text, _set_enhanced = (Reply.__dict__[name].__set__ for name in ("code", "text", "enhanced"))


# --- the replies the core writes itself -----------------------------------------------------------
# One table, so the codes can be checked against RFC 5321 §4.2.2/§4.3.2 and RFC 3463 at a glance.
# Replies that depend on the session (the greeting, EHLO) are built by the server.

SYNTAX_UNRECOGNIZED = Reply(500, "Command unrecognized", "5.5.1")
SYNTAX_LINE_TOO_LONG = Reply(500, "Line too long", "5.5.2")
SYNTAX_BAD_BYTES = Reply(500, "Command contains a bare CR, LF or control character", "5.5.2")
SYNTAX_NOT_UTF8 = Reply(500, "Command is not valid UTF-8", "5.5.2")
NOT_IMPLEMENTED = Reply(502, "Command not implemented", "5.5.1")
BAD_SEQUENCE = Reply(503, "Bad sequence of commands", "5.5.1")
HELLO_FIRST = Reply(503, "Send EHLO first", "5.5.1")
LHLO_FIRST = Reply(503, "Send LHLO first", "5.5.1")
MAIL_FIRST = Reply(503, "Send MAIL first", "5.5.1")
RCPT_FIRST = Reply(503, "Send RCPT first", "5.5.1")
NESTED_MAIL = Reply(503, "Sender already given; send RSET to start over", "5.5.1")
NO_VALID_RECIPIENTS = Reply(554, "No valid recipients", "5.5.1")
# RFC 2033 §4.2: in LMTP this "MUST fail with a 503 reply code" (SMTP may say 503 or 554).
NO_VALID_RECIPIENTS_LMTP = Reply(503, "No valid recipients", "5.5.1")
DATA_AFTER_BDAT = Reply(503, "DATA is not allowed after BDAT in the same transaction", "5.5.1")
BINARYMIME_NEEDS_BDAT = Reply(503, "BODY=BINARYMIME requires BDAT, not DATA", "5.5.1")
# XCLIENT_README and XFORWARD_README: "at any time except in the middle of a mail delivery transaction".
TRANSACTION_IN_PROGRESS = Reply(503, "Mail transaction in progress; send RSET first", "5.5.1")
REFUSED_SESSION = Reply(503, "Connection refused; only QUIT is accepted", "5.5.1")
TOO_MANY_RECIPIENTS = Reply(452, "Too many recipients", "4.5.3")
MESSAGE_TOO_BIG = Reply(552, "Message size exceeds fixed maximum message size", "5.3.4")
BARE_NEWLINE = Reply(550, "Message contains a bare CR or LF; use CRLF line endings", "5.6.11")
LINE_TOO_LONG_IN_DATA = Reply(550, "Message contains a line longer than 998 octets", "5.6.0")
NON_ASCII_ADDRESS = Reply(553, "Non-ASCII address needs the SMTPUTF8 parameter", "5.6.7")
STARTTLS_FIRST = Reply(530, "Must issue a STARTTLS command first", "5.7.0")
AUTH_FIRST = Reply(530, "Authentication required", "5.7.0")
ALREADY_TLS = Reply(503, "TLS already active", "5.5.1")
ALREADY_AUTHENTICATED = Reply(503, "Already authenticated", "5.5.1")
AUTH_IN_TRANSACTION = Reply(503, "AUTH is not allowed during a mail transaction", "5.5.1")
AUTH_NEEDS_TLS = Reply(538, "Encryption required for requested authentication mechanism", "5.7.11")
AUTH_UNKNOWN_MECHANISM = Reply(504, "Unrecognized authentication mechanism", "5.5.4")
AUTH_BAD_BASE64 = Reply(501, "Invalid base64 data", "5.5.2")
# A SaslFailure whose words make no reply line (a line break, too long): the exchange still ends.
AUTH_MALFORMED = Reply(501, "Malformed authentication response", "5.5.2")
AUTH_CANCELLED = Reply(501, "Authentication cancelled", "5.0.0")
AUTH_LINE_TOO_LONG = Reply(500, "Authentication response too long", "5.5.6")
# RFC 4954 §6: an application's mechanism failed (it raised): the client may try again.
AUTH_TEMPORARY_FAILURE = Reply(454, "Temporary authentication failure", "4.7.0")
TOO_MANY_ERRORS = Reply(421, "Too many errors; closing connection", "4.7.0")
EARLY_TALKER = Reply(554, "Protocol violation: client sent data before the greeting", "5.5.0")
IMPROPER_PIPELINING = Reply(554, "Protocol violation: client sent more before the reply it must wait for", "5.5.0")
NON_SMTP_COMMAND = Reply(521, "Protocol error: this is an SMTP server", "5.5.1")
# Then the session ends: the chunk's size is unknown, and its octets would be read
# as commands (a filter in front of us that read the line otherwise would have
# passed them as content).
BDAT_UNREADABLE = Reply(501, "Syntax: BDAT <size> [LAST]; closing, as the chunk cannot be told from commands", "5.5.4")
CLOSING = Reply(221, "Bye", "2.0.0")
OK = Reply(250, "OK", "2.0.0")
RSET_OK = Reply(250, "Reset OK", "2.0.0")
HELP_TEXT = Reply(214, "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)", "2.0.0")
VRFY_DEFAULT = Reply(252, "Cannot VRFY user, but will accept message and attempt delivery", "2.5.2")
EXPN_DEFAULT = Reply(502, "EXPN not available", "5.5.1")
# accept() to an EXPN the application was handed (expn_enabled): its positive
# reply, as VRFY's is, since a 502 would say the command it enabled is not there.
EXPN_ACCEPTED = Reply(252, "Cannot expand the list, but will accept message and attempt delivery", "2.5.2")
SENDER_OK = Reply(250, "Sender OK", "2.1.0")
RECIPIENT_OK = Reply(250, "Recipient OK", "2.1.5")
START_DATA = Reply(354, "End data with <CR><LF>.<CR><LF>")
MESSAGE_ACCEPTED = Reply(250, "OK: message accepted", "2.0.0")
READY_FOR_TLS = Reply(220, "Ready to start TLS", "2.0.0")
AUTH_OK = Reply(235, "Authentication successful", "2.7.0")
AUTH_FAILED = Reply(535, "Authentication credentials invalid", "5.7.8")
