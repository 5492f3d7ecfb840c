"""Collapsed py-spy stacks summed into kinds of work, pipeline stages and functions."""

from __future__ import annotations

import pytest

from bench import stacks

DECODER = "/usr/lib/python3.11/json/decoder.py"
LOOP = "thread (0x7f01): MainThread;run (/x/asyncio/base_events.py:600)"
HANDLER = "build_app.<locals>.report (/r/collector/api.py:90)"
PARSE = "parse_report (/r/collector/model.py:318)"
# What a store's source looks like to the classifier: it reads the sampled lines.
STORE_SOURCE = """class Store:
    def write(self, batch):
        self.con.execute("BEGIN TRANSACTION")
        self._upsert("pulls", to_arrow(batch.pulls, PullRow), ("id",))
        self.con.execute("COMMIT")

    def _upsert(self, name, table, key):
        self.con.execute(f"DELETE FROM {name} WHERE ({cols}) IN "
                         f"(SELECT ({cols}) FROM _batch)")
"""


@pytest.fixture
def raw(tmp_path):
    store = tmp_path / "collector" / "store.py"
    store.parent.mkdir()
    store.write_text(STORE_SOURCE)
    thread = "thread (0x7f02): pulltrace-store_0"
    return [
        f"{LOOP};{HANDLER};{PARSE};raw_decode ({DECODER}:353) 30\n",
        f"{LOOP};{HANDLER};Collector.submit (/r/collector/service.py:140);"
        "Engine.ingest (/r/collector/engine.py:130);"
        "__create_fn__.<locals>.__init__ (<string>:3) 20\n",
        f"{LOOP};_run_once (/x/asyncio/base_events.py:1900) 10\n",
        f"{thread};Store.write ({store}:5) 25\n",
        # Sampled on the second line of a call: the statement is the DELETE.
        f"{thread};Store.write ({store}:4);Store._upsert ({store}:9) 15\n",
        "\n",
    ]


def test_parse_reads_threads_frames_and_counts(raw):
    parsed = stacks.parse(raw)
    assert len(parsed) == 5
    assert parsed[0].thread == "MainThread"
    assert parsed[3].thread == "pulltrace-store_0"
    assert parsed[0].frames[-1] == stacks.Frame("raw_decode", DECODER, 353)
    assert stacks.total(parsed) == 100
    assert stacks.by_thread(parsed) == {"MainThread": 60, "pulltrace-store_0": 40}


def test_each_sample_goes_to_its_innermost_recognised_frame(raw):
    kinds = stacks.kinds(stacks.parse(raw))
    assert kinds == {
        "JSON decoding (json.loads)": 30,
        "dataclass __init__ (records, statuses)": 20,
        "asyncio event loop": 10,
        "DuckDB COMMIT": 25,
        "DuckDB DELETE (upserts)": 15,
    }


def test_stages_count_every_sample_passing_through(raw):
    found = stacks.stages(stacks.parse(raw))
    assert found["HTTP handler: report()"] == 50
    assert found["  parse_report (JSON + validation)"] == 30
    assert found["    Engine.ingest"] == 20
    assert found["Store.write"] == 40
    assert found["Batch.of"] == 0


def test_top_functions_and_focus(raw):
    parsed = stacks.parse(raw)
    assert stacks.top_self(parsed, 2) == [("raw_decode (decoder.py)", 30),
                                          ("Store.write (store.py)", 25)]
    inclusive = dict(stacks.top_inclusive(parsed))
    assert inclusive["build_app.<locals>.report (api.py)"] == 50
    assert inclusive["Store.write (store.py)"] == 40
    assert "run (base_events.py)" not in inclusive  # only the project's own functions
    assert stacks.total(stacks.focus(parsed, "Engine.ingest")) == 20


def test_render_gives_percentages_of_all_samples(raw):
    text = stacks.render(stacks.parse(raw), "t")
    assert text.startswith("t: 100 samples")
    assert " 25.0%  DuckDB COMMIT" in text
    assert "MainThread  60.0%" in text
