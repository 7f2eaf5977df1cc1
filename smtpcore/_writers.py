"""Serialising client commands: the one place an event becomes bytes on the wire.

Command injection (an address or parameter carrying ``\\r\\nRCPT TO:<evil>``) is
the classic client bug (smtplib's CVE-2016-0772 family, aiosmtplib's header
and address injection reports), so this module is the single choke point for
every byte a client writes outside message content:

1. each writer builds the command text from the event's fields, re-checking the
   grammar (events validate in their constructors, but ``_unchecked`` and
   ``object.__setattr__`` exist, and a choke point must not trust its input);
2. :func:`_finish` refuses any C0 control character or DEL anywhere in the
   line, refuses non-ASCII unless the transaction uses SMTPUTF8, bounds the
   length, and only then appends the one CRLF.

Nothing is escaped or repaired: a bad argument raises
:class:`~smtpcore.LocalProtocolError` before a single byte is produced.
MAIL and RCPT parameters are written by the shared registry
(``_params.format_params``); AUTH data is base64 of the raw bytes (RFC 4954).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator

from . import _abnf
from ._address import AddressError, check_domain, check_mailbox
from ._errors import LocalProtocolError
from ._events import (
    SASL_MECHANISM_RE,
    Auth,
    AuthResponse,
    Bdat,
    Data,
    Event,
    Expn,
    Hello,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
    XClient,
    XForward,
)
from ._params import Command, MailParams, RcptParams, format_params, line_allowance, required_extensions, xtext_encode
from ._xclient import UNAVAILABLE, XClientError

__all__ = ["MAX_AUTH_LINE", "MAX_COMMAND_LINE", "split_xforward", "write_command"]

# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF.
MAX_COMMAND_LINE = 512
# RFC 4954 §4: a SASL response line may be up to 12288 octets.  The AUTH line
# itself stays within 512, and the transaction driver leaves out an initial
# response that would not fit (it answers the first challenge instead); a caller
# of the machine may still send a longer one, as smtplib does and Gmail takes.
MAX_AUTH_LINE = 12288

_ARGUMENT_RE = re.compile(r"[^\x00-\x20\x7f]+|\"(?:[^\"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*\"")


def _finish(
    text: str,
    utf8: bool,
    limit: int = MAX_COMMAND_LINE,
    params: tuple[Command, MailParams | RcptParams] | None = None,
) -> bytes:
    """The last check before bytes exist; every command passes through here.

    ``params``: a MAIL or RCPT line may be longer than ``limit`` by what the
    extensions its parameters use allow (asked only of a line over the limit).
    """
    bad = _abnf.CONTROL_RE.search(text)
    if bad is not None:
        raise LocalProtocolError(f"refusing to send a command containing {bad.group()!r}: {text[:60]!r}")
    try:
        line = text.encode("utf-8" if utf8 else "ascii")
    except UnicodeEncodeError:
        if utf8:
            raise LocalProtocolError(f"{text[:60]!r} is not valid Unicode (it has a lone surrogate)") from None
        raise LocalProtocolError(f"non-ASCII in {text[:60]!r} needs the SMTPUTF8 parameter on MAIL") from None
    if len(line) + 2 > limit:
        if params is not None:
            command, values = params
            limit += line_allowance(command, required_extensions(command, values))
        if len(line) + 2 > limit:
            raise LocalProtocolError(f"command line of {len(line) + 2} octets exceeds {limit}")
    return line + b"\r\n"


def _hello(event: Hello, utf8: bool) -> bytes:
    if event.verb not in ("EHLO", "HELO", "LHLO"):
        raise LocalProtocolError(f"bad hello verb {event.verb!r}")
    try:
        # RFC 6531 §3.7.1: the client does not yet know whether the server
        # speaks SMTPUTF8, so the EHLO name is ASCII (A-labels).
        check_domain(event.domain, utf8=False)
    except (AddressError, TypeError) as exc:
        raise LocalProtocolError(f"cannot send {event.verb} {event.domain!r}: {exc}") from None
    return _finish(f"{event.verb} {event.domain}", False)


def _mailbox(address: object, utf8: bool, what: str) -> str:
    if not isinstance(address, str):
        raise LocalProtocolError(f"{what} address must be str, not {type(address).__name__}")
    try:
        check_mailbox(address, utf8=utf8)
    except AddressError as exc:
        raise LocalProtocolError(f"cannot send {what} <{address!r}>: {exc}") from None
    return address


def _params(command: str, params: MailParams | RcptParams) -> str:
    words = format_params(command, params)  # type: ignore[arg-type]
    return "".join(" " + word for word in words)


def _mail(event: Mail, utf8: bool) -> bytes:
    params = event.params
    if not isinstance(params, MailParams):
        raise LocalProtocolError("MAIL params must be a MailParams")
    if params.size is not None and (isinstance(params.size, bool) or not isinstance(params.size, int)):
        raise LocalProtocolError(f"SIZE must be an int, not {params.size!r}")
    if params.size is not None and not 0 <= params.size < 10**20:
        raise LocalProtocolError(f"SIZE {params.size} out of range")
    utf8 = params.smtputf8 is True
    sender = "" if event.sender == "" else _mailbox(event.sender, utf8, "MAIL FROM")
    return _finish(f"MAIL FROM:<{sender}>{_params('MAIL', params)}", utf8, params=("MAIL", params))


def _rcpt(event: Rcpt, utf8: bool) -> bytes:
    params = event.params
    if not isinstance(params, RcptParams):
        raise LocalProtocolError("RCPT params must be an RcptParams")
    recipient = event.recipient
    if not (isinstance(recipient, str) and recipient.lower() == "postmaster"):
        recipient = _mailbox(recipient, utf8, "RCPT TO")
    return _finish(f"RCPT TO:<{recipient}>{_params('RCPT', params)}", utf8, params=("RCPT", params))


def _bdat(event: Bdat, utf8: bool) -> bytes:
    size = event.size
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 10**15:
        raise LocalProtocolError(f"BDAT size must be a non-negative int, not {size!r}")
    return _finish(f"BDAT {size}{' LAST' if event.last is True else ''}", False)


def _argument(verb: str, argument: str | None, required: bool) -> bytes:
    if argument is None:
        if required:
            raise LocalProtocolError(f"{verb} needs an argument")
        return _finish(verb, False)
    if not isinstance(argument, str):
        raise LocalProtocolError(f"{verb} argument must be a str, not {type(argument).__name__}")
    if not argument.isascii():
        # VRFY/EXPN with UTF-8 need their own SMTPUTF8 argument (RFC 6531 §3.7.4),
        # which this client does not send.
        raise LocalProtocolError(f"{verb} argument {argument!r} must be ASCII (VRFY/EXPN SMTPUTF8 is not supported)")
    # One word, a quoted string, or a mailbox such as "john smith"@example.com
    # (RFC 5321 §3.5.1), as the event itself takes.
    if not (_ARGUMENT_RE.fullmatch(argument) or _abnf.MAILBOX_RE.fullmatch(argument)):
        raise LocalProtocolError(f"{verb} argument {argument!r} is not one word, a quoted string or a mailbox")
    return _finish(f"{verb} {argument}", False)


def _auth(event: Auth, utf8: bool) -> bytes:
    if not isinstance(event.mechanism, str) or not SASL_MECHANISM_RE.fullmatch(event.mechanism):
        raise LocalProtocolError(f"{event.mechanism!r} is not a SASL mechanism name")
    initial = event.initial_response
    if initial is None:
        return _finish(f"AUTH {event.mechanism}", False)
    if not isinstance(initial, bytes):
        raise LocalProtocolError("AUTH initial response must be bytes")
    # RFC 4954 §4: an empty initial response is sent as "=".
    encoded = base64.b64encode(initial).decode("ascii") if initial else "="
    return _finish(f"AUTH {event.mechanism} {encoded}", False, MAX_AUTH_LINE)


def _auth_response(event: AuthResponse, utf8: bool) -> bytes:
    if event.cancel is True:
        return _finish("*", False)
    if not isinstance(event.data, bytes):
        raise LocalProtocolError("AuthResponse data must be bytes")
    return _finish(base64.b64encode(event.data).decode("ascii"), False, MAX_AUTH_LINE)


#: The longest attribute value an XCLIENT or XFORWARD writes, encoded.
_MAX_ENCODED = 255


def attributes_text(event: XClient | XForward) -> str:
    """The XCLIENT or XFORWARD command line without its CRLF, checked and xtext-encoded, whatever its length."""
    verb = "XCLIENT" if type(event) is XClient else "XFORWARD"
    words = [verb]
    for attribute, value in _attribute_values(event):
        if attribute in ("ADDR", "DESTADDR") and ":" in value and value != UNAVAILABLE:
            value = "IPV6:" + value
        # xtext: no value can hold a space, a CR or an "=" that would read as another attribute.
        encoded = xtext_encode(value)
        if len(encoded) > _MAX_ENCODED:
            # Postfix counts the 255 on the value as sent (XFORWARD_README note 1, XCLIENT's note 1).
            raise LocalProtocolError(f"{attribute} is {len(encoded)} characters as xtext, over {_MAX_ENCODED}")
        words.append(f"{attribute}={encoded}")
    if len(words) == 1:
        raise LocalProtocolError(f"{type(event).__name__} needs at least one attribute")
    return " ".join(words)


def _attribute_values(event: XClient | XForward) -> Iterator[tuple[str, str]]:
    for attribute in event._ATTRIBUTES:
        value = getattr(event, attribute.lower())
        if value is not None:
            try:
                yield attribute, event._canonical(attribute, value)  # (again: the event may be unchecked)
            except XClientError as exc:
                raise LocalProtocolError(str(exc)) from None


def split_xforward(event: XForward) -> list[XForward]:
    """``event`` as the XFORWARD commands that say it within command lines, in order.

    XFORWARD's attributes add up until the transaction (XFORWARD_README), so
    they may be said in several commands, as Postfix's client does (NAME, ADDR,
    PORT, then the others): one command when it fits, as many as it takes
    otherwise.  Raises ``LocalProtocolError`` for a value that cannot be written.
    """
    commands: list[XForward] = []
    group: dict[str, str] = {}
    for attribute, value in _attribute_values(event):
        attributes_text(_xforward({attribute: value}))  # the value alone: 255 at most as xtext
        longer = {**group, attribute: value}
        if group and len(attributes_text(_xforward(longer))) + 2 > MAX_COMMAND_LINE:
            commands.append(_xforward(group))
            longer = {attribute: value}
        group = longer
    if not group:
        raise LocalProtocolError("XForward needs at least one attribute")
    commands.append(_xforward(group))
    return commands


def _xforward(values: dict[str, str]) -> XForward:
    """An XForward of checked ``values`` (by upper-case attribute name)."""
    return XForward._unchecked(**{name.lower(): values.get(name) for name in XForward._ATTRIBUTES})


def _attributes(event: XClient | XForward, utf8: bool) -> bytes:
    text = attributes_text(event)
    if len(text) + 2 > MAX_COMMAND_LINE:
        if type(event) is XForward:  # XFORWARD_README, note 2: each value is kept until the transaction ends
            advice = "send the attributes in several XForward commands"
        else:
            # XCLIENT_README note 1, and what a server keeps from one XCLIENT to the next:
            # Postfix resets HELO, PROTO and LOGIN unless the last one gives them, and a
            # client that has given ADDR is judged by that address (usually no longer trusted).
            advice = (
                "send the attributes in several XClient commands, PORT, DESTADDR and DESTPORT first, "
                "NAME, ADDR, HELO, PROTO and LOGIN in the last (XCLIENT_README, note 1)"
            )
        raise LocalProtocolError(
            f"the {text.split()[0]} line would be {len(text) + 2} octets, over {MAX_COMMAND_LINE}: {advice}"
        )
    return _finish(text, False)


def _fixed(verb: str) -> Callable[[Event, bool], bytes]:
    line = verb.encode("ascii") + b"\r\n"
    return lambda event, utf8: line


_WRITERS: dict[type[Event], Callable[[Event, bool], bytes]] = {
    Hello: _hello,  # type: ignore[dict-item]
    Mail: _mail,  # type: ignore[dict-item]
    Rcpt: _rcpt,  # type: ignore[dict-item]
    Bdat: _bdat,  # type: ignore[dict-item]
    Auth: _auth,  # type: ignore[dict-item]
    AuthResponse: _auth_response,  # type: ignore[dict-item]
    Noop: lambda event, utf8: _argument("NOOP", event.argument, False),  # type: ignore[attr-defined]
    Help: lambda event, utf8: _argument("HELP", event.argument, False),  # type: ignore[attr-defined]
    Vrfy: lambda event, utf8: _argument("VRFY", event.argument, True),  # type: ignore[attr-defined]
    Expn: lambda event, utf8: _argument("EXPN", event.argument, True),  # type: ignore[attr-defined]
    Data: _fixed("DATA"),
    Rset: _fixed("RSET"),
    Quit: _fixed("QUIT"),
    StartTls: _fixed("STARTTLS"),
    XClient: _attributes,  # type: ignore[dict-item]
    XForward: _attributes,  # type: ignore[dict-item]
}


def write_command(event: Event, utf8: bool = False) -> bytes:
    """The wire form of a client command, CRLF included.

    ``utf8`` says the current transaction's MAIL carried SMTPUTF8, which is what
    allows a UTF-8 RCPT address (MAIL decides from its own parameters).
    Raises :class:`LocalProtocolError` for anything that cannot be sent as is.
    """
    writer = _WRITERS.get(type(event))
    if writer is None:
        raise LocalProtocolError(f"{type(event).__name__} is not a command a client sends")
    return writer(event, utf8)
