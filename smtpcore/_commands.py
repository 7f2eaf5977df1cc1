"""Parsing one command line (server side): bytes in, an event or a refusal out.

The server's state machine decides *whether* a command may come now; this module
decides only *what* the line says.  Each verb has one parser function in
:data:`PARSERS`; a parser returns an event or raises :class:`Refusal` with the
reply the grammar calls for (500 unknown, 501 bad arguments, 555 bad parameters,
553 UTF-8 without SMTPUTF8).

Lines are decoded as UTF-8 strictly, and a line with any control character (a
bare CR or LF, NUL, TAB, DEL) is refused before it is looked at: RFC 5321
commands contain printable text and single spaces only.  What the grammar
refuses is never "repaired"; the one tolerance, as in Postfix and go-smtp, is
spaces after ``FROM:`` / ``TO:``, which common clients send.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from . import _abnf
from . import _replies as R
from ._address import AddressError, check_domain, is_domain, parse_path
from ._events import (
    Auth,
    Bdat,
    Data,
    Event,
    Expn,
    Hello,
    Help,
    Noop,
    Quit,
    Rset,
    StartTls,
    Vrfy,
    XClient,
    XForward,
    unchecked_mail,
    unchecked_rcpt,
)
from ._params import _NO_MAIL_PARAMS, _NO_RCPT_PARAMS, MailParams, ParamError, RcptParams, parse_params
from ._replies import Reply, shown
from ._xclient import XClientError, decode_value

__all__ = ["PARSERS", "Context", "Refusal", "decode_line", "parse_xclient", "parse_xforward", "split_verb"]


class Refusal(Exception):
    """The line cannot become an event; ``reply`` says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.message)
        self.reply = reply


@dataclass(slots=True)
class Context:
    """What parsing depends on in the current session."""

    #: EHLO keywords advertised in this session (upper case); empty after HELO.
    extensions: frozenset[str]
    #: Parameter keywords the application handles itself.
    extra_parameters: frozenset[str]
    #: The current transaction's MAIL said SMTPUTF8 (RCPT may then be UTF-8).
    transaction_utf8: bool = False


# The bracketed path at the start of a MAIL/RCPT argument: a quoted local part
# may contain ">" and spaces, so the end is found with the quoting in mind.
_PATH_EXTENT_RE = re.compile(r'<(?:[^>"\\]|"(?:[^"\\]|\\.)*")*>')
# The largest chunk size a Bdat event accepts, plus one (see Bdat.__post_init__).
_MAX_CHUNK = 10**15
_NON_SMTP_VERBS = frozenset({"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "DELETE", "USER"})


def decode_line(line: bytes) -> str:
    """The command line as text, without trailing blanks; :class:`Refusal` for non-UTF-8 or control bytes.

    RFC 5321 §4.1.1: "SMTP receivers SHOULD tolerate trailing white space before
    the terminating <CRLF>".  Clients send it ("RSET ", "BDAT 28 LAST "), and a
    BDAT line refused for it would leave its chunk to be read as commands.
    """
    line = line.rstrip(b" \t")  # (the same object back when there is nothing to strip)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(R.SYNTAX_NOT_UTF8) from None
    # Skips the regex for the usual line.  On ASCII text isprintable() is false
    # exactly for C0 controls and DEL, the ASCII characters CONTROL_RE finds:
    # every other ASCII character is a letter, digit, punctuation or the space,
    # which Python counts as printable.  Non-ASCII text (where isprintable() also
    # refuses characters such as U+00A0 that a command may hold) takes the regex,
    # which refuses C1 controls and U+2028/U+2029 too.
    if text.isascii() and text.isprintable():
        return text
    if _abnf.CONTROL_RE.search(text):
        raise Refusal(R.SYNTAX_BAD_BYTES)
    return text


def split_verb(text: str) -> tuple[str, str | None]:
    """``("MAIL", "FROM:<a@b>")``; the argument is ``None`` when there is no space.

    Spaces after the verb are one separator ("EHLO  c.example"), as Postfix and
    aiosmtpd read them.  Only an ASCII verb is upper-cased: ``str.upper()`` makes
    "MA\u0131L" (a dotless i) MAIL and "R\u017fET" (a long s) RSET, commands that
    Postfix, and a filter in front of us matching octets, would not see.
    """
    verb, space, argument = text.partition(" ")
    return (verb.upper() if verb.isascii() else verb), (argument.lstrip(" ") if space else None)


def is_non_smtp(verb: str) -> bool:
    """An HTTP (or POP3) verb: somebody pointed the wrong client at us."""
    return verb in _NON_SMTP_VERBS


def _no_argument(event: Event) -> Callable[[str | None, Context], Event]:
    def parse(argument: str | None, context: Context) -> Event:
        if argument is not None:
            raise Refusal(Reply(501, "This command takes no argument", "5.5.4"))
        return event

    return parse


def _hello(verb: str) -> Callable[[str | None, Context], Event]:
    def parse(argument: str | None, context: Context) -> Event:
        if not argument:
            raise Refusal(Reply(501, f"{verb} needs a domain name or address literal", "5.5.4"))
        try:
            # RFC 5321 gives HELO a Domain only, but clients without a name send
            # an address literal there too (smtplib does when EHLO fails), as they
            # may with EHLO and LHLO: taken for all three.
            check_domain(argument, utf8=True)
        except AddressError as exc:
            # Words after the name ("EHLO printer.lan HP LaserJet"), which some
            # devices send: the name is the first word, as go-smtp reads it
            # (Postfix and aiosmtpd keep them all).  The handler still gets one
            # host identifier, or the client a 501.
            name = argument.partition(" ")[0]
            if not ((name != argument and is_domain(name, utf8=True)) or _tolerated_name(name)):
                raise Refusal(Reply(501, shown(f"Invalid {verb} argument: {exc}", 200), "5.5.2")) from None
            argument = name
        return Hello._unchecked(domain=argument, verb=verb)

    return parse


def _tolerated_name(argument: str) -> bool:
    """A client name outside RFC 5321's grammar that real clients send and Postfix,
    aiosmtpd and go-smtp take: refusing it would only keep those clients out.

    A fully qualified name with its root dot ("mail.example.com."), a bare IPv6
    address ("fe80::1"; a bare IPv4 address is already a domain by the grammar),
    or a name with underscores (Windows sends its NetBIOS name: "DESKTOP_7QX2").
    Anything else, such as "bad!name", is still refused: what a handler gets
    stays a host identifier.
    """
    if len(argument) > 255:
        return False
    if argument.endswith(".") and not argument.endswith("..") and is_domain(argument[:-1], utf8=True):
        return True
    if ":" in argument and "%" not in argument:
        # (ipaddress takes an RFC 4007 zone, "fe80::1%eth0", with any text after the
        # "%": a client could write "::1%(forged comment)" into our Received field.)
        try:
            ipaddress.ip_address(argument)
            return True
        except ValueError:
            pass
    return "_" in argument and _abnf.UNDERSCORED_NAME_RE.fullmatch(argument) is not None


def _path_and_params(argument: str | None, prefix: str) -> tuple[str, list[str]]:
    if argument is None or not ((head := argument[: len(prefix)]).isascii() and head.upper() == prefix):
        raise Refusal(Reply(501, f"Syntax: {prefix}<address> [parameters]", "5.5.2"))
    rest = argument[len(prefix) :].lstrip(" ")
    match = _PATH_EXTENT_RE.match(rest)
    if match is None:
        raise Refusal(Reply(501, "Address must be in angle brackets", "5.5.2"))
    after = rest[match.end() :]
    if after and after[0] != " ":
        raise Refusal(Reply(501, "Space required between address and parameters", "5.5.2"))
    return match.group(), _words(after)


def _words(parameters: str) -> list[str]:
    """The parameters, split at spaces: only SP separates them (RFC 5321 §4.1.2), not the
    other whitespace ``str.split()`` knows, such as U+00A0 in a UTF-8 line."""
    return [word for word in parameters.split(" ") if word]


def _address_refusal(exc: AddressError, detail: str) -> Refusal:
    if exc.non_ascii:
        return Refusal(R.NON_ASCII_ADDRESS)
    text = shown(f"Bad {detail} address syntax: {exc}", 200)  # the address, long or not ASCII, is in exc
    return Refusal(Reply(501, text, "5.1.7" if detail == "sender" else "5.1.3"))


def _parse_params(command: str, words: list[str], context: Context, utf8: bool) -> MailParams | RcptParams:
    try:
        return parse_params(
            "MAIL" if command == "MAIL" else "RCPT", words, context.extensions, context.extra_parameters, utf8
        )
    except ParamError as exc:
        raise Refusal(exc.reply) from None


# --- MAIL and RCPT: the common shape in one match, everything else by the general parser -----------
#
# Nearly every MAIL and RCPT a server sees names a plain ASCII mailbox: a
# dot-string local part, "@", a domain of letters, digits and hyphens, in angle
# brackets right after the colon.  One fullmatch of that shape, built from the
# very _abnf rules the general parser uses, stands in for the general steps:
#
# * the prefix and the bracket extent: dot-string and domain hold no ">", '"' or
#   "\", so the path ends at its first ">" as _PATH_EXTENT_RE would find it;
# * parse_path: the shape is a branch of PATH_RE (no source route, no quoting,
#   no address literal, no UTF-8, not <> or <Postmaster>), and a mailbox of at
#   most 64 ASCII characters cannot break an RFC 5321 §4.5.3.1 limit we keep: its
#   domain is at most 62 octets, under the 63 of a label;
# * parse_params, for RCPT only: the shape ends at ">", so there are none.
#
# Anything else (parameters on RCPT, a longer mailbox, any other spelling)
# goes to the general parser, which stays the reference: the fast path never
# refuses, it only returns the event the general parser would return (the tests
# compare the two on generated lines).
_PLAIN_PATH = rf" *<(?P<mailbox>{_abnf.DOT_STRING}@{_abnf.DOMAIN})>"
_PLAIN_MAIL_RE = re.compile(rf"[Ff][Rr][Oo][Mm]:{_PLAIN_PATH}(?P<params>(?: .*)?)")
_PLAIN_RCPT_RE = re.compile(rf"[Tt][Oo]:{_PLAIN_PATH}")
_SHORT_MAILBOX = 64


def _mail(argument: str | None, context: Context) -> Event:
    """MAIL FROM:<path> [parameters]; the common shape in one match, else :func:`_mail_general`."""
    if argument is not None:
        match = _PLAIN_MAIL_RE.fullmatch(argument)
        if match is not None:
            mailbox = match.group("mailbox")
            if len(mailbox) <= _SHORT_MAILBOX:
                rest = match.group("params")
                if not rest:  # what parse_params answers for no words, without the calls
                    return unchecked_mail(mailbox, _NO_MAIL_PARAMS)
                # The parameters are parsed exactly as the general parser does;
                # only the path needs no further check.
                words = _words(rest)
                params = _parse_params("MAIL", words, context, utf8="SMTPUTF8" in context.extensions)
                assert isinstance(params, MailParams)
                return unchecked_mail(mailbox, params)
    return _mail_general(argument, context)


def _rcpt(argument: str | None, context: Context) -> Event:
    """RCPT TO:<path> [parameters]; the common shape in one match, else :func:`_rcpt_general`."""
    if argument is not None:
        match = _PLAIN_RCPT_RE.fullmatch(argument)
        if match is not None:
            mailbox = match.group("mailbox")
            if len(mailbox) <= _SHORT_MAILBOX:
                return unchecked_rcpt(mailbox, _NO_RCPT_PARAMS)
    return _rcpt_general(argument, context)


def _mail_general(argument: str | None, context: Context) -> Event:
    path, words = _path_and_params(argument, "FROM:")
    params = _parse_params("MAIL", words, context, utf8="SMTPUTF8" in context.extensions)
    assert isinstance(params, MailParams)
    try:
        sender = parse_path(path, utf8=params.smtputf8, null_allowed=True, postmaster_allowed=False)
    except AddressError as exc:
        raise _address_refusal(exc, "sender") from None
    return unchecked_mail(sender, params)


def _rcpt_general(argument: str | None, context: Context) -> Event:
    path, words = _path_and_params(argument, "TO:")
    params = _parse_params("RCPT", words, context, utf8=context.transaction_utf8)
    assert isinstance(params, RcptParams)
    try:
        recipient = parse_path(path, utf8=context.transaction_utf8, null_allowed=False, postmaster_allowed=True)
    except AddressError as exc:
        raise _address_refusal(exc, "recipient") from None
    return unchecked_rcpt(recipient, params)


def _bdat(argument: str | None, context: Context) -> Event:
    # RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CR LF
    #   chunk-size = 1*DIGIT ; end-marker = "LAST"
    # Runs of spaces are one, as Postfix reads them.  A BDAT we cannot read ends
    # the session (R.BDAT_UNREADABLE): where its chunk ends is unknown, and its
    # octets must not be read as commands.
    words = _words(argument or "")
    if not words or not _abnf.NUMBER_RE.fullmatch(words[0]) or len(words) > 2:
        raise Refusal(R.BDAT_UNREADABLE)
    if len(words) == 2 and not (words[1].isascii() and words[1].upper() == "LAST"):  # "LA\u017fT".upper() is LAST
        raise Refusal(R.BDAT_UNREADABLE)
    size = int(words[0])
    if size >= _MAX_CHUNK:
        # _unchecked skips Bdat's own range check, so apply it here: a count no
        # Bdat event may hold is a syntax error, not a chunk to read forever.
        raise Refusal(R.BDAT_UNREADABLE)
    return Bdat._unchecked(size=size, last=len(words) == 2)


def _string(cls: type[Vrfy] | type[Expn]) -> Callable[[str | None, Context], Event]:
    def parse(argument: str | None, context: Context) -> Event:
        if not argument:
            raise Refusal(Reply(501, f"Syntax: {cls.__name__.upper()} <string>", "5.5.4"))
        return cls._unchecked(argument=argument)

    return parse


def _optional_string(cls: type[Help] | type[Noop]) -> Callable[[str | None, Context], Event]:
    def parse(argument: str | None, context: Context) -> Event:
        return cls._unchecked(argument=argument or None)

    return parse


def _auth(argument: str | None, context: Context) -> Event:
    # RFC 4954 §4: "AUTH" SP sasl-mech [SP initial-response]; initial-response = base64 / "="
    words = (argument or "").split(" ")
    mechanism = words[0].upper() if words[0].isascii() else words[0]  # (ASCII only, as the verb)
    if not mechanism or len(words) > 2:
        raise Refusal(Reply(501, "Syntax: AUTH <mechanism> [initial-response]", "5.5.4"))
    # The initial response stays base64 text here: the server decodes it, so a
    # bad encoding gets its own reply (501 5.5.2) after the mechanism is known.
    initial = words[1].encode("ascii", "replace") if len(words) == 2 else None
    return Auth._unchecked(mechanism=mechanism, initial_response=initial)


def _attributes(verb: str, cls: type[XClient] | type[XForward]) -> Callable[[str | None, Context], Event]:
    """XCLIENT or XFORWARD: ``verb 1*( SP attribute-name "=" attribute-value )`` (Postfix's READMEs).

    Not in :data:`PARSERS`: only a server configured to offer the verb knows it
    (to any other it is unknown, 500).  Names are case-insensitive; an
    attribute given twice keeps its last value, as in Postfix.
    """
    syntax = Reply(501, f"Syntax: {verb} attribute=value ...", "5.5.4")
    names = cls._ATTRIBUTES
    canonical = cls._canonical

    def parse(argument: str | None, context: Context) -> Event:
        words = _words(argument or "")
        if not words:
            raise Refusal(syntax)
        values: dict[str, str | None] = dict.fromkeys((attribute.lower() for attribute in names), None)
        for word in words:
            name, equals, raw = word.partition("=")
            name = name.upper() if name.isascii() else name
            if name not in names:
                raise Refusal(Reply(501, shown(f"Bad {verb} attribute name: {name}", 80), "5.5.4"))
            if not equals:
                raise Refusal(syntax)
            try:
                values[name.lower()] = canonical(name, decode_value(raw))
            except XClientError as exc:
                raise Refusal(Reply(501, shown(f"Bad {verb} value: {exc}", 200), "5.5.4")) from None
        return cls._unchecked(**values)

    return parse


#: The parsers of the verbs a server knows only when it offers them (see ServerConfig).
parse_xclient = _attributes("XCLIENT", XClient)
parse_xforward = _attributes("XFORWARD", XForward)


#: verb -> parser(argument, context) -> event
PARSERS: dict[str, Callable[[str | None, Context], Event]] = {
    "EHLO": _hello("EHLO"),
    "HELO": _hello("HELO"),
    "LHLO": _hello("LHLO"),
    "MAIL": _mail,
    "RCPT": _rcpt,
    "DATA": _no_argument(Data()),
    "BDAT": _bdat,
    "RSET": _no_argument(Rset()),
    "QUIT": _no_argument(Quit()),
    "NOOP": _optional_string(Noop),
    "HELP": _optional_string(Help),
    "VRFY": _string(Vrfy),
    "EXPN": _string(Expn),
    "STARTTLS": _no_argument(StartTls()),
    "AUTH": _auth,
}
