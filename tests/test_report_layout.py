"""The report as a student reads it: every table fits the page, no path of the grading machine is visible,
metrics are in words, and a huge TeX answer renders in bounded time with a note saying what was cut.

Layout is read from WeasyPrint's own layout boxes (the same layout that becomes the PDF): every table's
border box and every piece of text must lie inside the page's content area.
"""

from __future__ import annotations

import importlib
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

weasyprint = pytest.importorskip("weasyprint")

from weasyprint.formatting_structure import boxes as B  # noqa: E402

from grader.engine import GradeOptions, find_assignment, grade_submission  # noqa: E402
from grader import glossary, redact  # noqa: E402
from grader.metrics import Metric, metric_info  # noqa: E402
from grader.report import display  # noqa: E402
from grader.report.render import (INSTRUCTOR_HTML, build_html, local_only_fetcher, markdown_to_html,  # noqa: E402
                                  render_report)
from grader.results import GradeResult, QuestionResult, load_result, save_result  # noqa: E402
from grader.results import TestResult as Check  # noqa: E402
from tests.conftest import REPO, SUBMISSIONS, unit_tags  # noqa: E402

TOLERANCE_PX = 0.5


def _walk(box):
    yield box
    for child in getattr(box, "children", []) or []:
        yield from _walk(child)


def overflows(html: str, base: Path) -> list[str]:
    """Tables and text that reach outside the page's content area, as 'page N: what' lines."""
    return document_overflows(weasyprint.HTML(string=html, base_url=base.as_uri() + "/",
                                              url_fetcher=local_only_fetcher(base)).render())


def document_overflows(doc) -> list[str]:
    """overflows() of a rendered weasyprint Document."""
    out = []
    for n, page in enumerate(doc.pages, 1):
        pb = page._page_box
        left, right = pb.content_box_x(), pb.content_box_x() + pb.width
        for box in _walk(pb):
            if isinstance(box, B.MarginBox):
                continue
            if isinstance(box, (B.TableBox, B.TextBox)):
                x0, width = box.border_box_x(), box.border_width()
                if x0 < left - TOLERANCE_PX or x0 + width > right + TOLERANCE_PX:
                    what = "table" if isinstance(box, B.TableBox) else f"text {box.text[:40]!r}"
                    out.append(f"page {n}: {what} spans {x0:.0f}-{x0 + width:.0f}px, page content {left:.0f}-{right:.0f}px")
    return out


# ---- results to lay out -------------------------------------------------------------------------
CHECKS_MODULES = {"vae": "grader.checks.vae", "kmeans-autoencoder": "grader.checks.kmeans_autoencoder",
                  "density-models": "grader.checks.density_models", "amortized-vs-lo": "grader.checks.amortized_vs_lo"}


def _synthetic_metrics(declared: dict[str, Metric], diverged: bool, classes: int = 10) -> dict:
    """A value for every metric an assignment declares: plausible, or (diverged) exploded and non-finite."""
    out = {}
    for i, (key, spec) in enumerate(declared.items()):
        bad = 3857800570.37 * (i + 1) if diverged else 96.9 + i
        if spec.kind == "per_class":
            out[key] = {"student": {c: (-bad if diverged else -100.0 - c) for c in range(classes)},
                        "reference": {c: -99.6 - c for c in range(classes)}}
        elif spec.kind == "note":
            out[key] = {"stopped_because": "diverged", "best_epoch": 2, "seconds": 2.1,
                        "message": "epoch 3, batch 12: the loss is nan"} if diverged else f"note {i}"
        else:
            out[key] = {"student": ("nan" if diverged and i % 2 else bad), "reference": 96.9 + i}
    return out


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """Every example submission, graded on its unit checks, with a full set of its assignment's metrics added
    (model-level training takes minutes; the layout depends on the declarations, which are real)."""
    out = tmp_path_factory.mktemp("examples")
    results = {}
    for sub in sorted(p for p in SUBMISSIONS.iterdir() if p.is_dir()):
        rubric = _rubric_for(sub)
        r = grade_submission(sub, rubric, GradeOptions(device="cpu", only=unit_tags(rubric), out_dir=out))
        declared = importlib.import_module(rubric.checks_module).METRICS
        r.metrics = _synthetic_metrics(declared, diverged=sub.name in ("bob", "eve")) | {"reference_cache": "reused",
                                                                                          "data": "digits: 1000 train"}
        r.metric_info = metric_info(declared, r.metrics)
        d = save_result(r, out).parent
        results[sub.name] = (load_result(d), d)
    return results


def _rubric_for(sub: Path):
    return find_assignment(sub, None)


LONG = "Supercalifragilistic_" * 12


def worst_case() -> GradeResult:
    """Diverged model, 40 classes, long unbreakable names everywhere, hostile sandbox record."""
    info = {
        "nll": Metric("Test negative log-likelihood " + LONG, "nats per image " + LONG, "lower").to_json(),
        "mse": Metric("Test reconstruction error", "MSE", "lower").to_json(),
        "acc": Metric("Accuracy", "share", "higher").to_json(),
        "per_class": Metric("Log-likelihood per class " + LONG, "nats", "higher", kind="per_class",
                            class_label="class " + LONG[:30]).to_json(),
        "training": Metric("Training", kind="note").to_json(),
        "data": Metric("Data set", kind="note").to_json(),
    }
    metrics = {
        "nll": {"student": 3.0e27, "reference": 96.9}, "mse": {"student": "nan", "reference": 0.01},
        "acc": {"student": "-inf", "reference": 0.98},
        "per_class": {"student": {f"{LONG[:20]}{c}": -3857800570.37 * c for c in range(40)},
                      "reference": {f"{LONG[:20]}{c}": -99.6 for c in range(40)}},
        "training": {"stopped_because": "diverged", "best_epoch": 2, "seconds": 2.1, "message": LONG},
        "data": LONG * 3, "undeclared_internal_key": {"K": 100, "path": str(REPO)},
    }
    tests = [Check(f"check {i} {LONG}", f"{i}.1", 0.0, 1.0, output=("x" * 300 + " ") * 5 + str(REPO / "grader" / "x.py"),
                   tags=[f"component_{LONG}"], component=f"component_{LONG}",
                   mistakes=[{"id": "m", "message": LONG, "hint": LONG}]) for i in range(1, 3)]
    return GradeResult(student="w" * 150, assignment=LONG, tests=tests,
                       questions=[QuestionResult("Q1", LONG, 2.0, f"| {LONG} | {LONG} |\n|---|---|\n| {LONG} | x |\n\n"
                                                 f"`{LONG}{LONG}`\n\n```\n{LONG * 4}\n```")],
                       sandbox={"network_isolated": True, "masked_paths": [str(REPO / "reference")] * 20,
                                "memory_limit_mb": 4096, "some_future_protection": False},
                       metrics=metrics, metric_info=info, errors=[f"{REPO}/{LONG}" * 3],
                       student_output=f"Traceback: File \"{REPO}/grader/sandbox/child.py\", line 1\n" + LONG * 2,
                       device="cpu", graded_at="2026-11-22T22:50:00+00:00")


@pytest.fixture(scope="module")
def laid_out(examples):
    """Each example's report laid out once, as `grade` lays it out (the tighter layout when it saves a page)."""
    from grader.report.pages import render_without_near_empty_last_page

    return {name: render_without_near_empty_last_page(weasyprint.HTML(
        string=build_html(r, d), base_url=d.as_uri() + "/", url_fetcher=local_only_fetcher(d)))
        for name, (r, d) in examples.items()}


# ---- tests --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_table_of_every_example_report_fits_the_page(laid_out):
    bad = {name: document_overflows(doc) for name, doc in laid_out.items()}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_worst_case_report_fits_the_page(tmp_path):
    r = worst_case()
    d = save_result(r, tmp_path).parent
    assert overflows(build_html(load_result(d), d), d) == []


def test_overflow_detector_sees_a_table_wider_than_the_page(tmp_path):
    html = "<table style='width: 400mm'><tr><td>wide</td></tr></table><pre style='white-space: pre'>" + "x" * 400 + "</pre>"
    found = overflows(html, tmp_path)
    assert any("table" in f for f in found) and any("text" in f for f in found), found


def _machine_paths(result_dir: Path) -> list[str]:
    import sys
    import tempfile

    home_cache = str(Path.home() / ".cache")
    return [str(REPO), str(result_dir), str(result_dir.parent), sys.prefix, home_cache, tempfile.gettempdir() + "/gradekit-"]


def _student_visible_json(d: Path) -> str:
    """The results.json fields a student sees on Gradescope: the top-level output and each test's name/output."""
    import json

    data = json.loads((d / "results.json").read_text())
    return "\n".join([data.get("output", "")] + [t.get("name", "") + "\n" + t.get("output", "") for t in data["tests"]])


@pytest.mark.slow
def test_no_path_of_the_grading_machine_reaches_the_student(tmp_path, examples):
    pypdf = pytest.importorskip("pypdf")
    worst = save_result(worst_case(), tmp_path).parent
    cases = [(r, d) for r, d in examples.values()] + [(load_result(worst), worst)]
    for r, d in cases[:2] + cases[-1:]:  # two real reports (as PDF) and the worst case; the HTML of all below
        graded = d != worst  # results.json is redacted by the engine: only a graded result's file is checked
        html_path, pdf_path = render_report(r, d)
        pdf_text = "\n".join(p.extract_text() or "" for p in pypdf.PdfReader(str(pdf_path)).pages).replace("\n", "")
        for where, text in (("report.html", html_path.read_text()), ("report.pdf", pdf_text),
                            ("results.json", _student_visible_json(d) if graded else "")):
            leaked = [p for p in _machine_paths(d) if p in text]
            assert not leaked, (r.student, where, leaked)
        assert str(REPO) in (d / INSTRUCTOR_HTML).read_text() or not r.sandbox.get("masked_paths"), \
            "the instructor's view keeps the raw record"
    for r, d in cases:
        text = build_html(r, d)
        assert not [p for p in _machine_paths(d) if p in text], r.student


def test_redaction_keeps_file_names_and_library_paths_readable():
    roots = redact.machine_paths("/srv/grading/out/alice", "/srv/grading/out")
    text = (f'File "/tmp/gradekit-run-ab12/submission/vae.py", line 3\n'
            f'File "{redact.REPO_ROOT}/grader/sandbox/child.py", line 9\n'
            f'File "/opt/venv/lib/python3.11/site-packages/torch/nn/functional.py", line 1\n'
            f"saved to /srv/grading/out/alice/figures/x.png")
    out = redact.redact_paths(text, roots)
    # (the checkout may itself live under /tmp, as CI's clone can: then its prefix goes without "…/")
    assert '"vae.py", line 3' in out and 'grader/sandbox/child.py"' in out and '"torch/nn/functional.py"' in out
    assert str(redact.REPO_ROOT) not in out
    assert "…/figures/x.png" in out and "/srv/grading" not in out and "/tmp/" not in out


@pytest.mark.slow
def test_metrics_are_words_with_units_reference_and_difference(examples):
    bob, d = examples["bob"]
    html = build_html(bob, d)
    assert "Test negative log-likelihood" in html and "nats per image" in html and "Reference" in html
    assert "not a number (NaN)" in html and "far worse" in html
    for internal in ("per_class_loglik", "posterior_collapse", "reference_cache", ">nll<", "{0:", "'0':"):
        assert internal not in html, internal
    assert "Training diverged" in html
    full = build_html(bob, d, instructor=True)
    assert "reference_cache" in full and "hidden from students" in full


def test_per_class_values_are_a_small_table_not_a_dict():
    m = display.metric_tables({"pc": {"student": {str(c): -3857800570.37 for c in range(25)},
                                      "reference": [-99.6] * 25}},
                              {"pc": Metric("Per digit", "nats", "higher", kind="per_class", class_label="digit").to_json()})
    (pc,) = m["per_class"]
    assert [len(c) for c in pc["chunks"]] == [10, 10, 5]
    assert pc["chunks"][0][0]["student"] == "−3.9×10⁹" and pc["chunks"][0][0]["level"] == "low"


def test_sandbox_is_described_in_words_without_paths():
    active, inactive = display.sandbox_sentences({"network_isolated": True, "pid_namespace": False,
                                                  "masked_paths": ["/secret/reference"], "memory_limit_mb": 4096})
    assert active == ["had no network access", "had a memory limit of 4096 MB"]
    assert inactive == ["could not see or signal other processes"]


def test_huge_tex_answer_renders_in_bounded_time_with_a_note(tmp_path):
    formula = r"$\frac{\partial}{\partial \mu} \log \mathcal{N}(x; \mu, \sigma^2) = \frac{x - \mu}{\sigma^2}$ "
    answer = (formula + "and ") * 4000  # ~380 kB of valid TeX, 4000 formulas
    r = GradeResult(student="tex", assignment="vae", tests=[], device="cpu",
                    questions=[QuestionResult(f"Q{i}", "Derive it", 1.0, answer) for i in range(1, 7)])
    d = save_result(r, tmp_path).parent
    t0 = time.perf_counter()
    html = build_html(load_result(d), d)
    took = time.perf_counter() - t0
    assert took < 40, f"{took:.1f} s"  # generous: ~5 s unloaded; 80 s before the budgets
    assert html.count('class="math"') <= 250
    assert "formulas are shown as TeX source" in html and "This answer is long" in html
    cut: list[str] = []
    markdown_to_html(formula * 120, cut=cut)
    assert cut and "at most 100 formulas per answer" in cut[0]


def test_loss_curves_stay_readable_when_training_diverges(tmp_path):
    from matplotlib.figure import Figure

    from grader import figures

    ref = {"train_loss": [150 - 3 * math.log(e) for e in range(1, 31)], "val_loss": [140 - 3 * math.log(e) for e in range(1, 31)]}
    stu = {"train_loss": [150.0, -1.1e27, float("nan")], "val_loss": [120.0, -1.1e27], "stopped_because": "diverged"}
    fig = Figure()
    ax = fig.add_subplot()
    figures.draw_losses(ax, [{"label": "ref", "values": ref["val_loss"], "reference": True},
                             {"label": "yours", "values": stu["train_loss"], "diverged": True}])
    lo, hi = ax.get_ylim()
    assert 100 < lo < 135 and 140 < hi < 200, (lo, hi)  # scaled to the reference, not to 1e27
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "training diverged" in texts and "off the scale" in texts
    assert figures.loss_curves(stu, ref, tmp_path / "c.png").stat().st_size > 1000


def test_a_path_in_an_exception_of_student_code_is_taken_out_of_the_results(tmp_path, vae_rubric):
    from tests.conftest import make_submission

    sub = make_submission(tmp_path, "pathy", extra='\nraise RuntimeError("cannot read " + __file__ + " in " + '
                                                   '__import__("os").getcwd())\n')
    r = grade_submission(sub, vae_rubric, GradeOptions(device="cpu", only=["elbo"], out_dir=tmp_path / "out"))
    shown = "\n".join(r.errors + [t.output for t in r.tests] + [r.student_output])
    assert "cannot read" in shown and "vae.py" in shown, shown
    assert "/tmp/" not in shown and str(tmp_path) not in shown and str(REPO) not in shown, shown


def test_missing_diverged_and_non_finite_values_are_said_in_words():
    info = {k: Metric(k.upper(), "nats", "lower").to_json() for k in ("empty", "none", "nan", "inf", "huge", "close")}
    rows = {r["label"]: r for r in display.metric_tables(
        {"empty": {}, "none": {"student": None, "reference": 3.0}, "nan": {"student": "nan", "reference": 3.0},
         "inf": {"student": float("inf"), "reference": 3.0}, "huge": {"student": 3.0e9, "reference": 101.0},
         "close": {"student": 97.4, "reference": 96.9}}, info)["rows"]}
    assert rows["EMPTY"]["student"] == "not computed" and rows["NONE"]["diff"] == "no value from your model"
    assert rows["NAN"]["student"] == "not a number (NaN)" and "not finite" in rows["NAN"]["diff"]
    assert rows["INF"]["student"] == "infinite" and rows["INF"]["level"] == "low"
    assert rows["HUGE"]["student"] == "3.00\u202f×\u202f10⁹" and rows["HUGE"]["diff"].startswith("far worse")
    assert (rows["CLOSE"]["diff"], rows["CLOSE"]["level"]) == ("0.5 % worse", "good")


# ---- near-empty last page --------------------------------------------------------------------
def _doc_with_lines(n: int, tmp_path):
    from grader.report.render import stylesheet

    body = "".join(f"<p>Line {i} of an answer that a student wrote.</p>" for i in range(n))
    return weasyprint.HTML(string=f"<html><head><style>{stylesheet()}</style></head><body>{body}</body></html>",
                           base_url=tmp_path.as_uri() + "/", url_fetcher=local_only_fetcher(tmp_path))


def test_a_last_page_with_a_few_lines_is_pulled_back_onto_the_page_before(tmp_path):
    from grader.report.pages import near_empty_last_page, page_fill, render_without_near_empty_last_page

    n = int(10 / page_fill(_doc_with_lines(10, tmp_path).render().pages[0])) - 2  # about one full page
    while len(_doc_with_lines(n, tmp_path).render().pages) < 2:  # first length that spills onto a second page
        n += 1
    html_doc = _doc_with_lines(n, tmp_path)
    assert near_empty_last_page(html_doc.render()), "the detector must see a page holding a line or two"
    polished = render_without_near_empty_last_page(html_doc)
    assert len(polished.pages) == 1 and not near_empty_last_page(polished)
    # A full last page is left alone: the same document, with half a page more, keeps its layout.
    longer = _doc_with_lines(n + 15, tmp_path)
    assert not near_empty_last_page(longer.render())
    assert len(render_without_near_empty_last_page(longer).pages) == 2


@pytest.mark.slow
def test_no_example_report_ends_on_a_near_empty_page(laid_out):
    from grader.report.pages import near_empty_last_page

    bad = [name for name, doc in laid_out.items() if near_empty_last_page(doc)]
    assert not bad, f"reports ending on a near-empty page: {bad}"


# ---- the report as a student reads it: words, not grader internals ---------------------------------
_QUOTED = re.compile(r'<pre class="(?:output|feedback)">.*?</pre>|<div class="answer-body">.*?</article>'
                     r'|<code\b.*?</code>|<img [^>]*>|<style>.*?</style>|<head>.*?</head>'
                     r"|`[^`<\n]*`", re.S)  # `…`: the student's code quoted in the report's own sentences


def _words_of(html: str) -> str:
    """The report's own words: the student's quoted code, output and answers taken out, tags stripped."""
    import html as _html

    return " ".join(_html.unescape(re.sub(r"<[^>]+>", " ", _QUOTED.sub(" ", html))).split())


def internal_names(text: str) -> list[str]:
    """Grader internals in a report's own words: glossary keys, tracebacks, figure tags, jargon."""
    found = [k for table in (glossary.PROTECTIONS, glossary.STOP_REASONS, glossary.FAILURE_KINDS)
             for k in table if "_" in k and re.search(rf"\b{re.escape(k)}\b", text)]
    found += [k.upper() for k in glossary.FAILURE_KINDS if re.search(rf"\b{k.upper()}\b", text)]
    for pattern in (r"Traceback", r'File "', r"Internal grader error", r"\bmodel\.\w+\b", r"num_vals=",
                    r"\b1 points\b", r"\bAll 1 cases\b", r"\(\d+(\.\d+)? pts\)", r"\d\.\d+e[+-]?\d",
                    r"\b\d+\.\d{3,}\s*/\s*\d"):
        found += [m.group(0) for m in re.finditer(pattern, text)]
    return found


@pytest.mark.slow
def test_no_example_report_shows_a_grader_internal_or_a_traceback(examples):
    """Every example report (submissions/*), rendered for its student: only words a student knows."""
    for name, (r, d) in examples.items():
        leaked = internal_names(_words_of(build_html(r, d)))
        assert not leaked, (name, sorted(set(leaked)))


def test_the_internal_names_detector_sees_what_it_must():
    html = ('<p>Your code ran with writable_mb; max_epochs after 15 epochs</p><span class="error-kind">EXCEPTION</span>'
            '<p>Traceback (most recent call last)</p><figcaption>loss <span>model.elbo</span></figcaption>'
            '<p>score 17.6667 / 33 · worth 1 points · All 1 cases passed.</p><pre class="output">my own max_epochs</pre>')
    found = internal_names(_words_of(html))
    for name in ("writable_mb", "max_epochs", "EXCEPTION", "Traceback", "model.elbo", "17.6667 / 3", "1 points",
                 "All 1 cases"):
        assert name in found, name
    assert found.count("max_epochs") == 1  # the student's own output is quoted, not the report's words


def test_a_grader_error_reaches_the_student_as_one_sentence_without_its_traceback(tmp_path):
    r = GradeResult(student="s", assignment="vae", tests=[], device="cpu", graded_at="2026-11-22T22:50:00+00:00",
                    errors=["internal error in model.elbo: Traceback (most recent call last):\n  File \"x.py\"\nKeyError"])
    d = save_result(r, tmp_path).parent
    words = _words_of(build_html(r, d))
    assert not internal_names(words) and "course staff" in words
    assert "Traceback" in build_html(r, d, instructor=True)


def test_one_exploded_value_does_not_hide_every_other_bar():
    """grace: PPCA's log-likelihood of −1e22 set the axis and every other bar was a sliver."""
    from matplotlib.figure import Figure

    from grader import figures

    ax = Figure().add_subplot()
    figures.draw_bars(ax, ["conv VAE", "PPCA", "GMM"],
                      [{"label": "yours", "values": [-60.0, -1.2e22, None]},
                       {"label": "reference", "reference": True, "values": [-55.0, -70.0, -40.0]}])
    lo, hi = ax.get_ylim()
    assert -200 < lo < -70 and 0 <= hi < 50, (lo, hi)
    words = [t.get_text() for t in ax.texts]
    assert "-1.2e+22" in words and "not computed" in words


def test_images_with_nan_pixels_are_drawn_apart_and_counted():
    from grader import figures

    imgs = np.random.default_rng(0).random((16, 8, 8))
    imgs[3, 2, 2], imgs[7] = np.nan, np.inf
    shown, broken = figures._broken_images(imgs)
    assert broken == 2 and np.isfinite(shown).all() and (shown < 0).sum() == 1 + 64
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    assert figures.show_images(ax, imgs, 4, 4, (8, 8), 1.0) == 2  # every figure of images goes through here
    assert "2 of 16 images hold NaN or infinite values" in ax.get_title()


def test_a_reference_curve_under_an_identical_student_curve_has_no_legend_entry():
    from grader import figures

    same = [100.0, 90.0, 80.0]
    series = [{"label": "reference: training", "values": same, "ls": "--", "reference": True},
              {"label": "your model: training", "values": same, "ls": "--"}]
    figures._merge_hidden_curves(series)
    assert series[0]["label"] == "_nolegend_" and series[1]["label"] == "your model = reference: training"


def test_the_data_set_line_of_each_model_level_is_words():
    """arm-transformer's report read 'D=64 (8, 8), categorical with num_vals=17' (the record, not words)."""
    from grader.checks.arm_transformer_model import _digits

    text = _digits(4).summary()
    assert not internal_names(text) and "D=" not in text, text
    assert "1,000 training" in text and "quantized to 4" in text
    # grey values in [0, 1] for a Bernoulli VAE, PPCA and a GMM: not 'a categorical distribution per pixel'
    from grader.checks.amortized_vs_lo_model import _prepare
    from grader.checks.density_models_model import Settings, load_data

    for words in (load_data(Settings()).words, _prepare("digits").words):
        assert "categorical" not in words and "scaled to [0, 1]" in words and not internal_names(words), words
    assert load_data(Settings()).words.startswith("digits: 1,350 training and 447 test images")  # train + val


def test_a_figure_s_off_the_scale_note_writes_numbers_in_words():
    """bob's loss curve: '(largest |value| 1.1e+27)' in a figure of a report whose tables write 1.1 × 10²⁷."""
    from grader.figures import _readable

    assert (_readable(1.1e27), _readable(-3.2e9), _readable(2.5)) == ("1.1×10²⁷", "−3.2×10⁹", "2.5")
    assert not internal_names(_readable(6.4e22))
