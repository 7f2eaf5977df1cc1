"""The MAIL and RCPT parameter registry: one row per ESMTP parameter.

Every parameter smtpcore knows is one :class:`ParamSpec` row in
:data:`PARAMETERS`: its keyword, the command it belongs to, the EHLO keyword that
must have been advertised, the field of :class:`MailParams` / :class:`RcptParams`
it fills, and the functions that parse it from the wire and format it back.
The server parses with the table, the client serialises with it, so adding an
extension is one row here plus its tests.

Parameters outside the table are never guessed at: the server refuses them
with 555 unless the application listed the keyword as an extra extension, in
which case they arrive untouched in ``extra``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from . import _abnf
from ._errors import LocalProtocolError
from ._replies import Reply, shown

__all__ = [
    "PARAMETERS",
    "DeliverBy",
    "MailParams",
    "ParamError",
    "ParamSpec",
    "RcptParams",
    "format_params",
    "parse_params",
    "required_extensions",
    "xtext_decode",
    "xtext_encode",
]

Command = Literal["MAIL", "RCPT"]
BodyType = Literal["7BIT", "8BITMIME", "BINARYMIME"]


class ParamError(ValueError):
    """A parameter the server must refuse; ``reply`` is the reply to send."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.message)
        self.reply = reply


def _syntax(text: str) -> ParamError:
    return ParamError(Reply(501, text, "5.5.4"))


# --- xtext (RFC 3461 §4) --------------------------------------------------------------------------

_XTEXT_HEX_RE = re.compile(r"\+([0-9A-Fa-f]{2})")


def xtext_encode(text: str) -> str:
    """Encode as xtext: "+", "=" and anything outside ``!``..``~`` become ``+XX``.

    Non-ASCII text is encoded octet by octet from its UTF-8 form.
    """
    try:
        octets = text.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{text!r} is not valid Unicode (it has a lone surrogate)") from None
    out = []
    for octet in octets:
        if 33 <= octet <= 126 and octet not in (0x2B, 0x3D):
            out.append(chr(octet))
        else:
            out.append(f"+{octet:02X}")
    return "".join(out)


def xtext_decode(value: str) -> str:
    """Decode xtext strictly; raise :class:`ParamError` if it is not xtext."""
    if not _abnf.XTEXT_RE.fullmatch(value):
        raise _syntax("Malformed xtext value")
    raw = _XTEXT_HEX_RE.sub(lambda m: chr(int(m.group(1), 16)), value).encode("latin-1")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _syntax("xtext value is not UTF-8") from None
    # ENVID is printable ASCII and ORCPT / AUTH= carry addresses (RFC 3461 §4.2,
    # §4.4; RFC 4954 §5): a control character decoded from "+0D" or "+00" (or a C1
    # control, a line separator, a bidi override: what every name refuses) has no
    # business there and would travel on into DSNs and headers.
    if _abnf.CONTROL_RE.search(text):
        raise _syntax("xtext value decodes to a control character")
    return text


# --- typed values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliverBy:
    """RFC 2852 ``BY=<seconds>;<mode>[T]``: deliver within ``seconds`` or (mode R) return."""

    seconds: int
    mode: Literal["N", "R"]
    trace: bool = False

    def __post_init__(self) -> None:
        # RFC 2852 §4: by-time = [ "-" / "+" ] 1*9digit; what a server would refuse with 501.
        seconds = self.seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not -999_999_999 <= seconds <= 999_999_999:
            raise ValueError(f"DeliverBy.seconds must be an int of at most nine digits, not {seconds!r}")
        if self.mode not in ("N", "R"):
            raise ValueError(f"DeliverBy.mode must be 'N' or 'R', not {self.mode!r}")
        if not isinstance(self.trace, bool):
            raise ValueError(f"DeliverBy.trace must be True or False, not {self.trace!r}")


@dataclass(frozen=True, slots=True)
class MailParams:
    """The parameters of one MAIL command; ``None``/``False`` means absent."""

    size: int | None = None
    body: BodyType | None = None
    smtputf8: bool = False
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    auth: str | None = None
    requiretls: bool = False
    mt_priority: int | None = None
    by: DeliverBy | None = None
    hold_for: int | None = None
    hold_until: str | None = None
    #: Parameters of extensions the application added, as (KEYWORD, value or None).
    extra: tuple[tuple[str, str | None], ...] = ()

    def __post_init__(self) -> None:
        # The parser only builds values in range; these catch an application's
        # mistakes before a client sends SIZE=-1 or MT-PRIORITY=42.
        for name, low, high in _MAIL_RANGES:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
            ):
                raise ValueError(f"MailParams.{name} must be an int from {low} to {high}, not {value!r}")
        # DSN values as a server reads them (RFC 3461): what it would refuse with 501
        # is the application's mistake, and fails here rather than as a refused message.
        if self.ret is not None and self.ret not in ("FULL", "HDRS"):
            raise ValueError(f"MailParams.ret must be 'FULL' or 'HDRS', not {self.ret!r}")
        if self.envid is not None and not _reads_back(_envid, xtext_encode, self.envid):
            raise ValueError(f"MailParams.envid must be US-ASCII text with no control characters, not {self.envid!r}")
        # The rest as the server's parser reads them too.  The client compares BODY
        # in capitals, so "binarymime" would pass its BINARYMIME checks unseen.
        if self.body is not None and self.body not in ("7BIT", "8BITMIME", "BINARYMIME"):
            raise ValueError(f"MailParams.body must be '7BIT', '8BITMIME' or 'BINARYMIME', not {self.body!r}")
        if self.smtputf8 is not True and self.smtputf8 is not False:
            raise ValueError(f"MailParams.smtputf8 must be True or False, not {self.smtputf8!r}")
        if self.requiretls is not True and self.requiretls is not False:
            raise ValueError(f"MailParams.requiretls must be True or False, not {self.requiretls!r}")
        if self.auth is not None and not _reads_back(_xtext, xtext_encode, self.auth):
            raise ValueError(f"MailParams.auth must be a mailbox or '<>' with no control characters, not {self.auth!r}")
        if self.by is not None and not isinstance(self.by, DeliverBy):
            raise ValueError(f"MailParams.by must be a DeliverBy, not {self.by!r}")
        if self.hold_until is not None and not _reads_back(_hold_until, str, self.hold_until):
            raise ValueError(
                f"MailParams.hold_until must be an RFC 3339 date-time such as '2026-12-24T18:00:00Z', "
                f"not {self.hold_until!r}"
            )


# SIZE is 1*20DIGIT (RFC 1870), MT-PRIORITY one digit and a sign (RFC 6710), HOLDFOR 1*9DIGIT (RFC 4865).
_MAIL_RANGES = (("size", 0, 10**20 - 1), ("mt_priority", -9, 9), ("hold_for", 0, 999_999_999))


@dataclass(frozen=True, slots=True)
class RcptParams:
    """The parameters of one RCPT command; each recipient keeps its own."""

    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None
    rrvs: str | None = None
    extra: tuple[tuple[str, str | None], ...] = ()

    def __post_init__(self) -> None:
        # As MailParams checks its own: the values a server would refuse (RFC 3461).
        notify = self.notify
        if notify is not None and not (
            isinstance(notify, tuple)
            and all(isinstance(item, str) for item in notify)
            and _reads_back(_notify, ",".join, notify, lambda parsed: parsed == tuple(i.upper() for i in notify))
        ):
            raise ValueError(
                "RcptParams.notify must be ('NEVER',) or a tuple of distinct 'SUCCESS', 'FAILURE', 'DELAY', "
                f"not {notify!r}"
            )
        orcpt = self.orcpt
        if orcpt is not None and not (
            isinstance(orcpt, tuple)
            and len(orcpt) == 2
            and all(isinstance(item, str) for item in orcpt)
            and _reads_back(_orcpt, _format_orcpt, orcpt)
        ):
            raise ValueError(
                f"RcptParams.orcpt must be (address type, address), such as ('rfc822', 'user@example.com'), "
                f"the type a keyword and the address with no control characters, not {orcpt!r}"
            )
        if self.rrvs is not None and not _reads_back(_rrvs, str, self.rrvs):
            raise ValueError(
                f"RcptParams.rrvs must be an RFC 3339 date-time such as '2026-12-24T18:00:00Z', "
                f"optionally followed by ';C' or ';R', not {self.rrvs!r}"
            )


def _reads_back(
    parse: Callable[[str | None], Any],
    format: Callable[[Any], str],
    value: Any,
    same: Callable[[Any], bool] | None = None,
) -> bool:
    """Whether ``value``, written as a client writes it, is read back as itself by the server's parser."""
    try:
        parsed = parse(format(value))
    except (UnicodeError, LocalProtocolError):
        return True  # a lone surrogate: left to the writer, whose error names it
    except (ParamError, ValueError):
        return False
    return same(parsed) if same is not None else parsed == value


# --- per-parameter parse and format functions -----------------------------------------------------


def _flag(value: str | None) -> bool:
    if value is not None:
        raise _syntax("This parameter takes no value")
    return True


def _format_flag(value: Any) -> str | None:
    return None


def _number(value: str | None, maximum: int = 10**20 - 1) -> int:
    if value is None or not _abnf.NUMBER_RE.fullmatch(value):
        raise _syntax("Value must be ASCII digits")
    number = int(value)
    if number > maximum:
        raise _syntax("Value out of range")
    return number


def _choice(*allowed: str) -> Callable[[str | None], str]:
    def parse(value: str | None) -> str:
        if value is None:
            raise _syntax("Parameter needs a value")
        # ASCII only: str.upper() maps a dotless i (U+0131) to "I" and a long s
        # (U+017F) to "S", and "8bitm\u0131me" is not 8BITMIME.
        upper = value.upper() if value.isascii() else value
        if upper not in allowed:
            raise ParamError(Reply(504, f"Value {shown(value)} not supported", "5.5.4"))
        return upper

    return parse


def _xtext(value: str | None) -> str:
    if value is None:
        raise _syntax("Parameter needs a value")
    return xtext_decode(value)


def _envid(value: str | None) -> str:
    # RFC 3461 §4.4: the envelope identifier is printable US-ASCII (Postfix answers
    # 501 to anything else); only ORCPT and AUTH= may carry UTF-8 addresses.
    text = _xtext(value)
    if not text.isascii():
        raise _syntax("ENVID must be US-ASCII text (RFC 3461 §4.4)")
    return text


def _mt_priority(value: str | None) -> int:
    # RFC 6710 §3: priority-value = [ "-" / "+" ] DIGIT, from -9 to 9.
    if value is None or not re.fullmatch(r"[+-]?[0-9]", value):
        raise _syntax("MT-PRIORITY must be an integer from -9 to 9")
    return int(value)


def _deliver_by(value: str | None) -> DeliverBy:
    # RFC 2852 §4: by-value = by-time ";" by-mode [ by-trace ]
    #   by-time = [ "-" / "+" ] 1*9digit ; by-mode = "N" / "R" ; by-trace = "T"
    match = re.fullmatch(r"([+-]?[0-9]{1,9});([NRnr])([Tt]?)", value or "")
    if match is None:
        raise _syntax("BY must look like 120;R or 120;NT")
    mode: Literal["N", "R"] = "N" if match.group(2).upper() == "N" else "R"
    return DeliverBy(int(match.group(1)), mode, bool(match.group(3)))


def _format_deliver_by(value: DeliverBy) -> str:
    return f"{value.seconds};{value.mode}{'T' if value.trace else ''}"


# RFC 3339 date-time, as RFC 4865 HOLDUNTIL and RFC 7293 RRVS use it.
_DATE_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"


def _hold_until(value: str | None) -> str:
    if value is None or not re.fullmatch(_DATE_TIME, value):
        raise _syntax("HOLDUNTIL must be an RFC 3339 date-time")
    return value


def _rrvs(value: str | None) -> str:
    # RFC 7293 §3: rrvs-param = "RRVS=" date-time [ ";" ( "C" / "R" ) ]
    if value is None or not re.fullmatch(rf"{_DATE_TIME}(?:;[CRcr])?", value):
        raise _syntax("RRVS must be an RFC 3339 date-time, optionally ;C or ;R")
    return value


def _notify(value: str | None) -> tuple[str, ...]:
    # RFC 3461 §4.1: "NEVER" alone, or a comma list of SUCCESS, FAILURE, DELAY.
    # ASCII only, as in _choice: "\u017fuccess".upper() is "SUCCESS".
    items = tuple(item.upper() if item.isascii() else item for item in (value or "").split(","))
    if items == ("NEVER",):
        return items
    if not items or len(set(items)) != len(items) or not set(items) <= {"SUCCESS", "FAILURE", "DELAY"}:
        raise _syntax("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    return items


def _orcpt(value: str | None) -> tuple[str, str]:
    # RFC 3461 §4.2: orcpt-parameter = "ORCPT=" addr-type ";" xtext
    addr_type, semicolon, address = (value or "").partition(";")
    if not semicolon or not _abnf.ESMTP_KEYWORD_RE.fullmatch(addr_type):
        raise _syntax("ORCPT must look like rfc822;user@example.com")
    if addr_type.lower() == "utf-8":
        return (addr_type, _utf8_address_decode(address))
    return (addr_type, xtext_decode(address))


def _format_orcpt(value: tuple[str, str]) -> str:
    addr_type, address = value
    if addr_type.lower() == "utf-8":
        return f"{addr_type};{_utf8_address_encode(address)}"
    return f"{addr_type};{xtext_encode(address)}"


# RFC 6533 §3: a "utf-8" address is not xtext.  It writes "\x{HEX}" for a character
# outside QCHAR (printable ASCII but "+", "=" and "\"): utf-8-addr-xtext for anything
# non-ASCII, utf-8-addr-unitext with raw UTF-8 where SMTPUTF8 is in use (the
# parameter's own check lets UTF-8 through only then).  "+XX" is read as well, as
# RFC 3461's xtext: a sender that encodes every addr-type alike writes it, and a
# "+" cannot otherwise appear.
_UTF8_ADDRESS_RE = re.compile(
    r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\x\{[0-9A-Fa-f]{1,6}\}|\+[0-9A-Fa-f]{2})*"
)
# One pass over the encoded form: "\x{HEX}" is a character, "+XX" an octet of the
# UTF-8 (so "+C3+BC" is one "ü").  One pass, so that what one decodes to is never
# read again ("+5Cx{41}" is "\x{41}", not "A").
_ENCODED_RE = re.compile(rb"\\x\{([0-9A-Fa-f]{1,6})\}|\+([0-9A-Fa-f]{2})")
_QCHAR_RE = re.compile(r"[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]")


def _decoded(match: re.Match[bytes]) -> bytes:
    code, octet = match.groups()
    if octet is not None:
        return bytes((int(octet, 16),))
    return chr(int(code, 16)).encode("utf-8")  # ValueError past U+10FFFF, UnicodeError for a surrogate


def _utf8_address_decode(text: str) -> str:
    if not _UTF8_ADDRESS_RE.fullmatch(text):
        raise _syntax("Malformed utf-8 ORCPT address (RFC 6533: \\x{HEX} for + = \\ and controls)")
    try:
        decoded = _ENCODED_RE.sub(_decoded, text.encode("utf-8")).decode("utf-8")
    except UnicodeError:  # a surrogate, or "+XX" octets that are not UTF-8
        raise _syntax("utf-8 ORCPT address is not UTF-8") from None
    except ValueError:  # past U+10FFFF
        raise _syntax("utf-8 ORCPT address names no Unicode character") from None
    if _abnf.CONTROL_RE.search(decoded):  # (as in xtext_decode: what every name refuses)
        raise _syntax("utf-8 ORCPT address decodes to a control character")
    return decoded


def _utf8_address_encode(address: str) -> str:
    """utf-8-addr-xtext: ASCII only, so it is valid with or without SMTPUTF8."""
    return "".join(char if _QCHAR_RE.fullmatch(char) else f"\\x{{{ord(char):X}}}" for char in address)


# --- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One ESMTP parameter: where it goes, what it needs, how it reads and writes."""

    keyword: str
    command: Command
    extension: str
    field: str
    parse: Callable[[str | None], Any]
    format: Callable[[Any], str | None] = str
    rfc: str = ""


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("SIZE", "MAIL", "SIZE", "size", _number, rfc="RFC 1870"),
    ParamSpec("BODY", "MAIL", "8BITMIME", "body", _choice("7BIT", "8BITMIME", "BINARYMIME"), rfc="RFC 6152, 3030"),
    ParamSpec("SMTPUTF8", "MAIL", "SMTPUTF8", "smtputf8", _flag, _format_flag, rfc="RFC 6531"),
    ParamSpec("RET", "MAIL", "DSN", "ret", _choice("FULL", "HDRS"), rfc="RFC 3461"),
    ParamSpec("ENVID", "MAIL", "DSN", "envid", _envid, xtext_encode, rfc="RFC 3461"),
    ParamSpec("AUTH", "MAIL", "AUTH", "auth", _xtext, xtext_encode, rfc="RFC 4954"),
    ParamSpec("REQUIRETLS", "MAIL", "REQUIRETLS", "requiretls", _flag, _format_flag, rfc="RFC 8689"),
    ParamSpec("MT-PRIORITY", "MAIL", "MT-PRIORITY", "mt_priority", _mt_priority, rfc="RFC 6710"),
    ParamSpec("BY", "MAIL", "DELIVERBY", "by", _deliver_by, _format_deliver_by, rfc="RFC 2852"),
    ParamSpec("HOLDFOR", "MAIL", "FUTURERELEASE", "hold_for", lambda v: _number(v, 999_999_999), rfc="RFC 4865"),
    ParamSpec("HOLDUNTIL", "MAIL", "FUTURERELEASE", "hold_until", _hold_until, rfc="RFC 4865"),
    ParamSpec("NOTIFY", "RCPT", "DSN", "notify", _notify, ",".join, rfc="RFC 3461"),
    ParamSpec("ORCPT", "RCPT", "DSN", "orcpt", _orcpt, _format_orcpt, rfc="RFC 3461"),
    ParamSpec("RRVS", "RCPT", "RRVS", "rrvs", _rrvs, rfc="RFC 7293"),
)

_BY_KEYWORD: Mapping[str, Mapping[str, ParamSpec]] = {
    command: {spec.keyword: spec for spec in PARAMETERS if spec.command == command} for command in ("MAIL", "RCPT")
}
_BY_FIELD: Mapping[tuple[str, str], ParamSpec] = {(spec.command, spec.field): spec for spec in PARAMETERS}

_NO_MAIL_PARAMS = MailParams()
_NO_RCPT_PARAMS = RcptParams()

#: Extra extensions a BODY value needs beyond 8BITMIME.
_BODY_NEEDS = {"BINARYMIME": "BINARYMIME"}

# What an unknown or unusable parameter gets (RFC 5321 §4.1.1.11).
_UNKNOWN = "Parameter {} not recognized or not implemented"


def parse_params(
    command: Command,
    words: Iterable[str],
    extensions: frozenset[str],
    extra_keywords: frozenset[str] = frozenset(),
    utf8: bool = False,
) -> MailParams | RcptParams:
    """Parse the ``KEY[=value]`` words after a MAIL or RCPT path (server side).

    ``extensions`` is the set of EHLO keywords this session advertised (upper
    case); ``extra_keywords`` the parameter keywords the application handles
    itself.  ``utf8`` lets a value hold UTF-8 (RFC 6531 §3.3): for RCPT, pass
    whether the transaction's MAIL had SMTPUTF8; for MAIL, whether SMTPUTF8 was
    advertised, and a UTF-8 value is then taken only if this MAIL also carries
    the SMTPUTF8 parameter (§3.4), which may come after it on the line.
    Raises :class:`ParamError` carrying the reply to send.
    """
    if not words:
        # No parameters (most RCPTs, a bare MAIL): what the loop would build,
        # and frozen, so one instance serves every command.
        return _NO_MAIL_PARAMS if command == "MAIL" else _NO_RCPT_PARAMS
    values: dict[str, Any] = {}
    extra: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    specs = _BY_KEYWORD[command]
    value_re = _abnf.ESMTP_VALUE_UTF8_RE if utf8 else _abnf.ESMTP_VALUE_RE
    # A MAIL may hold UTF-8 values only with its own SMTPUTF8: the first such word, to refuse it by.
    justify_utf8 = utf8 and command == "MAIL"
    utf8_word = None
    for word in words:
        keyword, equals, value = word.partition("=")
        if not _abnf.ESMTP_KEYWORD_RE.fullmatch(keyword) or (equals and not value_re.fullmatch(value)):
            raise _syntax(f"Malformed parameter {shown(word)}")
        if justify_utf8 and utf8_word is None and not value.isascii():
            utf8_word = word
        keyword = keyword.upper()
        if keyword in seen:
            raise _syntax(f"Parameter {shown(keyword)} given twice")
        seen.add(keyword)
        raw = value if equals else None
        spec = specs.get(keyword)
        if spec is None or spec.extension not in extensions:
            if keyword in extra_keywords:
                extra.append((keyword, raw))
                continue
            raise ParamError(Reply(555, _UNKNOWN.format(shown(keyword)), "5.5.4"))
        parsed = spec.parse(raw)
        needs = _BODY_NEEDS.get(parsed) if spec.field == "body" else None
        if needs is not None and needs not in extensions:
            raise ParamError(Reply(504, f"BODY={parsed} not supported", "5.5.4"))
        values[spec.field] = parsed
    if command == "MAIL":
        if utf8_word is not None and not values.get("smtputf8"):
            # RFC 6531 §3.4: what needs the extension needs the parameter.  Our
            # client refuses to write such a MAIL; taking it would hand the
            # application a UTF-8 value in a transaction that is not SMTPUTF8.
            raise _syntax(f"Malformed parameter {shown(utf8_word)}: a UTF-8 value needs the SMTPUTF8 parameter")
        return MailParams(extra=tuple(extra), **values)
    return RcptParams(extra=tuple(extra), **values)


def format_params(command: Command, params: MailParams | RcptParams) -> list[str]:
    """The wire words for ``params`` (client side), validated as we write them.

    Raises :class:`LocalProtocolError` for an extra keyword or value that is not
    in the ESMTP grammar: that is how a CR, LF or space could forge a command.
    """
    words: list[str] = []
    for name in _typed_fields(params):
        value = getattr(params, name)
        if value is None or value is False:
            continue
        spec = _BY_FIELD[(command, name)]
        formatted = spec.format(value)
        words.append(spec.keyword if formatted is None else f"{spec.keyword}={formatted}")
    for keyword, value in params.extra:
        if not isinstance(keyword, str) or not _abnf.ESMTP_KEYWORD_RE.fullmatch(keyword):
            raise LocalProtocolError(f"{keyword!r} is not a valid ESMTP parameter keyword")
        if value is not None and (not isinstance(value, str) or not _abnf.ESMTP_VALUE_UTF8_RE.fullmatch(value)):
            raise LocalProtocolError(f"{value!r} is not a valid ESMTP parameter value (no spaces, '=' or controls)")
        words.append(keyword if value is None else f"{keyword}={value}")
    seen: set[str] = set()
    for word in words:
        # The typed fields are formatted by our own functions, but their inputs
        # come from the application: check every word the same way.
        keyword, equals, value = word.partition("=")
        if equals and not _abnf.ESMTP_VALUE_UTF8_RE.fullmatch(value):
            raise LocalProtocolError(f"parameter {keyword} has a value that cannot be sent: {value!r}")
        # An extra that repeats a keyword (or a typed field) would get 501.
        if keyword.upper() in seen:
            raise LocalProtocolError(f"parameter {keyword} given twice")
        seen.add(keyword.upper())
    return words


#: How much longer than a command line's 512 octets an extension lets a MAIL or
#: RCPT line be (RFC 5321 §4.5.3.1.4 leaves that to the extensions): SIZE +26
#: (RFC 1870), AUTH= +500 (RFC 4954 §5), SMTPUTF8 +10 (RFC 6531 §3.4), DSN +100
#: on MAIL and +500 on RCPT (RFC 3461 §4).
LINE_ALLOWANCE: Mapping[str, Mapping[str, int]] = {
    "MAIL": {"SIZE": 26, "AUTH": 500, "SMTPUTF8": 10, "DSN": 100},
    "RCPT": {"DSN": 500},
}
#: And for the other parameters (BODY, REQUIRETLS, MT-PRIORITY, BY, HOLDFOR, extras),
#: whose RFCs say nothing of it, between them.
OTHER_PARAMETERS_ALLOWANCE = 64


def line_allowance(command: Command, extensions: Iterable[str]) -> int:
    """Octets a MAIL or RCPT line may have beyond 512 with these extensions in use."""
    table = LINE_ALLOWANCE[command]
    return OTHER_PARAMETERS_ALLOWANCE + sum(table.get(name, 0) for name in extensions)


def required_extensions(command: Command, params: MailParams | RcptParams) -> set[str]:
    """The EHLO keywords a server must have advertised for ``params`` to be sent."""
    needed: set[str] = set()
    for name in _typed_fields(params):
        value = getattr(params, name)
        if value is None or value is False:
            continue
        needed.add(_BY_FIELD[(command, name)].extension)
        if name == "body" and value in _BODY_NEEDS:
            needed.add(_BODY_NEEDS[value])
    return needed


# dataclasses.fields() rebuilds its answer on every call; a client asks per message.
_FIELD_NAMES = {
    cls: tuple(item.name for item in fields(cls) if item.name != "extra") for cls in (MailParams, RcptParams)
}


def _typed_fields(params: MailParams | RcptParams) -> tuple[str, ...]:
    """The parameter fields with a registry row (everything but ``extra``), in order."""
    return _FIELD_NAMES[type(params)]
