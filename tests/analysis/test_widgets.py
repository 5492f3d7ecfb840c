"""The live dashboard and the replay player, driven from code (no browser)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from pulltrace_analysis import (
    InProcessCollector,
    LiveDashboard,
    ReplayPlayer,
    connect,
)
from pulltrace_analysis.recording import from_outputs
from pulltrace_analysis.widgets.render import Headline
from tests.analysis.small import APP, DB, SLOW, reports
from tests.analysis.test_frames import t
from tests.analysis.test_load import assert_same


def status(node: str, image: str, state: str, speed: float | None, pct: float = 50.0,
           eta: float | None = 10.0) -> dict:
    return {"nodeName": node, "imageRef": image, "status": state, "percent": pct,
            "bytesPerSec": speed, "etaSeconds": eta, "downloadedBytes": 5_000_000,
            "totalBytes": 10_000_000}


class FakeSource:
    def __init__(self, *answers) -> None:
        self.answers = list(answers)

    def pulls(self):
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_headline_table_and_chart_are_aggregates(rec):
    source = FakeSource(
        [status("n1", "reg/a:1", "active", 1_500_000), status("n2", "reg/b:1", "active", 500_000),
         status("n2", "<b>reg/c:1</b>", "stalled", 0.0), status("n1", "reg/d:1", "failed", None)],
        [status("n1", "reg/a:1", "active", 3_000_000)])
    dash = LiveDashboard(source, start=False)
    assert dash.refresh() == Headline(active=3, stalled=1, failed=1, bytes_per_sec=2_000_000)
    assert dash.refresh() == Headline(active=1, stalled=0, failed=0, bytes_per_sec=3_000_000)
    got = {trace.name: list(trace.y) for trace in dash.figure.data}
    assert got == {"all nodes": [2.0, 3.0], "n1": [1.5, 3.0], "n2": [0.5, 0.0]}
    assert len(dash.figure.data[0].x) == 2
    assert "3.00 MB/s" in dash.headline.value
    assert "reg/a:1" in dash.table.value
    assert dash.refreshes == 2


def test_names_from_the_network_are_escaped():
    dash = LiveDashboard(FakeSource([status("n<1>", "<script>x</script>", "active", 1.0)]),
                         start=False)
    dash.refresh()
    assert "<script>" not in dash.table.value
    assert "&lt;script&gt;x&lt;/script&gt;" in dash.table.value
    assert "n&lt;1&gt;" in dash.table.value


def test_the_table_shows_short_image_names_and_the_full_one_on_hover():
    image = "127.0.0.1:5000/demo/db@sha256:" + "c1" * 32
    dash = LiveDashboard(FakeSource([status("n1", image, "active", 1.0)]), start=False)
    dash.refresh()
    assert f'title="{image}">demo/db@{"c1" * 6}</span>' in dash.table.value


def test_an_unreachable_source_is_reported_not_raised():
    dash = LiveDashboard(FakeSource(ConnectionError("cannot read http://x/api/v1/pulls")),
                         start=False)
    assert dash.refresh() is None
    assert "cannot read http://x/api/v1/pulls" in dash.status.value
    assert dash.refreshes == 0


def test_refreshes_at_most_twice_a_second_and_stops_cleanly():
    with pytest.raises(ValueError, match="at most twice a second"):
        LiveDashboard(FakeSource([]), interval=0.2)
    dash = LiveDashboard(FakeSource([]), interval=0.5)
    deadline = time.monotonic() + 10
    while dash.refreshes < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    dash.stop()
    assert not dash.running
    count = dash.refreshes
    time.sleep(0.7)
    assert dash.refreshes == count
    assert dash.status.value.endswith("stopped")


def test_in_process_collector_fed_the_recording(rec, tmp_path):
    with InProcessCollector(tmp_path / "live.duckdb", tick_interval=3600) as live:
        live.feed(reports(), to_now=False)
        assert live.wait(timeout=60) == 15
        by_url = LiveDashboard(live.url, start=False)
        in_process = LiveDashboard(live, start=False)
        final = Headline(active=0, stalled=0, failed=1, bytes_per_sec=0.0)
        assert by_url.refresh() == final
        assert in_process.refresh() == final
        assert DB in in_process.table.value
        assert_same(rec, connect(live.url))
    assert not live.feeding


def test_in_process_feed_paces_the_reports():
    with InProcessCollector(tick_interval=3600) as live:
        started = time.monotonic()
        live.feed(reports(), within=0.5)  # 34 s of reports in half a second
        live.wait(timeout=30)
        assert time.monotonic() - started >= 0.45
        with pytest.raises(ValueError, match="within must be above zero"):
            live.feed(reports(), within=0)


def test_player_shows_the_moment(rec):
    player = ReplayPlayer(rec)
    assert (player.start, player.end) == (t(0), t(34))
    assert player.slider.max == 34
    player.seek(2)
    assert player.moment == t(2)
    assert player.clock.value == f"{t(2):%Y-%m-%d %H:%M:%S} UTC (+2 s)"
    # At 2 s: app at 3,000,000 B/s, db and slow at 1,000,000 (their last rows, 1.5 and 1).
    assert Headline.of(player.lines()) == Headline(active=3, stalled=0, failed=0,
                                                   bytes_per_sec=5_000_000)
    assert "5.00 MB/s" in player.headline.value
    # fetched by 2 s: A 2,500,000 + C 1,000 + B 1,000,000 + S 1,000,000
    assert "4.5 MB" in player.headline.value
    for image in (APP, DB, SLOW):
        assert image in player.table.value
    assert player.throughput.layout.shapes[0].x0 == t(2)
    assert player.waterfall.layout.shapes[0].x0 == 2.0
    player.seek(t(32))
    assert Headline.of(player.lines()) == Headline(active=1, stalled=1, failed=1,
                                                   bytes_per_sec=0.0)
    assert "layer stalls so far</div><div style=\"font-size:1.6em;color:#222\">1" in (
        player.headline.value)
    player.seek(1_000)
    assert player.moment == t(34)


def test_player_filters(rec):
    player = ReplayPlayer(rec)
    player.node.value = "n2"
    assert [trace.name for trace in player.throughput.data] == ["n2"]
    assert player.view.pulls["image_ref"].to_list() == [DB]
    assert all(DB in label for trace in player.waterfall.data for label in trace.y)
    player.node.value = None
    player.media_type.value = "application/vnd.oci.image.config.v1+json"
    assert player.view.layers.height == 1
    player.seek(1)
    assert [line.image_ref for line in player.lines()] == [APP]


def test_player_speed_is_paced_to_two_steps_a_second(rec):
    player = ReplayPlayer(rec, speed=1)
    assert (player.play.step, player.play.interval) == (1, 1000)  # 1 s of recording a second
    player.speed.value = 10
    assert (player.play.step, player.play.interval) == (5, 500)
    player.speed.value = 120
    assert (player.play.step, player.play.interval) == (60, 500)
    coarse = ReplayPlayer(rec, step=timedelta(seconds=5), speed=2)
    assert (coarse.play.step, coarse.play.interval, coarse.slider.max) == (1, 2500, 7)


def test_player_needs_something_to_replay():
    with pytest.raises(ValueError, match="holds no samples"):
        ReplayPlayer(from_outputs([]))
