"""Draw the server state diagram (Mermaid) from ``smtpcore._server.TRANSITIONS``.

The diagram in docs/server.md is generated, never drawn by hand, so it cannot
drift from the table the code runs on; tests/test_docs.py checks it is current.
Run ``python docs/make_state_diagram.py`` to print it.
"""

from __future__ import annotations

from smtpcore._server import TRANSITIONS, State

# Moves made outside the command table: by the end of a message, a reply, TLS.
EXTRA = [
    ("PROXY", "GREETING", "PROXY header (with proxy_protocol)"),
    ("GREETING", "CONNECTED", "220 greeting"),
    ("GREETING", "REFUSED", "554 greeting"),
    ("DATA", "READY", "CRLF.CRLF, reply"),
    ("CHUNK", "CHUNKING", "chunk read"),
    ("CHUNK", "READY", "LAST chunk read, reply"),
    ("AUTH", "READY", "235 / 535 / cancel"),
    ("TLS", "CONNECTED", "tls_established()"),
    ("REFUSED", "CLOSED", "QUIT"),
]


def diagram() -> str:
    lines = ["```mermaid", "stateDiagram-v2"]
    for state, row in TRANSITIONS.items():
        for event, target in row.items():
            if not (event.__name__ == "Hello" and target is State.READY and state is not State.CONNECTED):
                lines.append(f"    {state.name} --> {target.name}: {event.__name__}")
    lines.append("    READY --> READY: Hello (also from MAIL, RCPT, CHUNKING)")
    lines.extend(f"    {a} --> {b}: {label}" for a, b, label in EXTRA)
    lines.append("```")
    return "\n".join(lines)


if __name__ == "__main__":
    print(diagram())
