"""Shared fixtures for end-to-end tests against a real containerd, registry and throttling proxy.

One testbed serves the whole session (it starts in a fraction of a second, but images pushed by one
test stay useful to others). Tests that kill, pause or re-rate services leave them as they found
them: the autouse fixture below restarts whatever a test stopped.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator

import pytest

from collector.testbed import MiB, Testbed, install_message, missing_tools

RATE = 2 * MiB


def require_testbed_tools() -> None:
    """Skip when containerd/registry/skopeo are absent; in CI their absence is a failure."""
    missing = missing_tools()
    if not missing:
        return
    message = install_message(missing)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    require_testbed_tools()
    with Testbed(rate=RATE) as bed:
        yield bed


@pytest.fixture(autouse=True)
def _restore_testbed(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "testbed" not in request.fixturenames:
        return
    bed: Testbed = request.getfixturevalue("testbed")
    if bed.pid("containerd") is None:
        bed.start_containerd()
    if bed.pid("registry") is None:
        bed.start_registry()
    if bed.pid("proxy") is None or bed.rate != RATE:
        bed.restart_proxy(rate=RATE)
    else:
        # A paused proxy would stall every later test.
        bed.resume_proxy()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A registry repository name of this test's own, so tests never share images by accident."""
    return "e2e/" + request.node.name.lower().replace("[", "-").replace("]", "")


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A seed of this test's own: its layers are not already in the session's content store."""
    return zlib.crc32(request.node.nodeid.encode())
