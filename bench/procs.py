"""The processes of an HTTP benchmark: a server under test, load generators, SSE clients.

Every one is a real subprocess on 127.0.0.1: the collector is ``python -m collector.cli
collect`` on a DuckDB file in a temporary folder, exactly as it is deployed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench import machine
from bench.fleet import FleetShape

START_TIMEOUT = 60.0


class BenchError(Exception):
    """A benchmark could not run (a process did not start, answered wrong, ...)."""


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen[bytes],
              timeout: float = START_TIMEOUT) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if (m := re.search(pattern, text)) is not None:
            return m
        if proc.poll() is not None:
            raise BenchError(f"{proc.args} exited with {proc.returncode}: {text[-2000:]}")
        time.sleep(0.05)
    raise BenchError(f"{proc.args} did not print {pattern!r} within {timeout:.0f}s")


@dataclass
class Server:
    """A server under test, its log, and where it listens."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str  # http://host:port
    log: Path
    metrics_url: str | None = None
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def memory(self) -> dict[str, int]:
        return machine.status(self.pid)

    def cpu(self) -> float:
        return machine.cpu_seconds(self.pid)

    def thread_times(self) -> dict[int, tuple[float, float]]:
        """Per thread: (CPU seconds, seconds runnable but waiting for a core) so far."""
        found: dict[int, tuple[float, float]] = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
                waited = int((task / "schedstat").read_text().split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended meanwhile
            fields = stat[stat.rindex(")") + 2:].split()
            found[int(task.name)] = ((int(fields[11]) + int(fields[12])) / machine.CLOCK_TICKS,
                                     waited)
        return found

    def metrics(self) -> dict[str, float]:
        """The collector's Prometheus counters and gauges, unlabelled ones by name and
        labelled ones summed."""
        if self.metrics_url is None:
            return {}
        with urllib.request.urlopen(self.metrics_url, timeout=30) as resp:
            text = resp.read().decode()
        found: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            name = name.split("{", 1)[0]
            found[name] = found.get(name, 0.0) + float(value)
        return found

    def stop(self, timeout: float = 120.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in self._files:
            f.close()


def start_collector(tmp: Path, name: str = "collector", extra: tuple[str, ...] = ()) -> Server:
    db = tmp / f"{name}.duckdb"
    log = tmp / f"{name}.log"
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "collect", "--db", str(db),
         "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *extra],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=free_env())
    try:
        m = _wait_for(log, r"API (http://\S+); metrics (http://\S+)", proc)
    except BaseException:
        proc.kill()
        proc.wait()
        out.close()
        raise
    return Server(name, proc, m.group(1), log, m.group(2), [out])


def start_null_server(tmp: Path, extra: tuple[str, ...] = ()) -> Server:
    log = tmp / "null-server.log"
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "bench.null_server", *extra],
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        m = _wait_for(log, r"listening (http://\S+)", proc)
    except BaseException:
        proc.kill()
        proc.wait()
        out.close()
        raise
    return Server("null", proc, m.group(1), log, None, [out])


@dataclass
class Load:
    """One load-generator run: N agents on a fixed schedule."""

    agents: int
    shape: FleetShape
    interval: float = 1.0
    warmup: float = 3.0
    duration: float = 10.0
    drain: float = 10.0
    min_gap: float = 0.52


def run_load(server: Server, load: Load) -> dict[str, Any]:
    """Run the load generator against ``server``; adds the server's CPU, memory and (for a
    collector) its own counters over the measured window to the generator's figures."""
    shape = load.shape.__dict__ | {"layers": list(load.shape.layers)}
    cmd = [sys.executable, "-m", "bench.loadgen", "--url", server.url + "/api/v1/report",
           "--agents", str(load.agents), "--interval", str(load.interval),
           "--warmup", str(load.warmup), "--duration", str(load.duration),
           "--drain", str(load.drain), "--min-gap", str(load.min_gap),
           "--shape", json.dumps(shape)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first:
            proc.wait()
            raise BenchError(f"the load generator exited with {proc.returncode} before "
                             "starting")
        start = json.loads(first)["start"]
        lo, hi = start + load.warmup, start + load.warmup + load.duration
        time.sleep(max(0.0, lo - time.monotonic()))
        cpu0, counters0, threads0 = server.cpu(), server.metrics(), server.thread_times()
        time.sleep(max(0.0, hi - time.monotonic()))
        cpu1, mem, counters1 = server.cpu(), server.memory(), server.metrics()
        threads1 = server.thread_times()
        rest = proc.stdout.read()
        proc.wait()
    if proc.returncode != 0 or not rest.strip():
        raise BenchError(f"the load generator failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(rest.splitlines()[-1])
    result["server_cpu"] = (cpu1 - cpu0) / load.duration
    result["server_threads"] = _thread_shares(server.pid, threads0, threads1, load.duration)
    result["server_rss_kb"] = mem.get("VmRSS")
    result["server_hwm_kb"] = server.memory().get("VmHWM")
    if counters0:
        result["server_reports_per_s"] = (counters1.get("pulltrace_agent_reports_total", 0.0)
                                          - counters0.get("pulltrace_agent_reports_total", 0.0)
                                          ) / load.duration
        result["server_samples_per_s"] = (counters1.get("pulltrace_samples_total", 0.0)
                                          - counters0.get("pulltrace_samples_total", 0.0)
                                          ) / load.duration
        result["sse_clients_active"] = counters1.get("pulltrace_sse_clients_active")
        commits = (counters1.get("pulltrace_commit_reports_count", 0.0)
                   - counters0.get("pulltrace_commit_reports_count", 0.0))
        if commits:
            result["commits"] = {
                "per_s": commits / load.duration,
                "mean_reports": (counters1["pulltrace_commit_reports_sum"]
                                 - counters0["pulltrace_commit_reports_sum"]) / commits,
                "mean_s": (counters1["pulltrace_commit_seconds_sum"]
                           - counters0["pulltrace_commit_seconds_sum"]) / commits}
    if result.get("errors"):
        raise BenchError(f"{server.name}: {result['errors'][0]}")
    return result


def _thread_shares(pid: int, before: dict[int, tuple[float, float]],
                   after: dict[int, tuple[float, float]],
                   seconds: float) -> dict[str, dict[str, float]]:
    """Cores used and cores' worth of waiting for a CPU, of the main thread and of the
    others together (the store's thread, DuckDB's), over the window."""
    shares = {"main": {"cpu": 0.0, "wait": 0.0}, "others": {"cpu": 0.0, "wait": 0.0}}
    for tid, (cpu, wait) in after.items():
        cpu0, wait0 = before.get(tid, (0.0, 0.0))
        side = shares["main" if tid == pid else "others"]
        side["cpu"] += (cpu - cpu0) / seconds
        side["wait"] += (wait - wait0) / seconds
    return shares


@dataclass
class SseClients:
    """A process holding event-stream clients that read everything, or never read."""

    proc: subprocess.Popen[bytes]

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        lines = out.decode().splitlines()
        return json.loads(lines[-1]) if lines else {}


def start_sse_clients(server: Server, count: int, *, read: bool) -> SseClients:
    cmd = [sys.executable, "-m", "bench.sse_clients", "--url",
           server.url + "/api/v1/events", "--clients", str(count)]
    if not read:
        cmd.append("--no-read")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(b"connected"):
        proc.kill()
        proc.wait()
        raise BenchError(f"SSE clients did not connect: {line!r}")
    return SseClients(proc)


def free_env() -> dict[str, str]:
    """The environment without the collector's own variables (a bench sets its flags)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PULLTRACE_")}
