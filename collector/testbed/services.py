"""A private containerd, registry and throttling proxy on 127.0.0.1, in one temp dir.

    with Testbed(rate=2 * MiB) as bed:
        image = bed.make_image("demo/app", [3 * MiB, 1 * MiB], seed=1)
        bed.pull(image.ref)            # through the proxy: each layer at 2 MiB/s

Every process is started here and stopped here by pid; nothing else on the machine is touched
(a system containerd keeps running). Each service logs to ``<dir>/logs/<name>.log``; a service
that fails to start raises ``TestbedError`` with the end of its log.
"""

from __future__ import annotations

import itertools
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from collector.errors import TestbedError
from collector.testbed._process import (
    Service,
    child_env,
    die_with_parent_prefix,
    free_port,
    tail,
    unix_socket_answers,
)
from collector.testbed.config import (
    NAMESPACE,
    SOCKET_NAME,
    containerd_config,
    install_message,
    make_testbed_dir,
    missing_tools,
    registry_config,
)
from collector.testbed.oci import ImageInfo, Layer, write_image
from collector.testbed.proxy import proxy_argv, proxy_env

MiB = 1024 * 1024


@dataclass(frozen=True)
class PushedImage:
    """An image in the testbed's registry; ``ref`` is ``repo:tag`` without a host."""

    ref: str
    image: ImageInfo


class Testbed:
    """containerd + docker-registry + throttling proxy; use as a context manager."""

    __test__ = False  # pytest would otherwise try to collect it from tests that import it

    def __init__(
        self,
        rate: float = 2 * MiB,
        *,
        chunk: int = 16 * 1024,
        start_timeout: float = 20.0,
        keep_dir: bool = False,
        die_with_parent: bool = True,
    ) -> None:
        """``rate`` is each proxied connection's downstream limit in bytes/s (0: unlimited).

        With ``die_with_parent`` the services are killed when the thread that started them ends
        (Linux ties the parent-death signal to the thread), so start from a long-lived thread.
        ``keep_dir`` leaves the temp dir (logs, content store) behind after ``stop``.
        """
        self.rate = float(rate)
        self.namespace = NAMESPACE
        self.timings: dict[str, float] = {}
        self._chunk = chunk
        self._timeout = start_timeout
        self._keep_dir = keep_dir
        self._die_with_parent = die_with_parent
        self._dir: Path | None = None
        self._services: dict[str, Service] = {}
        self._fetches: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
        self._fetch_ids = itertools.count(1)
        self._registry_port = 0
        self._proxy_port = 0

    # -- paths and addresses -------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise TestbedError("testbed is not started")
        return self._dir

    @property
    def socket_path(self) -> Path:
        return self.directory / SOCKET_NAME

    @property
    def registry_addr(self) -> str:
        return f"127.0.0.1:{self._registry_port}"

    @property
    def proxy_addr(self) -> str:
        return f"127.0.0.1:{self._proxy_port}"

    @property
    def log_dir(self) -> Path:
        return self.directory / "logs"

    def _service(self, name: str) -> Service:
        if name not in self._services:
            raise TestbedError(f"{name} was never started")
        return self._services[name]

    def pid(self, service: str) -> int | None:
        """pid of ``containerd``, ``registry`` or ``proxy`` while it runs."""
        svc = self._services.get(service)
        return svc.pid if svc is not None and svc.running() else None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Testbed:
        missing = missing_tools()
        if missing:
            raise TestbedError(install_message(missing))
        if self._dir is not None:
            raise TestbedError(f"testbed already started in {self._dir}")
        self._dir = make_testbed_dir()
        self.log_dir.mkdir()
        began = time.monotonic()
        try:
            self._write_containerd_config()
            self._write_registry_config()
            self.start_containerd()
            self.start_registry()
            self.start_proxy()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every process this testbed started (by pid) and remove its temp dir."""
        for proc, _ in self._fetches.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for name in ("proxy", "registry", "containerd"):
            if name in self._services:
                self._services[name].stop()
        self._services.clear()
        self._fetches.clear()
        if self._dir is not None and not self._keep_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    # -- containerd ----------------------------------------------------------------------------

    def _write_containerd_config(self) -> None:
        config = containerd_config(self.directory, self.socket_path)
        (self.directory / "containerd.toml").write_text(config)

    def start_containerd(self) -> None:
        svc = self._services.get("containerd") or Service(
            "containerd",
            ["containerd", "--config", str(self.directory / "containerd.toml")],
            self.log_dir / "containerd.log",
            die_with_parent=self._die_with_parent,
        )
        self._services["containerd"] = svc
        svc.start()
        took = svc.wait_ready(
            lambda: unix_socket_answers(self.socket_path), self._timeout, "listening"
        )
        # The socket accepts before every plugin is loaded; a real call proves the API answers.
        self.ctr("version")
        self.timings["containerd"] = took

    def stop_containerd(self, *, kill: bool = False) -> None:
        if "containerd" in self._services:
            self._services["containerd"].stop(kill=kill)

    def restart_containerd(self, *, kill: bool = False) -> None:
        """Stop containerd (SIGKILL with ``kill``) and start it on the same socket and root."""
        self.stop_containerd(kill=kill)
        self.start_containerd()

    # -- registry ------------------------------------------------------------------------------

    def _write_registry_config(self) -> None:
        self._registry_port = free_port()
        config = registry_config(self.directory / "registry", self.registry_addr)
        (self.directory / "registry.yml").write_text(config)

    def _registry_answers(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.registry_addr}/v2/", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start_registry(self) -> None:
        svc = self._services.get("registry") or Service(
            "registry",
            ["docker-registry", "serve", str(self.directory / "registry.yml")],
            self.log_dir / "registry.log",
            die_with_parent=self._die_with_parent,
        )
        self._services["registry"] = svc
        svc.start()
        self.timings["registry"] = svc.wait_ready(self._registry_answers, self._timeout, "serving")

    def stop_registry(self, *, kill: bool = False) -> None:
        if "registry" in self._services:
            self._services["registry"].stop(kill=kill)

    # -- proxy ---------------------------------------------------------------------------------

    def start_proxy(self) -> None:
        """Start the proxy; after a restart it listens on the same port as before."""
        ready = self.directory / "proxy.ready"
        ready.unlink(missing_ok=True)
        self._rate_file.write_text(f"{self.rate}\n")
        svc = Service(
            "proxy",
            proxy_argv(
                listen=f"127.0.0.1:{self._proxy_port}",
                upstream=self.registry_addr,
                rate=self.rate,
                chunk=self._chunk,
                ready_file=ready,
                rate_file=self._rate_file,
            ),
            self.log_dir / "proxy.log",
            env=proxy_env(),
            die_with_parent=self._die_with_parent,
        )
        self._services["proxy"] = svc
        svc.start()
        self.timings["proxy"] = svc.wait_ready(ready.exists, self._timeout, "listening")
        self._proxy_port = int(ready.read_text().strip().rpartition(":")[2])

    @property
    def _rate_file(self) -> Path:
        return self.directory / "proxy.rate"

    def kill_proxy(self) -> None:
        """SIGKILL the proxy: every proxied connection drops at once, as on a network failure."""
        if "proxy" in self._services:
            self._services["proxy"].stop(kill=True)

    def restart_proxy(self, rate: float | None = None) -> None:
        if rate is not None:
            self.rate = float(rate)
        self.kill_proxy()
        self.start_proxy()

    def pause_proxy(self) -> None:
        """Freeze the proxy (SIGSTOP): connections stay open and no byte moves, a stalled pull."""
        self._service("proxy").signal(signal.SIGSTOP)

    def resume_proxy(self) -> None:
        self._service("proxy").signal(signal.SIGCONT)

    def set_rate(self, rate: float) -> None:
        """Change the limit of open and new connections (e.g. to a trickle) without dropping any."""
        self.rate = float(rate)
        self._rate_file.write_text(f"{self.rate}\n")
        self._service("proxy").signal(signal.SIGHUP)

    # -- images and pulls ----------------------------------------------------------------------

    def push(self, oci_dir: Path | str, tag: str, repo: str) -> str:
        """Copy ``oci:DIR:TAG`` into the registry as ``REPO:TAG``; return ``repo:tag``."""
        argv = [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{oci_dir}:{tag}",
            f"docker://{self.registry_addr}/{repo}:{tag}",
        ]
        done = subprocess.run(argv, capture_output=True, env=child_env(), timeout=300, check=False)
        if done.returncode != 0:
            raise TestbedError(
                f"skopeo push of {oci_dir}:{tag} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        return f"{repo}:{tag}"

    def make_image(
        self,
        repo: str,
        layer_sizes: Sequence[int],
        seed: int,
        *,
        tag: str = "v1",
        shared_layers: Sequence[Layer] = (),
    ) -> PushedImage:
        """Write a synthetic image under the testbed dir and push it as ``repo:tag``."""
        oci_dir = self.directory / "images" / repo.replace("/", "_")
        image = write_image(oci_dir, tag, layer_sizes, seed, shared_layers=shared_layers)
        return PushedImage(ref=self.push(oci_dir, tag, repo), image=image)

    def ctr_argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.socket_path), "-n", self.namespace, *args]

    def ctr(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``ctr`` against this containerd and return its stdout."""
        done = subprocess.run(
            self.ctr_argv(*args), capture_output=True, env=child_env(), timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise TestbedError(
                f"ctr {' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        return done.stdout.decode()

    def fetch(
        self, ref: str, via_proxy: bool = True, extra_args: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """Start ``ctr content fetch`` of ``repo:tag``; output goes to a log (see fetch_output).

        The Popen is returned so a test can kill the client mid-pull.
        """
        host = self.proxy_addr if via_proxy else self.registry_addr
        log_path = self.log_dir / f"fetch-{next(self._fetch_ids)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    *(die_with_parent_prefix() if self._die_with_parent else []),
                    *self.ctr_argv(
                        "content", "fetch", "--plain-http", *extra_args, f"{host}/{ref}"
                    ),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
            )
        self._fetches[proc.pid] = (proc, log_path)
        return proc

    def fetch_output(self, proc: subprocess.Popen[bytes]) -> str:
        entry = self._fetches.get(proc.pid)
        if entry is None:
            raise TestbedError(f"pid {proc.pid} is not a fetch of this testbed")
        return entry[1].read_text(errors="replace")

    def pull(self, ref: str, via_proxy: bool = True, timeout: float = 300.0) -> str:
        """Fetch ``repo:tag`` to completion; return ctr's output, raise if it fails."""
        proc = self.fetch(ref, via_proxy=via_proxy)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TestbedError(
                f"fetch of {ref} still running after {timeout:.0f} s; output:\n"
                f"{tail(self._fetches[proc.pid][1])}"
            ) from None
        if code != 0:
            raise TestbedError(
                f"fetch of {ref} failed ({code}); output:\n{tail(self._fetches[proc.pid][1])}"
            )
        return self.fetch_output(proc)

    def content_digests(self) -> set[str]:
        """Digests of the committed blobs in the content store."""
        return set(self.ctr("content", "ls", "--quiet").split())

    def remove_content(self, *digests: str) -> None:
        """Delete blobs, so that a later pull of the same image downloads them again."""
        if digests:
            self.ctr("content", "rm", *digests)
