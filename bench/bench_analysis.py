"""pulltrace_analysis (polars) against a plain pandas groupby implementation of the same frames.

    .venv/bin/python bench/bench_analysis.py [--samples 10000000] [--repeat 1]

A synthetic recording is written straight into a collector-schema DuckDB file (built as Arrow
columns with NumPy, not as JSON through the engine: the engine's own speed is
bench_collector.py's subject). Then, on that file:

- load: ``open_db`` (all five frames as polars, cast to the tables' types) vs
  ``DuckDB -> .df()`` (the same five tables as pandas DataFrames);
- throughput by node, 1 s buckets: ``frames.throughput(rec, by="node")`` vs the same
  algorithm in pandas (each sample's bytes spread over the interval since its layer's
  previous sample, summed per node and second, gaps filled with 0) — the two results are
  checked equal before the figures are printed;
- media-type breakdown: ``frames.media_type_breakdown`` vs a pandas groupby; both work on
  the layers table (one row per layer of a pull: 100 times fewer rows than samples).

Wall-clock seconds, best of ``--repeat``, on this machine's 2 cores.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from collector.store import Store
from pulltrace_analysis import frames, open_db

T = TypeVar("T")
NS = 1_000_000_000
MIB = 1 << 20
ORIGIN = 1_790_000_000 * NS
NODES = 50
LAYERS_PER_PULL = 8
SAMPLES_PER_LAYER = 100  # one report a second for 100 s
MEDIA = np.array(["application/vnd.oci.image.layer.v1.tar+gzip",
                  "application/vnd.oci.image.layer.v1.tar+zstd",
                  "application/vnd.oci.image.config.v1+json",
                  "application/vnd.oci.image.manifest.v1+json"])


# --- the synthetic recording ------------------------------------------------------------


def _ts(ns: np.ndarray) -> pa.Array:
    return pa.array(ns, pa.timestamp("ns"))


def synthesize(n_samples: int, seed: int = 7) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    layers = n_samples // SAMPLES_PER_LAYER
    pulls = layers // LAYERS_PER_PULL
    layers = pulls * LAYERS_PER_PULL
    n = layers * SAMPLES_PER_LAYER
    pull_start = ORIGIN + rng.integers(0, 6 * 3600, pulls) * NS
    pull_node = np.arange(pulls) % NODES
    pull_ids = np.array([f"{i:016x}" for i in range(pulls)])
    images = np.array([f"registry.local/team-{i % 97}/app-{i % 500}:{i % 7}"
                       for i in range(pulls)])
    nodes = np.array([f"node-{i:03d}" for i in range(NODES)])
    layer_pull = np.repeat(np.arange(pulls), LAYERS_PER_PULL)
    layer_pos = np.tile(np.arange(LAYERS_PER_PULL), pulls)
    layer_media = np.where(layer_pos == 0, 3, np.where(layer_pos == 1, 2,
                                                      rng.integers(0, 2, layers)))
    digests = np.array([f"sha256:{i:064x}" for i in range(layers)])
    layer_start = pull_start[layer_pull] + layer_pos * (NS // 10)

    lay = np.repeat(np.arange(layers), SAMPLES_PER_LAYER)
    seq = np.tile(np.arange(SAMPLES_PER_LAYER), layers)
    ts = layer_start[lay] + seq * NS
    updated = ts - rng.integers(0, NS // 2, n) * (seq > 0)
    fetched = np.where((seq > 0) & (rng.random(n) < 0.6), MIB, 0).astype(np.int64)
    downloaded = np.cumsum(fetched)
    downloaded -= np.repeat(downloaded[::SAMPLES_PER_LAYER] - fetched[::SAMPLES_PER_LAYER],
                            SAMPLES_PER_LAYER)
    totals = downloaded[SAMPLES_PER_LAYER - 1::SAMPLES_PER_LAYER]
    pull_of = layer_pull[lay]
    samples = pa.table({
        "ts": _ts(ts), "updated_at": _ts(updated),
        "node": pa.array(nodes[pull_node[pull_of]]), "pull_id": pa.array(pull_ids[pull_of]),
        "image_ref": pa.array(images[pull_of]), "digest": pa.array(digests[lay]),
        "media_type": pa.array(MEDIA[layer_media[lay]]),
        "status": pa.array(np.where(seq == SAMPLES_PER_LAYER - 1, "completed",
                                    "downloading")),
        "downloaded_bytes": downloaded, "total_bytes": totals[lay],
        "fetched_bytes": fetched,
        "bytes_per_sec": rng.random(n) * 4 * MIB,
    })
    end = layer_start + (SAMPLES_PER_LAYER - 1) * NS
    first_byte = layer_start + NS
    layers_table = pa.table({
        "pull_id": pa.array(pull_ids[layer_pull]), "digest": pa.array(digests),
        "node": pa.array(nodes[pull_node[layer_pull]]), "image_ref": pa.array(images[layer_pull]),
        "media_type": pa.array(MEDIA[layer_media]), "status": pa.array(["completed"] * layers),
        "total_bytes": totals, "downloaded_bytes": totals, "fetched_bytes": totals,
        "started_at": _ts(layer_start), "first_seen": _ts(layer_start),
        "first_byte_at": _ts(first_byte), "completed_at": _ts(end), "last_seen": _ts(end),
        "restarts": pa.array(np.zeros(layers, np.int32)),
    })
    pull_total = totals.reshape(pulls, LAYERS_PER_PULL).sum(axis=1)
    pull_end = pull_start + (SAMPLES_PER_LAYER + 1) * NS
    pulls_table = pa.table({
        "id": pa.array(pull_ids), "node": pa.array(nodes[pull_node]),
        "image_ref": pa.array(images), "image_digest": pa.nulls(pulls, pa.string()),
        "status": pa.array(["completed"] * pulls), "started_at": _ts(pull_start),
        "completed_at": _ts(pull_end), "first_seen": _ts(pull_start),
        "last_seen": _ts(pull_end), "total_bytes": pull_total, "downloaded_bytes": pull_total,
        "cached_bytes": np.zeros(pulls, np.int64), "fetched_bytes": pull_total,
        "peak_bytes_per_sec": rng.random(pulls) * 8 * MIB,
        "layer_count": pa.array(np.full(pulls, LAYERS_PER_PULL, np.int32)),
        "layers_done": pa.array(np.full(pulls, LAYERS_PER_PULL, np.int32)),
        "error": pa.nulls(pulls, pa.string()),
    })
    steps = SAMPLES_PER_LAYER + 1
    pr_pull = np.repeat(np.arange(pulls), steps)
    pr_k = np.tile(np.arange(steps), pulls)
    pr_done = np.minimum(pr_k * pull_total[pr_pull] // SAMPLES_PER_LAYER, pull_total[pr_pull])
    progress = pa.table({
        "ts": _ts(pull_start[pr_pull] + pr_k * NS), "node": pa.array(nodes[pull_node[pr_pull]]),
        "pull_id": pa.array(pull_ids[pr_pull]), "image_ref": pa.array(images[pr_pull]),
        "status": pa.array(np.where(pr_k == steps - 1, "completed", "active")),
        "downloaded_bytes": pr_done, "total_bytes": pull_total[pr_pull],
        "cached_bytes": np.zeros(len(pr_pull), np.int64),
        "bytes_per_sec": rng.random(len(pr_pull)) * 8 * MIB,
        "eta_seconds": (steps - 1 - pr_k).astype(float),
        "percent": pr_done * 100.0 / pull_total[pr_pull],
        "layers_done": pa.array(np.where(pr_k == steps - 1, LAYERS_PER_PULL, 0)
                                .astype(np.int32)),
        "layer_count": pa.array(np.full(len(pr_pull), LAYERS_PER_PULL, np.int32)),
    })
    ev_pull = np.repeat(np.arange(pulls), 2)
    events = pa.table({
        "ts": _ts(np.where(np.arange(2 * pulls) % 2 == 0, pull_start[ev_pull],
                           pull_end[ev_pull])),
        "type": pa.array(np.tile(["pull.started", "pull.completed"], pulls)),
        "node": pa.array(nodes[pull_node[ev_pull]]), "pull_id": pa.array(pull_ids[ev_pull]),
        "image_ref": pa.array(images[ev_pull]), "digest": pa.nulls(2 * pulls, pa.string()),
        "status": pa.array(np.tile(["active", "completed"], pulls)),
        "error": pa.nulls(2 * pulls, pa.string()),
    })
    return {"samples": samples, "pull_progress": progress, "layers": layers_table,
            "pulls": pulls_table, "events": events}


def write_db(path: Path, tables: dict[str, pa.Table]) -> None:
    with Store(path) as store:
        cur = store.con.cursor()
        for name, table in tables.items():
            cur.register("_t", table)
            cur.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _t")
            cur.unregister("_t")
        cur.close()


# --- the same frames in plain pandas ------------------------------------------------------


def pandas_load(path: Path) -> dict[str, pd.DataFrame]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return {name: con.sql(f"SELECT * FROM {table}").df()
                for name, table in (("samples", "samples"), ("progress", "pull_progress"),
                                    ("pulls", "pulls"), ("layers", "layers"),
                                    ("events", "events"))}
    finally:
        con.close()


def pandas_throughput(samples: pd.DataFrame, width: int = NS) -> pd.DataFrame:
    end = samples["updated_at"].to_numpy("datetime64[ns]").astype(np.int64)
    keys = [samples["pull_id"], samples["digest"]]
    prev = pd.Series(end).groupby(keys).cummax().groupby(keys).shift(1).to_numpy()
    fetched = samples["fetched_bytes"].to_numpy()
    keep = fetched > 0
    end, prev, fetched = end[keep], prev[keep], fetched[keep]
    node = samples["node"].to_numpy()[keep]
    start = np.minimum(np.where(np.isnan(prev), end, prev), end).astype(np.int64)
    first = start // width
    last = np.where(end > start, (end - 1) // width, end // width)
    count = last - first + 1
    row = np.repeat(np.arange(len(end)), count)
    bucket = first[row] + (np.arange(len(row)) - np.repeat(np.cumsum(count) - count, count))
    s, e, f = start[row], end[row], fetched[row]
    overlap = np.minimum(e, (bucket + 1) * width) - np.maximum(s, bucket * width)
    spread = np.where(e > s, f * overlap / np.where(e > s, e - s, 1), f.astype(float))
    sums = pd.DataFrame({"node": node[row], "bucket": bucket, "bytes": spread}
                        ).groupby(["node", "bucket"])["bytes"].sum()
    bounds = sums.reset_index().groupby("node")["bucket"].agg(["min", "max"])
    grid = pd.MultiIndex.from_tuples(
        [(n, b) for n, lo, hi in bounds.itertuples() for b in range(lo, hi + 1)],
        names=["node", "bucket"])
    out = sums.reindex(grid, fill_value=0.0).reset_index()
    out["time"] = pd.to_datetime(out["bucket"] * width, unit="ns")
    out["bytes_per_sec"] = out["bytes"] * (NS / width)
    return out[["time", "node", "bytes", "bytes_per_sec"]]


def pandas_media_types(layers: pd.DataFrame) -> pd.DataFrame:
    start = layers["started_at"].fillna(layers["first_seen"])
    end = layers["completed_at"].fillna(layers["last_seen"])
    fetched = layers["status"] != "cached"
    frame = pd.DataFrame({
        "media_type": layers["media_type"].replace("", "unknown"),
        "bytes": layers["fetched_bytes"], "cached": ~fetched,
        "cached_bytes": layers["total_bytes"].where(~fetched, 0),
        "seconds": ((end - start).dt.total_seconds()).where(fetched, 0.0)})
    out = frame.groupby("media_type").agg(bytes=("bytes", "sum"), layers=("bytes", "size"),
                                          cached_layers=("cached", "sum"),
                                          cached_bytes=("cached_bytes", "sum"),
                                          seconds=("seconds", "sum")).reset_index()
    out["mean_bytes_per_sec"] = out["bytes"] / out["seconds"]
    out["share"] = out["bytes"] / out["bytes"].sum()
    return out.sort_values(["bytes", "media_type"], ascending=[False, True])


# --- timing -----------------------------------------------------------------------------


def best(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    times: list[float] = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
        if len(times) < repeat:
            del result
    return min(times), result


Timings = tuple[float, float, float]


def run_polars(db: Path, repeat: int) -> tuple[Timings, tuple[pl.DataFrame, pl.DataFrame]]:
    t_load, rec = best(lambda: open_db(db), repeat)
    t_tp, tp = best(lambda: frames.throughput(rec, every="1s", by="node"), repeat)
    t_mt, mt = best(lambda: frames.media_type_breakdown(rec), repeat)
    return (t_load, t_tp, t_mt), (tp, mt)


def run_pandas(db: Path, repeat: int) -> tuple[Timings, tuple[pd.DataFrame, pd.DataFrame]]:
    t_load, pdf = best(lambda: pandas_load(db), repeat)
    t_tp, tp = best(lambda: pandas_throughput(pdf["samples"]), repeat)
    t_mt, mt = best(lambda: pandas_media_types(pdf["layers"]), repeat)
    return (t_load, t_tp, t_mt), (tp, mt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        started = time.perf_counter()
        tables = synthesize(args.samples)
        write_db(db, tables)
        counts = {k: v.num_rows for k, v in tables.items()}
        del tables
        print(f"synthetic recording: {counts['samples']:,} samples, "
              f"{counts['pull_progress']:,} progress rows, {counts['layers']:,} layers, "
              f"{counts['pulls']:,} pulls on {NODES} nodes, {counts['events']:,} events "
              f"({time.perf_counter() - started:.1f}s to build and write {db.name}, "
              f"{db.stat().st_size / 1e9:.2f} GB)\n")
        # One side at a time, so that only one copy of the 10 million rows is in memory.
        (t_load, t_tp, t_mt), (got_tp, got_mt) = run_polars(db, args.repeat)
        gc.collect()
        (p_load, p_tp, p_mt), (want_tp, want_mt) = run_pandas(db, args.repeat)
        assert got_tp.height == len(want_tp)
        assert np.allclose(got_tp["bytes"].to_numpy(), want_tp["bytes"].to_numpy())
        assert got_mt["bytes"].to_list() == want_mt["bytes"].tolist()
        assert np.allclose(got_mt["seconds"].to_numpy(), want_mt["seconds"].to_numpy())
        rows = [("load all five tables from DuckDB", t_load, p_load),
                (f"throughput by node, 1 s ({got_tp.height:,} rows)", t_tp, p_tp),
                (f"media-type breakdown ({counts['layers']:,} layers)", t_mt, p_mt)]
    print(f"{'':44} {'polars':>9} {'pandas':>9} {'pandas/polars':>14}")
    for name, a, b in rows:
        print(f"{name:44} {a:8.2f}s {b:8.2f}s {b / a:13.1f}x")
    print("\nEach pair computed the same frame (checked equal); wall-clock seconds, best of "
          f"{args.repeat}.")


if __name__ == "__main__":
    main()
