"""The containerd source end to end: real containerd, real registry, real bytes through the
throttling proxy (2 MiB/s per connection, see conftest.RATE).

Expected values come from the images the test wrote (their digests, sizes and media types) and
from the throttle's rate, never from what the collector printed.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from collector.engine import EngineConfig
from collector.testbed import MiB, Testbed
from collector.testbed._process import child_env, free_port
from collector.timefmt import NS
from tests.e2e.conftest import RATE
from tests.e2e.live import (
    ABORTED,
    NODE,
    LiveCollector,
    actual_layers,
    digest_ref,
    expected_layers,
    layer_of,
    pull_of,
    tag_ref,
)
from tests.e2e.processes import Process, api_pulls, scrape, wait_until

pytestmark = pytest.mark.e2e

def test_layer_speed_matches_the_throttle_and_the_pull_speed_is_their_sum(
        testbed: Testbed, repo: str, seed: int) -> None:
    pushed = testbed.make_image(repo, [5 * MiB, 5 * MiB], seed=seed)
    layers = {layer.digest for layer in pushed.image.layers}

    with LiveCollector(testbed, interval=0.5) as live:
        testbed.pull(pushed.ref)
        done = live.wait_for(lambda ps: pull_of(ps, tag_ref(testbed, pushed), "completed"),
                             "the pull to complete")
        samples = live.samples(done.id)
        progress = live.progress(done.id)

    measured = [s for s in samples if s.digest in layers and s.status == "downloading"
                and s.downloaded_bytes >= 2 * MiB and s.bytes_per_sec is not None]
    assert {s.digest for s in measured} == layers
    for sample in measured:
        # each layer has a connection of its own, paced at RATE
        assert sample.bytes_per_sec == pytest.approx(RATE, rel=0.05), sample
    at_ts: dict[int, list] = defaultdict(list)
    for sample in samples:
        at_ts[sample.ts].append(sample)
    both = 0
    for row in progress:
        moving = [s for s in at_ts.get(row.ts, []) if s.status == "downloading"
                  and s.bytes_per_sec is not None]
        if row.status != "active" or not moving:
            continue
        assert row.bytes_per_sec == pytest.approx(sum(s.bytes_per_sec for s in moving))
        if {s.digest for s in moving} == layers and all(s.downloaded_bytes >= 2 * MiB
                                                         for s in moving):
            assert row.bytes_per_sec == pytest.approx(2 * RATE, rel=0.05)
            both += 1
    assert both >= 1
    assert done.downloaded_bytes == sum(b.size for b in pushed.image.blobs)


def test_two_images_pulled_at_once_are_two_pulls_with_exact_media_types(
        testbed: Testbed, repo: str, seed: int) -> None:
    x = testbed.make_image(repo + "/x", [3 * MiB, 2 * MiB], seed=seed)
    y = testbed.make_image(repo + "/y", [2 * MiB, 3 * MiB, MiB], seed=seed + 1)

    with LiveCollector(testbed) as live:
        fetches = [testbed.fetch(x.ref), testbed.fetch(y.ref)]
        for fetch in fetches:
            assert fetch.wait(timeout=60) == 0, testbed.fetch_output(fetch)
        for pushed in (x, y):
            live.wait_for(lambda ps, p=pushed: pull_of(ps, tag_ref(testbed, p), "completed"),
                          f"{pushed.ref} to complete")
        pulls = live.pulls()
        seen = {(p.pull_id, p.image_ref) for out in live.outputs() for p in out.progress}

    assert len(pulls) == 2
    for pushed in (x, y):
        pull = pull_of(pulls, tag_ref(testbed, pushed))
        assert pull is not None
        assert actual_layers(pull) == expected_layers(pushed)
        assert pull.total_bytes == pull.downloaded_bytes == sum(b.size for b in pushed.image.blobs)
        assert (pull.cached_bytes, pull.layer_count, pull.layers_done) == (
            0, len(pushed.image.blobs), len(pushed.image.blobs))
        # while it ran it was named by its repository and manifest digest, never anything else
        assert {ref for pid, ref in seen if pid == pull.id} <= {digest_ref(pushed),
                                                               tag_ref(testbed, pushed)}
    assert {pid for pid, _ in seen} == {p.id for p in pulls}  # no third, merged pull


def test_layers_already_in_the_store_are_cached_not_fetched(
        testbed: Testbed, repo: str, seed: int) -> None:
    base = testbed.make_image(repo + "/base", [3 * MiB], seed=seed)
    app = testbed.make_image(repo + "/app", [2 * MiB], seed=seed + 1,
                             shared_layers=base.image.layers)
    shared, fresh = app.image.layers

    with LiveCollector(testbed) as live:
        testbed.pull(base.ref)
        live.wait_for(lambda ps: pull_of(ps, tag_ref(testbed, base), "completed"), "the base")
        output = testbed.pull(app.ref)
        pull = live.wait_for(lambda ps: pull_of(ps, tag_ref(testbed, app), "completed"),
                             "the app image")
        samples = live.samples(pull.id)
        progress = live.progress(pull.id)

    assert f"layer-{shared.digest}:" in output  # ctr itself says "exists" for it
    assert layer_of(pull, shared.digest).status.value == "cached"
    assert layer_of(pull, fresh.digest).status.value == "completed"
    assert pull.cached_bytes == shared.size
    assert pull.downloaded_bytes == app.image.manifest.size + app.image.config.size + fresh.size
    assert pull.total_bytes == sum(b.size for b in app.image.blobs)
    cached_samples = [s for s in samples if s.digest == shared.digest]
    assert cached_samples
    assert all(s.fetched_bytes == 0 and s.bytes_per_sec is None for s in cached_samples)
    fresh_samples = [s for s in samples if s.digest == fresh.digest]
    # bytes there when the layer was first seen were not fetched in an interval we saw
    assert sum(s.fetched_bytes for s in fresh_samples) == (
        fresh.size - fresh_samples[0].downloaded_bytes)
    assert sum(s.fetched_bytes for s in samples) <= (
        fresh.size + app.image.manifest.size + app.image.config.size)
    fresh_rate = {s.ts: s.bytes_per_sec for s in fresh_samples}
    for row in progress:
        if row.bytes_per_sec is not None:
            assert row.bytes_per_sec == pytest.approx(fresh_rate[row.ts])


def test_a_killed_proxy_fails_the_pull_and_counts_one_error(
        testbed: Testbed, repo: str, seed: int) -> None:
    pushed = testbed.make_image(repo, [6 * MiB], seed=seed)
    (layer,) = pushed.image.layers

    with LiveCollector(testbed) as live:
        errors_before = live.metric("pulltrace_pull_errors_total")
        fetch = testbed.fetch(pushed.ref)
        live.wait_for(lambda ps: (p := pull_of(ps, digest_ref(pushed)))
                      and layer_of(p, layer.digest).downloaded_bytes >= MiB,
                      "the first MiB of the layer")
        testbed.kill_proxy()
        assert fetch.wait(timeout=30) != 0
        failed = live.wait_for(lambda ps: pull_of(ps, digest_ref(pushed), "failed"),
                               "the pull to fail")
        reports = live.reports()
        live.wait_for(lambda _: live.reports() >= reports + 4, "four more reports")
        errors_after = live.metric("pulltrace_pull_errors_total")
        pulls = live.pulls()

    assert failed.error == f"layer {layer.digest} {ABORTED}"
    assert errors_after - errors_before == 1
    assert [p.status.value for p in pulls] == ["failed"]
    broken = layer_of(failed, layer.digest)
    assert broken.status.value == "failed"
    assert MiB <= broken.downloaded_bytes < layer.size


def test_a_killed_client_stalls_the_pull_and_a_new_fetch_resumes_it(
        testbed: Testbed, repo: str, seed: int) -> None:
    pushed = testbed.make_image(repo, [6 * MiB], seed=seed)
    (layer,) = pushed.image.layers

    with LiveCollector(testbed, config=EngineConfig(stall_after_ns=3 * NS)) as live:
        fetch = testbed.fetch(pushed.ref)
        live.wait_for(lambda ps: (p := pull_of(ps, digest_ref(pushed)))
                      and layer_of(p, layer.digest).downloaded_bytes >= 2 * MiB,
                      "two MiB of the layer")
        fetch.kill()
        fetch.wait()
        stalled = live.wait_for(lambda ps: pull_of(ps, digest_ref(pushed), "stalled"),
                                "the pull to stall", timeout=20)
        frozen = layer_of(stalled, layer.digest).downloaded_bytes
        testbed.pull(pushed.ref)
        done = live.wait_for(lambda ps: pull_of(ps, tag_ref(testbed, pushed), "completed"),
                             "the resumed pull to complete")
        samples = [s for s in live.samples(done.id) if s.digest == layer.digest]

    assert done.id == stalled.id  # the same pull, resumed
    assert layer_of(done, layer.digest).downloaded_bytes == layer.size
    rates = [s.bytes_per_sec for s in samples if s.bytes_per_sec is not None]
    assert min(rates) >= 0
    before = [s for s in samples if s.downloaded_bytes <= frozen and s.status == "downloading"]
    after = [s for s in samples if s.downloaded_bytes > frozen and s.status == "downloading"]
    assert after, "the resumed download was never seen moving"
    assert {s.status for s in samples} >= {"stalled", "completed"}
    after_rates = [s.bytes_per_sec for s in after]
    assert len(set(after_rates)) > 1 or after_rates[0] != before[-1].bytes_per_sec
    assert all(r is not None and r > 0 for r in after_rates)


def test_a_restarted_containerd_is_a_visible_gap_and_the_next_pull_is_seen(
        testbed: Testbed, repo: str, seed: int) -> None:
    pushed = testbed.make_image(repo, [2 * MiB], seed=seed)

    with LiveCollector(testbed) as live:
        testbed.stop_containerd()
        live.wait_for(lambda _: live.metric("pulltrace_source_gaps_total",
                                            source="containerd") >= 1,
                      "the poller to notice containerd is gone")
        testbed.start_containerd()
        testbed.pull(pushed.ref)
        done = live.wait_for(lambda ps: pull_of(ps, tag_ref(testbed, pushed), "completed"),
                             "the pull after the restart")
        gaps = live.metric("pulltrace_source_gaps_total", source="containerd")

    assert gaps == 1
    assert actual_layers(done) == expected_layers(pushed)


# -- the agent over HTTP against the in-process source --------------------------------------------


def comparable(pull: dict) -> tuple:
    layers = tuple((x["digest"], x["mediaType"], x["totalBytes"], x["downloadedBytes"],
                    x["status"]) for x in pull["layers"])
    return (pull["id"], pull["nodeName"], pull["imageRef"], pull["startedAt"], pull["status"],
            pull["totalBytes"], pull["downloadedBytes"], pull["cachedBytes"], pull["layerCount"],
            pull["layersDone"], pull["error"], layers)


def test_the_agent_over_http_gives_the_same_pulls_as_the_in_process_source(
        testbed: Testbed, repo: str, seed: int, tmp_path: Path) -> None:
    pushed = testbed.make_image(repo, [3 * MiB, 2 * MiB], seed=seed)
    token = "e2e-t0ken"
    env = child_env({"PULLTRACE_NODE_NAME": NODE, "PULLTRACE_CONTAINERD_SOCKET":
                     str(testbed.socket_path), "PULLTRACE_AGENT_TOKEN": token,
                     "PULLTRACE_ALLOWED_SOCKET_DIRS": str(testbed.directory)})
    ports = [free_port() for _ in range(4)]
    inproc, over_http = (f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[2]}")
    metrics = (f"http://127.0.0.1:{ports[1]}/metrics", f"http://127.0.0.1:{ports[3]}/metrics")
    logs = [tmp_path / name for name in ("collect-a.log", "collect-b.log", "agent.log")]
    procs = [
        Process(["collect", "--containerd", str(testbed.socket_path), "--namespace",
                 testbed.namespace, "--db", str(tmp_path / "a.duckdb"),
                 "--listen", f"127.0.0.1:{ports[0]}", "--metrics-listen",
                 f"127.0.0.1:{ports[1]}"], logs[0], env),
        Process(["collect", "--db", str(tmp_path / "b.duckdb"), "--listen",
                 f"127.0.0.1:{ports[2]}", "--metrics-listen", f"127.0.0.1:{ports[3]}"],
                logs[1], env),
    ]
    try:
        wait_until(lambda: scrape(metrics[1], "pulltrace_agent_reports_total") >= 0,
                   "the second collector", logs=logs)
        procs.append(Process(["agent", "--server", over_http, "--interval", "500ms"], logs[2],
                             env))
        # each source's first look at containerd is what was there before: wait for it
        for url in metrics:
            wait_until(lambda u=url: scrape(u, "pulltrace_agent_reports_total") >= 1,
                       f"a first report at {url}", logs=logs)

        testbed.pull(pushed.ref)

        name = tag_ref(testbed, pushed)
        for url in (inproc, over_http):
            wait_until(lambda u=url: any(p["imageRef"] == name and p["status"] == "completed"
                                         for p in api_pulls(u)),
                       f"the pull at {url}", logs=logs)
        a, b = api_pulls(inproc), api_pulls(over_http)
    finally:
        codes = [proc.stop() for proc in reversed(procs)]

    assert [comparable(p) for p in a] == [comparable(p) for p in b]
    (pull,) = a
    assert (pull["imageRef"], pull["status"], pull["nodeName"]) == (name, "completed", NODE)
    assert [(x["digest"], x["mediaType"], x["totalBytes"], x["downloadedBytes"], x["status"])
            for x in pull["layers"]] == expected_layers(pushed)
    assert codes == [0, 0, 0]
