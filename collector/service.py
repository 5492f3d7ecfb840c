"""The live collector: engine + store + metrics + event fan-out, on one asyncio loop.

Reports go through the engine at once (it is fast and pure); their rows queue for the store,
and one committer task writes whatever has queued in one transaction while the next batch
gathers (group commit). A report's caller is answered only after the batch holding it is
committed, so an acknowledged sample survives ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from collector.engine import Engine
from collector.errors import CapacityError, PulltraceError, StoreError
from collector.limits import Limits
from collector.metrics import Metrics
from collector.model import AgentReport, EventType, PullEvent, PullStatus, SourceEvent
from collector.records import Batch, Output
from collector.store import Store
from collector.writer import WriterProcess

log = logging.getLogger("pulltrace.collector")

Clock = Callable[[], int]
SSE_BACKLOG = 8 << 20  # bytes of events a client may lag behind before it is dropped


def wall_clock() -> int:
    return time.time_ns()


class Recorder:
    """Appends accepted reports to a JSONL recording, synced with each commit."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: a failed write leaves nothing queued that a later one would flush.
            self._file = self.path.open("ab", buffering=0)
        except OSError as exc:
            raise PulltraceError(f"cannot write the recording {self.path}: {exc.strerror}; "
                                 "choose another file") from exc

    def write(self, lines: list[str]) -> None:
        """Append reports, each already one line of JSON: all of them, or (StoreError)
        none, so that a retry never leaves half a line in the file."""
        if not lines:
            return
        data = memoryview("".join(line + "\n" for line in lines).encode())
        fd = self._file.fileno()
        try:
            start = os.fstat(fd).st_size
        except OSError as exc:
            raise StoreError(f"could not append to the recording {self.path}: "
                             f"{exc.strerror}") from exc
        try:
            while data:
                data = data[self._file.write(data):]
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise StoreError(f"could not append to the recording {self.path}: "
                             f"{exc.strerror}; free space there") from exc

    def close(self) -> None:
        self._file.close()


class Subscription:
    """One SSE client: the encoded events not yet sent, as chunks shared by every client
    (one per commit). A client that lets more than ``SSE_BACKLOG`` bytes pile up is
    dropped."""

    def __init__(self) -> None:
        self.max_pending = SSE_BACKLOG
        self.chunks: deque[bytes] = deque()
        self.pending = 0
        self.dropped = False
        self._ready = asyncio.Event()
        # Closes the client's connection: its handler may be stuck writing to a client that
        # does not read, and must not keep the socket and the chunks.
        self.on_drop: Callable[[], None] | None = None

    def push(self, chunk: bytes) -> bool:
        if self.dropped:
            return False
        # A client that has sent everything takes the next commit whatever its size: only
        # falling behind gets a client dropped.
        if self.pending and self.pending + len(chunk) > self.max_pending:
            self.drop()
            return False
        self.chunks.append(chunk)
        self.pending += len(chunk)
        self._ready.set()
        return True

    async def next(self) -> list[bytes] | None:
        """Every chunk queued (not copied: they are shared); None once dropped."""
        while not self.chunks:
            if self.dropped:
                return None
            self._ready.clear()
            await self._ready.wait()
        chunks = list(self.chunks)  # drop() empties them, so these are a live client's
        self.chunks.clear()
        self.pending = 0
        return chunks

    def drop(self) -> None:
        self.dropped = True
        self.chunks.clear()
        self.pending = 0
        self._ready.set()
        if self.on_drop is not None:
            self.on_drop()


@dataclass
class _Item:
    out: Output
    future: asyncio.Future[None] | None
    # Repeats of this report that arrived while it waited: answered with its commit.
    followers: list[asyncio.Future[None]] | None = None
    committed: bool = False

    def waiters(self) -> list[asyncio.Future[None]]:
        found = [f for f in self.followers or () if not f.done()]
        if self.future is not None and not self.future.done():
            found.append(self.future)
        return found


@dataclass
class _Attempt:
    """A batch on its way to the file, retried as it is until it is written."""

    items: list[_Item]
    batch: Batch | None = None  # made on the store's thread: the reports' JSON is built there
    stored: bool = False  # in the database; only the recording may be left to write


@dataclass
class Collector:
    engine: Engine
    store: Store | WriterProcess
    metrics: Metrics
    recorder: Recorder | None = None
    clock: Clock = wall_clock  # stamps each report's arrival and drives the ticks
    tick_interval: float = 1.0
    limits: Limits = field(default_factory=Limits)
    ready: bool = False
    store_error: str | None = None  # the last write failure, while writes keep failing
    _queue: list[_Item] = field(default_factory=list)
    _wake: asyncio.Event | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="pulltrace-store"))
    _subscribers: set[Subscription] = field(default_factory=set)
    _last_item: _Item | None = None
    _closing: asyncio.Event | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        recovered = await loop.run_in_executor(self._executor, self.store.recover, self.engine)
        if recovered:
            log.info("rebuilt %d in-flight pulls from %s", recovered, self.store.path)
        self._refresh_gauges()
        self._tasks = [asyncio.create_task(self._commit_loop(), name="pulltrace-commit"),
                       asyncio.create_task(self._tick_loop(), name="pulltrace-tick")]
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        committer = None
        for task in self._tasks:
            if task.get_name() == "pulltrace-commit":
                committer = task
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if committer is not None:
            # Not cancelled: a write runs on the store's thread whatever happens here, and
            # writing its batch again would record it twice. The loop drains the queue (or
            # gives up, writes failing) and returns.
            assert self._closing is not None
            assert self._wake is not None
            self._closing.set()
            self._wake.set()
            try:
                await committer
            except Exception:
                # It died earlier (a bug): say so, and still close the database.
                log.exception("the commit loop had failed")
        self._tasks = []
        for item in self._queue:  # left when writes fail at shutdown; never acknowledged
            for waiter in item.waiters():
                waiter.cancel()
        self._queue = []
        self.close_streams()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.store.close)
        except StoreError as exc:
            log.warning("%s", exc)
        self._executor.shutdown(wait=True)
        if self.recorder:
            self.recorder.close()

    # --- ingest ------------------------------------------------------------------------

    async def submit(self, report: AgentReport) -> None:
        """Run a report through the engine; return once its rows are committed (see
        :meth:`accept`)."""
        await self.accept(report)

    def accept(self, report: AgentReport) -> asyncio.Future[None]:
        """Run a report through the engine at once; the future is done once its rows are
        committed (cancelled if the collector stops first).

        The future is the caller's own: it may set an exception on it to stop waiting
        (the report stays queued and is written all the same). A dropped report (repeated
        or older than its node's last) waits for whatever is already queued, so its answer
        never precedes the commit of the one it repeats. A report that would start more
        pulls than the cap allows raises CapacityError and changes nothing.
        """
        self._check_capacity(report)
        # Not dataclasses.replace: it reads the fields' list on every call.
        out = self.engine.ingest(AgentReport(report.node_name, report.timestamp, report.pulls,
                                             self.clock(), report.wire))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not out.accepted:
            self.metrics.observe(out)
            last = self._last_item
            if last is None or last.committed:
                future.set_result(None)
            elif last.followers is None:
                last.followers = [future]
            else:
                last.followers.append(future)
            return future
        self._last_item = _Item(out, future)
        self._enqueue(self._last_item)
        return future

    def _check_capacity(self, report: AgentReport) -> None:
        if (queued := len(self._queue)) >= self.limits.max_backlog:
            self.metrics.reports_dropped.labels("backlog").inc()
            why = self.store_error or "the database is slow"
            raise CapacityError(
                f"{queued} reports wait to be written ({why}), the cap of --max-backlog; "
                "resend it later: nothing of it was recorded")
        cap, active = self.limits.max_active_pulls, self.engine.active_count()
        if active + len(report.pulls) <= cap:
            return  # a report starts at most one pull per pull it lists: nothing to count
        starting = self.engine.new_pulls(report)
        if starting and active + starting > cap:
            self.metrics.reports_dropped.labels("too_many_pulls").inc()
            raise CapacityError(
                f"the collector follows {active} pulls in progress and this report would "
                f"start {starting} more, over its cap of {cap} (--max-active-pulls); "
                "resend it later: nothing of it was recorded")

    def _enqueue(self, item: _Item) -> None:
        self._queue.append(item)
        self.metrics.backlog.set(len(self._queue))
        assert self._wake is not None
        self._wake.set()

    async def _commit_loop(self) -> None:
        assert self._wake is not None
        assert self._closing is not None
        while True:
            if not self._queue:
                if self._closing.is_set():
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            # A copy: reports queued while this batch is written go in the next one.
            attempt = _Attempt(list(self._queue))
            started = time.perf_counter()
            if not await self._commit(attempt):
                return
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            self.metrics.commit_reports.observe(len(attempt.items))
            del self._queue[:len(attempt.items)]
            self.metrics.backlog.set(len(self._queue))
            self._resolve(attempt.items)

    async def _commit(self, attempt: _Attempt) -> bool:
        """Write ``attempt``, the same batch again after each failure (its callers are
        still waiting: a report is answered only once it is written). False when the
        collector stops while writes still fail."""
        assert self._closing is not None
        backoff = 0.1
        while True:
            try:
                await self._write(attempt)
            except StoreError as exc:
                self.metrics.store_errors.inc()
                if self._closing.is_set():
                    waiting = sum(1 for item in self._queue if item.future is not None)
                    log.error("%s; stopping with %d reports not written (none was "
                              "acknowledged)", exc, waiting)
                    return False
                if str(exc) != self.store_error:
                    log.error("%s; retrying until it succeeds", exc)
                self.store_error = str(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self.store_error is not None:
                log.warning("writes to %s succeed again", self.store.path)
                self.store_error = None
            return True

    async def _write(self, attempt: _Attempt) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._write_sync, attempt)

    def _write_sync(self, attempt: _Attempt) -> None:
        if attempt.batch is None:
            # Reports turned into JSON once, for the store and the recording.
            attempt.batch = Batch.of([item.out for item in attempt.items])
        if not attempt.stored:
            self.store.write(attempt.batch)
            attempt.stored = True
        if self.recorder:
            self.recorder.write(attempt.batch.report_lines)

    def _resolve(self, batch: list[_Item]) -> None:
        self.metrics.observe_all(item.out for item in batch)
        for item in batch:
            item.committed = True
            for waiter in item.waiters():
                waiter.set_result(None)
        if self._subscribers:
            events: list[PullEvent | SourceEvent] = []
            for item in batch:
                events += item.out.source_events
                events += item.out.events
            self._publish(events)  # one chunk for the whole commit
        self._refresh_gauges()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            out = self.engine.tick(self.clock())
            if out.events or out.pulls:
                self._enqueue(_Item(out, None))

    def source_changed(self, node: str, source: str, available: bool,
                       message: str | None = None) -> None:
        """Record and announce that a source stopped (or resumed) answering."""
        kind = EventType.SOURCE_AVAILABLE if available else EventType.SOURCE_UNAVAILABLE
        event = SourceEvent(self.clock(), kind, node, source, message)
        self._enqueue(_Item(Output(source_events=[event]), None))

    def _refresh_gauges(self) -> None:
        self.metrics.set_gauges(self.engine.active_count(), self.engine.stalled_count(),
                                self.engine.node_count())
        self.metrics.sse_clients.set(len(self._subscribers))

    # --- reading -----------------------------------------------------------------------

    def pulls(self) -> list[PullStatus]:
        return self.engine.pulls()

    def subscribe(self) -> Subscription | None:
        if len(self._subscribers) >= self.limits.max_sse_clients:
            self.metrics.sse_rejected.labels("too_many_clients").inc()
            return None
        sub = Subscription()
        self._subscribers.add(sub)
        self.metrics.sse_clients.set(len(self._subscribers))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        self.metrics.sse_clients.set(len(self._subscribers))

    def close_streams(self) -> None:
        """End every event stream (at shutdown, so their handlers return)."""
        for sub in list(self._subscribers):
            sub.drop()
        self._subscribers.clear()

    def _publish(self, events: list[PullEvent | SourceEvent]) -> None:
        if not self._subscribers or not events:
            return
        chunk = "".join(f"data: {json.dumps(e.to_json(), separators=(',', ':'))}\n\n"
                        for e in events).encode()
        for sub in list(self._subscribers):
            if not sub.push(chunk):
                # A slow client is dropped, never waited for.
                self.metrics.sse_rejected.labels("slow").inc()
                self._subscribers.discard(sub)
                self.metrics.sse_clients.set(len(self._subscribers))
