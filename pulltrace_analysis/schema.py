"""The five frames of a recording, with the columns and types of the collector's DuckDB tables.

Whatever the source (a JSONL file run through the engine, a DuckDB file, a running
collector), a frame is built from an Arrow table cast to the schema DuckDB itself gives the
table, so ``read_recording``, ``open_db`` and ``connect`` yield frames that compare equal.
Times are naive ``Datetime("ns")`` columns in UTC.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import polars as pl
import pyarrow as pa

from collector.records import EventRow, LayerRow, Progress, PullRow, Sample
from collector.store import Store, to_arrow

# frame name -> (DuckDB table, engine row type)
FRAMES: dict[str, tuple[str, type]] = {
    "samples": ("samples", Sample),
    "progress": ("pull_progress", Progress),
    "pulls": ("pulls", PullRow),
    "layers": ("layers", LayerRow),
    "events": ("events", EventRow),
}

# Tables the store only appends to keep their rows in the order the engine produced them;
# the two it upserts (latest state per key) are put in a canonical order.
CANONICAL_ORDER: dict[str, list[str]] = {
    "pulls": ["first_seen", "id"],
    "layers": ["first_seen", "pull_id", "digest"],
}


@functools.cache
def table_schemas() -> dict[str, pa.Schema]:
    """Arrow schema of each frame, as DuckDB reads the collector's tables back."""
    with Store(":memory:") as store:
        cur = store.con.cursor()
        try:
            return {name: cur.sql(f"SELECT * FROM {table} LIMIT 0")  # noqa: S608
                    .to_arrow_table().schema for name, (table, _) in FRAMES.items()}
        finally:
            cur.close()


def conform(name: str, table: pa.Table) -> pa.Table:
    """``table`` with the columns (in order) and types of frame ``name``."""
    schema = table_schemas()[name]
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"the {name} table lacks columns {', '.join(missing)}")
    return table.select(schema.names).cast(schema)


def rows_to_arrow(name: str, rows: Sequence[Any]) -> pa.Table:
    """Engine rows (``Sample``, ``Progress``...) as an Arrow table of frame ``name``; the same
    conversion the store uses when it writes them."""
    return conform(name, to_arrow(rows, FRAMES[name][1]))


def to_frame(name: str, table: pa.Table) -> pl.DataFrame:
    """A polars frame of ``name`` from an Arrow table, in canonical row order."""
    frame = pl.from_arrow(conform(name, table))
    assert isinstance(frame, pl.DataFrame)
    order = CANONICAL_ORDER.get(name)
    if order:
        frame = frame.sort(order, nulls_last=True)
    return frame


def empty_frame(name: str) -> pl.DataFrame:
    return to_frame(name, table_schemas()[name].empty_table())
