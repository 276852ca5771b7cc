"""Notebook submissions: what is kept, where errors point, bad notebooks, and grading equal to the .py."""

from __future__ import annotations

import json
import shutil

import pytest
from nbformat import v4

from grader.engine import GradeOptions, find_assignment, grade_submission
from grader.submission import prepare
from grader.submission.notebook import NotebookError, module_from_notebook, read_notebook
from tests.conftest import REPO, SUBMISSIONS, unit_tags
from tests.notebook_helpers import notebook_from_module, write_notebook

VAE_PY = (REPO / "reference" / "vae.py").read_text()


def _nb(tmp_path, *cells, name="hw.ipynb"):
    nb = v4.new_notebook()
    nb.cells = [v4.new_markdown_cell(c[3:]) if c.startswith("md:") else v4.new_code_cell(c) for c in cells]
    return write_notebook(nb, tmp_path / name)


# ---- the rule: what is kept -------------------------------------------------------------------------
def test_definitions_imports_and_constants_are_kept_everything_else_is_listed_with_its_cell(tmp_path):
    path = _nb(tmp_path,
               "%matplotlib inline\n!pip install torchinfo\nimport torch\nimport numpy as np",
               "md:## Distributions",
               "from google.colab import drive\ndrive.mount('/content/drive')",
               "PI = torch.from_numpy(np.asarray(np.pi))\nEPS = 1e-5\nN = len([1, 2])\ndevice = 'cuda' if torch.cuda.is_available() else 'cpu'\n"
               "data = torch.load('x.pt')\nmodel = Net()\n\ndef f(x):\n    return x * PI",
               "for epoch in range(10):\n    train()\nprint('done')\nplt.show()",
               "%%time\nslow()",
               "class A:\n    pass\nA.x = 1\nif True:\n    !ls\n    y = 2")
    m = module_from_notebook(path, "vae.py")
    ns: dict = {}
    exec(compile(m.source, "vae.py", "exec"), ns)  # the kept code alone imports fine
    assert {"torch", "np", "PI", "EPS", "N", "device", "f", "A"} <= set(ns)
    assert not {"drive", "data", "model", "epoch", "y"} & set(ns)
    left = {(lo.cell, lo.line): lo.why for lo in m.left_out}
    assert "magic" in left[(1, 1)] and "magic" in left[(1, 2)]
    assert "notebook-only import" in left[(3, 1)]
    assert "torch.load" in left[(4, 5)] and "`Net`" in left[(4, 6)]
    assert left[(5, 1)] == "a loop" and (5, 3) in left and (5, 4) in left
    assert (6, 1) in left and "attribute" in left[(7, 3)] and "conditional" in left[(7, 4)]
    assert m.dropped_names["data"].cell == 4 and m.dropped_names["epoch"].cell == 5


def test_generated_lines_map_back_to_cell_and_line(tmp_path):
    path = _nb(tmp_path, "import torch\nx = torch.ones(2)\nprint(x)", "md:text", "\n\ndef g():\n    return 1 / 0")
    m = module_from_notebook(path, "vae.py")
    line = m.source.split("\n").index("    return 1 / 0") + 1
    assert m.location(line) == "cell 3, line 4"
    text = f'File "/tmp/gradekit-run-x/submission/vae.py", line {line}, in g\nvae.py, line {line}, in g'
    assert m.translate(text) == 'File "hw.ipynb", cell 3, line 4, in g\nhw.ipynb, cell 3, line 4, in g'


def test_a_name_set_by_a_left_out_statement_is_explained(tmp_path):
    path = _nb(tmp_path, "import torch\nscale = torch.load('s.pt')\ndef f(x):\n    return x * scale")
    m = module_from_notebook(path, "vae.py")
    msg = m.translate("NameError: name 'scale' is not defined")
    assert "cell 1, line 2" in msg and "not run when grading" in msg


def test_a_cell_that_does_not_parse_is_left_out_alone(tmp_path):
    path = _nb(tmp_path, "def ok():\n    return 1", "def broken(:\n    pass")
    m = module_from_notebook(path, "vae.py")
    assert "def ok" in m.source and "broken" not in m.source
    assert any(lo.cell == 2 and "not valid Python" in lo.why for lo in m.left_out)
    assert "cell 2" in m.translate("`broken` is missing: the module defines no `broken`")
    # said first, in a sentence of its own (grade check, grade run and the report), not only in a table's row
    import dataclasses

    from grader.report.handed_in import broken_cells

    said = broken_cells({"left_out": [dataclasses.asdict(lo) for lo in m.left_out]})
    assert said == ["Cell 2 (line 1) is not run at all: it is not valid Python (invalid syntax); everything it defines "
                    "is missing when grading. Fix it and check again."]


# ---- grading ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("student", ["alice", "bob"])
def test_a_notebook_grades_like_the_same_code_as_a_module(tmp_path, vae_rubric, student):
    folder = tmp_path / student
    write_notebook(notebook_from_module((SUBMISSIONS / student / "vae.py").read_text()), folder / "homework.ipynb")
    shutil.copy(SUBMISSIONS / student / "answers.md", folder)
    assert find_assignment(folder, None).id == "vae"
    only = ["log_normal_diag", "reparameterization", "mog_prior.log_prob", "elbo"]
    opts = GradeOptions(device="cpu", only=only, secret="0" * 32)  # the same inputs for both gradings
    nb, py = grade_submission(folder, vae_rubric, opts), grade_submission(SUBMISSIONS / student, vae_rubric, opts)
    assert [(t.check, t.score, t.output) for t in nb.tests] == [(t.check, t.score, t.output) for t in py.tests]
    assert nb.submission["module_from"] == "homework.ipynb" and nb.submission["kind"] == "notebook"
    assert {lo["cell"] for lo in nb.submission["left_out"]} >= {1, 2}
    assert [q.answer for q in nb.questions] == [q.answer for q in py.questions]


def test_an_exception_in_a_notebook_points_to_its_cell_and_line(tmp_path, vae_rubric):
    src = VAE_PY.replace("def log_normal_diag(", "def log_normal_diag(*a, **k):\n    raise ValueError('boom')\n\n\ndef _old(", 1)
    folder = tmp_path / "s"
    nb = notebook_from_module(src, colab_noise=False)
    write_notebook(nb, folder / "vae.ipynb")
    cell = next(i for i, c in enumerate(nb.cells, 1) if "raise ValueError('boom')" in c.source)
    r = grade_submission(folder, vae_rubric, GradeOptions(device="cpu", only=["log_normal_diag"]))
    out = " ".join(t.output for t in r.tests)
    assert "ValueError: boom" in out and f"vae.ipynb, cell {cell}, line 2" in out, out
    assert "vae.py" not in out


def test_code_depending_on_a_left_out_statement_gets_a_message_naming_the_cell(tmp_path, vae_rubric):
    src = VAE_PY.replace("def log_normal_diag(x, mu, log_var, reduction=None, dim=None):",
                         "SHIFT = torch.load('shift.pt')\n\n\ndef log_normal_diag(x, mu, log_var, reduction=None, dim=None):\n"
                         "    x = x + SHIFT", 1)
    folder = tmp_path / "s"
    write_notebook(notebook_from_module(src, colab_noise=False), folder / "vae.ipynb")
    r = grade_submission(folder, vae_rubric, GradeOptions(device="cpu", only=["log_normal_diag"]))
    out = " ".join(t.output for t in r.tests)
    assert r.autograded_score == 0 and "name 'SHIFT' is not defined" in out and "not run when grading" in out, out
    assert "vae.ipynb, cell" in out


# ---- bad notebooks: a clear message, zero for the code, never a crash ---------------------------------------
def _grade_quick(folder, rubric):
    return grade_submission(folder, rubric, GradeOptions(device="cpu", only=["log_normal_diag"]))


def test_corrupt_truncated_notebook(tmp_path, vae_rubric):
    good = json.dumps(v4.new_notebook(cells=[v4.new_code_cell(VAE_PY)]))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "vae.ipynb").write_text(good[: len(good) // 2])
    r = _grade_quick(tmp_path / "s", vae_rubric)
    assert r.autograded_score == 0 and any("truncated or corrupt" in e for e in r.errors), r.errors


def test_nbformat3_notebook_is_upgraded_and_graded(tmp_path, vae_rubric):
    nb3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": "hw"},
           "worksheets": [{"cells": [{"cell_type": "code", "language": "python", "input": VAE_PY.splitlines(True),
                                      "outputs": [], "collapsed": False, "metadata": {}}], "metadata": {}}]}
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "vae.ipynb").write_text(json.dumps(nb3))
    r = _grade_quick(tmp_path / "s", vae_rubric)
    assert r.errors == [] and r.autograded_score == r.autograded_max > 0


def test_notebook_without_code(tmp_path, vae_rubric):
    _nb(tmp_path / "s", "md:# only text", "", name="vae.ipynb")
    r = _grade_quick(tmp_path / "s", vae_rubric)
    assert r.autograded_score == 0 and any("holds no code" in e for e in r.errors)


def test_two_notebooks_are_not_guessed_between_unless_one_is_named_like_the_module(tmp_path, vae_rubric):
    _nb(tmp_path / "s", VAE_PY, name="a.ipynb")
    _nb(tmp_path / "s", VAE_PY, name="b.ipynb")
    r = _grade_quick(tmp_path / "s", vae_rubric)
    assert r.autograded_score == 0 and any("2 notebooks" in e and "hand in one notebook" in e for e in r.errors)
    _nb(tmp_path / "s", VAE_PY, name="vae.ipynb")
    sub = prepare(tmp_path / "s", vae_rubric)
    assert sub.module.origin == "vae.ipynb" and "named like the module" in " ".join(sub.notes)


def test_module_file_wins_over_notebook_and_says_so(tmp_path, vae_rubric):
    _nb(tmp_path / "s", "def log_normal_diag(*a, **k):\n    return None", name="vae.ipynb")
    (tmp_path / "s" / "vae.py").write_text(VAE_PY)
    r = _grade_quick(tmp_path / "s", vae_rubric)
    assert r.autograded_score == r.autograded_max and r.submission["module_from"] == "vae.py"
    assert any("vae.py was graded (the module file wins)" in n for n in r.submission["notes"])


def test_huge_notebook_full_of_outputs_is_read_within_bounds(tmp_path, monkeypatch):
    import grader.submission.notebook as nbmod

    blob = "A" * (1 << 20)
    cells = [v4.new_code_cell("def f():\n    return 1")]
    cells += [v4.new_code_cell("plot()", outputs=[v4.new_output("display_data", data={"image/png": blob})])
              for _ in range(12)]
    path = write_notebook(v4.new_notebook(cells=cells), tmp_path / "big.ipynb")
    assert "def f" in module_from_notebook(path, "vae.py").source
    monkeypatch.setattr(nbmod, "MAX_NOTEBOOK_BYTES", 4 << 20)
    with pytest.raises(NotebookError, match="clear its outputs"):
        read_notebook(path)


# ---- the class workflow: LMS upload, resumable batch ---------------------------------------------------
def test_canvas_upload_of_a_notebook_is_graded_and_a_changed_notebook_is_regraded(tmp_path, vae_rubric):
    import zipfile

    from grader.batch import grade_batch, is_up_to_date
    from grader.lms import import_archive

    nb = notebook_from_module(VAE_PY, colab_noise=False)
    path = write_notebook(nb, tmp_path / "nb.ipynb")
    with zipfile.ZipFile(tmp_path / "canvas.zip", "w") as zf:
        zf.write(path, "doejane_1001_555_Homework2-1.ipynb")
    import_archive("canvas", tmp_path / "canvas.zip", tmp_path / "class")
    jane = tmp_path / "class" / "doejane_1001"  # folders are keyed by the LMS user id
    assert [p.name for p in jane.iterdir()] == ["Homework2.ipynb"]
    out = tmp_path / "out"
    summary = grade_batch(tmp_path / "class", out, GradeOptions(only=["log_normal_diag"]), reports=False)
    assert [o.status for o in summary.outcomes] == ["graded"]
    assert json.loads((out / jane.name / "results.json").read_text())["score"] > 0
    assert is_up_to_date(jane, vae_rubric, out, ["log_normal_diag"])
    nb.cells.append(v4.new_code_cell("EXTRA = 1"))  # the student re-uploads: the notebook changed
    write_notebook(nb, jane / "Homework2.ipynb")
    assert not is_up_to_date(jane, vae_rubric, out, ["log_normal_diag"])


# ---- the report's block ---------------------------------------------------------------------------------
def test_report_shows_what_was_handed_in_and_the_students_figures(tmp_path):
    from grader.report.render import build_html
    from grader.results import GradeResult
    from tests.notebook_helpers import tiny_png

    (tmp_path / "judy" / "student_figures").mkdir(parents=True)
    (tmp_path / "judy" / "student_figures" / "student_01.png").write_bytes(tiny_png())
    result = GradeResult(student="judy", assignment="vae", tests=[], submission={
        "module_from": "hw.ipynb", "kind": "notebook", "answers_from": "report.pdf",
        "left_out": [{"cell": 4, "line": 2, "end_line": 5, "code": "for e in range(9):", "why": "a loop"}],
        "notes": ["Answers taken from report.pdf (6 of 6 questions)."],
        "figures": [{"path": "student_figures/student_01.png", "caption": "hw.ipynb, cell 9 (output 1)"},
                    {"path": "../../etc/passwd", "caption": "outside"}]})
    html = build_html(result, tmp_path / "judy")
    assert "What was handed in" in html and "cell 4, lines 2–5" in html and "a loop" in html
    assert 'src="student_figures/student_01.png"' in html and "hw.ipynb, cell 9 (output 1)" in html
    assert "passwd" not in html  # a figure path outside the results folder is not shown
    assert "What was handed in" not in build_html(GradeResult(student="a", assignment="vae", tests=[]), tmp_path)


def test_the_students_figures_are_bounded_in_pixels_in_all(tmp_path):
    """Solid-colour PNGs compress to almost nothing (a 6300 × 6300 one is 130 kB) yet the PDF renderer decodes and
    re-encodes every pixel: 24 of them took a report from 8 s to 48 s. One figure over MAX_PIXELS is left out, and
    the figures together stop at MAX_TOTAL_PIXELS, those left out named in the notes."""
    import io

    from PIL import Image

    from grader.submission.images import MAX_PIXELS, MAX_TOTAL_PIXELS, find_figures

    def png(side: int) -> bytes:
        buf = io.BytesIO()
        Image.new("L", (side, side), 200).save(buf, format="PNG")
        return buf.getvalue()

    (tmp_path / "a_huge.png").write_bytes(png(4100))  # 16.8 M pixels: over MAX_PIXELS alone
    big = png(3000)  # 9 M pixels
    for i in range(8):
        (tmp_path / f"b_{i}.png").write_bytes(big)
    notes: list[str] = []
    figures = find_figures(tmp_path, notes=notes)
    assert 4100 ** 2 > MAX_PIXELS
    assert [f.caption for f in figures] == [f"b_{i}.png" for i in range(7)]  # 63 M of the 64 M
    assert len(figures) * 9_000_000 <= MAX_TOTAL_PIXELS
    assert len(notes) == 1 and "b_7.png" in notes[0] and "million pixels" in notes[0], notes


def test_a_lone_surrogate_in_a_cell_costs_nothing(tmp_path, vae_rubric):
    """JSON may spell a lone surrogate ("\\udcff"); `prepare` raised UnicodeEncodeError from ast.parse (it
    promises never to raise for anything in the folder): it becomes U+FFFD, the rest is read as usual."""
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "NAME = 'a\udcffb'\n\ndef log_bernoulli(x, p):\n    return x\n"},
        {"cell_type": "markdown", "metadata": {}, "source": "## Q1\n\nan answer \udcff here"}]}
    (tmp_path / "homework.ipynb").write_text(json.dumps(nb))  # ASCII JSON: the escape is valid JSON
    handed_in = prepare(tmp_path, vae_rubric)
    assert "def log_bernoulli" in handed_in.module.source and "a\ufffdb" in handed_in.module.source
    handed_in.module.source.encode("utf-8")
