"""Engine semantics with hand-computed numbers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from collector.engine import Engine, EngineConfig
from collector.model import PENDING_IMAGE_REF, EventType, LayerPhase, PullStatus
from tests.collector.reports import at, digest, layer, pull, report

A, B = digest(0xA1), digest(0xB1)
MT = "application/vnd.oci.image.layer.v1.tar+gzip"


def only(pulls: list[PullStatus], image: str) -> PullStatus:
    found = [p for p in pulls if p.image_ref == image]
    assert len(found) == 1, [p.image_ref for p in pulls]
    return found[0]


def event_types(engine_out_list) -> list[str]:
    return [e.type.value for out in engine_out_list for e in out.events]


def test_two_images_on_one_node_one_finishing_does_not_dip_the_other():
    eng = Engine()
    for t, a, b in [(0, 0, 0), (1, 1_000_000, 2_000_000), (2, 2_000_000, 4_000_000)]:
        eng.ingest(report("n1", t, pull("img/a:1", 0, layer(A, a, 8_000_000)),
                          pull("img/b:1", 0, layer(B, b, 20_000_000))))
    a, b = only(eng.pulls(), "img/a:1"), only(eng.pulls(), "img/b:1")
    assert a.bytes_per_sec == pytest.approx(1_000_000)  # 2e6 B over 2 s
    assert b.bytes_per_sec == pytest.approx(2_000_000)  # 4e6 B over 2 s
    assert a.eta_seconds == pytest.approx(6.0)  # (8e6 - 2e6) / 1e6
    assert b.eta_seconds == pytest.approx(8.0)  # (20e6 - 4e6) / 2e6
    # image a's ingest is committed: it leaves the report
    out = eng.ingest(report("n1", 3, pull("img/b:1", 0, layer(B, 6_000_000, 20_000_000))))
    a, b = only(eng.pulls(), "img/a:1"), only(eng.pulls(), "img/b:1")
    assert a.status.value == "completed"
    assert a.downloaded_bytes == 8_000_000  # the last 6e6 arrived with the commit
    assert a.bytes_per_sec is None  # finished: adds nothing to the speed now
    assert b.bytes_per_sec == pytest.approx(2_000_000)  # 6e6 B over 3 s: no dip
    assert b.eta_seconds == pytest.approx(7.0)  # 14e6 / 2e6
    assert b.percent == pytest.approx(30.0)
    assert [e.type for e in out.events if e.pull.image_ref == "img/a:1"] == [
        EventType.LAYER_COMPLETED, EventType.PULL_COMPLETED]
    # the commit delivered the bytes never seen in the ingest
    fetched = sum(s.fetched_bytes for s in out.samples if s.digest == A)
    assert fetched == 6_000_000


def test_go_agent_ingests_merge_per_node_and_keep_speed_when_one_finishes():
    eng = Engine()

    def ingest(ref_digest: str, done: int, total: int, started: float):
        return pull(f"layer-{ref_digest}", started, layer(ref_digest, done, total),
                    total_known=False)

    eng.ingest(report("n1", 0, ingest(A, 0, 8_000_000, 0.5), ingest(B, 0, 20_000_000, 0.2)))
    eng.ingest(report("n1", 1, ingest(A, 1_000_000, 8_000_000, 0.5),
                      ingest(B, 2_000_000, 20_000_000, 0.2)))
    eng.ingest(report("n1", 2, ingest(A, 2_000_000, 8_000_000, 0.5),
                      ingest(B, 4_000_000, 20_000_000, 0.2)))
    merged = only(eng.pulls(), PENDING_IMAGE_REF)
    assert merged.started_at == at(0.2)  # the earliest ingest's start
    assert merged.layer_count == 2
    assert merged.bytes_per_sec == pytest.approx(3_000_000)  # 1e6 + 2e6
    eng.ingest(report("n1", 3, ingest(B, 6_000_000, 20_000_000, 0.2)))
    merged = only(eng.pulls(), PENDING_IMAGE_REF)
    assert merged.status.value == "active"
    assert merged.bytes_per_sec == pytest.approx(2_000_000)  # B's own rate, never 0
    assert merged.downloaded_bytes == 8_000_000 + 6_000_000  # finished layer keeps its bytes
    assert merged.layers_done == 1
    assert merged.eta_seconds == pytest.approx(7.0)  # 14e6 left / 2e6
    # all ingests gone: the merged pull completes
    eng.ingest(report("n1", 4))
    assert only(eng.pulls(), PENDING_IMAGE_REF).status.value == "completed"


def test_layer_restart_lower_never_gives_a_negative_or_frozen_rate():
    eng = Engine()
    rates = []
    for t, done in [(0, 0), (1, 3_000_000), (2, 1_000_000), (3, 2_000_000)]:
        out = eng.ingest(report("n1", t, pull("img:1", 0, layer(A, done, 9_000_000))))
        rates.append(out.samples[0].bytes_per_sec)
    assert rates == [None, pytest.approx(3_000_000), None, pytest.approx(1_000_000)]
    (row,) = [r for r in out.layers if r.digest == A]
    assert row.restarts == 1
    assert row.fetched_bytes == 3_000_000 + 1_000_000


def test_first_sight_is_a_baseline_not_a_jump():
    eng = Engine()
    out = eng.ingest(report("n1", 0, pull("img:1", -60, layer(A, 50_000_000, 90_000_000))))
    assert out.samples[0].fetched_bytes == 0
    assert out.samples[0].bytes_per_sec is None  # unknown, not 0
    assert out.progress[0].bytes_per_sec is None
    assert out.progress[0].eta_seconds is None
    out = eng.ingest(report("n1", 2, pull("img:1", -60, layer(A, 54_000_000, 90_000_000))))
    assert out.samples[0].fetched_bytes == 4_000_000
    assert out.samples[0].bytes_per_sec == pytest.approx(2_000_000)
    assert out.progress[0].eta_seconds == pytest.approx(18.0)  # 36e6 / 2e6


def test_rate_uses_updated_at_and_falls_between_steps():
    mib = 1 << 20
    eng = Engine()
    eng.ingest(report("n1", 0.5, pull("img:1", 0, layer(A, 0, 10 * mib, updated=0.0))))
    out = eng.ingest(report("n1", 1.5, pull("img:1", 0, layer(A, mib, 10 * mib, updated=1.0))))
    assert out.samples[0].bytes_per_sec == pytest.approx(mib)  # 1 MiB over 1 s of updatedAt
    assert out.samples[0].updated_at == at(1.0)
    # within twice the expected step time the last measured speed holds
    out = eng.ingest(report("n1", 3.0, pull("img:1", 0, layer(A, mib, 10 * mib, updated=1.0))))
    assert out.samples[0].bytes_per_sec == pytest.approx(mib)
    # well past it, the speed falls: 1 MiB over the 4 s since the first sample
    out = eng.ingest(report("n1", 4.0, pull("img:1", 0, layer(A, mib, 10 * mib, updated=1.0))))
    assert out.samples[0].bytes_per_sec == pytest.approx(mib / 4)
    # past the 10 s window nothing moved: 0
    out = eng.ingest(report("n1", 12.0, pull("img:1", 0, layer(A, mib, 10 * mib, updated=1.0))))
    assert out.samples[0].bytes_per_sec == 0


def test_stall_fires_once_at_its_onset_and_clears_on_progress():
    mib = 1 << 20
    eng = Engine(EngineConfig(stall_after_ns=30 * 10**9, stall_floor_bps=1024))
    outs = []
    for t in range(33):
        done = 0 if t == 0 else mib
        outs.append(eng.ingest(report("n1", t + 0.5, pull(
            "img:1", 0, layer(A, done, 10 * mib, updated=0.0 if t == 0 else 1.0)))))
    stalls = [e for out in outs for e in out.events if e.type is EventType.LAYER_STALLED]
    assert len(stalls) == 1
    # no byte since updatedAt 1.0: the 30 s window before 31.0 gained nothing
    assert stalls[0].timestamp == at(31.0)
    assert [e.timestamp for out in outs for e in out.events
            if e.type is EventType.PULL_STALLED] == [at(31.0)]
    assert only(eng.pulls(), "img:1").status.value == "stalled"
    out = eng.ingest(report("n1", 34, pull("img:1", 0, layer(A, 2 * mib, 10 * mib,
                                                              updated=33.9))))
    assert only(eng.pulls(), "img:1").status.value == "active"
    assert out.progress[0].status == "active"


def test_trickle_below_the_floor_is_a_stall():
    eng = Engine(EngineConfig(stall_after_ns=10 * 10**9, stall_floor_bps=1000))
    events = []
    for t in range(25):
        # 500 B/s: moving, but below a floor of 1000 B/s
        out = eng.ingest(report("n1", t, pull("img:1", 0, layer(A, 500 * t, 10**6))))
        events += [e for e in out.events if e.type is EventType.LAYER_STALLED]
    assert [e.timestamp for e in events] == [at(10)]  # first full 10 s window


def test_failed_pull_counts_once_however_often_reported():
    eng = Engine()
    eng.ingest(report("n1", 0, pull("img:1", 0, layer(A, 0, 10**6))))
    outs = [eng.ingest(report("n1", t, pull("img:1", 0, layer(A, 1000, 10**6),
                                            error="connection reset"))) for t in (1, 2, 3)]
    assert event_types(outs).count("pull.failed") == 1
    failed = only(eng.pulls(), "img:1")
    assert failed.status.value == "failed"
    assert failed.error == "connection reset"
    assert outs[1].samples == []  # the repeats change nothing


def test_failed_layer_state_fails_the_pull_with_a_message():
    eng = Engine()
    eng.ingest(report("n1", 0, pull("img:1", 0, layer(A, 0, 10**6), layer(B, 0, 10**6))))
    out = eng.ingest(report("n1", 1, pull("img:1", 0, layer(A, 5000, 10**6),
                                          layer(B, 0, 10**6, state=LayerPhase.FAILED))))
    (failed,) = [e for e in out.events if e.type is EventType.PULL_FAILED]
    assert failed.pull.error == f"layer {B} failed to download"
    assert {lay.status.value for lay in failed.pull.layers} == {"failed"}


def test_repull_is_a_new_pull_and_a_repeat_of_a_finished_one_changes_nothing():
    eng = Engine()
    eng.ingest(report("n1", 0, pull("img:1", 0, layer(A, 0, 1000))))
    eng.ingest(report("n1", 1, pull("img:1", 0, layer(A, 1000, 1000,
                                                        state=LayerPhase.COMPLETED))))
    (done,) = eng.pulls()
    assert done.status.value == "completed"
    again = eng.ingest(report("n1", 2, pull("img:1", 0, layer(A, 1000, 1000))))
    assert again.accepted
    assert (again.samples, again.events, again.pulls) == ([], [], [])
    repull = eng.ingest(report("n1", 3, pull("img:1", 2.5, layer(A, 0, 1000))))
    assert repull.events[0].type is EventType.PULL_STARTED
    ids = {p.id for p in eng.pulls()}
    assert len(ids) == 2


def test_cached_layers_are_counted_apart_from_fetched_bytes():
    eng = Engine()
    eng.ingest(report("n1", 0, pull("img:1", 0, layer(A, 0, 4_000_000),
                                    layer(B, 0, 6_000_000, state=LayerPhase.CACHED))))
    eng.ingest(report("n1", 2, pull("img:1", 0, layer(A, 2_000_000, 4_000_000),
                                    layer(B, 0, 6_000_000, state=LayerPhase.CACHED))))
    (status,) = eng.pulls()
    assert status.cached_bytes == 6_000_000
    assert status.downloaded_bytes == 2_000_000
    assert status.total_bytes == 10_000_000
    assert status.percent == pytest.approx(80.0)  # (2e6 + 6e6) / 10e6
    assert status.bytes_per_sec == pytest.approx(1_000_000)  # A alone
    assert status.eta_seconds == pytest.approx(2.0)
    assert status.layers_done == 1


def test_nodes_that_share_a_prefix_never_touch_each_other():
    eng = Engine()
    for node in ("n", "n:x"):
        eng.ingest(report(node, 0, pull("img:1", 0, layer(A, 0, 10**6))))
    eng.ingest(report("n", 1))  # n's pull is gone
    by_node = {p.node_name: p.status.value for p in eng.pulls()}
    assert by_node == {"n": "completed", "n:x": "active"}


def test_stale_node_ends_its_pulls_at_the_deadline():
    eng = Engine(EngineConfig(stale_after_ns=600 * 10**9))
    eng.ingest(report("quiet", 0, pull("img:1", 0, layer(A, 0, 10**6))))
    eng.ingest(report("busy", 10))
    before = eng.tick(at(599))
    # silent since 0: stalled at 30 s, but not yet stale
    assert [(e.type, e.timestamp) for e in before.events] == [
        (EventType.LAYER_STALLED, at(30)), (EventType.PULL_STALLED, at(30))]
    out = eng.tick(at(700))
    assert [(e.type, e.timestamp) for e in out.events] == [(EventType.PULL_STALE, at(600))]
    assert only(eng.pulls(), "img:1").status.value == "stale"


def test_old_or_repeated_reports_are_dropped_and_counted():
    eng = Engine()
    assert eng.ingest(report("n1", 5)).accepted
    dup, old = eng.ingest(report("n1", 5)), eng.ingest(report("n1", 4))
    assert (dup.accepted, dup.drop_reason) == (False, "duplicate")
    assert (old.accepted, old.drop_reason) == (False, "out_of_order")
    assert dict(eng.dropped) == {"duplicate": 1, "out_of_order": 1}
    assert eng.ingest(report("n2", 4)).accepted  # another node's clock is its own


def test_engine_imports_no_io():
    code = ("import sys, collector.engine; "
            "bad = [m for m in ('grpc', 'duckdb', 'asyncio', 'aiohttp') if m in sys.modules]; "
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == ""


def test_a_pull_with_a_digest_keeps_its_identity_when_its_name_becomes_a_tag():
    eng = Engine()
    manifest = digest(0xF0)
    by_digest = pull(f"reg.local/app@{manifest}", 0, layer(A, 0, 2_000_000))
    eng.ingest(report("n1", 0, dataclasses.replace(by_digest, digest=manifest)))
    tagged = pull("reg.local/app:1.0", 0, layer(A, 1_000_000, 2_000_000))
    eng.ingest(report("n1", 1, dataclasses.replace(tagged, digest=manifest)))
    (status,) = eng.pulls()
    assert status.image_ref == "reg.local/app:1.0"
    assert status.bytes_per_sec == pytest.approx(1_000_000)


def test_a_node_back_after_its_silence_ran_out_starts_over_without_a_tick():
    # Replay has no ticks: the node's own next report must end its stale pull, as live does.
    eng = Engine(EngineConfig(stale_after_ns=600 * 10**9))
    eng.ingest(report("n1", 0, pull("img:1", 0, layer(A, 0, 10**6))))
    out = eng.ingest(report("n1", 700, pull("img:1", 0, layer(A, 5000, 10**6))))
    assert [(e.type, e.timestamp) for e in out.events][:1] == [(EventType.PULL_STALE, at(600))]
    assert out.samples == []  # the stale pull is finished: its repeat changes nothing


def test_the_wait_before_an_ingests_first_byte_leaves_the_rate_once_two_steps_landed():
    # containerd stamps an ingest at offset 0 when it opens, before the request goes out; the
    # first 1 MiB step lands after the time to first byte (here 0.3 s) plus 0.5 s at 2 MiB/s.
    mib = 1 << 20
    eng = Engine()
    rates, fetched = [], 0
    for t, done, updated in [(0.1, 0, 0.0), (0.9, mib, 0.8), (1.4, 2 * mib, 1.3),
                             (1.9, 3 * mib, 1.8)]:
        out = eng.ingest(report("n1", t, pull("img:1", 0, layer(A, done, 8 * mib,
                                                                updated=updated))))
        rates.append(out.samples[0].bytes_per_sec)
        fetched += out.samples[0].fetched_bytes
    assert rates == [
        None,
        pytest.approx(mib / 0.8),  # one step: nothing tells the wait from the transfer yet
        pytest.approx(2 * mib),  # 1 MiB over the 0.5 s between the two steps
        pytest.approx(2 * mib),  # 2 MiB over 1 s
    ]
    assert fetched == 3 * mib  # the bytes of the first step still count as fetched


def test_an_updated_at_after_the_report_counts_as_the_report_time():
    eng = Engine()
    eng.ingest(report("n1", 0, pull("img:1", 0, layer(A, 0, 10**7, updated=3600 * 24 * 365))))
    eng.ingest(report("n1", 1, pull("img:1", 0, layer(A, 1_000_000, 10**7, updated=0.9))))
    out = eng.ingest(report("n1", 2, pull("img:1", 0, layer(A, 2_000_000, 10**7, updated=1.9))))
    # points (0, 0), (0.9, 1e6), (1.9, 2e6): the opening is left out once two steps landed
    assert out.samples[0].bytes_per_sec == pytest.approx(1_000_000)
    assert out.samples[0].status == "downloading"


def test_a_node_whose_clock_runs_ahead_moves_no_other_node():
    eng = Engine(EngineConfig(stale_after_ns=600 * 10**9, stall_after_ns=30 * 10**9))

    def arrived(rep, seconds):
        return dataclasses.replace(rep, received_at=at(seconds))

    eng.ingest(arrived(report("a", 0, pull("img:1", 0, layer(A, 0, 10**7))), 0))
    eng.ingest(arrived(report("a", 1, pull("img:1", 0, layer(A, 1_000_000, 10**7))), 1))
    # b's clock is 11 minutes ahead, but its report arrives 1.5 s after a's first
    out = eng.ingest(arrived(report("b", 661.5, pull("img:2", 661, layer(B, 0, 10**7))), 1.5))
    assert [e.type for e in out.events if e.node_name == "a"] == []
    out = eng.ingest(arrived(report("a", 2, pull("img:1", 0, layer(A, 2_000_000, 10**7))), 2))
    a = next(p for p in eng.pulls() if p.node_name == "a")
    assert a.status.value == "active"
    assert a.bytes_per_sec == pytest.approx(1_000_000)
    # 700 s of silence by the collector's clock: both are stale, each at its own deadline
    out = eng.tick(at(702))
    assert [(e.node_name, e.timestamp) for e in out.events
            if e.type is EventType.PULL_STALE] == [("a", at(602)), ("b", at(1261.5))]


def test_without_progress_events_lifecycle_events_and_rows_are_unchanged():
    def run(progress_events: bool) -> tuple[Engine, list]:
        eng = Engine()
        eng.progress_events = progress_events
        steps = [(0, layer(A, 0, 8_000_000), layer(B, 0, 20_000_000)),
                 (1, layer(A, 2_000_000, 8_000_000), layer(B, 4_000_000, 20_000_000)),
                 (2, layer(A, 8_000_000, 8_000_000, state=LayerPhase.COMPLETED),
                  layer(B, 8_000_000, 20_000_000)),
                 (3, layer(A, 8_000_000, 8_000_000, state=LayerPhase.COMPLETED),
                  layer(B, 20_000_000, 20_000_000, state=LayerPhase.COMPLETED))]
        return eng, [eng.ingest(report("n1", t, pull("img/a:1", 0, a, b)))
                     for t, a, b in steps]

    on_engine, on = run(True)
    off_engine, off = run(False)

    def types(out) -> list[tuple[str, str | None]]:
        return [(e.type.value, e.digest) for e in out.events]

    assert [types(out) for out in on] == [
        [("pull.started", None), ("layer.started", A), ("layer.started", B),
         ("pull.progress", None)],
        [("layer.progress", A), ("layer.progress", B), ("pull.progress", None)],
        [("layer.completed", A), ("layer.progress", B), ("pull.progress", None)],
        [("layer.completed", B), ("pull.completed", None)]]
    assert [types(out) for out in off] == [
        [("pull.started", None), ("layer.started", A), ("layer.started", B)],
        [],
        [("layer.completed", A)],
        [("layer.completed", B), ("pull.completed", None)]]
    for with_, without in zip(on, off, strict=True):
        lifecycle = [e.to_json() for e in with_.events if not e.type.endswith(".progress")]
        assert [e.to_json() for e in without.events] == lifecycle
        assert without.samples == with_.samples
        assert without.progress == with_.progress
        assert without.pulls == with_.pulls
        assert without.layers == with_.layers
        assert without.event_rows() == with_.event_rows()
    assert [p.to_json() for p in off_engine.pulls()] == [p.to_json() for p in on_engine.pulls()]
    # the completed event's snapshot is the full one, layers and all
    completed = off[3].events[-1].pull
    assert [(v.digest, v.status.value) for v in completed.layers] == [
        (A, "completed"), (B, "completed")]
