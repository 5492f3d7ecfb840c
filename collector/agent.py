"""`pulltrace agent`: one node's containerd pulls, posted to a collector over HTTP.

Each report goes to ``POST <server>/api/v1/report`` with ``Authorization: Bearer <token>`` when a
token is set; a collector of this project or the original Go server takes it (the Go server
ignores the extra fields). The agent keeps running whatever happens: while the collector cannot be
reached it retries with backoff, a 429 (two reports within 500 ms) is retried shortly, and a
report it could not deliver is simply superseded by the next one — a pull that finished is shown
in every report until one showing it was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from urllib.parse import urlsplit

import aiohttp

from collector.errors import ConfigError
from collector.model import AgentReport
from collector.sources.containerd import ContainerdClient
from collector.sources.poller import ContainerdPoller

log = logging.getLogger("pulltrace.agent")

REPORT_PATH = "/api/v1/report"
_RETRY_429 = 0.1  # the collector admits one report per node per 500 ms
_MAX_429_TRIES = 10


def report_url(server: str) -> str:
    """``<server>/api/v1/report`` for a collector's base URL (``http://host:port``)."""
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--server: {server!r} is not an http(s) URL of a collector "
                          "(e.g. http://pulltrace.monitoring:8080)")
    return server.rstrip("/") + REPORT_PATH


class ReportPoster:
    """Posts reports to a collector; a sink for :class:`ContainerdPoller`."""

    def __init__(self, session: aiohttp.ClientSession, server: str, token: str | None = None,
                 *, timeout: float = 10.0, backoff: float = 0.5,
                 max_backoff: float = 5.0) -> None:
        self.url = report_url(server)
        self._session = session
        self._headers = {"Content-Type": "application/json", "User-Agent": "pulltrace-agent"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._min_backoff = backoff
        self._max_backoff = max_backoff
        self._backoff = backoff
        self._trouble: str | None = None  # what went wrong last, logged once until it clears
        self.delivered = 0

    async def __call__(self, report: AgentReport) -> bool:
        body = report.dumps().encode()
        for _ in range(_MAX_429_TRIES):
            try:
                async with self._session.post(self.url, data=body, headers=self._headers,
                                              timeout=self._timeout) as resp:
                    status = resp.status
                    text = (await resp.text()).strip()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._problem(f"collector at {self.url} unreachable: {exc or type(exc).__name__}"
                              "; retrying with backoff", warn=True)
                await self._wait()
                return False
            if status == 429:
                await asyncio.sleep(_RETRY_429)
                continue
            if status == 200:
                if self._trouble is not None:
                    log.warning("reports to %s are delivered again", self.url)
                    self._trouble = None
                self._backoff = self._min_backoff
                self.delivered += 1
                return True
            if status == 401:
                self._problem(f"collector at {self.url} refused the token (401); set --token or "
                              "PULLTRACE_AGENT_TOKEN to the collector's", warn=False)
            else:
                self._problem(f"collector at {self.url} answered {status}: {text}",
                              warn=status >= 500)
            await self._wait()
            return False
        return False

    def _problem(self, message: str, *, warn: bool) -> None:
        if message != self._trouble:
            (log.warning if warn else log.error)("%s", message)
            self._trouble = message

    async def _wait(self) -> None:
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, self._max_backoff)


async def run_agent(*, socket_path: str, namespace: str, server: str, node: str,
                    token: str | None, interval: float,
                    stop: asyncio.Event | None = None) -> None:
    """Poll containerd and post to ``server`` until ``stop`` is set (or SIGINT/SIGTERM)."""
    report_url(server)
    client = ContainerdClient(socket_path, namespace)  # a missing socket is an error here
    try:
        poller = ContainerdPoller(client, node, interval=interval,
                                  where=f"containerd at {client.socket_path}")
        await asyncio.to_thread(poller.check)
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        async with aiohttp.ClientSession() as session:
            poster = ReportPoster(session, server, token)
            log.info("agent for node %r: containerd %s (namespace %s) -> %s every %gs", node,
                     client.socket_path, namespace, poster.url, interval)
            task = asyncio.create_task(poller.run(poster), name="pulltrace-agent")
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info("stopping; %d reports delivered", poster.delivered)
    finally:
        client.close()
