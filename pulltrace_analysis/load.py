"""Three ways to a :class:`Recording`: a JSONL recording, a DuckDB file, a running collector.

- :func:`read_recording` runs the reports through ``collector.engine`` — the code the live
  collector runs — so its frames hold what a collector fed the same reports recorded;
- :func:`open_db` reads a collector's DuckDB file, read-only (not while a collector writes
  it: DuckDB allows one writing process);
- :func:`connect` reads a running collector through ``GET /api/v1/export``.

Loads that take more than a second show a progress bar.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Never

import pyarrow as pa
from tqdm.auto import tqdm

from collector.engine import Engine, EngineConfig
from collector.journal import Journal, journal_path
from collector.model import AgentReport
from collector.sources.recording import read_recording as read_reports
from collector.store import Store
from pulltrace_analysis.recording import Recording, from_outputs
from pulltrace_analysis.schema import FRAMES, table_schemas, to_frame

RECORDING_ENV = "PULLTRACE_RECORDING"
PROGRESS_DELAY = 1.0  # seconds before a load shows its progress bar
DEFAULT_PAGE = 50_000


def find_recording(name: str = "recording.jsonl") -> Path:
    """The bundled recording: ``$PULLTRACE_RECORDING`` if set, else ``data/<name>`` in the
    current folder or the nearest parent that has one, else in this source checkout."""
    env = os.environ.get(RECORDING_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"{RECORDING_ENV}={env}: no such file")
        return path
    here = Path.cwd().resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[1]):
        candidate = folder / "data" / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no data/{name} here or in a parent folder; set {RECORDING_ENV} "
                            "to the recording's path")


def _bar(total: int | None, desc: str, unit: str) -> tqdm[Never]:
    return tqdm(total=total, desc=desc, unit=unit, delay=PROGRESS_DELAY, leave=False,
                unit_scale=True)


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _reports_with_progress(path: Path) -> Iterator[AgentReport]:
    with _bar(_count_lines(path) if path.is_file() else None, path.name, "reports") as bar:
        for report in read_reports(path):
            yield report
            bar.update()


def read_recording(path: str | os.PathLike[str], *,
                   config: EngineConfig | None = None) -> Recording:
    """Run a JSONL recording (AgentReports, one a line) through the engine."""
    file = Path(path)
    engine = Engine(config)
    outputs = (engine.ingest(report) for report in _reports_with_progress(file))
    return from_outputs(outputs, source=f"recording {file}")


def open_db(path: str | os.PathLike[str]) -> Recording:
    """The frames recorded in a collector's DuckDB file (opened read-only)."""
    with Store(path, read_only=True) as store:
        _warn_unwritten(path, store.report_seq)
        con = store.con
        counts = {name: int(con.sql(f"SELECT count(*) FROM {table}")  # noqa: S608
                            .fetchall()[0][0]) for name, (table, _) in FRAMES.items()}
        frames = {}
        with _bar(sum(counts.values()), Path(path).name, "rows") as bar:
            for name, (table, _) in FRAMES.items():
                # The store appends in engine order and DuckDB keeps insertion order
                # (preserve_insertion_order); pulls and layers are sorted by to_frame.
                reader = con.sql(f"SELECT * FROM {table}").to_arrow_reader(  # noqa: S608
                    DEFAULT_PAGE)
                batches = []
                for batch in reader:
                    batches.append(batch)
                    bar.update(batch.num_rows)
                frames[name] = to_frame(name, pa.Table.from_batches(batches, reader.schema))
    return Recording.from_frames(frames, source=f"database {path}")


def _warn_unwritten(path: str | os.PathLike[str], stored: int) -> None:
    """Say so when the collector's journal holds reports the file does not (it was killed
    before writing them: its next start does)."""
    folder = journal_path(path)
    if not folder.is_dir():
        return
    missing = sum(1 for _ in Journal(folder).lines_after(stored))
    if missing:
        warnings.warn(f"{missing} reports in {folder} are not in {path} yet: the collector "
                      f"stopped before writing them. Start `pulltrace collect --db {path}` "
                      "once (it writes them, then serves), then open the file again",
                      UserWarning, stacklevel=3)


def connect(url: str, *, page_size: int = DEFAULT_PAGE, timeout: float = 30.0) -> Recording:
    """Everything a running collector has committed, read through its export endpoint."""
    base = url.rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise ValueError(f"connect: expected an http(s) URL of a collector, got {url!r}")
    frames = {}
    with _bar(None, base, "rows") as bar:
        for name, (table, _) in FRAMES.items():
            pages = list(_pages(base, table, page_size, timeout, bar))
            # Pulls and layers come in key order, each key once: to_frame sorts them.
            data = pa.concat_tables(pages) if pages else table_schemas()[name].empty_table()
            frames[name] = to_frame(name, data)
    return Recording.from_frames(frames, source=f"collector {base}")


def _pages(base: str, table: str, limit: int, timeout: float,
           bar: tqdm[Never]) -> Iterator[pa.Table]:
    since = ""
    while True:
        query = urllib.parse.urlencode({"table": table, "since": since, "limit": limit})
        body, headers = _get(f"{base}/api/v1/export?{query}", timeout)
        page = pa.ipc.open_stream(body).read_all()
        bar.update(page.num_rows)
        yield page
        since = headers.get("X-Next-Cursor", "")
        if headers.get("X-Has-More") != "true":
            return


def _get(url: str, timeout: float) -> tuple[bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http(s) only
            return resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise ConnectionError(f"the collector answered {exc.code} to {url}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(f"cannot reach the collector at {url}: {reason}") from exc


__all__ = ["connect", "find_recording", "open_db", "read_recording"]
