"""Background processes of the testbed: started with a log file, stopped by their own pid.

Never by name: a system containerd (or another testbed) may run on the same machine, and a
``pkill containerd`` would take it down too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from collector.errors import TestbedError

_POLL = 0.01
# Proxy variables would route a child's registry traffic somewhere else entirely.
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env.update(extra or {})
    return env


def die_with_parent_prefix() -> list[str]:
    """Command prefix that kills the child when the process that started it dies.

    Without it, a test run killed with -9 leaves containerd and the registry running forever.
    ``setpriv`` sets the flag and then execs the real command, so the child keeps its pid.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def free_port() -> int:
    # Another process may grab the port before the service binds it; the service then fails to
    # start and the error shows its log, which is rare enough for a testbed.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class Service:
    """One long-running child process with its log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = child_env(env)
        self._prefix = die_with_parent_prefix() if die_with_parent else []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running():
            raise TestbedError(f"{self.name} is already running (pid {self.pid})")
        with self.log_path.open("ab") as log:
            log.write(f"--- start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*self._prefix, *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
            )

    def wait_ready(self, ready: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll ``ready`` until it holds; return the seconds it took.

        Fails fast when the process dies, with the end of its log: that is where the reason is.
        """
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if ready():
                return time.monotonic() - started
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise TestbedError(
                    f"{self.name} exited (code {code}) before {what}; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"{self.name} not {what} after {timeout:.0f} s; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(_POLL)

    def signal(self, signum: int) -> None:
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, signum)

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop by pid: SIGKILL at once with ``kill``, else SIGTERM, then SIGKILL on timeout."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            # A stopped (SIGSTOP) process would hold SIGTERM until it is continued.
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(timeout)


def unix_socket_answers(path: Path) -> bool:
    """True once something accepts connections on ``path`` (a stale socket file refuses)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True
