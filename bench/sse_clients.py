"""Clients of a collector's event stream, in a process of their own.

    python -m bench.sse_clients --url http://HOST:PORT/api/v1/events --clients 200 [--no-read]

Reading clients read everything as it comes and count it, and reconnect a second after the
collector closes their stream (as a browser's EventSource does); ``--no-read`` clients send
the request and never read a byte (with a small receive buffer, so the server feels it
soon), and never reconnect.
Prints ``connected`` once every stream is open, and a JSON summary on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import time
from urllib.parse import urlsplit

RCVBUF = 4096
RECONNECT = 1.0  # seconds


async def reader(host: str, port: int, request: bytes, counts: dict[str, int],
                 opened: asyncio.Event, closed_at: list[float]) -> None:
    """Read the stream as it comes; when the collector closes it, reconnect a second later
    (as a browser's EventSource does)."""
    first = True
    while True:
        r, w = await asyncio.open_connection(host, port, limit=1 << 20)
        w.write(request)
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the event stream answered {head[:40]!r}")
        if first:
            first = False
            counts["open"] += 1
            if counts["open"] == counts["clients"]:
                opened.set()
        while chunk := await r.read(1 << 16):
            counts["bytes"] += len(chunk)
            counts["events"] += chunk.count(b"data: ")
        w.close()
        counts["closed_by_server"] += 1
        closed_at.append(time.monotonic())
        await asyncio.sleep(RECONNECT)


def silent(host: str, port: int, request: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.connect((host, port))
    sock.sendall(request)
    return sock


async def run(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    counts = {"clients": args.clients, "open": 0, "bytes": 0, "events": 0,
              "closed_by_server": 0}
    closed_at: list[float] = []
    tasks = []
    socks = []
    if args.no_read:
        socks = [silent(host, port, request) for _ in range(args.clients)]
        counts["open"] = len(socks)
    else:
        opened = asyncio.Event()
        tasks = [asyncio.create_task(reader(host, port, request, counts, opened, closed_at))
                 for _ in range(args.clients)]
        await asyncio.wait_for(opened.wait(), 30)
    print("connected", flush=True)
    connected = time.monotonic()
    await stop.wait()
    out: dict[str, object] = dict(counts)
    out["seconds"] = time.monotonic() - connected
    out["cpu_s"] = time.process_time()
    if closed_at:
        # When the collector closed them, after they connected: all at once means one burst
        # of events overflowed every queue, not slow reading.
        out["first_closed_s"] = min(closed_at) - connected
        out["last_closed_s"] = max(closed_at) - connected
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for sock in socks:
        sock.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--no-read", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
