"""`pulltrace agent`'s HTTP side against a real collector, and the containerd flags of the CLI."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys

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


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False, env=env)


def test_a_containerd_socket_that_is_not_there_is_an_error_at_start(tmp_path):
    missing = tmp_path / "nothing.sock"
    collect = run("collect", "--containerd", str(missing), "--db", str(tmp_path / "x.duckdb"),
                  "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
    agent = run("agent", "--containerd", str(missing), "--server", "http://127.0.0.1:9")
    for result, command in ((collect, "collect"), (agent, "agent")):
        assert result.returncode == 2
        assert result.stderr == (f"pulltrace {command}: no containerd socket at {missing}; is "
                                 "containerd running? pass --containerd SOCKET\n")
    assert not (tmp_path / "x.duckdb").exists()  # it stopped before opening anything


def test_the_agent_needs_a_server_and_reads_its_settings_from_the_environment(tmp_path):
    plain = {"PATH": "/usr/bin:/bin"}
    no_server = run("agent", "--containerd", str(tmp_path / "c.sock"), env=plain)
    assert no_server.returncode == 2
    assert "pass --server URL (or PULLTRACE_SERVER_URL)" in no_server.stderr
    from_env = run("agent", env={**plain, "PULLTRACE_SERVER_URL": "http://127.0.0.1:9",
                                 "PULLTRACE_CONTAINERD_SOCKET": str(tmp_path / "env.sock")})
    assert from_env.returncode == 2
    assert f"no containerd socket at {tmp_path / 'env.sock'}" in from_env.stderr
    bad_interval = run("agent", env={**plain, "PULLTRACE_REPORT_INTERVAL": "often"})
    assert bad_interval.returncode == 2
    assert "not a duration: 'often'" in bad_interval.stderr
