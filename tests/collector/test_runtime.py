"""The collector's event loop and switch interval: chosen by flag, used, and said."""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest
import uvloop

from collector import runtime
from collector.errors import ConfigError
from collector.store import Store
from tests.collector.process import CollectProcess, run_cli
from tests.collector.reports import digest, layer, pull, report


def test_auto_means_uvloop_where_it_is_installed():
    assert runtime.uvloop_installed()  # a dependency of the package
    assert runtime.loop_name("auto") == "uvloop"
    assert runtime.loop_name("asyncio") == "asyncio"


def test_an_unknown_loop_is_a_config_error():
    with pytest.raises(ConfigError, match=r"--loop: 'trio' is not one of auto, asyncio, uvloop"):
        runtime.loop_name("trio")


def test_run_uses_the_loop_and_the_switch_interval_asked_for():
    async def which() -> tuple[str, type]:
        return runtime.current_loop_name(), type(asyncio.get_running_loop())

    before = sys.getswitchinterval()
    try:
        assert runtime.run(which(), "uvloop", 0.0002) == ("uvloop", uvloop.Loop)
        assert sys.getswitchinterval() == pytest.approx(0.0002)
        name, kind = runtime.run(which(), "asyncio", None)
        assert name == "asyncio"
        assert not issubclass(kind, uvloop.Loop)
        assert sys.getswitchinterval() == pytest.approx(0.0002)  # None keeps it
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_collect_serves_on_the_loop_of_its_flag(tmp_path, loop):
    db = tmp_path / "loop.duckdb"
    with CollectProcess(db, tmp_path / "collect.log",
                        args=["--loop", loop, "--switch-interval", "0.001"]) as live:
        live.start()
        rep = report("n", 0, pull("img", 0, layer(digest(1), 1000, 10**6)))
        assert httpx.post(live.url + "/api/v1/report", content=rep.dumps(),
                          timeout=30).status_code == 200
        assert live.stop() == 0
        assert f"event loop {loop}, switch interval 0.001s" in live.log()
    with Store(db) as store:
        assert store.count("samples") == 1


def test_bad_runtime_flags_are_refused(tmp_path):
    db = str(tmp_path / "x.duckdb")
    result = run_cli("collect", "--db", db, "--loop", "trio")
    assert result.returncode == 2
    assert "--loop: invalid choice: 'trio'" in result.stderr
    result = run_cli("collect", "--db", db, "--switch-interval", "0")
    assert result.returncode == 2
    assert "--switch-interval: expected seconds between 0.000001 and 1, got '0'" in result.stderr


def test_the_writer_runs_duckdb_on_one_thread_and_checkpoints_every_64_mb(tmp_path):
    with Store(tmp_path / "t.duckdb") as store:
        assert store.one("SELECT current_setting('threads'), "
                         "current_setting('checkpoint_threshold')") == (1, "64.0 MiB")
