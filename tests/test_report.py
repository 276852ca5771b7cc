"""Per-student reports, manual grades and the class summary, from GradeResult objects built here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("weasyprint")
pypdf = pytest.importorskip("pypdf")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
from click.testing import CliRunner  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from grader.commands.report import report_cmd, summary_cmd  # noqa: E402
from grader.report.manual import ManualGradeError, apply_manual_csv  # noqa: E402
from grader.report.render import local_only_fetcher, markdown_to_html, render_report  # noqa: E402
from grader.report.summary import render_summary  # noqa: E402
from grader.results import GradeResult, QuestionResult, load_result, save_result  # noqa: E402
from grader.results import TestResult as Check  # noqa: E402  (an alias: pytest would try to collect TestResult)

MISTAKE_MSG = "log-density misses the constant per dimension"
MISTAKE_HINT = "Add the normalising constant to every element."
HIDDEN_OUTPUT = "SECRET-HIDDEN-OUTPUT-7731"


def _figure(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(2, 1.5))
    fig.add_subplot().plot([0, 1, 2], [2, 0, 1])
    fig.savefig(path, dpi=50)


def _questions(answers: list[str | None]) -> list[QuestionResult]:
    return [QuestionResult(f"Q{i}", f"Question {i} title", 2.0, a) for i, a in enumerate(answers, 1)]


def _base(student: str, tests: list[Check], answers: list[str | None], **kw) -> GradeResult:
    return GradeResult(student=student, assignment="vae", tests=tests, questions=_questions(answers),
                       execution_time=3.2, grader_version="0.1.0", submission_hash="ab" * 32,
                       graded_at="2026-11-22T22:50:00+00:00", device="cpu",
                       sandbox={"network_isolated": True, "pid_namespace": True, "memory_limit": "2048 MB"},
                       figures=[{"path": "figures/samples.png", "caption": "Samples from your model", "tag": "model.samples"}],
                       **kw)


def passing() -> GradeResult:
    tests = [Check("log_normal_diag: values", "1.1", 2.0, 2.0, output="All 5 cases match.", tags=["log_normal_diag"],
                        component="log_normal_diag"),
             Check("elbo: value", "2.1", 3.5, 3.5, output="Matches the reference.", tags=["elbo"], component="elbo")]
    return _base("alice", tests, ["The trick writes $z = \\mu + \\sigma \\epsilon$ so gradients flow.",
                                  "Gaussian log-density:\n\n$$\\log q(z|x) = -\\frac{1}{2}\\sum_i \\log 2\\pi\\sigma_i^2$$"])


def with_mistakes() -> GradeResult:
    tests = [Check("log_normal_diag: values", "1.1", 0.0, 2.0, output="3 of 5 cases differ.", tags=["log_normal_diag"],
                        component="log_normal_diag", hint="Compare with the density formula.",
                        mistakes=[{"id": "missing_log2pi", "message": MISTAKE_MSG, "hint": MISTAKE_HINT}]),
             Check("log_normal_diag: shapes", "1.2", 1.0, 1.0, output="ok", tags=["log_normal_diag"],
                        component="log_normal_diag"),
             Check("encoder: hidden invariants", "2.1", 0.5, 2.0, output=HIDDEN_OUTPUT, visibility="after_published",
                        tags=["encoder"], component="encoder",
                        mistakes=[{"id": "secret", "message": "SECRET-MISTAKE-MESSAGE", "hint": ""}])]
    return _base("bob", tests, ["Reparameterization lets gradients pass through sampling.", None])


def hostile() -> GradeResult:
    big = ("All work and no play makes Jack a dull boy. " * 24 + "\n") * 2000  # ~2 MB
    tests = [Check("elbo: value <script>alert('t')</script>", "1.1", 0.0, 1.0,
                        output="<script>alert('out')</script>\n" + "x" * 50_000, error="exception",
                        tags=["elbo"], component="elbo<img src=x onerror=alert(1)>")]
    return _base("mallory", tests, ["<script>alert('answer')</script> and invalid math $\\frac{$ here", big],
                 student_output="<script>alert('stdout')</script>\n" + "line\n" * 5000,
                 errors=["import failed: <b>boom</b> \udcff\x00"])


def _write(result: GradeResult, out: Path, figure: bool = True) -> Path:
    d = save_result(result, out).parent
    if figure:
        _figure(d / "figures" / "samples.png")
    return d


def _pdf_text(pdf: Path) -> str:
    reader = pypdf.PdfReader(str(pdf))
    return re.sub(r"\s+", " ", "\n".join(page.extract_text() or "" for page in reader.pages))


def _has_image(pdf: Path) -> bool:
    def walk(res, depth=0) -> bool:
        xobjects = (res or {}).get("/XObject") or {}
        for obj in xobjects.values():
            obj = obj.get_object()
            if obj.get("/Subtype") == "/Image":
                return True
            if obj.get("/Subtype") == "/Form" and depth < 5 and walk(obj.get("/Resources"), depth + 1):
                return True
        return False

    return any(walk(page.get("/Resources")) for page in pypdf.PdfReader(str(pdf)).pages)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    paths = {}
    for make in (passing, with_mistakes, hostile):
        r = make()
        d = _write(r, out, figure=r.student != "mallory")  # mallory's figure file is missing
        paths[r.student] = (d, *render_report(load_result(d), d))
    return out, paths


def test_passing_report_has_name_score_answers_and_figure(rendered):
    out, paths = rendered
    d, html, pdf = paths["alice"]
    assert html == d / "report.html" and pdf == d / "report.pdf"
    text = _pdf_text(pdf)
    score = json.loads((d / "results.json").read_text())["score"]
    assert "alice" in text
    assert f"{score:g}" in text and f"{score:g} / 9.5" in text  # 5.5 autograded + 0 of 4 written
    assert "not graded yet" in text
    assert "The trick writes" in text and "so gradients flow" in text
    assert _has_image(pdf)
    assert 'src="figures/samples.png"' in html.read_text()
    assert 'class="math"' in html.read_text()  # math drawn as SVG


def test_mistakes_shown_and_hidden_check_details_withheld(rendered):
    _, paths = rendered
    d, html, pdf = paths["bob"]
    text = _pdf_text(pdf)
    assert MISTAKE_MSG in text and MISTAKE_HINT in text
    # one diagnosis box per check: the mistake's fix, not the rubric's general hint beside it
    assert "Compare with the density formula." not in text and text.count(MISTAKE_MSG) == 1
    # a hidden check that cost points says where and what kind of fault (its diagnosed mistake), never its test
    assert "hidden invariants" in text and "hidden check found a fault in Encoder" in text
    # under its component's heading, a check is named without the component's prefix
    assert "encoder: hidden invariants" not in text and "log_normal_diag: values" not in text
    page = html.read_text()
    assert HIDDEN_OUTPUT not in page and HIDDEN_OUTPUT not in text
    assert "SECRET-MISTAKE-MESSAGE" in text
    assert "No answer submitted" in text


def test_hostile_fields_are_escaped_truncated_and_do_not_crash(rendered):
    _, paths = rendered
    d, html, pdf = paths["mallory"]
    page = html.read_text(encoding="utf-8")
    body = page.split("<body>", 1)[1]
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(" in body and "answer" in body
    assert "<img src=x" not in body and "<b>boom</b>" not in body
    assert "onerror" not in re.sub(r"&lt;[^<>]*&gt;", "", body).replace("elbo&lt;img src=x onerror=alert(1)&gt;", "")
    assert len(page) < 400_000  # the 2 MB answer and 50 kB output were cut
    assert "This answer is long" in page and "Truncated for the report" in page
    assert "figures/samples.png is missing" in page
    text = _pdf_text(pdf)
    assert "mallory" in text
    assert "<script>alert('answer')</script>" in text  # shown as text
    assert "\\frac{" in text  # invalid math falls back to its TeX source
    assert "All work and no play" in text


def test_markdown_math_and_code():
    html = markdown_to_html("Inline $x^2$, money $5 and $6, code `$y$`, bad $\\frac{$.\n\n```\n$z$\n```\n\n$$\\int_0^1 f$$")
    assert html.count('class="math"') == 2  # $x^2$ and the display integral
    assert "$5 and $6" in html and "<code>$y$</code>" in html and "$z$" in html
    assert 'class="tex-src"' in html and "\\frac{" in html
    assert "<img src=\"http" not in markdown_to_html("![t](http://example.com/x.png)")


def test_fetcher_refuses_remote_and_outside_files(tmp_path):
    inside = tmp_path / "a.png"
    inside.write_bytes(b"x")
    fetcher = local_only_fetcher(tmp_path)
    assert fetcher.fetch(inside.as_uri()).read() == b"x"
    assert fetcher.fetch("data:text/plain,hi").read() == b"hi"
    for url in ("http://example.com/x.png", "https://example.com/", "ftp://example.com/f", "file:///etc/passwd",
                (tmp_path / ".." / "elsewhere.png").as_uri()):
        with pytest.raises(ValueError):
            fetcher.fetch(url)


def test_manual_csv_updates_results_and_pdf(tmp_path):
    d = _write(with_mistakes(), tmp_path)
    (tmp_path / "manual.csv").write_text('student,question,score,comment\nbob,Q1,1.5,"Good idea, but no formula."\n'
                                         'bob,Q2,0,No answer given.\n', encoding="utf-8")
    before = json.loads((d / "results.json").read_text())["score"]
    written = apply_manual_csv(tmp_path / "manual.csv", tmp_path)
    assert d / "results.json" in written and d / "report.pdf" in written
    data = json.loads((d / "results.json").read_text())
    assert data["score"] == pytest.approx(before + 1.5)
    q1 = data["extra_data"]["gradekit"]["questions"][0]
    assert (q1["score"], q1["comment"]) == (1.5, "Good idea, but no formula.")
    text = _pdf_text(d / "report.pdf")
    assert "Good idea, but no formula." in text and "1.5 / 2" in text
    assert f"{data['score']:g}" in text
    assert "not graded yet" not in text


def test_bad_manual_csv_names_rows_and_changes_nothing(tmp_path):
    d = _write(with_mistakes(), tmp_path, figure=False)
    original = (d / "results.json").read_bytes()
    (tmp_path / "manual.csv").write_text("student,question,score,comment\nbob,Q1,1,fine\nbob,Q2,5,too many\n"
                                         "eve,Q1,1,\nbob,Q7,1,\nbob,Q1,x,\n", encoding="utf-8")
    with pytest.raises(ManualGradeError) as e:
        apply_manual_csv(tmp_path / "manual.csv", tmp_path)
    msg = str(e.value)
    assert "row 3" in msg and "outside [0, 2]" in msg
    assert "row 4" in msg and "unknown student 'eve'" in msg
    assert "row 5" in msg and "unknown question 'Q7'" in msg
    assert "row 6" in msg and "not a number" in msg
    assert (d / "results.json").read_bytes() == original
    assert not (d / "report.pdf").exists()


def test_cli_report_and_summary(tmp_path):
    for make in (passing, with_mistakes):
        _write(make(), tmp_path)
    (tmp_path / "manual.csv").write_text("student,question,score,comment\nalice,Q1,2,Exact.\n", encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(report_cmd, [str(tmp_path), "--student", "alice"])
    assert res.exit_code == 0, res.output
    assert "alice" in res.output and "report.pdf" in res.output
    assert (tmp_path / "alice" / "report.pdf").exists() and not (tmp_path / "bob" / "report.pdf").exists()
    assert json.loads((tmp_path / "alice" / "results.json").read_text())["score"] == pytest.approx(7.5)

    (tmp_path / "bad.csv").write_text("student,question,score\nalice,Q1,9\n", encoding="utf-8")
    res = runner.invoke(report_cmd, [str(tmp_path), "--manual", str(tmp_path / "bad.csv")])
    assert res.exit_code == 2 and "row 2" in res.output and "outside" in res.output  # bad input: 2, as everywhere

    res = runner.invoke(report_cmd, [str(tmp_path), "--student", "nobody"])
    assert res.exit_code == 2 and "nobody" in res.output

    res = runner.invoke(summary_cmd, [str(tmp_path)])
    assert res.exit_code == 0, res.output
    text = _pdf_text(tmp_path / "summary.pdf")
    assert "alice" in text and "bob" in text and MISTAKE_MSG in text
    assert _has_image(tmp_path / "summary.pdf")  # the histogram


def test_summary_tolerates_broken_results(tmp_path):
    _write(passing(), tmp_path, figure=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json", encoding="utf-8")
    pdf = render_summary(tmp_path)
    assert pdf == tmp_path / "summary.pdf" and pdf.exists()
    assert "Unreadable results" in (tmp_path / "summary.html").read_text()


def test_summary_of_a_mixed_folder_has_one_section_per_assignment(tmp_path):
    from grader.report.summary import summary_html

    _write(passing(), tmp_path, figure=False)
    other = with_mistakes()
    other.assignment = "kmeans-autoencoder"
    _write(other, tmp_path, figure=False)
    html = summary_html(tmp_path)
    sections = re.findall(r'<h2 class="assignment-title"[^>]*>([^<]*)</h2>', html)
    assert sections == ["kmeans-autoencoder · 1 student", "vae · 1 student"]
    kmeans_part, vae_part = html.split('class="assignment-title"')[1:]
    assert "bob" in kmeans_part and "bob" not in vae_part and "alice" in vae_part
    assert MISTAKE_MSG in kmeans_part and MISTAKE_MSG not in vae_part


# TeX as students write it in answers (amsmath habits) that matplotlib's mathtext does not know as such.
STUDENT_TEX = [r"\lambda_1 \ge \dots \ge \lambda_D", r"\lvert x \rvert \le 1", r"\Big( \frac12 x \Big)",
               r"\operatorname*{argmax}_k \pi_k", r"\mathop{\mathbb{E}}_{q} x", r"a \coloneqq b \iff c \implies d",
               r"\textbf{w}^\top \pmb{x}", r"\mathbbm{1}[z = k]", r"\underbrace{\log p(x|z)}_{\text{recon}}",
               r"\begin{aligned} \mathcal{L} &= a \\ &= b \end{aligned}"]


@pytest.mark.parametrize("tex", STUDENT_TEX)
def test_common_amsmath_habits_are_drawn_not_shown_as_source(tex):
    from grader.report.render import math_png

    assert math_png(tex) is not None, f"{tex!r} should be drawn as a formula"


def test_tex_that_cannot_be_drawn_still_falls_back_to_its_source():
    from grader.report.render import math_png

    assert math_png(r"\frac{") is None and math_png(r"\notacommand{x}") is None


def test_unclosed_math_openers_render_in_linear_time():
    """Every `\\[` or `\\(` without its closer made the maths pattern scan to the end of the answer: 20 000 of them
    (40 kB) took 5 s per answer, in the report and on `grade serve`'s question pages."""
    import time

    for opener in ("\\[", "\\("):
        t0 = time.monotonic()
        html = markdown_to_html("Intro $x$ " + opener * 20_000)
        assert time.monotonic() - t0 < 2.5
        assert html.count('class="math"') == 1
    assert markdown_to_html("$$" + "x" * 1200 + "$$").count("tex-src") == 0  # a span past MAX_MATH_SPAN is text


# ---- each lost point explained once, in the student's words ----------------------------------------
def _view(tests: list[Check], tmp_path: Path) -> str:
    """The student's report of `tests` (build_html), with the tags and the CSS taken out: the words shown."""
    from grader.report.render import build_html

    r = _base("zoe", tests, [])
    d = save_result(r, tmp_path).parent
    html = build_html(load_result(d), d)
    return html.split("</style>", 1)[1]


def _model_check(number: str, measure: str) -> Check:
    cause = "Likely cause, found by the unit checks: KL term has the wrong sign (in `VAE.forward`)."
    return Check(f"Trained model: {measure}", number, 0.0, 1.0, visibility="hidden", tags=["model"], component="model",
                 output=f"- {measure}: yours 300 nats, reference 94 nats\nDiagnosis: training diverged: the loss is nan.\n"
                        + cause)


def test_a_trained_model_s_shared_diagnosis_and_cause_are_said_once(tmp_path):
    """bob: four model measures each repeated the diagnosis and the likely cause in full (16 lines)."""
    page = _view([_model_check("12.1", "test NLL"), _model_check("12.2", "test ELBO")], tmp_path)
    assert page.count("KL term has the wrong sign") == 1 and page.count("training diverged") == 1
    assert "Diagnosis and likely cause: the same as in check 12.1." in page
    assert "yours 300 nats" in page and page.count("found a fault in your trained model") == 2
    assert "<code>VAE.forward</code>" in page and "`VAE.forward`" not in page  # the student's name as code


def test_a_mistake_charged_in_another_check_has_its_box_there_only(tmp_path):
    mistake = {"id": "missing_log2pi", "message": MISTAKE_MSG, "hint": MISTAKE_HINT}
    charged = {"cause": "mistake:missing_log2pi", "charged_in": "c.values", "seen_by": ["c.values", "c.reductions"]}
    values = Check("c: values", "2.1", 0.0, 2.0, component="c", check="c.values", mistakes=[mistake],
                   output=f"0/4 cases passed.\nDiagnosis: {MISTAKE_MSG}.\nCharged once, here: the same mistake also "
                          "fails check 2.2, which do not charge it again.")
    values.charged_once = [charged]
    reductions = Check("c: reductions", "2.2", 1.0, 1.0, component="c", check="c.reductions", mistakes=[mistake],
                       output=f"0/5 cases passed.\nDiagnosis: {MISTAKE_MSG}.\nNot charged again here (1 point given "
                              "back): the same mistake is charged once, in check 2.1.")
    reductions.charged_once = [charged]
    page = _view([values, reductions], tmp_path)
    assert page.count(MISTAKE_HINT) == 1 and page.count('class="mistake-msg"') == 1
    # the uncharged check says why it passed with failing cases before listing them
    assert page.index("Not charged again here") < page.index("0/5 cases passed")


def test_hidden_checks_that_passed_show_their_points_and_one_legend(tmp_path):
    hidden = [Check(f"c: property {i}", f"3.{i}", 0.25, 0.25, visibility="hidden", component="c") for i in range(1, 6)]
    page = _view(hidden, tmp_path)
    assert page.count("are hidden: one that passed shows only its points") == 1
    assert "details are not shown" not in page and page.count('class="check-body') == 0


def test_a_hidden_check_names_the_fault_from_the_message_not_the_case():
    """carol: a missing function read as 'the gradients of your code are wrong' (case 'call without gradients')
    and a NumPy return value as 'the wrong shape' ('returned a numpy.ndarray of shape (4, 3)')."""
    from grader import glossary

    missing = "- call without gradients: `f` is missing: the module defines no `f`"
    numpy = "- a batch of one: f must return a torch.Tensor, but returned a numpy.ndarray of shape (1, 3)"
    assert glossary.fault_kinds(missing) == ["a function or class this check calls is missing from your code"]
    assert glossary.fault_kinds(numpy) == [
        "your code returns something other than a torch.Tensor (e.g. a NumPy array)"]
    assert glossary.fault_kinds(f"{numpy}\n{numpy}") == glossary.fault_kinds(numpy)  # 'of shape (1, 3)': no shape fault
    assert glossary.fault_kinds("- call: NotImplementedError: TODO\n  at vae.py, line 100") == ["your code raises an error"]
    branch = "- categorical likelihood: call without gradients: `f` is missing: the module defines no `f`"
    assert glossary.fault_kinds(branch) == glossary.fault_kinds(missing)  # a branch's name before the case's
    assert glossary.fault_kinds("- non-square shapes: values: 4 NaN value(s) where the reference is finite") == [
        "your code returns NaN (or infinite) values where the correct result is finite"]


def test_a_notebook_s_code_source_is_said_once(tmp_path):
    """ken: 'Code graded from homework2.ipynb.' then 'Code taken from the notebook homework2.ipynb (…)'."""
    r = _base("ken", [Check("c: values", "1.1", 1.0, 1.0, component="c")], [])
    r.submission = {"kind": "notebook", "module_from": "hw.ipynb",
                    "notes": ["Code taken from the notebook hw.ipynb (3 code cells; 1 top-level statement not run)."]}
    from grader.report.render import build_html

    d = save_result(r, tmp_path).parent
    section = build_html(load_result(d), d).split('<section class="handed-in">', 1)[1].split("</section>", 1)[0]
    assert "Code taken from the notebook hw.ipynb" in section and "Code graded from" not in section


def test_the_summary_lists_only_the_checks_some_student_did_not_pass(tmp_path):
    """72 checks per student made 3 pages of '100%' rows per assignment (17 pages for the example class, 9 now)."""
    from grader.report.summary import summary_html

    _write(passing(), tmp_path, figure=False)
    _write(with_mistakes(), tmp_path, figure=False)
    table = summary_html(tmp_path).split("Checks not every student passed", 1)[1].split("</table>", 1)[0]
    assert "log_normal_diag: values" in table and "encoder: hidden invariants" in table
    assert "elbo: value" not in table and "log_normal_diag: shapes" not in table
    assert "2 other checks passed by every student (not listed)." in summary_html(tmp_path)


def test_hidden_checks_that_fail_for_one_reason_say_it_once(tmp_path):
    """carol's missing log_categorical: six hidden checks each said 'a function … is missing from your code'."""
    missing = "0/1 case passed.\n- call: `log_categorical` is missing: the module defines no `log_categorical`"
    tests = [Check(f"log_categorical: property {i}", f"5.{i}", 0.0, 0.25, visibility="hidden",
                   component="log_categorical", output=missing) for i in (2, 3, 4)]
    page = _view(tests, tmp_path)
    assert page.count("is missing from your code") == 1 and page.count("The same kind of fault as check 5.2.") == 2
    assert page.count("This hidden check found a fault in log_categorical.") == 3
