"""Part 3 (and 4a): the collector over HTTP, N agents at one report a second each.

    python -m bench.http_bench [--agents 200 --agents 2000 ...] [--duration 10]

For each N: a fresh ``python -m collector.cli collect`` on a DuckDB file in a temporary
folder, and the load generator (:mod:`bench.loadgen`, a process of its own) playing N agents
of a rollout fleet (at N=2,000 once more against ``collect --no-journal``, which answers
after the database commit); then the same load against the limit, :mod:`bench.null_server` (the same
aiohttp stack answering 200 at once). Reports/s and samples/s answered over the run (from
the first report sent to the last answer: a collector that falls behind answers a whole
group commit at a time), the latency of the reports due in the measured window from the
moment each was due (p50 / p99 / max), the CPU both sides used in the window, and the
collector's resident memory at its end.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.pipeline import rollout
from bench.procs import Load, run_load, start_collector, start_null_server
from bench.report import Results, Row

P99_TARGET_S = 0.050
P99_TARGET_AGENTS = 2000
RATIO_TARGET = 0.7


@dataclass(frozen=True)
class Timing:
    warmup: float
    duration: float
    drain: float

    def load(self, agents: int, **kw: Any) -> Load:
        shape = kw.pop("shape", None) or rollout(agents)
        return Load(agents, shape, warmup=self.warmup, duration=self.duration,
                    drain=self.drain, **kw)


def command_line(doc: str | None) -> tuple[list[int] | None, Timing]:
    """The ``--agents`` levels asked for (None: the default ones) and the timing flags of a
    part run on its own."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, action="append")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=10.0)
    args = parser.parse_args()
    return args.agents, Timing(args.warmup, args.duration, args.drain)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f} ms"


def describe(name: str, r: dict[str, Any]) -> str:
    lat = r["latency"]
    lower = f" (a lower bound: {r['unanswered']} unanswered)" if r["unanswered"] else ""
    text = (f"    {name:9s} {r['reports_per_s']:7,.0f} reports/s of {r['offered_per_s']:,.0f} "
            f"offered, latency p50 {ms(lat['p50'])} p99 {ms(lat['p99'])} max {ms(lat['max'])}"
            f"{lower}; "
            f"CPU server {r['server_cpu']:.2f} / client {r['client_cpu']:.2f} cores; "
            f"client send lag p99 {ms(r['send_lag']['p99'])}")
    text += f"; {r['samples_per_s']:,.0f} samples/s"
    if r.get("server_samples_per_s") is not None:  # a collector
        text += f"; RSS {r['server_rss_kb'] / 1024:,.0f} MiB"
        threads = r["server_threads"]
        text += (f"; threads: main {threads['main']['cpu']:.2f} cores (waited for a CPU "
                 f"{threads['main']['wait']:.2f}), others {threads['others']['cpu']:.2f} "
                 f"({threads['others']['wait']:.2f})")
        if (commits := r.get("commits")) is not None:
            text += (f"; {commits['per_s']:.1f} commits/s of {commits['mean_reports']:.0f} "
                     f"reports, {commits['mean_s'] * 1000:,.0f} ms each")
    bad = {k: v for k, v in r["statuses"].items() if k != "200"}
    if bad:
        text += f"; answers other than 200: {bad}"
    return text


def run_level(agents: int, timing: Timing, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    load = timing.load(agents)
    collector = start_collector(tmp, f"collector-{agents}")
    try:
        real = run_load(collector, load)
    finally:
        collector.stop()
    null = start_null_server(tmp)
    try:
        empty = run_load(null, load)
    finally:
        null.stop()
    return real, empty


def add_rows(results: Results, agents: int, real: dict[str, Any], empty: dict[str, Any]) -> None:
    part = "3 http"
    results.add(Row(part, f"N={agents}: reports/s", real["reports_per_s"], "reports/s",
                    limit=empty["reports_per_s"], limit_name="empty handler",
                    target=RATIO_TARGET,
                    note=f"offered {real['offered_per_s']:,.0f}/s"))
    results.add(Row(part, f"N={agents}: samples/s", real["samples_per_s"], "samples/s",
                    limit=empty["samples_per_s"], limit_name="empty handler"))
    lat, lim = real["latency"], empty["latency"]
    low = " (lower bound)" if real["unanswered"] else ""
    results.add(Row(part, f"N={agents}: p99 latency{low}", lat["p99"], "ms", scale=1e-3,
                    limit=lim["p99"], limit_name="empty handler",
                    target=P99_TARGET_S if agents == P99_TARGET_AGENTS else None,
                    target_max=True,
                    note=f"p50 {ms(lat['p50'])}, max {ms(lat['max'])}"))
    results.add(Row("4 memory", f"collector RSS, N={agents} steady", real["server_rss_kb"] * 1024,
                    "MiB", scale=2**20, note=f"peak {real['server_hwm_kb'] / 1024:,.0f} MiB"))


def run(results: Results, levels: tuple[int, ...], timing: Timing) -> dict[int, dict[str, Any]]:
    print(f"part 3 - HTTP: {rollout(0).describe().split(', ', 1)[1]}; each agent one report "
          f"a second on a fixed schedule; {timing.warmup:g} s warm-up, {timing.duration:g} s "
          "measured")
    found: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="pulltrace-http-") as tmp:
        for agents in levels:
            real, empty = run_level(agents, timing, Path(tmp))
            print(f"  N={agents}")
            print(describe("collector", real))
            print(describe("empty", empty))
            add_rows(results, agents, real, empty)
            found[agents] = real
            results.details[f"http_{agents}"] = {"collector": real, "empty": empty}
        if P99_TARGET_AGENTS in found:
            no_journal(results, found[P99_TARGET_AGENTS], timing, Path(tmp))
    return found


def no_journal(results: Results, real: dict[str, Any], timing: Timing, tmp: Path) -> None:
    """The same load at the p99 target's N against ``collect --no-journal``: every report
    answered only after its database commit (what the journal takes out of the wait)."""
    agents = P99_TARGET_AGENTS
    collector = start_collector(tmp, f"collector-{agents}-no-journal", ("--no-journal",))
    try:
        slow = run_load(collector, timing.load(agents))
    finally:
        collector.stop()
    print(f"  N={agents}, --no-journal")
    print(describe("collector", slow))
    lat = slow["latency"]
    low = " (lower bound)" if slow["unanswered"] else ""
    results.add(Row("3 http", f"N={agents}: p99 latency, --no-journal{low}", lat["p99"], "ms",
                    scale=1e-3, limit=real["latency"]["p99"], limit_name="with the journal",
                    note=f"{slow['reports_per_s']:,.0f} reports/s, p50 {ms(lat['p50'])}"))
    results.details[f"http_{agents}_no_journal"] = slow


def main() -> None:
    agents, timing = command_line(__doc__)
    results = Results()
    run(results, tuple(agents or [200, 1000, 2000, 4000]), timing)
    print(results.table())


if __name__ == "__main__":
    main()
