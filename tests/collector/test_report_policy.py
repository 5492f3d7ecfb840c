"""What the collector does with reports that are well formed but odd: dated far from its
clock, or with more bytes downloaded than the layer's size. Hand-computed figures.
"""

from __future__ import annotations

import dataclasses
import math
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.engine import Engine
from collector.errors import ReportError
from collector.model import (
    MAX_AHEAD_NS,
    AgentReport,
    EventType,
    LayerPhase,
    LayerState,
    PullState,
    PullStatus,
    check_clock,
    parse_report,
)
from collector.records import Output
from collector.timefmt import NS, format_rfc3339
from tests.collector.malformed import FIXED
from tests.collector.reports import at, digest, layer, pull, report

A = digest(0xA1)
DAY = 24 * 3600 * NS
YEAR = 365 * DAY


def arrived(rep: AgentReport, seconds: float) -> AgentReport:
    return dataclasses.replace(rep, received_at=at(seconds))


def post(url: str, doc: dict) -> httpx.Response:
    return httpx.post(url + "/api/v1/report", json=doc, timeout=10)


def doc(node: str, started: int, ts: int, done: int) -> dict:
    """A report of one pull of one 10 MB layer, timed by the node's clock."""
    lay = {"digest": A, "totalBytes": 10_000_000, "downloadedBytes": done,
           "updatedAt": format_rfc3339(ts)}
    return {"nodeName": node, "timestamp": format_rfc3339(ts),
            "pulls": [{"imageRef": "img:1", "startedAt": format_rfc3339(started),
                       "totalKnown": True, "layers": [lay]}]}


# --- clocks ------------------------------------------------------------------------------


def test_check_clock_allows_a_day_ahead_and_any_time_behind():
    now = at(0)
    check_clock(report("n", 0), now)
    check_clock(dataclasses.replace(report("n", 0), timestamp=now + MAX_AHEAD_NS), now)
    check_clock(dataclasses.replace(report("n", 0), timestamp=now - 30 * YEAR), now)
    with pytest.raises(ReportError) as caught:
        check_clock(dataclasses.replace(report("n", 0), timestamp=now + MAX_AHEAD_NS + 1), now)
    assert caught.value.field == "timestamp"
    assert str(caught.value) == (
        "timestamp: 2023-11-15T22:13:20.000000001Z is 24.0 hours ahead of the collector's "
        "clock (2023-11-14T22:13:20Z); reports over 24 hours ahead are refused: set the "
        "node's clock (NTP), or the collector's")
    with pytest.raises(ReportError, match=r"is 365 days ahead of the collector's clock"):
        check_clock(dataclasses.replace(report("n", 0), timestamp=now + YEAR), now)


def test_a_report_a_year_ahead_is_refused_and_the_node_is_heard_after(server, clock):
    now = time.time_ns()
    resp = post(server.url, doc("n1", now + YEAR, now + YEAR, 1_000_000))
    assert resp.status_code == 400
    assert resp.text.startswith("invalid report: timestamp: ")
    assert "365 days ahead of the collector's clock" in resp.text
    assert httpx.get(server.url + "/api/v1/pulls").json()["pulls"] == []
    # Had it been accepted, every later report of n1 would be older than it, and dropped.
    clock.advance(1)
    assert post(server.url, doc("n1", now - NS, now, 1_000_000)).status_code == 200
    clock.advance(1)
    assert post(server.url, doc("n1", now - NS, now + NS, 3_000_000)).status_code == 200
    (listed,) = httpx.get(server.url + "/api/v1/pulls").json()["pulls"]
    assert (listed["status"], listed["downloadedBytes"]) == ("active", 3_000_000)
    assert listed["bytesPerSec"] == pytest.approx(2_000_000)  # 2e6 B in the node's 1 s
    # A node half a day ahead (a time-zone mistake) is within the day: heard.
    assert post(server.url, doc("n2", now + DAY // 2, now + DAY // 2, 0)).status_code == 200


def test_a_node_a_year_behind_is_heard_and_timed_by_its_own_clock(server, clock):
    then = time.time_ns() - YEAR
    assert post(server.url, doc("old", then - NS, then, 1_000_000)).status_code == 200
    clock.advance(1)
    assert post(server.url, doc("old", then - NS, then + 2 * NS, 5_000_000)).status_code == 200
    (listed,) = httpx.get(server.url + "/api/v1/pulls").json()["pulls"]
    assert listed["status"] == "active"
    assert listed["startedAt"] == format_rfc3339(then - NS)  # as the node said
    assert listed["bytesPerSec"] == pytest.approx(2_000_000)  # 4e6 B in its 2 s
    assert listed["etaSeconds"] == pytest.approx(2.5)  # 5e6 left / 2e6


def test_a_clock_that_jumps_ahead_does_not_end_its_own_nodes_pulls():
    eng = Engine()
    eng.ingest(arrived(report("a", 0, pull("img:1", 0, layer(A, 1_000_000, 10**7,
                                                               updated=0))), 0))
    # The node's clock jumps 30 min ahead between two reports that arrive 1 s apart: the
    # node was silent for 1 s, not for longer than the stale time (10 min).
    jumped = 1 + 1800
    out = eng.ingest(arrived(report("a", jumped, pull("img:1", 0, layer(
        A, 2_000_000, 10**7, updated=jumped))), 1))
    assert EventType.PULL_STALE not in [e.type for e in out.events]
    (status,) = eng.pulls()
    assert status.status.value != "stale"
    # Rates follow the node's own clock: 1e6 B over its 1801 s.
    assert status.bytes_per_sec == pytest.approx(1_000_000 / 1801)
    # Silent from then on: stale 600 s after its last report, on the collector's clock.
    assert eng.tick(at(1 + 599)).events == []
    out = eng.tick(at(1 + 601))
    assert [(e.type, e.timestamp) for e in out.events] == [
        (EventType.PULL_STALE, at(jumped + 600))]


def test_a_far_future_updated_at_neither_freezes_the_rate_nor_keeps_the_pull():
    eng = Engine()
    eng.ingest(arrived(report("a", 0, pull("img:1", 0, layer(A, 1_000_000, 10**7,
                                                               updated=0))), 0))
    out = eng.ingest(arrived(report("a", 1, pull("img:1", 0, layer(
        A, 2_000_000, 10**7, updated=1 + 365 * 24 * 3600))), 1))
    assert out.samples[0].updated_at == at(1)  # no later than the report it came in
    eng.ingest(arrived(report("a", 2, pull("img:1", 0, layer(A, 4_000_000, 10**7,
                                                               updated=2))), 2))
    (status,) = eng.pulls()
    # points (0, 1e6), (1, 2e6), (2, 4e6): 3e6 B over 2 s; a point a year ahead would
    # have swallowed the last one and frozen the rate
    assert status.bytes_per_sec == pytest.approx(1_500_000)
    assert status.eta_seconds == pytest.approx(4.0)  # 6e6 left / 1.5e6
    out = eng.tick(at(2 + 601))
    assert [(e.type, e.timestamp) for e in out.events] == [(EventType.PULL_STALE, at(602))]
    assert eng.pulls()[0].status.value == "stale"


# --- more bytes than the size --------------------------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"totalBytes": 100, "downloadedBytes": 200},
     "pulls[0].layers[0].downloadedBytes: 200 exceeds totalBytes 100"),
    ({"totalBytes": 100, "downloadedBytes": 101, "totalKnown": True},
     "pulls[0].layers[0].downloadedBytes: 101 exceeds totalBytes 100"),
    ({"totalBytes": 0, "downloadedBytes": 1, "totalKnown": True},
     "pulls[0].layers[0].downloadedBytes: 1 exceeds totalBytes 0"),
])
def test_more_bytes_than_a_known_size_is_refused(server, fields, message):
    body = doc("n", at(0), at(0), 0)
    body["pulls"][0]["layers"][0] = {"digest": A} | fields
    resp = post(server.url, body)
    assert (resp.status_code, resp.text) == (400, f"invalid report: {message}\n")
    assert httpx.get(server.url + "/api/v1/pulls").json()["pulls"] == []


def test_more_bytes_than_an_unknown_size_is_kept_but_no_share_is_shown():
    eng = Engine()

    def step(t: float, done: int, total: int, known: bool) -> PullStatus:
        lay = LayerState(A, total_bytes=total, downloaded_bytes=done, total_known=known,
                         updated_at=at(t))
        eng.ingest(report("n", t, PullState("img:1", at(0), (lay,), total_known=True)))
        (status,) = eng.pulls()
        return status

    # The size is not known yet; totalBytes is only what the reporter guessed.
    first = step(0, 500, 100, known=False)
    assert (first.downloaded_bytes, first.total_bytes) == (500, 100)
    assert (first.percent, first.eta_seconds, first.layers[0].percent) == (None, None, None)
    second = step(1, 600, 1000, known=True)
    assert second.percent == pytest.approx(60.0)
    assert second.bytes_per_sec == pytest.approx(100.0)  # 100 B in 1 s
    assert second.eta_seconds == pytest.approx(4.0)  # 400 left / 100
    # A later report that contradicts the known size still never shows more than 100%
    # or a negative ETA.
    third = step(2, 1500, 0, known=False)
    assert third.percent == pytest.approx(100.0)
    assert third.layers[0].percent == pytest.approx(100.0)
    assert third.eta_seconds == pytest.approx(0.0)


# --- whatever valid reports arrive, the figures stay sane -----------------------------------

SECOND = NS
GAPS = [NS // 1000, SECOND, 31 * SECOND, 11 * 60 * SECOND, YEAR]
SKEWS = [0, -YEAR, 1800 * SECOND, DAY - SECOND]
BYTES = [0, 50, 100, 500, 1_000_000, 12_000_000]


@st.composite
def layer_states(draw: st.DrawFn, ts: int) -> LayerState:
    known = draw(st.booleans())
    total = draw(st.sampled_from([0, 100, 1_000_000, 10_000_000]))
    done = draw(st.sampled_from(BYTES))
    if known:
        done = min(done, total)
    offset = draw(st.sampled_from([None, -YEAR, -SECOND, 0, SECOND, YEAR]))
    return LayerState(draw(st.sampled_from(["d1", "d2", "d3"])), total_bytes=total,
                      downloaded_bytes=done, total_known=known,
                      updated_at=None if offset is None else ts + offset,
                      state=draw(st.none() | st.sampled_from(LayerPhase)))


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, AgentReport | int]]:
    skew = {"a": draw(st.sampled_from(SKEWS)), "b": draw(st.sampled_from(SKEWS))}
    arrival = at(0)
    steps: list[tuple[str, AgentReport | int]] = []
    for _ in range(draw(st.integers(1, 10))):
        arrival += draw(st.sampled_from(GAPS))
        if draw(st.integers(0, 4)) == 0:
            steps.append(("tick", arrival))
            continue
        node = draw(st.sampled_from(["a", "b"]))
        ts = arrival + skew[node]
        pulls = tuple(
            PullState(draw(st.sampled_from(["img:1", "img:2", "layer-sha256:0a"])),
                      draw(st.sampled_from([None, at(0)])),
                      tuple(draw(st.lists(layer_states(ts), max_size=3,
                                          unique_by=lambda s: s.digest))),
                      total_known=draw(st.booleans()),
                      error=draw(st.sampled_from([None, None, "boom"])))
            for _ in range(draw(st.integers(0, 2))))
        steps.append(("report", AgentReport(node, ts, pulls, received_at=arrival)))
    return steps


def _sane(status: PullStatus) -> None:
    for share in [status.percent, *(lay.percent for lay in status.layers)]:
        assert share is None or 0.0 <= share <= 100.0
    for speed in [status.bytes_per_sec, *(lay.bytes_per_sec for lay in status.layers)]:
        assert speed is None or (math.isfinite(speed) and speed >= 0.0)
    assert status.eta_seconds is None or (math.isfinite(status.eta_seconds)
                                          and status.eta_seconds >= 0.0)
    assert status.downloaded_bytes >= 0
    assert status.cached_bytes >= 0


@settings(FIXED, max_examples=150)
@given(histories())
def test_no_history_of_valid_reports_shows_over_100_percent_or_a_negative_eta(steps):
    eng = Engine()
    for _, item in steps:
        out: Output = eng.tick(item) if isinstance(item, int) else eng.ingest(item)
        for event in out.events:
            _sane(event.pull)
        for row in out.progress:
            assert row.percent is None or 0.0 <= row.percent <= 100.0
            assert row.eta_seconds is None or row.eta_seconds >= 0.0
        for status in eng.pulls():
            _sane(status)
        # the count kept as pulls come and go is the count of those in progress
        assert eng.active_count() == sum(
            1 for p in eng.pulls() if p.status.value in ("active", "stalled"))
        # Each report is one the decoder accepts: one an agent could have sent.
        if isinstance(item, AgentReport):
            assert parse_report(item.dumps()) == item
