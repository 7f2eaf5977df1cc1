"""AUTH secrets never reach a transcript."""

from __future__ import annotations

import pytest

from adapters._handler import AsyncHandler, Handler, redact_auth, wants_transcript


@pytest.mark.parametrize(
    ("data", "in_auth", "expected"),
    [
        (b"AUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n", False, b"AUTH PLAIN <redacted>\r\n"),
        (b"auth login YWxpY2U=\r\nNOOP\r\n", False, b"auth login <redacted>\r\nNOOP\r\n"),
        (b"AUTH LOGIN\r\n", False, b"AUTH LOGIN\r\n"),  # nothing secret on it
        (b"czNjcmV0\r\n", True, b"<redacted>\r\n"),  # a response inside the exchange
        (b"czNj", True, b"<redacted>"),  # even half a line
        (b"MAIL FROM:<a@b.example>\r\n", False, b"MAIL FROM:<a@b.example>\r\n"),
    ],
)
def test_redact_auth(data: bytes, in_auth: bool, expected: bytes) -> None:
    assert redact_auth(data, in_auth) == expected


def test_transcript_hook_only_when_overridden_and_enabled() -> None:
    class Plain(Handler):
        pass

    class Recording(AsyncHandler):
        async def transcript(self, session: object, direction: str, data: bytes) -> None:
            return None

    recording = Recording()
    assert not wants_transcript(Plain())
    assert wants_transcript(recording)
    recording.transcript_enabled = False  # type: ignore[attr-defined]
    assert not wants_transcript(recording)
