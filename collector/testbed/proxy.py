"""A TCP proxy that limits each connection's downstream (upstream -> client) bytes to R bytes/s.

The limit is the ground truth that rate tests compare against, so pacing is deadline-based: every
chunk is paid for at R before it is sent, and the next deadline follows from the previous one, not
from "now", so sleep overshoot is made up on the next chunk instead of accumulating. Time spent
waiting for the upstream earns no credit, so a keep-alive connection that idled between two blobs
does not burst at the start of the next one.

The limit is per connection: a client that downloads three layers over three connections receives
3 R in total, each layer R. Client -> upstream bytes (requests) are not limited.

It runs as its own process so a test can ``kill -9`` it mid-pull:

    python -m collector.testbed.proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:5000 --rate 2097152

With ``--ready-file`` it writes the bound ``host:port`` there once it accepts connections. With
``--rate-file``, SIGHUP re-reads the rate from that file and applies it to open connections too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CHUNK = 16 * 1024
# A read that returns after this long had to wait for the upstream; one that returns sooner found
# data already buffered (the throttle, not the upstream, is the bottleneck).
_WAITED = 0.0005
# Lag the pacing may make up: enough for sleep overshoot and a busy event loop, far too little for
# a burst after the process was stopped (SIGSTOP simulates a stalled network).
_MAX_LAG = 0.05
# Longest single sleep: at a trickle a whole chunk would take seconds, arrive as one burst, and
# hide a rate change until it was paid for; smaller reads keep the stream smooth and responsive.
_MAX_STEP = 0.05

log = logging.getLogger("pulltrace.testbed.proxy")


@dataclass
class Throttle:
    """Shared, mutable limit: a SIGHUP changes it for every open connection at once."""

    rate: float
    chunk: int = DEFAULT_CHUNK


def _split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {addr!r}")
    return host or "127.0.0.1", int(port)


async def _pump_limited(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, throttle: Throttle
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time()
    while True:
        size = throttle.chunk
        if throttle.rate > 0:
            size = max(1, min(size, int(throttle.rate * _MAX_STEP)))
        before = loop.time()
        data = await reader.read(size)
        if not data:
            return
        after = loop.time()
        if after - before > _WAITED or throttle.rate <= 0:
            deadline = max(deadline, after)
        else:
            deadline = max(deadline, after - _MAX_LAG)
        if throttle.rate > 0:
            deadline += len(data) / throttle.rate
            delay = deadline - after
            if delay > 0:
                await asyncio.sleep(delay)
        writer.write(data)
        before = loop.time()
        await writer.drain()
        after = loop.time()
        # A client that reads slowly is the bottleneck: its time earns no credit either.
        if after - before > _WAITED:
            deadline = max(deadline, after)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        data = await reader.read(1 << 16)
        if not data:
            if writer.can_write_eof():
                writer.write_eof()
            return
        writer.write(data)
        await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _handle(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream: tuple[str, int],
    throttle: Throttle,
) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError as exc:
        log.warning("upstream %s:%d unreachable: %s", *upstream, exc)
        await _close(client_writer)
        return
    requests = asyncio.create_task(_pump(client_reader, up_writer))

    def client_gone(task: asyncio.Task[None]) -> None:
        # A client that vanished (reset, killed) will read nothing more: free the upstream now
        # rather than when the registry's idle timeout fires.
        if not task.cancelled() and task.exception() is not None:
            up_writer.close()

    requests.add_done_callback(client_gone)
    try:
        # The connection lives as long as the upstream keeps answering; a client that half-closes
        # its side still gets the rest of the response.
        await _pump_limited(up_reader, client_writer, throttle)
    except OSError as exc:
        log.info("connection ended: %s", exc)
    finally:
        requests.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await requests
        await _close(client_writer)
        await _close(up_writer)


def _read_rate(path: Path) -> float:
    return float(path.read_text().strip())


def _write_ready(path: Path, host: str, port: int) -> None:
    # Rename makes the file appear complete: the parent polls for it and must never read half.
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(f"{host}:{port}\n")
    staging.replace(path)


async def serve(
    listen: tuple[str, int],
    upstream: tuple[str, int],
    throttle: Throttle,
    ready_file: Path | None = None,
    rate_file: Path | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT."""
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, upstream, throttle), listen[0], listen[1]
    )
    host, port = server.sockets[0].getsockname()[:2]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if rate_file is not None:
        watched = rate_file

        def reload_rate() -> None:
            try:
                throttle.rate = _read_rate(watched)
            except (OSError, ValueError):
                log.exception("cannot read rate from %s; keeping %.0f B/s", watched, throttle.rate)
                return
            log.info("rate now %.0f B/s", throttle.rate)

        loop.add_signal_handler(signal.SIGHUP, reload_rate)
    log.info(
        "listening on %s:%d -> %s:%d at %.0f B/s (chunk %d)",
        host,
        port,
        *upstream,
        throttle.rate,
        throttle.chunk,
    )
    if ready_file is not None:
        _write_ready(ready_file, host, port)
    async with server:
        await stop.wait()
    log.info("stopped")


def proxy_argv(
    *,
    listen: str,
    upstream: str,
    rate: float,
    chunk: int = DEFAULT_CHUNK,
    ready_file: Path | None = None,
    rate_file: Path | None = None,
) -> list[str]:
    """Command line that runs this proxy in a child process of the current interpreter."""
    argv = [sys.executable, "-m", "collector.testbed.proxy"]
    argv += ["--listen", listen, "--upstream", upstream, "--rate", str(rate), "--chunk", str(chunk)]
    if ready_file is not None:
        argv += ["--ready-file", str(ready_file)]
    if rate_file is not None:
        argv += ["--rate-file", str(rate_file)]
    return argv


def proxy_env() -> dict[str, str]:
    """Environment additions that let the child import this package even when not installed."""
    root = str(Path(__file__).resolve().parents[2])
    current = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{root}{os.pathsep}{current}" if current else root}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m collector.testbed.proxy",
        description="TCP proxy limiting each connection's downstream bytes to RATE bytes/s",
    )
    parser.add_argument("--listen", type=_split_addr, default=("127.0.0.1", 0))
    parser.add_argument("--upstream", type=_split_addr, required=True)
    parser.add_argument("--rate", type=float, required=True, help="bytes/s; 0 means unlimited")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--rate-file", type=Path)
    args = parser.parse_args(argv)
    if args.rate < 0 or args.chunk <= 0:
        parser.error("rate must be >= 0 and chunk > 0")
    logging.basicConfig(
        level=os.environ.get("PULLTRACE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    throttle = Throttle(rate=args.rate, chunk=args.chunk)
    asyncio.run(serve(args.listen, args.upstream, throttle, args.ready_file, args.rate_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
