"""The journal on a real folder: numbering, torn and failed writes, segments, release."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from collector import journal as journal_mod
from collector.errors import StoreError
from collector.journal import Journal, journal_path


def read_all(j: Journal, after: int = 0) -> list[tuple[int, str]]:
    return list(j.lines_after(after))


def test_lines_are_numbered_from_the_start_and_read_back_in_order(tmp_path):
    j = Journal(tmp_path / "j")
    j.start(11)
    assert j.append(['{"a":1}', '{"b":2}']) == 12
    assert j.append([]) == 12
    assert j.append(['{"c":"é"}']) == 13
    assert j.next_seq == 14
    j.close()
    again = Journal(tmp_path / "j")
    assert read_all(again) == [(11, '{"a":1}'), (12, '{"b":2}'), (13, '{"c":"é"}')]
    assert read_all(again, after=12) == [(13, '{"c":"é"}')]
    assert journal_path("/x/pulls.duckdb") == journal_mod.Path("/x/pulls.duckdb.journal")


def test_a_torn_last_line_is_left_out(tmp_path):
    j = Journal(tmp_path / "j")
    j.start(1)
    j.append(["one", "two"])
    j.close()
    ((_, path),) = j.segments()
    with path.open("ab") as f:
        f.write(b'{"half')  # a write the collector died in: never acknowledged
    assert read_all(Journal(tmp_path / "j")) == [(1, "one"), (2, "two")]


def test_segments_roll_over_and_only_wholly_stored_ones_are_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_mod, "SEGMENT_BYTES", 10)
    j = Journal(tmp_path / "j")
    j.start(1)
    j.append(["aaaa", "bbbb"])  # 10 bytes: the next append opens a new segment
    j.append(["ccccccccc"])  # 10 bytes again
    j.append(["dddd", "eeee"])
    assert [first for first, _ in j.segments()] == [1, 3, 4]
    j.release(2)  # segment 1 holds 1-2: stored
    assert [first for first, _ in j.segments()] == [3, 4]
    j.release(3)  # segment 3 holds 3 only
    assert [first for first, _ in j.segments()] == [4]
    j.release(5)  # the open segment stays, stored or not
    assert [first for first, _ in j.segments()] == [4]
    assert read_all(j) == [(4, "dddd"), (5, "eeee")]


def test_a_later_segment_overrides_what_an_earlier_one_holds_from_its_number(tmp_path):
    folder = tmp_path / "j"
    folder.mkdir()
    # A write that failed and could not be cut off left "x" numbered 3 in the first segment;
    # the retry opened segment 3.
    (folder / f"{1:020d}.jsonl").write_text("one\ntwo\nx\n")
    (folder / f"{3:020d}.jsonl").write_text("three\n")
    assert read_all(Journal(folder)) == [(1, "one"), (2, "two"), (3, "three")]


def test_a_failed_write_is_cut_off_so_a_retry_numbers_nothing_twice(tmp_path):
    folder = tmp_path / "j"
    # A file size limit makes the write fail as a full disk does (EFBIG, not a signal).
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from collector.journal import Journal
        from collector.errors import StoreError
        j = Journal({str(folder)!r})
        j.start(1)
        j.append(["a" * 100])
        resource.setrlimit(resource.RLIMIT_FSIZE, (150, resource.RLIM_INFINITY))
        try:
            j.append(["b" * 100])
        except StoreError as exc:
            print(exc)
        else:
            sys.exit("the write past the limit succeeded")
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, resource.RLIM_INFINITY))
        print(j.append(["c" * 10]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    error, last = done.stdout.splitlines()
    assert error == f"could not write the journal {folder}: File too large; free space there"
    assert last == "2"  # the failed line took no number
    assert read_all(Journal(folder)) == [(1, "a" * 100), (2, "c" * 10)]


def test_an_unusable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"cannot create the journal folder .*file/j"):
        Journal(blocker / "j")


def test_a_segment_that_cannot_be_read_says_its_reports_are_not_stored(tmp_path):
    folder = tmp_path / "j"
    # A folder where a segment should be: unreadable whoever runs the test, root included.
    (folder / f"{1:020d}.jsonl").mkdir(parents=True)
    with pytest.raises(StoreError, match="the reports in it are not in the database yet"):
        read_all(Journal(folder))
