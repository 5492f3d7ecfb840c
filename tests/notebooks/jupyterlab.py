"""A JupyterLab server on 127.0.0.1 for browser tests: its own token, root folder, settings and
runtime folders, no browser; stopped (with its kernels) when the test ends."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
RECORDING = REPO / "data" / "recording.jsonl"
# Every cell in the DOM (no virtual scrolling), so the test can see each output.
NOTEBOOK_SETTINGS = {"windowingMode": "none"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JupyterLab:
    def __init__(self, workdir: Path, notebooks: list[str]) -> None:
        self.root = workdir / "root"
        self.root.mkdir(parents=True)
        for name in notebooks:
            shutil.copy(NOTEBOOKS / name, self.root / name)
        settings = workdir / "settings" / "@jupyterlab" / "notebook-extension"
        settings.mkdir(parents=True)
        (settings / "tracker.jupyterlab-settings").write_text(json.dumps(NOTEBOOK_SETTINGS))
        # No "get notified about Jupyter news?" toast over the page.
        labconfig = workdir / "config" / "labconfig"
        labconfig.mkdir(parents=True)
        (labconfig / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(workdir / "config"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(workdir / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(workdir / "workspaces"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "PULLTRACE_RECORDING": str(RECORDING),  # the notebooks' find_recording()
        }
        self.log = (workdir / "jupyterlab.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
             "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
             "--ServerApp.terminals_enabled=False", "--ServerApp.allow_root=True"],
            env=env, cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}; "
                                   f"see {self.log.name}")
            try:
                resp = httpx.get(f"{self.url}/api/status",
                                 headers={"Authorization": f"token {self.token}"}, timeout=2)
                if resp.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f}s")

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def stop(self) -> None:
        """SIGTERM (the server shuts its kernels down), then SIGKILL to the process group if
        it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()

    def __enter__(self) -> JupyterLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
