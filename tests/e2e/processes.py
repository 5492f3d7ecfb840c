"""`pulltrace` commands in child processes, and reading them from outside (metrics, API, logs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families


class Process:
    """A `pulltrace` command in a child process, stopped by its pid."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "collector.cli", *args],
                                         stdout=out, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL)

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=20)


def scrape(url: str, name: str) -> float:
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return -1.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


def wait_until(predicate, what: str, timeout: float = 30.0, logs: list[Path] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-2000:]}" for p in logs)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.1)


def api_pulls(url: str) -> list[dict]:
    return httpx.get(url + "/api/v1/pulls", timeout=5).json()["pulls"]


def kill(process: Process) -> int:
    """SIGKILL, as the OOM killer or a node failure would: no clean shutdown."""
    process.proc.kill()
    return process.proc.wait(timeout=20)


def lines_with(log: Path, text: str) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if text in line]


def api_get(url: str, path: str) -> httpx.Response | None:
    """GET, or None while nothing answers there (a collector being restarted)."""
    try:
        return httpx.get(url + path, timeout=5)
    except httpx.HTTPError:
        return None
