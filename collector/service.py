"""The live collector: engine + store + metrics + event fan-out, on one asyncio loop.

Reports go through the engine at once (it is fast and pure); their rows queue for the store,
and one committer task writes whatever has queued in one go while the next batch gathers
(group commit). A report's caller is answered only once the batch holding it is durable, so
an acknowledged sample survives ``kill -9``. With a :class:`~collector.journal.Journal`,
durable means synced to the journal, and a second task writes the database behind it in
larger batches (a DuckDB commit, and its checkpoints, are then never what an agent waits
for); without one, it means committed to the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.engine import Engine
from collector.errors import CapacityError, PulltraceError, ReportError, StoreError
from collector.journal import Journal, append_synced
from collector.limits import Limits
from collector.metrics import Metrics
from collector.model import (
    AgentReport,
    EventType,
    PullEvent,
    PullStatus,
    SourceEvent,
    parse_report,
)
from collector.records import Batch, Output
from collector.store import Store
from collector.writer import WriterProcess

log = logging.getLogger("pulltrace.collector")

Clock = Callable[[], int]
SSE_BACKLOG = 8 << 20  # bytes of events a client may lag behind before it is dropped
# Reports in one database transaction behind the journal: larger batches cost less a row,
# but a batch is held in memory until it is written.
STORE_BATCH = 5000
STORE_INTERVAL = 0.25  # seconds from the start of one database commit to the next, at least
STORED_WAIT = 30.0  # seconds a read waits for the database to hold what was acknowledged


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
        fd = self._file.fileno()
        try:
            start = os.fstat(fd).st_size
        except OSError as exc:
            raise StoreError(f"could not append to the recording {self.path}: "
                             f"{exc.strerror}") from exc
        try:
            append_synced(fd, "".join(line + "\n" for line in lines).encode(), start)
        except OSError as exc:
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
    line: str | None = None  # the report as the journal holds it

    @property
    def has_report(self) -> bool:
        return self.out.report is not None and self.out.accepted

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
    journal: Journal | None = None
    clock: Clock = wall_clock  # stamps each report's arrival and drives the ticks
    tick_interval: float = 1.0
    limits: Limits = field(default_factory=Limits)
    ready: bool = False
    # The last write failure of the database, and of the journal, while writes keep failing.
    store_error: str | None = None
    journal_error: str | None = None
    _queue: list[_Item] = field(default_factory=list)
    _unstored: list[_Item] = field(default_factory=list)  # in the journal, not the database
    _reports_unwritten: int = 0  # reports in ``_queue`` and ``_unstored``
    _journaled: int = 0  # items moved to ``_unstored`` so far
    _stored: int = 0  # of those, items in the database
    _store_waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)
    _wake: asyncio.Event | None = None
    _store_wake: asyncio.Event | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="pulltrace-store"))
    # The journal's own thread: a sync must not wait behind a database commit.
    _journal_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="pulltrace-journal"))
    _subscribers: set[Subscription] = field(default_factory=set)
    _last_item: _Item | None = None
    _closing: asyncio.Event | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._store_wake = asyncio.Event()
        self._closing = asyncio.Event()
        recovered = await loop.run_in_executor(self._executor, self.store.recover, self.engine)
        if recovered:
            log.info("rebuilt %d in-flight pulls from %s", recovered, self.store.path)
        if self.journal is not None:
            replayed = await loop.run_in_executor(self._executor, self._replay_journal)
            if replayed:
                log.info("wrote %d reports from the journal %s into %s", replayed,
                         self.journal.folder, self.store.path)
        self.refresh_gauges()
        self._listeners_changed()
        self._tasks = [asyncio.create_task(self._commit_loop(), name="pulltrace-commit"),
                       asyncio.create_task(self._tick_loop(), name="pulltrace-tick")]
        if self.journal is not None:
            self._tasks.append(asyncio.create_task(self._store_loop(), name="pulltrace-store"))
        self.ready = True

    def _replay_journal(self) -> int:
        """Run the journal's reports that the database does not hold through the engine
        (rebuilt from the database) and write them; then begin a new segment."""
        assert self.journal is not None
        stored = self.store.report_seq
        outs: list[Output] = []
        replayed = 0
        for seq, line in self.journal.lines_after(stored):
            try:
                report = parse_report(line)
            except ReportError as exc:
                log.warning("skipping report %d of the journal %s: %s", seq,
                            self.journal.folder, exc)
                continue
            out = self.engine.ingest(report)
            if out.accepted:
                outs.append(out)
            if len(outs) >= STORE_BATCH:
                self.store.write(Batch.of(outs))
                replayed += len(outs)
                outs = []
        if outs:
            self.store.write(Batch.of(outs))
            replayed += len(outs)
        self.journal.start(self.store.report_seq + 1)
        self.journal.release(self.store.report_seq)
        return replayed

    async def stop(self) -> None:
        self.ready = False
        loops = []
        for task in self._tasks:
            if task.get_name() in ("pulltrace-commit", "pulltrace-store"):
                loops.append(task)
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Not cancelled: a write runs on its thread whatever happens here, and writing its
        # batch again would record it twice. The loops drain what is queued (or give up,
        # writes failing) and return; the store loop ends after the commit loop.
        assert self._closing is not None
        assert self._wake is not None
        assert self._store_wake is not None
        self._closing.set()
        self._wake.set()
        self._store_wake.set()
        for task in loops:
            try:
                await task
            except Exception:
                # It died earlier (a bug): say so, and still close the database.
                log.exception("the %s loop had failed", task.get_name())
        self._tasks = []
        for item in self._queue:  # left when writes fail at shutdown; never acknowledged
            for waiter in item.waiters():
                waiter.cancel()
        self._queue = []
        if self._unstored:
            assert self.journal is not None
            log.error("stopping with %d reports in the journal %s and not in the database; "
                      "the next start writes them", sum(i.has_report for i in self._unstored),
                      self.journal.folder)
        self._unstored = []
        self.close_streams()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.store.close)
        except StoreError as exc:
            log.warning("%s", exc)
        self._executor.shutdown(wait=True)
        if self.journal is not None:
            self.journal.close()
        self._journal_executor.shutdown(wait=True)
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
        if (queued := self._unwritten()) >= self.limits.max_backlog:
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

    def waiting_for(self) -> str:
        """Why a report is not answered yet."""
        if self.journal is not None:
            return self.journal_error or "the journal is slow"
        return self.store_error or "the database is slow"

    def _unwritten(self) -> int:
        """Reports not in the database yet (journaled or not): what the backlog cap bounds
        (ticks and source events queue beside them, and do not count)."""
        return self._reports_unwritten

    def _stored_items(self, items: list[_Item]) -> None:
        self._reports_unwritten -= sum(1 for item in items if item.has_report)

    def _enqueue(self, item: _Item) -> None:
        self._queue.append(item)
        if item.has_report:
            self._reports_unwritten += 1
        self.metrics.backlog.set(self._unwritten())
        assert self._wake is not None
        self._wake.set()

    async def _commit_loop(self) -> None:
        """Make what has queued durable, a batch at a time, and answer its reports."""
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
            items = list(self._queue)
            if self.journal is None:
                attempt = _Attempt(items)
                started = time.perf_counter()
                if not await self._retrying(self._write, attempt, to_journal=False):
                    return
                self._observe_commit(started, len(items))
                del self._queue[:len(items)]
                self._stored_items(items)
            else:
                if not await self._retrying(self._journal_write, items, to_journal=True):
                    return
                del self._queue[:len(items)]
                self._unstored += items
                self._journaled += len(items)
                assert self._store_wake is not None
                self._store_wake.set()
            self.metrics.backlog.set(self._unwritten())
            self._resolve(items)

    async def _store_loop(self) -> None:
        """Write what the journal holds into the database, in batches of up to
        ``STORE_BATCH`` items, then let the journal drop what the database has."""
        assert self._store_wake is not None
        assert self._closing is not None
        assert self.journal is not None
        commit_done = next(t for t in self._tasks if t.get_name() == "pulltrace-commit")
        loop = asyncio.get_running_loop()
        while True:
            if not self._unstored:
                if self._closing.is_set() and commit_done.done():
                    return
                await self._store_wake.wait()
                self._store_wake.clear()
                continue
            attempt = _Attempt(self._unstored[:STORE_BATCH])
            started = time.perf_counter()
            if not await self._retrying(self._write, attempt, to_journal=False):
                return
            self._observe_commit(started, len(attempt.items))
            rest = STORE_INTERVAL - (time.perf_counter() - started)
            del self._unstored[:len(attempt.items)]
            self._stored_items(attempt.items)
            self._stored += len(attempt.items)
            self.metrics.backlog.set(self._unwritten())
            waiting = []
            for upto, future in self._store_waiters:
                if upto > self._stored:
                    waiting.append((upto, future))
                elif not future.done():
                    future.set_result(None)
            self._store_waiters = waiting
            try:
                await loop.run_in_executor(self._journal_executor, self.journal.release,
                                           self.store.report_seq)
            except StoreError as exc:
                log.warning("%s", exc)
            if rest > 0 and len(self._unstored) < STORE_BATCH and not self._closing.is_set():
                # A commit costs tens of milliseconds whatever its size, and nobody waits
                # for it: a few a second, each of what gathered meanwhile, leave the CPU
                # to the reports.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), rest)

    async def stored(self) -> None:
        """Return once every report acknowledged so far is in the database too (what the
        journal holds ahead of it is written within a commit or two); StoreError after
        ``STORED_WAIT`` seconds, while the database cannot be written."""
        if self._stored >= self._journaled:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._store_waiters.append((self._journaled, future))
        try:
            async with asyncio.timeout(STORED_WAIT):
                await asyncio.shield(future)
        except TimeoutError as exc:
            raise StoreError(f"reports acknowledged {STORED_WAIT:g}s ago are not in the "
                             f"database yet ({self.store_error or 'the database is slow'})"
                             ) from exc

    def _observe_commit(self, started: float, items: int) -> None:
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self.metrics.commit_reports.observe(items)

    async def _retrying(self, write: Callable[[Any], Awaitable[None]], work: Any, *,
                        to_journal: bool) -> bool:
        """Run ``write(work)``, again after each failure with the same batch (its callers
        are still waiting: a report is answered only once it is durable; or it is in the
        journal, which must not be dropped before the database has it). False when the
        collector stops while writes still fail."""
        assert self._closing is not None
        what = "the journal" if to_journal else str(self.store.path)
        backoff = 0.1
        while True:
            try:
                await write(work)
            except StoreError as exc:
                self.metrics.store_errors.inc()
                if self._closing.is_set():
                    if to_journal or self.journal is None:
                        waiting = sum(1 for item in self._queue if item.future is not None)
                        log.error("%s; stopping with %d reports not written (none was "
                                  "acknowledged)", exc, waiting)
                    else:
                        log.error("%s", exc)
                    return False
                if str(exc) != self._error(to_journal):
                    log.error("%s; retrying until it succeeds", exc)
                self._set_error(to_journal, str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._error(to_journal) is not None:
                log.warning("writes to %s succeed again", what)
                self._set_error(to_journal, None)
            return True

    def _error(self, journal: bool) -> str | None:
        return self.journal_error if journal else self.store_error

    def _set_error(self, journal: bool, text: str | None) -> None:
        if journal:
            self.journal_error = text
        else:
            self.store_error = text

    async def _journal_write(self, items: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._journal_executor, self._journal_write_sync, items)

    def _journal_write_sync(self, items: list[_Item]) -> None:
        assert self.journal is not None
        lines = []
        for item in items:
            if item.has_report:
                if item.line is None:
                    assert item.out.report is not None
                    item.line = item.out.report.dumps()
                lines.append(item.line)
        self.journal.append(lines)

    async def _write(self, attempt: _Attempt) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._write_sync, attempt)

    def _write_sync(self, attempt: _Attempt) -> None:
        if attempt.batch is None:
            # Reports turned into JSON once, for the journal, the store and the recording.
            # Behind the journal every report has its line already.
            lines = ([i.line for i in attempt.items if i.has_report and i.line is not None]
                     if self.journal is not None else None)
            attempt.batch = Batch.of([item.out for item in attempt.items], lines=lines)
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

    def refresh_gauges(self) -> None:
        """Set the gauges read off the engine; called for each scrape rather than each
        commit (counting stalled pulls visits every pull in progress)."""
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
        self._listeners_changed()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        self._listeners_changed()

    def close_streams(self) -> None:
        """End every event stream (at shutdown, so their handlers return)."""
        for sub in list(self._subscribers):
            sub.drop()
        self._subscribers.clear()
        self._listeners_changed()

    def _listeners_changed(self) -> None:
        self.metrics.sse_clients.set(len(self._subscribers))
        # Progress events only ever go to the stream: with nobody listening, the engine
        # need not make them (nor the layer views they carry).
        self.engine.progress_events = bool(self._subscribers)

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
                self._listeners_changed()
