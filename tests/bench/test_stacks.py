"""Collapsed py-spy stacks summed into kinds of work, pipeline stages and functions."""

from __future__ import annotations

from pathlib import Path

from bench import stacks

STORE = str(Path(stacks.__file__).resolve().parents[1] / "collector" / "store.py")
DECODER = "/usr/lib/python3.11/json/decoder.py"


def line_of(path: str, needle: str) -> int:
    for number, text in enumerate(Path(path).read_text().splitlines(), 1):
        if needle in text:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


COMMIT = line_of(STORE, 'self.con.execute("COMMIT")')
LOOP = "thread (0x7f01): MainThread;run (/x/asyncio/base_events.py:600)"
HANDLER = "build_app.<locals>.report (/r/collector/api.py:90)"
PARSE = "parse_report (/r/collector/model.py:318)"
STORE_THREAD = "thread (0x7f02): pulltrace-store_0;Store.write (" + STORE + ":140)"

RAW = [
    f"{LOOP};{HANDLER};{PARSE};raw_decode ({DECODER}:353) 30\n",
    f"{LOOP};{HANDLER};Collector.submit (/r/collector/service.py:140);"
    "Engine.ingest (/r/collector/engine.py:130);__create_fn__.<locals>.__init__ (<string>:3) 20\n",
    f"{LOOP};_run_once (/x/asyncio/base_events.py:1900) 10\n",
    f"{STORE_THREAD};Store.write ({STORE}:{COMMIT}) 40\n",
    "\n",
]


def test_parse_reads_threads_frames_and_counts():
    parsed = stacks.parse(RAW)
    assert len(parsed) == 4
    assert parsed[0].thread == "MainThread"
    assert parsed[3].thread == "pulltrace-store_0"
    assert parsed[0].frames[-1] == stacks.Frame("raw_decode", DECODER, 353)
    assert stacks.total(parsed) == 100
    assert stacks.by_thread(parsed) == {"MainThread": 60, "pulltrace-store_0": 40}


def test_each_sample_goes_to_its_innermost_recognised_frame():
    kinds = stacks.kinds(stacks.parse(RAW))
    assert kinds == {
        "JSON decoding (json.loads)": 30,
        "dataclass __init__ (records, statuses)": 20,
        "asyncio event loop": 10,
        "DuckDB COMMIT": 40,
    }


def test_stages_count_every_sample_passing_through():
    found = stacks.stages(stacks.parse(RAW))
    assert found["HTTP handler: report()"] == 50
    assert found["  parse_report (JSON + validation)"] == 30
    assert found["    Engine.ingest"] == 20
    assert found["Store.write"] == 40
    assert found["Batch.of"] == 0


def test_top_functions_and_focus():
    parsed = stacks.parse(RAW)
    assert stacks.top_self(parsed, 1) == [("Store.write (store.py)", 40)]
    inclusive = dict(stacks.top_inclusive(parsed))
    assert inclusive["build_app.<locals>.report (api.py)"] == 50
    assert inclusive["Store.write (store.py)"] == 40
    assert "run (base_events.py)" not in inclusive  # only the project's own functions
    assert stacks.total(stacks.focus(parsed, "Engine.ingest")) == 20


def test_render_gives_percentages_of_all_samples():
    text = stacks.render(stacks.parse(RAW), "t")
    assert text.startswith("t: 100 samples")
    assert " 40.0%  DuckDB COMMIT" in text
    assert "MainThread  60.0%" in text
