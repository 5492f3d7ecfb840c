"""Which TCP addresses a `pulltrace` command listens on, seen from the kernel.

    python -m tests.collector.listen_probe collect --db /tmp/x.duckdb

starts the command as it is given (no --listen flags, no PULLTRACE_*_ADDR), waits until it
listens, reads its listening sockets from /proc/<pid>/net/tcp and tcp6 (matched to its own file
descriptors), tries each port through 127.0.0.1 and through 127.0.0.2 (also the loopback
interface, but not the address a 127.0.0.1 socket is bound to), stops the command with SIGTERM and
prints one JSON object. Meant to run in a network namespace of its own (``unshare --net``), where
the default ports are free whatever else runs on the machine; it brings that namespace's
loopback interface up itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
LISTEN = "0A"


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def _address(hex_addr: str, family: int) -> str:
    raw = bytes.fromhex(hex_addr)
    # /proc prints each 32-bit word in host byte order
    words = [raw[i:i + 4][::-1] if sys.byteorder == "little" else raw[i:i + 4]
             for i in range(0, len(raw), 4)]
    return socket.inet_ntop(family, b"".join(words))


def listening(pid: int) -> list[tuple[str, str, int]]:
    """(table, address, port) of every socket of ``pid`` in the LISTEN state."""
    inodes = socket_inodes(pid)
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and inode in inodes:
                addr, port = local.split(":")
                found.append((table, _address(addr, family), int(port, 16)))
    return sorted(found)


def connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    try:
        loopback_up()
    except OSError as exc:  # not in a namespace of our own: lo is up already, or not ours
        print(f"loopback left as it is: {exc}", file=sys.stderr)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PULLTRACE_HTTP_ADDR", "PULLTRACE_METRICS_ADDR")}
    proc = subprocess.Popen([sys.executable, "-m", "collector.cli", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    found: list[tuple[str, str, int]] = []
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        found = listening(proc.pid)
        if len(found) >= 2:
            time.sleep(0.2)  # anything else it would open comes with these
            found = listening(proc.pid)
            break
        time.sleep(0.05)
    reach = {str(port): {"127.0.0.1": connects("127.0.0.1", port),
                         "127.0.0.2": connects("127.0.0.2", port)} for _, _, port in found}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    print(json.dumps({"listening": found, "reach": reach, "exit": proc.returncode,
                      "output": output.decode(errors="replace")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
