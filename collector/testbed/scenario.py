"""A short story of real pulls through the testbed's throttle, watched by the containerd poller.

Used by ``scripts/record_testbed.py`` (which writes ``data/recording.jsonl``) and by the live
``pulltrace demo``. At 2 MiB/s per connection it takes about 55 s:

1. ``demo/web:1.0`` (three layers), and 1.5 s later ``demo/api:2.1``: two pulls at once;
2. ``demo/web:1.1``, whose two base layers the first pull left in the store: cached;
3. ``demo/batch:3``, whose registry goes silent for 31 s (the proxy is paused) and then
   recovers: stalled after 30 s without progress (the collector's default), then completed;
4. ``demo/db:16``, whose registry connection is cut 4 s in (the proxy is killed): a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from collector.errors import TestbedError
from collector.service import Collector
from collector.sources.containerd import ContainerdClient
from collector.sources.poller import ContainerdPoller, feed_collector
from collector.testbed.services import MiB, PushedImage, Testbed

Say = Callable[[str], None]


@dataclass(frozen=True)
class Images:
    web: PushedImage
    api: PushedImage
    web_next: PushedImage  # shares web's first two layers
    batch: PushedImage  # its registry goes silent for a while
    db: PushedImage  # its pull is cut off


def prepare(bed: Testbed, seed: int = 7) -> Images:
    """Write and push the four images (a few seconds)."""
    web = bed.make_image("demo/web", [12 * MiB, 6 * MiB, 2 * MiB], seed, tag="1.0")
    api = bed.make_image("demo/api", [8 * MiB, 3 * MiB], seed + 1, tag="2.1")
    web_next = bed.make_image("demo/web", [5 * MiB], seed + 2, tag="1.1",
                              shared_layers=web.image.layers[:2])
    batch = bed.make_image("demo/batch", [6 * MiB], seed + 3, tag="3")
    db = bed.make_image("demo/db", [16 * MiB, 2 * MiB], seed + 4, tag="16")
    return Images(web, api, web_next, batch, db)


def _wait(bed: Testbed, proc: subprocess.Popen[bytes], ref: str) -> None:
    if proc.wait(timeout=120) != 0:
        raise TestbedError(f"fetch of {ref} failed:\n{bed.fetch_output(proc)[-2000:]}")


def run(bed: Testbed, images: Images, say: Say, pause: float = 1.5,
        silence: float = 31.0) -> None:
    """Run the pulls (blocking). Leaves the proxy killed; restart it to pull again."""
    say(f"pulling {images.web.ref} and {images.api.ref} at once")
    web = bed.fetch(images.web.ref)
    time.sleep(pause)
    api = bed.fetch(images.api.ref)
    _wait(bed, web, images.web.ref)
    _wait(bed, api, images.api.ref)
    time.sleep(pause)
    say(f"pulling {images.web_next.ref}: its two base layers are already in the store")
    bed.pull(images.web_next.ref)
    time.sleep(pause)
    say(f"pulling {images.batch.ref}; its registry goes silent for {silence:.0f}s")
    batch = bed.fetch(images.batch.ref)
    time.sleep(pause)
    bed.pause_proxy()
    try:
        time.sleep(silence)
    finally:
        bed.resume_proxy()
    say(f"{images.batch.ref}: the registry answers again")
    _wait(bed, batch, images.batch.ref)
    time.sleep(pause)
    say(f"pulling {images.db.ref}; its registry connection is cut after 4 s")
    db = bed.fetch(images.db.ref)
    time.sleep(4.0)
    bed.kill_proxy()
    if db.wait(timeout=60) == 0:
        raise TestbedError(f"fetch of {images.db.ref} succeeded although its proxy was killed")
    time.sleep(pause)
    say("done")


async def watch(bed: Testbed, images: Images, collector: Collector, node: str, say: Say,
                interval: float = 0.5) -> int:
    """Run the story while a containerd poller feeds ``collector``; return, once it is over
    and the last reports are in, how many reports were sent."""
    client = ContainerdClient(str(bed.socket_path), bed.namespace)
    try:
        poller = ContainerdPoller(client, node, interval=interval)
        await asyncio.to_thread(poller.tracker.poll, client)  # the store before the story
        source = asyncio.create_task(feed_collector(collector, poller))
        try:
            await asyncio.to_thread(run, bed, images, say)
            await asyncio.sleep(2 * interval)
            # containerd may take a few polls to drop the cut-off ingest on a busy machine:
            # wait (a while) until every pull of the story has ended.
            for _ in range(round(20 / interval)):
                if not collector.engine.active_count():
                    break
                await asyncio.sleep(interval)
        finally:
            source.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await source
        return poller.reports
    finally:
        client.close()
