"""A student's Markdown answer -> HTML for the browser, maths left as TeX for KaTeX.

The same Markdown rules and escaping as the PDF report (`grader.report.render.markdown_to_html`: raw HTML
escaped, images never fetched, maths cut out before Markdown sees it); only the maths differs: a
`<span class="tex">` holding the escaped TeX that static/grade.js hands to KaTeX (`throwOnError: false`,
so TeX that KaTeX cannot parse shows as its source in red)."""

from __future__ import annotations

from functools import lru_cache

from markupsafe import Markup

from grader.report.render import markdown_to_html


ANSWER_MAX_CHARS = 30_000


def tex_span(tex: str, display: bool) -> Markup:
    return Markup('<span class="tex" data-display="{}">{}</span>').format("1" if display else "0", tex)


@lru_cache(maxsize=8192)  # answers do not change while grading: a question opens again without re-parsing
def answer_html(text: str | None) -> Markup:
    if not (text or "").strip():
        return Markup('<p class="no-answer">No answer.</p>')
    cut = text[:ANSWER_MAX_CHARS]
    note = Markup('<p class="muted">(answer cut at {} characters)</p>').format(ANSWER_MAX_CHARS) if cut != text else ""
    return markdown_to_html(cut, math=tex_span) + note
