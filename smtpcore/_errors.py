"""The two exceptions smtpcore raises, and why there are only two.

As in h11, an error is either the *peer's* fault (:class:`RemoteProtocolError`: the
bytes we received break the protocol) or *ours* (:class:`LocalProtocolError`: the
application asked the machine to do something the protocol does not allow).  Both
carry the SMTP reply that describes the problem, so an adapter never has to invent
one: a remote error's reply has already been queued for the peer (flush
``data_to_send()`` and close), a local error's reply says what went wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._replies import Reply

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base class of every error smtpcore raises on purpose.

    ``reply`` is the SMTP reply that goes with the error (``None`` where no reply
    applies, as for a client talking to a server).
    """

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class LocalProtocolError(ProtocolError):
    """The application used the machine wrongly.

    Examples: sending a reply when no command is waiting for one, a reply code
    outside 200-599, or a command argument containing CR or LF.  Nothing has been
    written to the outgoing buffer; the connection is still usable, but for one
    case that nothing can undo: a server adapter that read past the PROXY header
    of an implicit-TLS connection (see ``ServerConnection.max_read``), whose
    connection is then closed.
    """


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol in a way that ends the connection.

    For a server, ``reply`` is the final reply (421 or 554) and it is already in
    the outgoing buffer: send ``data_to_send()`` and close.  For a client,
    ``reply`` is the offending reply when there is one.  Once raised, the
    connection is closed for good: ``next_event()`` raises it again.
    """
