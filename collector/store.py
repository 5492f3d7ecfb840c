"""DuckDB recording: schema, batched appends through Arrow, recovery at start.

One process writes the file. Every call to :meth:`Store.write` is one transaction, so the
caller can acknowledge the reports of a batch once it returns (group commit).

A failed write leaves nothing of its batch behind. Two DuckDB behaviours shape the failure
path: after some I/O errors (a checkpoint that cannot grow the file) DuckDB invalidates the
connection for good, so the store reopens the file; and such an error can be raised by a
COMMIT that did become durable, so each transaction also bumps a batch counter in ``meta``
and the counter in the file, not the exception, says whether a batch landed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from collector.engine import Engine
from collector.errors import StoreError
from collector.model import (
    FINISHED,
    AgentReport,
    LayerStatus,
    LayerStatusKind,
    PullStatus,
    PullStatusKind,
    parse_report,
)
from collector.records import (
    Batch,
    Column,
    Columns,
    EventRow,
    LayerRow,
    Output,
    Progress,
    PullRow,
    Sample,
)

log = logging.getLogger("pulltrace.store")

SCHEMA_VERSION = 1
DEFAULT_MEMORY_LIMIT = "128MB"  # DuckDB's cache for a writer; it spills to disk beyond
_TIME_FIELDS = {"ts", "updated_at", "started_at", "completed_at", "first_seen", "last_seen",
                "first_byte_at"}

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS reports (seq BIGINT, ts TIMESTAMP_NS, node VARCHAR, body VARCHAR);
CREATE TABLE IF NOT EXISTS samples (
    ts TIMESTAMP_NS, updated_at TIMESTAMP_NS, node VARCHAR, pull_id VARCHAR,
    image_ref VARCHAR, digest VARCHAR, media_type VARCHAR, status VARCHAR,
    downloaded_bytes BIGINT, total_bytes BIGINT, fetched_bytes BIGINT, bytes_per_sec DOUBLE);
CREATE TABLE IF NOT EXISTS pull_progress (
    ts TIMESTAMP_NS, node VARCHAR, pull_id VARCHAR, image_ref VARCHAR, status VARCHAR,
    downloaded_bytes BIGINT, total_bytes BIGINT, cached_bytes BIGINT, bytes_per_sec DOUBLE,
    eta_seconds DOUBLE, percent DOUBLE, layers_done INTEGER, layer_count INTEGER);
CREATE TABLE IF NOT EXISTS pulls (
    id VARCHAR, node VARCHAR, image_ref VARCHAR, image_digest VARCHAR, status VARCHAR,
    started_at TIMESTAMP_NS,
    completed_at TIMESTAMP_NS, first_seen TIMESTAMP_NS, last_seen TIMESTAMP_NS,
    total_bytes BIGINT, downloaded_bytes BIGINT, cached_bytes BIGINT, fetched_bytes BIGINT,
    peak_bytes_per_sec DOUBLE, layer_count INTEGER, layers_done INTEGER, error VARCHAR);
CREATE TABLE IF NOT EXISTS layers (
    pull_id VARCHAR, digest VARCHAR, node VARCHAR, image_ref VARCHAR, media_type VARCHAR,
    status VARCHAR, total_bytes BIGINT, downloaded_bytes BIGINT, fetched_bytes BIGINT,
    started_at TIMESTAMP_NS, first_seen TIMESTAMP_NS, first_byte_at TIMESTAMP_NS,
    completed_at TIMESTAMP_NS, last_seen TIMESTAMP_NS, restarts INTEGER);
CREATE TABLE IF NOT EXISTS events (
    ts TIMESTAMP_NS, type VARCHAR, node VARCHAR, pull_id VARCHAR, image_ref VARCHAR,
    digest VARCHAR, status VARCHAR, error VARCHAR);
CREATE OR REPLACE VIEW errors AS
    SELECT ts, node, pull_id, image_ref, error FROM events WHERE type = 'pull.failed';
CREATE OR REPLACE VIEW stalls AS
    SELECT ts, node, pull_id, image_ref, digest, type FROM events
    WHERE type IN ('layer.stalled', 'pull.stalled');
"""

TABLES = ("reports", "samples", "pull_progress", "pulls", "layers", "events")


def _arrow_type(name: str, hint: Any) -> pa.DataType:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if isinstance(hint, types.UnionType) and args else hint
    if name in _TIME_FIELDS:
        return pa.timestamp("ns")
    return {int: pa.int64(), float: pa.float64(), str: pa.string()}[base]


def _schema(row_type: type) -> pa.Schema:
    hints = typing.get_type_hints(row_type)
    names: tuple[str, ...] = typing.cast(Any, row_type)._fields  # a NamedTuple class
    return pa.schema([(name, _arrow_type(name, hints[name])) for name in names])


_SCHEMAS: dict[type, pa.Schema] = {
    cls: _schema(cls) for cls in (Sample, Progress, PullRow, LayerRow, EventRow)}


def to_arrow(rows: Sequence[tuple[Any, ...]], row_type: type) -> pa.Table:
    """Rows of one of the record types (named tuples) as an Arrow table of its schema."""
    return columns_to_arrow(list(zip(*rows, strict=True)), row_type)


def columns_to_arrow(columns: Sequence[Column], row_type: type) -> pa.Table:
    """Columns of a record type (:class:`Columns`) as an Arrow table of its schema."""
    schema = _SCHEMAS[row_type]
    if not columns:
        return schema.empty_table()
    arrays = [pa.array(column, type=kind)
              for column, kind in zip(columns, schema.types, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


class Store:
    """A DuckDB file (or ``:memory:``) holding everything the collector saw."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False,
                 memory_limit: str = DEFAULT_MEMORY_LIMIT) -> None:
        self.path = str(path)
        self.read_only = read_only
        self.memory_limit = memory_limit
        # Bumped whenever the connection is dropped: cursors made from it are closed with
        # it (see :meth:`cursor`).
        self.generation = 0
        self._seq = 0  # the last report's seq in the file
        self._batch = 0  # the last committed batch's number in the file
        self._unsure: int | None = None  # a batch whose COMMIT raised; landed or not unknown
        if self.path != ":memory:" and not read_only:
            parent = Path(self.path).resolve().parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                # mkdir says "File exists" when a file is where a folder should be.
                blocker = next((p for p in (parent, *parent.parents)
                                if p.exists() and not p.is_dir()), None)
                why = f"{blocker} is a file" if blocker is not None else exc.strerror
                raise StoreError(f"cannot create the folder for the database {self.path}: "
                                 f"{why}; choose another --db path") from exc
            if os.path.isdir(self.path):
                raise StoreError(f"{self.path} is a directory, not a database file; "
                                 "choose a file path for --db")
        fresh = self.path != ":memory:" and not read_only and not os.path.exists(self.path)
        try:
            self._con: duckdb.DuckDBPyConnection | None = self._connect(create=True)
        except StoreError:
            if fresh:
                # What a failed creation leaves (an empty file) would be refused next time
                # as "not a DuckDB database".
                for leftover in (self.path, f"{self.path}.wal"):
                    with contextlib.suppress(OSError):
                        os.remove(leftover)
            raise

    def _connect(self, *, create: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + _EXIT_WAIT
        while True:
            try:
                con = duckdb.connect(self.path, read_only=self.read_only)
                break
            except duckdb.Error as exc:
                found = _LOCK_PID.search(str(exc))
                # The writer of a collector killed a moment ago holds the lock until the
                # kernel has ended it too (collector.writer): wait for that, not for a
                # live holder.
                if found and _exiting(int(found.group(1))) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise StoreError(_open_problem(self.path, exc, self.read_only)) from exc
        try:
            if self.read_only:
                self._recount(con)  # what the file holds, for its readers too
                return con
            # DuckDB's cache otherwise grows with the file, up to 80% of the memory.
            con.execute(f"SET memory_limit = '{self.memory_limit}'")
            # One thread: a batch's appends are too small to gain from more, and the extra
            # threads cost CPU the HTTP side needs (100-report transactions: 55-60 ms of
            # CPU each with the default, 33-48 ms with one).
            con.execute("SET threads = 1")
            # A report adds about 11 KiB to the WAL, so at 2,000 reports/s the default 16 MB
            # checkpoints every second; at 64 MiB a checkpoint costs half as much per MB
            # (about 8 ms instead of 15), for a longer pause a quarter as often.
            con.execute("SET checkpoint_threshold = '64MiB'")
            if create:
                con.execute(_DDL)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                            [str(SCHEMA_VERSION)]).fetchall()
                con.execute("INSERT OR IGNORE INTO meta VALUES ('batch', '0')").fetchall()
            self._recount(con)
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                con.close()
            raise StoreError(_open_problem(self.path, exc, self.read_only)) from exc
        return con

    def _recount(self, con: duckdb.DuckDBPyConnection) -> None:
        """Read the report and batch counters from the file (what is committed)."""
        row = con.execute("SELECT (SELECT coalesce(max(seq), 0) FROM reports), "
                          "(SELECT value FROM meta WHERE key = 'batch')").fetchall()
        self._seq = int(row[0][0])
        self._batch = int(row[0][1] or 0)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The open connection; a StoreError while a failure keeps the file closed."""
        if self._con is None:
            raise StoreError(f"the database {self.path} is closed after a failed write and "
                             "could not be opened again yet")
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A second connection to the same database (for another thread); it closes when
        the store's connection is replaced, which :attr:`generation` tells."""
        return self.con.cursor()

    def close(self) -> None:
        if self._con is None:
            return
        con, self._con = self._con, None
        try:
            con.close()
        except duckdb.Error as exc:
            raise StoreError(f"could not close the database {self.path}: {exc}") from exc

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except StoreError as exc:
            # Already failing: the first error is the one to tell.
            log.warning("%s", exc)

    # --- writing -------------------------------------------------------------------------

    def write(self, outputs: Iterable[Output] | Batch | Columns) -> None:
        """Append one batch in one transaction; raises StoreError and writes nothing on
        failure.

        After a StoreError, call again with the same batch before any other: if the failed
        attempt did land (DuckDB can raise after a COMMIT became durable), the retry
        returns without writing it twice.
        """
        if isinstance(outputs, Columns):
            columns = outputs
        else:
            columns = Columns.of(outputs if isinstance(outputs, Batch) else Batch.of(outputs))
        if self._con is None:
            self._reopen()
        con = self.con
        if self._unsure is not None:
            landed, self._unsure = self._batch >= self._unsure, None
            if landed:
                return
        number, first = self._batch + 1, self._seq + 1
        try:
            self._transaction(con, columns, number, first)
        except Exception as exc:
            # Whatever failed (DuckDB, or Arrow converting a value), nothing of the batch
            # stays: the caller keeps it and tries again.
            self._after_failure(con, number)
            if self._batch >= number:
                log.warning("the batch is written, but DuckDB then failed: %s", exc)
                return
            raise StoreError(_write_problem(self.path, exc)) from exc
        self._batch, self._seq = number, first - 1 + columns.report_count

    @property
    def report_seq(self) -> int:
        """The number (``reports.seq``) of the last report committed to the file."""
        return self._seq

    @property
    def batch_number(self) -> int:
        """The number of the last batch committed to the file."""
        return self._batch

    def may_have_landed(self, number: int) -> None:
        """Say that batch ``number`` was being written when its writer was lost: the next
        write (the same batch again) checks the file before writing it."""
        self._unsure = number

    def _transaction(self, con: duckdb.DuckDBPyConnection, columns: Columns, number: int,
                     first: int) -> None:
        con.execute("BEGIN TRANSACTION")
        if columns.reports:
            ts, nodes, bodies = columns.reports
            table = pa.table({
                "seq": pa.array(range(first, first + len(ts)), pa.int64()),
                "ts": pa.array(ts, pa.timestamp("ns")),
                "node": pa.array(nodes, pa.string()),
                "body": pa.array(bodies, pa.string()),
            })
            self._append(con, "reports", table)
        self._append(con, "samples", columns_to_arrow(columns.samples, Sample))
        self._append(con, "pull_progress", columns_to_arrow(columns.progress, Progress))
        self._append(con, "events", columns_to_arrow(columns.events, EventRow))
        self._upsert(con, "pulls", columns_to_arrow(columns.pulls, PullRow), ("id",))
        self._upsert(con, "layers", columns_to_arrow(columns.layers, LayerRow),
                     ("pull_id", "digest"))
        # An UPDATE costs a third of an INSERT OR REPLACE here.
        con.execute("UPDATE meta SET value = ? WHERE key = 'batch'", [str(number)])
        con.execute("COMMIT")

    def _after_failure(self, con: duckdb.DuckDBPyConnection, number: int) -> None:
        """Undo what is open, then learn from the file what is committed, reopening it if
        DuckDB has invalidated the connection."""
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        try:
            self._recount(con)
            return
        except duckdb.Error as exc:
            if self.path == ":memory:":
                return  # a new connection would be a new, empty database
            log.warning("the connection to %s is unusable (%s); opening the file again",
                        self.path, _first_line(exc))
        self._drop()
        try:
            self._reopen()
        except StoreError as exc:
            log.warning("%s", exc)
            self._unsure = number  # the file will tell once it opens

    def _drop(self) -> None:
        con, self._con = self._con, None
        self.generation += 1
        if con is not None:
            with contextlib.suppress(duckdb.Error):
                con.close()

    def _reopen(self) -> None:
        self._con = self._connect(create=False)
        log.info("opened %s again: %d reports in it", self.path, self._seq)

    @staticmethod
    def _append(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        con.register("_batch", table)
        try:
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _batch")  # noqa: S608
        finally:
            con.unregister("_batch")

    @staticmethod
    def _upsert(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table,
                key: tuple[str, ...]) -> None:
        if table.num_rows == 0:
            return
        # A key's first_seen never changes, so its old row is no older than the batch's
        # oldest: said as a constant, it lets DuckDB skip the row groups of pulls long
        # finished instead of scanning the whole table on every commit.
        oldest = pc.min(table.column("first_seen")).cast(pa.int64()).as_py()
        con.register("_batch", table)
        try:
            cols = ", ".join(key)
            con.execute(f"DELETE FROM {name} WHERE first_seen >= make_timestamp_ns(?) "  # noqa: S608
                        f"AND ({cols}) IN (SELECT ({cols}) FROM _batch)", [oldest])
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _batch")  # noqa: S608
        finally:
            con.unregister("_batch")

    # --- reading -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except duckdb.Error as exc:
            raise StoreError(f"could not read the database {self.path}: "
                             f"{_first_line(exc)}") from exc

    def one(self, query: str, params: list[Any] | None = None) -> tuple[Any, ...]:
        """The single row of a query, read to the end (DuckDB refuses other work on a
        connection while a result is unfinished)."""
        with self._reading():
            rows = self.con.execute(query, params or []).fetchall()
        if len(rows) != 1:
            raise StoreError(f"expected one row from {query!r}, got {len(rows)}")
        return tuple(rows[0])

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise StoreError(f"no table {table!r}; tables are {', '.join(TABLES)}")
        return int(self.one(f"SELECT count(*) FROM {table}")[0])  # noqa: S608

    def reports(self, since_ns: int | None = None) -> Iterator[AgentReport]:
        """Accepted reports in arrival order, from ``since_ns`` on."""
        query = "SELECT body FROM reports"
        params: list[Any] = []
        if since_ns is not None:
            query += " WHERE epoch_ns(ts) >= ?"
            params.append(since_ns)
        with self._reading():
            cur = self.con.cursor()
        try:
            with self._reading():
                cur.execute(query + " ORDER BY seq", params)
            while True:
                with self._reading():
                    rows = cur.fetchmany(1000)
                if not rows:
                    break
                for (body,) in rows:
                    yield parse_report(body)
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.close()

    def _finished_statuses(self, since: int, finished: list[str]) -> list[PullStatus]:
        """Finished pulls completed after ``since``, as the API lists them."""
        layers: dict[str, list[LayerStatus]] = {}
        for row in self.con.execute("""
                SELECT l.pull_id, l.digest, l.media_type, l.total_bytes, l.downloaded_bytes,
                       epoch_ns(coalesce(l.started_at, l.first_seen)),
                       epoch_ns(l.completed_at), l.status
                FROM layers l JOIN pulls p ON p.id = l.pull_id
                WHERE list_contains(?, p.status) AND epoch_ns(p.completed_at) >= ?
                ORDER BY l.first_seen""", [finished, since]).fetchall():
            done = row[7] in ("completed", "cached")
            total = int(row[3])
            percent = 100.0 if done else (int(row[4]) * 100.0 / total if total else None)
            layers.setdefault(row[0], []).append(LayerStatus(
                pull_id=row[0], digest=row[1], media_type=row[2], total_bytes=total,
                downloaded_bytes=int(row[4]), bytes_per_sec=None, percent=percent,
                started_at=_opt_ns(row[5]), completed_at=_opt_ns(row[6]),
                total_known=total > 0, status=LayerStatusKind(row[7])))
        statuses = []
        for row in self.con.execute("""
                SELECT id, node, image_ref, total_bytes, downloaded_bytes, cached_bytes,
                       layer_count, layers_done, epoch_ns(started_at), epoch_ns(completed_at),
                       error, status
                FROM pulls WHERE list_contains(?, status) AND epoch_ns(completed_at) >= ?""",
                                    [finished, since]).fetchall():
            total, downloaded, cached = int(row[3]), int(row[4]), int(row[5])
            completed = row[11] == PullStatusKind.COMPLETED.value
            percent = 100.0 if completed else (
                (downloaded + cached) * 100.0 / total if total else None)
            statuses.append(PullStatus(
                id=row[0], node_name=row[1], image_ref=row[2], total_bytes=total,
                downloaded_bytes=downloaded, cached_bytes=cached, bytes_per_sec=None,
                eta_seconds=0.0 if completed else None, percent=percent,
                layer_count=int(row[6]), layers_done=int(row[7]), started_at=int(row[8]),
                completed_at=_opt_ns(row[9]), error=row[10], total_known=True,
                status=PullStatusKind(row[11]), layers=layers.get(row[0], [])))
        return statuses

    def recover(self, engine: Engine) -> int:
        """Rebuild the engine's in-flight pulls; returns how many are active again.

        Finished pulls are remembered so that repeats of them change nothing; the reports
        since the oldest in-flight pull are replayed through the engine (their output is
        already in the file and is discarded).
        """
        with self._reading():
            return self._recover(engine)

    def _recover(self, engine: Engine) -> int:
        finished = [s.value for s in FINISHED]
        horizon = self.one("SELECT epoch_ns(max(ts)) FROM reports")
        if horizon[0] is None:
            return 0
        keep_from = int(horizon[0]) - engine.finished_keep_ns
        for node, image, started, done in self.con.execute(
                "SELECT node, coalesce(image_digest, image_ref), epoch_ns(started_at), "
                "epoch_ns(completed_at) "
                "FROM pulls WHERE list_contains(?, status) "
                "AND epoch_ns(completed_at) >= ?", [finished, keep_from]).fetchall():
            engine.mark_finished(node, image, int(started), int(done))
        for status in self._finished_statuses(
                int(horizon[0]) - engine.config.history_ttl_ns, finished):
            engine.remember(status)
        row = self.one(
            "SELECT epoch_ns(min(first_seen)) FROM pulls WHERE NOT list_contains(?, status)",
            [finished])
        if row[0] is not None:
            for report in self.reports(since_ns=int(row[0])):
                engine.ingest(report)
        for node, last in self.con.execute(
                "SELECT node, epoch_ns(max(ts)) FROM reports GROUP BY node").fetchall():
            engine.restore_last_report(node, int(last))
        return engine.active_count()


def _opt_ns(value: Any) -> int | None:
    return None if value is None else int(value)


_PF_EXITING = 0x4  # the kernel's flag, in /proc/PID/stat, for a task that is exiting
_EXIT_WAIT = 5.0  # seconds to wait for a dying writer to let go of the file
_LOCK_PID = re.compile(r"\(PID (\d+)\)")


def _exiting(pid: int) -> bool:
    """Whether ``pid`` is on its way out: gone, exiting, a zombie, or with SIGKILL pending
    (what an orphaned database writer gets from the kernel)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X") or int(fields[6]) & _PF_EXITING:
        return True
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("SigPnd", "ShdPnd") and int(value, 16) & (1 << (signal.SIGKILL - 1)):
            return True
    return False


def _owner(pid: int) -> int:
    """The process to name for a lock held by ``pid``: a collector's database writer (a
    child process, see :mod:`collector.writer`) is named by its collector."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return pid
    if b"multiprocessing" not in cmdline:
        return pid
    return int(stat[stat.rindex(")") + 2:].split()[1])  # the parent


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _disk_full(text: str) -> bool:
    low = text.lower()
    return any(s in low for s in ("file too large", "no space left", "disk quota"))


def _open_problem(path: str, exc: Exception, read_only: bool) -> str:
    """What went wrong opening ``path``, and what to do about it."""
    text = _first_line(exc)
    low = text.lower()
    if "could not set lock" in low or "conflicting lock" in low:
        found = _LOCK_PID.search(str(exc))
        who = f" (pid {_owner(int(found.group(1)))})" if found else ""
        if read_only:
            return (f"the database {path} is in use by another process{who}, a collector "
                    "writing it (DuckDB lets no other process open it meanwhile): read a "
                    "running collector through its API, e.g. "
                    "pulltrace_analysis.connect('http://127.0.0.1:8080'), or open the file "
                    "once the collector has stopped")
        return (f"the database {path} is in use by another process{who} (DuckDB allows one "
                "writer); stop it or choose another --db")
    if "invalidated" in low:
        return (f"the database {path} cannot be opened again yet: DuckDB invalidated it after "
                "a failed write and another connection of this process still holds it "
                f"({text}); close that connection, or restart the collector")
    if "different configuration" in low:
        return (f"the database {path} is open for writing in this process (a collector "
                "running here): read it through that collector's API with "
                "pulltrace_analysis.connect(url), or stop the collector first")
    if _disk_full(text):
        return (f"cannot write the database {path}: the disk is full or a file size limit is "
                f"reached ({text}); free space there or choose another --db")
    if "is a directory" in low:
        return f"{path} is a directory, not a database file; choose a file path for --db"
    if "permission denied" in low or "read-only file system" in low:
        if read_only:
            return f"cannot read the database {path}: {text}; check its permissions"
        return (f"cannot write the database {path}: {text}; choose a --db path this user "
                "can write, or change its permissions")
    if "not a valid duckdb database" in low:
        return (f"{path} exists but is not a DuckDB database; choose another --db path "
                "(or move that file away)")
    if read_only and ("does not exist" in low or "no such file" in low):
        return f"no database at {path}; check the path"
    return f"cannot open the database {path}: {text}; check the path and its permissions"


def _write_problem(path: str, exc: Exception) -> str:
    text = _first_line(exc)
    if _disk_full(text):
        return (f"could not write to {path}: the disk is full or a file size limit is "
                f"reached ({text}); free space there")
    return f"could not write to {path}: {text}"
