"""The notebooks, committed without outputs, run top to bottom in a real kernel against the
bundled recording."""

from __future__ import annotations

import json
from collections import Counter

import nbformat
import pytest
from nbclient import NotebookClient

from tests.notebooks.jupyterlab import NOTEBOOKS, RECORDING

pytestmark = pytest.mark.notebook

WIDGET = "application/vnd.jupyter.widget-view+json"
PLOTLY = "application/vnd.plotly.v1+json"
# notebook -> (widgets shown, plotly figures shown)
EXPECTED = {
    "01-live.ipynb": (1, 1),
    "02-replay-analysis.ipynb": (1, 7),
    "03-media-types.ipynb": (0, 3),
}


@pytest.fixture(autouse=True)
def _kernel_env(monkeypatch):
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("PULLTRACE_RECORDING", str(RECORDING))


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: cell {cell.id} has outputs"
            assert cell.execution_count is None, f"{name}: cell {cell.id} was run"


def _imports(nb) -> set[str]:
    found = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]):
                found.add(words[1].split(".")[0])
    return found


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_top_to_bottom(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert _imports(nb) == {"pulltrace_analysis"}
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    kinds: Counter[str] = Counter()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", json.dumps(out)[:500]
            if out.output_type == "stream":
                assert out.name == "stdout", out.text[:500]
            kinds.update(out.get("data", {}).keys())
    widgets, plots = EXPECTED[name]
    assert kinds[WIDGET] == widgets
    assert kinds[PLOTLY] == plots
