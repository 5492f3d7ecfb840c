"""The table of figures: ratios to the same run's limits, targets met or missed."""

from __future__ import annotations

import json

from bench.report import Results, Row


def test_a_rate_meets_its_target_as_a_ratio_of_its_limit():
    row = Row("2", "store", 400.0, "samples/s", limit=1000.0, limit_name="bare", target=0.5)
    assert row.ratio == 0.4
    assert row.verdict == "MISSED"
    row.value = 500.0
    assert row.verdict == "ok"
    assert Row("1", "engine", 5.0, "x").verdict == ""
    assert Row("1", "engine", None, "x", limit=3.0, target=0.5).verdict == "n/a"


def test_a_latency_must_stay_below_its_target():
    row = Row("3", "p99", 0.040, "ms", limit=0.002, target=0.050, target_max=True, scale=1e-3)
    assert row.verdict == "ok"
    assert row.target_text() == "< 50.0 ms"
    row.value = 0.051
    assert row.verdict == "MISSED"


def test_table_and_json(tmp_path):
    results = Results(machine={"cores": 2})
    results.add(Row("3 http", "N=200: reports/s", 150.0, "reports/s", limit=200.0,
                    limit_name="empty handler", target=0.7, note="offered 200/s"))
    results.add(Row("3 http", "N=200: p99", 0.120, "ms", limit=0.004, scale=1e-3,
                    target=0.050, target_max=True))
    lines = results.table().splitlines()
    assert lines[0].split()[:3] == ["part", "figure", "value"]
    assert "N=200: reports/s [offered 200/s]" in lines[2]
    assert "150 reports/s" in lines[2]
    assert "200 reports/s (empty handler)" in lines[2]
    assert lines[2].rstrip().endswith("0.75  ratio >= 0.7  ok")
    assert "120 ms" in lines[3]
    assert "30.0x" in lines[3]
    assert lines[3].rstrip().endswith("MISSED")
    results.dump(tmp_path / "f.json")
    saved = json.loads((tmp_path / "f.json").read_text())
    assert saved["machine"] == {"cores": 2}
    assert saved["rows"][0]["ratio"] == 0.75
    assert saved["rows"][1]["verdict"] == "MISSED"
