"""The collector's caps: how much one report, one node and all clients may ask of it.

Past a cap the answer is a status that says which cap and what to do (413 for a report that
is too big, 429 for a node reporting too often, 503 while the collector is full), and
``pulltrace_reports_dropped_total{reason}`` or ``pulltrace_sse_rejected_total{reason}``
counts it.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.errors import ConfigError


@dataclass(frozen=True)  # no slots: the defaults stay readable as class attributes
class Limits:
    max_body: int = 1 << 20
    # Layers in one report, over all its pulls. An image has at most ~127 layers (overlayfs),
    # so 2,000 is a node pulling 15 of the largest images at once.
    max_layers: int = 2000
    # Pulls in progress over the whole cluster; a report that would start more waits (503).
    max_active_pulls: int = 50_000
    max_sse_clients: int = 256
    # Reports accepted but not yet written (the database failing or slow); past it a report
    # is refused (503) before the engine sees it, so memory stays bounded in an outage.
    max_backlog: int = 20_000
    # The original's rule: a node's second report within 500 ms is refused.
    min_report_gap_ns: int = 500_000_000

    def __post_init__(self) -> None:
        for name in ("max_body", "max_layers", "max_active_pulls", "max_sse_clients",
                     "max_backlog"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')}: must be at least 1, "
                                  f"got {getattr(self, name)}")
        if self.min_report_gap_ns < 0:
            raise ConfigError(f"the report gap must not be negative, got {self.min_report_gap_ns}")
