"""Reading py-spy's collapsed stacks (``--format raw``) into the costs that matter.

Each line is ``frame;frame;...;frame COUNT``, root first; with ``--threads`` the first frame
names the thread, and with ``--full-filenames`` a frame is ``function (/path/file.py:LINE)``.
Three views:

- *kinds*: each sample goes to the innermost frame that a rule recognises (JSON decoding,
  dataclass construction, a DuckDB statement, asyncio, ...): what the time is spent doing;
- *stages*: the share of samples whose stack passes through a stage (``parse_report``,
  ``Engine.ingest``, ``Store.write``, ...): where in the pipeline it is spent;
- *functions*: the top functions by self and by inclusive samples.
"""

from __future__ import annotations

import functools
import linecache
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?):(?P<line>\d+)\)$")
_THREAD = re.compile(r"^(?:process \d+:.*;)?thread \((?P<tid>\w+)\)(?:: (?P<name>.*))?$")


@dataclass(frozen=True)
class Frame:
    func: str
    file: str
    line: int

    @classmethod
    def parse(cls, text: str) -> Frame:
        m = _FRAME.match(text)
        if m is None:
            return cls(text, "", 0)
        return cls(m["func"], m["file"], int(m["line"]))

    @property
    def statement(self) -> str:
        """The text of the statement its line belongs to, when the file is at hand: a call
        over several lines is sampled at its last one, and its first names the call."""
        return _statement(self.file, self.line)

    def label(self) -> str:
        return f"{self.func} ({Path(self.file).name}:{self.line})" if self.file else self.func


@dataclass(frozen=True)
class Stack:
    thread: str
    frames: tuple[Frame, ...]  # root first
    count: int


@functools.cache
def _statement(file: str, line: int) -> str:
    if not file.startswith("/"):
        return ""
    text = [linecache.getline(file, line).strip()]
    # Up to three lines back, while the previous line leaves a bracket open.
    for back in range(1, 4):
        above = linecache.getline(file, line - back).strip()
        if above.count("(") <= above.count(")"):
            break
        text.insert(0, above)
    return " ".join(text)


def parse(lines: Iterable[str]) -> list[Stack]:
    stacks = []
    for line in lines:
        if not line.strip():
            continue
        text, _, count = line.rstrip("\n").rpartition(" ")
        parts = text.split(";")
        thread = "all"
        if parts and (m := _THREAD.match(parts[0])) is not None:
            thread = m["name"] or m["tid"]
            parts = parts[1:]
        stacks.append(Stack(thread, tuple(Frame.parse(p) for p in parts), int(count)))
    return stacks


def load(path: Path) -> list[Stack]:
    with path.open() as f:
        return parse(f)


Rule = tuple[str, Callable[[Frame], bool]]


def _in(*parts: str) -> Callable[[Frame], bool]:
    return lambda f: any(p in f.file for p in parts)


def _func(path: str, *names: str) -> Callable[[Frame], bool]:
    return lambda f: f.file.endswith(path) and f.func in names


def _store(*words: str) -> Callable[[Frame], bool]:
    return lambda f: f.file.endswith("collector/store.py") and any(
        w in f.statement for w in words)


# Innermost match wins; order decides between rules that match the same frame.
KINDS: list[Rule] = [
    ("JSON decoding (json.loads)", _in("/json/decoder.py")),
    ("JSON encoding (json.dumps)", _in("/json/encoder.py", "/json/__init__.py")),
    ("dataclass __init__ (records, statuses)", lambda f: f.func.endswith("__init__")
     and f.file == "<string>"),
    ("RFC 3339 parse/format (timefmt)", _in("collector/timefmt.py")),
    ("report decoding/encoding (wire: msgspec + checks)", _in("collector/wire.py")),
    ("report validation (model._layer, _get, ...)", _func(
        "collector/model.py", "_get", "_name", "_layer", "_pull", "_time", "_bytes",
        "decode_report", "parse_report", "_pull.<locals>.<genexpr>",
        "decode_report.<locals>.<genexpr>")),
    ("to_json of reports/events (model)", _func("collector/model.py", "to_json", "dumps")),
    ("DuckDB COMMIT", _store('"COMMIT"')),
    ("DuckDB BEGIN", _store('"BEGIN')),
    ("DuckDB DELETE (upserts)", _store("DELETE")),
    ("DuckDB INSERT (appends)", _store("INSERT INTO {name}")),
    ("DuckDB register/unregister", _store("register(")),
    ("Arrow conversion (to_arrow, pa.table)", lambda f: "pyarrow" in f.file or (
        f.file.endswith("collector/store.py") and (
            f.func.startswith("to_arrow") or "pa." in f.statement))),
    ("rate windows (rates.py)", _in("collector/rates.py")),
    ("pull/layer views and rows (tracking.py)", _in("collector/tracking.py")),
    ("engine bookkeeping (engine.py)", _in("collector/engine.py")),
    ("Batch.of / Output rows (records.py)", _in("collector/records.py")),
    ("per-node rate gate (ReportGate)", lambda f: "ReportGate" in f.func),
    ("Prometheus metrics", _in("collector/metrics.py", "prometheus_client")),
    ("SSE publish", _func("collector/service.py", "Collector._publish", "Subscription.push")),
    ("collector service (submit, commit loop)", _in("collector/service.py")),
    ("report handler (api.py)", _in("collector/api.py")),
    ("aiohttp (HTTP parsing, responses)", _in("/aiohttp/", "/multidict/", "/yarl/")),
    ("asyncio event loop", _in("/asyncio/", "/selectors.py")),
    ("thread pool (executor hand-off)", _in("/concurrent/futures/", "/threading.py")),
    ("garbage collection", lambda f: f.func.startswith("<gc")),
]

STAGES: list[Rule] = [
    ("HTTP handler: report()", _func("collector/api.py", "build_app.<locals>.report")),
    ("  parse_report (JSON + validation)", _func("collector/model.py", "parse_report")),
    ("  Collector.submit", _func("collector/service.py", "Collector.submit")),
    ("    Engine.ingest", _func("collector/engine.py", "Engine.ingest")),
    ("Engine.ingest (anywhere)", _func("collector/engine.py", "Engine.ingest")),
    ("Engine.tick", _func("collector/engine.py", "Engine.tick")),
    ("Collector._resolve (metrics, SSE, futures)", _func("collector/service.py",
                                                          "Collector._resolve")),
    ("  Metrics.observe", _func("collector/metrics.py", "Metrics.observe")),
    ("Batch.of", _func("collector/records.py", "Batch.of")),
    ("Batch.report_lines (reports re-encoded)", _func("collector/records.py",
                                                      "Batch.report_lines")),
    ("Store.write", _func("collector/store.py", "Store.write")),
    ("  to_arrow", _func("collector/store.py", "to_arrow")),
    ("  Store._append", _func("collector/store.py", "Store._append")),
    ("  Store._upsert", _func("collector/store.py", "Store._upsert")),
    ("aiohttp request handling (all)", _in("/aiohttp/web_protocol.py")),
]


def total(stacks: list[Stack]) -> int:
    return sum(s.count for s in stacks)


def by_thread(stacks: list[Stack]) -> Counter[str]:
    found: Counter[str] = Counter()
    for s in stacks:
        found[s.thread] += s.count
    return found


def kinds(stacks: list[Stack], rules: list[Rule] = KINDS) -> Counter[str]:
    found: Counter[str] = Counter()
    for s in stacks:
        found[_kind(s.frames, rules)] += s.count
    return found


def _kind(frames: tuple[Frame, ...], rules: list[Rule]) -> str:
    for frame in reversed(frames):
        for name, match in rules:
            if match(frame):
                return name
    leaf = frames[-1] if frames else None
    return f"other: {leaf.label()}" if leaf else "other"


def stages(stacks: list[Stack], rules: list[Rule] = STAGES) -> Counter[str]:
    found: Counter[str] = Counter()
    for s in stacks:
        for name, match in rules:
            if any(match(f) for f in s.frames):
                found[name] += s.count
    return found


def _function(frame: Frame) -> str:
    return f"{frame.func} ({Path(frame.file).name})" if frame.file else frame.func


def top_self(stacks: list[Stack], n: int = 15, *, lines: bool = False) -> list[tuple[str, int]]:
    """Functions (or, with ``lines``, lines) by the samples they were the leaf of."""
    found: Counter[str] = Counter()
    for s in stacks:
        if s.frames:
            leaf = s.frames[-1]
            found[leaf.label() if lines else _function(leaf)] += s.count
    return found.most_common(n)


def top_inclusive(stacks: list[Stack], n: int = 15,
                  where: str = "/collector/") -> list[tuple[str, int]]:
    """The project's functions (files under ``where``) by the samples passing through."""
    found: Counter[str] = Counter()
    for s in stacks:
        for key in {_function(f) for f in s.frames
                    if where in f.file and not f.file.endswith("cli.py")}:
            found[key] += s.count
    return found.most_common(n)


def focus(stacks: list[Stack], func: str) -> list[Stack]:
    """The samples taken inside ``func`` (by its name as py-spy prints it)."""
    return [s for s in stacks if any(f.func == func for f in s.frames)]


def render(stacks: list[Stack], title: str, n: int = 12) -> str:
    """The three views as text, percentages of all samples (every thread)."""
    all_ = total(stacks) or 1
    out = [f"{title}: {all_:,} samples"]

    def pct(count: int) -> str:
        return f"{100 * count / all_:5.1f}%"

    out.append("  by thread: " + ", ".join(f"{name} {pct(c)}"
                                           for name, c in by_thread(stacks).most_common()))
    out.append("  what the time is spent doing (innermost recognised frame):")
    out += [f"    {pct(c)}  {name}" for name, c in kinds(stacks).most_common(n + 6)]
    out.append("  where in the pipeline (samples passing through):")
    found = stages(stacks)
    out += [f"    {pct(found[name])}  {name}" for name, _ in STAGES if found[name]]
    out.append("  top functions, self:")
    out += [f"    {pct(c)}  {name}" for name, c in top_self(stacks, n)]
    out.append("  top lines, self:")
    out += [f"    {pct(c)}  {name}" for name, c in top_self(stacks, n // 2, lines=True)]
    out.append("  top collector functions, inclusive:")
    out += [f"    {pct(c)}  {name}" for name, c in top_inclusive(stacks, n)]
    return "\n".join(out)
