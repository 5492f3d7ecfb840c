"""Where a containerd socket may be: real Unix sockets, symlinks and `..` paths in temp dirs."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.errors import ConfigError, ContainerdError
from collector.sources.containerd import ContainerdClient
from collector.sources.socket_path import (
    ALLOWED_DIRS_ENV,
    DEFAULT_ALLOWED_DIRS,
    SocketMissingError,
    allowed_dirs,
    check_socket,
    containerd_socket,
    resolve_socket,
)


@pytest.fixture
def bound() -> Iterator[list[socket.socket]]:
    """Sockets a test binds; closed at its end."""
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def bind(held: list[socket.socket], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    held.append(sock)
    return path


def test_a_socket_in_an_allowed_directory_is_its_own_resolved_path(tmp_path, bound):
    sock = bind(bound, tmp_path / "containerd" / "containerd.sock")
    allowed = (str(tmp_path / "containerd") + "/",)
    assert containerd_socket(str(sock), allowed) == str(sock)
    assert containerd_socket(f"unix://{sock}", allowed) == str(sock)
    assert containerd_socket(str(sock)) == str(sock)  # no restriction


def test_a_symlink_is_judged_by_where_it_leads(tmp_path, bound):
    inside = bind(bound, tmp_path / "containerd" / "real.sock")
    link = tmp_path / "containerd" / "containerd.sock"
    link.symlink_to(inside)
    allowed = (str(tmp_path / "containerd"),)
    assert containerd_socket(str(link), allowed) == str(inside)

    outside = bind(bound, tmp_path / "elsewhere" / "other.sock")
    escape = tmp_path / "containerd" / "escape.sock"
    escape.symlink_to(outside)
    with pytest.raises(ConfigError) as info:
        containerd_socket(str(escape), allowed)
    assert str(info.value) == (
        f"containerd socket {outside} (resolved from {escape}) is outside the allowed "
        f"directories ({tmp_path / 'containerd'}); if it is your containerd's socket, allow its "
        f"directory with --allow-socket-dir DIR (or {ALLOWED_DIRS_ENV}=DIR:DIR...)")
    # without a restriction the same link is followed to the socket
    assert containerd_socket(str(escape)) == str(outside)


def test_dot_dot_out_of_an_allowed_directory_is_refused(tmp_path, bound):
    bind(bound, tmp_path / "x.sock")
    (tmp_path / "containerd").mkdir()
    sneaky = f"{tmp_path}/containerd/../x.sock"
    with pytest.raises(ConfigError, match=rf"socket {tmp_path}/x\.sock \(resolved from "
                                          rf"{sneaky}\) is outside"):
        containerd_socket(sneaky, (str(tmp_path / "containerd"),))


def test_a_sibling_directory_with_the_same_prefix_is_not_inside(tmp_path, bound):
    sock = bind(bound, tmp_path / "containerd-evil" / "c.sock")
    with pytest.raises(ConfigError, match="is outside the allowed directories"):
        containerd_socket(str(sock), (str(tmp_path / "containerd"),))
    with pytest.raises(ConfigError, match="is outside"):  # the directory itself is no socket
        resolve_socket(str(tmp_path / "containerd"), (str(tmp_path / "containerd"),))


def test_the_default_directories_resolve_before_they_are_checked():
    # no file is touched: the paths are judged once resolved, before anything is opened
    with pytest.raises(ConfigError, match=r"socket /run/x\.sock \(resolved from "
                                          r"/run/containerd/\.\./x\.sock\) is outside"):
        resolve_socket("/run/containerd/../x.sock", DEFAULT_ALLOWED_DIRS)
    for path in ("/run/containerd/containerd.sock", "/var/run/containerd/containerd.sock"):
        assert resolve_socket(path, DEFAULT_ALLOWED_DIRS) == os.path.realpath(path)


def test_what_is_not_a_socket_says_what_it_is(tmp_path):
    regular = tmp_path / "config.toml"
    regular.write_text("")
    with pytest.raises(ContainerdError) as info:
        check_socket(str(regular))
    assert str(info.value) == (
        f"{regular} is a regular file, not a socket; pass containerd's gRPC socket with "
        "--containerd SOCKET (usually /run/containerd/containerd.sock)")
    assert not isinstance(info.value, SocketMissingError)
    with pytest.raises(ContainerdError, match=rf"^{tmp_path} is a directory, not a socket"):
        check_socket(str(tmp_path))
    with pytest.raises(ContainerdError, match="Not a directory"):
        check_socket(str(regular / "containerd.sock"))


def test_a_missing_socket_can_be_waited_for(tmp_path):
    missing = tmp_path / "gone.sock"
    with pytest.raises(SocketMissingError) as info:
        check_socket(str(missing))
    assert str(info.value) == (f"no containerd socket at {missing}; is containerd running? "
                               "pass --containerd SOCKET")
    assert isinstance(info.value.__cause__, FileNotFoundError)
    dangling = tmp_path / "link.sock"
    dangling.symlink_to(missing)
    with pytest.raises(SocketMissingError,
                       match=rf"no containerd socket at {missing} \(resolved from {dangling}\)"):
        containerd_socket(str(dangling))


def test_allowed_directories_from_flags_and_environment():
    assert allowed_dirs([], {}, restrict=False) is None
    assert allowed_dirs([], {}, restrict=True) == DEFAULT_ALLOWED_DIRS
    env = {ALLOWED_DIRS_ENV: "/run/k3s/containerd/::/srv/c"}
    assert allowed_dirs(["/opt/cd"], env, restrict=False) == (
        *DEFAULT_ALLOWED_DIRS, "/opt/cd", "/run/k3s/containerd/", "/srv/c")
    with pytest.raises(ConfigError, match="'run/k3s' is not an absolute directory"):
        allowed_dirs(["run/k3s"], {}, restrict=True)


def test_the_client_connects_to_the_resolved_path(tmp_path, bound):
    real = bind(bound, tmp_path / "real.sock")
    link = tmp_path / "containerd.sock"
    link.symlink_to(real)
    with ContainerdClient(str(link)) as client:
        assert client.socket_path == str(real)
