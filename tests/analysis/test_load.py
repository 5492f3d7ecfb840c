"""One recording, three ways in: the JSONL file through the engine, the DuckDB file that
`pulltrace replay` wrote, and a running collector fed the same reports — equal frames."""

from __future__ import annotations

import httpx
import pandas as pd
import polars as pl
import pytest

from collector.cli import main
from collector.engine import Engine
from collector.journal import Journal, journal_path
from collector.model import AgentReport, PullState
from collector.store import Store
from pulltrace_analysis import Recording, connect, find_recording, open_db, read_recording
from pulltrace_analysis import load as load_module
from pulltrace_analysis.recording import from_outputs
from pulltrace_analysis.schema import table_schemas
from tests.analysis.small import APP, reports
from tests.collector.reports import at, layer
from tests.collector.server import ManualClock, RunningCollector

FRAMES = ("samples", "progress", "pulls", "layers", "events")


def assert_same(left: Recording, right: Recording) -> None:
    for name in FRAMES:
        a, b = getattr(left, name), getattr(right, name)
        assert a.schema == b.schema, name
        assert a.equals(b), name


@pytest.fixture(scope="module")
def replayed_db(recording_path, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "replayed.duckdb"
    assert main(["replay", str(recording_path), "--db", str(db)]) == 0
    return db


@pytest.fixture(scope="module")
def fed_collector(tmp_path_factory):
    clock = ManualClock()
    with RunningCollector(tmp_path_factory.mktemp("live") / "live.duckdb",
                          gate_clock=clock) as running:
        for report in reports():
            clock.advance(1)  # past the collector's one-report-per-500ms rule
            resp = httpx.post(running.url + "/api/v1/report", content=report.dumps(),
                              timeout=10)
            assert resp.status_code == 200, resp.text
        yield running


def test_read_recording_counts(rec):
    # 15 reports: n1 lists 3 layers 4 times + C and K at 4 + A's commit sample = 15;
    # n2 1 layer x 3; n3 1 layer x 6 + S's commit at 34 = 7.
    assert (rec.samples.height, rec.pulls.height, rec.layers.height) == (25, 3, 5)
    assert rec.progress.height == 15  # one per report that touched a pull
    assert rec.events.filter(pl.col("type") == "pull.started").height == 3


def test_open_db_of_the_replayed_file_gives_the_same_frames(rec, replayed_db):
    assert_same(rec, open_db(replayed_db))


def test_connect_to_a_collector_fed_the_same_reports_gives_the_same_frames(rec, fed_collector):
    assert_same(rec, connect(fed_collector.url))
    assert_same(rec, connect(fed_collector.url + "/", page_size=4))  # many small pages


def test_frames_have_the_types_of_the_duckdb_tables(rec):
    schemas = table_schemas()
    assert rec.samples.schema["ts"] == pl.Datetime("ns")
    assert rec.progress.schema["layer_count"] == pl.Int32  # INTEGER in DuckDB
    assert rec.pulls.schema["peak_bytes_per_sec"] == pl.Float64
    for name in FRAMES:
        assert getattr(rec, name).columns == schemas[name].names


def test_to_pandas(rec):
    frames = rec.to_pandas()
    assert isinstance(frames.samples, pd.DataFrame)
    assert list(frames.pulls.columns) == rec.pulls.columns
    assert len(frames.samples) == rec.samples.height
    app = frames.pulls[frames.pulls["image_ref"] == APP].iloc[0]
    assert (app["fetched_bytes"], app["cached_bytes"]) == (4_001_000, 2_000_000)


def test_filter_and_what_is_in_it(rec):
    assert rec.nodes == ["n1", "n2", "n3"]
    assert rec.images == ["reg/app:1", "reg/db:2", "reg/slow:3"]
    only = rec.filter(node="n2")
    assert only.pulls["image_ref"].to_list() == ["reg/db:2"]
    assert set(only.samples["node"].to_list()) == {"n2"}
    configs = rec.filter(media_type="application/vnd.oci.image.config.v1+json")
    assert configs.pulls["image_ref"].to_list() == [APP]
    assert configs.layers.height == 1
    first, last = rec.time_range()
    assert (last - first).total_seconds() == 34.0
    early = rec.filter(until=first)
    assert early.samples.height == 4  # the three layers of n1 and S, at 0


def test_slow_loads_show_a_progress_bar(recording_path, monkeypatch, capsys):
    monkeypatch.setattr(load_module, "PROGRESS_DELAY", 0.0)
    read_recording(recording_path)
    shown = capsys.readouterr().err
    assert "small.jsonl" in shown
    assert "/15.0" in shown
    assert "reports/s" in shown
    monkeypatch.setattr(load_module, "PROGRESS_DELAY", 1.0)
    read_recording(recording_path)  # quick: no bar at all
    assert capsys.readouterr().err == ""


def test_find_recording(tmp_path, monkeypatch, recording_path):
    monkeypatch.setenv("PULLTRACE_RECORDING", str(recording_path))
    assert find_recording() == recording_path
    monkeypatch.setenv("PULLTRACE_RECORDING", str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl: no such file"):
        find_recording()
    monkeypatch.delenv("PULLTRACE_RECORDING")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "recording.jsonl").write_text("")
    monkeypatch.chdir(tmp_path / "data")
    assert find_recording() == tmp_path / "data" / "recording.jsonl"


def test_connect_errors_are_clear(fed_collector):
    with pytest.raises(ValueError, match="expected an http"):
        connect("127.0.0.1:1")
    with pytest.raises(ConnectionError, match="cannot reach the collector"):
        connect("http://127.0.0.1:1", timeout=2)


def test_filter_by_image_follows_a_pull_renamed_from_digest_to_tag():
    def state(name: str, done: int) -> PullState:
        return PullState(image_ref=name, started_at=at(0), total_known=True,
                         digest="sha256:" + "d" * 64,
                         layers=(layer("sha256:" + "1" * 64, done, 100, updated=done / 100),))

    engine = Engine()
    rec = from_outputs([
        engine.ingest(AgentReport("n", at(0), (state("r/db@sha256:" + "d" * 64, 0),))),
        engine.ingest(AgentReport("n", at(1), (state("r/db:16", 50),)))])
    assert rec.pulls["image_ref"].to_list() == ["r/db:16"]
    assert rec.samples["image_ref"].to_list() == ["r/db@sha256:" + "d" * 64, "r/db:16"]
    assert rec.filter(image="r/db:16").samples.height == 2


def test_open_db_says_when_the_journal_holds_reports_the_file_lacks(tmp_path, recording_path):
    db = tmp_path / "crashed.duckdb"
    assert main(["replay", str(recording_path), "--db", str(db)]) == 0
    with Store(db, read_only=True) as store:
        stored = store.report_seq
    journal = Journal(journal_path(db))
    journal.start(stored - 1)  # the last two stored, as a journal keeps them until released
    journal.append(["{}", "{}"])
    journal.close()
    open_db(db)  # everything the journal holds is in the file: nothing to say (warnings fail)
    journal = Journal(journal_path(db))
    journal.start(stored + 1)
    journal.append(["{}", "{}", "{}"])  # answered, then the collector died
    journal.close()
    with pytest.warns(UserWarning, match="are not in") as caught:
        recording = open_db(db)
    assert str(caught[0].message) == (
        f"3 reports in {db}.journal are not in {db} yet: the collector stopped before writing "
        f"them. Start `pulltrace collect --db {db}` once (it writes them, then serves), then "
        "open the file again")
    assert recording.samples.height > 0  # the file's frames all the same
