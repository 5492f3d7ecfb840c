"""The small hand-worked recording, loaded once per test module."""

from __future__ import annotations

import pytest

from pulltrace_analysis import read_recording
from tests.analysis.small import write


@pytest.fixture(scope="module")
def recording_path(tmp_path_factory):
    return write(tmp_path_factory.mktemp("rec") / "small.jsonl")


@pytest.fixture(scope="module")
def rec(recording_path):
    return read_recording(recording_path)
