"""Which containerd socket a source may open: the path resolved, inside allowed directories, and
a Unix socket.

containerd's socket is root-equivalent: whoever opens it can run containers as root. pulltrace
only reads through it, but the agent runs on every node with the socket mounted, so it refuses
to talk to anything but the containerd the operator meant. Every check is made on the resolved
path (``os.path.realpath``): ``/run/containerd/../x.sock`` and a symlink leading out of an
allowed directory are judged by where they really lead.

- :func:`allowed_dirs` says which directories are allowed (``None``: no restriction);
- :func:`resolve_socket` resolves a path and applies that restriction (:class:`ConfigError`);
- :func:`check_socket` says whether a Unix socket is there now: missing is
  :class:`SocketMissingError` (containerd may not have started yet), anything else that is not a
  socket is a :class:`ContainerdError`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from collector.errors import ConfigError, ContainerdError

__all__ = [
    "ALLOWED_DIRS_ENV",
    "DEFAULT_ALLOWED_DIRS",
    "SocketMissingError",
    "allowed_dirs",
    "check_socket",
    "containerd_socket",
    "resolve_socket",
]

DEFAULT_ALLOWED_DIRS: Final = ("/run/containerd/", "/var/run/containerd/")
ALLOWED_DIRS_ENV: Final = "PULLTRACE_ALLOWED_SOCKET_DIRS"
_HOW_TO_ALLOW: Final = f"--allow-socket-dir DIR (or {ALLOWED_DIRS_ENV}=DIR:DIR...)"


class SocketMissingError(ContainerdError):
    """Nothing exists at the socket path (yet): containerd has not started, or the path is
    wrong. The agent waits for it; ``collect`` stops."""


def allowed_dirs(added: Iterable[str] = (), env: Mapping[str, str] | None = None, *,
                 restrict: bool) -> tuple[str, ...] | None:
    """The directories a socket may be in, or None when any path will do.

    ``added`` (``--allow-socket-dir``) and the colon-separated list in ``env``'s
    ``PULLTRACE_ALLOWED_SOCKET_DIRS`` extend :data:`DEFAULT_ALLOWED_DIRS`. With ``restrict`` the
    restriction applies whatever was added (the agent); without it, only once a directory was
    added (``collect``, ``record``: an explicit ``--containerd`` is the operator's choice).
    """
    env = os.environ if env is None else env
    extra = [d for d in added if d]
    extra += [d for d in env.get(ALLOWED_DIRS_ENV, "").split(os.pathsep) if d]
    if not restrict and not extra:
        return None
    for directory in extra:
        if not os.path.isabs(directory):
            raise ConfigError(f"--allow-socket-dir / {ALLOWED_DIRS_ENV}: {directory!r} is not "
                              "an absolute directory (e.g. /run/k3s/containerd/)")
    return (*DEFAULT_ALLOWED_DIRS, *extra)


def resolve_socket(path: str, allowed: Sequence[str] | None = None) -> str:
    """``path`` (a ``unix://`` prefix is accepted) with every symlink and ``..`` resolved;
    with ``allowed``, it must lie inside one of those directories (each resolved too)."""
    given = path.removeprefix("unix://")
    if not given:
        raise ConfigError("no containerd socket given; pass --containerd SOCKET")
    resolved = os.path.realpath(given)
    if allowed is None:
        return resolved
    roots = [Path(os.path.realpath(d)) for d in allowed]
    target = Path(resolved)
    if any(target != root and target.is_relative_to(root) for root in roots):
        return resolved
    shown = ", ".join(allowed)
    via = "" if resolved == given else f" (resolved from {given})"
    raise ConfigError(
        f"containerd socket {resolved}{via} is outside the allowed directories ({shown}); "
        f"if it is your containerd's socket, allow its directory with {_HOW_TO_ALLOW}"
    )


def check_socket(path: str, given: str | None = None) -> None:
    """Raise unless a Unix socket is at ``path`` (already resolved) now; ``given`` is the path
    as the operator wrote it, named in messages when it differs."""
    via = "" if given in (None, path) else f" (resolved from {given})"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise SocketMissingError(
            f"no containerd socket at {path}{via}; is containerd running? "
            "pass --containerd SOCKET"
        ) from exc
    except PermissionError as exc:
        raise ContainerdError(
            f"permission denied on {path}{via}; run as root or as a user who may open the "
            "containerd socket"
        ) from exc
    except OSError as exc:  # e.g. a path component that is a file, a name too long
        raise ContainerdError(
            f"cannot use {path}{via} as containerd's socket: {exc.strerror}; "
            "pass containerd's gRPC socket with --containerd SOCKET"
        ) from exc
    if stat.S_ISSOCK(mode):
        return
    kind = "a directory" if stat.S_ISDIR(mode) else (
        "a regular file" if stat.S_ISREG(mode) else "not a socket")
    raise ContainerdError(
        f"{path}{via} is {kind}, not a socket; pass containerd's gRPC socket with "
        f"--containerd SOCKET (usually {DEFAULT_ALLOWED_DIRS[0]}containerd.sock)"
    )


def containerd_socket(path: str, allowed: Sequence[str] | None = None) -> str:
    """:func:`resolve_socket`, then :func:`check_socket`: the path to connect to."""
    resolved = resolve_socket(path, allowed)
    check_socket(resolved, path.removeprefix("unix://"))
    return resolved
