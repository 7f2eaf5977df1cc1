"""Adapters: smtpcore's server on real sockets, in four concurrency dialects.

One handler interface (:class:`Handler` for the blocking and gevent servers,
:class:`AsyncHandler` for asyncio and trio), one dispatcher that turns events
into hook calls, and four short servers that only move bytes and keep time:

* ``adapters.asyncio_server.SMTPServer`` / ``serve()``
* ``adapters.trio_server.SMTPServer`` / ``serve()`` (needs ``smtpcore[trio]``)
* ``adapters.gevent_server.SMTPServer`` (needs ``smtpcore[gevent]``)
* ``adapters.blocking_server.SMTPServer`` (a thread per connection)

See docs/adapters.md for choosing one and docs/handlers.md for the hooks.
"""

from ._handler import AsyncHandler, Envelope, Handler, Recipient, Session, SMTPError, TlsInfo
from ._tls import server_context

__all__ = ["AsyncHandler", "Envelope", "Handler", "Recipient", "SMTPError", "Session", "TlsInfo", "server_context"]
