"""`pulltrace agent`: one node's containerd pulls, posted to a collector over HTTP.

Each report goes to ``POST <server>/api/v1/report`` with ``Authorization: Bearer <token>`` when a
token is set; a collector of this project or the original Go server takes it (the Go server
ignores the extra fields). The agent keeps running whatever happens: while the collector cannot be
reached it retries with backoff, a 429 (two reports within 500 ms) is retried shortly, and a
report it could not deliver is simply superseded by the next one — a pull that finished is shown
in every report until one showing it was delivered.

The agent is a node daemon that may start before containerd: while its socket does not exist it
waits, checking again with backoff, and says so once when it starts waiting and once when the
socket appears. The socket must be in an allowed directory (see
:mod:`collector.sources.socket_path`). Neither the token nor a password in the server URL is
ever logged: URLs are shown through :func:`~collector.redaction.redact_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from urllib.parse import urlsplit

import aiohttp

from collector.errors import ConfigError
from collector.model import AgentReport
from collector.redaction import redact_url
from collector.sources.containerd import ContainerdClient
from collector.sources.poller import ContainerdPoller
from collector.sources.socket_path import (
    DEFAULT_ALLOWED_DIRS,
    SocketMissingError,
    containerd_socket,
    resolve_socket,
)

log = logging.getLogger("pulltrace.agent")

REPORT_PATH = "/api/v1/report"
_RETRY_429 = 0.1  # the collector admits one report per node per 500 ms
_MAX_429_TRIES = 10


def report_url(server: str, token: str | None = None) -> str:
    """``<server>/api/v1/report`` for a collector's base URL (``http://host:port``)."""
    try:
        parts = urlsplit(server)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--server: {redact_url(server)!r} is not an http(s) URL of a "
                          "collector (e.g. http://pulltrace.monitoring:8080)")
    if token and "@" in parts.netloc:
        # both would be the Authorization header: the URL's as Basic, the token as Bearer
        raise ConfigError(f"--server: {redact_url(server)!r} carries credentials (user:password@)"
                          " and a token is set; the collector checks only the token: drop the "
                          "credentials from the URL (or the token, if a proxy in front of the "
                          "collector wants them)")
    return server.rstrip("/") + REPORT_PATH


class ReportPoster:
    """Posts reports to a collector; a sink for :class:`ContainerdPoller`."""

    def __init__(self, session: aiohttp.ClientSession, server: str, token: str | None = None,
                 *, timeout: float = 10.0, backoff: float = 0.5,
                 max_backoff: float = 5.0) -> None:
        self.url = report_url(server, token)
        self.shown_url = redact_url(self.url)
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
                self._problem(f"collector at {self.shown_url} unreachable: "
                              f"{exc or type(exc).__name__}"
                              "; retrying with backoff", warn=True)
                await self._wait()
                return False
            if status == 429:
                await asyncio.sleep(_RETRY_429)
                continue
            if status == 200:
                if self._trouble is not None:
                    log.warning("reports to %s are delivered again", self.shown_url)
                    self._trouble = None
                self._backoff = self._min_backoff
                self.delivered += 1
                return True
            if status == 401:
                what = ("refused the token" if "Authorization" in self._headers
                        else "wants a token")
                self._problem(f"collector at {self.shown_url} {what} (401); set --token or "
                              "PULLTRACE_AGENT_TOKEN to the collector's", warn=False)
            else:
                self._problem(f"collector at {self.shown_url} answered {status}: {text[:500]}",
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


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``; True when ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def wait_for_socket(path: str, allowed: Sequence[str] | None, stop: asyncio.Event, *,
                          backoff: float = 0.5, max_backoff: float = 5.0) -> str | None:
    """The resolved socket path once a Unix socket is there (None if ``stop`` is set first).

    A path outside ``allowed`` (:class:`ConfigError`) or something else than a socket
    (:class:`~collector.errors.ContainerdError`) is raised at once: waiting cannot fix those.
    The path is resolved again on every check, so a symlink that appears later is followed
    (and judged by where it leads).
    """
    loop = asyncio.get_running_loop()
    resolve_socket(path, allowed)
    since: float | None = None
    delay = backoff
    while True:
        try:
            found = containerd_socket(path, allowed)
        except SocketMissingError as exc:
            if since is None:
                since = loop.time()
                log.warning("%s; waiting for it (checking again within %gs)", exc, max_backoff)
            if await _sleep_or_stop(stop, delay):
                return None
            delay = min(delay * 2, max_backoff)
            continue
        if since is not None:
            log.warning("containerd socket %s is there after %.1fs", found, loop.time() - since)
        return found


async def run_agent(*, socket_path: str, namespace: str, server: str, node: str,
                    token: str | None, interval: float,
                    allowed_dirs: Sequence[str] | None = DEFAULT_ALLOWED_DIRS,
                    stop: asyncio.Event | None = None) -> None:
    """Poll containerd and post to ``server`` until ``stop`` is set (or SIGINT/SIGTERM).

    ``socket_path`` must resolve inside ``allowed_dirs`` (None: anywhere); while it does not
    exist the agent waits for it.
    """
    report_url(server, token)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    while True:
        path = await wait_for_socket(socket_path, allowed_dirs, stop)
        if path is None:
            log.info("stopping; containerd's socket never appeared")
            return
        try:
            client = ContainerdClient(path, namespace)
            break
        except SocketMissingError:  # gone again between the check and the client
            continue
    try:
        poller = ContainerdPoller(client, node, interval=interval,
                                  where=f"containerd at {client.socket_path}")
        await asyncio.to_thread(poller.check)
        async with aiohttp.ClientSession() as session:
            poster = ReportPoster(session, server, token)
            log.info("agent for node %r: containerd %s (namespace %s) -> %s every %gs", node,
                     client.socket_path, namespace, poster.shown_url, interval)
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
