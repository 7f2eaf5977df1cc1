"""Clients: our four client adapters beside smtplib and aiosmtplib, against one fast sink.

The sink is Postfix's ``smtp-sink`` (C, pipelining) when it is installed, and
otherwise our own asyncio server with a discarding handler; either way it runs
in a process of its own, and the clients run in this one.  Each client sends
``n`` messages of one size over one connection, or spread over 8 connections
(threads for smtplib and our blocking client, greenlets for gevent, tasks for
asyncio, aiosmtplib and trio).  Figures are messages per second, median of
several runs with min-max; our blocking and gevent clients are compared with
smtplib, our asyncio and trio clients with aiosmtplib, in the same run.

A client that fails (raises, or does not import) is not run again, but every
cell of it from then on is a failed row, its targets count as not met, and the
suite's exit status is 1; a peer that fails or is not installed leaves the rows
compared with it without a ratio, their targets not met.  Only a framework or
a peer that is not installed (gevent, trio, aiosmtplib) is skipped with a note.

Run: ``python -m benchmarks.bench_clients [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from ._report import Figure, failed_figure, from_runs, median_of, print_table
from .bench_e2e import KIB, server_process
from .loadgen import make_message

SECTION = "clients against one sink"
SENDER, RECIPIENT = "sender@bench.example", "user@bench.example"

#: send(port, message, n) -> None: deliver ``n`` messages over one connection.
Sender = Callable[[int, bytes, int], None]
#: (port, message, count) -> a coroutine function that sends them.
AsyncMaker = Callable[[int, bytes, int], Callable[[], Awaitable[None]]]


def _smtplib(port: int, message: bytes, n: int) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        for _ in range(n):
            client.sendmail(SENDER, [RECIPIENT], message)


def _aiosmtplib(port: int, message: bytes, n: int) -> Callable[[], Awaitable[None]]:
    import aiosmtplib

    async def send() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, start_tls=False)
        async with client:
            for _ in range(n):
                await client.sendmail(SENDER, [RECIPIENT], message)

    return send


def _ours_blocking(module: str) -> Sender:
    def send(port: int, message: bytes, n: int) -> None:
        from smtpcore import Envelope

        client = importlib.import_module(module)
        envelope = Envelope(SENDER, [RECIPIENT])
        outcome = client.send_messages("127.0.0.1", port, [(envelope, message)] * n, timeout=60)
        outcome.raise_for_error()

    return send


def _ours_async(module: str) -> AsyncMaker:
    def make(port: int, message: bytes, n: int) -> Callable[[], Awaitable[None]]:
        from smtpcore import Envelope

        client = importlib.import_module(module)
        envelope = Envelope(SENDER, [RECIPIENT])

        async def send() -> None:
            outcome = await client.send_messages("127.0.0.1", port, [(envelope, message)] * n, timeout=60)
            outcome.raise_for_error()

        return send

    return make


def _shares(n: int, connections: int) -> list[int]:
    return [n // connections + (1 if i < n % connections else 0) for i in range(connections)]


def in_threads(send: Sender) -> Callable[[int, bytes, int, int], None]:
    def run(port: int, message: bytes, n: int, connections: int) -> None:
        if connections == 1:
            send(port, message, n)
            return
        errors: list[BaseException] = []

        def one(share: int) -> None:
            try:
                send(port, message, share)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(share,)) for share in _shares(n, connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        if errors:
            raise errors[0]

    return run


def in_greenlets(send: Sender) -> Callable[[int, bytes, int, int], None]:
    def run(port: int, message: bytes, n: int, connections: int) -> None:
        import gevent

        jobs = [gevent.spawn(send, port, message, share) for share in _shares(n, connections)]
        gevent.joinall(jobs, timeout=300, raise_error=True)

    return run


def in_asyncio(make: AsyncMaker) -> Callable[[int, bytes, int, int], None]:
    def run(port: int, message: bytes, n: int, connections: int) -> None:
        import asyncio

        async def main() -> None:
            await asyncio.gather(*(make(port, message, share)() for share in _shares(n, connections)))

        asyncio.run(main())

    return run


def in_trio(make: AsyncMaker) -> Callable[[int, bytes, int, int], None]:
    def run(port: int, message: bytes, n: int, connections: int) -> None:
        import trio

        async def main() -> None:
            with trio.fail_after(300):
                async with trio.open_nursery() as nursery:
                    for share in _shares(n, connections):
                        nursery.start_soon(make(port, message, share))

        trio.run(main)

    return run


#: name -> (module that must import, how to run it, the peer it is compared with)
CLIENTS: dict[str, tuple[str, Callable[[int, bytes, int, int], None], str | None]] = {
    "smtplib": ("smtplib", in_threads(_smtplib), None),
    "aiosmtplib": ("aiosmtplib", in_asyncio(_aiosmtplib), None),
    "blocking": ("adapters.blocking_client", in_threads(_ours_blocking("adapters.blocking_client")), "smtplib"),
    "gevent": ("adapters.gevent_client", in_greenlets(_ours_blocking("adapters.gevent_client")), "smtplib"),
    "asyncio": ("adapters.asyncio_client", in_asyncio(_ours_async("adapters.asyncio_client")), "aiosmtplib"),
    "trio": ("adapters.trio_client", in_trio(_ours_async("adapters.trio_client")), "aiosmtplib"),
}


def target_for(name: str, size: int, connections: int) -> float | None:
    """Issue 6: blocking >= 1.5x smtplib, asyncio >= 3x aiosmtplib (1 KiB, one connection); both >= 2x at 100 KiB."""
    if connections != 1 or name not in ("blocking", "asyncio"):
        return None
    if size <= KIB:
        return 1.5 if name == "blocking" else 3.0
    return 2.0


def smtp_sink() -> str | None:
    return shutil.which("smtp-sink") or next(
        (p for p in ("/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink") if shutil.which(p)), None
    )


@contextmanager
def sink(kind: str) -> Iterator[int]:
    """A discarding SMTP server in its own process; yields its port."""
    if kind == "asyncio":
        with server_process("asyncio") as server:
            yield server.port
        return
    with socket.socket() as probe:  # smtp-sink needs a port number: take a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses to run as root
    command = [kind, *root, f"127.0.0.1:{port}", "256"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("smtp-sink did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _importable(name: str, module: str) -> str | None:
    """None if ``module`` imports; else why not, for a note.  Raises if one of ours is broken."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # A peer or a framework (aiosmtplib, gevent, trio) that is not installed is the machine's
        # business; a module of ours that does not import is a failure.
        if exc.name and exc.name.split(".")[0] not in ("adapters", "smtpcore"):
            return f"client {name} skipped: {exc.name} is not installed"
        raise
    return None


def collect(
    quick: bool = False,
    *,
    sizes: tuple[int, ...] | None = None,
    connections: tuple[int, ...] = (1, 8),
    repeat: int = 3,
    duration: float | None = None,
    use_sink: str = "auto",
) -> tuple[list[Figure], list[str]]:
    """Every client's rows; a client that fails leaves failed rows (its targets not met) from there on,
    and a peer that fails or is missing leaves the rows compared with it without a ratio, not met."""
    notes: list[str] = []
    sizes = sizes or ((KIB,) if quick else (KIB, 100 * KIB))
    duration = duration or (0.2 if quick else 0.8)
    clients: dict[str, Callable[[int, bytes, int, int], None]] = {}
    #: name -> (the cell it failed in, "" at import; why): it is not run again, and every cell of it
    #: from that one on is a failed row.
    failed: dict[str, tuple[str, str]] = {}
    missing: set[str] = set()
    for name, (module, run, _) in CLIENTS.items():
        try:
            skipped = _importable(name, module)
        except Exception as exc:
            failed[name] = ("", f"{module} cannot be imported ({type(exc).__name__}: {exc})")
            continue
        if skipped:
            notes.append(skipped)
            missing.add(name)
            continue
        clients[name] = run
    kind = (smtp_sink() or "asyncio") if use_sink == "auto" else use_sink
    notes.append(
        "client sink: "
        + ("Postfix's smtp-sink (C)" if kind != "asyncio" else "our asyncio server, discarding (its own process)")
    )
    for name, (_, why) in failed.items():
        notes.append(f"client {name} failed: {why}")
    figures: list[Figure] = []
    with sink(kind) as port:
        for size in sizes:
            message = make_message(size)
            for conns in connections:
                label = f"{size // KIB} KiB, {conns} connection{'s' if conns > 1 else ''}"
                rates = _measure_cell(
                    clients, failed, port,
                    message=message, conns=conns, repeat=repeat, duration=duration, label=label, notes=notes,
                )  # fmt: skip
                figures += _cell_figures(rates, failed, missing, size=size, conns=conns, label=label)
    return figures, notes


def _measure_cell(
    clients: dict[str, Callable[[int, bytes, int, int], None]],
    failed: dict[str, tuple[str, str]],
    port: int,
    *,
    message: bytes,
    conns: int,
    repeat: int,
    duration: float,
    label: str,
    notes: list[str],
) -> dict[str, list[float]]:
    """Every working client's runs in one cell, interleaved; a client that raises goes into ``failed``."""

    def attempt(name: str, count: int) -> float | None:
        try:
            start = time.perf_counter()
            clients[name](port, message, count, conns)
            return count / (time.perf_counter() - start)
        except Exception as exc:
            failed[name] = (label, f"{type(exc).__name__}: {exc}")
            notes.append(f"client {name} failed ({label}: {failed[name][1]}); its cells from here on are failed rows")
            return None

    counts: dict[str, int] = {}
    rates: dict[str, list[float]] = {}
    for name in clients:
        if name in failed:
            continue
        first = attempt(name, conns * 4)  # warm-up; sizes the timed runs to about `duration` each
        if first is not None:
            counts[name] = max(conns, min(int(first * duration), 100_000))
            rates[name] = []
    for _ in range(repeat):
        for name, count in counts.items():
            if name not in failed:
                rate = attempt(name, count)
                if rate is not None:
                    rates[name].append(rate)
    # A client that failed part-way has no figure for this cell: its runs so far are dropped.
    return {name: runs for name, runs in rates.items() if name not in failed}


def _cell_figures(
    rates: dict[str, list[float]],
    failed: dict[str, tuple[str, str]],
    missing: set[str],
    *,
    size: int,
    conns: int,
    label: str,
) -> list[Figure]:
    medians = {name: median_of(runs) for name, runs in rates.items()}
    figures = []
    for name in CLIENTS:
        if name in missing:
            continue
        peer = CLIENTS[name][2]
        target = target_for(name, size, conns)
        if name in failed:
            where, why = failed[name]
            why = why if where in ("", label) else f"not run, as it failed in the cell {where!r} before"
            figures.append(failed_figure(SECTION, f"{name}: {label}", "msg/s", why, target=target))
            continue
        ratio = medians[name] / medians[peer] if peer in medians else None
        note = ""
        if peer is not None and ratio is None:
            why = "failed" if peer in failed else "is not installed"
            note = f"no ratio: {peer} {why}" + ("; target not measurable" if target is not None else "")
        figures.append(
            from_runs(
                SECTION, f"{name}: {label}", "msg/s", rates[name],
                ratio=ratio, against=f"of {peer}" if ratio is not None else "", target=target, note=note,
            )
        )  # fmt: skip
    return figures


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 KiB only, short runs")
    parser.add_argument("--sink", choices=("auto", "asyncio", "smtp-sink"), default="auto")
    args = parser.parse_args(argv)
    use_sink = args.sink
    if use_sink == "smtp-sink":
        use_sink = smtp_sink() or sys.exit("smtp-sink is not installed (apt-get install postfix)")
    figures, notes = collect(args.quick, use_sink=use_sink)
    print_table(figures, notes)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
