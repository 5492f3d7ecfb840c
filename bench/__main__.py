"""Every collector benchmark, then one table: ``python -m bench [--quick] [--json FILE]``.

Each figure is printed beside a limit measured in the same run on the same machine (the
machine is shared, so absolute figures move; ratios move much less):

1. engine alone: a fleet's reports through ``parse_report`` + ``Engine.ingest``, vs
   ``json.loads`` of the same bodies;
2. engine + store: through ``Batch.of`` + ``Store.write`` (group commit) on a DuckDB file,
   vs DuckDB appending the identical rows as Arrow tables;
3. HTTP: N agents on a fixed schedule against ``python -m collector.cli collect``, vs the
   same aiohttp stack with an empty handler;
4. memory: the collector's RSS at each N, and an hour of simulated time in process;
5. overload: RSS at 10,000 active pulls; ingest with 200 event-stream clients.

``make profile`` (``python -m bench.profile``) says where the time goes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import http_bench, machine, overload, pipeline, soak
from bench.report import Results


@dataclass(frozen=True)
class Plan:
    nodes: int  # parts 1-2
    ticks: int
    batches: tuple[int, ...]
    levels: tuple[int, ...]  # part 3
    timing: http_bench.Timing
    soak_nodes: int  # part 4b
    soak_commit_every: int
    sse_agents: tuple[int, ...]  # part 5
    pull_reports: int  # reports of each agent at 10,000 active pulls


FULL = Plan(nodes=2000, ticks=5, batches=(100, 1000), levels=(200, 1000, 2000, 4000),
            timing=http_bench.Timing(warmup=3.0, duration=10.0, drain=10.0),
            soak_nodes=60, soak_commit_every=5, sse_agents=(200, 2000), pull_reports=3)
QUICK = Plan(nodes=500, ticks=3, batches=(100,), levels=(200, 2000),
             timing=http_bench.Timing(warmup=2.0, duration=4.0, drain=3.0),
             soak_nodes=8, soak_commit_every=15, sse_agents=(200,), pull_reports=2)
PARTS = ("pipeline", "http", "soak", "overload")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller and shorter (< 2 min)")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these parts")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    parts = args.only or PARTS
    results = Results()
    started = time.monotonic()
    results.machine = machine.describe(tempfile.gettempdir())
    results.machine["calibration_start"] = machine.calibrate()
    m = results.machine
    print(f"machine: {m['usable_cores']} of {m['cores']} cores ({m['cpu']}), "
          f"{m['memory_gib']} GiB, temp files on {m['tmp_fs']}; Python {m['python']}, "
          f"DuckDB {m['duckdb']}, aiohttp {m['aiohttp']}, pyarrow {m['pyarrow']}; "
          f"load average {m['loadavg']:.2f}; {m['calibration_start']:.1f} M steps/s",
          flush=True)
    http_found: dict[int, dict[str, object]] = {}
    spent: dict[str, float] = {}

    def step(name: str, fn: Callable[[], object]) -> None:
        if name not in parts:
            return
        t0 = time.monotonic()
        fn()
        spent[name] = time.monotonic() - t0
        print(f"  ({name}: {spent[name]:.0f} s)", flush=True)

    step("pipeline", lambda: pipeline.run(results, plan.nodes, plan.ticks, plan.batches))
    step("http", lambda: http_found.update(http_bench.run(results, plan.levels, plan.timing)))
    step("overload", lambda: overload.run(results, plan.sse_agents, plan.timing, http_found,
                                          plan.pull_reports))
    step("soak", lambda: soak.run_isolated(results, plan.soak_nodes, 60, 600,
                                           plan.soak_commit_every))
    m["seconds_by_part"] = spent
    m["calibration_end"] = machine.calibrate()
    m["loadavg_end"] = os.getloadavg()[0]
    m["seconds"] = time.monotonic() - started
    print()
    print(results.table())
    print(f"\n{m['seconds']:.0f} s; load average {m['loadavg']:.2f} at the start, "
          f"{m['loadavg_end']:.2f} at the end; interpreter speed {m['calibration_start']:.1f} "
          f"-> {m['calibration_end']:.1f} M steps/s (other work on the machine moves figures; "
          "ratios to the same run's limits move less)")
    if args.json:
        results.dump(args.json)
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
