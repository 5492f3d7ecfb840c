"""A live collector watching the testbed's containerd, for end-to-end tests.

The collector (engine, in-memory DuckDB, API and /metrics on free ports) and its containerd poller
run on an event loop in a background thread; the test thread drives the testbed and reads what
the collector made of it. Every engine output is kept, so a test can check each sample and each
progress row, not only the end state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.engine import Engine, EngineConfig
from collector.metrics import Metrics
from collector.model import AgentReport, PullStatus
from collector.records import Output, Progress, Sample
from collector.server import BackgroundServer, Server
from collector.service import Collector
from collector.sources.containerd import ContainerdClient
from collector.sources.poller import ContainerdPoller, feed_collector
from collector.store import Store
from collector.testbed import PushedImage, Testbed

T = TypeVar("T")
NODE = "e2e-node"
ABORTED = "was aborted: its download stopped and the blob is not in the content store"


def tag_ref(bed: Testbed, pushed: PushedImage) -> str:
    """The image record `ctr content fetch` writes: the name it was fetched by, port included."""
    return f"{bed.proxy_addr}/{pushed.ref}"


def digest_ref(pushed: PushedImage) -> str:
    """What a pull is called before its image record exists: the distribution-source label's
    host (containerd drops the port) and repository, at the manifest digest."""
    repo = pushed.ref.rpartition(":")[0]
    return f"127.0.0.1/{repo}@{pushed.image.manifest.digest}"


def layer_of(pull: PullStatus, digest: str):
    (found,) = [layer for layer in pull.layers if layer.digest == digest]
    return found


def expected_layers(pushed: PushedImage, status: str = "completed") -> list[tuple]:
    return [(b.digest, b.media_type, b.size, b.size, status) for b in pushed.image.blobs]


def actual_layers(pull: PullStatus) -> list[tuple]:
    return [(x.digest, x.media_type, x.total_bytes, x.downloaded_bytes, x.status.value)
            for x in pull.layers]


class RecordingEngine(Engine):
    """The engine, keeping every output it produced (appended on the loop's thread)."""

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.outputs: list[Output] = []

    def ingest(self, report: AgentReport) -> Output:
        out = super().ingest(report)
        self.outputs.append(out)
        return out

    def tick(self, now: int) -> Output:
        out = super().tick(now)
        self.outputs.append(out)
        return out


class LiveCollector:
    def __init__(self, bed: Testbed, *, config: EngineConfig | None = None,
                 interval: float = 0.25) -> None:
        self.engine = RecordingEngine(config or EngineConfig())
        self.collector = Collector(self.engine, Store(":memory:"), Metrics(), tick_interval=0.25)
        self._background = BackgroundServer(self.collector)
        self.server: Server = self._background.server
        self.client = ContainerdClient(str(bed.socket_path), bed.namespace)
        self.poller = ContainerdPoller(self.client, NODE, interval=interval, max_backoff=0.5)
        self.poller.tracker.poll(self.client)  # what is in the store already is not a pull
        self._task = self.call(self._start())

    async def _start(self) -> asyncio.Task[None]:
        return asyncio.create_task(feed_collector(self.collector, self.poller))

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._background.call(coro)

    def close(self) -> None:
        try:
            self.call(self._stop_source())
        finally:
            self._background.close()
            self.client.close()

    async def _stop_source(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def __enter__(self) -> LiveCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------

    def pulls(self) -> list[PullStatus]:
        async def read() -> list[PullStatus]:
            return self.collector.pulls()

        return self.call(read())

    def wait_for(self, find: Callable[[list[PullStatus]], T | None], what: str,
                 timeout: float = 30.0) -> T:
        deadline = time.monotonic() + timeout
        while True:
            found = find(self.pulls())
            if found is not None and found is not False:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; pulls: "
                            f"{[(p.image_ref, p.status.value) for p in self.pulls()]}")
            time.sleep(0.05)

    def outputs(self) -> list[Output]:
        return list(self.engine.outputs)

    def samples(self, pull_id: str) -> list[Sample]:
        return [s for out in self.outputs() for s in out.samples if s.pull_id == pull_id]

    def progress(self, pull_id: str) -> list[Progress]:
        return [p for out in self.outputs() for p in out.progress if p.pull_id == pull_id]

    def reports(self) -> int:
        return sum(1 for out in self.outputs() if out.report is not None)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of /metrics, read over HTTP with the Prometheus text parser."""
        text = httpx.get(self.server.metrics_url, timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    return float(sample.value)
        return 0.0


def pull_of(pulls: list[PullStatus], image_ref: str, *statuses: str) -> PullStatus | None:
    """The one pull of ``image_ref`` (by tag or digest reference) once its status is one of
    ``statuses`` (any status when none is given)."""
    found = [p for p in pulls if p.image_ref == image_ref]
    assert len(found) <= 1, [(p.id, p.image_ref) for p in found]
    if found and (not statuses or found[0].status.value in statuses):
        return found[0]
    return None
