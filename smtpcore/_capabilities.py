"""What a server said it can do: the EHLO (or LHLO) reply as a frozen, typed value.

The client decides everything about a transaction (pipeline or not, BDAT or
DATA, which parameters to send) from this one object, so it is parsed once,
strictly, and never changes: after STARTTLS the connection throws it away and
builds a new one from the new EHLO reply (RFC 3207 §4.2).

Each extension line is matched against ``_abnf.EHLO_LINE_RE``
(``ehlo-keyword *( SP ehlo-param )``).  A line that does not match is not an
error of the whole reply: it is kept in ``malformed`` and otherwise ignored,
because long-lived servers still send forms like ``AUTH=LOGIN PLAIN`` (the
pre-RFC 2554 syntax) beside the correct line, and refusing the session over it
would help nobody.  Nothing is guessed from such a line, with one exception: a
server that lists its mechanisms only in the old ``AUTH=`` form (some still do;
smtplib reads it on purpose) gets them read from there.  That line has only
the one meaning, and without it such a server cannot be logged in to.

Numbers (``SIZE n``, ``LIMITS RCPTMAX=n``) must be ASCII digits with a bounded
length (``_abnf.NUMBER_RE``); anything else is treated as not stated.  Keywords
we do not model are kept with their parameters in ``unknown``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import _abnf
from ._events import SASL_MECHANISM_RE
from ._replies import Reply

__all__ = ["Capabilities"]

# The keywords with a typed field below; everything else goes to ``unknown``.
_KNOWN = frozenset(
    {
        "SIZE",
        "AUTH",
        "PIPELINING",
        "CHUNKING",
        "BINARYMIME",
        "8BITMIME",
        "SMTPUTF8",
        "DSN",
        "ENHANCEDSTATUSCODES",
        "REQUIRETLS",
        "STARTTLS",
        "LIMITS",
    }
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The extensions of one session, from the EHLO/LHLO reply.

    ``Capabilities()`` (all off) is what a HELO session has.  ``size`` is
    ``None`` when SIZE was not advertised and ``0`` when it was advertised
    without a fixed limit; :attr:`max_message_size` gives the limit itself.
    """

    #: The first word of the reply's first line (the server's name), if any.
    server_name: str = ""
    #: Every advertised keyword, upper case (including the ones modelled below).
    keywords: frozenset[str] = frozenset()
    size: int | None = None
    auth_mechanisms: tuple[str, ...] = ()
    pipelining: bool = False
    chunking: bool = False
    binarymime: bool = False
    eight_bit_mime: bool = False
    smtputf8: bool = False
    dsn: bool = False
    enhanced_status_codes: bool = False
    requiretls: bool = False
    starttls: bool = False
    #: RFC 9422 ``LIMITS RCPTMAX=n``: recipients per transaction.
    rcpt_max: int | None = None
    #: Keywords not modelled here, with their parameters, in the order sent.
    unknown: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Extension lines that do not follow the grammar (ignored).
    malformed: tuple[str, ...] = ()

    @property
    def max_message_size(self) -> int | None:
        """The server's fixed message size limit in octets, or ``None``."""
        return self.size or None

    def has(self, keyword: str) -> bool:
        """Whether ``keyword`` (any case) was advertised."""
        return keyword.upper() in self.keywords

    def params(self, keyword: str) -> tuple[str, ...] | None:
        """The parameters of an unmodelled keyword, or ``None`` if not advertised."""
        wanted = keyword.upper()
        for name, params in self.unknown:
            if name == wanted:
                return params
        return None

    @classmethod
    def from_reply(cls, reply: Reply) -> Capabilities:
        """Parse a positive EHLO/LHLO reply (its first line is the greeting)."""
        first = reply.text[0].split(" ", 1)[0] if reply.text else ""
        keywords: set[str] = set()
        size: int | None = None
        rcpt_max: int | None = None
        unknown: list[tuple[str, tuple[str, ...]]] = []
        malformed: list[str] = []
        mechanisms: list[str] = []
        for line in reply.text[1:]:
            match = _abnf.EHLO_LINE_RE.fullmatch(line)
            if match is None:
                malformed.append(line)
                continue
            keyword = match.group("keyword").upper()
            params = tuple(match.group("params").split())
            keywords.add(keyword)
            if keyword not in _KNOWN:
                unknown.append((keyword, params))
            elif keyword == "SIZE":
                size = _number(params[0]) if params else 0
            elif keyword == "AUTH":
                _add_mechanisms(mechanisms, params)
            elif keyword == "LIMITS":
                for param in params:
                    name, _, value = param.partition("=")
                    if name.upper() == "RCPTMAX":
                        rcpt_max = _number(value) or None
        if "AUTH" not in keywords:
            # Only the pre-RFC 2554 form: "AUTH=LOGIN PLAIN" (left in ``malformed``;
            # "AUTH" is not a keyword of the reply, only its mechanisms are taken).
            for line in malformed:
                if line[:5].upper() == "AUTH=":
                    _add_mechanisms(mechanisms, line[5:].split())
        return cls(
            server_name=first,
            keywords=frozenset(keywords),
            size=size,
            auth_mechanisms=tuple(mechanisms),
            pipelining="PIPELINING" in keywords,
            chunking="CHUNKING" in keywords,
            binarymime="BINARYMIME" in keywords,
            eight_bit_mime="8BITMIME" in keywords,
            smtputf8="SMTPUTF8" in keywords,
            dsn="DSN" in keywords,
            enhanced_status_codes="ENHANCEDSTATUSCODES" in keywords,
            requiretls="REQUIRETLS" in keywords,
            starttls="STARTTLS" in keywords,
            rcpt_max=rcpt_max,
            unknown=tuple(unknown),
            malformed=tuple(malformed),
        )


def _add_mechanisms(mechanisms: list[str], names: Iterable[str]) -> None:
    """Each well-formed SASL mechanism name, upper case, once, in the server's order."""
    for name in names:
        name = name.upper()
        if SASL_MECHANISM_RE.fullmatch(name) and name not in mechanisms:
            mechanisms.append(name)


def _number(text: str) -> int | None:
    return int(text) if _abnf.NUMBER_RE.fullmatch(text) else None
