"""How a server process runs: its event loop (asyncio's or uvloop), the interpreter's
thread switch interval and its garbage collector.

uvloop answers an HTTP request with less CPU than asyncio's own loop; it is used when it is
installed unless ``--loop asyncio`` says otherwise. The switch interval matters because the
collector's store thread takes the GIL back many times inside each DuckDB call: the default
5 ms makes it wait up to that long each time while the loop's thread runs Python.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from collector.errors import ConfigError

T = TypeVar("T")

LOOPS = ("auto", "asyncio", "uvloop")
# Seconds; see the module's docstring and the README's figures.
SWITCH_INTERVAL = 0.0005
# Each report allocates a hundred or so objects, nearly all gone once it is answered, while
# the engine holds hundreds of thousands for the pulls in progress. At Python's default
# (700, 10, 10) the collector spent about half its CPU collecting at 2,000 reports/s;
# young collections every 100,000 allocations cost a few ms each.
GC_THRESHOLDS = (100_000, 20, 10)


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_name(choice: str) -> str:
    """The loop ``choice`` (one of :data:`LOOPS`) stands for here."""
    if choice not in LOOPS:
        raise ConfigError(f"--loop: {choice!r} is not one of {', '.join(LOOPS)}")
    if choice == "auto":
        return "uvloop" if uvloop_installed() else "asyncio"
    if choice == "uvloop" and not uvloop_installed():
        raise ConfigError("--loop uvloop: uvloop is not installed; `pip install uvloop`, or "
                          "pass --loop asyncio")
    return choice


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], loop: str = "auto",
        switch_interval: float | None = SWITCH_INTERVAL) -> T:
    """``asyncio.run(main)`` on the loop chosen, with the switch interval set (None keeps
    the interpreter's)."""
    try:
        factory = loop_factory(loop_name(loop))
    except BaseException:
        main.close()  # never to run: no "never awaited" warning on top of the error
        raise
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    gc.set_threshold(*GC_THRESHOLDS)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def settle() -> None:
    """Keep what start-up made (imports, the engine's recovered state) out of every later
    collection: call once the server is up."""
    gc.collect()
    gc.freeze()


def current_loop_name() -> str:
    """"uvloop" or "asyncio": the loop running the caller."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
