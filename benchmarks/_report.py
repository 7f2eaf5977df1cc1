"""Figures, the table, the JSON file and the chart of one run of the suite.

Every section returns :class:`Figure` records: a rate as (median, min, max)
over several runs, and, where there is something to compare with, a ratio
measured in the same run (against a ceiling or a peer) and, where issue 6 sets
one, the target for that ratio.  The table, the JSON and the chart are all
made from the same list, so they cannot disagree.

A cell that failed (a message not delivered, a client or an adapter that
raised) stays in the list as a failed figure: it shows as "failed", its target
counts as not met, and the suite's exit status says so.  A row that vanished
instead would shrink "N of M targets met" and read as a healthy run.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._util import Measurement


@dataclass(frozen=True)
class Figure:
    section: str
    name: str
    unit: str
    median: float
    low: float
    high: float
    #: A ratio from the same run (``against`` says to what); None if there is nothing to compare.
    ratio: float | None = None
    against: str = ""
    #: Issue 6's target: on the ratio (met when ``ratio >= target``) or, with ``target_on="median"``,
    #: on the figure itself (at least ``target``, or under it with ``lower_is_better``: the issue's
    #: limits, "under 16 MiB", are strict).  A ratio target with no ratio (its peer failed) is not met.
    target: float | None = None
    target_on: str = "ratio"
    lower_is_better: bool = False
    note: str = ""
    #: Why the cell failed, or "" if it did not; a failed cell's figure is no measurement.
    failed: str = ""
    #: One figure computed from other rows' runs (a fit, a quotient), not the median of runs of its
    #: own: it has no min-max to show.
    derived: bool = False

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.failed:
            return False
        if self.target_on == "median":
            return self.median < self.target if self.lower_is_better else self.median >= self.target
        return self.ratio is not None and self.ratio >= self.target


def rate_figure(section: str, name: str, unit: str, m: Measurement, amount: float, **extra: Any) -> Figure:
    median, low, high = m.rate(amount)
    return Figure(section, name, unit, median, low, high, **extra)


def median_of(runs: list[float]) -> float:
    """The median that :func:`from_runs` prints: ratios are taken of this, so they match the table."""
    return statistics.median(runs)


def from_runs(section: str, name: str, unit: str, runs: list[float], **extra: Any) -> Figure:
    """A figure from per-run values (already a rate), median and min-max."""
    return Figure(section, name, unit, median_of(runs), min(runs), max(runs), **extra)


def failed_figure(section: str, name: str, unit: str, why: str, **extra: Any) -> Figure:
    """The row of a cell that failed: no figure (NaN, null in the JSON), and ``why`` in its note."""
    return Figure(section, name, unit, math.nan, math.nan, math.nan, failed=why, **extra)


def failed_cells(figures: list[Figure]) -> list[Figure]:
    return [f for f in figures if f.failed]


def _num(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


def format_row(f: Figure) -> str:
    ratio = ""
    if f.ratio is not None:
        ratio = f"{f.ratio:7.2f}x {f.against}" if f.ratio >= 0.1 else f"{f.ratio:7.4f}x {f.against}"
    target = ""
    if f.target is not None:
        mark = "met" if f.met else ("NOT met (failed)" if f.failed else "NOT met")
        sign = "<" if f.lower_is_better else ">="
        what = f"{f.target:,g} {f.unit}".strip() if f.target_on == "median" else f"{f.target:g}x"
        target = f"target {sign} {what}: {mark}"
    if f.failed:
        figure = f"{'failed':>13} {f.unit:<7} {'':<14}"
    elif f.derived:  # one figure from other rows' runs: a min-max would pretend it had runs of its own
        figure = f"{_num(f.median):>13} {f.unit:<7} {'(derived)':<14}"
    else:
        figure = f"{_num(f.median):>13} {f.unit:<7} [{_num(f.low)} .. {_num(f.high)}]"
    note = f.note if not f.failed else "; ".join(filter(None, [f"failed: {f.failed}", f.note]))
    return f"{f.name:<58} {figure}  {ratio}{'  ' + target if target else ''}{'  ' + note if note else ''}"


def print_table(figures: list[Figure], notes: list[str]) -> None:
    section = None
    for f in figures:
        if f.section != section:
            section = f.section
            print(f"\n== {section} ==")
            print(f"{'figure':<58} {'median':>13} {'unit':<7} [min .. max]  ratio (same run)")
        print(format_row(f))
    if notes:
        print()
        for note in notes:
            print("note:", note)


def machine() -> dict[str, Any]:
    import os

    model = ""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def write_json(path: Path, figures: list[Figure], notes: list[str], meta: dict[str, Any]) -> None:
    # Nothing else is written beside it: the repository's .gitignore covers benchmarks/results/, and
    # a directory of the user's own (--json elsewhere) is the user's business.
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "notes": notes,
        "figures": [_json_figure(f) for f in figures],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def _json_figure(f: Figure) -> dict[str, Any]:
    # A failed cell has no figure: null, not NaN (which is not JSON).
    return {
        **{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(f).items()},
        "met": f.met,
    }


def _short(section: str) -> str:
    """A bar's label names its section in a word: core, growth, e2e or clients."""
    first = section.split(maxsplit=1)[0].rstrip(":")
    return {"end": "e2e"}.get(first, first)


def _undrawn_targets(figures: list[Figure]) -> str:
    """The targets that are not on a ratio (commands/s, peak RSS, growth), as "N of M met" per kind."""
    kinds: dict[str, list[bool]] = {}
    for f in figures:
        if f.target is not None and f.target_on == "median":
            sign = "<" if f.lower_is_better else ">="
            kind = f"{_short(f.section)} {sign} {f.target:,g} {f.unit}".strip()
            kinds.setdefault(kind, []).append(bool(f.met))
    return "; ".join(f"{kind}: {sum(met)} of {len(met)} met" for kind, met in kinds.items())


def write_chart(path: Path, figures: list[Figure]) -> str | None:
    """The ratios of the run as horizontal bars; None, or why there is no chart.

    A bar is green or red only when issue 6's target is on that very ratio (its black tick); a ratio
    whose row has its target on something else (the session's commands/s) or none is grey-blue.
    The targets on a figure rather than a ratio (commands/s, peak RSS, the growth checks) cannot be
    drawn on this axis: the caption counts them, and says how many cells failed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is not installed (pip install -e '.[bench]')"
    shown = [f for f in figures if f.ratio is not None and (f.target is not None or f.section.startswith("end"))]
    if not shown:
        return "no chart: no ratios in this run"
    shown.reverse()
    height = max(3.0, 0.28 * len(shown) + 1.6)
    fig, ax = plt.subplots(figsize=(10, height))
    labels = [
        f"{_short(f.section)}: {f.name}" + (f" (target on {f.unit})" if f.target_on == "median" else "") for f in shown
    ]
    on_ratio = [f.target is not None and f.target_on == "ratio" for f in shown]
    colours = ["#58a" if not drawn else ("#2a7" if f.met else "#c44") for f, drawn in zip(shown, on_ratio, strict=True)]
    ratios = [f.ratio or 0.0 for f in shown]
    ax.barh(range(len(shown)), ratios, color=colours)
    for i, f in enumerate(shown):
        if on_ratio[i] and f.target is not None:
            ax.plot([f.target, f.target], [i - 0.4, i + 0.4], color="black", linewidth=2)
        ax.text(
            ratios[i], i, f" {ratios[i]:.2f}x" if ratios[i] >= 0.1 else f" {ratios[i]:.4f}x", va="center", fontsize=7
        )
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", linewidth=0.8)
    caption = [
        "ratio measured in the same run (log scale); black tick = issue 6 target on that ratio:",
        "green met, red not; blue = no target on that ratio.  Targets on a figure, not a ratio (not drawn):",
        *textwrap.wrap(_undrawn_targets(figures) or "none in this run", 90),
    ]
    unmeasured = sum(
        1 for f in figures if f.target_on == "ratio" and f.target is not None and f.ratio is None and not f.failed
    )
    failed = len(failed_cells(figures))
    missing = [f"{failed} failed cell(s)"] if failed else []
    missing += [f"{unmeasured} ratio target(s) not measurable (not met)"] if unmeasured else []
    if missing:
        caption.append("no bar: " + ", ".join(missing))
    ax.set_xlabel("\n".join(caption), fontsize=7)
    ax.set_title("smtpcore benchmarks: ratios against ceilings and peers", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None
