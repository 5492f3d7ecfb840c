"""What the figures ran on, and readings of a process from /proc."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _filesystem(path: str) -> str:
    if shutil.which("df") is None:
        return "?"
    out = subprocess.run(["df", "-T", path], capture_output=True, text=True, check=False)
    lines = out.stdout.splitlines()
    return lines[1].split()[1] if len(lines) > 1 else "?"


def calibrate(seconds: float = 0.3) -> float:
    """Millions of simple interpreter steps a second: how fast this core is right now (the
    machine is shared, so it is printed at the start and the end of a run)."""
    steps = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        total = 0
        for i in range(10_000):
            total += i & 7
        steps += 10_000
    return steps / (time.perf_counter() - start) / 1e6


def describe(tmp: str) -> dict[str, object]:
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": sys.version.split()[0],
        "duckdb": _version("duckdb"),
        "aiohttp": _version("aiohttp"),
        "pyarrow": _version("pyarrow"),
        "kernel": platform.release(),
        "tmp_fs": _filesystem(tmp),
        "loadavg": os.getloadavg()[0],
    }


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the collector's database writer is a child)."""
    found, i = [pid], 0
    while i < len(found):
        for task in Path(f"/proc/{found[i]}/task").glob("*"):
            try:
                found += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
        i += 1
    return found


def status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile of a process and its children (the collector's
    database writer), summed, in kB (from /proc/PID/status)."""
    found: dict[str, int] = {}
    for one in tree(pid):
        try:
            text = Path(f"/proc/{one}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                found[key] = found.get(key, 0) + int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) and its children so far."""
    total = 0
    for one in tree(pid):
        try:
            text = Path(f"/proc/{one}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS
