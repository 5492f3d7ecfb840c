"""`python -m collector.cli collect` as a real child process, for crash and failure tests."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str, preexec_fn: Callable[[], None] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One `pulltrace` command to its end."""
    # preexec_fn runs between fork and exec: only for tests that start no threads.
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          preexec_fn=preexec_fn)


class CollectProcess:
    """A collector on fixed free ports (kept across restarts), its output in a log file."""

    def __init__(self, db: Path, log: Path, *, args: Sequence[str] = ()) -> None:
        self.db = db
        self.log_path = log
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def processes(self) -> list[int]:
        """The collector's pid and its children's (the database writer)."""
        pids = [self.pid]
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def limit_file_size(self, soft: int) -> None:
        """Set RLIMIT_FSIZE (soft) on the collector and its writer, as a full disk would
        refuse their writes; ``resource.RLIM_INFINITY`` lifts it."""
        for pid in self.processes():
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))

    def start(self, timeout: float = 60) -> None:
        """Start and wait until /readyz answers 200."""
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "collect", "--db", str(self.db),
             "--listen", f"127.0.0.1:{self.port}",
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *self.args],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                self._close_log()
                pytest.fail(f"collector exited ({self.proc.returncode}): {self.log()}")
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"collector did not become ready: {self.log()}")

    def kill(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close_log()

    def stop(self) -> int:
        """SIGTERM and wait: the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"collector did not stop on SIGTERM: {self.log()}")
        self._close_log()
        return int(self.proc.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> CollectProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
