"""The core client figures for the suite, from ``bench_client``'s own functions.

``bench_client`` (another engineer's) prints its table and has no function that
returns figures; this module measures the same functions the same way and
returns them as :class:`Figure` records with their ceiling ratios, so that its
own ``python -m benchmarks.bench_client`` stays exactly as written.  If
``bench_client`` grows a ``collect(quick)``, the suite uses that instead.
"""

from __future__ import annotations

import functools

from ._report import Figure, rate_figure
from ._util import measure_pair

SECTION = "core: client (no sockets)"


def collect(quick: bool = False, *, repeat: int | None = None, size: int | None = None) -> list[Figure]:
    from . import bench_client as bc

    repeat = repeat or (3 if quick else 7)
    size = size or ((1 << 20) if quick else (8 << 20))
    figures: list[Figure] = []

    ours, ceiling = measure_pair("replies", bc.parse_burst, bc.split_ceiling, repeat, number=3, ceiling_number=30)
    figures.append(
        rate_figure(
            SECTION, "reply parsing (pipelined burst of 1-line replies)", "rep/s", ours, bc.REPLIES,
            ratio=ceiling.median / ours.median, against="of bytes.split",
        )
    )  # fmt: skip
    ehlo, ehlo_ceiling = measure_pair(
        "ehlo", bc.parse_ehlo, lambda: bc.split_ceiling(bc.EHLO), repeat, number=300, ceiling_number=3000
    )
    figures.append(
        rate_figure(
            SECTION, "EHLO reply -> Capabilities (11 lines)", "rep/s", ehlo, 1,
            ratio=ehlo_ceiling.median / ehlo.median, against="of bytes.split",
        )
    )  # fmt: skip
    for label, line, ceiling_of in bc.STUFF_TEXTS:
        data = bc.text(size, line)
        chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
        ours, ceiling = measure_pair(
            label, functools.partial(bc.stuff, chunks), functools.partial(ceiling_of, chunks), repeat
        )
        figures.append(
            rate_figure(
                SECTION, f"dot-stuffing, {label} (64 KiB chunks)", "MB/s", ours, size / 1e6,
                ratio=ceiling.median / ours.median, against="of find+replace",
            )
        )  # fmt: skip
    return figures
