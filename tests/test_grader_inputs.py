"""What the grader reads itself is untrusted too (issue 19): PDF reports and notebooks.

A hostile PDF (a decompression bomb) or notebook (a cell nesting an expression 100 000 deep)
costs its student a clear message, never the grader's memory, time or exit status; and the
only notebook code that runs at all runs in the sandbox (docs/notebooks.md).
"""

from __future__ import annotations

import builtins
import json
import resource
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from nbformat import v4

from grader.submission.answers import NoText, collect_answers, pdf_text
from grader.submission.notebook import module_from_notebook
from grader.submission.pdf_reader import MAX_INFLATED_BYTES, inflated_size
from tests.conftest import REPO
from tests.notebook_helpers import notebook_from_module, write_notebook


def bomb_pdf(path: Path, inflated_mb: int, draws: int) -> Path:
    """A one-page PDF whose page draws one Flate-compressed form `draws` times; the form inflates to
    `inflated_mb` MiB of spaces (a few hundred KB on disk)."""
    c = zlib.compressobj(1)
    block = b" " * (1 << 20)
    data = b"".join(c.compress(block) for _ in range(inflated_mb)) + c.flush()
    content = b"q /F Do Q\n" * draws
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /F 4 0 R >> >> "
            b"/Contents 5 0 R >>",
            b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Filter /FlateDecode /Length %d >>\nstream\n"
            % len(data) + data + b"\nendstream",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"]
    out, offsets = bytearray(b"%PDF-1.7\n"), []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def test_a_pdf_decompression_bomb_costs_a_message_not_the_graders_memory(tmp_path):
    bomb = bomb_pdf(tmp_path / "report.pdf", (MAX_INFLATED_BYTES >> 20) + 16, draws=4)
    assert bomb.stat().st_size < 2 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(NoText, match=r"report.pdf was not read: its compressed streams inflate to more than"):
        pdf_text(bomb)
    got = collect_answers(tmp_path, ["Q1"])
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 64, f"the grader's peak memory grew by {grown_mb:.0f} MB reading a bomb"
    assert got.answers == {} and any("report.pdf was not read" in n for n in got.notes), got.notes


def test_the_inflated_size_is_counted_without_inflating_everything():
    data = zlib.compress(b"x" * (8 << 20))
    pdf = b"1 0 obj\n<< /Filter /FlateDecode /Length %d >>\nstream\n" % len(data) + data + b"\nendstream\n"
    assert inflated_size(pdf) == 8 << 20
    assert (1 << 20) < inflated_size(pdf, limit=1 << 20) <= 2 << 20  # stops one chunk past the limit


@pytest.mark.slow
def test_a_pdf_that_is_slow_to_read_is_stopped_by_its_limits(tmp_path):
    """Under the inflated-size bound but drawn many times: the reader's CPU/memory limits stop it."""
    slow = bomb_pdf(tmp_path / "report.pdf", 200, draws=40)
    t0 = time.monotonic()
    with pytest.raises(NoText, match=r"report.pdf was not read"):
        pdf_text(slow)
    assert time.monotonic() - t0 < 45


DEEP = "x = 1" + " + 1" * 100_000


def test_a_deeply_nested_cell_is_left_out_with_a_reason(tmp_path):
    nb = v4.new_notebook(cells=[v4.new_code_cell("import math\nA = 1"), v4.new_code_cell(DEEP),
                                v4.new_code_cell("y = " + "-" * 100_000 + "1"), v4.new_code_cell("B = 2")])
    m = module_from_notebook(write_notebook(nb, tmp_path / "hw.ipynb"), "vae.py")
    reasons = {lo.cell: lo.why for lo in m.left_out}
    assert "nests expressions too deeply" in reasons[2] and "nests expressions too deeply" in reasons[3], reasons
    assert "A = 1" in m.source and "B = 2" in m.source


@pytest.mark.slow
def test_grade_run_on_a_deeply_nested_notebook_writes_results_and_exits_0(tmp_path):
    sub = tmp_path / "deep"
    sub.mkdir()
    nb = notebook_from_module((REPO / "reference" / "vae.py").read_text())
    nb.cells.append(v4.new_code_cell(DEEP))
    write_notebook(nb, sub / "vae.ipynb")
    grade = REPO / ".venv" / "bin" / "grade"
    r = subprocess.run([str(grade) if grade.exists() else "grade", "run", str(sub), "--out", str(tmp_path / "out"),
                        "--only", "log_standard_normal", "--device", "cpu", "--no-report"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads((tmp_path / "out" / "deep" / "results.json").read_text())
    assert all(t["score"] == t["max_score"] for t in result["tests"])
    assert "nests expressions too deeply" in json.dumps(result), "the left-out cell is not explained"


def test_notebook_code_that_runs_at_import_runs_only_in_the_sandbox(tmp_path):
    """Default arguments, class bodies and decorators are evaluated when the module is imported:
    in the sandbox's child, never in the grader process (docs/notebooks.md)."""
    from grader.engine import GradeOptions, find_assignment, grade_submission

    marker = ("import builtins, os\n"
              "def _mark(what):\n    setattr(builtins, 'GRADEKIT_NB_' + what, os.getpid())\n"
              "    print('ran at import:', what)\n    return what\n")
    probe = ("def deco(f):\n    _mark('DECORATOR')\n    return f\n"
             "@deco\ndef with_default(a=_mark('DEFAULT')):\n    return a\n"
             "class Body:\n    X = _mark('CLASS_BODY')\n")
    nb = notebook_from_module((REPO / "reference" / "vae.py").read_text())
    nb.cells += [v4.new_code_cell(marker), v4.new_code_cell(probe)]
    sub = tmp_path / "imports"
    sub.mkdir()
    write_notebook(nb, sub / "vae.ipynb")
    result = grade_submission(sub, find_assignment(sub, None), GradeOptions(device="cpu", only=["log_standard_normal"]))
    for what in ("DECORATOR", "DEFAULT", "CLASS_BODY"):
        assert f"ran at import: {what}" in result.student_output, result.student_output  # it did run, there
        assert not hasattr(builtins, "GRADEKIT_NB_" + what), f"{what} ran in the grader process"
