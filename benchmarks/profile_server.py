"""Where bench_server's pipelined session spends its time, beside a pure-Python floor.

Three tables, all measured in one run (the machines are shared and noisy: each
figure is the minimum of several runs, and only figures from the same run are
compared):

1. **Each command's cost**, by difference: the session cut after the greeting,
   EHLO, MAIL, the first RCPT, all ten, the message and QUIT, each timed whole.
2. **The steps of one RCPT**, each timed alone on the session's own line: the
   receive buffer, decoding, the verb, the parser, and the state machine with
   its reply (``_command`` + ``accept()``); what is left of the RCPT's cost is
   ``next_event()``'s dispatch and the caller's loop.
3. **The floor**: what any pure-Python server must do per command line, built
   up one step at a time on the same lines: split the burst, decode and take
   the verb, look it up in a dict, one regex match, one frozen event, one
   reply appended, and finally the sans-IO calling convention itself
   (``next_event()``, ``reply_due``, ``accept()`` as methods).

Run: ``python -m benchmarks.profile_server [--profile] [--quick]``; ``--profile``
adds cProfile's top functions (inflated by the profiler: read them as shares).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import sys
import timeit
from collections.abc import Callable

from smtpcore import NEED_DATA, ConnectionClosed, Rcpt, RcptParams, ServerConnection
from smtpcore._commands import PARSERS, Context, decode_line, split_verb
from smtpcore._receivebuffer import ReceiveBuffer

from .bench_server import DEFAULT, SESSION, SESSION_COMMANDS, run_session

EHLO = b"EHLO client.example.com\r\n"
MAIL = b"MAIL FROM:<sender@example.com> SIZE=1000 BODY=8BITMIME\r\n"
RCPTS = [b"RCPT TO:<user%d@example.org>\r\n" % i for i in range(10)]
MESSAGE = b"DATA\r\nSubject: hi\r\n\r\nHello.\r\n.\r\n"
QUIT = b"QUIT\r\n"
assert EHLO + MAIL + b"".join(RCPTS) + MESSAGE + QUIT == SESSION

RCPT_LINE = RCPTS[1][:-2]


def best(func: Callable[[], object], number: int, repeat: int, setup: Callable[[], object] | None = None) -> float:
    """Seconds per call: the minimum over ``repeat`` runs of ``number`` calls."""
    timer = timeit.Timer(func, setup=setup or (lambda: None))
    return min(timer.repeat(repeat=repeat, number=number)) / number


# --- 1. each command, by difference -----------------------------------------------------------------


def session_of(data: bytes) -> Callable[[], int]:
    return lambda: run_session(data)


def per_command(number: int, repeat: int) -> list[tuple[str, float]]:
    cuts = [
        ("connection + greeting", b""),
        ("EHLO (with its extension list)", EHLO),
        ("MAIL with SIZE and BODY", EHLO + MAIL),
        ("first RCPT", EHLO + MAIL + RCPTS[0]),
        ("each further RCPT (mean of 9)", EHLO + MAIL + b"".join(RCPTS)),
        ("DATA, 3 content lines, end", EHLO + MAIL + b"".join(RCPTS) + MESSAGE),
        ("QUIT", SESSION),
    ]
    times = [best(session_of(data), number, repeat) for _, data in cuts]
    rows = [(cuts[0][0], times[0])]
    for index in range(1, len(cuts)):
        cost = times[index] - times[index - 1]
        rows.append((cuts[index][0], cost / 9 if index == 4 else cost))
    rows.append(("whole session", times[-1]))
    return rows


# --- 2. the steps of one RCPT -------------------------------------------------------------------------


def in_rcpt_state() -> ServerConnection:
    conn = ServerConnection(DEFAULT)
    conn.accept()
    conn.receive_data(EHLO + MAIL + RCPTS[0])
    while conn.next_event() is not NEED_DATA:
        conn.accept()
    return conn


def rcpt_steps(rcpt_cost: float, number: int, repeat: int) -> list[tuple[str, float]]:
    buffer = ReceiveBuffer()
    line, crlf_line = RCPT_LINE, RCPT_LINE + b"\r\n"
    text = line.decode()
    verb, argument = split_verb(text)
    context = Context(frozenset({"SIZE", "8BITMIME"}), frozenset())
    event = PARSERS["RCPT"](argument, context)
    holder: list[ServerConnection] = []

    def fresh() -> None:
        holder[:] = [in_rcpt_state()]

    def machine() -> None:
        conn = holder[0]
        conn._command("RCPT", event)
        conn.accept()

    def feed_and_take() -> None:
        buffer.feed(crlf_line)
        buffer.next_line(512)

    steps = [
        ("receive buffer: feed + next_line", best(feed_and_take, number, repeat)),
        ("decode_line (UTF-8, control check)", best(lambda: decode_line(line), number, repeat)),
        ("split_verb", best(lambda: split_verb(text), number, repeat)),
        ("verb lookup + RCPT parser + event", best(lambda: PARSERS[verb](argument, context), number, repeat)),
        # 900 per fresh connection: max_recipients is 1000.
        ("_command + accept() (state, reply)", best(machine, 900, repeat * 3, setup=fresh)),
    ]
    rest = rcpt_cost - sum(cost for _, cost in steps)
    steps.append(("rest: next_event dispatch, caller's loop", rest))
    return steps


# --- 3. the floor ---------------------------------------------------------------------------------------

# One regex of the size of the real ones: a path in angle brackets, optional parameters.
_FLOOR_RE = re.compile(r"(?:FROM|TO):<([^<>@ ]+@[A-Za-z0-9.-]+)>(?: .*)?|[A-Za-z0-9.-]+|")
_PARAMS = RcptParams()
_REPLY = b"250 2.1.5 Recipient OK\r\n"
_VERBS = dict.fromkeys(["EHLO", "MAIL", "RCPT", "DATA", "QUIT"], True)
_new = object.__new__
_setattr = object.__setattr__


def _event(recipient: str) -> Rcpt:
    self = _new(Rcpt)
    _setattr(self, "recipient", recipient)
    _setattr(self, "params", _PARAMS)
    return self


def floor_split(data: bytes = SESSION) -> int:
    return len(data.split(b"\r\n"))


def floor_dispatch(data: bytes = SESSION) -> int:
    count = 0
    for line in data.split(b"\r\n"):
        verb, _, _argument = line.decode().partition(" ")
        if _VERBS.get(verb.upper()):
            count += 1
    return count


def floor_regex(data: bytes = SESSION) -> int:
    count = 0
    for line in data.split(b"\r\n"):
        verb, _, argument = line.decode().partition(" ")
        if _VERBS.get(verb.upper()) and _FLOOR_RE.fullmatch(argument) is not None:
            count += 1
    return count


def floor_event(data: bytes = SESSION) -> int:
    count = 0
    for line in data.split(b"\r\n"):
        verb, _, argument = line.decode().partition(" ")
        if _VERBS.get(verb.upper()):
            match = _FLOOR_RE.fullmatch(argument)
            if match is not None:
                _event(argument)
                count += 1
    return count


def floor_reply(data: bytes = SESSION) -> int:
    out = bytearray()
    for line in data.split(b"\r\n"):
        verb, _, argument = line.decode().partition(" ")
        if _VERBS.get(verb.upper()):
            match = _FLOOR_RE.fullmatch(argument)
            if match is not None:
                _event(argument)
                out += _REPLY
    bytes(out)
    return len(out)


class _FloorConnection:
    """The floor behind the sans-IO calling convention: the caller asks for each
    event, checks whether a reply is due, and answers it, as run_session does."""

    __slots__ = ("_due", "_lines", "_out")

    def __init__(self, data: bytes) -> None:
        self._lines = iter(data.split(b"\r\n"))
        self._out = bytearray()
        self._due = False

    def next_event(self) -> object:
        for line in self._lines:
            verb, _, argument = line.decode().partition(" ")
            if _VERBS.get(verb.upper()):
                match = _FLOOR_RE.fullmatch(argument)
                if match is not None:
                    self._due = True
                    return _event(argument)
        return NEED_DATA

    @property
    def reply_due(self) -> bool:
        return self._due

    def accept(self) -> None:
        self._due = False
        self._out += _REPLY


def floor_api(data: bytes = SESSION) -> int:
    conn = _FloorConnection(data)
    events = 0
    while True:
        event = conn.next_event()
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            break
        events += 1
        if conn.reply_due:
            conn.accept()
    bytes(conn._out)
    return events


def floors(number: int, repeat: int) -> list[tuple[str, float]]:
    steps = [
        ("bytes.split of the burst", floor_split),
        ("+ decode, partition, upper, dict dispatch", floor_dispatch),
        ("+ one regex fullmatch", floor_regex),
        ("+ one frozen event (object.__new__ + 2 setattr)", floor_event),
        ("+ one reply appended", floor_reply),
        ("+ the calling convention (next_event, reply_due, accept)", floor_api),
    ]
    return [(name, best(func, number, repeat) / SESSION_COMMANDS) for name, func in steps]


# --- output -----------------------------------------------------------------------------------------


def table(title: str, rows: list[tuple[str, float]], per: float = 1.0) -> None:
    print(f"\n{title}")
    for name, seconds in rows:
        micro = seconds * 1e6 / per
        rate = f"{per / seconds:>12,.0f} /s" if seconds > 0 else ""
        print(f"  {name:<58} {micro:8.2f} us {rate}")


def profile(sessions: int, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(sessions):
        run_session()
    profiler.disable()
    print(f"\ncProfile, {sessions} sessions ({sessions * SESSION_COMMANDS} commands), top {top} by own time:")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test; noisy figures)")
    parser.add_argument("--profile", action="store_true", help="also print cProfile's top functions")
    args = parser.parse_args(argv)
    number, repeat = (200, 3) if args.quick else (2000, 7)

    commands = per_command(number, repeat)
    session = commands[-1][1]
    table("1. each command of the session (by difference of cut sessions)", commands)
    print(f"  => {SESSION_COMMANDS} commands: {session / SESSION_COMMANDS * 1e6:.2f} us/command, "
          f"{SESSION_COMMANDS / session:,.0f} commands/s")  # fmt: skip

    rcpt = commands[4][1]
    table("2. the steps of one RCPT (each alone; the rest by difference)", rcpt_steps(rcpt, number * 20, repeat))

    floor = floors(number, repeat)
    table("3. the pure-Python floor per command line, step by step (same lines)", floor)
    print(f"  => the session costs {session / SESSION_COMMANDS / floor[-1][1]:.1f}x the last floor, "
          f"{session / SESSION_COMMANDS / floor[-2][1]:.1f}x the floor without the calling convention")  # fmt: skip

    if args.profile:
        profile(number, 25)


if __name__ == "__main__":
    main(sys.argv[1:])
