"""Manual grades of written answers: `reports/manual.csv` -> QuestionResult.score/comment -> results.json.

    student,question,score,comment
    alice,Q1,1,"Clear and correct."
    bob,Q2,1.5,"Sign error in the log-determinant."
    bob,Q3,,"Comment only: leaves the question ungraded."

The whole file is validated before anything is written (unknown student or question, score not a number
or outside [0, points], the same student/question twice): one bad row -> `ManualGradeError` naming every
bad row, and no results.json changes. Applying never runs student code: it rewrites results.json
atomically and re-renders the report from it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from grader import glossary
from grader.fileio import csv_uncell
from grader.results import GradeResult, QuestionResult, load_result, save_result, write_json_atomic

COLUMNS = ("student", "question", "score", "comment")


class ManualGradeError(ValueError):
    """manual.csv is malformed or does not match the results; the message names the file, rows and fix."""


@dataclass(frozen=True)
class ManualEntry:
    student: str
    question: str
    score: float | None  # None: comment only, the question stays ungraded
    comment: str
    line: int  # line number in the CSV file (the header is line 1)


def read_manual_csv(path: Path, problems: list[str] | None = None) -> list[ManualEntry]:
    """Parse manual.csv (UTF-8, optional BOM). Checks the columns and that scores are numbers.

    Bad rows raise ManualGradeError, or, when a `problems` list is given, are described there and skipped."""
    collect = problems is not None
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManualGradeError(f"{path}: file not found; create it with the columns {', '.join(COLUMNS)}") from None
    except UnicodeDecodeError as e:
        raise ManualGradeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 CSV") from None
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("student", "question", "score") if c not in header]
    if missing:
        raise ManualGradeError(f"{path}: the header must name the columns {', '.join(COLUMNS)} "
                               f"(comment optional); missing: {', '.join(missing)}; found: {', '.join(header) or 'nothing'}")
    reader.fieldnames = header
    entries: list[ManualEntry] = []
    problems = problems if problems is not None else []
    for row in reader:
        line = reader.line_num
        # a leading "'" is the spreadsheet neutraliser that `grade serve`'s export adds (fileio.csv_cell)
        student = csv_uncell((row.get("student") or "").strip())
        question = (row.get("question") or "").strip()
        raw_score = (row.get("score") or "").strip()
        comment = csv_uncell((row.get("comment") or "").strip())
        if not any([student, question, raw_score, comment]):
            continue  # blank line
        where = f"row {line} (student {student!r}, question {question!r})"
        if None in row:
            problems.append(f"{where}: more fields than columns; quote comments that contain commas")
            continue
        if not student or not question:
            problems.append(f"{where}: student and question are required")
            continue
        score = None
        if raw_score:
            try:
                score = float(raw_score.replace(",", ".") if raw_score.count(",") == 1 and "." not in raw_score
                              else raw_score)
            except ValueError:
                problems.append(f"{where}: score {raw_score!r} is not a number")
                continue
            if not math.isfinite(score):
                problems.append(f"{where}: score {raw_score!r} is not a finite number")
                continue
        entries.append(ManualEntry(student, question, score, comment, line))
    if problems and not collect:
        raise ManualGradeError(_message(path, problems))
    return entries


def validate_entries(entries: list[ManualEntry], results: dict[str, GradeResult], source: Path | str = "manual.csv",
                     problems: list[str] | None = None) -> None:
    """Check every entry against the results: the student exists, the question exists, score in [0, points].
    Raises ManualGradeError naming every bad row (those in `problems` too, e.g. from read_manual_csv)."""
    problems = list(problems or [])
    seen: dict[tuple[str, str], int] = {}
    for e in entries:
        where = f"row {e.line} (student {e.student!r}, question {e.question!r})"
        key = (e.student, e.question)
        if key in seen:
            problems.append(f"{where}: {e.student} {e.question} is already graded on row {seen[key]}; keep one row")
            continue
        seen[key] = e.line
        result = results.get(e.student)
        if result is None:
            known = ", ".join(sorted(results)[:20]) or "none"
            problems.append(f"{where}: unknown student {e.student!r}; students with a results.json: {known}")
            continue
        q = find_question(result, e.question)
        if q is None:
            known = ", ".join(q.id for q in result.questions) or "none (the results carry no written questions)"
            problems.append(f"{where}: unknown question {e.question!r} for {e.student}; its questions are {known}")
            continue
        if e.score is not None and not (0 <= e.score <= q.max_score + 1e-9):
            problems.append(f"{where}: score {e.score:g} is outside [0, {q.max_score:g}] ({q.id} is worth "
                            f"{glossary.points(q.max_score)})")
    if problems:
        problems.sort(key=_row_of)
        raise ManualGradeError(_message(source, problems))


def _row_of(problem: str) -> int:
    try:
        return int(problem.split()[1]) if problem.startswith("row ") else 0
    except (IndexError, ValueError):
        return 0


def check_manual_csv(path: Path, results: dict[str, GradeResult]) -> list[ManualEntry]:
    """read_manual_csv + validate_entries, reporting the bad rows of both kinds in one ManualGradeError."""
    problems: list[str] = []
    entries = read_manual_csv(path, problems)
    validate_entries(entries, results, path, problems)
    return entries


def _message(source: Path | str, problems: list[str]) -> str:
    head = f"{source}: {len(problems)} bad row{'s' if len(problems) > 1 else ''}; nothing was changed. Fix:"
    shown = problems[:30] + ([f"... and {len(problems) - 30} more"] if len(problems) > 30 else [])
    return "\n".join([head, *("  " + p for p in shown)])


def find_question(result: GradeResult, qid: str) -> QuestionResult | None:
    """The question `qid` of `result` ("Q1"; "q1" matches too when no id is spelt exactly so)."""
    for q in result.questions:
        if q.id == qid:
            return q
    matches = [q for q in result.questions if q.id.strip().lower() == qid.strip().lower()]
    return matches[0] if len(matches) == 1 else None


def apply_manual(result: GradeResult, entries: list[ManualEntry], student: str | None = None) -> bool:
    """Set score/comment of `result`'s questions from the entries for `student` (default: result.student).
    Return True if anything changed. Call `validate_entries` first: entries that don't fit are skipped."""
    changed = False
    student = student if student is not None else result.student
    for e in entries:
        q = find_question(result, e.question) if e.student == student else None
        if q is None:
            continue
        if (q.score, q.comment) != (e.score, e.comment):
            q.score, q.comment = e.score, e.comment
            changed = True
    return changed


def load_results(results_dir: Path, broken: list[tuple[Path, str]] | None = None) -> dict[str, tuple[Path, GradeResult]]:
    """student -> (results.json path, GradeResult) for every `*/results.json` under `results_dir`.

    An unreadable results.json raises ManualGradeError, or, when a `broken` list is given, is recorded
    there as (path, reason) and skipped."""
    found: dict[str, tuple[Path, GradeResult]] = {}
    for path in sorted(Path(results_dir).glob("*/results.json")):
        try:
            result = load_result(path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            reason = f"{type(e).__name__}: {e}"
            if broken is None:
                raise ManualGradeError(f"{path}: cannot read it ({reason}); re-run `grade run` for this student") from e
            broken.append((path, reason))
            continue
        found[result.student or path.parent.name] = (path, result)
    return found


def save_in_place(result: GradeResult, path: Path) -> Path:
    """Rewrite results.json atomically where it was read from."""
    path = Path(path)
    if path.name == "results.json" and path.parent.name == result.student:
        return save_result(result, path.parent.parent)
    write_json_atomic(path, result.to_json())
    return path


def apply_manual_csv(csv_path: Path, results_dir: Path, students: list[str] | None = None,
                     render: bool = True) -> list[Path]:
    """Validate manual.csv against every results.json under `results_dir`, then apply it (to `students`, or
    all), rewrite the changed results.json files and, if `render`, re-render those students' reports.
    Returns the files written. Raises ManualGradeError before writing anything if any row is bad."""
    loaded = load_results(results_dir)
    entries = check_manual_csv(csv_path, {s: r for s, (_, r) in loaded.items()})
    written: list[Path] = []
    for student, (path, result) in loaded.items():
        if students is not None and student not in students:
            continue
        if not apply_manual(result, entries, student):
            continue
        written.append(save_in_place(result, path))
        if render:
            from grader.report.render import render_report

            written.extend(render_report(result, path.parent))
    return written
