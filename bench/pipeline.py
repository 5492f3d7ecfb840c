"""Parts 1 and 2: a fleet's reports through the engine alone, then through engine + store.

    python -m bench.pipeline [--nodes 2000] [--ticks 5] [--batch 500]

Engine alone: the reports of ``--ticks`` seconds of a fleet (after two seconds that set the
engine's state up, untimed), decoded with ``parse_report`` and run through
``Engine.ingest``; next to the floor every report pays before the engine sees it
(``json.loads``) and the floor of touching every layer field in Python once.

Engine + store: the same reports through ``Engine.ingest``, ``Batch.of`` and
``Store.write`` in batches of ``--batch`` reports (the collector's group commit: one
transaction per batch), on a DuckDB file; next to the limit: DuckDB appending the identical
rows (the Arrow tables ``Store.write`` builds, made beforehand) to the same schema, one
transaction per batch, with no engine. Both databases first get the untimed seconds' rows,
so tables are not empty when the clock starts. Measured twice: on one thread, one step after
the other (the figure held to the target); and as the live collector runs it, the engine on
one thread while the database writer's process writes the batch before.
"""

from __future__ import annotations

import argparse
import gc
import json
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from bench.fleet import Fleet, FleetShape
from bench.procs import BenchError
from bench.report import Results, Row
from collector.engine import Engine
from collector.model import AgentReport, parse_report
from collector.records import Batch, EventRow, LayerRow, Output, Progress, PullRow, Sample
from collector.runtime import GC_THRESHOLDS
from collector.store import Store, to_arrow
from collector.writer import WriterProcess

WARM_TICKS = 2
SMALL_FLEET = 200


def rollout(nodes: int) -> FleetShape:
    """Every node busy pulling (a rollout): the load the HTTP part plays too."""
    return FleetShape(nodes=nodes, slots=2, layers=(2, 8), gap_mean=4.0)


@dataclass
class Workload:
    shape: FleetShape
    warm: list[str]  # bodies that set state up, untimed
    bodies: list[str]  # bodies that are timed
    layers: int  # layer entries in the timed bodies


def workload(nodes: int, ticks: int) -> Workload:
    """The fleet's reports in the order a collector receives them (each report's time is
    later than the one before, so each moves the engine's clock, as arrivals do live)."""
    fleet = Fleet(rollout(nodes))
    warm: list[str] = []
    bodies: list[str] = []
    layers = 0
    for tick in range(WARM_TICKS + ticks):
        for body, count in fleet.arrivals(tick):
            if tick < WARM_TICKS:
                warm.append(body)
            else:
                bodies.append(body)
                layers += count
    return Workload(fleet.shape, warm, bodies, layers)


def timed(fn: Callable[[], Any], *, collect: bool = True) -> tuple[float, Any]:
    if collect:  # a collection owed by earlier work must not land in this measurement
        gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _loads(bodies: list[str]) -> None:
    for body in bodies:
        json.loads(body)


def _visit(bodies: list[str]) -> int:
    """Decode and read every field of every layer once: Python's floor per sample."""
    total = 0
    for body in bodies:
        obj = json.loads(body)
        for pull in obj["pulls"]:
            for layer in pull["layers"]:
                fields = (layer["digest"], layer.get("mediaType"), layer["totalBytes"],
                          layer["downloadedBytes"], layer.get("totalKnown"),
                          layer.get("startedAt"), layer.get("updatedAt"), layer.get("state"))
                total += len(fields)
    return total


def arrow_tables(batch: Batch, first_seq: int) -> dict[str, pa.Table]:
    """The Arrow tables ``Store.write`` appends for ``batch``."""
    reports = pa.table({
        "seq": pa.array(range(first_seq, first_seq + len(batch.reports)), pa.int64()),
        "ts": pa.array([r.timestamp for r in batch.reports], pa.timestamp("ns")),
        "node": pa.array([r.node_name for r in batch.reports], pa.string()),
        "body": pa.array(batch.report_lines, pa.string()),
    })
    return {"reports": reports, "samples": to_arrow(batch.samples, Sample),
            "pull_progress": to_arrow(batch.progress, Progress),
            "events": to_arrow(batch.events, EventRow),
            "pulls": to_arrow(batch.pulls, PullRow), "layers": to_arrow(batch.layers, LayerRow)}


def append_only(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table],
                upsert: bool, spent: dict[str, float] | None = None) -> None:
    """One transaction appending ``tables``; with ``upsert``, pulls and layers replace
    their rows by key first, as the store does. ``spent`` gathers seconds per table."""
    spent = {} if spent is None else spent
    clock = time.perf_counter
    start = clock()
    con.execute("BEGIN TRANSACTION")
    for name, table in tables.items():
        if table.num_rows == 0:
            continue
        t0 = clock()
        con.register("_t", table)
        if upsert and name in ("pulls", "layers"):
            key = "id" if name == "pulls" else "pull_id, digest"
            con.execute(f"DELETE FROM {name} WHERE ({key}) IN (SELECT ({key}) FROM _t)")
        con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _t")
        con.unregister("_t")
        spent[name] = spent.get(name, 0.0) + clock() - t0
        start += clock() - t0
    con.execute("COMMIT")
    spent["begin+commit"] = spent.get("begin+commit", 0.0) + clock() - start


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def ingest_rate(nodes: int, ticks: int) -> float:
    """Samples/s through ``Engine.ingest`` alone for a fleet of ``nodes``."""
    work = workload(nodes, ticks)
    engine = Engine()
    for body in work.warm:
        engine.ingest(parse_report(body))
    reports = [parse_report(b) for b in work.bodies]
    took, outs = timed(lambda: [engine.ingest(r) for r in reports])
    return sum(len(o.samples) for o in outs) / took


def bench_engine(work: Workload, results: Results,
                 small: int = SMALL_FLEET) -> tuple[list[Output], list[Output]]:
    n = len(work.bodies)
    t_loads, _ = timed(lambda: _loads(work.bodies))
    t_visit, _ = timed(lambda: _visit(work.bodies))
    t_parse, reports = timed(lambda: [parse_report(b) for b in work.bodies])
    engine = Engine()
    warm_outs = [engine.ingest(parse_report(b)) for b in work.warm]
    t_ingest, outs = timed(lambda: [engine.ingest(r) for r in reports])
    samples = sum(len(o.samples) for o in outs)
    events = sum(len(o.events) for o in outs)
    print(f"  {n:,} reports, {work.layers:,} layer states, {samples:,} samples, "
          f"{events:,} events ({samples / n:.1f} samples a report)")
    print(f"  Engine.ingest {n / t_ingest:,.0f} reports/s = {samples / t_ingest:,.0f} samples/s;"
          f" parse_report {n / t_parse:,.0f}/s; json.loads {n / t_loads:,.0f}/s; "
          f"loads+visit {n / t_visit:,.0f}/s")
    both = t_parse + t_ingest
    # A sample costs the same whatever the fleet's size, ideally: a small fleet is the limit.
    small_rate = ingest_rate(small, max(3, n // small))  # as many reports
    print(f"  Engine.ingest with a {small}-node fleet: {small_rate:,.0f} samples/s")
    results.add(Row("1 engine", f"Engine.ingest, {work.shape.nodes:,}-node fleet",
                    samples / t_ingest, "samples/s", limit=small_rate,
                    limit_name=f"same, {small}-node fleet",
                    note=f"{n / t_ingest:,.0f} reports/s"))
    results.add(Row("1 engine", "parse_report + Engine.ingest", n / both, "reports/s",
                    limit=n / t_loads, limit_name="json.loads"))
    results.add(Row("1 engine", "parse_report + Engine.ingest", n / both, "reports/s",
                    limit=n / t_visit, limit_name="loads + read every layer field"))
    results.details["engine"] = {"reports": n, "samples": samples, "events": events,
                                 "ingest_s": t_ingest, "parse_s": t_parse, "loads_s": t_loads,
                                 "visit_s": t_visit}
    return warm_outs, outs


def bench_store(work: Workload, warm_outs: list[Output], outs: list[Output], t_ingest: float,
                batch_size: int, tmp: Path, results: Results) -> float:
    """One thread: engine, then ``Batch.of``, then ``Store.write``; returns the limit (the
    Arrow append's samples/s)."""
    samples = sum(len(o.samples) for o in outs)
    with Store(tmp / f"store-{batch_size}.duckdb") as store:
        for chunk in chunks(warm_outs, batch_size):
            store.write(Batch.of(chunk))
        t_batch = t_write = 0.0
        gc.collect()
        for chunk in chunks(outs, batch_size):
            dt, batch = timed(lambda chunk=chunk: Batch.of(chunk), collect=False)
            t_batch += dt
            dt, _ = timed(lambda batch=batch: store.write(batch), collect=False)
            t_write += dt
    # The Arrow conversions Store.write does, timed on their own.
    batches = [Batch.of(chunk) for chunk in chunks(outs, batch_size)]
    t_arrow, tables = timed(lambda: [arrow_tables(b, 1) for b in batches])
    limits = {}
    spent: dict[bool, dict[str, float]] = {False: {}, True: {}}
    for upsert in (False, True):
        with Store(tmp / f"limit-{batch_size}-{upsert}.duckdb") as bare:
            for chunk in chunks(warm_outs, batch_size):
                append_only(bare.con, arrow_tables(Batch.of(chunk), 1), upsert)
            limits[upsert], _ = timed(lambda bare=bare, upsert=upsert: [
                append_only(bare.con, t, upsert, spent[upsert]) for t in tables])
    pipeline = t_ingest + t_batch + t_write
    duck = t_write - t_arrow
    store_rows, limit_rows = (_append_only_rows(tmp / f"store-{batch_size}.duckdb"),
                              _append_only_rows(tmp / f"limit-{batch_size}-False.duckdb"))
    if store_rows != limit_rows:
        raise BenchError(f"the limit wrote other rows than the store: {limit_rows} against "
                         f"{store_rows}")
    print(f"  batches of {batch_size} reports ({len(batches)} transactions): ingest "
          f"{t_ingest:.2f}s, Batch.of {t_batch:.2f}s, Store.write {t_write:.2f}s (Arrow "
          f"conversion {t_arrow:.2f}s, DuckDB {duck:.2f}s); limit: append {limits[False]:.2f}s,"
          f" append with the store's upserts {limits[True]:.2f}s")
    print("  limit by table: " + ", ".join(f"{k} {v:.2f}s" for k, v in spent[False].items())
          + f"; upserts: pulls {spent[True]['pulls']:.2f}s, layers {spent[True]['layers']:.2f}s")
    results.add(Row("2 engine+store", f"ingest + Batch.of + Store.write, {batch_size}/commit",
                    samples / pipeline, "samples/s", limit=samples / limits[False],
                    limit_name="DuckDB Arrow append", target=0.5,
                    note="one thread, one after the other"))
    results.add(Row("2 engine+store", f"Store.write alone, {batch_size}/commit",
                    samples / t_write, "samples/s", limit=samples / limits[False],
                    limit_name="DuckDB Arrow append"))
    results.add(Row("2 engine+store", f"DuckDB append + store's upserts, {batch_size}/commit",
                    samples / limits[True], "samples/s", limit=samples / limits[False],
                    limit_name="plain append"))
    results.details[f"store_{batch_size}"] = {
        "samples": samples, "batches": len(batches), "ingest_s": t_ingest,
        "batch_of_s": t_batch, "write_s": t_write, "arrow_s": t_arrow,
        "limit_append_s": limits[False], "limit_upsert_s": limits[True],
        "limit_by_table_s": spent[False], "limit_upsert_by_table_s": spent[True],
        "store_rows": store_rows, "limit_rows": limit_rows}
    return samples / limits[False]


def bench_live(warm: list[AgentReport], reports: list[AgentReport], batch_size: int,
               tmp: Path, results: Results, limit: float) -> None:
    """The engine + store path as the collector runs it: the engine on this thread, each
    batch made (``Batch.of``) and handed to the database writer's process
    (:class:`~collector.writer.WriterProcess`) on another thread while the engine goes on
    with the next, so the two overlap on two cores."""
    db = tmp / f"live-{batch_size}.duckdb"
    engine = Engine()
    writer = WriterProcess(Store(db))
    writer.recover(engine)  # empty: this starts the writer process
    handoff: queue.Queue[list[Output] | None] = queue.Queue(maxsize=2)
    failed: list[BaseException] = []

    def write() -> None:
        while (chunk := handoff.get()) is not None:
            try:
                writer.write(Batch.of(chunk))
            except BaseException as exc:  # the bench reports it below
                failed.append(exc)
                return

    try:
        for chunk in chunks(warm, batch_size):
            writer.write(Batch.of([engine.ingest(r) for r in chunk]))
        thread = threading.Thread(target=write, name="bench-writer")
        gc.collect()
        start = time.perf_counter()
        thread.start()
        samples = 0
        for chunk in chunks(reports, batch_size):
            outs = [engine.ingest(r) for r in chunk]
            samples += sum(len(o.samples) for o in outs)
            handoff.put(outs)
        handoff.put(None)
        thread.join()
        took = time.perf_counter() - start
    finally:
        writer.close()
    if failed:
        raise BenchError(f"the writer process failed: {failed[0]}")
    print(f"  as the collector runs it (engine here, DuckDB in the writer process, "
          f"overlapping), {batch_size}/commit: {samples / took:,.0f} samples/s")
    results.add(Row("2 engine+store", f"engine | writer process, {batch_size}/commit",
                    samples / took, "samples/s", limit=limit,
                    limit_name="DuckDB Arrow append",
                    note="as the collector runs it: batches pickled to its writer process"))


def _append_only_rows(db: Path) -> dict[str, int]:
    """Rows of the tables every batch appends to (pulls and layers are upserted)."""
    with duckdb.connect(str(db), read_only=True) as con:
        return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0])
                for t in ("reports", "samples", "pull_progress", "events")}


def run(results: Results, nodes: int, ticks: int, batch_sizes: tuple[int, ...],
        small_fleet: int = SMALL_FLEET) -> None:
    work = workload(nodes, ticks)
    print(f"part 1 - engine alone: {work.shape.describe()}; {ticks} s timed after "
          f"{WARM_TICKS} s untimed; the garbage collector set as the collector sets it")
    # The collector's thresholds, with what exists before the clock starts frozen as the
    # collector freezes what start-up made: at Python's defaults half of the engine's time
    # here went to collections the collector never makes.
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        _run(results, work, ticks, batch_sizes, small_fleet)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _run(results: Results, work: Workload, ticks: int, batch_sizes: tuple[int, ...],
         small_fleet: int) -> None:
    warm_outs, outs = bench_engine(work, results, small_fleet)
    print("part 2 - engine + store (DuckDB file, group commit)")
    t_ingest = results.details["engine"]["ingest_s"]
    with tempfile.TemporaryDirectory(prefix="pulltrace-bench-") as tmp:
        warm = [parse_report(b) for b in work.warm]
        reports = [parse_report(b) for b in work.bodies]
        for size in batch_sizes:
            limit = bench_store(work, warm_outs, outs, t_ingest, size, Path(tmp), results)
            bench_live(warm, reports, size, Path(tmp), results, limit)


def replay_only(nodes: int, ticks: int, batch_size: int, db: Path) -> None:
    """The engine + store path alone, for a profiler to watch (``--profile-target``): the
    fleet's generation and decoding happen before :func:`engine_and_store`."""
    work = workload(nodes, ticks)
    reports = [parse_report(b) for b in work.warm + work.bodies]
    with Store(db) as store:
        engine_and_store(reports, Engine(), store, batch_size)


def engine_and_store(reports: list[AgentReport], engine: Engine, store: Store,
                     batch_size: int) -> None:
    for chunk in chunks(reports, batch_size):
        store.write(Batch.of([engine.ingest(r) for r in chunk]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--batch", type=int, action="append")
    parser.add_argument("--profile-target", metavar="DB",
                        help="only run reports through engine + store into DB (for py-spy)")
    args = parser.parse_args()
    if args.profile_target:
        replay_only(args.nodes, args.ticks, (args.batch or [500])[0], Path(args.profile_target))
        return
    results = Results()
    run(results, args.nodes, args.ticks, tuple(args.batch or [500]))
    print(results.table())


if __name__ == "__main__":
    main()
