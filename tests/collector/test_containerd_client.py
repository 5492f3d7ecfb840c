"""ContainerdClient against a real containerd started by the test (never the system one).

The e2e tests start containerd with its own root, state and sockets under a short temp dir and
stop it by pid. Without containerd they are skipped (failed when CI=true).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from collector.errors import ContainerdError
from collector.sources.containerd import (
    BlobInfo,
    ContainerdClient,
    ContainerdNotFoundError,
    ContainerdUnavailableError,
    ImageRecord,
    IngestStatus,
)

MiB = 1 << 20
INSTALL = "apt-get install -y containerd"
T = TypeVar("T")
COARSE_CLOCK_SLACK_NS = 25_000_000


# -- a containerd of our own ---------------------------------------------------------------------


def _require_containerd() -> None:
    missing = [tool for tool in ("containerd", "ctr") if shutil.which(tool) is None]
    if not missing:
        return
    message = f"{' and '.join(missing)} not found; install with: {INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


_CONFIG = """\
version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/t.sock"

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

# the blobs of these tests belong to no image: keep the garbage collector from removing them
[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "1h"
  mutation_threshold = 1000000
"""


class Containerd:
    """One containerd process with everything under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = str(directory / "c.sock")
        self.config = directory / "config.toml"
        self.config.write_text(_CONFIG.format(d=directory))
        self.log_path = directory / "containerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["containerd", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if os.path.exists(self.socket):
                with ContainerdClient(self.socket, timeout=1) as probe:
                    try:
                        probe.list_statuses()
                    except ContainerdUnavailableError:
                        pass
                    else:
                        return
            time.sleep(0.02)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"containerd did not start; its log ends with:\n{tail}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def ctr(self, *args: str, namespace: str = "k8s.io", stdin: bytes | None = None) -> str:
        proc = subprocess.run(
            ["ctr", "--address", self.socket, "--namespace", namespace, *args],
            input=stdin,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed: {proc.stderr.decode()}")
        return proc.stdout.decode()

    def ingest_writer(
        self, ref: str, total: int, digest: str, namespace: str = "k8s.io"
    ) -> subprocess.Popen[bytes]:
        """`ctr content ingest` reading from a pipe the test writes to."""
        return subprocess.Popen(
            [
                *("ctr", "--address", self.socket, "--namespace", namespace),
                *("content", "ingest", "--expected-size", str(total)),
                *("--expected-digest", digest, ref),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    _require_containerd()
    directory = Path(tempfile.mkdtemp(prefix="ptc-", dir="/tmp"))
    daemon = Containerd(directory)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def client(containerd: Containerd) -> Iterator[ContainerdClient]:
    with ContainerdClient(containerd.socket) as c:
        yield c


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def _status(client: ContainerdClient, ref: str) -> IngestStatus | None:
    found = [s for s in client.list_statuses() if s.ref == ref]
    return found[0] if found else None


def _status_at(
    client: ContainerdClient, ref: str, offset: int
) -> Callable[[], IngestStatus | None]:
    def probe() -> IngestStatus | None:
        st = _status(client, ref)
        return st if st is not None and st.offset == offset else None

    return probe


def _finish(writer: subprocess.Popen[bytes]) -> None:
    """Reap a writer process and close its pipes."""
    if writer.poll() is None:
        writer.kill()
    writer.wait(timeout=10)
    for pipe in (writer.stdin, writer.stderr):
        if pipe is not None:
            with contextlib.suppress(BrokenPipeError):
                pipe.close()


# -- without containerd --------------------------------------------------------------------------


def test_missing_socket_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nothing.sock"
    with pytest.raises(ContainerdError, match=r"no containerd socket at .*nothing\.sock") as info:
        ContainerdClient(str(path))
    assert "--containerd" in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_a_file_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("")
    with pytest.raises(ContainerdError, match="is a regular file, not a socket"):
        ContainerdClient(str(path))


def test_empty_socket_path_and_namespace_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ContainerdError, match="--containerd"):
        ContainerdClient("")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp_path / "s"))
        with pytest.raises(ContainerdError, match="namespace"):
            ContainerdClient(str(tmp_path / "s"), namespace="")
    finally:
        sock.close()


def test_nothing_listening_is_unavailable(tmp_path: Path) -> None:
    # a socket file that nobody listens on: what a crashed containerd leaves behind
    path = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        with ContainerdClient(f"unix://{path}", timeout=2) as c:
            assert c.socket_path == str(path)
            with pytest.raises(ContainerdUnavailableError, match="not answering") as info:
                c.list_statuses()
            assert info.value.__cause__ is not None
    finally:
        sock.close()


def test_a_silent_server_is_unavailable(tmp_path: Path) -> None:
    # accepts connections and never answers (a hung daemon, or not a gRPC server at all)
    path = tmp_path / "silent.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(8)
        with ContainerdClient(str(path), timeout=0.5) as c:
            start = time.monotonic()
            with pytest.raises(ContainerdUnavailableError):
                c.info("sha256:" + "0" * 64)
            assert time.monotonic() - start < 5
    finally:
        sock.close()


def test_a_closed_client_says_so(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        c = ContainerdClient(str(path))
        c.close()
        c.close()
        with pytest.raises(ContainerdError, match="closed"):
            c.list_images()
    finally:
        sock.close()


def test_a_single_filter_string_is_one_filter() -> None:
    from collector.sources.containerd import _filters

    assert _filters("ref==a") == ["ref==a"]
    assert _filters(("ref==a", "ref==b")) == ["ref==a", "ref==b"]


# -- against a real containerd -------------------------------------------------------------------


@dataclass
class Committed:
    data: bytes
    digest: str
    before_ns: int
    after_ns: int


@pytest.fixture(scope="module")
def committed(containerd: Containerd) -> Committed:
    """A 2.5 MiB blob committed with `ctr content ingest`, then labelled."""
    data = os.urandom(5 * MiB // 2 + 7)
    digest = _digest(data)
    before = time.time_ns()
    containerd.ctr(
        *("content", "ingest", "--expected-size", str(len(data))),
        *("--expected-digest", digest, "committed-blob"),
        stdin=data,
    )
    after = time.time_ns()
    containerd.ctr(
        "content",
        "label",
        digest,
        "containerd.io/distribution.source.registry.local=team/app",
        "pulltrace.test/kind=blob",
    )
    return Committed(data, digest, before, after)


@pytest.mark.e2e
def test_info_of_a_committed_blob(client: ContainerdClient, committed: Committed) -> None:
    info = client.info(committed.digest)
    assert isinstance(info, BlobInfo)
    assert info.digest == committed.digest
    assert info.size == len(committed.data)
    assert committed.before_ns <= info.created_at_ns <= committed.after_ns
    assert info.updated_at_ns >= info.created_at_ns
    assert info.labels == {
        "containerd.io/distribution.source.registry.local": "team/app",
        "pulltrace.test/kind": "blob",
    }


@pytest.mark.e2e
def test_info_of_a_missing_blob_is_none(client: ContainerdClient) -> None:
    assert client.info("sha256:" + "0" * 64) is None


@pytest.mark.e2e
def test_an_invalid_digest_is_an_error_naming_it(client: ContainerdClient) -> None:
    with pytest.raises(ContainerdError, match=r"INVALID_ARGUMENT.*not-a-digest"):
        client.info("not-a-digest")


@pytest.mark.e2e
def test_list_content_and_filters(client: ContainerdClient, committed: Committed) -> None:
    everything = {b.digest: b for b in client.list_content()}
    assert committed.digest in everything
    listed = everything[committed.digest]
    assert listed.size == len(committed.data)
    assert listed.labels["pulltrace.test/kind"] == "blob"
    # containerd 1.6 leaves updated_at unset (Go's zero time) in List; it reads as 0
    assert listed.updated_at_ns == 0
    assert listed.created_at_ns == client.info(committed.digest).created_at_ns  # type: ignore[union-attr]

    assert [b.digest for b in client.list_content([f"digest=={committed.digest}"])] == [
        committed.digest
    ]
    by_label = client.list_content(['labels."containerd.io/distribution.source.registry.local"'])
    assert committed.digest in {b.digest for b in by_label}
    # label keys with "/" or "." must be quoted in containerd's filter syntax
    assert client.list_content(['labels."pulltrace.test/kind"==nothing']) == []
    assert committed.digest in {
        b.digest for b in client.list_content(['labels."pulltrace.test/kind"==blob'])
    }
    with pytest.raises(ContainerdError, match="INVALID_ARGUMENT"):
        client.list_content(["this is == not a filter"])


@pytest.mark.e2e
def test_read_whole_and_in_parts(client: ContainerdClient, committed: Committed) -> None:
    data = committed.data
    assert client.read(committed.digest, max_bytes=len(data)) == data
    assert client.read(committed.digest, offset=MiB + 3, size=1000) == data[MiB + 3 : MiB + 1003]
    assert client.read(committed.digest, offset=2 * MiB) == data[2 * MiB :]
    assert client.read(committed.digest, offset=len(data)) == b""
    # a size past the end is cut at the end
    assert client.read(committed.digest, offset=len(data) - 5, size=100) == data[-5:]


@pytest.mark.e2e
def test_read_is_bounded(client: ContainerdClient, committed: Committed) -> None:
    with pytest.raises(ContainerdError, match="larger than max_bytes=1000"):
        client.read(committed.digest, max_bytes=1000)
    with pytest.raises(ValueError, match="max_bytes"):
        client.read(committed.digest, size=2000, max_bytes=1000)
    with pytest.raises(ContainerdError, match="OUT_OF_RANGE"):
        client.read(committed.digest, offset=len(committed.data) + 1)
    with pytest.raises(ContainerdNotFoundError):
        client.read("sha256:" + "1" * 64)


@pytest.mark.e2e
def test_an_ingest_in_progress(containerd: Containerd, client: ContainerdClient) -> None:
    total = 3 * MiB + 100
    data = os.urandom(total)
    digest = _digest(data)
    ref = "layer-" + digest
    t0 = time.time_ns()
    writer = containerd.ingest_writer(ref, total, digest)
    assert writer.stdin is not None
    try:
        # the ingest exists as soon as the writer opens it: offset 0, updated_at ~ started_at
        opened = _wait_for("the ingest", lambda: _status(client, ref))
        assert opened.offset == 0
        assert opened.total == total
        assert abs(opened.updated_at_ns - opened.started_at_ns) <= COARSE_CLOCK_SLACK_NS
        assert t0 <= opened.started_at_ns <= time.time_ns()
        # ctr (like a pull) writes in 1 MiB steps: the partial MiB is not visible
        t1 = time.time_ns()
        writer.stdin.write(data[: MiB + 1000])
        writer.stdin.flush()
        one = _wait_for("offset 1 MiB", _status_at(client, ref, MiB))
        assert one.total == total
        assert one.started_at_ns == opened.started_at_ns
        # while a writer is attached, updated_at is the data file's mtime: the kernel's coarse
        # clock, which may lag the write by a tick (4 ms at HZ=250, 10 ms at HZ=100)
        assert t1 - COARSE_CLOCK_SLACK_NS <= one.updated_at_ns <= time.time_ns()
        time.sleep(0.3)
        still = _status(client, ref)
        assert still == one  # nothing moved: not the 1000 bytes, not updated_at

        writer.stdin.write(data[MiB + 1000 : 2 * MiB])
        writer.stdin.flush()
        two = _wait_for("offset 2 MiB", _status_at(client, ref, 2 * MiB))
        assert two.started_at_ns == opened.started_at_ns
        assert two.updated_at_ns > one.updated_at_ns
        # the ingest is only visible in its namespace
        with ContainerdClient(containerd.socket, namespace="other") as other:
            assert ref not in {s.ref for s in other.list_statuses()}
        # filters go through
        assert [s.ref for s in client.list_statuses([f"ref=={ref}"])] == [ref]
        assert client.list_statuses(["ref==no-such-ref"]) == []

        # the rest: committed, the ingest vanishes and the blob exists
        writer.stdin.write(data[2 * MiB :])
        writer.stdin.close()
        assert writer.wait(timeout=30) == 0, writer.stderr.read() if writer.stderr else b""
        assert _status(client, ref) is None
        blob = client.info(digest)
        assert blob is not None
        assert blob.size == total
        assert blob.created_at_ns >= two.updated_at_ns
    finally:
        _finish(writer)


@pytest.mark.e2e
def test_an_abandoned_ingest_stays_frozen(containerd: Containerd, client: ContainerdClient) -> None:
    total = 3 * MiB
    data = os.urandom(total)
    digest = _digest(data)
    ref = "layer-" + digest
    writer = containerd.ingest_writer(ref, total, digest)
    assert writer.stdin is not None
    try:
        writer.stdin.write(data[: 2 * MiB])
        writer.stdin.flush()
        before = _wait_for("offset 2 MiB", _status_at(client, ref, 2 * MiB))
        writer.kill()  # the client dies mid-write, like a killed pull
        writer.wait(timeout=10)
        time.sleep(0.5)
        after = _status(client, ref)
        assert after is not None, "the ingest is kept when its writer dies"
        assert (after.offset, after.total, after.started_at_ns) == (
            before.offset,
            before.total,
            before.started_at_ns,
        )
        # when the writer goes away containerd restamps updated_at once with the time it kept
        # in memory (a few ms after the data file's mtime); the offset is what tells progress
        assert 0 <= after.updated_at_ns - before.updated_at_ns < 1_000_000_000
        time.sleep(0.3)
        assert _status(client, ref) == after
        assert client.info(digest) is None
    finally:
        _finish(writer)


@pytest.mark.e2e
def test_namespace_header_scopes_content(containerd: Containerd, committed: Committed) -> None:
    with ContainerdClient(containerd.socket, namespace="other") as other:
        assert other.namespace == "other"
        assert other.info(committed.digest) is None
        assert committed.digest not in {b.digest for b in other.list_content()}
    with ContainerdClient(containerd.socket, namespace="k8s.io") as k8s:
        assert k8s.info(committed.digest) is not None


def _oci_archive(tag: str) -> tuple[bytes, dict[str, bytes]]:
    """A one-layer OCI image archive; returns (tar bytes, blobs by role)."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w") as t:
        payload = b"hello from pulltrace\n"
        member = tarfile.TarInfo("hello.txt")
        member.size = len(payload)
        t.addfile(member, io.BytesIO(payload))
    diff = layer_tar.getvalue()
    layer = gzip.compress(diff, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [_digest(diff)]},
            "config": {},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _digest(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "annotations": {"org.opencontainers.image.ref.name": tag},
                }
            ],
        }
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:

        def add(name: str, content: bytes) -> None:
            member = tarfile.TarInfo(name)
            member.size = len(content)
            t.addfile(member, io.BytesIO(content))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for blob in (layer, config, manifest):
            add(f"blobs/sha256/{_digest(blob).removeprefix('sha256:')}", blob)
    return out.getvalue(), {"layer": layer, "config": config, "manifest": manifest}


@pytest.mark.e2e
def test_images_and_manifest_labels(containerd: Containerd, client: ContainerdClient) -> None:
    archive, blobs = _oci_archive("v1")
    path = containerd.directory / "image.tar"
    path.write_bytes(archive)
    name = "test.local/pulltrace/app:v1"
    before = time.time_ns()
    containerd.ctr(
        *("images", "import", "--no-unpack", "--all-platforms"),
        *("--base-name", "test.local/pulltrace/app", str(path)),
    )
    containerd.ctr("images", "label", name, "pulltrace.test/team=core")
    manifest = blobs["manifest"]

    image = client.get_image(name)
    assert isinstance(image, ImageRecord)
    assert image.name == name
    assert image.target_digest == _digest(manifest)
    assert image.target_media_type == "application/vnd.oci.image.manifest.v1+json"
    assert image.target_size == len(manifest)
    assert image.labels == {"pulltrace.test/team": "core"}
    assert before <= image.created_at_ns <= image.updated_at_ns <= time.time_ns()
    assert image in client.list_images()
    assert client.list_images([f"name=={name}"]) == [image]
    assert client.list_images(["name==test.local/none:v0"]) == []
    assert client.get_image("test.local/none:v0") is None

    # the manifest as the poller sees it: its bytes, and labels naming its layers and config
    assert client.read(image.target_digest) == manifest
    info = client.info(image.target_digest)
    assert info is not None
    assert info.labels["containerd.io/gc.ref.content.l.0"] == _digest(blobs["layer"])
    assert info.labels["containerd.io/gc.ref.content.config"] == _digest(blobs["config"])
    with_layer = client.list_content(
        [f'labels."containerd.io/gc.ref.content.l.0"=={_digest(blobs["layer"])}']
    )
    assert [b.digest for b in with_layer] == [image.target_digest]

    with ContainerdClient(containerd.socket, namespace="other") as other:
        assert other.get_image(name) is None
        assert other.list_images() == []


@pytest.mark.e2e
def test_restart_is_unavailable_then_recovers() -> None:
    _require_containerd()
    directory = Path(tempfile.mkdtemp(prefix="ptr-", dir="/tmp"))
    daemon = Containerd(directory)
    try:
        daemon.start()
        with ContainerdClient(daemon.socket, timeout=2) as c:
            assert c.list_statuses() == []
            daemon.stop()
            with pytest.raises(ContainerdUnavailableError, match="no containerd socket"):
                c.list_statuses()
            daemon.start()
            # the same client reconnects on its own once containerd is back
            start = time.monotonic()

            def answered() -> list[IngestStatus] | None:
                try:
                    return c.list_statuses()
                except ContainerdUnavailableError:
                    return None

            assert _wait_for("reconnect", answered, timeout=10) == []
            assert time.monotonic() - start < 5
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.e2e
def test_client_is_usable_from_threads(client: ContainerdClient, committed: Committed) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                assert client.info(committed.digest) is not None
                client.list_statuses()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
