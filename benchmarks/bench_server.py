"""Server parsing throughput of the sans-IO core (no sockets).

Two figures, each printed beside a pure-Python ceiling measured in the same run:

* a realistic pipelined session (EHLO, MAIL, 10 RCPT, DATA, a small message,
  QUIT), in commands per second, beside ``bytes.split`` of the same bytes into
  lines (the least any line-based parser must do);
* DATA content in MB/s, fed in 1 B, 1 KiB and 64 KiB pieces, for ordinary text,
  for text where every line starts with a dot, and for 8-bit text, beside
  ``bytes.find`` for the end marker plus ``bytes.replace`` for the unstuffing.
  These run under the default policies, which look for bare CR/LF and long
  lines; a second set of 64 KiB rows turns both checks off (no target) to show
  what the checks cost.  Every 64 KiB row also notes its ratio to ``bytes.find``
  alone over the same pieces (no unstuffing; timed in the same alternate runs,
  no target), the ceiling issue 6 names: a reader sees both readings.

Run: ``python -m benchmarks.bench_server [--quick]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable

from smtpcore import (
    NEED_DATA,
    BareNewlinePolicy,
    ConnectionClosed,
    LongLinePolicy,
    MessageData,
    ServerConfig,
    ServerConnection,
)

from ._report import Figure
from ._util import Measurement, measure_alternating, measure_pair, row

SESSION = (
    b"EHLO client.example.com\r\n"
    b"MAIL FROM:<sender@example.com> SIZE=1000 BODY=8BITMIME\r\n"
    + b"".join(b"RCPT TO:<user%d@example.org>\r\n" % i for i in range(10))
    + b"DATA\r\nSubject: hi\r\n\r\nHello.\r\n.\r\nQUIT\r\n"
)
SESSION_COMMANDS = 14
# A server builds its configuration once and shares it between connections, so
# the figures measure the connection's work, not ServerConfig's validation.
DEFAULT = ServerConfig(max_message_size=0)
# Both content checks off: only the end search and the unstuffing remain.
CHECKS_OFF = ServerConfig(max_message_size=0, bare_newlines=BareNewlinePolicy.ACCEPT, long_lines=LongLinePolicy.ACCEPT)


def run_session(data: bytes = SESSION) -> int:
    conn = ServerConnection(DEFAULT)
    conn.accept()
    conn.receive_data(data)
    events = 0
    while True:
        event = conn.next_event()
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            break
        events += 1
        if conn.reply_due:
            conn.accept()
    conn.data_to_send()
    return events


def session_ceiling(data: bytes = SESSION) -> int:
    return len(data.split(b"\r\n"))


def make_body(kind: str, size: int) -> bytes:
    if kind == "text":
        line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    elif kind == "dots":
        line = b"..The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    else:
        line = "Größenwahn, naïve café, Ελληνικά, 日本語のテキスト, and some more words here.\r\n".encode()
    return (line * (size // len(line) + 1))[:size].rsplit(b"\r\n", 1)[0] + b"\r\n"


def receive_body(body: bytes, piece: int, config: ServerConfig = DEFAULT) -> int:
    return receive_content(body + b".\r\n", piece, config)


def receive_content(data: bytes, piece: int, config: ServerConfig = DEFAULT) -> int:
    """A session's DATA content, ``data`` (the end marker included), fed in pieces of ``piece``."""
    conn = ServerConnection(config)
    conn.accept()
    conn.receive_data(b"EHLO a.example\r\nMAIL FROM:<a@a.example>\r\nRCPT TO:<b@b.example>\r\nDATA\r\n")
    received = 0
    for _ in range(4):
        conn.next_event()
        conn.accept()
    view = memoryview(data)
    for start in range(0, len(data), piece):
        conn.receive_data(view[start : start + piece])
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, MessageData):
                received += len(event.data)
            elif conn.reply_due:
                conn.accept()
    return received


def find_body(body: bytes, piece: int) -> int:
    """``bytes.find`` for the end marker alone, in the same pieces as :func:`ceiling_body` (no unstuffing)."""
    data = body + b".\r\n"
    found = 0
    for start in range(0, len(data), piece):
        found += data[start : start + piece].find(b"\r\n.\r\n") >= 0
    return found


def measure_data(
    name: str, body: bytes, piece: int, repeat: int, config: ServerConfig = DEFAULT
) -> tuple[Measurement, float, float | None]:
    """Ours on ``body`` in ``piece``-octet pieces: (our runs, find+replace ratio, find-alone ratio).

    At 64 KiB the three are timed in alternate runs; the find-alone ratio is None for smaller pieces.
    """
    funcs: list[tuple[str, Callable[[], object], int]] = [
        (name, functools.partial(receive_body, body, piece, config), 1),
        (f"{name} (find+replace)", functools.partial(ceiling_body, body, piece), 1),
    ]
    if piece == 65536:
        funcs.append((f"{name} (find)", functools.partial(find_body, body, piece), 1))
    ours, ceiling, *find = measure_alternating(funcs, repeat)
    return ours, ceiling.median / ours.median, find[0].median / ours.median if find else None


def ceiling_body(body: bytes, piece: int) -> int:
    """The least a pure-Python reader does: find the end, undo the stuffing."""
    data = body + b".\r\n"
    received = 0
    for start in range(0, len(data), piece):
        chunk = data[start : start + piece]
        chunk.find(b"\r\n.\r\n")
        received += len(chunk.replace(b"\r\n.", b"\r\n"))
    return received


SECTION = "core: server parsing (no sockets)"


def collect(
    quick: bool = False,
    *,
    repeat: int | None = None,
    sessions: int | None = None,
    size: int | None = None,
    byte_size: int = 16 * 1024,
    emit: Callable[[str], object] = lambda line: None,
) -> tuple[list[Figure], dict[str, object]]:
    """Measure both figures; ``emit`` gets this module's own table rows as they come.

    Returns the suite's figures and the flat ``results`` dict that ``--json`` writes.
    """
    repeat = repeat or (3 if quick else 7)
    sessions = sessions or (200 if quick else 3000)
    size = size or (256 * 1024 if quick else 8 * 1024 * 1024)
    results: dict[str, object] = {}
    figures: list[Figure] = []

    ours, ceiling = measure_pair(
        "session",
        lambda: [run_session() for _ in range(sessions)],
        lambda: [session_ceiling() for _ in range(sessions)],
        repeat,
    )
    rate = ours.rate(sessions * SESSION_COMMANDS)
    # The same ratio as the suite's row, the same way up: ceiling time over ours (1.0 = as fast as split).
    emit(row("pipelined session: commands", rate, "cmd/s", ceiling.median / ours.median, "(of bytes.split)"))
    results["session_commands_per_s"] = rate
    figures.append(
        Figure(
            SECTION, "pipelined session (EHLO, MAIL, 10 RCPT, DATA, QUIT)", "cmd/s", *rate,
            ratio=ceiling.median / ours.median, against="of bytes.split",
            target=500_000, target_on="median",
        )
    )  # fmt: skip

    for kind in ("text", "dots", "8bit"):
        body = make_body(kind, size)
        for piece in (1, 1024, 65536):
            # Byte-at-a-time is slow by nature; keep it to a small body.
            this_body = body[:byte_size] + b"\r\n" if piece == 1 else body
            this_body = this_body.rsplit(b"\r\n", 1)[0] + b"\r\n"
            ours, ratio, find_ratio = measure_data(f"data-{kind}-{piece}", this_body, piece, repeat)
            megabytes = len(this_body) / 1e6
            rate = ours.rate(megabytes)
            emit(row(f"DATA {kind}, {piece} B pieces", rate, "MB/s", ratio, _ceiling_note(find_ratio)))
            results[f"data_{kind}_{piece}_mb_per_s"] = rate
            results[f"data_{kind}_{piece}_ratio"] = ratio
            if find_ratio is not None:
                results[f"data_{kind}_{piece}_find_ratio"] = find_ratio
            target = 0.6 if piece == 65536 else None
            figures.append(
                Figure(
                    SECTION, f"DATA {kind}, {piece} B pieces", "MB/s", *rate,
                    ratio=ratio, against="of find+replace", target=target, note=_find_note(find_ratio),
                )
            )  # fmt: skip

    # The same 64 KiB rows with both content checks off: no target, they show
    # what looking for bare CR/LF and long lines costs beside the rows above.
    for kind in ("text", "dots", "8bit"):
        body = make_body(kind, size)
        label = f"DATA {kind}, 65536 B pieces, content checks off"
        ours, ratio, find_ratio = measure_data(f"data-{kind}-off", body, 65536, repeat, CHECKS_OFF)
        rate = ours.rate(len(body) / 1e6)
        emit(row(label, rate, "MB/s", ratio, _ceiling_note(find_ratio)))
        results[f"data_{kind}_65536_checks_off_mb_per_s"] = rate
        results[f"data_{kind}_65536_checks_off_ratio"] = ratio
        results[f"data_{kind}_65536_checks_off_find_ratio"] = find_ratio
        figures.append(
            Figure(SECTION, label, "MB/s", *rate, ratio=ratio, against="of find+replace", note=_find_note(find_ratio))
        )
    return figures, results


def _ceiling_note(find_ratio: float | None) -> str:
    return "(of the find+replace ceiling" + (f"; {_find_note(find_ratio)})" if find_ratio is not None else ")")


def _find_note(find_ratio: float | None) -> str:
    # No target: issue 6 names bytes.find, the target stays on find+replace (the work a reader must do).
    return f"{find_ratio:.2f}x of bytes.find alone (no target)" if find_ratio is not None else ""


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few runs (a smoke test)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)

    print(f"{'server core (no sockets)':<48} {'median':>14} {'unit':<10} [min .. max] vs ceiling")
    _, results = collect(args.quick, emit=print)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
