"""Replay: the recording through the engine as timed frames, the same numbers at any speed."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta

import polars as pl
import pytest

from collector.records import Output
from pulltrace_analysis.recording import from_outputs
from pulltrace_analysis.replay import EPOCH, duration_ns, frames, paced, replay
from tests.analysis.small import APP, DB, SLOW, T0, S, reports
from tests.analysis.test_load import assert_same

NS = 1_000_000_000


def snapshot(frame):
    return {p.image_ref: (p.status.value, p.bytes_per_sec, p.eta_seconds, p.downloaded_bytes)
            for p in frame.pulls}


def test_frames_every_second_from_the_first_report_to_the_last(recording_path):
    got = list(frames(recording_path, every="1s"))
    assert [f.index for f in got] == list(range(35))
    assert [f.at for f in got] == [T0 + k * NS for k in range(35)]
    assert got[0].time.isoformat() == "2023-11-14T22:13:20"
    at_two = snapshot(got[2])
    # The numbers the collector showed at 2 s: app at 3,000,000 B/s, 0.5 s left.
    assert at_two[APP] == ("active", 3e6, 0.5, 2_501_000)  # A and C; K is cached
    assert at_two[DB][0] == "active"
    assert at_two[SLOW][0] == "active"
    assert snapshot(got[3])[DB][0] == "failed"
    last = snapshot(got[-1])
    assert {k: v[0] for k, v in last.items()} == {APP: "completed", DB: "failed",
                                                  SLOW: "completed"}


def test_the_frames_hold_every_row_the_collector_records(rec, recording_path):
    outputs = [f.output for f in frames(recording_path, every="3s", tick=False)]
    assert_same(rec, from_outputs(outputs))


def test_ticking_notices_the_stall_between_reports_as_the_live_collector_does(
        rec, recording_path):
    ticked = from_outputs([f.output for f in frames(recording_path, every="1s")])
    for name in ("pulls", "layers", "events"):  # the stall's onset is 31 either way
        assert getattr(ticked, name).equals(getattr(rec, name)), name
    # The tick at 31 marks S stalled before the report at 31.5, so that report's sample
    # says so, and the tick adds the pull's progress row at 31.
    changed = ticked.samples.filter(pl.col("status") != rec.samples["status"])
    assert changed.select("ts", "digest", "status").rows() == [(at31_5(), S, "stalled")]
    assert ticked.progress.height == rec.progress.height + 1
    extra = ticked.progress.filter(pl.col("ts") == at31())
    assert extra.select("ts", "image_ref", "status").rows() == [(at31(), SLOW, "stalled")]


def at31() -> datetime:
    return EPOCH + timedelta(microseconds=(T0 + 31 * NS) // 1000)


def at31_5() -> datetime:
    return EPOCH + timedelta(microseconds=(T0 + 31_500_000_000) // 1000)


def test_paced_frames_are_due_at_speed_times_real_time(recording_path):
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    got = list(paced(frames(recording_path, every="2s"), 4.0, clock=lambda: now[0],
                     sleep=sleep))
    assert len(got) == 18  # 0, 2, ... 34
    assert waits == pytest.approx([0.5] * 17)  # 2 s of recording at 4x
    with pytest.raises(ValueError, match="speed must be above zero"):
        list(paced(iter(got), 0))


def test_replay_at_any_speed_gives_the_same_frames(recording_path):
    fast = [snapshot(f) for f in replay(recording_path, every="1s")]
    started = time.monotonic()
    timed = [snapshot(f) for f in replay(recording_path, every="1s", speed=340.0)]
    assert time.monotonic() - started >= 34 / 340 - 0.01
    assert timed == fast
    assert replay(reports(), speed=math.inf) is not None


def test_steps():
    assert duration_ns("500ms") == NS // 2
    assert duration_ns(2) == 2 * NS
    assert duration_ns(timedelta(minutes=1)) == 60 * NS
    with pytest.raises(ValueError, match="longer than zero"):
        duration_ns("0s")
    with pytest.raises(ValueError, match="not a duration"):
        duration_ns("soon")


def test_an_empty_source_gives_no_frames():
    assert list(frames([])) == []
    assert Output().samples == []
