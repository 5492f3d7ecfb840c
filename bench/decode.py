"""Report decoding and encoding alone, in microseconds per report of the bench fleet.

    python -m bench.decode [--nodes 2000] [--ticks 5] [--repeat 3]

Times, for the fleet's bodies (``bench.pipeline.workload``): ``json.loads`` (the floor of
reading the text at all), the reference validator (``json`` + ``decode_report``), the
collector's ``parse_report`` on the text and on the same bodies as bytes (what HTTP hands
it), and ``AgentReport.dumps`` of every decoded report stamped with an arrival time (the
line the store and a recording get). Each figure is the best of ``--repeat`` runs, in CPU
time of this process (the machine is shared: wall time would count other work too).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
from collections.abc import Callable
from typing import Any

from bench.pipeline import workload
from collector import model
from collector.jsontext import load_json


def best(fn: Callable[[], Any], repeat: int) -> float:
    """CPU seconds of the fastest of ``repeat`` runs of ``fn``."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def drop(decode: Callable[[bytes], Any], bodies: list[bytes]) -> None:
    for body in bodies:
        decode(body)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = workload(args.nodes, args.ticks)
    texts = work.bodies
    raw = [t.encode() for t in texts]
    n = len(texts)
    reports = [model.parse_report(t) for t in texts]
    stamped = [dataclasses.replace(r, received_at=r.timestamp + 1_500_000) for r in reports]
    reference = getattr(model, "reference_parse_report", None) or (
        lambda text: model.decode_report(load_json(text)))
    assert all(reference(b) == r for b, r in zip(raw, reports, strict=True))
    # "kept": every report stays alive, as in bench.pipeline (the garbage collector walks
    # them all, again and again); "dropped": each is let go at once, as the collector lets a
    # report go once its batch is committed.
    figures = {
        "json.loads": best(lambda: [json.loads(t) for t in texts], args.repeat),
        "reference (json + decode_report), kept": best(
            lambda: [reference(b) for b in raw], args.repeat),
        "reference, dropped": best(lambda: drop(reference, raw), args.repeat),
        "parse_report(str), kept": best(lambda: [model.parse_report(t) for t in texts],
                                        args.repeat),
        "parse_report(bytes), kept": best(lambda: [model.parse_report(b) for b in raw],
                                          args.repeat),
        "parse_report(bytes), dropped": best(lambda: drop(model.parse_report, raw),
                                             args.repeat),
        "AgentReport.dumps": best(lambda: [r.dumps() for r in stamped], args.repeat),
    }
    print(f"{n:,} reports, {work.layers / n:.1f} layers a report, "
          f"{sum(map(len, raw)) / n:,.0f} bytes a report")
    for name, seconds in figures.items():
        print(f"  {name:<42} {seconds / n * 1e6:8.1f} us a report")


if __name__ == "__main__":
    main()
