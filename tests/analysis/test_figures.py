"""The figures of the small recording hold the numbers of its frames (see test_frames.py)."""

from __future__ import annotations

import pytest

from pulltrace_analysis import figures, frames
from pulltrace_analysis.recording import from_outputs
from tests.analysis.small import APP, CONFIG_MT, DB, LAYER_MT, SLOW, A, B, C, K, S
from tests.analysis.test_frames import t


def traces(fig) -> dict:
    return {trace["name"]: trace for trace in fig.to_dict()["data"]}


def layout(fig) -> dict:
    return fig.to_dict()["layout"]


def test_throughput_by_node_in_mb_per_second(rec):
    fig = figures.throughput(rec)
    got = traces(fig)
    assert list(got) == ["n1", "n2", "n3"]
    assert list(got["n1"]["x"]) == [t(0), t(1), t(2), t(3)]
    assert list(got["n1"]["y"]) == [1.001, 1.95, 0.65, 0.4]
    assert list(got["n2"]["y"]) == [0.5, 0.5]
    assert list(got["n3"]["y"]) == [1.0] + [0.1] * 32 + [0.8]
    assert [list(c) for c in got["n2"]["customdata"]] == [["n2"], ["n2"]]
    assert "node %{customdata[0]}" in got["n2"]["hovertemplate"]
    assert "MB/s" in got["n2"]["hovertemplate"]
    lay = layout(fig)
    assert lay["title"]["text"] == "Fetched throughput, by node (1 s buckets)"
    assert (lay["xaxis"]["title"]["text"], lay["yaxis"]["title"]["text"]) == (
        "time (UTC)", "MB/s")


def test_throughput_by_pull_names_node_and_image(rec):
    got = traces(figures.throughput(rec, by="pull"))
    assert set(got) == {f"{APP} on n1", f"{DB} on n2", f"{SLOW} on n3"}
    app = got[f"{APP} on n1"]
    assert list(app["y"]) == [1.001, 1.95, 0.65, 0.4]
    assert list(app["customdata"][0]) == ["n1", APP]
    assert "image %{customdata[1]}" in app["hovertemplate"]
    total = traces(figures.throughput(rec, by="total", every="2s"))["all nodes"]
    # [0, 2): 2,501,000 + 2,550,000 B over 2 s; [2, 4): 750,000 + 500,000.
    assert list(total["y"])[:2] == [2.5255, 0.625]


def test_media_types_in_mb_and_seconds(rec):
    fig = figures.media_types(rec)
    mb, seconds = fig.to_dict()["data"]
    assert list(mb["y"]) == [LAYER_MT, CONFIG_MT]
    assert list(mb["x"]) == [10.0, 0.001]
    assert list(seconds["x"]) == [40.0, 0.5]
    assert list(mb["customdata"][0]) == ["layer", 4, 1, 0.25]  # kind, layers, cached, MB/s
    lay = layout(fig)
    assert lay["title"]["text"] == "Where the bytes and the time go, by media type"
    assert lay["xaxis"]["title"]["text"] == "MB"
    assert lay["xaxis2"]["title"]["text"] == "s (summed over layers)"


def test_waterfall_of_one_pull(rec):
    fig = figures.waterfall(rec, pull=APP)
    got = traces(fig)
    assert list(got) == ["waiting for first byte", "completed", "cached"]
    label = {d: f"{d[7:19]} ({kind})" for d, kind in ((A, "layer"), (C, "config"),
                                                      (K, "layer"))}
    waiting, done, cached = got.values()
    # A: opened at 0, first bytes at 1, committed at 4; C: 0, 0.5, 0.5; K found cached at 0.
    assert list(waiting["y"]) == [label[A], label[C]]
    assert (list(waiting["base"]), list(waiting["x"])) == ([0.0, 0.0], [1.0, 0.5])
    assert list(done["y"]) == [label[A], label[C]]
    assert (list(done["base"]), list(done["x"])) == ([1.0, 0.5], [3.0, 0.0])
    assert (list(cached["y"]), list(cached["x"])) == ([label[K]], [0.0])
    first = list(done["customdata"][0])
    assert first[:5] == ["n1", APP, A[7:19], LAYER_MT, "completed"]
    assert first[5:] == [4.0, 4.0, 1.0, ""]  # MB, s, MB/s, no stall
    assert "node %{customdata[0]}" in done["hovertemplate"]
    lay = layout(fig)
    assert lay["title"]["text"] == f"Layer waterfall: {APP} on n1"
    assert lay["xaxis"]["title"]["text"] == "s since the first layer started"
    with pytest.raises(ValueError, match="no pull with id or image"):
        figures.waterfall(rec, pull="reg/none:0")


def test_waterfall_of_every_pull(rec):
    got = traces(figures.waterfall(rec))
    assert set(got) == {"waiting for first byte", "completed", "failed", "cached"}
    failed = got["failed"]
    assert list(failed["y"]) == [f"{DB} · {B[7:19]}"]
    assert (list(failed["base"]), list(failed["x"])) == ([1.5], [1.0])  # 1.5 -> 2.5
    slow = list(got["completed"]["y"]).index(f"{SLOW} · {S[7:19]}")
    assert (got["completed"]["base"][slow], got["completed"]["x"][slow]) == (1.0, 33.0)
    # S stalled from 31 to 33, then completed: an orange outline and a word in the hover.
    assert got["completed"]["marker"]["line"]["color"][slow] == "#ff7f0e"
    assert got["completed"]["customdata"][slow][8] == "<br>stalled on the way"


def test_eta_accuracy(rec):
    got = traces(figures.eta_accuracy(rec))
    assert set(got) == {f"{APP} on n1", f"{SLOW} on n3", "exact"}
    app = got[f"{APP} on n1"]
    assert (list(app["x"]), list(app["y"])) == ([3.0, 2.0, 1.0, 0.0], [3.0, 0.5, 0.375, 0.0])
    assert [c[3] for c in app["customdata"]] == [0.0, -1.5, -0.625, 0.0]
    slow = got[f"{SLOW} on n3"]
    assert (list(slow["x"]), list(slow["y"])) == ([33.0, 24.0, 1.0, 0.0], [4.0, 40.0, 8.0, 0.0])
    assert (list(got["exact"]["x"]), list(got["exact"]["y"])) == ([0, 40.0], [0, 40.0])
    lay = layout(figures.eta_accuracy(rec))
    assert (lay["xaxis"]["title"]["text"], lay["yaxis"]["title"]["text"]) == (
        "real time left (s)", "ETA shown (s)")


def test_node_heatmap(rec):
    fig = figures.node_heatmap(rec)
    (heat,) = fig.to_dict()["data"]
    assert list(heat["y"]) == ["n1", "n2", "n3"]
    assert list(heat["x"]) == [t(s) for s in range(34)]
    z = [list(row) for row in heat["z"]]
    assert z[0] == [1.001, 1.95, 0.65, 0.4] + [0.0] * 30
    assert z[1] == [0.5, 0.5] + [0.0] * 32
    assert z[2] == [1.0] + [0.1] * 32 + [0.8]
    assert heat["colorbar"]["title"]["text"] == "MB/s"


def test_duration_vs_size(rec):
    got = traces(figures.duration_vs_size(rec))
    assert list(got) == ["completed", "failed"]
    assert (list(got["completed"]["x"]), list(got["completed"]["y"])) == (
        [6.001, 5.0], [4.0, 34.0])
    assert (list(got["failed"]["x"]), list(got["failed"]["y"])) == ([3.0], [2.0])
    assert list(got["failed"]["customdata"][0])[:2] == ["n2", DB]
    layers = traces(figures.duration_vs_size(rec, of="layer"))
    points = {c[2]: (x, y) for name in layers for c, x, y in zip(
        layers[name]["customdata"], layers[name]["x"], layers[name]["y"], strict=True)}
    assert points == {A[7:19]: (4.0, 4.0), C[7:19]: (0.001, 0.5), S[7:19]: (5.0, 34.0),
                      B[7:19]: (3.0, 2.0)}
    lay = layout(figures.duration_vs_size(rec))
    assert (lay["xaxis"]["title"]["text"], lay["yaxis"]["title"]["text"]) == (
        "size (MB)", "duration (s)")


def test_size_classes(rec):
    mb, speed = figures.size_classes(rec).to_dict()["data"]
    assert list(mb["x"]) == ["< 1 MB", "1-10 MB"]
    assert list(mb["y"]) == [0.001, 10.0]
    assert list(speed["y"]) == [0.002, 0.25]


def test_an_empty_recording_gives_empty_frames_and_figures():
    empty = from_outputs([])
    assert figures.throughput(empty).to_dict()["data"] == []
    assert figures.waterfall(empty).to_dict()["data"] == []
    assert figures.node_heatmap(empty).to_dict()["data"] == []
    assert [t["name"] for t in figures.eta_accuracy(empty).to_dict()["data"]] == ["exact"]
    assert frames.throughput(empty, by="total").height == 0
    assert frames.media_type_breakdown(empty).height == 0
