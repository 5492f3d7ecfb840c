"""The HTTP limit: the collector's server stack (aiohttp, same app and runner settings)
with a report handler that reads the body and answers 200 without doing anything.

    python -m bench.null_server [--listen 127.0.0.1:0] [--loop auto|asyncio|uvloop]

The loop is chosen as the collector chooses it (uvloop when installed, unless told), so the
limit stays the same stack.

Prints ``listening http://HOST:PORT`` once it accepts connections; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from collector import runtime
from collector.limits import Limits
from collector.server import parse_addr


async def serve(listen: tuple[str, int]) -> None:
    async def report(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application(client_max_size=Limits().max_body)
    app.router.add_post("/api/v1/report", report)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, listen[0], listen[1], reuse_address=True)
    await site.start()
    host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
    print(f"listening http://{host}:{port} ({runtime.current_loop_name()})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--loop", choices=runtime.LOOPS, default="auto")
    args = parser.parse_args()
    runtime.run(serve(parse_addr(args.listen, "--listen")), args.loop)


if __name__ == "__main__":
    main()
