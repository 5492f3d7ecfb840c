"""`pulltrace agent`'s HTTP side against a real collector, and the containerd flags of the CLI."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from collector.agent import ReportPoster, report_url
from collector.errors import ConfigError
from collector.model import AgentReport
from tests.collector.reports import at, digest, layer, pull, report
from tests.collector.server import RunningCollector

TOKEN = "n0de-t0ken"


def post_all(url: str, reports: list[AgentReport], token: str | None = TOKEN,
             ) -> tuple[list[bool], ReportPoster]:
    async def go() -> tuple[list[bool], ReportPoster]:
        async with aiohttp.ClientSession() as session:
            poster = ReportPoster(session, url, token, backoff=0.01, max_backoff=0.02)
            return [await poster(r) for r in reports], poster

    return asyncio.run(go())


def test_reports_reach_the_collector_with_the_bearer_token(tmp_path):
    with RunningCollector(tmp_path / "a.duckdb", token=TOKEN) as srv:
        results, poster = post_all(srv.url, [report("n1", 0, pull("img:1", 0,
                                                                   layer(digest(1), 0, 100)))])
        pulls = srv.collector.pulls()
    assert results == [True]
    assert poster.delivered == 1
    assert [(p.node_name, p.image_ref, p.started_at) for p in pulls] == [("n1", "img:1", at(0))]


def test_a_second_report_within_500ms_is_retried_until_admitted(tmp_path):
    with RunningCollector(tmp_path / "b.duckdb", token=TOKEN) as srv:
        results, _ = post_all(srv.url, [report("n1", 0), report("n1", 0.1)])
        limited = srv.collector.metrics.reports_dropped.labels("rate_limited")._value.get()
        accepted = srv.collector.metrics.agent_reports._value.get()
    assert results == [True, True]
    assert limited >= 1
    assert accepted == 2


def test_a_wrong_token_is_not_delivered_and_says_so_once(tmp_path, caplog):
    caplog.set_level(logging.ERROR, "pulltrace.agent")
    with RunningCollector(tmp_path / "c.duckdb", token=TOKEN) as srv:
        results, _ = post_all(srv.url, [report("n1", 0), report("n1", 1)], token="wrong")
    assert results == [False, False]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "refused the token (401)" in messages[0]


def test_an_unreachable_collector_is_retried_later_not_fatal(caplog):
    caplog.set_level(logging.WARNING, "pulltrace.agent")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    results, poster = post_all(f"http://127.0.0.1:{port}", [report("n1", 0), report("n1", 1)])
    assert results == [False, False]
    assert poster.delivered == 0
    assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1


def test_the_server_must_be_an_http_url():
    assert report_url("http://collector:8080/") == "http://collector:8080/api/v1/report"
    with pytest.raises(ConfigError, match="is not an http"):
        report_url("collector:8080")
    with pytest.raises(ConfigError) as info:
        report_url("ftp://user:pa55w0rd@collector:8080")
    assert "pa55w0rd" not in str(info.value)
    assert "'ftp://user:***@collector:8080' is not an http" in str(info.value)


def test_credentials_in_the_url_and_a_token_cannot_both_be_sent():
    with pytest.raises(ConfigError) as info:
        report_url("http://user:pa55w0rd@collector:8080", token=TOKEN)
    assert str(info.value) == (
        "--server: 'http://user:***@collector:8080' carries credentials (user:password@) and a "
        "token is set; the collector checks only the token: drop the credentials from the URL "
        "(or the token, if a proxy in front of the collector wants them)")
    assert report_url("http://user:pa55w0rd@collector:8080") == (
        "http://user:pa55w0rd@collector:8080/api/v1/report")


def test_a_password_in_the_server_url_is_never_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    down, _ = post_all(f"http://user:pa55w0rd@127.0.0.1:{port}", [report("n1", 0)], token=None)
    with RunningCollector(tmp_path / "u.duckdb", token=TOKEN) as srv:
        refused, _ = post_all(srv.url.replace("http://", "http://user:pa55w0rd@"),
                              [report("n1", 0)], token=None)
    messages = [r.getMessage() for r in caplog.records if r.name == "pulltrace.agent"]
    assert (down, refused) == ([False], [False])
    assert messages[0].startswith(f"collector at http://user:***@127.0.0.1:{port}/api/v1/report "
                                  "unreachable: ")
    assert messages[1] == (f"collector at {srv.url.replace('http://', 'http://user:***@')}"
                           "/api/v1/report wants a token (401); set --token or "
                           "PULLTRACE_AGENT_TOKEN to the collector's")
    assert not any("pa55w0rd" in r.getMessage() for r in caplog.records)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False, env=env)


def test_a_containerd_socket_that_is_not_there_ends_collect_at_start(tmp_path):
    missing = tmp_path / "nothing.sock"
    collect = run("collect", "--containerd", str(missing), "--db", str(tmp_path / "x.duckdb"),
                  "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
    assert collect.returncode == 2
    assert collect.stderr == (f"pulltrace collect: no containerd socket at {missing}; is "
                              "containerd running? pass --containerd SOCKET\n")
    assert not (tmp_path / "x.duckdb").exists()  # it stopped before opening anything


def test_collect_takes_any_socket_path_until_directories_are_allowed(tmp_path):
    (tmp_path / "allowed").mkdir()
    config = tmp_path / "containerd.toml"
    config.write_text("")
    common = ["--db", str(tmp_path / "x.duckdb"), "--listen", "127.0.0.1:0",
              "--metrics-listen", "127.0.0.1:0"]
    anywhere = run("collect", "--containerd", str(config), *common)
    assert anywhere.returncode == 2
    assert anywhere.stderr.startswith(f"pulltrace collect: {config} is a regular file, not a "
                                      "socket; pass containerd's gRPC socket")
    restricted = run("collect", "--containerd", str(config), "--allow-socket-dir",
                     str(tmp_path / "allowed"), *common)
    assert restricted.returncode == 2
    assert restricted.stderr.startswith(
        f"pulltrace collect: containerd socket {config} is outside the allowed directories "
        f"(/run/containerd/, /var/run/containerd/, {tmp_path / 'allowed'}); ")
    folder = run("record", str(tmp_path / "r.jsonl"), "--containerd", str(tmp_path), *common)
    assert folder.returncode == 2
    assert folder.stderr.startswith(f"pulltrace record: {tmp_path} is a directory, not a socket")
    assert not (tmp_path / "x.duckdb").exists()


def test_the_agent_needs_a_server_and_reads_its_settings_from_the_environment(tmp_path):
    plain = {"PATH": "/usr/bin:/bin"}
    no_server = run("agent", "--containerd", str(tmp_path / "c.sock"), env=plain)
    assert no_server.returncode == 2
    assert "pass --server URL (or PULLTRACE_SERVER_URL)" in no_server.stderr
    env = {**plain, "PULLTRACE_SERVER_URL": "http://127.0.0.1:9",
           "PULLTRACE_CONTAINERD_SOCKET": str(tmp_path / "env.sock")}
    from_env = run("agent", env=env)
    # the agent only opens sockets in containerd's own directories unless told otherwise
    assert from_env.returncode == 2
    assert from_env.stderr.startswith(
        f"pulltrace agent: containerd socket {tmp_path / 'env.sock'} is outside the allowed "
        "directories (/run/containerd/, /var/run/containerd/); if it is your containerd's "
        "socket, allow its directory with --allow-socket-dir DIR")
    regular = tmp_path / "env.sock"
    regular.write_text("")
    allowed = run("agent", env={**env, "PULLTRACE_ALLOWED_SOCKET_DIRS": f"/nowhere:{tmp_path}"})
    assert allowed.returncode == 2
    assert allowed.stderr.startswith(f"pulltrace agent: {regular} is a regular file, not a socket")
    bad_interval = run("agent", env={**plain, "PULLTRACE_REPORT_INTERVAL": "often"})
    assert bad_interval.returncode == 2
    assert "not a duration: 'often'" in bad_interval.stderr


def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while text not in (content := log.read_text()):
        assert proc.poll() is None, f"the agent exited ({proc.returncode}):\n{content}"
        assert time.monotonic() < deadline, f"no {text!r} within 30 s in:\n{content}"
        time.sleep(0.05)
    return content


def test_the_agent_waits_for_a_missing_socket_and_says_so_once(tmp_path):
    sockets = tmp_path / "run"
    sockets.mkdir()
    path = sockets / "containerd.sock"
    log = tmp_path / "agent.log"
    env = {"PATH": "/usr/bin:/bin", "PULLTRACE_SERVER_URL": "http://127.0.0.1:9",
           "PULLTRACE_CONTAINERD_SOCKET": str(path), "PULLTRACE_ALLOWED_SOCKET_DIRS": str(sockets)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "collector.cli", "agent"], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        wait_for_line(log, "waiting for it", proc)
        time.sleep(2)  # checks at about 0, 0.5, 1.5 s: several retries, still one line
        assert proc.poll() is None
        # bound, not listening: containerd that has not started answering (refused)
        sock.bind(str(path))
        content = wait_for_line(log, "will keep trying", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        sock.close()
    lines = log.read_text().splitlines()
    assert code == 0
    waiting = [line for line in lines if "waiting for it" in line]
    assert len(waiting) == 1
    assert waiting[0].endswith(f"WARNING no containerd socket at {path}; is containerd running? "
                               "pass --containerd SOCKET; waiting for it (checking again within "
                               "5s)")
    assert sum(f"containerd socket {path} is there after" in line for line in lines) == 1
    assert f"containerd at {path} is not answering (connection refused)" in content


def test_a_signal_stops_the_agent_while_it_waits_for_containerd(tmp_path):
    log = tmp_path / "agent.log"
    env = {"PATH": "/usr/bin:/bin", "PULLTRACE_SERVER_URL": "http://127.0.0.1:9",
           "PULLTRACE_ALLOWED_SOCKET_DIRS": str(tmp_path)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "collector.cli", "agent", "--containerd",
                                 str(tmp_path / "c.sock")], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_line(log, "waiting for it", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    assert log.read_text().splitlines()[-1].endswith(
        "INFO stopping; containerd's socket never appeared")
