"""The containerd poller against an in-memory content store: attribution, media types,
completion, aborts, cached layers, pending ingests, gaps. Values are worked out by hand from the
fake's state."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from collector.engine import Engine, EngineConfig
from collector.errors import ContainerdError
from collector.model import PENDING_IMAGE_REF, AgentReport, LayerPhase, LayerState, PullState
from collector.sources.poller import (
    ContainerdPoller,
    PullTracker,
    feed_collector,
    parse_document,
)
from collector.store import Store
from collector.timefmt import NS
from tests.collector.fake_containerd import (
    CONFIG,
    INDEX,
    LAYER,
    MANIFEST,
    ZSTD,
    FakeContainerd,
    blob,
    index,
    manifest,
)
from tests.collector.reports import at
from tests.collector.server import RunningCollector

MiB = 1 << 20


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> int:
        return at(self.t)


@pytest.fixture
def fake() -> FakeContainerd:
    return FakeContainerd()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tracker(fake: FakeContainerd, clock: Clock) -> PullTracker:
    tr = PullTracker("n1", clock=clock)
    assert tr.poll(fake).pulls == ()  # the store as it was before any pull
    return tr


def poll(tr: PullTracker, fake: FakeContainerd, clock: Clock, t: float, *,
         ack: bool = True) -> AgentReport:
    clock.t = t
    report = tr.poll(fake)
    if ack:
        tr.acknowledge(report.timestamp)
    return report


def by_digest(state: PullState) -> dict[str, LayerState]:
    return {layer.digest: layer for layer in state.layers}


CFG_A, A1, A2 = blob("a-config", 300, CONFIG), blob("a1", 4 * MiB), blob("a2", 2 * MiB, ZSTD)
MA = manifest(CFG_A, A1, A2)
CFG_B, B1 = blob("b-config", 200, CONFIG), blob("b1", 3 * MiB)
MB = manifest(CFG_B, B1)


def start_a(fake: FakeContainerd) -> None:
    fake.commit_manifest(MA, 1.0, "reg.local/team/a")
    fake.commit(CFG_A, 1.02, kind="config")
    fake.start(A1, 1.03)
    fake.start(A2, 1.04)


def test_two_concurrent_pulls_are_grouped_by_the_manifest_that_lists_them(fake, clock, tracker):
    start_a(fake)
    fake.commit_manifest(MB, 1.1, "reg.local/team/b")
    fake.start(B1, 1.12)
    fake.write(A1, MiB, 1.52)

    report = poll(tracker, fake, clock, 1.6)

    a, b = report.pulls
    assert a == PullState(
        image_ref=f"reg.local/team/a@{MA.digest}", started_at=at(1.0), total_known=True,
        digest=MA.digest, layers=(
            LayerState(MA.digest, MANIFEST, MA.desc.size, MA.desc.size, True,
                       updated_at=at(1.0), state=LayerPhase.COMPLETED),
            LayerState(CFG_A.digest, CONFIG, 300, 300, True, updated_at=at(1.02),
                       state=LayerPhase.COMPLETED),
            LayerState(A1.digest, LAYER, 4 * MiB, MiB, True, started_at=at(1.03),
                       updated_at=at(1.52), state=LayerPhase.DOWNLOADING),
            LayerState(A2.digest, ZSTD, 2 * MiB, 0, True, started_at=at(1.04),
                       updated_at=at(1.04), state=LayerPhase.DOWNLOADING),
        ))
    assert (b.image_ref, b.digest, b.started_at) == (f"reg.local/team/b@{MB.digest}", MB.digest,
                                                     at(1.1))
    assert [layer.digest for layer in b.layers] == [MB.digest, CFG_B.digest, B1.digest]
    assert report.timestamp == at(1.6)


def test_the_tag_replaces_the_digest_reference_and_the_start_stays(fake, clock, tracker):
    start_a(fake)
    first = poll(tracker, fake, clock, 1.5).pulls[0]
    fake.tag("reg.local:5000/team/a:v1", MA.desc, 1.7)
    fake.tag(f"reg.local:5000/team/a@{MA.digest}", MA.desc, 1.7)

    second = poll(tracker, fake, clock, 2.0).pulls[0]

    assert first.image_ref == f"reg.local/team/a@{MA.digest}"
    assert second.image_ref == "reg.local:5000/team/a:v1"
    assert (second.digest, second.started_at) == (first.digest, first.started_at) == (
        MA.digest, at(1.0))


def test_a_vanished_ingest_whose_blob_exists_is_completed_then_the_pull(fake, clock, tracker):
    start_a(fake)
    fake.write(A1, 3 * MiB, 2.5)
    poll(tracker, fake, clock, 2.6)
    fake.commit(A1, 3.1)
    fake.write(A2, MiB, 3.0)

    report = poll(tracker, fake, clock, 3.2)

    layer = by_digest(report.pulls[0])[A1.digest]
    assert layer == LayerState(A1.digest, LAYER, 4 * MiB, 4 * MiB, True, started_at=at(1.03),
                               updated_at=at(3.1), state=LayerPhase.COMPLETED)
    fake.commit(A2, 3.4)
    fake.tag("reg.local/team/a:v1", MA.desc, 3.41)
    done = poll(tracker, fake, clock, 3.6, ack=False)
    assert {layer.state for layer in done.pulls[0].layers} == {LayerPhase.COMPLETED}
    assert done.pulls[0].image_ref == "reg.local/team/a:v1"
    # shown until a report that carried it is delivered, then dropped
    again = poll(tracker, fake, clock, 4.1)
    assert again.pulls == done.pulls
    assert poll(tracker, fake, clock, 4.6).pulls == ()


def test_a_pull_that_completes_without_an_image_record_waits_one_poll_for_it(fake, clock,
                                                                             tracker):
    start_a(fake)
    fake.write(A1, 3 * MiB, 2.5)
    poll(tracker, fake, clock, 2.6)
    for layer, t in ((A1, 3.0), (A2, 3.05)):
        fake.commit(layer, t)

    held = poll(tracker, fake, clock, 3.1).pulls[0]
    fake.tag("reg.local/team/a:v1", MA.desc, 3.2)
    done = poll(tracker, fake, clock, 3.6).pulls[0]

    # the commits that would complete it stay as last seen for one poll
    assert by_digest(held)[A1.digest].state is LayerPhase.DOWNLOADING
    assert by_digest(held)[A1.digest].downloaded_bytes == 3 * MiB
    assert by_digest(done)[A1.digest].updated_at == at(3.0)  # the commit's own time
    assert done.image_ref == "reg.local/team/a:v1"
    assert {layer.state for layer in done.layers} == {LayerPhase.COMPLETED}


def test_without_any_image_record_the_pull_completes_under_its_digest(fake, clock, tracker):
    start_a(fake)
    poll(tracker, fake, clock, 1.5)
    fake.commit(A1, 3.0)
    fake.commit(A2, 3.0)
    poll(tracker, fake, clock, 3.1)
    done = poll(tracker, fake, clock, 3.6).pulls[0]
    assert done.image_ref == f"reg.local/team/a@{MA.digest}"
    assert {layer.state for layer in done.layers} == {LayerPhase.COMPLETED}


def test_an_ingest_gone_without_its_blob_fails_the_pull_once_confirmed(fake, clock, tracker):
    start_a(fake)
    fake.write(A1, 2 * MiB, 2.0)
    poll(tracker, fake, clock, 2.1)
    fake.abort(A1)
    fake.abort(A2)
    fake.remove(MA.digest, CFG_A.digest)  # the lease ended: the manifest is collected too

    unconfirmed = poll(tracker, fake, clock, 2.6).pulls[0]
    failed = poll(tracker, fake, clock, 3.1).pulls[0]

    assert unconfirmed.error is None
    assert by_digest(unconfirmed)[A1.digest].state is LayerPhase.DOWNLOADING
    assert failed.error == (f"layer {A1.digest} was aborted: its download stopped and the blob "
                            "is not in the content store")
    a1 = by_digest(failed)[A1.digest]
    assert (a1.state, a1.downloaded_bytes, a1.updated_at) == (LayerPhase.FAILED, 2 * MiB,
                                                              at(2.0))
    # what the manifest said is remembered after containerd deleted it
    assert [layer.digest for layer in failed.layers] == [MA.digest, CFG_A.digest, A1.digest,
                                                         A2.digest]
    assert by_digest(failed)[A2.digest].media_type == ZSTD
    assert poll(tracker, fake, clock, 3.6).pulls == ()


def test_a_manifest_removed_before_its_layers_started_cancels_the_pull(fake, clock, tracker):
    fake.commit_manifest(MB, 1.0)
    poll(tracker, fake, clock, 1.2)
    fake.remove(MB.digest)
    poll(tracker, fake, clock, 1.7)
    failed = poll(tracker, fake, clock, 2.2).pulls[0]
    assert failed.error == (f"the manifest {MB.digest} was removed from the content store "
                            "before the pull finished: the pull was cancelled")


def test_layers_in_the_store_before_the_pull_are_cached(fake, clock, tracker):
    base = blob("base", 5 * MiB)
    cfg, top = blob("c-config", 100, CONFIG), blob("top", MiB)
    fake.commit(base, 0.5)  # an earlier pull left it
    m = manifest(cfg, base, top)
    fake.commit_manifest(m, 1.0)
    fake.commit(cfg, 1.01, kind="config")
    fake.start(top, 1.02)

    state = poll(tracker, fake, clock, 1.3).pulls[0]

    assert by_digest(state)[base.digest] == LayerState(base.digest, LAYER, 5 * MiB, 5 * MiB,
                                                       True, state=LayerPhase.CACHED)
    assert by_digest(state)[top.digest].state is LayerPhase.DOWNLOADING


def test_a_fully_cached_image_is_a_pull_too(fake, clock, tracker):
    base = blob("base", 5 * MiB)
    fake.commit(base, 0.5)
    cfg = blob("d-config", 100, CONFIG)
    m = manifest(cfg, base)
    fake.commit_manifest(m, 1.0)
    fake.commit(cfg, 1.01, kind="config")
    fake.tag("reg.local/team/app:v2", m.desc, 1.02)

    state = poll(tracker, fake, clock, 1.3).pulls[0]

    assert state.image_ref == "reg.local/team/app:v2"
    assert [layer.state for layer in state.layers] == [LayerPhase.COMPLETED, LayerPhase.COMPLETED,
                                                      LayerPhase.CACHED]


def test_an_ingest_no_manifest_claims_is_in_the_pending_pull(fake, clock, tracker):
    stray = blob("stray", 2 * MiB)
    fake.start(stray, 1.0)
    fake.write(stray, MiB, 1.4)
    fake.start(blob("m", 900, MANIFEST), 1.3, kind="manifest")

    first = poll(tracker, fake, clock, 1.5)
    # a manifest being written is claimed once committed: it waits 2 s before counting
    later = poll(tracker, fake, clock, 3.6)

    (pending,) = first.pulls
    assert (pending.image_ref, pending.started_at, pending.digest) == (PENDING_IMAGE_REF,
                                                                       at(1.0), None)
    assert pending.layers == (LayerState(stray.digest, "", 2 * MiB, MiB, True,
                                         started_at=at(1.0), updated_at=at(1.4),
                                         state=LayerPhase.DOWNLOADING),)
    assert [layer.digest for layer in later.pulls[0].layers] == [stray.digest,
                                                                 blob("m", 900).digest]


def test_a_pending_ingest_that_commits_completes_and_leaves(fake, clock, tracker):
    stray = blob("stray", 2 * MiB)
    fake.start(stray, 1.0)
    poll(tracker, fake, clock, 1.5)
    fake.commit(stray, 2.0)
    done = poll(tracker, fake, clock, 2.1)
    assert done.pulls[0].layers[0] == LayerState(stray.digest, "", 2 * MiB, 2 * MiB, True,
                                                 started_at=at(1.0), updated_at=at(2.0),
                                                 state=LayerPhase.COMPLETED)
    assert poll(tracker, fake, clock, 2.6).pulls == ()


def test_an_index_pull_holds_the_platform_manifest_it_fetched(fake, clock, tracker):
    cfg, layer = blob("i-config", 100, CONFIG), blob("i-layer", MiB)
    amd64 = manifest(cfg, layer, declare_type=False)
    arm64 = blob("arm64-manifest", 700, MANIFEST)  # another platform: never fetched
    idx = index(amd64.desc, arm64)
    fake.commit_index(idx, 1.0)
    fake.start(amd64.desc, 1.05, kind="manifest")
    first = poll(tracker, fake, clock, 1.1).pulls[0]
    fake.commit(amd64.desc, 1.2, amd64.labels(), amd64.data, kind="manifest")
    fake.commit(cfg, 1.25, kind="config")
    fake.start(layer, 1.3)

    second = poll(tracker, fake, clock, 1.6).pulls[0]

    assert (first.digest, first.started_at, first.total_known) == (idx.digest, at(1.0), False)
    assert [(x.digest, x.media_type) for x in first.layers] == [(idx.digest, INDEX),
                                                                (amd64.digest, MANIFEST)]
    assert second.total_known
    # the manifest's own JSON has no mediaType: the index's descriptor says what it is
    assert [(x.digest, x.media_type, x.state) for x in second.layers] == [
        (idx.digest, INDEX, LayerPhase.COMPLETED),
        (amd64.digest, MANIFEST, LayerPhase.COMPLETED),
        (cfg.digest, CONFIG, LayerPhase.COMPLETED),
        (layer.digest, LAYER, LayerPhase.DOWNLOADING)]


def test_a_layer_both_images_need_counts_for_the_pull_that_started_first(fake, clock, tracker):
    shared = blob("shared", 2 * MiB)
    cfg1, cfg2 = blob("s1-config", 10, CONFIG), blob("s2-config", 20, CONFIG)
    m1, m2 = manifest(cfg1, shared), manifest(cfg2, shared, blob("own", MiB))
    fake.commit_manifest(m1, 1.0)
    fake.commit_manifest(m2, 1.1)
    fake.start(shared, 1.2)
    fake.write(shared, MiB, 1.7)

    first, second = poll(tracker, fake, clock, 1.8).pulls
    fake.commit(shared, 2.2)
    after = poll(tracker, fake, clock, 2.3).pulls

    assert by_digest(first)[shared.digest].downloaded_bytes == MiB
    assert by_digest(second)[shared.digest].downloaded_bytes == 0
    states = {p.digest: by_digest(p)[shared.digest].state for p in after}
    assert states == {m1.digest: LayerPhase.COMPLETED, m2.digest: LayerPhase.CACHED}


def test_a_frozen_ingest_is_reported_as_it_is(fake, clock, tracker):
    start_a(fake)
    fake.write(A1, 2 * MiB, 2.0)
    reports = [poll(tracker, fake, clock, t) for t in (2.1, 5.0, 9.0)]
    layers = {(by_digest(r.pulls[0])[A1.digest].downloaded_bytes,
               by_digest(r.pulls[0])[A1.digest].updated_at,
               by_digest(r.pulls[0])[A1.digest].state) for r in reports}
    assert layers == {(2 * MiB, at(2.0), LayerPhase.DOWNLOADING)}


def test_a_repull_after_a_finished_pull_is_a_new_pull(fake, clock, tracker):
    start_a(fake)
    poll(tracker, fake, clock, 1.5)
    fake.commit(A1, 2.0)
    fake.commit(A2, 2.0)
    fake.tag("reg.local/team/a:v1", MA.desc, 2.01)
    poll(tracker, fake, clock, 2.5)
    assert poll(tracker, fake, clock, 3.0).pulls == ()
    fake.remove(A2.digest)  # deleted by hand, then pulled again
    fake.start(A2, 10.0)

    again = poll(tracker, fake, clock, 10.2).pulls[0]

    assert (again.digest, again.started_at) == (MA.digest, at(10.0))
    assert by_digest(again)[A1.digest].state is LayerPhase.CACHED


def test_pulls_reported_through_the_engine_count_one_failure(fake, clock, tracker):
    eng = Engine(EngineConfig(stall_after_ns=30 * NS))
    start_a(fake)
    for t, offset in ((1.5, 0), (2.0, MiB), (2.5, 2 * MiB)):
        fake.write(A1, offset, t - 0.02)
        eng.ingest(poll(tracker, fake, clock, t))
    fake.abort(A1)
    fake.abort(A2)
    outs = [eng.ingest(poll(tracker, fake, clock, t)) for t in (3.0, 3.5, 4.0, 4.5)]
    failed = [e for out in outs for e in out.events if e.type.value == "pull.failed"]
    assert len(failed) == 1
    (status,) = eng.pulls()
    assert status.status.value == "failed"
    assert status.error is not None
    assert A1.digest in status.error
    assert status.image_ref == f"reg.local/team/a@{MA.digest}"


def test_parse_document_rejects_what_is_not_a_manifest():
    with pytest.raises(ValueError, match="neither"):
        parse_document("sha256:x", b'{"schemaVersion": 2}')
    with pytest.raises(ValueError, match="not JSON"):
        parse_document("sha256:x", b"\x00")
    assert parse_document("sha256:x", MA.data).children[2].media_type == ZSTD


# --- the loop --------------------------------------------------------------------------------


async def until(predicate) -> None:
    for _ in range(500):  # 5 s
        if predicate():
            return
        await asyncio.sleep(0.01)
    pytest.fail("not true after 5 s")


def test_the_loop_sends_nothing_while_containerd_is_away_and_counts_one_gap(fake):
    async def scenario() -> tuple[list[AgentReport], list[str], int]:
        gaps: list[str] = []
        sent: list[AgentReport] = []
        poller = ContainerdPoller(fake, "n1", interval=0.01, max_backoff=0.02,
                                  on_gap=gaps.append)

        async def sink(report: AgentReport) -> bool:
            sent.append(report)
            if len(sent) == 2:
                fake.down = True
            return True

        task = asyncio.create_task(poller.run(sink))
        await until(lambda: len(fake.calls) >= 12)
        during = len(sent)
        fake.down = False
        await until(lambda: len(sent) >= during + 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sent, gaps, during

    sent, gaps, during = asyncio.run(scenario())
    assert during == 2
    assert len(gaps) == 1
    assert "not answering" in gaps[0]
    assert [r.timestamp for r in sent] == sorted({r.timestamp for r in sent})


def test_the_loop_outlives_errors_of_containerd_and_a_broken_images_service():
    class Broken(FakeContainerd):
        failing = True

        def list_statuses(self):
            self.calls.append("ListStatuses")
            if self.failing:
                raise ContainerdError("containerd answered ListStatuses with INTERNAL")
            return super().list_statuses()

        def list_images(self, filters=()):
            raise ContainerdError("containerd answered Images.List with INTERNAL")

    broken = Broken()
    sent: list[AgentReport] = []

    async def scenario() -> int:
        poller = ContainerdPoller(broken, "n1", interval=0.01, max_backoff=0.01)

        async def sink(report: AgentReport) -> bool:
            sent.append(report)
            return True

        task = asyncio.create_task(poller.run(sink))
        await until(lambda: broken.calls.count("ListStatuses") >= 3)
        gaps = poller.gaps
        broken.failing = False
        start_a(broken)
        await until(lambda: len(sent) >= 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return gaps

    gaps = asyncio.run(scenario())
    assert gaps == 1  # three failed polls in a row are one gap, and the loop went on
    # without image names the pull is still reported, under its digest
    assert sent[-1].pulls[0].image_ref == f"reg.local/team/a@{MA.digest}"


def test_a_sink_that_raises_does_not_end_the_loop_and_nothing_is_acknowledged(fake):
    async def scenario() -> ContainerdPoller:
        poller = ContainerdPoller(fake, "n1", interval=0.01)
        poller.tracker.poll(fake)
        start_a(fake)

        async def sink(report: AgentReport) -> bool:
            raise RuntimeError("the collector is gone")

        task = asyncio.create_task(poller.run(sink))
        await until(lambda: poller.reports >= 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return poller

    poller = asyncio.run(scenario())
    assert poller.gaps == 0
    assert poller.reports >= 3


def test_a_gap_is_an_event_in_the_store_and_the_stream_and_a_metric(fake, tmp_path):
    with RunningCollector(tmp_path / "gap.duckdb") as live:
        collector = live.collector

        async def scenario() -> list[str]:
            sub = collector.subscribe()
            assert sub is not None
            poller = ContainerdPoller(fake, "n1", interval=0.01, max_backoff=0.02)
            task = asyncio.create_task(feed_collector(collector, poller))
            await until(lambda: poller.reports >= 2)
            fake.down = True
            await until(lambda: poller.gaps == 1)
            fake.down = False
            reports = poller.reports
            await until(lambda: poller.reports >= reports + 2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            types = []
            for event in b"".join(sub.chunks).split(b"\n\n")[:-1]:
                kind = json.loads(event.removeprefix(b"data: "))["type"]
                if kind.startswith("source."):
                    types.append(kind)
            collector.unsubscribe(sub)
            return types

        streamed = live.call(scenario())
        metrics = httpx.get(live.metrics_url).text
    assert streamed == ["source.unavailable", "source.available"]
    assert 'pulltrace_source_gaps_total{source="containerd"} 1.0' in metrics
    with Store(tmp_path / "gap.duckdb") as store:
        rows = store.con.execute(
            "SELECT type, node, status FROM events WHERE type LIKE 'source.%' ORDER BY ts"
        ).fetchall()
    assert rows == [("source.unavailable", "n1", "containerd"),
                    ("source.available", "n1", "containerd")]
