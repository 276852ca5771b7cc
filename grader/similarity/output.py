"""A comparison -> DIR/similarity.csv (every pair) and DIR/similarity.html (ranked pairs, evidence side
by side). For the instructor only: nothing here is ever put into a student's report."""

from __future__ import annotations

import csv
import html
from pathlib import Path

import jinja2

from grader.fileio import csv_cell, write_atomic
from grader.resources import data_dir
from grader.similarity.compare import Comparison, Document, Pair

TEMPLATES_DIR = data_dir("templates")  # the checkout's templates/, or the installed package's
#: a pair at or above this score is marked for review; below it, similarity is what independent work shares
FLAG = 0.5
#: colours of the fragments of one pair (the same fragment has the same colour on both sides)
COLOURS = ("#ffe08a", "#a8e6cf", "#ffb3ba", "#bae1ff", "#e0c3fc", "#ffd6a5", "#caffbf", "#fdffb6")


def write_csv(comparison: Comparison, path: Path) -> Path:
    """`student_a,student_b,score`, one row per pair, highest score first (6 decimals)."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student_a", "student_b", "score"])
    for p in comparison.pairs:
        w.writerow([csv_cell(p.a), csv_cell(p.b), f"{p.score:.6f}"])  # names as folders: never a formula
    write_atomic(path, buf.getvalue())
    return path


def _side(doc: Document, spans: list[tuple[int, int, int]]) -> list[dict]:
    """Lines of `doc` with the fragment (index into COLOURS) each belongs to, or -1."""
    mark: dict[int, int] = {}
    for first, last, k in spans:
        for line in range(first, last + 1):
            mark.setdefault(line, k)
    return [{"no": i, "text": text, "frag": mark.get(i, -1)}
            for i, text in enumerate(doc.source.splitlines(), start=1)]


def _excerpt(lines: list[dict], first: int, last: int, context: int = 2) -> list[dict]:
    return lines[max(0, first - 1 - context):last + context]


def pair_view(pair: Pair, docs: dict[str, Document], max_fragments: int = len(COLOURS)) -> dict:
    """What the HTML shows for one pair: each fragment as two excerpts side by side (a few lines of
    context, matched lines coloured), and both whole files, numbered, coloured alike."""
    frags = pair.fragments[:max_fragments]
    a_spans = [(first, last, k) for k, f in enumerate(frags) for first, last in f.a_spans]
    b_spans = [(first, last, k) for k, f in enumerate(frags) for first, last in f.b_spans]
    a_lines, b_lines = _side(docs[pair.a], a_spans), _side(docs[pair.b], b_spans)
    return {"pair": pair, "a": docs[pair.a], "b": docs[pair.b], "a_lines": a_lines, "b_lines": b_lines,
            "fragments": [{"k": k, "colour": COLOURS[k], "a": f.a_lines, "b": f.b_lines, "weight": f.weight,
                           "a_excerpt": _excerpt(a_lines, *f.a_lines), "b_excerpt": _excerpt(b_lines, *f.b_lines)}
                          for k, f in enumerate(frags)]}


def render_html(comparison: Comparison, assignment: str, top: int = 50, embedded: bool = False) -> str:
    """The ranked pairs (all with a score above 0, at most `top` with evidence) as one HTML page.
    `embedded`: without <html>/<head>, for the web app's own page frame."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True)
    docs = {d.student: d for d in comparison.documents}
    shown = [p for p in comparison.pairs if p.score > 0][:max(top, 0)]
    return env.get_template("similarity.html.j2").render(
        assignment=assignment, comparison=comparison, pairs=shown,
        views=[pair_view(p, docs) for p in shown if p.fragments], colours=COLOURS, flag=FLAG,
        embedded=embedded, n_pairs=len(comparison.pairs), escape=html.escape)


def write_html(comparison: Comparison, path: Path, assignment: str, top: int = 50) -> Path:
    write_atomic(path, render_html(comparison, assignment, top))
    return path
