"""The project's errors: one base, one subclass per boundary."""

from __future__ import annotations


class PulltraceError(Exception):
    """Base of every error pulltrace raises on purpose."""


class ReportError(PulltraceError):
    """A report (JSON from an agent or a recording line) is not valid.

    ``field`` names the offending field as a path, e.g. ``pulls[0].layers[2].totalBytes``.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


class StoreError(PulltraceError):
    """The DuckDB database (or the recording written beside it) could not be opened, read or
    written."""


class ContainerdError(PulltraceError):
    """containerd's gRPC API could not be reached or answered with an error."""


class ConfigError(PulltraceError):
    """A flag, an environment variable or a file given to the CLI is not usable."""


class TestbedError(PulltraceError):
    """The end-to-end testbed (containerd, registry, proxy) could not start or do what was asked."""

    __test__ = False  # pytest would otherwise try to collect it from tests that import it


class CapacityError(PulltraceError):
    """The collector is at one of its caps (collector.limits); the caller may retry later."""
