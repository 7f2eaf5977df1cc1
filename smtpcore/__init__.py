"""smtpcore: a sans-IO SMTP and LMTP protocol engine for both roles.

The public API is everything named in ``__all__``; modules starting with an
underscore are private.  Start with :class:`ServerConnection` or
:class:`ClientConnection` and the events in ``smtpcore._events``.
"""

from ._config import AuthPolicy, BareNewlinePolicy, ClientConfig, LongLinePolicy, ServerConfig, Timeout, TlsPolicy
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    Auth,
    AuthCredentials,
    AuthResponse,
    Bdat,
    CommandRejected,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Expn,
    Hello,
    Help,
    Mail,
    MessageData,
    MessageRejected,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    TlsHandshake,
    Vrfy,
)
from ._params import DeliverBy, MailParams, RcptParams, xtext_decode, xtext_encode
from ._replies import Reply
from ._sasl_server import SaslFailure, ServerMechanism
from ._sentinels import NEED_DATA, PAUSED
from ._server import ServerConnection, State

__version__ = "0.1.0"

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "Auth",
    "AuthCredentials",
    "AuthPolicy",
    "AuthResponse",
    "BareNewlinePolicy",
    "Bdat",
    "ClientConfig",
    "CommandRejected",
    "ConnectionClosed",
    "Data",
    "DeliverBy",
    "EndOfMessage",
    "Event",
    "Expn",
    "Hello",
    "Help",
    "LocalProtocolError",
    "LongLinePolicy",
    "Mail",
    "MailParams",
    "MessageData",
    "MessageRejected",
    "Noop",
    "ProtocolError",
    "Quit",
    "Rcpt",
    "RcptParams",
    "RemoteProtocolError",
    "Reply",
    "Rset",
    "SaslFailure",
    "ServerConfig",
    "ServerConnection",
    "ServerMechanism",
    "StartTls",
    "State",
    "Timeout",
    "TlsHandshake",
    "TlsPolicy",
    "Vrfy",
    "__version__",
    "xtext_decode",
    "xtext_encode",
]
