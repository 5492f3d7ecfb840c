"""The journal: accepted reports, one line of JSON each, synced to disk before they are
acknowledged; the database is written behind it.

A DuckDB commit of a second's reports takes tens of milliseconds and, when it checkpoints
its WAL, half a second; an agent waiting for that would see its report take as long. The
journal is an append and an fsync (well under a millisecond here), so a report is answered
once it is there, and the database catches up at its own pace in larger batches. At start,
the lines the database does not hold yet are run through the engine again and written: an
acknowledged report is never lost, even on ``kill -9``.

The journal is a folder beside the database (``<db>.journal``) of segment files named by
the sequence number of their first report, the same number the database gives the report
(``reports.seq``). A segment is deleted once the database holds all of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from collector.errors import StoreError

log = logging.getLogger("pulltrace.journal")

SEGMENT_BYTES = 64 << 20  # a new segment past this size, so old ones can be deleted
_SUFFIX = ".jsonl"


class CutOffError(OSError):
    """A failed append, cut off again: the file holds what it held before."""


def append_synced(fd: int, data: bytes, size: int) -> None:
    """Append ``data`` at ``size`` (the file's length) and sync it: all of it, or nothing.

    On failure the file is cut back to ``size`` and :class:`CutOffError` (an OSError with the
    write's errno and message) is raised; the write's own OSError if even that failed.
    """
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
        os.fdatasync(fd)
    except OSError as exc:
        os.ftruncate(fd, size)
        os.lseek(fd, size, os.SEEK_SET)
        raise CutOffError(exc.errno, exc.strerror) from exc


def journal_path(db: str | os.PathLike[str]) -> Path:
    """Where the journal of the database at ``db`` lives."""
    return Path(f"{db}.journal")


class Journal:
    """Append-only segments of report lines in ``folder``; one writer."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the journal folder {self.folder}: "
                             f"{exc.strerror}; choose another --db path") from exc
        self._file: int | None = None  # the open segment's descriptor
        self._size = 0  # bytes of whole lines in it
        self._first = 0  # seq of its first line
        self._next = 0  # seq the next line gets; set by :meth:`start`

    # --- reading (at start) ----------------------------------------------------------------

    def segments(self) -> list[tuple[int, Path]]:
        """(first seq, path) of every segment, oldest first."""
        found = []
        for path in self.folder.glob(f"*{_SUFFIX}"):
            with contextlib.suppress(ValueError):
                found.append((int(path.name.removesuffix(_SUFFIX)), path))
        return sorted(found)

    def lines_after(self, seq: int) -> Iterator[tuple[int, str]]:
        """(seq, line) of every whole line numbered above ``seq``, in order.

        A segment's lines are numbered from its name; where a later segment starts at a
        number an earlier one already reached (a write that failed and could not be cut
        off), the later one's lines are the ones that count. A last line without its newline
        was never acknowledged and is left out.
        """
        segments = self.segments()
        for index, (first, path) in enumerate(segments):
            stop = segments[index + 1][0] if index + 1 < len(segments) else None
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise StoreError(f"cannot read the journal {path}: {exc.strerror}; the "
                                 "reports in it are not in the database yet") from exc
            number = first
            for raw in data.split(b"\n")[:-1]:  # the last piece is "" or a torn line
                if stop is not None and number >= stop:
                    break
                if number > seq:
                    try:
                        yield number, raw.decode()
                    except UnicodeDecodeError:
                        log.warning("skipping report %d of the journal %s: not UTF-8",
                                    number, path)
                number += 1

    # --- writing -----------------------------------------------------------------------

    def start(self, next_seq: int) -> None:
        """Begin appending with report number ``next_seq`` (the database's next), in a new
        segment."""
        self._close_segment()
        self._next = next_seq
        self._open_segment()

    @property
    def next_seq(self) -> int:
        return self._next

    def append(self, lines: list[str]) -> int:
        """Write ``lines`` (one report each, without newlines) and sync them; return the
        seq of the last. All of them or (StoreError) none: a failed write is cut off, so a
        retry never numbers a report twice."""
        if self._file is None or self._size >= SEGMENT_BYTES:
            self._close_segment()
            self._open_segment()
        assert self._file is not None
        if not lines:
            return self._next - 1
        payload = "\n".join(lines).encode() + b"\n"
        fd, size = self._file, self._size
        try:
            append_synced(fd, payload, size)
        except OSError as exc:
            if not isinstance(exc, CutOffError):
                # What could not be cut off stays at the end of this segment; the next
                # segment starts at the same number, and its lines are the ones read.
                self._close_segment()
            raise StoreError(f"could not write the journal {self.folder}: {exc.strerror}; "
                             "free space there") from exc
        self._size = size + len(payload)
        self._next += len(lines)
        return self._next - 1

    def release(self, stored_seq: int) -> None:
        """Delete the segments the database holds entirely (every line up to
        ``stored_seq``)."""
        segments = self.segments()
        for index, (first, path) in enumerate(segments):
            if first == self._first and self._file is not None:
                break  # the open one
            end = segments[index + 1][0] - 1 if index + 1 < len(segments) else None
            if end is None or end > stored_seq:
                break
            try:
                path.unlink()
            except OSError as exc:
                log.warning("cannot delete the journal segment %s: %s", path, exc.strerror)

    def close(self) -> None:
        self._close_segment()

    def _open_segment(self) -> None:
        path = self.folder / f"{self._next:020d}{_SUFFIX}"
        try:
            # Any bytes left from an earlier failed write under this name are not lines of
            # this run: start it empty.
            self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            _sync_folder(self.folder)
        except OSError as exc:
            self._file = None
            raise StoreError(f"could not write the journal {path}: {exc.strerror}; free "
                             "space there") from exc
        self._first, self._size = self._next, 0

    def _close_segment(self) -> None:
        fd, self._file = self._file, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Make a new segment's name durable, as its lines are."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
