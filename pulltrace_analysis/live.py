"""Live sources for the dashboard: a collector's URL, or a collector inside this process.

:class:`InProcessCollector` runs the real collector (engine, store, HTTP API on free ports
of 127.0.0.1) on an event loop of its own thread, so a notebook can watch pulls without a
separate service — and feed it a recording at any speed::

    live = InProcessCollector()
    live.feed("data/recording.jsonl", within=15)  # the whole recording in 15 s
    ...
    live.stop()

Both sources answer :meth:`pulls` with the JSON of ``GET /api/v1/pulls``; reading an
in-process collector goes through its event loop, the only thread that touches its engine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol, TypeVar

from collector.engine import Engine, EngineConfig
from collector.metrics import Metrics
from collector.model import AgentReport
from collector.server import BackgroundServer, Server
from collector.service import Collector
from collector.sources.recording import read_recording as read_reports
from collector.sources.recording import shift
from collector.store import Store
from collector.timefmt import NS

T = TypeVar("T")


class PullSource(Protocol):
    """Anything that tells the pulls a collector shows now (PullStatus JSON objects)."""

    def pulls(self) -> list[dict[str, Any]]: ...


class HttpSource:
    """A running collector, read through ``GET /api/v1/pulls``."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"expected an http(s) URL of a collector, got {url!r}")
        self.timeout = timeout

    def pulls(self) -> list[dict[str, Any]]:
        url = self.url + "/api/v1/pulls"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310
                body = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ConnectionError(f"cannot read {url}: {getattr(exc, 'reason', exc)}") from exc
        pulls: list[dict[str, Any]] = body.get("pulls", [])
        return pulls

    def __repr__(self) -> str:
        return f"HttpSource({self.url!r})"


class InProcessCollector:
    """The collector, serving on 127.0.0.1 (free ports) from a background thread."""

    def __init__(self, db: str | os.PathLike[str] = ":memory:", *,
                 config: EngineConfig | None = None, tick_interval: float = 1.0) -> None:
        self.collector = Collector(Engine(config), Store(db), Metrics(),
                                   tick_interval=tick_interval)
        self._feeding: concurrent.futures.Future[int] | None = None
        self._background = BackgroundServer(self.collector)
        self.server: Server = self._background.server
        self.url = self._background.url
        self.metrics_url = self._background.metrics_url

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return self._background.call(coro, timeout)

    # --- feeding --------------------------------------------------------------------

    def feed(self, source: str | os.PathLike[str] | Iterable[AgentReport], *,
             speed: float | None = None, within: float | None = None,
             to_now: bool = True) -> None:
        """Send the reports of a recording to the collector in the background, at
        ``speed`` times real time, or fast enough to take ``within`` seconds in all
        (neither: as fast as the collector commits). ``to_now`` moves their times so the
        last report lands now-ish, as a live run would."""
        if self._feeding is not None and not self._feeding.done():
            raise RuntimeError("already feeding a recording; wait() for it first")
        reports = list(read_reports(source) if isinstance(source, str | os.PathLike)
                       else source)
        if not reports:
            raise ValueError("the recording holds no reports")
        span = (reports[-1].timestamp - reports[0].timestamp) / NS
        pace = math.inf
        if within is not None:
            if within <= 0:
                raise ValueError(f"within must be above zero seconds, got {within}")
            pace = max(span / within, 1e-9) if span > 0 else math.inf
        elif speed is not None:
            if speed <= 0:
                raise ValueError(f"speed must be above zero, got {speed}")
            pace = speed
        delta = time.time_ns() - reports[0].timestamp if to_now else 0
        self._feeding = asyncio.run_coroutine_threadsafe(
            self._feed(reports, pace, delta), self._background.loop)

    async def _feed(self, reports: list[AgentReport], speed: float, delta: int) -> int:
        loop = asyncio.get_running_loop()
        first, started = reports[0].timestamp, loop.time()
        for report in reports:
            if not math.isinf(speed):
                due = started + (report.timestamp - first) / NS / speed
                await asyncio.sleep(max(0.0, due - loop.time()))
            await self.collector.submit(shift(report, delta) if delta else report)
        return len(reports)

    @property
    def feeding(self) -> bool:
        return self._feeding is not None and not self._feeding.done()

    def wait(self, timeout: float | None = None) -> int:
        """Block until the feed is done; returns how many reports it sent."""
        if self._feeding is None:
            return 0
        return self._feeding.result(timeout)

    # --- reading ----------------------------------------------------------------------

    def pulls(self) -> list[dict[str, Any]]:
        async def snapshot() -> list[dict[str, Any]]:
            return [pull.to_json() for pull in self.collector.pulls()]

        return self._call(snapshot(), timeout=10)

    # --- stopping ---------------------------------------------------------------------

    def stop(self) -> None:
        """Stop feeding and serving; close the store. Safe to call twice."""
        if not self._background.running:
            return
        try:
            if self._feeding is not None and not self._feeding.done():
                self._feeding.cancel()
                with contextlib.suppress(concurrent.futures.CancelledError,
                                         asyncio.CancelledError):
                    self._feeding.result(10)
        finally:
            self._background.close()

    def __enter__(self) -> InProcessCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "feeding" if self.feeding else "idle"
        return f"InProcessCollector({self.url}, {state})"


__all__ = ["HttpSource", "InProcessCollector", "PullSource"]
