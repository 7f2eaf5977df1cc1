"""``python -m benchmarks [--quick]``: the whole suite, one table, one JSON file, one chart.

Sections, in order (``--only`` picks some):

* ``core``: server parsing without sockets (``bench_server``) and, when it is
  there, the client's reply parsing and dot-stuffing (``bench_client``);
* ``growth``: linear total cost as messages, recipients and byte-wise feeding grow;
* ``e2e``: our four server adapters and aiosmtpd over 127.0.0.1, and peak RSS;
* ``clients``: our client adapters beside smtplib and aiosmtplib.

Every figure is a median of several runs with min-max; every ratio is measured
in this run.  ``--quick`` is a smoke test (under a minute): small sizes, few and
short runs, whose figures are too noisy to quote.

The exit status is 1 when a cell failed (a message not delivered, a client or
an adapter that raised), so that CI's ``--quick`` run catches a broken adapter;
a timing target that is missed never fails it (these machines are too noisy).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from ._report import Figure, failed_cells, machine, print_table, write_chart, write_json

SECTIONS = ("core", "growth", "e2e", "clients")
RESULTS = Path(__file__).resolve().parent / "results"


def run_core(quick: bool) -> tuple[list[Figure], list[str]]:
    from . import bench_server

    figures, _ = bench_server.collect(quick)
    notes: list[str] = []
    try:
        bench_client = importlib.import_module("benchmarks.bench_client")
    except ImportError:
        notes.append("core client figures skipped: benchmarks/bench_client.py is not there yet")
        return figures, notes
    collect = getattr(bench_client, "collect", None)
    if collect is None:  # bench_client only prints: measure its functions here
        from . import _client_figures

        try:
            return figures + _client_figures.collect(quick), notes
        except (AttributeError, TypeError) as exc:
            notes.append(f"core client figures skipped: bench_client changed ({exc})")
            return figures, notes
    more = collect(quick)
    if isinstance(more, tuple):
        figures += list(more[0])
        notes += list(more[1]) if len(more) > 1 and isinstance(more[1], list) else []
    else:
        figures += list(more)
    return figures, notes


def run_growth(quick: bool) -> tuple[list[Figure], list[str]]:
    from . import bench_growth

    return bench_growth.collect(quick)


def run_e2e(quick: bool) -> tuple[list[Figure], list[str]]:
    from . import bench_e2e

    return bench_e2e.collect(quick)


def run_clients(quick: bool) -> tuple[list[Figure], list[str]]:
    from . import bench_clients

    return bench_clients.collect(quick)


RUNNERS = {"core": run_core, "growth": run_growth, "e2e": run_e2e, "clients": run_clients}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: small sizes, short runs (under a minute)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="where to write the results")
    parser.add_argument("--chart", type=Path, default=RESULTS / "latest.png", help="where to draw the chart")
    args = parser.parse_args(argv)
    sections = [s for s in args.only.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    figures: list[Figure] = []
    notes: list[str] = []
    timings: dict[str, float] = {}
    started = time.monotonic()
    for section in sections:
        print(f"running {section}...", file=sys.stderr, flush=True)
        start = time.monotonic()
        more, more_notes = RUNNERS[section](args.quick)
        timings[section] = round(time.monotonic() - start, 1)
        figures += more
        notes += more_notes
    total = time.monotonic() - started

    chart_note = write_chart(args.chart, figures)
    if chart_note:
        notes.append(chart_note)
    print_table(figures, notes)
    meta = {
        **machine(),
        "mode": "quick" if args.quick else "full",
        "sections": sections,
        "seconds": timings,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    write_json(args.json, figures, notes, meta)
    targets = [f for f in figures if f.met is not None]
    met = sum(1 for f in targets if f.met)
    print(f"\n{met} of {len(targets)} targets met; {total:.0f} s ({meta['mode']} mode)")
    print(f"wrote {args.json}" + ("" if chart_note else f" and {args.chart}"))
    failed = failed_cells(figures)
    if failed:
        print(f"\nFAILED: {len(failed)} cell(s) did not run to the end (exit status 1):")
        for f in failed:
            print(f"  {f.section}: {f.name}: {f.failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
