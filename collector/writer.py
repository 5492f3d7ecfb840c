"""The live collector's database writer, in a process of its own.

DuckDB's Python client takes the GIL back many times inside one statement (about 150 times
in a transaction of 100 reports), so a writer thread beside a busy event loop spends most of
a commit waiting for the loop, and the loop for it. In its own process the writer has a GIL
to itself and a core of its own; the collector sends each batch as columns
(:class:`~collector.records.Columns`) and waits for the answer on its store thread.

The child runs a :class:`~collector.store.Store`, so failures keep their meaning: a
StoreError in the child is a StoreError here, and the collector retries the same batch. If
the child dies, the next write starts a new one, which first asks the file whether the batch
that was being written landed. The child dies with the collector (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from collector.errors import StoreError
from collector.records import Batch, Column, Columns
from collector.store import Store

if TYPE_CHECKING:
    from collector.engine import Engine
    from collector.export import ExportQuery, Page

log = logging.getLogger("pulltrace.writer")

_PR_SET_PDEATHSIG = 1
_START_TIMEOUT = 60.0  # seconds for a new writer to import and open the file
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class WriterProcess:
    """Writes batches through a :class:`Store` in a child process; used like a Store by
    :class:`~collector.service.Collector` (recover, write, close)."""

    def __init__(self, store: Store) -> None:
        # The caller opened the file (so a bad path or a lock is an error at start); it is
        # used here to recover, then closed and opened again by the child.
        self.path = store.path
        self.memory_limit = store.memory_limit
        self._local: Store | None = store
        self._committed = store.batch_number  # the last batch the file is known to hold
        self._seq = store.report_seq  # the number of the last report in it
        self._proc: BaseProcess | None = None
        self._writes: Connection | None = None
        self._reads: Connection | None = None
        self._unsure: int | None = None  # a batch in flight when the child was lost
        self._reads_lock = threading.Lock()

    # --- what the collector calls, on its store thread ------------------------------------

    def recover(self, engine: Engine) -> int:
        local = self._require_local()
        recovered = local.recover(engine)
        self._committed, self._seq = local.batch_number, local.report_seq
        local.close()
        self._local = None
        self._start()
        return recovered

    def write(self, batch: Batch | Columns) -> None:
        """One batch in one transaction in the child; StoreError if it failed (nothing of it
        written) or the child was lost (it may have landed: the retry finds out)."""
        pieces = _pack(batch)
        if self._writes is None:
            self._start()
        assert self._writes is not None
        self._committed, self._seq = self._ask(self._writes, ("write", pieces),
                                               self._committed + 1)

    @property
    def report_seq(self) -> int:
        """The number of the last report the file is known to hold."""
        return self._seq

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None
        if self._writes is None:
            return
        try:
            self._ask(self._writes, ("close", None), None)
        finally:
            self._stop_child()

    def read_page(self, query: ExportQuery) -> Page:
        """A page of an export, read by the child's reader connection."""
        with self._reads_lock:
            if self._reads is None:
                raise StoreError(f"the database writer for {self.path} is not running; "
                                 "try again in a moment")
            try:
                self._reads.send(("page", query))
                kind, value = self._reads.recv()
            except (EOFError, OSError) as exc:
                # The writer is gone; the next write finds out and starts a new one.
                raise StoreError(f"the database writer for {self.path} stopped; try again "
                                 "in a moment") from exc
        if kind == "error":
            raise StoreError(str(value))
        page: Page = value
        return page

    # --- the child ----------------------------------------------------------------------

    def _require_local(self) -> Store:
        if self._local is None:
            raise StoreError(f"{self.path} was already handed to its writer process")
        return self._local

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        writes, child_writes = ctx.Pipe()
        reads, child_reads = ctx.Pipe()
        proc = ctx.Process(target=_child_main, name="pulltrace-writer", daemon=True,
                           args=(child_writes, child_reads, self.path, self.memory_limit,
                                 self._unsure, os.getpid()))
        proc.start()
        child_writes.close()
        child_reads.close()
        self._proc, self._writes = proc, writes
        with self._reads_lock:
            self._reads = reads
        if not writes.poll(_START_TIMEOUT):
            self._stop_child()
            raise StoreError(f"the database writer for {self.path} did not start within "
                             f"{_START_TIMEOUT:.0f}s")
        try:
            self._committed, self._seq = self._ask(writes, None, None)
        except StoreError:
            self._stop_child()
            raise
        self._unsure = None
        log.debug("database writer for %s started (pid %d)", self.path, proc.pid)

    def _ask(self, conn: Connection, request: tuple[str, Any] | None,
             in_flight: int | None) -> Any:
        """Send ``request`` (None: only wait) and return the answer's value; a StoreError for
        an error the child reports, or if the child is lost (``in_flight``: the batch that
        may have landed)."""
        try:
            if request is not None:
                conn.send(request)
            kind, value = conn.recv()
        except (EOFError, OSError) as exc:
            code = self._proc.exitcode if self._proc is not None else None
            if self._proc is not None:
                self._proc.join(1.0)
                code = self._proc.exitcode
            self._stop_child()
            if in_flight is not None:
                self._unsure = in_flight
            raise StoreError(f"the database writer for {self.path} stopped (exit code "
                             f"{code}); a new one starts with the next write") from exc
        if kind == "error":
            raise StoreError(str(value))
        return value

    def _stop_child(self) -> None:
        with self._reads_lock:
            reads, self._reads = self._reads, None
        for conn in (self._writes, reads):
            if conn is not None:
                conn.close()
        self._writes = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.join(10.0)
        if proc.is_alive():
            proc.kill()
            proc.join()


# Rows transposed and pickled at a time. Transposing or pickling a whole batch (2,000
# reports: about 40 and 60 ms) is one call that holds the interpreter, and the event loop
# answering reports would wait that long; between two chunks it gets its turn.
_CHUNK = 2048
Packed = list[list[list[bytes]]]  # per table, per chunk of rows, a pickled column each


def _pack(batch: Batch | Columns) -> Packed:
    if isinstance(batch, Columns):
        return [[[pickle.dumps(c, _PROTOCOL) for c in table]] if table else []
                for table in batch.tables()]
    reports = Columns.report_columns(batch)
    packed: Packed = [[[pickle.dumps(c, _PROTOCOL) for c in reports]] if reports else []]
    for rows in (batch.samples, batch.progress, batch.events, batch.pulls, batch.layers):
        packed.append([[pickle.dumps(c, _PROTOCOL) for c in zip(*rows[i:i + _CHUNK],
                                                                  strict=True)]
                       for i in range(0, len(rows), _CHUNK)])
    return packed


def _unpack(packed: Packed) -> Columns:
    tables: list[list[Column]] = []
    for chunks in packed:
        # From the collector that started this process, as every message on this pipe
        # is (multiprocessing unpickles them all the same).
        parts = [[pickle.loads(c) for c in chunk] for chunk in chunks]  # noqa: S301
        width = len(parts[0]) if parts else 0
        tables.append([tuple(itertools.chain.from_iterable(p[j] for p in parts))
                       for j in range(width)])
    return Columns(*tables)


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when the collector dies (kill -9 included), so it
    never holds the database's lock for a collector started after."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request was made
        os._exit(1)


def _child_main(writes: Connection, reads: Connection, path: str, memory_limit: str,
                unsure: int | None, parent: int) -> None:
    _die_with(parent)
    # Ctrl-C and SIGTERM go to the collector, which closes this writer in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        store = Store(path, memory_limit=memory_limit)
    except StoreError as exc:
        writes.send(("error", str(exc)))
        return
    if unsure is not None:
        store.may_have_landed(unsure)
    lock = threading.Lock()  # the writer connection: one user at a time
    threading.Thread(target=_serve_reads, args=(reads, store, lock), daemon=True,
                     name="pulltrace-reads").start()
    writes.send(("ok", (store.batch_number, store.report_seq)))
    while True:
        try:
            op, payload = writes.recv()
        except (EOFError, OSError):
            break  # the collector is gone
        try:
            with lock:
                if op == "close":
                    store.close()
                else:
                    store.write(_unpack(payload))
        except StoreError as exc:
            writes.send(("error", str(exc)))
        else:
            writes.send(("ok", (store.batch_number, store.report_seq)))
        if op == "close":
            break


def _serve_reads(reads: Connection, store: Store, lock: threading.Lock) -> None:
    import duckdb

    from collector.export import read_page

    con: duckdb.DuckDBPyConnection | None = None
    generation = -1
    while True:
        try:
            _, query = reads.recv()
        except (EOFError, OSError):
            return
        try:
            if con is None or generation != store.generation:
                with lock:
                    generation, con = store.generation, store.cursor()
            reads.send(("ok", read_page(con, query)))
        except (StoreError, duckdb.Error) as exc:
            con = None
            reads.send(("error", f"cannot read the database now: {exc}"))
