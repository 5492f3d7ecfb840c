"""``GET /api/v1/export``: the recorded tables in bulk, a bounded page at a time.

A notebook cannot open the live collector's DuckDB file (one process writes it), so it reads
the tables through this endpoint::

    GET /api/v1/export?table=samples&since=<cursor>&limit=<rows>&format=arrow

- ``table``: ``samples``, ``pull_progress``, ``events`` (appended to) or ``pulls``,
  ``layers`` (the latest state per pull / per layer of a pull);
- ``since``: the ``X-Next-Cursor`` of the previous page; absent for the first page;
- ``limit``: rows per page, 1 to 100000 (default 10000); larger values are capped;
- ``format``: ``arrow`` (an Arrow IPC stream, with the table's own column types; the
  default) or ``jsonl`` (one JSON object a line, times as RFC 3339 strings).

Every answer carries ``X-Next-Cursor`` (pass it as ``since``), ``X-Rows`` and
``X-Has-More`` (``true`` while rows beyond this page exist). Appended tables come in the
order they were written and their cursor is the position of the last row sent, so a later
call with it returns exactly the rows committed since. ``pulls`` and ``layers`` come in key
order (``id``; ``pull_id, digest``) and their cursor is the last key sent.

Reads never touch the writer's connection from another thread: a second connection to the
same database is made on the store's own thread, then used only by one reader thread of
this module. Rows are visible once their batch is committed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
from aiohttp import web

from collector.errors import StoreError
from collector.service import Collector
from collector.timefmt import format_rfc3339
from collector.writer import WriterProcess

PATH = "/api/v1/export"
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
# table -> key columns for the upserted tables; None for the appended ones (rowid order).
TABLES: dict[str, tuple[str, ...] | None] = {
    "samples": None, "pull_progress": None, "events": None,
    "pulls": ("id",), "layers": ("pull_id", "digest"),
}
FORMATS = {"arrow": "application/vnd.apache.arrow.stream", "jsonl": "application/x-ndjson"}
_PARAMS = ("table", "since", "limit", "format")
_CURSOR = "__cursor"


class ExportError(ValueError):
    """A bad parameter; its text is the 400 answer."""


@dataclass(frozen=True)
class ExportQuery:
    table: str
    since: int | tuple[str, ...] | None
    limit: int
    format: str


@dataclass(frozen=True)
class Page:
    table: pa.Table
    next_cursor: str
    has_more: bool


def encode_key(key: tuple[str, ...]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decode_key(text: str, width: int) -> tuple[str, ...]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ExportError(f"since: {text!r} is not a cursor this endpoint gave") from exc
    if (not isinstance(key, list) or len(key) != width
            or not all(isinstance(part, str) for part in key)):
        raise ExportError(f"since: {text!r} is not a cursor this endpoint gave")
    return tuple(key)


def parse_query(query: Mapping[str, str]) -> ExportQuery:
    unknown = sorted(set(query) - set(_PARAMS))
    if unknown:
        raise ExportError(f"unknown parameter {unknown[0]!r}; expected {', '.join(_PARAMS)}")
    table = query.get("table", "")
    if table not in TABLES:
        raise ExportError(f"table: expected one of {', '.join(TABLES)}, got {table!r}")
    text = query.get("limit", str(DEFAULT_LIMIT))
    if not text.isdigit() or int(text) < 1:
        raise ExportError(f"limit: expected a whole number of rows from 1 to {MAX_LIMIT}, "
                          f"got {text!r}")
    fmt = query.get("format", "arrow")
    if fmt not in FORMATS:
        raise ExportError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    raw = query.get("since") or None
    since: int | tuple[str, ...] | None = None
    key = TABLES[table]
    if raw is not None and key is None:
        if not raw.isdigit():
            raise ExportError(f"since: {raw!r} is not a cursor of table {table} "
                              "(a row position)")
        since = int(raw)
    elif raw is not None and key is not None:
        since = _decode_key(raw, len(key))
    return ExportQuery(table, since, min(int(text), MAX_LIMIT), fmt)


def read_page(con: duckdb.DuckDBPyConnection, q: ExportQuery) -> Page:
    """One page of ``q.table``; runs on the reader thread."""
    key = TABLES[q.table]
    params: list[Any] = []
    if key is None:
        sql = (f"SELECT rowid AS {_CURSOR}, * FROM {q.table} WHERE rowid > ? "  # noqa: S608
               "ORDER BY rowid LIMIT ?")
        params = [-1 if q.since is None else q.since, q.limit + 1]
    else:
        where = ""
        if isinstance(q.since, tuple):
            if len(key) == 1:
                where = f"WHERE {key[0]} > ?"
                params = [q.since[0]]
            else:
                where = f"WHERE {key[0]} > ? OR ({key[0]} = ? AND {key[1]} > ?)"
                params = [q.since[0], q.since[0], q.since[1]]
        sql = (f"SELECT * FROM {q.table} {where} "  # noqa: S608
               f"ORDER BY {', '.join(key)} LIMIT ?")
        params.append(q.limit + 1)
    table = con.sql(sql, params=params).to_arrow_table()
    has_more = table.num_rows > q.limit
    table = table.slice(0, q.limit)
    if table.num_rows == 0:
        cursor = "" if q.since is None else (
            str(q.since) if isinstance(q.since, int) else encode_key(q.since))
    elif key is None:
        cursor = str(table.column(_CURSOR)[-1].as_py())
    else:
        cursor = encode_key(tuple(str(table.column(k)[-1].as_py()) for k in key))
    if key is None:
        table = table.drop_columns([_CURSOR])
    return Page(table, cursor, has_more)


def to_arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def to_jsonl(table: pa.Table) -> bytes:
    columns: dict[str, list[Any]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_timestamp(column.type):
            ns = column.cast(pa.timestamp("ns")).cast(pa.int64()).to_pylist()
            columns[name] = [None if v is None else format_rfc3339(v) for v in ns]
        else:
            columns[name] = column.to_pylist()
    lines = (json.dumps(dict(zip(columns, values, strict=True)), separators=(",", ":"))
             for values in zip(*columns.values(), strict=True))
    return "".join(line + "\n" for line in lines).encode()


class Exporter:
    """The reader connection and its thread, for one collector."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="pulltrace-export")
        self._con: duckdb.DuckDBPyConnection | None = None
        self._generation = -1  # the store's connection the reader was made from
        self._lock = asyncio.Lock()

    async def page(self, q: ExportQuery) -> Page:
        loop = asyncio.get_running_loop()
        # What was acknowledged is in the journal first: a page shows it once the database
        # has it too.
        await self.collector.stored()
        store = self.collector.store
        if isinstance(store, WriterProcess):
            # The file is the writer process's: it reads the page with its own connection.
            return await loop.run_in_executor(self._reader, store.read_page, q)
        async with self._lock:
            if self._con is None or self._generation != store.generation:
                # Made on the store's thread, the only one that uses the writer connection;
                # made again when a failure made the store open the file again.
                self._generation, con = await loop.run_in_executor(
                    self.collector._executor, lambda: (store.generation, store.cursor()))
                self._con = con
            else:
                con = self._con
        return await loop.run_in_executor(self._reader, read_page, con, q)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._con is not None:
                await loop.run_in_executor(self._reader, self._con.close)
                self._con = None
        self._reader.shutdown(wait=True)


def add_export_route(app: web.Application, collector: Collector) -> None:
    """Serve ``GET /api/v1/export`` on ``app``; its reader closes with the app."""
    exporter = Exporter(collector)

    async def export(request: web.Request) -> web.Response:
        try:
            q = parse_query(request.query)
        except ExportError as exc:
            return web.Response(status=400, text=f"{exc}\n")
        try:
            page = await exporter.page(q)
        except (StoreError, duckdb.Error) as exc:
            return web.Response(status=503, text=f"cannot read the database now: {exc}\n")
        body = to_arrow_stream(page.table) if q.format == "arrow" else to_jsonl(page.table)
        return web.Response(body=body, headers={
            "Content-Type": FORMATS[q.format],
            "X-Next-Cursor": page.next_cursor,
            "X-Rows": str(page.table.num_rows),
            "X-Has-More": "true" if page.has_more else "false",
        })

    async def close(_: web.Application) -> None:
        await exporter.close()

    app.router.add_get(PATH, export)
    app.on_cleanup.append(close)
