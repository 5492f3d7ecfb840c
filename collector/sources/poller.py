"""containerd's content store, read as pulls: AgentReports of the extended shape.

Two parts:

- :class:`PullTracker` turns what containerd shows at one moment (ingests, committed manifests and
  indexes with their labels, the blobs of a pull, image records) into one
  :class:`~collector.model.AgentReport`, remembering what it needs between polls. It reads
  through the small :class:`ContentSource` protocol (which
  :class:`~collector.sources.containerd.ContainerdClient` satisfies), takes its time from an
  injected clock, and does nothing else: tests drive it with an in-memory content store.
- :class:`ContainerdPoller` calls it every ``interval`` seconds in a worker thread, hands each
  report to a sink (the collector, or an HTTP poster), retries with backoff while containerd is
  away and makes each such gap visible.

How containerd's state maps onto pulls (measured on containerd 1.6):

- a pull's manifest (or index) is committed before its children download, already labelled:
  ``containerd.io/gc.ref.content.config`` and ``...l.<n>`` name a manifest's config and layers,
  ``...m.<n>`` an index's manifests, ``containerd.io/distribution.source.<host>=<repo>`` its
  repository (the host without its port). An ingest (``layer-sha256:<hex>``; its ``expected``
  digest is always empty) belongs to the pull whose manifest lists its digest; the manifest's JSON
  gives every child's exact media type and size;
- the pull is identified by its manifest or index digest and starts when that blob was created;
  its image reference is ``host/repo@digest`` until an image record names the digest, then that
  record's name (the tag);
- an ingest that disappears was committed when its blob is in the content store; if the blob is
  still absent one poll later, its download was aborted: the layer failed and so did the pull;
- a blob the manifest lists that was in the content store before the pull started was not
  fetched: ``cached``;
- when a pull is aborted, containerd drops its ingests and garbage-collects the manifest within a
  fraction of a second, so what was learnt about a manifest is kept here, not re-read;
- a frozen ingest (its writer died) is reported as it is: the engine's stall rule judges it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from collector.errors import ContainerdError
from collector.model import AgentReport
from collector.sources.containerd import (
    ContainerdUnavailableError,
)

if TYPE_CHECKING:
    from collector.service import Collector

from collector.sources.documents import (
    ROOT_FILTERS,
    Descriptor,
    Document,
    ingest_digest,
    parse_document,
)
from collector.sources.tracker import ContentSource, PullTracker

__all__ = [
    "DEFAULT_INTERVAL",
    "ROOT_FILTERS",
    "ContainerdPoller",
    "ContentSource",
    "Descriptor",
    "Document",
    "PullTracker",
    "Sink",
    "feed_collector",
    "ingest_digest",
    "parse_document",
]

log = logging.getLogger("pulltrace.containerd")

DEFAULT_INTERVAL = 0.5


Sink = Callable[[AgentReport], Awaitable[bool]]
"""Where reports go; answers True once the report was delivered (then it is acknowledged)."""


class ContainerdPoller:
    """Polls containerd every ``interval`` seconds and hands each report to a sink.

    The client's calls block, so they run in a thread of their own. While containerd cannot be
    reached (stopped, restarting, socket gone) no report is sent — an empty one would say every
    pull ended — and the poller retries with backoff up to ``max_backoff`` seconds. Each such gap
    is logged and passed to ``on_gap`` once, when it starts. Nothing that goes wrong in a poll
    ends the loop.
    """

    def __init__(self, client: ContentSource, node: str, *, interval: float = DEFAULT_INTERVAL,
                 tracker: PullTracker | None = None, max_backoff: float = 5.0,
                 on_gap: Callable[[str], None] | None = None,
                 on_back: Callable[[float], None] | None = None,
                 where: str = "containerd") -> None:
        if interval <= 0:
            raise ValueError(f"the poll interval must be positive, got {interval!r}")
        self.client = client
        self.tracker = tracker or PullTracker(node)
        self.interval = interval
        self.max_backoff = max(max_backoff, interval)
        self.on_gap = on_gap
        self.on_back = on_back
        self.where = where
        self.gaps = 0
        self.reports = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pulltrace-containerd")

    def check(self) -> None:
        """One call to containerd, at start: an error that retrying cannot fix (permission,
        wrong socket, bad namespace) is raised; containerd not answering yet only warns."""
        try:
            self.client.list_statuses()
        except ContainerdUnavailableError as exc:
            log.warning("%s; will keep trying", exc)

    async def poll_once(self) -> AgentReport:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.tracker.poll, self.client)

    async def run(self, sink: Sink) -> None:
        """Poll and deliver until cancelled."""
        loop = asyncio.get_running_loop()
        backoff = self.interval
        gap_started: float | None = None
        due = loop.time()
        try:
            while True:
                try:
                    report = await self.poll_once()
                except Exception as exc:  # the source must outlive any poll
                    if gap_started is None:
                        gap_started = loop.time()
                        self._gap(exc)
                    else:
                        log.debug("%s still unreachable: %s", self.where, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    due = loop.time()
                    continue
                if gap_started is not None:
                    lasted = loop.time() - gap_started
                    log.warning("%s is back after %.1fs", self.where, lasted)
                    if self.on_back is not None:
                        self.on_back(lasted)
                    gap_started = None
                    backoff = self.interval
                try:
                    delivered = await sink(report)
                except Exception:  # a failing sink must not end the source
                    log.exception("could not deliver a report")
                    delivered = False
                self.reports += 1
                if delivered:
                    self.tracker.acknowledge(report.timestamp)
                due = max(due + self.interval, loop.time())
                await asyncio.sleep(due - loop.time())
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _gap(self, exc: BaseException) -> None:
        self.gaps += 1
        if isinstance(exc, ContainerdUnavailableError):
            log.warning("lost %s: %s; retrying with backoff (no reports until it is back)",
                        self.where, exc)
        elif isinstance(exc, ContainerdError):
            log.error("%s answered with an error: %s; retrying with backoff", self.where, exc)
        else:
            log.error("polling %s failed; retrying with backoff", self.where, exc_info=exc)
        if self.on_gap is not None:
            self.on_gap(str(exc))


async def feed_collector(collector: Collector, poller: ContainerdPoller) -> None:
    """Run ``poller`` into an in-process collector until cancelled; each gap in containerd's
    answers counts in ``pulltrace_source_gaps_total{source="containerd"}`` and is a
    ``source.unavailable`` event (then ``source.available``) in the events table and stream."""
    gaps = collector.metrics.source_gaps.labels("containerd")
    node = poller.tracker.node

    def gap(message: str) -> None:
        gaps.inc()
        collector.source_changed(node, poller.where, available=False, message=message)

    def back(lasted: float) -> None:
        collector.source_changed(node, poller.where, available=True,
                                 message=f"answering again after {lasted:.1f}s")

    poller.on_gap = gap
    poller.on_back = back

    async def sink(report: AgentReport) -> bool:
        await collector.submit(report)
        return True

    await poller.run(sink)
