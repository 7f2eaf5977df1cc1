"""TLS helpers shared by the adapters: one way to build a server context, one way to describe a session.

Only the stdlib ``ssl`` module is used.  A context built here refuses anything
older than TLS 1.2; a context the application passes in is used as it is.
"""

from __future__ import annotations

import ssl
from typing import Any, Protocol

from smtpcore import ServerConfig, TlsPolicy

from ._handler import TlsInfo

__all__ = ["server_context", "tls_info"]


def server_context(
    tls: ssl.SSLContext | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    config: ServerConfig | None = None,
) -> ssl.SSLContext | None:
    """The context to serve with: ``tls`` as given, or one loaded from ``certfile``/``keyfile``.

    Raises ``ValueError`` when ``config`` asks for STARTTLS or implicit TLS and
    there is no certificate, so a server never starts unable to keep its promise.
    """
    if tls is None and certfile is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(certfile, keyfile)
    if tls is None and config is not None and (config.implicit_tls or config.tls is not TlsPolicy.OFF):
        raise ValueError("the configuration needs TLS: pass tls=SSLContext or certfile=/keyfile=")
    return tls


class _TlsObject(Protocol):
    def version(self) -> str | None: ...
    def cipher(self) -> tuple[str, str, int] | None: ...
    def getpeercert(self) -> Any: ...


def tls_info(tls: _TlsObject) -> TlsInfo:
    """Describe an ``ssl.SSLSocket``, ``ssl.SSLObject`` or ``trio.SSLStream`` after its handshake."""
    cipher = tls.cipher()
    return TlsInfo(tls.version(), cipher[0] if cipher else None, tls.getpeercert() or None)
