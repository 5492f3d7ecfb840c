"""The engine's tables shrink back once pulls expire: a collector that runs for weeks keeps
only what its TTLs say (the soak benchmark watches the same tables over simulated hours)."""

from __future__ import annotations

from collector.engine import Engine, EngineConfig
from collector.model import LayerPhase
from collector.timefmt import NS
from tests.collector.reports import at, digest, layer, pull, report

A = digest(0xA1)
NODES = ("n1", "n2", "n3")
PULLS_PER_NODE = 4
DAY = 24 * 3600


def sizes(eng: Engine) -> dict[str, int]:
    """Every table the engine keeps across inputs (private: this test is about them)."""
    return {
        "pulls": len(eng._pulls), "history": len(eng._history),
        "finished": len(eng._finished), "expiry": len(eng._expiry),
        "expiry_keys": len(eng._expiry_keys), "last_report": len(eng._last_report),
        "offset": len(eng._offset), "stall_due": len(eng._stall_due),
        "active_nodes": len(eng._active), "due": len(eng._due), "due_at": len(eng._due_at),
    }


def churn(eng: Engine) -> None:
    """Each node pulls img:0..3 one after another: pull k starts at 10k s, is half done
    then, and completes at 10k + 5 s."""
    for k in range(PULLS_PER_NODE):
        for node in NODES:
            eng.ingest(report(node, 10 * k, pull(f"img:{k}", 10 * k, layer(A, 50, 100))))
            eng.ingest(report(node, 10 * k + 5, pull(
                f"img:{k}", 10 * k, layer(A, 100, 100, state=LayerPhase.COMPLETED))))


def test_finished_pulls_leave_every_table_once_their_ttls_run_out():
    eng = Engine(EngineConfig(history_ttl_ns=60 * NS, stale_after_ns=600 * NS))
    empty = sizes(eng)
    churn(eng)
    finished = len(NODES) * PULLS_PER_NODE  # 12, the last completing at 35 s
    assert eng.active_count() == 0
    assert len(eng.pulls()) == finished
    assert sizes(eng)["finished"] == finished

    # The last pull completed at 35 s: 60 s later the list is empty; identities stay, so
    # a repeat of a finished pull still changes nothing.
    eng.tick(at(35 + 60))
    assert eng.pulls() == []
    assert sizes(eng)["pulls"] == sizes(eng)["history"] == 0
    assert sizes(eng)["finished"] == finished
    repeat = eng.ingest(report("n1", 100, pull("img:0", 0, layer(
        A, 100, 100, state=LayerPhase.COMPLETED))))
    assert repeat.accepted
    assert repeat.pulls == []
    assert eng.pulls() == []

    # Silent past the stale time with nothing in progress, the nodes are forgotten (the
    # sweep runs once a simulated minute).
    eng.tick(at(100 + 600 + 60))
    assert eng.node_count() == 0

    # A day after the last completion, the identities go too: every table is as it was.
    eng.tick(at(35 + DAY))
    assert sizes(eng) == empty


def test_the_same_churn_twice_leaves_the_tables_as_after_once():
    """What one round of pulls leaves behind, once expired, does not add up over rounds."""
    eng = Engine(EngineConfig(history_ttl_ns=60 * NS, stale_after_ns=600 * NS))
    churn(eng)
    eng.tick(at(35 + DAY))
    after_one = sizes(eng)
    # The same nodes pull again two days in (new startedAt: new pulls).
    later = Engine(EngineConfig(history_ttl_ns=60 * NS, stale_after_ns=600 * NS))
    churn(later)
    for k in range(PULLS_PER_NODE):
        for node in NODES:
            t = 2 * DAY + 10 * k
            later.ingest(report(node, t, pull(f"img:{k}", t, layer(A, 50, 100))))
            later.ingest(report(node, t + 5, pull(
                f"img:{k}", t, layer(A, 100, 100, state=LayerPhase.COMPLETED))))
    assert len(later.pulls()) == len(NODES) * PULLS_PER_NODE
    later.tick(at(2 * DAY + 35 + DAY))
    assert sizes(later) == after_one
