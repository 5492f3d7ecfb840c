"""Starting and stopping the collector's two listeners around a :class:`Collector`."""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from collector.api import ReportGate, build_app, build_metrics_app, report_gate
from collector.errors import ConfigError
from collector.intake import Endpoint, Intake, ReportEndpoint
from collector.service import Collector

T = TypeVar("T")


def parse_addr(text: str, flag: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or Go's :PORT (all interfaces)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{flag}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - Go's ":8080" means every interface
    return host, int(port)


@dataclass
class Server:
    collector: Collector
    runners: list[web.AppRunner]
    http_addr: tuple[str, int]
    metrics_addr: tuple[str, int]
    listener: asyncio.Server | None = None  # the API's port (collector.intake)
    intake: Intake | None = None

    @property
    def url(self) -> str:
        return f"http://{_host(self.http_addr[0])}:{self.http_addr[1]}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_host(self.metrics_addr[0])}:{self.metrics_addr[1]}/metrics"

    async def stop(self) -> None:
        self.collector.close_streams()
        if self.listener is not None:
            self.listener.close()
        if self.intake is not None:
            await self.intake.drain()
        for runner in self.runners:
            await runner.cleanup()
        await self.collector.stop()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _listen_error(exc: OSError, addr: tuple[str, int], flag: str) -> ConfigError:
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"{flag}: {addr[0]}:{addr[1]} is already in use; "
                           "stop what listens there or choose another port")
    return ConfigError(f"{flag}: cannot listen on {addr[0]}:{addr[1]}: {exc.strerror}")


def _bound(server: object, addr: tuple[str, int]) -> tuple[str, int]:
    """The address a listener got (port 0 picks one)."""
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[:2] if sockets else addr
    return str(bound[0]), int(bound[1])


async def _listen(app: web.Application, addr: tuple[str, int],
                  flag: str) -> tuple[web.AppRunner, tuple[str, int]]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, addr[0], addr[1], reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise _listen_error(exc, addr, flag) from exc
    # aiohttp does not expose the bound address; port 0 needs it.
    return runner, _bound(site._server, addr)


async def listen_intake(app: web.Application, endpoint: Endpoint, max_body: int,
                        addr: tuple[str, int], flag: str
                        ) -> tuple[web.AppRunner, asyncio.Server, Intake, tuple[str, int]]:
    """Serve ``app`` on ``addr`` behind the lean report path (:mod:`collector.intake`):
    aiohttp gets each connection that sends it anything else."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    intake = Intake(endpoint, runner.server, max_body)
    try:
        listener = await asyncio.get_running_loop().create_server(
            intake.protocol, addr[0], addr[1], reuse_address=True)
    except OSError as exc:
        await runner.cleanup()
        raise _listen_error(exc, addr, flag) from exc
    return runner, listener, intake, _bound(listener, addr)


async def start_server(collector: Collector, listen: tuple[str, int],
                       metrics_listen: tuple[str, int], token: str | None = None,
                       gate: ReportGate | None = None) -> Server:
    """Recover the store, then listen. Port 0 picks a free port (see ``Server.http_addr``)."""
    await collector.start()
    runners: list[web.AppRunner] = []
    listener = None
    try:
        endpoint = ReportEndpoint(collector, gate or report_gate(collector, token))
        runner, listener, intake, http_addr = await listen_intake(
            build_app(collector, endpoint=endpoint), endpoint, collector.limits.max_body,
            listen, "--listen")
        runners.append(runner)
        runner, metrics_addr = await _listen(build_metrics_app(collector), metrics_listen,
                                             "--metrics-listen")
        runners.append(runner)
    except BaseException:
        if listener is not None:
            listener.close()
        for started in runners:
            await started.cleanup()
        await collector.stop()
        raise
    return Server(collector, runners, http_addr, metrics_addr, listener, intake)


class BackgroundServer:
    """A collector serving from an event loop on a thread of its own, so that synchronous
    code (a notebook, a test) can run one beside it. Listens on free ports of 127.0.0.1
    unless told otherwise."""

    def __init__(self, collector: Collector, *,
                 listen: tuple[str, int] = ("127.0.0.1", 0),
                 metrics_listen: tuple[str, int] = ("127.0.0.1", 0),
                 token: str | None = None, gate: ReportGate | None = None) -> None:
        self.collector = collector
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever,
                                        name="pulltrace-collector", daemon=True)
        self._thread.start()
        try:
            self.server: Server = self.call(start_server(collector, listen, metrics_listen,
                                                         token, gate))
        except BaseException:
            self._halt()
            raise
        self.url = self.server.url
        self.metrics_url = self.server.metrics_url

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the collector's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop serving and close the store. Safe to call twice."""
        if not self._thread.is_alive():
            return
        try:
            self.call(self.server.stop())
        finally:
            self._halt()

    def _halt(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
