"""Where the collector's time goes: py-spy on the HTTP path and on the engine + store path.

    python -m bench.profile [--agents 2000] [--seconds 15] [--out artifacts/profile]

- HTTP path: a ``python -m collector.cli collect`` subprocess under the rollout load of part 3
  (N agents, one report a second each); after the warm-up, ``py-spy record`` samples it
  (every thread, 100 Hz, without pausing it) for ``--seconds``. Threads waiting (the loop
  in epoll, the store thread for work) are not sampled: percentages are of CPU time.
- engine + store path: ``python -m bench.pipeline --profile-target`` (a fleet's reports
  through ``Engine.ingest``, ``Batch.of`` and ``Store.write`` in batches of 500) under
  ``py-spy record`` from its start, idle samples included: percentages are of wall time
  (a COMMIT waiting on the disk counts).

Each profile is kept as collapsed stacks (``*.txt``: flamegraph.pl and speedscope.app read
them) and summarised: by kind of work, by pipeline stage, and by function, in percent of all
samples.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import stacks
from bench.pipeline import rollout
from bench.procs import BenchError, Load, run_load, start_collector

RATE = 100


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise BenchError("py-spy is not installed: `.venv/bin/pip install py-spy` (it is in "
                         "the dev extra: `make install`)")
    return found


def _record(pid: int, seconds: float, out: Path) -> None:
    subprocess.run([py_spy(), "record", "--pid", str(pid), "--duration", str(int(seconds)),
                    "--rate", str(RATE), "--format", "raw", "--output", str(out),
                    "--threads", "--full-filenames", "--nonblocking"],
                   check=True, capture_output=True)


def http_path(agents: int, seconds: float, out: Path, tmp: Path) -> str:
    warmup = 4.0
    load = Load(agents, rollout(agents), warmup=warmup, duration=seconds + 2, drain=5.0)
    collector = start_collector(tmp, "collector-profile")
    raw = out / f"http-{agents}.txt"
    failed: list[BaseException] = []

    def record() -> None:
        time.sleep(warmup + 2.0)  # connections open and the first reports in
        try:
            _record(collector.pid, seconds, raw)
        except (subprocess.CalledProcessError, BenchError) as exc:
            failed.append(exc)

    spy = threading.Thread(target=record)
    spy.start()
    try:
        result = run_load(collector, load)
    finally:
        spy.join()
        collector.stop()
    if failed:
        raise BenchError(f"py-spy failed: {failed[0]}")
    head = (f"HTTP path, N={agents} agents ({result['reports_per_s']:,.0f} reports/s answered "
            f"of {result['offered_per_s']:,.0f} offered, collector CPU "
            f"{result['server_cpu']:.2f} cores, while py-spy sampled at {RATE} Hz)")
    return stacks.render(stacks.load(raw), head) + f"\n  stacks: {raw}"


def store_path(nodes: int, ticks: int, out: Path, tmp: Path) -> str:
    raw = out / f"engine-store-{nodes}.txt"
    started = time.perf_counter()
    # --idle: time spent waiting on DuckDB (its threads, the disk) counts, as wall time.
    subprocess.run([py_spy(), "record", "--rate", str(RATE), "--format", "raw", "--output",
                    str(raw), "--threads", "--full-filenames", "--idle", "--", sys.executable,
                    "-m",
                    "bench.pipeline", "--nodes", str(nodes), "--ticks", str(ticks),
                    "--batch", "500", "--profile-target", str(tmp / "profile.duckdb")],
                   check=True, capture_output=True)
    took = time.perf_counter() - started
    head = (f"engine + store path, {nodes} nodes x {ticks + 2} s of reports, batches of 500 "
            f"({took:.0f} s with the fleet's generation and decoding, which are left out)")
    inside = stacks.focus(stacks.load(raw), "engine_and_store")
    return stacks.render(inside, head) + f"\n  stacks: {raw}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("artifacts/profile"))
    parser.add_argument("--only", choices=["http", "store"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pulltrace-profile-") as tmp:
        if args.only in (None, "http"):
            print(http_path(args.agents, args.seconds, args.out, Path(tmp)), flush=True)
        if args.only in (None, "store"):
            print(store_path(args.nodes, args.ticks, args.out, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
