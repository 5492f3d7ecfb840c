"""`pulltrace demo` says what it shows: live pulls when the testbed's tools are there, else a
recording (here the tools are made to look absent, so nothing slow runs)."""

from __future__ import annotations

import pytest

from collector import cli
from collector.model import LayerPhase
from collector.sources.recording import write_recording
from tests.collector.reports import digest, layer, pull, report


@pytest.fixture
def no_tools(monkeypatch):
    monkeypatch.setattr("collector.demo.missing_tools", lambda: ["docker-registry", "skopeo"])


def small_recording(path):
    write_recording(path, [
        report("n1", 0, pull("img:1", 0, layer(digest(1), 0, 1000))),
        report("n1", 1, pull("img:1", 0, layer(digest(1), 1000, 1000,
                                               state=LayerPhase.COMPLETED)))])
    return path


FLAGS = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--speed", "10"]


def test_without_the_tools_it_replays_the_recording_and_says_why(tmp_path, capsys, no_tools,
                                                                 monkeypatch):
    rec = small_recording(tmp_path / "bundled.jsonl")
    monkeypatch.setattr("collector.demo.BUNDLED", rec)
    code = cli.main(["demo", "--db", str(tmp_path / "d.duckdb"), *FLAGS])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(
        f"pulltrace demo: replaying the recording {rec} at 10 times real time (testbed needs "
        "docker-registry, skopeo: install with `apt-get install -y containerd docker-registry "
        "skopeo` to watch live pulls instead)\n")
    assert "pulls       1: 1 completed, 0 failed, 0 unfinished" in out


def test_a_recording_asked_for_is_replayed_without_a_word_on_the_tools(tmp_path, capsys,
                                                                       no_tools):
    rec = small_recording(tmp_path / "mine.jsonl")
    code = cli.main(["demo", "--recording", str(rec), "--db", str(tmp_path / "d.duckdb"),
                     *FLAGS])
    assert code == 0
    assert capsys.readouterr().out.startswith(
        f"pulltrace demo: replaying the recording {rec} at 10 times real time\n")


def test_asking_for_live_pulls_without_the_tools_says_how_to_install_them(tmp_path, capsys,
                                                                          no_tools):
    code = cli.main(["demo", "--source", "live", "--db", str(tmp_path / "d.duckdb")])
    assert code == 2
    assert capsys.readouterr().err == (
        "pulltrace demo: --source live: testbed needs docker-registry, skopeo: install with "
        "`apt-get install -y containerd docker-registry skopeo`\n")


def test_a_port_in_use_moves_the_demo_to_free_ports(tmp_path, capsys, no_tools):
    import socket

    rec = small_recording(tmp_path / "mine.jsonl")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = cli.main(["demo", "--recording", str(rec), "--db", str(tmp_path / "d.duckdb"),
                         "--listen", f"127.0.0.1:{port}", "--metrics-listen", "127.0.0.1:0",
                         "--speed", "10"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"--listen: 127.0.0.1:{port} is already in use" in out
    assert "using free ports instead" in out
    assert "pulls       1: 1 completed, 0 failed, 0 unfinished" in out
