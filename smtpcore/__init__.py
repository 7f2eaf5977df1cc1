"""smtpcore: a sans-IO SMTP and LMTP protocol engine for both roles.

The public API is everything named in ``__all__``; modules starting with an
underscore are private.  Start with :class:`ServerConnection` or
:class:`ClientConnection` and the events in ``smtpcore._events``.
"""

from ._capabilities import Capabilities
from ._client import ClientConnection
from ._config import AuthPolicy, BareNewlinePolicy, ClientConfig, LongLinePolicy, ServerConfig, Timeout, TlsPolicy
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    Auth,
    AuthCredentials,
    AuthRefused,
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
    ProxyHeader,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    TlsHandshake,
    Vrfy,
    XClient,
    XForward,
)
from ._outcomes import (
    MessageOutcome,
    RecipientOutcome,
    SessionOutcome,
    SMTPAuthenticationError,
    SMTPDeliveryError,
    SMTPNotSupportedError,
    SMTPPermanentError,
    SMTPTransientError,
)
from ._params import DeliverBy, MailParams, RcptParams, xtext_decode, xtext_encode
from ._proxy import ProxyInfo
from ._replies import Reply
from ._sasl_client import ClientMechanism, Credentials, SaslError, choose_mechanism
from ._sasl_server import OAuthError, SaslFailure, ServerMechanism
from ._sentinels import NEED_DATA, PAUSED, Sentinel
from ._server import ServerConnection, State
from ._transaction import ClientDriver, Envelope, Message, Recipient

__version__ = "0.1.0"

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "Auth",
    "AuthCredentials",
    "AuthPolicy",
    "AuthRefused",
    "AuthResponse",
    "BareNewlinePolicy",
    "Bdat",
    "Capabilities",
    "ClientConfig",
    "ClientConnection",
    "ClientDriver",
    "ClientMechanism",
    "CommandRejected",
    "ConnectionClosed",
    "Credentials",
    "Data",
    "DeliverBy",
    "EndOfMessage",
    "Envelope",
    "Event",
    "Expn",
    "Hello",
    "Help",
    "LocalProtocolError",
    "LongLinePolicy",
    "Mail",
    "MailParams",
    "Message",
    "MessageData",
    "MessageOutcome",
    "MessageRejected",
    "Noop",
    "OAuthError",
    "ProtocolError",
    "ProxyHeader",
    "ProxyInfo",
    "Quit",
    "Rcpt",
    "RcptParams",
    "Recipient",
    "RecipientOutcome",
    "RemoteProtocolError",
    "Reply",
    "Rset",
    "SMTPAuthenticationError",
    "SMTPDeliveryError",
    "SMTPNotSupportedError",
    "SMTPPermanentError",
    "SMTPTransientError",
    "SaslError",
    "SaslFailure",
    "ServerConfig",
    "ServerConnection",
    "ServerMechanism",
    "SessionOutcome",
    "Sentinel",
    "StartTls",
    "State",
    "Timeout",
    "TlsHandshake",
    "TlsPolicy",
    "Vrfy",
    "XClient",
    "XForward",
    "choose_mechanism",
    "xtext_decode",
    "xtext_encode",
    "__version__",
]
