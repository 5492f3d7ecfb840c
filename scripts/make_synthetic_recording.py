"""Write data/synthetic.jsonl: the demo plan of collector.sources.synthetic, 45 s."""

from __future__ import annotations

import sys

from collector.sources.recording import write_recording
from collector.sources.synthetic import demo_plan, reports
from collector.timefmt import parse_rfc3339

ORIGIN = parse_rfc3339("2026-11-20T09:00:00Z")

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "data/synthetic.jsonl"
    assert ORIGIN is not None
    write_recording(out, list(reports(demo_plan(), ORIGIN, 45.0, 1.0)))
    print(f"wrote {out}")
