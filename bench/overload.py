"""Part 5: the collector overloaded — 10,000 active pulls, and 200 event-stream clients.

    python -m bench.overload [--agents 2000] [--duration 10]

- Memory at 10,000 active pulls: 2,000 agents each running five slow pulls of five blobs
  report three times; once every report is answered, the collector's resident memory (and
  its ``pulltrace_pulls_active``) is read, next to its memory before the first report.
- Ingest with event-stream clients: the rollout load of part 3 at N agents (200, which the
  collector keeps up with, and 2,000), with 0 clients on ``/api/v1/events``, with 200 that
  read everything (and reconnect when dropped, as browsers do), and with 200 that never
  read (the collector should drop those rather than slow down).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.fleet import FleetShape
from bench.http_bench import Timing, command_line, describe
from bench.procs import run_load, start_collector, start_sse_clients
from bench.report import Results, Row

SSE_CLIENTS = 200
PULLS_TARGET = 10_000


def many_pulls(agents: int) -> FleetShape:
    """Five pulls per node that stay active: large layers at 1 MiB/s."""
    return FleetShape(nodes=agents, slots=5, layers=(3, 3), size_median_mib=300.0,
                      size_sigma=0.2, speed_median_mib=1.0, speed_sigma=0.1,
                      cached_fraction=0.0, gap_mean=0.0, head_start=2.0, seed=5)


def active_pulls(results: Results, tmp: Path, reports: int) -> None:
    agents = PULLS_TARGET // 5
    shape = many_pulls(agents)
    timing = Timing(warmup=0.0, duration=reports - 0.5, drain=120.0)
    print(f"part 5 - {PULLS_TARGET:,} active pulls: {shape.describe()}; {reports} reports each")
    collector = start_collector(tmp, "collector-pulls")
    try:
        time.sleep(1.0)
        idle = collector.memory()
        r = run_load(collector, timing.load(agents, shape=shape))
        settled = collector.memory()
        active = collector.metrics().get("pulltrace_pulls_active", 0.0)
    finally:
        collector.stop()
    grew = settled["VmRSS"] - idle["VmRSS"]
    per_pull = grew / active if active else None
    print(f"  RSS {idle['VmRSS'] / 1024:,.0f} MiB idle -> {settled['VmRSS'] / 1024:,.0f} MiB "
          f"with {active:,.0f} active pulls (peak {settled['VmHWM'] / 1024:,.0f} MiB); "
          f"{per_pull or 0:,.1f} kB a pull; {r['unanswered']} reports unanswered after "
          f"{timing.drain:g} s")
    results.add(Row("5 overload", f"collector RSS at {active:,.0f} active pulls",
                    settled["VmRSS"] * 1024, "MiB", scale=2**20,
                    note=f"idle {idle['VmRSS'] / 1024:,.0f} MiB, {per_pull or 0:,.1f} kB/pull"))
    results.details["active_pulls"] = {"idle": idle, "settled": settled, "active": active,
                                       "load": r}


def sse(results: Results, agents: int, timing: Timing, tmp: Path,
        baseline: dict[str, Any] | None) -> None:
    print(f"part 5 - ingest at N={agents} with {SSE_CLIENTS} event-stream clients")
    runs: dict[str, dict[str, Any]] = {}
    if baseline is not None:
        runs["none"] = baseline
    for mode in ("none", "read", "no-read"):
        if mode in runs:
            continue
        collector = start_collector(tmp, f"collector-sse-{mode}")
        clients = None
        try:
            if mode != "none":
                clients = start_sse_clients(collector, SSE_CLIENTS, read=mode == "read")
            r = run_load(collector, timing.load(agents))
            if clients is not None:
                r["sse"] = clients.stop()
                clients = None
        finally:
            if clients is not None:
                clients.stop()
            collector.stop()
        runs[mode] = r
    for mode, label in (("none", "no clients"), ("read", "reading"), ("no-read", "never reading")):
        r = runs[mode]
        extra = ""
        if "sse" in r:
            s = r["sse"]
            extra = (f"; the clients got {s['events']:,} events ({s['bytes'] / 2**20:,.0f} MiB, "
                     f"their process used {s['cpu_s']:.1f} CPU s in {s['seconds']:.0f} s), "
                     f"the collector closed {s['closed_by_server']} streams")
            if s.get("first_closed_s") is not None:
                extra += (f" {s['first_closed_s']:.1f}-{s['last_closed_s']:.1f} s after they "
                          "first connected")
            extra += f", {r.get('sse_clients_active') or 0:.0f} still connected at the end"
        print(describe(label, r) + extra)
    base = runs["none"]["reports_per_s"]
    for mode, label in (("read", "reading"), ("no-read", "never reading")):
        r = runs[mode]
        results.add(Row("5 overload", f"N={agents}: reports/s, {SSE_CLIENTS} SSE clients "
                        f"{label}", r["reports_per_s"], "reports/s", limit=base,
                        limit_name="0 clients",
                        note=f"p99 {r['latency']['p99'] * 1000:,.0f} ms vs "
                             f"{runs['none']['latency']['p99'] * 1000:,.0f} ms; "
                             f"{r['sse']['closed_by_server']} streams closed by the collector"))
    results.details[f"sse_{agents}"] = runs


def run(results: Results, levels: tuple[int, ...], timing: Timing,
        baselines: dict[int, dict[str, Any]] | None = None, reports: int = 3) -> None:
    """``baselines``: part 3's runs, by N (the runs with no clients, not made again)."""
    with tempfile.TemporaryDirectory(prefix="pulltrace-overload-") as tmp:
        active_pulls(results, Path(tmp), reports)
        for agents in levels:
            sse(results, agents, timing, Path(tmp), (baselines or {}).get(agents))


def main() -> None:
    agents, timing = command_line(__doc__)
    results = Results()
    run(results, tuple(agents or [200, 2000]), timing)
    print(results.table())


if __name__ == "__main__":
    main()
