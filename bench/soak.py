"""Part 4b: one hour of simulated time through engine + store, resident memory as it goes.

    python -m bench.soak [--nodes 60] [--minutes 60] [--history-ttl 600]

A fleet whose pulls finish and new ones start (idle gaps between them) reports once a
simulated second, stamped with the collector's (simulated) clock; the engine ticks every
second, as the collector's loop does, and the rows go to a DuckDB file in one transaction
every ``--commit-every`` simulated seconds (the collector commits more often; memory does
not depend on it, and an hour of one-second transactions would take minutes). Finished
pulls leave the engine after ``--history-ttl`` (short, so that pruning happens within the
hour). Resident memory (VmRSS of this process, from /proc) is read every 15 simulated
minutes: it must be flat once the first TTL has passed. DuckDB's own memory, the number of
Python memory blocks and the engine's tables are printed beside it, to say what grows.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine
from bench.fleet import Fleet, FleetShape
from bench.report import Results, Row
from collector.engine import Engine, EngineConfig
from collector.model import parse_report
from collector.records import Batch
from collector.store import Store
from collector.timefmt import NS

CHECKPOINT_MIN = 15


def churn(nodes: int) -> FleetShape:
    """Nodes that pull now and then: about a pull a minute per slot, idle in between."""
    return FleetShape(nodes=nodes, slots=2, layers=(2, 8), gap_mean=45.0, head_start=0.0,
                      seed=3)


def engine_sizes(engine: Engine) -> dict[str, int]:
    """Sizes of the engine's tables (private: a benchmark may look, to say what grows)."""
    return {
        "pulls": len(engine._pulls),
        "active": engine.active_count(),
        "history": len(engine._history),
        "finished_keys": len(engine._finished),
        "expiry_heap": len(engine._expiry),
    }


def run(results: Results, nodes: int, minutes: int, history_ttl_s: int,
        commit_every: int, memory_limit: str | None = None) -> None:
    shape = churn(nodes)
    print(f"part 4b - {minutes} simulated minutes, engine + store in process: "
          f"{shape.describe()}; history-ttl {history_ttl_s} s; a commit every "
          f"{commit_every} s")
    fleet = Fleet(shape)
    engine = Engine(EngineConfig(history_ttl_ns=history_ttl_s * NS))
    pid = os.getpid()
    readings: list[dict[str, Any]] = []
    reports = samples = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pulltrace-soak-") as tmp:
        db = Path(tmp) / "soak.duckdb"
        with Store(db) as store:
            if memory_limit:  # what DuckDB may cache (its default: 80% of the machine's RAM)
                store.con.execute(f"SET memory_limit = '{memory_limit}'")
            outs = []
            for tick in range(minutes * 60 + 1):
                if tick % commit_every == 0 and outs:
                    batch = Batch.of(outs)
                    store.write(batch)
                    reports += len(batch.reports)
                    samples += len(batch.samples)
                    outs = []
                if tick % (CHECKPOINT_MIN * 60) == 0:
                    gc.collect()
                    mem = machine.status(pid)
                    duck = store.con.execute(
                        "SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0]
                    readings.append({"minute": tick // 60, "rss_kb": mem["VmRSS"],
                                     "duckdb_mb": (duck or 0) / 1e6,
                                     "py_blocks": sys.getallocatedblocks(),
                                     "hwm_kb": mem["VmHWM"], "db_mb": db.stat().st_size / 1e6
                                     if db.exists() else 0.0, "reports": reports,
                                     "samples": samples, **engine_sizes(engine)})
                    r = readings[-1]
                    print(f"  {r['minute']:3d} min: RSS {r['rss_kb'] / 1024:7.1f} MiB (DuckDB "
                          f"{r['duckdb_mb']:6.1f} MB, {r['py_blocks']:,} Python blocks), "
                          f"file {r['db_mb']:6.1f} MB, {r['active']:4d} active pulls, "
                          f"{r['history'] + r['pulls']:5d} listed, "
                          f"{r['finished_keys']:5d} finished keys, {reports:,} reports")
                if tick == minutes * 60:
                    break
                now = fleet.ns(tick + 1.0)  # the collector's clock: arrivals this second
                for body, _ in fleet.tick(tick):
                    report = dataclasses.replace(parse_report(body), received_at=now)
                    outs.append(engine.ingest(report))
                outs.append(engine.tick(now))
    elapsed = time.perf_counter() - started
    first = readings[1] if len(readings) > 2 else readings[0]
    last = readings[-1]
    growth = (last["rss_kb"] - first["rss_kb"]) / 1024
    print(f"  {reports:,} reports, {samples:,} samples in {elapsed:.0f} s; RSS from "
          f"{first['minute']} to {last['minute']} min: {growth:+.1f} MiB")
    results.details["soak"] = {"readings": readings, "elapsed_s": elapsed,
                               "shape": dataclasses.asdict(shape), "history_ttl_s": history_ttl_s}
    for r in readings:
        results.add(Row("4 memory", f"engine+store RSS at {r['minute']} simulated min",
                        r["rss_kb"] * 1024, "MiB", scale=2**20,
                        note=f"{r['active']} active, {r['history'] + r['pulls']} listed"))
    # Flat: within 5% of what it was once the first history TTL had passed.
    results.add(Row("4 memory", f"RSS growth {first['minute']}->{last['minute']} simulated min",
                    growth * 2**20, "MiB", scale=2**20, target=0.05 * first["rss_kb"] * 1024,
                    target_max=True))


def run_isolated(results: Results, nodes: int, minutes: int, history_ttl_s: int,
                 commit_every: int) -> None:
    """:func:`run` in a fresh process, so that its memory is the engine's and the store's
    alone (not what earlier parts of a run left behind)."""
    with tempfile.TemporaryDirectory(prefix="pulltrace-soak-") as tmp:
        emit = Path(tmp) / "soak.json"
        subprocess.run([sys.executable, "-m", "bench.soak", "--nodes", str(nodes),
                        "--minutes", str(minutes), "--history-ttl", str(history_ttl_s),
                        "--commit-every", str(commit_every), "--emit", str(emit)], check=True)
        found = json.loads(emit.read_text())
    results.rows += [Row(**row) for row in found["rows"]]
    results.details["soak"] = found["details"]["soak"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=60)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--history-ttl", type=int, default=600, help="seconds")
    parser.add_argument("--commit-every", type=int, default=5, help="simulated seconds")
    parser.add_argument("--duckdb-memory-limit", metavar="SIZE",
                        help="SET memory_limit on the store's connection (e.g. 128MB)")
    parser.add_argument("--emit", type=Path, help="write the rows as JSON here (no table)")
    args = parser.parse_args()
    results = Results()
    run(results, args.nodes, args.minutes, args.history_ttl, args.commit_every,
        args.duckdb_memory_limit)
    if args.emit:
        args.emit.write_text(json.dumps({"rows": [dataclasses.asdict(r) for r in results.rows],
                                         "details": results.details}))
    else:
        print(results.table())


if __name__ == "__main__":
    main()
