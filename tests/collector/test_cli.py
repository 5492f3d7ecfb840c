"""`pulltrace` fails clearly: one message naming what to change, exit status 2."""

from __future__ import annotations

import socket
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_bad_flag_value(tmp_path):
    result = run("replay", "x.jsonl", "--db", str(tmp_path / "x.db"), "--speed", "-1")
    assert result.returncode == 2
    assert "--speed: expected a number above 0, got '-1'" in result.stderr


def test_bad_listen_address(tmp_path):
    result = run("collect", "--db", str(tmp_path / "x.db"), "--listen", "localhost")
    assert result.returncode == 2
    assert "--listen: 'localhost' is not HOST:PORT" in result.stderr


def test_unwritable_database(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run("collect", "--db", str(blocker / "x.duckdb"), "--listen", "127.0.0.1:0",
                 "--metrics-listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert "cannot create the folder for the database" in result.stderr
    assert "choose another --db path" in result.stderr


def test_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("collect", "--db", str(tmp_path / "x.duckdb"), "--listen",
                     f"127.0.0.1:{port}", "--metrics-listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert f"--listen: 127.0.0.1:{port} is already in use" in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback


def test_history_ttl_from_the_environment_must_be_a_duration(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "collector.cli", "collect", "--db", str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PULLTRACE_HISTORY_TTL": "forever", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "not a duration: 'forever'" in result.stderr


def test_flag_values_that_would_break_the_rules(tmp_path):
    for flag, value, message in [("--rate-window", "0", "expected a duration above 0"),
                                 ("--stall-after", "0s", "expected a duration above 0"),
                                 ("--stall-floor", "nan", "expected bytes per second"),
                                 ("--db", "", "expected a file path")]:
        result = run("collect", flag, value)
        assert result.returncode == 2, flag
        assert message in result.stderr, (flag, result.stderr)
    result = run("replay", "x.jsonl", "--db", str(tmp_path / "x.db"), "--speed", "nan")
    assert "expected a number above 0, got 'nan'" in result.stderr


def test_a_bad_log_level_in_the_environment(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "collector.cli", "replay", "x.jsonl", "--db", "y.db"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PULLTRACE_LOG_LEVEL": "verbose", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "'verbose' is not one of debug, info, warn, error" in result.stderr
    assert "Traceback" not in result.stderr


def test_replay_into_a_database_that_holds_reports_needs_append(tmp_path):
    from collector.sources.recording import write_recording
    from tests.collector.reports import digest, layer, pull, report

    rec, db = tmp_path / "r.jsonl", str(tmp_path / "r.duckdb")
    write_recording(rec, [report("n", t, pull("i", 0, layer(digest(1), t, 9))) for t in (0, 1)])
    assert run("replay", str(rec), "--db", db).returncode == 0
    again = run("replay", str(rec), "--db", db)
    assert again.returncode == 2
    assert "already holds 2 reports; replay into a new file, or pass --append" in again.stderr
