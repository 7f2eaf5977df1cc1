"""The two non-event answers of ``next_event()``, shared by both roles (as in h11)."""

from __future__ import annotations

__all__ = ["NEED_DATA", "PAUSED", "Sentinel"]


class Sentinel:
    """A named singleton; compare with ``is``."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: Nothing more can be parsed until ``receive_data()`` is called.
NEED_DATA = Sentinel("NEED_DATA")
#: The machine waits for the application (a reply to send, a TLS handshake to do)
#: before it reads further; buffered input stays buffered.
PAUSED = Sentinel("PAUSED")
