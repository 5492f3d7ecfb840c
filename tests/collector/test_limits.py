"""The caps: layers per report (413), pulls in progress (503), event-stream clients (503);
each refusal is counted and changes nothing."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.cli import _limits, build_parser
from collector.engine import Engine
from collector.limits import Limits
from collector.model import LayerPhase
from collector.store import Store
from tests.collector.reports import at, digest, layer, pull, report
from tests.collector.server import ManualClock, RunningCollector

MB = 1_000_000


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def post(url: str, rep) -> httpx.Response:
    return httpx.post(url + "/api/v1/report", content=rep.dumps(), timeout=10)


def test_a_report_over_the_layer_cap_gets_413_and_nothing_is_recorded(tmp_path):
    db = tmp_path / "layers.duckdb"
    clock = ManualClock()
    with RunningCollector(db, gate_clock=clock, limits=Limits(max_layers=5)) as live:
        # 2 pulls x 3 layers = 6 layers, one over the cap of 5
        six = report("n1", 0, pull("a:1", 0, *(layer(digest(i), 0, MB) for i in range(3))),
                     pull("b:1", 0, *(layer(digest(10 + i), 0, MB) for i in range(3))))
        refused = post(live.url, six)
        clock.advance(1)
        five = report("n1", 1, pull("a:1", 0, *(layer(digest(i), 0, MB) for i in range(5))))
        accepted = post(live.url, five)
        text = httpx.get(live.metrics_url).text
    assert refused.status_code == 413
    assert "lists 6 layers, over the cap of 5" in refused.text
    assert "--max-layers" in refused.text
    assert accepted.status_code == 200
    assert metric(text, "pulltrace_reports_dropped_total", reason="too_many_layers") == 1
    with Store(db) as store:
        assert store.count("reports") == 1
        assert store.count("layers") == 5


def test_past_the_active_pull_cap_a_report_starting_pulls_gets_503_and_changes_nothing(tmp_path):
    db = tmp_path / "pulls.duckdb"
    clock = ManualClock()
    with RunningCollector(db, gate_clock=clock, limits=Limits(max_active_pulls=3)) as live:
        url = live.url
        a1 = pull("a:1", 0, layer(digest(1), 0, 4 * MB))
        a2 = pull("a:2", 0, layer(digest(2), 0, 4 * MB))
        assert post(url, report("node-a", 0, a1, a2)).status_code == 200  # 2 active
        b1 = pull("b:1", 0, layer(digest(3), 0, 4 * MB))
        b2 = pull("b:2", 0, layer(digest(4), 0, 4 * MB))
        full = post(url, report("node-b", 0, b1, b2))  # 2 + 2 = 4 > 3
        # pulls already followed are never refused
        clock.advance(1)
        a1_half = pull("a:1", 0, layer(digest(1), 2 * MB, 4 * MB))
        a2_done = pull("a:2", 0, layer(digest(2), 4 * MB, 4 * MB, state=LayerPhase.COMPLETED))
        assert post(url, report("node-a", 1, a1_half, a2_done)).status_code == 200
        # a:2 completed: 1 active, so b's two fit (1 + 2 = 3)
        clock.advance(1)
        assert post(url, report("node-b", 2, b1, b2)).status_code == 200
        listed = {p["imageRef"]: p["status"]
                  for p in httpx.get(url + "/api/v1/pulls").json()["pulls"]}
        text = httpx.get(live.metrics_url).text
    assert full.status_code == 503
    assert full.headers["Retry-After"] == "5"
    assert "follows 2 pulls in progress and this report would start 2 more, over its cap " \
           "of 3" in full.text
    assert "nothing of it was recorded" in full.text
    assert listed == {"a:1": "active", "a:2": "completed", "b:1": "active", "b:2": "active"}
    assert metric(text, "pulltrace_reports_dropped_total", reason="too_many_pulls") == 1
    assert metric(text, "pulltrace_pulls_active") == 3
    with Store(db) as store:
        assert store.count("reports") == 3  # the refused one is not among them
        assert store.count("pulls") == 4


def test_past_the_client_cap_an_event_stream_gets_503_and_is_counted(tmp_path):
    async def crowd(live: RunningCollector) -> tuple[list[int], int, str, str]:
        async with aiohttp.ClientSession() as session:
            streams = [await session.get(live.url + "/api/v1/events") for _ in range(3)]
            extra = await session.get(live.url + "/api/v1/events")
            extra_text = await extra.text()
            statuses = [s.status for s in streams]
            metrics = await (await session.get(live.metrics_url)).text()
            for s in streams:
                s.close()
            return [*statuses, extra.status][:3], extra.status, extra_text, metrics

    with RunningCollector(tmp_path / "sse.duckdb", limits=Limits(max_sse_clients=3)) as live:
        statuses, extra, extra_text, text = asyncio.run(crowd(live))
    assert statuses == [200, 200, 200]
    assert extra == 503
    assert "(3, the collector's --max-sse-clients)" in extra_text
    assert metric(text, "pulltrace_sse_rejected_total", reason="too_many_clients") == 1
    assert metric(text, "pulltrace_sse_clients_active") == 3


def test_new_pulls_counts_what_a_report_would_start_without_changing_anything():
    engine = Engine()
    a = pull("a:1", 0, layer(digest(1), 0, MB))
    b = pull("b:1", 0, layer(digest(2), 0, MB))
    # two ingest refs of a Go-shaped agent are one pending pull of their node
    go = [pull(f"layer-sha256:{n:064x}", 0, total_known=False) for n in (7, 8)]
    first = report("n1", 0, a, b, *go)
    assert engine.new_pulls(first) == 3
    assert engine.active_count() == 0
    engine.ingest(first)
    assert engine.new_pulls(report("n1", 1, a, b, *go)) == 0
    assert engine.new_pulls(report("n2", 1, a)) == 1  # same image, another node
    a_done = pull("a:1", 0, layer(digest(1), MB, MB, state=LayerPhase.COMPLETED))
    engine.ingest(report("n1", 2, a_done, b, *go))
    assert engine.active_count() == 2
    # a finished pull reported again starts nothing
    assert engine.new_pulls(report("n1", 3, a_done)) == 0


@pytest.mark.parametrize("flag", ["--max-layers", "--max-active-pulls", "--max-sse-clients",
                                  "--max-backlog"])
@pytest.mark.parametrize("value", ["0", "-3", "1.5", "many"])
def test_cap_flags_take_whole_numbers_of_at_least_one(flag, value, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["collect", flag, value])
    assert exc.value.code == 2
    assert f"expected a whole number of at least 1, got {value!r}" in capsys.readouterr().err


def test_cap_flags_reach_the_collector_limits():
    args = build_parser().parse_args(["collect", "--max-layers", "7", "--max-active-pulls", "9",
                                      "--max-sse-clients", "11", "--max-backlog", "13"])
    assert _limits(args) == Limits(max_layers=7, max_active_pulls=9, max_sse_clients=11,
                                   max_backlog=13)
    assert _limits(build_parser().parse_args(["collect"])) == Limits()


def test_nodes_silent_past_the_stale_time_with_nothing_in_progress_are_forgotten():
    engine = Engine()  # stale after 10 min
    for n in range(1000):  # names that come once, as a forger's would
        engine.ingest(report(f"ghost-{n}", 0))
    engine.ingest(report("busy", 0, pull("a:1", 0, layer(digest(1), 0, MB))))
    assert engine.node_count() == 1001
    engine.ingest(report("busy", 500, pull("a:1", 0, layer(digest(1), MB // 4, MB))))
    engine.tick(at(599))  # not yet past 10 minutes of silence
    assert engine.node_count() == 1001
    engine.ingest(report("busy", 660, pull("a:1", 0, layer(digest(1), MB // 2, MB))))
    assert engine.node_count() == 1  # the busy node stays: it has a pull in progress
    # a forgotten node that comes back is a node like any other
    engine.ingest(report("ghost-3", 662, pull("b:1", 662, layer(digest(2), 0, MB))))
    assert engine.node_count() == 2
    assert engine.active_count() == 2


def test_the_database_cache_is_capped_by_the_flag(tmp_path):
    args = build_parser().parse_args(["collect", "--db-memory-limit", "64MB"])
    assert args.db_memory_limit == "64MB"
    with Store(tmp_path / "m.duckdb", memory_limit=args.db_memory_limit) as store:
        (limit,) = store.one("SELECT current_setting('memory_limit')")
    assert limit == "61.0 MiB"  # 64 * 10**6 bytes, as DuckDB shows it


@pytest.mark.parametrize("value", ["lots", "64", "1.5.GB", "1 PB"])
def test_a_database_cache_size_must_be_a_size(value, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["replay", "x.jsonl", "--db", "x.duckdb",
                                   "--db-memory-limit", value])
    assert f"expected a size such as 256MB or 1GiB, got {value!r}" in capsys.readouterr().err
