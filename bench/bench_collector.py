"""Collector throughput, each figure next to a limit measured in the same run.

    .venv/bin/python bench/bench_collector.py [--nodes 50] [--seconds 60] [--layers 8]

- engine: reports/s through ``Engine.ingest`` vs just decoding the same JSON (the floor
  every report pays before the engine sees it);
- store: samples/s written by ``Store.write`` (one transaction per batch of 200 reports) vs
  a bare DuckDB append of the same Arrow table;
- HTTP: reports/s through the real collector (``POST /api/v1/report``, answered after the
  commit) vs the same aiohttp server answering 200 without doing anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from collector.api import ReportGate
from collector.engine import Engine
from collector.metrics import Metrics
from collector.model import parse_report
from collector.records import Sample
from collector.server import start_server
from collector.service import Collector
from collector.sources.synthetic import LAYER, MIB, PlannedLayer, PlannedPull, reports
from collector.store import Store, to_arrow
from collector.timefmt import NS

ORIGIN = 1_790_000_000 * NS


def workload(nodes: int, seconds: int, layers: int) -> list[str]:
    plans = []
    for n in range(nodes):
        planned = PlannedPull(f"node-{n:03d}", f"registry.local/app-{n}:1", 0.0)
        for i in range(layers):
            digest = f"sha256:{n:04x}{i:04x}".ljust(71, "0")
            planned.layers.append(PlannedLayer(digest, LAYER, 400 * MIB, 2 * MIB, 0.0))
        plans.append(planned)
    return [r.dumps() for r in reports(plans, ORIGIN, seconds, 1.0)]


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def bench_engine(bodies: list[str]) -> None:
    decode, parsed = timed(lambda: [parse_report(b) for b in bodies])
    raw, _ = timed(lambda: [json.loads(b) for b in bodies])
    engine = Engine()
    ingest, outs = timed(lambda: [engine.ingest(r) for r in parsed])
    n = len(bodies)
    print(f"engine   {n / ingest:10,.0f} reports/s   json.loads alone {n / raw:10,.0f}/s   "
          f"ratio {raw / ingest:.2f}   (validation: {n / decode:,.0f}/s)")
    return outs


def bench_store(outs: list) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        write, _ = timed(lambda: [store.write(outs[i:i + 200]) for i in range(0, len(outs), 200)])
        samples = sum(len(o.samples) for o in outs)
        store.close()
        bare = Store(Path(tmp) / "bare.duckdb")
        rows: list[Sample] = [s for o in outs for s in o.samples]
        table = to_arrow(rows, Sample)

        def append() -> None:
            bare.con.register("t", table)
            bare.con.execute("INSERT INTO samples BY NAME SELECT * FROM t")

        raw, _ = timed(append)
        bare.close()
    print(f"store    {samples / write:10,.0f} samples/s  "
          f"bare DuckDB append {samples / raw:10,.0f}/s   ratio {raw / write:.3f}   "
          "(all tables, one commit per 200 reports)")


async def _post_by_node(url: str, bodies: list[str]) -> float:
    """One client per node, each posting its node's reports in order."""
    by_node: dict[str, list[str]] = {}
    for body in bodies:
        by_node.setdefault(json.loads(body)["nodeName"], []).append(body)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def node_client(mine: list[str]) -> None:
            for body in mine:
                async with session.post(url, data=body) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status

        start = time.perf_counter()
        await asyncio.gather(*(node_client(mine) for mine in by_node.values()))
        return time.perf_counter() - start


class _FastClock:
    """Each call a second later: the benchmark posts faster than the 500 ms rule allows."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        self.ns += NS
        return self.ns


async def bench_http(bodies: list[str], nodes: int) -> None:
    async def ok(_: web.Request) -> web.Response:
        await _.read()
        return web.Response()

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/api/v1/report", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    empty = await _post_by_node(f"http://127.0.0.1:{port}/api/v1/report", bodies)
    await runner.cleanup()
    with tempfile.TemporaryDirectory() as tmp:
        collector = Collector(Engine(), Store(Path(tmp) / "http.duckdb"), Metrics())
        server = await start_server(collector, ("127.0.0.1", 0), ("127.0.0.1", 0),
                                    gate=ReportGate(None, _FastClock()))
        real = await _post_by_node(server.url + "/api/v1/report", bodies)
        await server.stop()
    n = len(bodies)
    print(f"http     {n / real:10,.0f} reports/s  empty handler {n / empty:10,.0f}/s   "
          f"ratio {empty / real:.2f}   ({nodes} concurrent node clients; each report "
          f"answered after its commit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    bodies = workload(args.nodes, args.seconds, args.layers)
    print(f"workload: {len(bodies):,} reports ({args.nodes} nodes x {args.seconds + 1} s), "
          f"{args.layers} downloading layers each, {sum(map(len, bodies)) / 1e6:.1f} MB of JSON")
    outs = bench_engine(bodies)
    bench_store(outs)
    asyncio.run(bench_http(bodies, args.nodes))


if __name__ == "__main__":
    main()
