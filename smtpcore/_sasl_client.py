"""Client-side SASL mechanisms for AUTH (RFC 4954): PLAIN, LOGIN, CRAM-MD5, XOAUTH2, OAUTHBEARER.

A mechanism turns credentials into responses; it works on raw bytes and never
sees base64 or the wire (the writer encodes, the connection decodes the 334
challenges).  That keeps secrets out of everything but the mechanism and makes
adding one a small class: implement :class:`ClientMechanism` and pass a factory
for it to the driver.

Which mechanism to use is :func:`choose_mechanism`'s job: the first name in the
caller's list (ordered strongest first) that the server offers and that the
credentials can serve (XOAUTH2 and OAUTHBEARER need a token, the others a password).  A
mechanism that cannot be used is never "tried"; a name the caller did not list
is never used, whatever the server offers.  :func:`usable_mechanisms` gives all
of them in that order, for a client that tries the next after a refusal.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ._errors import LocalProtocolError

__all__ = [
    "MECHANISMS",
    "ClientMechanism",
    "CramMd5",
    "Credentials",
    "Login",
    "OAuthBearer",
    "Plain",
    "SaslError",
    "XOAuth2",
    "choose_mechanism",
    "usable_mechanisms",
]


class SaslError(Exception):
    """The server's challenge makes no sense for this mechanism; cancel the exchange."""


@dataclass(frozen=True)
class Credentials:
    """What the client proves: a password, or an OAuth2 bearer token (XOAUTH2, OAUTHBEARER).

    Secrets are left out of the repr so logging the object leaks nothing.
    """

    username: str
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    #: The identity to act as (RFC 4616 authzid); usually empty.
    authorization_id: str = ""


class ClientMechanism(Protocol):
    """One SASL exchange, client side."""

    #: The mechanism's registered name, as sent in AUTH.
    name: str

    def initial_response(self) -> bytes | None:
        """The response sent with AUTH itself, or ``None`` to wait for a challenge."""
        ...

    def respond(self, challenge: bytes) -> bytes:
        """The response to a decoded 334 challenge; :class:`SaslError` to cancel."""
        ...


def _utf8(text: str | None, what: str) -> bytes:
    if not isinstance(text, str):
        raise LocalProtocolError(f"{what} must be a str")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: bytes that were not UTF-8, read from the environment or
        # argv with surrogateescape (a Latin-1 password in a UTF-8 locale).
        raise LocalProtocolError(f"{what} is not valid Unicode text (it holds bytes that were not UTF-8)") from None


class Plain:
    """RFC 4616: ``authzid NUL authcid NUL password`` in the initial response."""

    name = "PLAIN"

    def __init__(self, credentials: Credentials) -> None:
        fields = [
            _utf8(credentials.authorization_id, "authorization_id"),
            _utf8(credentials.username, "username"),
            _utf8(credentials.password, "password"),
        ]
        # RFC 4616 §2: a NUL inside a field would shift the fields (and let a
        # username choose the password the server checks).
        if any(b"\x00" in item for item in fields):
            raise LocalProtocolError("PLAIN credentials may not contain NUL")
        self._message = b"\x00".join(fields)
        self._sent = False

    def initial_response(self) -> bytes | None:
        self._sent = True
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        # A server that does not take initial responses asks with an empty 334.
        if self._sent:
            raise SaslError("PLAIN takes a single response")
        self._sent = True
        return self._message


class Login:
    """The widespread, never standardised LOGIN: username, then password."""

    name = "LOGIN"

    def __init__(self, credentials: Credentials) -> None:
        self._answers = [_utf8(credentials.username, "username"), _utf8(credentials.password, "password")]

    def initial_response(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        if not self._answers:
            raise SaslError("LOGIN takes two responses")
        return self._answers.pop(0)


class CramMd5:
    """RFC 2195: ``username SP hex(HMAC-MD5(password, challenge))``."""

    name = "CRAM-MD5"

    def __init__(self, credentials: Credentials) -> None:
        self._username = _utf8(credentials.username, "username")
        self._password = _utf8(credentials.password, "password")
        self._done = False

    def initial_response(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        if self._done or not challenge:
            raise SaslError("CRAM-MD5 expects exactly one non-empty challenge")
        self._done = True
        digest = hmac.new(self._password, challenge, "md5").hexdigest()
        return self._username + b" " + digest.encode("ascii")


class XOAuth2:
    """Google's and Microsoft's XOAUTH2: ``user=U ^A auth=Bearer T ^A ^A``.

    On failure the server sends a 334 with a JSON error; the protocol wants an
    empty response to it, after which the server sends the final 5xx.  The
    error is kept in ``server_error``, for the failure's message.
    """

    name = "XOAUTH2"
    #: What answers the error challenge.
    _ACKNOWLEDGEMENT = b""

    def __init__(self, credentials: Credentials) -> None:
        user = _utf8(credentials.username, "username")
        token = _utf8(credentials.token, "token")
        if b"\x01" in user or b"\x01" in token:
            raise LocalProtocolError(f"{self.name} credentials may not contain ^A")
        self._message = self._first_message(user, token)
        #: The error challenge's content (JSON, RFC 7628 §3.2.2), once the server sent one.
        self.server_error: bytes | None = None

    def _first_message(self, user: bytes, token: bytes) -> bytes:
        return b"user=" + user + b"\x01auth=Bearer " + token + b"\x01\x01"

    def initial_response(self) -> bytes | None:
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        # The only challenge after the credentials is the error; a second is not
        # the protocol (a server would have to have read ours as something else).
        if self.server_error is not None:
            raise SaslError(f"{self.name} got a second challenge")
        self.server_error = challenge
        return self._ACKNOWLEDGEMENT


class OAuthBearer(XOAuth2):
    """RFC 7628 OAUTHBEARER, XOAUTH2's standard successor: ``n,a=U, ^A auth=Bearer T ^A ^A``.

    The user goes in the GS2 header (RFC 5801), with "," and "=" written as
    ``=2C`` and ``=3D``; an empty username leaves it out.  The error challenge
    is answered with ``^A`` (RFC 7628 §3.2.3).
    """

    name = "OAUTHBEARER"
    _ACKNOWLEDGEMENT = b"\x01"

    def _first_message(self, user: bytes, token: bytes) -> bytes:
        authzid = b"a=" + user.replace(b"=", b"=3D").replace(b",", b"=2C") if user else b""
        return b"n," + authzid + b",\x01auth=Bearer " + token + b"\x01\x01"


#: The built-in mechanisms: name -> factory(credentials).
MECHANISMS: Mapping[str, Callable[[Credentials], ClientMechanism]] = {
    "PLAIN": Plain,
    "LOGIN": Login,
    "CRAM-MD5": CramMd5,
    "XOAUTH2": XOAuth2,
    "OAUTHBEARER": OAuthBearer,
}

#: The mechanisms that prove a bearer token rather than a password.
TOKEN_MECHANISMS = frozenset({"XOAUTH2", "OAUTHBEARER"})


def _usable(name: str, credentials: Credentials) -> bool:
    if name in TOKEN_MECHANISMS:
        return credentials.token is not None
    if name in MECHANISMS:
        return credentials.password is not None
    return True  # the application's own mechanism decides for itself


def usable_mechanisms(
    offered: Iterable[str],
    allowed: Iterable[str],
    credentials: Credentials,
    factories: Mapping[str, Callable[[Credentials], ClientMechanism]] | None = None,
) -> list[tuple[str, Callable[[Credentials], ClientMechanism]]]:
    """Every mechanism of ``allowed`` the server offers and the credentials can serve,
    in ``allowed``'s order (strongest first), each once, with its factory."""
    table = {**MECHANISMS, **(factories or {})}
    offered_set = {name.upper() for name in offered}
    usable: dict[str, Callable[[Credentials], ClientMechanism]] = {}
    for name in allowed:
        if name in offered_set and name in table and _usable(name, credentials):
            usable.setdefault(name, table[name])
    return list(usable.items())


def choose_mechanism(
    offered: Iterable[str],
    allowed: Iterable[str],
    credentials: Credentials,
    factories: Mapping[str, Callable[[Credentials], ClientMechanism]] | None = None,
) -> ClientMechanism | None:
    """The strongest usable mechanism: the first of ``allowed`` the server offers.

    ``factories`` adds (or replaces) mechanisms by name.  Returns ``None`` when
    nothing in common can serve these credentials.
    """
    usable = usable_mechanisms(offered, allowed, credentials, factories)
    return usable[0][1](credentials) if usable else None
