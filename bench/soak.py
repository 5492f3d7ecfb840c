"""Part 4b: one hour of simulated time through engine + store, resident memory as it goes.

    python -m bench.soak [--nodes 60] [--minutes 60] [--history-ttl 600]

A fleet whose pulls finish and new ones start (idle gaps between them) reports once a
simulated second, stamped with the collector's (simulated) clock; the engine ticks every
second, as the collector's loop does, and the rows go to a DuckDB file in one transaction
every ``--commit-every`` simulated seconds (the collector commits more often; memory does
not depend on it, and an hour of one-second transactions would take minutes). Finished
pulls leave the engine after ``--history-ttl`` (short, so that pruning happens within the
hour). Resident memory (VmRSS of this process, from /proc) is read every simulated minute
and printed every 15: it must be flat once the first TTL has passed, which here means that
over the last 45 simulated minutes it grows by less than :data:`FLAT` of what it was at 15
minutes, both from end to end and along the least-squares line through the minute readings
(one reading can sit on a peak or a trough of DuckDB's checkpoint cycle). DuckDB's own
memory, anonymous and file-backed RSS, the number of Python memory blocks and the engine's
tables are printed beside it, to say what grows.
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
# Flat: RSS grows by less than this share of its 15-minute value over the rest of the run.
FLAT = 0.05


@dataclasses.dataclass(frozen=True)
class Flatness:
    """How RSS moved from ``start`` to ``end`` (simulated minutes), in kB."""

    start: int
    end: int
    base_kb: int  # RSS at ``start``
    growth_kb: int  # RSS at ``end`` minus ``base_kb``
    trend_kb: float  # the least-squares line's rise over the same minutes
    peak_kb: int  # the highest reading from ``start`` on, minus ``base_kb``

    @property
    def ratio(self) -> float:
        return self.growth_kb / self.base_kb

    @property
    def trend_ratio(self) -> float:
        return self.trend_kb / self.base_kb

    @property
    def flat(self) -> bool:
        return self.ratio < FLAT and self.trend_ratio < FLAT

    def describe(self) -> str:
        mib = 1024
        verdict = "flat" if self.flat else "NOT flat"
        return (f"RSS over the last {self.end - self.start} simulated min ({self.start} -> "
                f"{self.end}): {self.growth_kb / mib:+.1f} MiB, {self.ratio:+.1%} of the "
                f"{self.start}-min {self.base_kb / mib:.1f} MiB (trend {self.trend_kb / mib:+.1f}"
                f" MiB, {self.trend_ratio:+.1%}; peak {self.peak_kb / mib:+.1f} MiB): {verdict}"
                f" (flat: both under {FLAT:.0%})")


def flatness(series: list[tuple[int, int]], start: int) -> Flatness:
    """Flatness of ``(minute, rss_kb)`` readings from minute ``start`` (or the first reading
    after it) to the last."""
    later = [(m, kb) for m, kb in series if m >= start]
    if len(later) < 2:
        raise ValueError(f"need two readings from minute {start} on, got {len(later)}")
    (first, base), (last, end_kb) = later[0], later[-1]
    mean_m = sum(m for m, _ in later) / len(later)
    mean_kb = sum(kb for _, kb in later) / len(later)
    slope = (sum((m - mean_m) * (kb - mean_kb) for m, kb in later)
             / sum((m - mean_m) ** 2 for m, _ in later))
    return Flatness(start=first, end=last, base_kb=base, growth_kb=end_kb - base,
                    trend_kb=slope * (last - first),
                    peak_kb=max(kb for _, kb in later) - base)


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
    series: list[tuple[int, int]] = []  # (simulated minute, RSS kB), every minute
    reports = samples = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pulltrace-soak-") as tmp:
        db = Path(tmp) / "soak.duckdb"
        with Store(db) as store:
            if memory_limit:  # what DuckDB may cache (else the collector's default)
                store.con.execute(f"SET memory_limit = '{memory_limit}'")
            limit = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
            print(f"  DuckDB memory_limit {limit}")
            outs = []
            for tick in range(minutes * 60 + 1):
                if tick % commit_every == 0 and outs:
                    batch = Batch.of(outs)
                    store.write(batch)
                    reports += len(batch.reports)
                    samples += len(batch.samples)
                    outs = []
                if tick % 60 == 0:
                    gc.collect()
                    mem = machine.status(pid)
                    series.append((tick // 60, mem["VmRSS"]))
                    if tick % (CHECKPOINT_MIN * 60) == 0:
                        duck = store.con.execute("SELECT sum(memory_usage_bytes) "
                                                 "FROM duckdb_memory()").fetchall()[0][0]
                        readings.append({
                            "minute": tick // 60, "rss_kb": mem["VmRSS"],
                            "anon_kb": mem.get("RssAnon", 0), "file_kb": mem.get("RssFile", 0),
                            "duckdb_mb": (duck or 0) / 1e6,
                            "py_blocks": sys.getallocatedblocks(), "hwm_kb": mem["VmHWM"],
                            "db_mb": db.stat().st_size / 1e6 if db.exists() else 0.0,
                            "reports": reports, "samples": samples, **engine_sizes(engine)})
                        r = readings[-1]
                        print(f"  {r['minute']:3d} min: RSS {r['rss_kb'] / 1024:7.1f} MiB "
                              f"(anon {r['anon_kb'] / 1024:6.1f}, files {r['file_kb'] / 1024:5.1f};"
                              f" DuckDB {r['duckdb_mb']:6.1f} MB, {r['py_blocks']:,} Python "
                              f"blocks), file {r['db_mb']:6.1f} MB, {r['active']:4d} active, "
                              f"{r['history'] + r['pulls']:5d} listed, "
                              f"{r['finished_keys']:5d} finished keys, {reports:,} reports",
                              flush=True)
                if tick == minutes * 60:
                    break
                now = fleet.ns(tick + 1.0)  # the collector's clock: arrivals this second
                for body, _ in fleet.tick(tick):
                    report = dataclasses.replace(parse_report(body), received_at=now)
                    outs.append(engine.ingest(report))
                outs.append(engine.tick(now))
    elapsed = time.perf_counter() - started
    print(f"  {reports:,} reports, {samples:,} samples in {elapsed:.0f} s")
    start = CHECKPOINT_MIN if minutes > CHECKPOINT_MIN else 0
    flat = flatness(series, start)
    print(f"  {flat.describe()}")
    at = {r["minute"]: r for r in readings}
    if flat.start in at and flat.end in at:
        a, b = at[flat.start], at[flat.end]
        print(f"  of which: anonymous {(b['anon_kb'] - a['anon_kb']) / 1024:+.1f} MiB, "
              f"file-backed {(b['file_kb'] - a['file_kb']) / 1024:+.1f} MiB; DuckDB reports "
              f"{b['duckdb_mb'] - a['duckdb_mb']:+.1f} MB, Python "
              f"{b['py_blocks'] - a['py_blocks']:+,} blocks, the engine "
              f"{b['finished_keys'] - a['finished_keys']:+,} finished keys")
    results.details["soak"] = {"readings": readings, "series": series, "elapsed_s": elapsed,
                               "shape": dataclasses.asdict(shape), "history_ttl_s": history_ttl_s,
                               "duckdb_memory_limit": limit,
                               "flatness": dataclasses.asdict(flat), "flat": flat.flat}
    for r in readings:
        results.add(Row("4 memory", f"engine+store RSS at {r['minute']} simulated min",
                        r["rss_kb"] * 1024, "MiB", scale=2**20,
                        note=f"{r['active']} active, {r['history'] + r['pulls']} listed"))
    # The ratio column is growth / the RSS at the start; the target is FLAT of it.
    results.add(Row("4 memory", f"RSS growth {flat.start}->{flat.end} simulated min",
                    flat.growth_kb * 1024, "MiB", limit=flat.base_kb * 1024,
                    limit_name=f"RSS at {flat.start} min", scale=2**20,
                    target=FLAT * flat.base_kb * 1024, target_max=True))
    results.add(Row("4 memory", f"RSS trend {flat.start}->{flat.end} simulated min",
                    flat.trend_kb * 1024, "MiB", limit=flat.base_kb * 1024,
                    limit_name=f"RSS at {flat.start} min", scale=2**20,
                    target=FLAT * flat.base_kb * 1024, target_max=True,
                    note="least squares over the minute readings"))


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
