"""Adapters: smtpcore's server on real sockets, in four concurrency dialects.

One handler interface (:class:`Handler` for the blocking and gevent servers,
:class:`AsyncHandler` for asyncio and trio), one dispatcher that turns events
into hook calls, and four short servers that only move bytes and keep time:

* ``adapters.asyncio_server.SMTPServer`` / ``serve()``
* ``adapters.trio_server.SMTPServer`` / ``serve()`` (needs ``smtpcore[trio]``)
* ``adapters.gevent_server.SMTPServer`` (needs ``smtpcore[gevent]``)
* ``adapters.blocking_server.SMTPServer`` (a thread per connection, from a pool)

See docs/adapters.md for choosing one and docs/handlers.md for the hooks.

Names are imported on first use (PEP 562): the pytest plugin's entry point lives
in this package, and importing smtpcore while pytest loads plugins would do so
before coverage starts measuring, in every test run of every project that has
smtpcore installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._handler import AsyncHandler, Envelope, Handler, Recipient, Session, SMTPError, TlsInfo
    from ._tls import server_context

_WHERE = {
    "AsyncHandler": "._handler",
    "Envelope": "._handler",
    "Handler": "._handler",
    "Recipient": "._handler",
    "SMTPError": "._handler",
    "Session": "._handler",
    "TlsInfo": "._handler",
    "server_context": "._tls",
}

__all__ = ["AsyncHandler", "Envelope", "Handler", "Recipient", "SMTPError", "Session", "TlsInfo", "server_context"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'adapters' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
