"""The HTTP limit: the collector's server stack (the lean report path of
:mod:`collector.intake` in front of aiohttp, the same settings) with a report endpoint that
takes the body and answers 200 without doing anything.

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
from collector.intake import OK, Answer
from collector.limits import Limits
from collector.server import listen_intake, parse_addr


class EmptyEndpoint:
    """Takes every report and does nothing with it."""

    def authorize(self, header: str | None) -> Answer | None:
        return None

    def take(self, body: bytes) -> Answer | asyncio.Future[None]:
        return OK

    def wait(self, committed: asyncio.Future[None]) -> asyncio.TimerHandle:
        raise AssertionError("never waits")

    def outcome(self, committed: asyncio.Future[None]) -> Answer:
        return OK


async def serve(listen: tuple[str, int]) -> None:
    async def report(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application(client_max_size=Limits().max_body)
    app.router.add_post("/api/v1/report", report)
    runner, listener, intake, (host, port) = await listen_intake(
        app, EmptyEndpoint(), Limits().max_body, listen, "--listen")
    print(f"listening http://{host}:{port} ({runtime.current_loop_name()})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    listener.close()
    await intake.drain()
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
