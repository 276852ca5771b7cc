"""Written answers from real PDFs keep their text and their questions (issue 21 item 9).

The PDFs are made here with WeasyPrint (as a student's LaTeX or Word export would be) and read
back through the grader's own extraction: a wrapped line that starts with "* eps" is text, not a
Markdown bullet (report and web app render answers as Markdown); a heading right after a line
ending in a hyphen is still a heading.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.report.render import markdown_to_html
from grader.submission.answers import collect_answers, literal_lines, pdf_lines

QS = ["Q1", "Q2", "Q3"]


def _pdf(path: Path, body: str) -> Path:
    from weasyprint import HTML

    HTML(string="<style>p{width:260px;font-size:12pt}</style>" + body).write_pdf(str(path))
    return path


def test_a_line_that_starts_with_a_star_stays_text(tmp_path):
    _pdf(tmp_path / "report.pdf", "<h2>Question 1</h2><p>The trick writes z as a sum: z = mu + sigma<br>* eps where "
                                  "eps is standard normal.</p><h2>Question 2</h2><p>KL.</p>")
    got = collect_answers(tmp_path, QS)
    assert got.source == "report.pdf", got.notes
    html = str(markdown_to_html(got.answers["Q1"]))
    assert "<li>" not in html and "<ul>" not in html, html
    assert "* eps where eps is standard" in html.replace("\n", " "), html


def test_a_heading_after_a_line_end_hyphen_is_still_a_heading(tmp_path):
    _pdf(tmp_path / "report.pdf", "<h2>Question 1</h2><p>We can then compute the gradient-</p><p>Question 2</p>"
                                  "<p>The KL term pulls the posterior to the prior.</p><h2>Question 3</h2><p>Done.</p>")
    got = collect_answers(tmp_path, QS)
    assert set(got.answers) == {"Q1", "Q2", "Q3"}, got.answers
    assert "Question 2" not in got.answers["Q1"] and got.answers["Q1"].endswith("gradient-")
    assert got.answers["Q2"].startswith("The KL term")


def test_a_word_broken_over_two_lines_stays_one_word(tmp_path):
    _pdf(tmp_path / "report.pdf", "<h2>Question 1</h2><p>so we can take the gradi-<br>ent through the sampling step"
                                  "</p><h2>Question 2</h2><p>x</p>")
    got = collect_answers(tmp_path, QS)
    assert "gradi-ent through" in got.answers["Q1"].replace("\n", " "), got.answers


@pytest.mark.parametrize("line, html_has_not", [("* eps", "<li>"), ("- x", "<li>"), ("1. y", "<ol"), ("# h", "<h1>"),
                                                 ("> q", "<blockquote>"), ("===", "<h1>"), ("---", "<hr")])
def test_markdown_structure_at_a_line_start_is_escaped(line, html_has_not):
    html = str(markdown_to_html(literal_lines("a wrapped sentence\n" + line)))
    assert html_has_not not in html, html


def test_pdfiums_joined_hyphen_marks_become_line_breaks_before_a_capital():
    assert pdf_lines("the gradient\ufffeQuestion 2\r\nx") == "the gradient-\nQuestion 2\nx"
    assert pdf_lines("gradi\ufffeent") == "gradi-ent"
