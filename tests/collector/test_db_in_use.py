"""A database a running collector holds: other commands and notebooks are told who holds it and
what to do instead; the collector keeps serving."""

from __future__ import annotations

import httpx
import pytest

from collector.errors import StoreError
from collector.sources.recording import write_recording
from pulltrace_analysis import open_db
from tests.collector.process import CollectProcess, run_cli
from tests.collector.reports import digest, layer, pull, report
from tests.collector.server import RunningCollector

NO_PORTS = ("--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")


def test_a_second_writer_is_refused_with_the_holders_pid_and_the_first_keeps_serving(tmp_path):
    db = tmp_path / "held.duckdb"
    rec = tmp_path / "in.jsonl"
    write_recording(rec, [report("n", 0, pull("i", 0, layer(digest(1), 0, 9)))])
    with CollectProcess(db, tmp_path / "first.log") as first:
        first.start()
        held = (f"the database {db} is in use by another process (pid {first.pid}) (DuckDB "
                "allows one writer); stop it or choose another --db")
        for name, args in {"collect": ("collect", "--db", str(db), *NO_PORTS),
                           "record": ("record", str(tmp_path / "out.jsonl"), "--db", str(db),
                                      *NO_PORTS),
                           "replay": ("replay", str(rec), "--db", str(db))}.items():
            result = run_cli(*args)
            assert result.returncode == 2, (name, result.stderr)
            assert result.stderr == f"pulltrace {name}: {held}\n"

        with pytest.raises(StoreError) as refused:
            open_db(db)
        assert str(refused.value) == (
            f"the database {db} is in use by another process (pid {first.pid}), a collector "
            "writing it (DuckDB lets no other process open it meanwhile): read a running "
            "collector through its API, e.g. pulltrace_analysis.connect('http://127.0.0.1:8080')"
            ", or open the file once the collector has stopped")

        rep = report("node-a", 0, pull("img/app:1", 0, layer(digest(7), 1_000_000, 4_000_000)))
        assert httpx.post(first.url + "/api/v1/report", content=rep.dumps(),
                          timeout=30).status_code == 200
        assert httpx.get(first.url + "/readyz", timeout=10).status_code == 200
        assert first.stop() == 0
    recording = open_db(db)  # once it has stopped
    assert recording.samples["downloaded_bytes"].to_list() == [1_000_000]


def test_a_notebook_opening_the_file_of_a_collector_in_its_own_kernel(tmp_path):
    db = tmp_path / "kernel.duckdb"
    with RunningCollector(db):
        with pytest.raises(StoreError) as refused:
            open_db(db)
        assert str(refused.value) == (
            f"the database {db} is open for writing in this process (a collector running "
            "here): read it through that collector's API with pulltrace_analysis.connect(url), "
            "or stop the collector first")


def test_a_notebook_opening_a_database_that_is_not_there(tmp_path):
    missing = tmp_path / "missing.duckdb"
    with pytest.raises(StoreError) as refused:
        open_db(missing)
    assert str(refused.value) == f"no database at {missing}; check the path"
    assert not missing.exists()
