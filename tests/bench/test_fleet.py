"""The benchmark fleet renders reports the collector takes, shaped as containerd shows pulls."""

from __future__ import annotations

import json
import statistics

from bench.fleet import MIB, NS, ORIGIN_NS, Fleet, FleetShape, LayerRun, TimeText, catalogue
from collector.model import LayerPhase, parse_report

HEAD = '{"digest":"sha256:aa","mediaType":"m","totalBytes":3146728,"totalKnown":true'


def layer(**kw) -> LayerRun:
    fields = {"head": HEAD, "size": 3 * MIB + 1000, "start": 0.4, "rate": float(MIB),
              "cached": False, "started_text": "2026-09-21T00:00:00.400000000Z"} | kw
    return LayerRun(**fields)


def test_a_layer_moves_in_whole_mib_steps_timed_at_the_step():
    text = TimeText()
    # 1.6 s after its start at 1 MiB/s: 1.6 MiB landed, containerd shows the 1 MiB step,
    # written 1.0 s after the layer started (1.4 s into the pull).
    obj = json.loads(layer().render(ORIGIN_NS, 2.0, text))
    assert obj["downloadedBytes"] == MIB
    assert obj["updatedAt"] == text(ORIGIN_NS + 1_400_000_000)
    assert "state" not in obj


def test_a_layer_before_its_start_a_finished_one_and_a_cached_one():
    text = TimeText()
    waiting = json.loads(layer().render(ORIGIN_NS, 0.3, text))
    assert waiting["downloadedBytes"] == 0
    assert "updatedAt" not in waiting
    # 3 MiB + 1000 bytes at 1 MiB/s from 0.4 s: done at 0.4 + 3.00095... s.
    done = json.loads(layer().render(ORIGIN_NS, 10.0, text))
    assert done["downloadedBytes"] == 3 * MIB + 1000
    assert done["state"] == "completed"
    assert done["updatedAt"] == text(ORIGIN_NS + round((0.4 + (3 * MIB + 1000) / MIB) * NS))
    cached = json.loads(layer(cached=True).render(ORIGIN_NS, 10.0, text))
    assert (cached["downloadedBytes"], cached["state"]) == (0, "cached")


def test_time_text_is_rfc3339_with_nanoseconds():
    assert TimeText()(ORIGIN_NS + 5) == "2026-09-21T14:13:20.000000005Z"


def run_fleet(shape: FleetShape, ticks: int):
    fleet = Fleet(shape)
    return [fleet.tick(t) for t in range(ticks)]


def test_every_report_decodes_and_pulls_finish_and_start():
    shape = FleetShape(nodes=3, slots=1, layers=(2, 3), size_median_mib=4.0,
                       size_bounds_mib=(1.0, 8.0), speed_median_mib=4.0, gap_mean=1.0,
                       head_start=0.0, seed=11)
    ticks = run_fleet(shape, 60)
    last_ts: dict[str, int] = {}
    progress: dict[tuple[str, int, str], int] = {}
    seen: dict[tuple[str, int], list[bool]] = {}
    for tick in ticks:
        for body, count in tick:
            report = parse_report(body)
            assert report.timestamp > last_ts.get(report.node_name, 0)
            last_ts[report.node_name] = report.timestamp
            assert count == sum(len(p.layers) for p in report.pulls)
            for pull in report.pulls:
                assert pull.started_at is not None
                key = (report.node_name, pull.started_at)
                done = all(x.state in (LayerPhase.COMPLETED, LayerPhase.CACHED)
                           for x in pull.layers)
                seen.setdefault(key, []).append(done)
                parallel = [x for x in pull.layers
                            if 0 < x.downloaded_bytes < x.total_bytes and x.state is None]
                assert len(parallel) <= 3  # containerd's max_concurrent_downloads
                for x in pull.layers:
                    assert x.downloaded_bytes <= x.total_bytes
                    before = progress.get((*key, x.digest), 0)
                    assert x.downloaded_bytes >= before
                    progress[(*key, x.digest)] = x.downloaded_bytes
    # Three nodes, one slot each, pulls of at most 3 layers of at most 8 MiB at 4 MiB/s-ish:
    # a minute holds several pulls a node.
    assert len({node for node, _ in seen}) == 3
    assert len(seen) >= 9
    finished = [shown for shown in seen.values() if shown[-1]]
    assert finished
    for shown in finished:
        # Shown while downloading, then once completed, then gone.
        assert shown.count(True) == 1


def test_the_same_shape_gives_the_same_bytes():
    shape = FleetShape(nodes=5, seed=4)
    assert run_fleet(shape, 5) == run_fleet(shape, 5)
    assert run_fleet(shape, 5) != run_fleet(FleetShape(nodes=5, seed=5), 5)


def test_layer_sizes_are_lognormal_within_bounds():
    shape = FleetShape(nodes=1, images=400, size_median_mib=16.0, size_bounds_mib=(1.0, 512.0))
    sizes = [b.size / MIB for image in catalogue(shape) for b in image.blobs[2:]]
    assert all(1.0 <= s <= 512.0 for s in sizes)
    assert 12.0 < statistics.median(sizes) < 21.0
    # Spread over two orders of magnitude, as image layers are.
    assert min(sizes) < 3.0
    assert max(sizes) > 150.0
    manifests = [image.blobs[0].size for image in catalogue(shape)]
    assert all(900 <= m <= 2_500 for m in manifests)


def test_only_the_first_nodes_when_asked():
    fleet = Fleet(FleetShape(nodes=10))
    names = [json.loads(body)["nodeName"] for body, _ in fleet.tick(0, 4)]
    assert names == ["node-00000", "node-00001", "node-00002", "node-00003"]
