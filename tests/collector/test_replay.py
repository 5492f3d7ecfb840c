"""`pulltrace replay`: same recording, same rows, whatever the speed."""

from __future__ import annotations

import pytest

from collector.cli import main
from collector.errors import ReportError
from collector.model import LayerPhase
from collector.sources.recording import read_recording, write_recording
from collector.store import TABLES, Store
from tests.collector.reports import digest, layer, pull, report

MT = "application/vnd.oci.image.layer.v1.tar+gzip"


def small_recording() -> list:
    a, b, c = digest(1), digest(2), digest(3)
    reports = []
    for i in range(5):
        t = i * 0.5
        reports.append(report(
            "node-1", t,
            pull("reg/app:1", 0, layer(a, min(i * 1_000_000, 3_000_000), 3_000_000,
                                       media_type=MT),
                 layer(c, 0, 500, media_type=MT, state=LayerPhase.CACHED))))
        reports.append(report("node-2", t + 0.1, pull("reg/db:2", 0, layer(b, i * 500_000,
                                                                           9_000_000))))
    reports.append(report("node-1", 3.0))
    return reports


def dump(db) -> dict[str, list]:
    with Store(db) as store:
        out = {}
        for table in TABLES:
            rows = store.con.execute(f"SELECT * FROM {table}").fetchall()
            out[table] = sorted(rows, key=repr)
        return out


def test_replay_at_full_speed_and_4x_gives_identical_rows(tmp_path, capsys):
    rec = tmp_path / "rec.jsonl"
    write_recording(rec, small_recording())
    assert main(["replay", str(rec), "--db", str(tmp_path / "fast.duckdb")]) == 0
    assert main(["replay", str(rec), "--db", str(tmp_path / "x4.duckdb"), "--speed", "4"]) == 0
    fast, x4 = dump(tmp_path / "fast.duckdb"), dump(tmp_path / "x4.duckdb")
    assert fast == x4
    assert len(fast["reports"]) == 11
    # 3 layers listed in each of 5 rounds, and the app layer once more when it vanished
    assert len(fast["samples"]) == 5 * 3 + 1
    with Store(tmp_path / "fast.duckdb") as store:
        rows = store.con.execute(
            "SELECT image_ref, status, fetched_bytes, cached_bytes FROM pulls ORDER BY 1"
        ).fetchall()
    # app: 3e6 fetched (the cached layer is not fetched); it vanished at 3.0 -> completed
    assert rows == [("reg/app:1", "completed", 3_000_000, 500),
                    ("reg/db:2", "active", 2_000_000, 0)]
    assert "replayed 11 reports" in capsys.readouterr().out


def test_a_bad_line_names_the_line_and_field(tmp_path):
    rec = tmp_path / "bad.jsonl"
    rec.write_text(small_recording()[0].dumps() + "\n" + '{"nodeName": "", "timestamp": 1}\n')
    with pytest.raises(ReportError, match=r"bad.jsonl:2: nodeName: must not be empty"):
        list(read_recording(rec))


def test_replay_of_a_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope.jsonl"), "--db", str(tmp_path / "x.db")]) == 2
    assert "cannot read the recording" in capsys.readouterr().err
