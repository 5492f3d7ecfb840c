"""`collect`, `record` and `replay` given a database they cannot write: one line naming the path
and what to do, exit status 2. Every case here stops root too (permissions would not)."""

from __future__ import annotations

import os
import resource
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb

from collector.sources.recording import write_recording
from tests.collector.process import run_cli
from tests.collector.reports import digest, layer, pull, report

NO_PORTS = ("--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")


def commands(tmp_path: Path, db: str) -> dict[str, tuple[str, ...]]:
    rec = tmp_path / "in.jsonl"
    if not rec.exists():
        write_recording(rec, [report("n", t, pull("i", 0, layer(digest(1), t, 9)))
                              for t in (0, 1)])
    return {"collect": ("collect", "--db", db, *NO_PORTS),
            "record": ("record", str(tmp_path / "out.jsonl"), "--db", db, *NO_PORTS),
            "replay": ("replay", str(rec), "--db", db)}


def bad_paths(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """case -> (database path, what the message must say)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    folder = tmp_path / "a-folder.duckdb"
    folder.mkdir()
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database\n" * 100)
    cases = {
        "under a file": (str(blocker / "x.duckdb"),
                         "cannot create the folder for the database {db}: "
                         f"{blocker} is a file; choose another --db path"),
        "a directory": (str(folder),
                        "{db} is a directory, not a database file; choose a file path for --db"),
        # sysfs takes no new files, whoever asks
        "a filesystem refusing files": (f"/sys/pulltrace-{uuid.uuid4().hex}.duckdb",
                                        "cannot write the database {db}: "),
        "not a database": (str(junk), "{db} exists but is not a DuckDB database; choose "
                                      "another --db path"),
    }
    if os.geteuid() != 0:  # for other users, permissions are a case of their own
        locked = tmp_path / "read-only"
        locked.mkdir()
        locked.chmod(0o555)
        cases["a read-only folder"] = (str(locked / "x.duckdb"),
                                       "cannot write the database {db}: ")
        read_only = tmp_path / "read-only.duckdb"
        duckdb.connect(str(read_only)).close()
        read_only.chmod(0o444)
        cases["a read-only file"] = (str(read_only), "cannot write the database {db}: ")
    return cases


def test_an_unwritable_database_is_one_clear_line_and_exit_2(tmp_path):
    runs = {}
    cases = bad_paths(tmp_path)
    with ThreadPoolExecutor(4) as pool:
        for case, (db, _) in cases.items():
            for name, args in commands(tmp_path, db).items():
                runs[case, name] = pool.submit(run_cli, *args)
    for (case, name), future in runs.items():
        result = future.result()
        db, message = cases[case]
        assert result.returncode == 2, (case, name, result.stderr)
        assert result.stderr.startswith(f"pulltrace {name}: " + message.format(db=db)), (
            case, name, result.stderr)
        assert result.stderr.count("\n") == 1, (case, name, result.stderr)  # no traceback
    assert "Permission denied" in runs["a filesystem refusing files", "collect"].result().stderr \
        or "Read-only file system" in runs["a filesystem refusing files",
                                           "collect"].result().stderr
    # nothing was made where it could not be: the junk file is still junk
    assert (tmp_path / "junk.duckdb").read_text() == "not a database\n" * 100


def no_file_may_grow() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


def test_a_disk_full_from_the_start_is_one_clear_line_and_exit_2(tmp_path):
    db = tmp_path / "new.duckdb"
    for name, args in commands(tmp_path, str(db)).items():
        result = run_cli(*args, preexec_fn=no_file_may_grow)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.startswith(
            f"pulltrace {name}: cannot write the database {db}: the disk is full or a file "
            "size limit is reached"), (name, result.stderr)
        assert result.stderr.rstrip().endswith("free space there or choose another --db")
        assert result.stderr.count("\n") == 1, (name, result.stderr)
        assert not db.exists()  # no empty file left to be refused once space returns
