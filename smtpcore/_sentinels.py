"""The two non-event answers of ``next_event()``, shared by both roles (as in h11)."""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["NEED_DATA", "PAUSED", "Sentinel"]


class Sentinel(enum.Enum):
    """``NEED_DATA`` or ``PAUSED``; compare with ``is``.

    An enum so that a type checker narrows on that comparison: after
    ``if event is NEED_DATA or event is PAUSED: ...`` what is left is an ``Event``.
    """

    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return self.name


#: Nothing more can be parsed until ``receive_data()`` is called.
NEED_DATA: Final = Sentinel.NEED_DATA
#: The machine waits for the application (a reply to send, a TLS handshake to do)
#: before it reads further; buffered input stays buffered.
PAUSED: Final = Sentinel.PAUSED
