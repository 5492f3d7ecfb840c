"""What the collector and the agent do when what they depend on fails: the registry dies mid-pull,
containerd is not there yet when the agent starts, the collector goes away and comes back.

Each case: a clear message, a retry where retrying can help, no crash, and correct figures
afterwards. Expected values come from the images the test wrote.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from collector.model import EventType
from collector.testbed import MiB, Testbed
from collector.testbed._process import child_env, free_port
from tests.e2e.live import (
    ABORTED,
    NODE,
    LiveCollector,
    actual_layers,
    digest_ref,
    expected_layers,
    layer_of,
    pull_of,
    tag_ref,
)
from tests.e2e.processes import (
    Process,
    api_get,
    api_pulls,
    kill,
    lines_with,
    scrape,
    wait_until,
)

pytestmark = pytest.mark.e2e

TOKEN = "e2e-s3cret-t0ken"
PASSWORD = "e2e-pa55w0rd"


def test_a_killed_registry_fails_the_pull_and_a_restarted_one_serves_the_next(
        testbed: Testbed, repo: str, seed: int) -> None:
    # 16 MiB at 2 MiB/s: what the kernel had buffered between registry and proxy when the
    # registry died (a few MiB) cannot finish the layer
    pushed = testbed.make_image(repo, [16 * MiB], seed=seed)
    (layer,) = pushed.image.layers

    with LiveCollector(testbed) as live:
        errors_before = live.metric("pulltrace_pull_errors_total")
        fetch = testbed.fetch(pushed.ref)
        live.wait_for(lambda ps: (p := pull_of(ps, digest_ref(pushed)))
                      and layer_of(p, layer.digest).downloaded_bytes >= MiB,
                      "the first MiB of the layer")
        testbed.stop_registry(kill=True)
        assert fetch.wait(timeout=60) != 0
        failed = live.wait_for(lambda ps: pull_of(ps, digest_ref(pushed), "failed"),
                               "the pull to fail")
        errors_after = live.metric("pulltrace_pull_errors_total")
        # the collector goes on: it answers and the source keeps reporting
        reports = live.reports()
        live.wait_for(lambda _: live.reports() >= reports + 4, "four more reports")
        health = httpx.get(live.server.url + "/healthz", timeout=5).status_code

        testbed.start_registry()
        testbed.pull(pushed.ref)
        done = live.wait_for(lambda ps: pull_of(ps, tag_ref(testbed, pushed), "completed"),
                             "the pull after the registry came back")
        pulls = live.pulls()
        failed_events = [ev for out in live.outputs() for ev in out.events
                         if ev.type is EventType.PULL_FAILED]

    assert "unexpected EOF" in testbed.fetch_output(fetch)  # what ctr itself says
    assert failed.error == f"layer {layer.digest} {ABORTED}"
    broken = layer_of(failed, layer.digest)
    assert (broken.status.value, broken.total_bytes) == ("failed", layer.size)
    assert MiB <= broken.downloaded_bytes < layer.size
    assert errors_after - errors_before == 1
    assert [(ev.pull.id, ev.pull.error) for ev in failed_events] == [(failed.id, failed.error)]
    assert health == 200
    # the retry is a new pull (containerd dropped the aborted one's manifest): both are listed
    assert done.id != failed.id
    assert sorted((p.image_ref, p.status.value) for p in pulls) == sorted(
        [(digest_ref(pushed), "failed"), (tag_ref(testbed, pushed), "completed")])
    assert actual_layers(done) == expected_layers(pushed)


def test_the_agent_waits_for_containerd_and_then_reports_its_pulls(
        testbed: Testbed, repo: str, seed: int, tmp_path: Path) -> None:
    pushed = testbed.make_image(repo, [2 * MiB], seed=seed)
    api, metrics = free_port(), free_port()
    url = f"http://127.0.0.1:{api}"
    env = child_env({"PULLTRACE_NODE_NAME": NODE, "PULLTRACE_ALLOWED_SOCKET_DIRS":
                     str(testbed.directory)})
    logs = [tmp_path / "collect.log", tmp_path / "agent.log"]
    testbed.stop_containerd()  # a clean stop removes the socket: a node before containerd starts
    assert not testbed.socket_path.exists()
    procs = [Process(["collect", "--db", str(tmp_path / "c.duckdb"), "--listen",
                      f"127.0.0.1:{api}", "--metrics-listen", f"127.0.0.1:{metrics}"],
                     logs[0], env)]
    try:
        procs.append(Process(["agent", "--containerd", str(testbed.socket_path), "--server", url,
                              "--interval", "500ms"], logs[1], env))
        wait_until(lambda: lines_with(logs[1], "waiting for it"), "the agent to wait", logs=logs)
        time.sleep(2)  # checks at about 0, 0.5 and 1.5 s: it goes on waiting, and quietly
        assert scrape(f"http://127.0.0.1:{metrics}/metrics", "pulltrace_agent_reports_total") == 0
        testbed.start_containerd()
        wait_until(lambda: scrape(f"http://127.0.0.1:{metrics}/metrics",
                                  "pulltrace_agent_reports_total") >= 1,
                   "a first report from the agent", logs=logs)
        testbed.pull(pushed.ref)
        name = tag_ref(testbed, pushed)
        wait_until(lambda: any(p["imageRef"] == name and p["status"] == "completed"
                               for p in api_pulls(url)), "the pull at the collector", logs=logs)
        (pull,) = api_pulls(url)
        alive = procs[1].proc.poll() is None
    finally:
        codes = [proc.stop() for proc in reversed(procs)]

    assert alive
    assert codes == [0, 0]
    waiting = lines_with(logs[1], "waiting for it")
    assert len(waiting) == 1
    assert waiting[0].endswith(
        f"WARNING no containerd socket at {testbed.socket_path}; is containerd running? pass "
        "--containerd SOCKET; waiting for it (checking again within 5s)")
    assert len(lines_with(logs[1], f"containerd socket {testbed.socket_path} is there after")) == 1
    assert (pull["nodeName"], pull["status"]) == (NODE, "completed")
    assert [(x["digest"], x["mediaType"], x["totalBytes"], x["downloadedBytes"], x["status"])
            for x in pull["layers"]] == expected_layers(pushed)


def samples_of(url: str, digest: str) -> list[dict]:
    response = httpx.get(url + "/api/v1/export", params={"table": "samples", "format": "jsonl",
                                                          "limit": "100000"}, timeout=10)
    assert response.status_code == 200, response.text
    rows = [json.loads(line) for line in response.content.splitlines()]
    return [row for row in rows if row["digest"] == digest]


def test_the_agent_outlives_the_collector_and_the_pull_continues_after_it_returns(
        testbed: Testbed, repo: str, seed: int, tmp_path: Path) -> None:
    # 16 MiB at 2 MiB/s: about 8 s, of which the collector misses a few
    pushed = testbed.make_image(repo, [16 * MiB], seed=seed)
    (layer,) = pushed.image.layers
    api, metrics = free_port(), free_port()
    url = f"http://127.0.0.1:{api}"
    env = child_env({"PULLTRACE_NODE_NAME": NODE, "PULLTRACE_ALLOWED_SOCKET_DIRS":
                     str(testbed.directory), "PULLTRACE_AGENT_TOKEN": TOKEN})
    collect = ["--log-level", "debug", "collect", "--db", str(tmp_path / "c.duckdb"), "--listen",
               f"127.0.0.1:{api}", "--metrics-listen", f"127.0.0.1:{metrics}"]
    logs = [tmp_path / name for name in ("collect-1.log", "collect-2.log", "agent.log",
                                         "agent-basic.log")]
    agent = ["--log-level", "debug", "agent", "--containerd", str(testbed.socket_path),
             "--interval", "500ms", "--server"]
    first = Process(collect, logs[0], env)
    procs = [first]
    try:
        wait_until(lambda: api_get(url, "/readyz") is not None, "the collector", logs=logs)
        procs.append(Process([*agent, url], logs[2], env))
        # credentials in the URL, no token: the collector refuses it, and the log hides them
        procs.append(Process([*agent, url.replace("//", f"//pulltrace:{PASSWORD}@")], logs[3],
                             {k: v for k, v in env.items() if k != "PULLTRACE_AGENT_TOKEN"}))
        wait_until(lambda: scrape(f"http://127.0.0.1:{metrics}/metrics",
                                  "pulltrace_agent_reports_total") >= 1, "a first report",
                   logs=logs)

        fetch = testbed.fetch(pushed.ref)
        wait_until(lambda: any(x["digest"] == layer.digest and x["downloadedBytes"] >= 2 * MiB
                               for p in api_pulls(url) for x in p["layers"]),
                   "two MiB of the layer at the collector", logs=logs)
        (before,) = api_pulls(url)
        kill(first)
        wait_until(lambda: lines_with(logs[2], "unreachable"), "the agent to notice",
                   logs=logs)
        seen_when_down = layer_of_json(before, layer.digest)["downloadedBytes"]

        procs.append(Process(collect, logs[1], env))
        wait_until(lambda: (pulls := api_get(url, "/api/v1/pulls")) is not None
                   and any(p["status"] == "completed" for p in pulls.json()["pulls"]),
                   "the pull to complete at the restarted collector", timeout=60, logs=logs)
        assert fetch.wait(timeout=60) == 0, testbed.fetch_output(fetch)
        (after,) = api_pulls(url)
        samples = samples_of(url, layer.digest)
        agents_alive = [p.proc.poll() is None for p in procs[1:3]]
    finally:
        # agents first: a collector stopped under them would be one more outage to log
        codes = [proc.stop() for proc in (*procs[1:3], *procs[3:], first)]

    assert agents_alive == [True, True]
    assert codes[:3] == [0, 0, 0]  # both agents and the second collector stop cleanly
    # one pull throughout: the restarted collector recovered it and went on with it
    assert (after["id"], after["startedAt"]) == (before["id"], before["startedAt"])
    assert after["status"] == "completed"
    assert [(x["digest"], x["mediaType"], x["totalBytes"], x["downloadedBytes"], x["status"])
            for x in after["layers"]] == expected_layers(pushed)
    # every byte after the first sample counted once: none lost in the gap, none twice
    assert sum(s["fetched_bytes"] for s in samples) == layer.size - samples[0]["downloaded_bytes"]
    assert samples[0]["downloaded_bytes"] < seen_when_down
    downloaded = [s["downloaded_bytes"] for s in samples]
    assert downloaded == sorted(downloaded)
    # the agent said it lost the collector once, and once that reports went through again
    assert len(lines_with(logs[2], f"collector at {url}/api/v1/report unreachable")) == 1
    assert len(lines_with(logs[2], f"reports to {url}/api/v1/report are delivered again")) == 1
    shown = url.replace("//", "//pulltrace:***@")
    assert lines_with(logs[3], f"collector at {shown}/api/v1/report wants a token (401)")
    for log in logs:
        text = log.read_text(errors="replace")
        assert TOKEN not in text, log
        assert PASSWORD not in text, log


def layer_of_json(pull: dict, digest: str) -> dict:
    (found,) = [x for x in pull["layers"] if x["digest"] == digest]
    return found
