"""The report's "What was handed in" block: which file was graded, what of a notebook was not run, where the
written answers came from, and the student's own figures (results.json `submission`, see grader.submission)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from grader.results import GradeResult

MAX_LEFT_OUT_ROWS = 60
MAX_NOTE_CHARS = 600
STUDENT_FIGURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif"}


def handed_in_context(result: GradeResult, result_dir: Path, clean_text) -> dict | None:
    """Plain strings for templates/handed_in.html.j2; None when there is nothing to say (a plain .py + answers.md)."""
    sub = result.submission or {}
    if not sub:
        return None
    result_dir = Path(result_dir).resolve()
    left = sub.get("left_out") or []
    rows = [{"where": (f"cell {lo.get('cell')}, line {lo.get('line')}" if lo.get("end_line") == lo.get("line")
                       else f"cell {lo.get('cell')}, lines {lo.get('line')}–{lo.get('end_line')}"),
             "code": clean_text(lo.get("code", ""), 120), "why": clean_text(lo.get("why", ""), 240)}
            for lo in left[:MAX_LEFT_OUT_ROWS] if isinstance(lo, dict)]
    figures = []
    for i, f in enumerate(sub.get("figures") or [], 1):
        rel = str(f.get("path", "")) if isinstance(f, dict) else ""
        path = (result_dir / rel).resolve() if rel else None
        if path is None or not path.is_relative_to(result_dir) or not path.is_file() \
                or path.suffix.lower() not in STUDENT_FIGURE_SUFFIXES:
            continue  # written by the grader itself; anything else is not shown
        figures.append({"n": i, "src": quote(path.relative_to(result_dir).as_posix()),
                        "caption": clean_text(f.get("caption", ""), 200)})
    notes = [clean_text(n, MAX_NOTE_CHARS) for n in broken_cells(sub)]
    notes += [clean_text(n, MAX_NOTE_CHARS) for n in sub.get("notes") or []]
    plain = [n for n in sub.get("notes") or [] if not str(n).startswith(("Answers taken from answers.md",
                                                                         "Not answered in answers.md"))]
    if sub.get("kind") == "module" and sub.get("answers_from") in ("answers.md", "") and not plain and not figures:
        return None  # the usual vae.py + answers.md: nothing worth a section
    return {"module_from": clean_text(sub.get("module_from", ""), 200), "kind": sub.get("kind", ""),
            "answers_from": clean_text(sub.get("answers_from", ""), 200), "notes": notes, "left_out": rows,
            "left_out_more": max(0, len(left) - MAX_LEFT_OUT_ROWS), "figures": figures}


def broken_cells(sub: dict) -> list[str]:
    """A sentence for each notebook cell left out whole (not valid Python, too big, nested too deeply): every
    definition in it is missing when grading, which the student must hear first, not in a table's row."""
    out = []
    for lo in sub.get("left_out") or []:
        why = str(lo.get("why", "")) if isinstance(lo, dict) else ""
        if why.startswith("the cell ") and why.endswith("so none of it is run"):
            reason = "it " + why.removeprefix("the cell ").removesuffix(", so none of it is run")
            out.append(f"Cell {lo.get('cell')} (line {lo.get('line')}) is not run at all: {reason}; everything it "
                       "defines is missing when grading. Fix it and check again.")
    return out

