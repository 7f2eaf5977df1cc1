"""Growth: does the cost stay linear as the input grows?  (core, no sockets)

Three series, each timed as the median of several runs:

* the cost per byte of one message as it grows from 1 KiB to 100 MiB, fed in
  64 KiB pieces (the size an adapter reads);
* the cost per recipient of a session as the recipients grow from 1 to 1000;
* the cost per byte of a message fed one byte at a time (1 KiB to 64 KiB): the
  receive buffer must remember how far it already searched, or this turns
  quadratic.

For each series the suite prints the fitted exponent of the marginal cost:
the time above the smallest size's against the size above the smallest
(least squares on log-log, on each size's fastest run).  1.0 is linear, 2.0
quadratic; anything clearly above 1 is a bug.  The smallest size's time is
mostly the session's fixed cost, and subtracting it is what lets the fit see
growth: fitted on total time, a fixed cost that is most of the smaller sizes'
time pulls the exponent so far below 1 that a per-byte cost doubling at the
top of the range would still read as linear.

One exponent over the whole range still reads a per-unit cost that only grows
at the top (doubles or triples by the largest size) as 1.07-1.14, within noise
of linear.  So each series of three sizes or more has a second, top-end check:
the cost per unit of the last step (the time from the second largest size to
the largest, over the units added) divided by the cost per unit above the
smallest size up to the middle size.  Linear growth gives 1.0 whatever the
fixed cost; a per-unit cost that doubles by the top gives 1.7-2.2 on these
sizes, and the suite's own runs 0.8-1.3.

Run: ``python -m benchmarks.bench_growth [--quick]``.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Callable

from smtpcore import NEED_DATA, ConnectionClosed, ServerConfig, ServerConnection

from ._report import Figure, from_runs, print_table
from ._util import measure
from .bench_server import make_body, receive_content

SECTION = "growth: linear total cost (core, no sockets)"
KIB, MIB = 1024, 1024 * 1024
#: An exponent at or above this is reported as "not linear".
LINEAR_LIMIT = 1.15
#: A top-end slope at or above this is reported as growth at the top.  A per-unit cost that doubles
#: by the largest size reads 1.71 at the least (byte-wise, 1-16 KiB) and the full runs of 2026-12-07
#: read at most 1.30 (recipients, a fast run at 100 skewing the middle): between the two, with a
#: margin of about 15% either way.
TOP_END_LIMIT = 1.5


def fitted_exponent(sizes: list[float], seconds: list[float]) -> float:
    """Slope of log(seconds) against log(size), by least squares."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(t) for t in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def marginal_exponent(sizes: list[float], seconds: list[float]) -> float:
    """The exponent of the cost above the smallest size's (see the module's docstring).

    With a fixed cost ``a``, ``t = a + b * s ** k`` gives ``t - t0 = b * (s ** k - s0 ** k)``:
    exactly ``k`` = 1 for linear growth, whatever ``a``, and about ``k`` for sizes well
    above the smallest.  A size measured no slower than the smallest (noise, at the
    small end) says nothing of growth and is left out; with fewer than two sizes
    left the fit falls back to total time.
    """
    s0, t0 = sizes[0], seconds[0]
    above = [(s - s0, t - t0) for s, t in zip(sizes[1:], seconds[1:], strict=True) if t > t0]
    if len(above) < 2:
        return fitted_exponent(sizes, seconds)
    return fitted_exponent([s for s, _ in above], [t for _, t in above])


def top_end_slope(sizes: list[float], seconds: list[float]) -> float:
    """Cost per unit of the last step over that from the smallest to the middle size (see the module's docstring).

    With ``t = a + b * s`` both are ``b``: 1.0, whatever the fixed cost ``a``.  Needs three sizes.
    """
    middle = len(sizes) // 2
    reference = (seconds[middle] - seconds[0]) / (sizes[middle] - sizes[0])
    last = (seconds[-1] - seconds[-2]) / (sizes[-1] - sizes[-2])
    return last / reference


def _check(name: str, value: float, limit: float, note: str) -> Figure:
    """A linearity check's row: one figure derived from the series' runs (no min-max), under ``limit``."""
    return Figure(
        SECTION, name, "", value, value, value,
        target=limit, target_on="median", lower_is_better=True, derived=True, note=note,
    )  # fmt: skip


def run_recipients(count: int) -> int:
    data = (
        b"EHLO client.example.com\r\nMAIL FROM:<sender@example.com>\r\n"
        + b"".join(b"RCPT TO:<user%d@example.org>\r\n" % i for i in range(count))
        + b"DATA\r\nSubject: hi\r\n\r\nHello.\r\n.\r\nQUIT\r\n"
    )
    conn = ServerConnection(ServerConfig(max_message_size=0, max_recipients=max(count, 100)))
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


def _series(
    name: str, unit_of: str, sizes: list[int], func: Callable[[int], object], *, repeat: int, per: float
) -> tuple[list[Figure], list[float]]:
    """Time ``func(size)`` for each size; figures in nanoseconds per ``unit_of``."""
    figures, fastest = [], []
    for size in sizes:
        m = measure(f"{name}-{size}", functools.partial(func, size), repeat)
        per_unit = [run / size * per for run in m.runs]
        # The fit takes each size's fastest run: on a shared machine noise only
        # ever adds time, and a slow moment on one size would bend the slope.
        fastest.append(min(m.runs))
        label = f"{size // MIB} MiB" if size >= MIB and unit_of == "byte" else (
            f"{size // KIB} KiB" if unit_of == "byte" else f"{size}"
        )  # fmt: skip
        figures.append(from_runs(SECTION, f"{name}: {label}", f"ns/{unit_of}", per_unit))
    return figures, fastest


def collect(
    quick: bool = False,
    *,
    repeat: int | None = None,
    max_size: int | None = None,
    max_recipients: int = 1000,
    max_bytewise: int | None = None,
) -> tuple[list[Figure], list[str]]:
    # Five in full mode: the marginal fit subtracts the smallest size's time, and a slow moment there shows.
    repeat = repeat or (3 if quick else 5)
    max_size = max_size or (4 * MIB if quick else 100 * MIB)
    max_bytewise = max_bytewise or (4 * KIB if quick else 64 * KIB)
    figures: list[Figure] = []

    sizes = [s for s in (KIB, 16 * KIB, 256 * KIB, 4 * MIB, 32 * MIB, 100 * MIB) if s <= max_size]
    largest = make_body("text", max(*sizes, max_bytewise))
    bytewise = [s for s in (KIB, 4 * KIB, 16 * KIB, 64 * KIB) if s <= max_bytewise]
    # Each with its end marker, made here: a copy of 100 MiB inside the timed call
    # would be counted as the core's (and its page faults made 32 MiB look slower).
    contents = {size: largest[:size].rsplit(b"\r\n", 1)[0] + b"\r\n.\r\n" for size in {*sizes, *bytewise}}
    series = [
        ("message size, 64 KiB pieces", "byte", sizes, lambda s: receive_content(contents[s], 65536), 1e9),
        (
            "recipients",
            "rcpt",
            [n for n in (1, 10, 100, 1000) if n <= max_recipients],
            run_recipients,
            1e9,
        ),
        (
            "message fed one byte at a time",
            "byte",
            bytewise,
            lambda s: receive_content(contents[s], 1),
            1e9,
        ),
    ]
    for name, unit_of, xs, func, per in series:
        rows, fastest = _series(name, unit_of, xs, func, repeat=repeat, per=per)
        figures += rows
        # Both checks are one figure each, derived from every size's fastest run: no min-max.
        amounts = [float(x) for x in xs]
        if len(xs) >= 2:
            exponent = marginal_exponent(amounts, fastest)
            note = f"1.0 = linear; time above the {xs[0]:,}'s"
            figures.append(_check(f"{name}: fitted exponent, marginal time vs size", exponent, LINEAR_LIMIT, note))
        if len(xs) >= 3:
            slope = top_end_slope(amounts, fastest)
            middle = xs[len(xs) // 2]
            note = f"1.0 = linear; per {unit_of} from {xs[-2]:,} to {xs[-1]:,} over from {xs[0]:,} to {middle:,}"
            figures.append(_check(f"{name}: top-end slope", slope, TOP_END_LIMIT, note))
    return figures, []


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="messages up to 4 MiB, byte-wise up to 4 KiB")
    args = parser.parse_args(argv)
    figures, notes = collect(args.quick)
    print_table(figures, notes)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
