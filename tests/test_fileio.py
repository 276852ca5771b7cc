"""grader.fileio.write_atomic: whole or not at all, with the permissions of an ordinary new file."""

import os
import stat

import pytest

from grader.fileio import write_atomic


def test_a_written_file_is_whole_and_readable_as_the_umask_allows(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_atomic(tmp_path / "new" / "results.json", "é\n")
    finally:
        os.umask(old)
    assert path.read_bytes() == "é\n".encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # not mkstemp's 0600: a TA group may read reports
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "report.pdf"
    path.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.pdf"]
