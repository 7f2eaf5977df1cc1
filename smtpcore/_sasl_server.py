"""Server-side SASL mechanisms for AUTH (RFC 4954): PLAIN, LOGIN, CRAM-MD5, XOAUTH2, OAUTHBEARER.

A mechanism is a tiny state machine over raw bytes (the server does the base64):
``step(response)`` returns either the next challenge (bytes, sent as ``334``) or
the finished :class:`~smtpcore.AuthCredentials`, which the application then
accepts or refuses.  A mechanism never decides whether credentials are *valid*:
it only extracts them, so secrets stay with the application.

To add a mechanism, implement :class:`ServerMechanism` and list a factory for it
in ``ServerConfig.auth_mechanism_factories``.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._abnf import CONTROL_RE
from ._events import AuthCredentials
from ._replies import Reply

__all__ = ["MECHANISMS", "OAuthError", "SaslFailure", "ServerMechanism"]


class SaslFailure(Exception):
    """The client's response is malformed; the exchange ends with 501."""


class ServerMechanism(Protocol):
    """One SASL exchange, server side."""

    def step(self, response: bytes | None) -> bytes | AuthCredentials:
        """Consume the client's response (``None``: AUTH came without an initial
        response) and return the next challenge or the finished credentials."""
        ...


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslFailure(f"{what} is not UTF-8") from None


# A CRAM-MD5 digest: 32 hex digits (RFC 2195 writes them in lower case; upper
# case is read as the same digest).  Checked before verify() compares it, which
# hmac.compare_digest refuses to do for a str with non-ASCII in it (a TypeError).
_HEX_DIGEST_RE = re.compile(r"[0-9a-fA-F]{32}")


def _name(text: str, what: str) -> str:
    """A user name, authorization identity or token: no controls.  The application
    logs these and may write them into headers, where "admin\r\nX-Forged: 1" or
    an escape sequence would forge a line; passwords are the application's to judge.

    The controls are those every other name refuses (``CONTROL_RE``): C0, C1 and
    DEL, the line and paragraph separators (SASLprep, RFC 4013 §2.3, prohibits
    them too: tables C.2.1, C.2.2) and the bidi overrides (table C.8): a logged
    U+202E then "toor" reads as root."""
    if CONTROL_RE.search(text):
        raise SaslFailure(f"{what} contains a control character")
    return text


class Plain:
    """RFC 4616: ``[authzid] NUL authcid NUL passwd`` in one response."""

    def step(self, response: bytes | None) -> bytes | AuthCredentials:
        if response is None:
            return b""  # an empty challenge asks for the response
        parts = response.split(b"\x00")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SaslFailure("PLAIN response must be authzid NUL authcid NUL password")
        authzid, authcid, password = (_text(part, "PLAIN field") for part in parts)
        return AuthCredentials("PLAIN", _name(authcid, "user name"), _name(authzid, "authzid"), password=password)


class Login:
    """The widespread (never standardised) LOGIN: username, then password."""

    def __init__(self) -> None:
        self._username: str | None = None

    def step(self, response: bytes | None) -> bytes | AuthCredentials:
        if response is None:
            return b"Username:"
        if self._username is None:
            self._username = _name(_text(response, "username"), "user name")
            return b"Password:"
        return AuthCredentials("LOGIN", self._username, password=_text(response, "password"))


class CramMd5:
    """RFC 2195: the client proves it knows the password with HMAC-MD5 of a challenge."""

    def __init__(self, hostname: str, nonce: Callable[[], str] | None = None) -> None:
        token = nonce() if nonce is not None else secrets.token_hex(16)
        self._challenge = f"<{token}@{hostname}>".encode("ascii")
        self._challenged = False

    def step(self, response: bytes | None) -> bytes | AuthCredentials:
        if response is None:
            self._challenged = True
            return self._challenge
        if not self._challenged:
            # RFC 4954 §4: the server speaks first in CRAM-MD5, so an initial response
            # is refused (501) rather than read as the answer to a challenge never sent.
            raise SaslFailure("CRAM-MD5 takes no initial response: send AUTH CRAM-MD5 alone")
        username, space, digest = _text(response, "CRAM-MD5 response").rpartition(" ")
        if not space or not username or not _HEX_DIGEST_RE.fullmatch(digest):
            raise SaslFailure("CRAM-MD5 response must be 'user hexdigest'")
        challenge = self._challenge

        def verify(password: str) -> bool:
            expected = hmac.new(password.encode("utf-8"), challenge, "md5").hexdigest()
            return hmac.compare_digest(expected, digest.lower())

        return AuthCredentials("CRAM-MD5", _name(username, "user name"), verifier=verify)


def _bearer_fields(response: bytes, name: str) -> list[str]:
    """The ``^A``-separated fields of an XOAUTH2 or OAUTHBEARER response, without the two ``^A`` that end it."""
    fields = _text(response, f"{name} response").split("\x01")
    if len(fields) < 3 or fields[-2:] != ["", ""]:
        raise SaslFailure(f"{name} response must end with two ^A")
    return fields[:-2]


class XOAuth2:
    """Google/Microsoft XOAUTH2: ``user=U ^A auth=Bearer T ^A ^A``."""

    def step(self, response: bytes | None) -> bytes | AuthCredentials:
        if response is None:
            return b""
        values = dict(field.partition("=")[::2] for field in _bearer_fields(response, "XOAUTH2"))
        user, auth = values.get("user"), values.get("auth", "")
        if not user or not auth.startswith("Bearer "):
            raise SaslFailure("XOAUTH2 response needs user= and auth=Bearer")
        token = _name(auth[len("Bearer ") :], "token")
        return AuthCredentials("XOAUTH2", _name(user, "user name"), token=token)


# RFC 5801 §4: gs2-header = gs2-cb-flag "," [ gs2-authzid ] ","
#   gs2-cb-flag = ( "p=" cb-name ) / "n" / "y" ;  gs2-authzid = "a=" saslname
# A saslname writes "," as "=2C" and "=" as "=3D".  Clients that build "n,a=%s," from
# the login as it is (mutt, curl, go-sasl) send "=" bare and "a=" empty: read them as
# they meant it, a bare "=" as itself and an empty name as none.
_GS2_HEADER_RE = re.compile(r"(n|y|p=[A-Za-z0-9.-]+),(?:a=([^,]*))?,")
_SASLNAME_ESCAPE_RE = re.compile(r"=(2[Cc]|3[Dd])")
# RFC 7628 §3.1: kvpair = key "=" value kvsep ;  key = 1*(ALPHA)
_KEY_RE = re.compile(r"[A-Za-z]+")


class OAuthBearer:
    """RFC 7628 OAUTHBEARER: ``n,a=U, ^A host=H ^A port=P ^A auth=Bearer T ^A ^A``.

    The user (the GS2 header's ``a=``, which RFC 7628 lets the client leave
    out) becomes ``username``; host and port are the client's, unchecked.
    """

    def step(self, response: bytes | None) -> bytes | AuthCredentials:
        if response is None:
            return b""
        fields = _bearer_fields(response, "OAUTHBEARER")
        header = _GS2_HEADER_RE.fullmatch(fields[0])
        if header is None:
            raise SaslFailure("OAUTHBEARER response must begin with a GS2 header such as n,a=user@example.com,")
        if header.group(1).startswith("p="):
            # The client asks for channel binding, which RFC 7628 §3.1 defines for no
            # binding type yet: it must not be quietly ignored (RFC 5801 §5).
            raise SaslFailure("OAUTHBEARER channel binding is not supported")
        values: dict[str, str] = {}
        for field in fields[1:]:
            key, equals, value = field.partition("=")
            if not equals or not _KEY_RE.fullmatch(key) or key in values:
                raise SaslFailure("OAUTHBEARER response has a malformed or repeated key=value pair")
            values[key] = value
        # RFC 7628 §3.1 and RFC 6750 §2.1: the scheme is case-insensitive, then 1*SP.
        scheme, _, token = values.get("auth", "").partition(" ")
        token = token.strip(" ")
        if scheme.lower() != "bearer" or not token:
            raise SaslFailure("OAUTHBEARER response needs auth=Bearer and a token")
        user = _SASLNAME_ESCAPE_RE.sub(lambda m: "," if m.group(1) in ("2C", "2c") else "=", header.group(2) or "")
        return AuthCredentials("OAUTHBEARER", _name(user, "user name"), token=_name(token, "token"))


#: RFC 6750 §3.1's error codes as Gmail's XOAUTH2 says them: it answers "400" to an
#: expired or revoked token, and clients refresh the token on that status alone.
_XOAUTH2_STATUS = {"invalid_request": "400", "invalid_token": "400", "insufficient_scope": "403"}


@dataclass(frozen=True, slots=True)
class OAuthError:
    """Why a bearer token was refused, told in the challenge OAUTHBEARER and XOAUTH2 send before the refusal.

    RFC 7628 §3.2.2: ``status`` is required (``invalid_token``, ``insufficient_scope``;
    Google's XOAUTH2 sends an HTTP status such as ``"400"``), ``scope`` is the
    scope a token needs, ``openid_configuration`` the URL where the client finds
    how to get one.  Pass it to ``ServerConnection.send_auth_error`` (or return
    it from an adapter's ``auth`` hook): the client answers the challenge and
    then gets ``reply`` (None: 535 5.7.8).

    XOAUTH2 is Google's, and its clients read Google's statuses, HTTP codes:
    ``"400"`` for a token to refresh (K-9 Mail and Thunderbird for Android
    refresh only on that), ``"403"`` for a missing scope.  :meth:`to_json`
    writes the RFC 6750 codes so for XOAUTH2, and any other status as it is.
    """

    status: str = "invalid_token"
    scope: str | None = None
    openid_configuration: str | None = None
    reply: Reply | None = None

    def __post_init__(self) -> None:
        if not self.status:
            raise ValueError("OAuthError.status is required (RFC 7628 §3.2.2): invalid_token, for one")
        for name in ("status", "scope", "openid_configuration"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"OAuthError.{name} must be a str, not {type(value).__name__}")
        reply = self.reply
        if reply is not None and (not isinstance(reply, Reply) or not 400 <= reply.code < 600 or reply.code == 421):
            raise ValueError(f"OAuthError.reply must be a 4xx or 5xx Reply other than 421, not {reply!r}")

    def to_json(self, mechanism: str = "OAUTHBEARER") -> bytes:
        """The challenge's content for ``mechanism``: ``{"status": ..., "schemes": "bearer", ...}``."""
        status = self.status
        if mechanism == "XOAUTH2":
            status = _XOAUTH2_STATUS.get(status, status)
        error = {"status": status, "schemes": "bearer"}
        if self.scope is not None:
            error["scope"] = self.scope
        if self.openid_configuration is not None:
            error["openid-configuration"] = self.openid_configuration
        return json.dumps(error, separators=(",", ":")).encode("utf-8")


#: The built-in mechanisms: name -> factory(hostname).
MECHANISMS: dict[str, Callable[[str], ServerMechanism]] = {
    "PLAIN": lambda hostname: Plain(),
    "LOGIN": lambda hostname: Login(),
    "CRAM-MD5": CramMd5,
    "XOAUTH2": lambda hostname: XOAuth2(),
    "OAUTHBEARER": lambda hostname: OAuthBearer(),
}

#: The mechanisms with a step for an error challenge (``ServerConnection.send_auth_error``);
#: any other, an application's own among them, is refused with a plain reply.
ERROR_CHALLENGE_MECHANISMS = frozenset({"XOAUTH2", "OAUTHBEARER"})
