"""Record data/recording.jsonl from real pulls: a private containerd, registry and throttling
proxy (2 MiB/s per connection), the containerd poller, and a collector writing every report it
accepts to a JSONL recording. See data/README.md.

    .venv/bin/python scripts/record_testbed.py [--out data/recording.jsonl] [--node testbed]

Needs containerd, ctr, docker-registry and skopeo (apt-get install containerd docker-registry
skopeo); touches nothing of the machine's own containerd.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from collector.engine import Engine
from collector.metrics import Metrics
from collector.service import Collector, Recorder
from collector.sources.recording import read_recording
from collector.store import Store
from collector.testbed import MiB, Testbed, install_message, missing_tools
from collector.testbed.scenario import prepare, watch
from collector.timefmt import NS

RATE = 2 * MiB


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


async def record(bed: Testbed, out: Path, node: str) -> Collector:
    images = prepare(bed)
    collector = Collector(Engine(), Store(":memory:"), Metrics(), Recorder(out),
                          tick_interval=0.5)
    await collector.start()
    try:
        await watch(bed, images, collector, node, say)
    finally:
        await collector.stop()
    return collector


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/recording.jsonl"))
    parser.add_argument("--node", default="testbed", help="node name in the reports")
    args = parser.parse_args()
    if missing := missing_tools():
        print(install_message(missing), file=sys.stderr)
        return 2
    staging = args.out.with_name(args.out.name + ".tmp")
    staging.unlink(missing_ok=True)
    with Testbed(rate=RATE) as bed:
        say(f"testbed up in {bed.timings['total']:.1f}s; writing images")
        collector = asyncio.run(record(bed, staging, args.node))
    staging.replace(args.out)
    reports = list(read_recording(args.out))
    seconds = (reports[-1].timestamp - reports[0].timestamp) / NS
    print(f"wrote {args.out}: {len(reports)} reports over {seconds:.0f}s, "
          f"{args.out.stat().st_size / 1e6:.2f} MB")
    for pull in sorted(collector.pulls(), key=lambda p: p.started_at):
        print(f"  {pull.image_ref:<40} {pull.status.value:<9} {pull.downloaded_bytes:>9} B "
              f"downloaded, {pull.cached_bytes:>9} B cached  {pull.error or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
