"""Every bad input to `grade` ends with exit status 2 and a message naming the problem and the fix (1 is kept
for internal errors), never a traceback or a temporary path; whatever a command leaves out, it lists."""

from __future__ import annotations

import zipfile

from click.testing import CliRunner

from grader.cli import main
from grader.results import save_result
from tests.conftest import SUBMISSIONS
from tests.test_lms import fake_result


def _run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r


def test_a_corrupt_notebook_is_named_with_the_cause_not_a_temporary_folder(tmp_path):
    book = tmp_path / "hw.ipynb"
    book.write_text('{"cells": [ {"cell_type": "code", "sourc')
    r = _run("check", book)
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert "hw.ipynb is not a readable notebook" in text and "save it again" in text
    assert "gradekit-notebook" not in text and "holds none of the files" not in text


def test_a_module_instead_of_its_folder_says_pass_the_folder_that_holds_it():
    r = _run("check", SUBMISSIONS / "alice" / "vae.py")
    assert r.exit_code == 2 and "pass the folder that holds it" in " ".join(r.output.split())


def test_lint_rubric_on_a_file_that_is_not_utf8(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'title = "\xff\xfe"\n')
    r = _run("lint-rubric", bad)
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "not UTF-8" in text and "save the file as UTF-8" in text


def test_lint_rubric_names_the_table_and_the_file_once(tmp_path):
    """rich read '[[checks]]' in a message as markup and printed '[] #1 (interface)', after the path twice."""
    bad = tmp_path / "bad.toml"
    bad.write_text((SUBMISSIONS.parent / "rubrics" / "vae.toml").read_text().replace("points = 0.5", 'points = "half"', 1))
    r = _run("lint-rubric", bad)
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "[[checks]] #1 (interface): 'points' must be a number, got 'half'" in text, text
    assert text.count(str(bad)) == 1, text


def test_summary_and_report_on_a_missing_folder_exit_2(tmp_path):
    for command in ("summary", "report"):
        r = _run(command, tmp_path / "nope")
        assert r.exit_code == 2 and "is not a folder" in r.output, (command, r.output)


def test_batch_lists_a_zip_and_a_loose_module_it_cannot_grade(tmp_path):
    root = tmp_path / "class"
    root.mkdir()
    (root / "erin.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (root / "frank.py").write_text("x = 1\n")
    r = _run("batch", root, "--out", tmp_path / "out")
    text = " ".join(r.output.split())
    assert r.exit_code == 2
    assert "not graded" in text and "erin.zip" in text and "unpack it" in text
    assert "frank.py" in text and "folder of its own" in text


def test_import_of_a_zip_that_is_not_a_canvas_download_exits_2_and_says_so(tmp_path):
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("alice/vae.py", "x = 1\n")
        zf.writestr("bob/vae.py", "x = 2\n")
    r = _run("import", "canvas", archive, "--into", tmp_path / "into")
    assert r.exit_code == 2 and "is not a Canvas bulk download" in " ".join(r.output.split())


def test_canvas_export_without_roster_warns_and_names_ungraded_answers(tmp_path):
    out = tmp_path / "reports"
    save_result(fake_result("doejane", (1.0, 1.5), q1=1.0), out)
    save_result(fake_result("roejim", (0.0, 1.5)), out)  # Q1 not graded yet
    r = _run("export", "--format", "canvas", "--out", out)
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "no --roster" in text and "ID columns are empty" in text
    assert "not graded yet" in text and "roejim (Q1)" in text and "doejane (" not in text


def test_check_never_points_to_a_report_it_does_not_write():
    """judy's notebook has statements left out; `grade check` writes no report, so it must not send her to one."""
    r = _run("check", SUBMISSIONS / "judy", "--only", "log_standard_normal")
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "not run when grading" in text and "the report that `grade run` writes" in text
    assert "(see the report)" not in text and "listed in the report)" not in text
