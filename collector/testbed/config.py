"""What the testbed needs from the machine, and the config files of its services."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

TOOLS = ("containerd", "ctr", "docker-registry", "skopeo")
INSTALL_COMMAND = "apt-get install -y containerd docker-registry skopeo"
# kubelet's namespace: a collector watching a real node sees pulls there.
NAMESPACE = "k8s.io"
# The CRI plugin would want a CNI setup and a sandbox image; the snapshotters need kernel features
# or tools a test machine lacks. Fetching content needs none of them.
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
)
SOCKET_NAME = "c.sock"
# sun_path holds 108 bytes including the terminating NUL; leave room for the ".ttrpc" sibling.
_MAX_SOCKET_PATH = 100


def missing_tools() -> list[str]:
    """The external programs the testbed needs that are not on PATH."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def install_message(missing: Sequence[str] | None = None) -> str:
    """One line naming the absent tools and the command that installs them."""
    absent = missing_tools() if missing is None else list(missing)
    return f"testbed needs {', '.join(absent)}: install with `{INSTALL_COMMAND}`"


def make_testbed_dir() -> Path:
    """A fresh private temp dir, short enough to hold containerd's unix sockets."""
    base = tempfile.gettempdir()
    # A long TMPDIR (macOS, nested CI dirs) would push the socket past the sun_path limit.
    if len(base) + len(f"/pt-XXXXXXXX/{SOCKET_NAME}.ttrpc") > _MAX_SOCKET_PATH:
        base = "/tmp"  # noqa: S108 - mkdtemp below still makes a private, unique dir
    return Path(tempfile.mkdtemp(prefix="pt-", dir=base))


def _quoted(value: str | Path) -> str:
    # JSON string escapes are valid in TOML basic strings and YAML double-quoted strings alike.
    return json.dumps(str(value))


def containerd_config(directory: Path, socket_path: Path) -> str:
    """A containerd 1.6 config (version 2) that keeps every path inside ``directory``."""
    plugins = ", ".join(_quoted(p) for p in DISABLED_PLUGINS)
    return f"""version = 2
root = {_quoted(directory / "root")}
state = {_quoted(directory / "state")}
disabled_plugins = [{plugins}]

[grpc]
  address = {_quoted(socket_path)}

[ttrpc]
  address = {_quoted(str(socket_path) + ".ttrpc")}

# The default, /opt/containerd, is shared with a system containerd.
[plugins."io.containerd.internal.v1.opt"]
  path = {_quoted(directory / "opt")}
"""


def registry_config(storage: Path, addr: str) -> str:
    """A docker-registry (distribution 2.x) config: filesystem storage, plain HTTP on ``addr``."""
    return f"""version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {_quoted(storage)}
  delete:
    enabled: true
http:
  addr: {addr}
"""
