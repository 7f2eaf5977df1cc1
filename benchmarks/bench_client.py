"""Client throughput of the sans-IO core (no sockets).

Three figures, each beside a ceiling measured in the same run, as a ratio:

* reply parsing in replies per second: a pipelined burst of single-line replies
  through ``ClientConnection``, beside ``bytes.split`` of the same bytes into
  lines (the least any line-based parser must do);
* multi-line EHLO replies parsed into ``Capabilities`` per second, beside the
  same ``bytes.split``;
* DATA dot-stuffing in MB/s (``DotStuffer`` on 64 KiB chunks of ordinary text,
  of text where every line starts with a dot, and of text with bare LFs),
  beside the plain ``bytes.find`` + ``bytes.replace`` that any stuffer needs.

A ratio below 1 is how much slower than the ceiling we are.  Run:
``python -m benchmarks.bench_client [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

from smtpcore import ClientConfig, ClientConnection, Noop, Reply
from smtpcore._capabilities import Capabilities
from smtpcore._client import _Pending
from smtpcore._dotstuff import DotStuffer
from smtpcore._receivebuffer import ReceiveBuffer
from smtpcore._replyreader import ReplyReader

from ._util import measure, row

REPLIES = 1000
REPLY_BURST = b"".join(b"250 2.1.5 Recipient %d OK\r\n" % i for i in range(REPLIES))

EHLO = (
    b"250-mx.example.com Hello client.example.com [192.0.2.1]\r\n"
    b"250-SIZE 35882577\r\n250-8BITMIME\r\n250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250-DSN\r\n"
    b"250-BINARYMIME\r\n250 STARTTLS\r\n"
)


def parse_burst() -> int:
    """The machine's work for REPLIES pipelined replies (NOOPs stand in for commands)."""
    conn = ClientConnection(ClientConfig())
    conn.receive_data(b"220 mx ESMTP\r\n")
    conn.next_event()
    # REPLIES commands outstanding, as after a long pipelined group.
    conn._outstanding.extend(_Pending(Noop()) for _ in range(REPLIES))
    conn.receive_data(REPLY_BURST)
    count = 0
    while isinstance(conn.next_event(), Reply):
        count += 1
    assert count == REPLIES
    return count


def split_ceiling(data: bytes = REPLY_BURST) -> int:
    return len(data.split(b"\r\n"))


def parse_ehlo() -> Capabilities:
    buffer = ReceiveBuffer()
    buffer.feed(EHLO)
    reply = ReplyReader(ClientConfig()).next_reply(buffer)
    assert reply is not None
    return Capabilities.from_reply(reply)


def text(size: int, line: bytes) -> bytes:
    return (line * (size // len(line) + 1))[:size]


def stuff(chunks: list[bytes]) -> int:
    stuffer = DotStuffer()
    total = 0
    for chunk in chunks:
        total += len(stuffer.feed(chunk))
    return total + len(stuffer.finish())


def stuff_ceiling(chunks: list[bytes]) -> int:
    total = 0
    for chunk in chunks:
        chunk.find(b"\r\n.")
        total += len(chunk.replace(b"\r\n.", b"\r\n.."))
    return total


def normalise_and_stuff_ceiling(chunks: list[bytes]) -> int:
    """The ceiling for text with bare LFs: ours writes each as CRLF too, so this does
    that ``replace`` before the stuffing's (without it the stuffing finds nothing)."""
    return stuff_ceiling([chunk.replace(b"\n", b"\r\n") for chunk in chunks])


#: The ceiling for each kind of text (bare LFs: see normalise_and_stuff_ceiling).
STUFF_TEXTS = (
    ("ordinary text", b"The quick brown fox jumps over the lazy dog.\r\n", stuff_ceiling),
    ("every line starts with a dot", b".The quick brown fox jumps over the lazy dog.\r\n", stuff_ceiling),
    ("bare LF line endings", b"The quick brown fox jumps over the lazy dog.\n", normalise_and_stuff_ceiling),
)


def _slower(rate: tuple[float, float, float], ceiling: tuple[float, float, float]) -> str:
    """The ratio as "N x slower", readable when it is far below 1."""
    return f"ratio {rate[0] / ceiling[0]:.4f} ({ceiling[0] / rate[0]:.0f}x slower than the ceiling)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    repeat, size = (3, 1 << 20) if args.quick else (7, 8 << 20)
    figures: dict[str, float] = {}
    lines: list[str] = []

    ours = measure("replies", parse_burst, repeat, number=3)
    ceiling = measure("split", split_ceiling, repeat, number=30)
    rate, ceiling_rate = ours.rate(REPLIES), ceiling.rate(REPLIES)
    figures["replies_per_s"] = rate[0]
    lines.append(row("reply parsing (pipelined burst)", rate, "replies/s", note=_slower(rate, ceiling_rate)))
    lines.append(row("  ceiling: bytes.split into lines", ceiling_rate, "replies/s"))

    ehlo = measure("ehlo", parse_ehlo, repeat, number=300)
    ehlo_ceiling = measure("split", lambda: split_ceiling(EHLO), repeat, number=3000)
    rate, ceiling_rate = ehlo.rate(1), ehlo_ceiling.rate(1)
    figures["ehlo_per_s"] = rate[0]
    lines.append(row("EHLO reply -> Capabilities (11 lines)", rate, "replies/s", note=_slower(rate, ceiling_rate)))
    lines.append(row("  ceiling: bytes.split into lines", ceiling_rate, "replies/s"))

    megabytes = size / 1e6
    for label, line, ceiling_of in STUFF_TEXTS:
        data = text(size, line)
        chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
        ours = measure(label, functools.partial(stuff, chunks), repeat)
        ceiling = measure(label, functools.partial(ceiling_of, chunks), repeat)
        rate, ceiling_rate = ours.rate(megabytes), ceiling.rate(megabytes)
        figures[f"stuff_mb_s[{label}]"] = rate[0]
        lines.append(row(f"dot-stuffing, {label} (64 KiB chunks)", rate, "MB/s", rate[0] / ceiling_rate[0]))
        lines.append(row("  ceiling: bytes.find + bytes.replace", ceiling_rate, "MB/s"))

    print(f"{'benchmark':<48} {'median':>14} {'unit':<10} [min .. max]      ratio to ceiling")
    print("\n".join(lines))
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
