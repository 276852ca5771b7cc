"""`grade report` and `grade summary`: re-render reports from results.json (no student code runs)."""

from __future__ import annotations

from pathlib import Path

import click

from grader.glossary import fmt_points


class UsageError(click.ClickException):
    """Bad input (a missing folder, a malformed CSV): exit status 2, as every other command's (1: internal errors)."""
    exit_code = 2


@click.command(name="report")
@click.argument("results_dir", default="reports", type=click.Path(path_type=Path, file_okay=False))
@click.option("--student", "students", multiple=True, metavar="NAME",
              help="Only this student (repeatable). Default: every */results.json under RESULTS_DIR.")
@click.option("--manual", "manual", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Manual grades CSV (student,question,score,comment); its rows override grades.sqlite's. "
                   "Default: RESULTS_DIR/manual.csv if it exists and grades.sqlite does not.")
def report_cmd(results_dir: Path, students: tuple[str, ...], manual: Path | None) -> None:
    """Write report.html and report.pdf for each student from RESULTS_DIR/<student>/results.json.

    Manual grades entered in `grade serve` (RESULTS_DIR/grades.sqlite) are applied; without that database,
    RESULTS_DIR/manual.csv is read by default. Manual scores of written answers in manual.csv are validated (every row) and written into
    results.json first; a bad row stops everything before any file changes.
    """
    from grader.report.manual import ManualGradeError, apply_manual, check_manual_csv, load_results, save_in_place
    from grader.report.render import render_report
    from grader.manual_grades.store import StoreError, stored_entries

    if not results_dir.is_dir():
        raise UsageError(f"{results_dir} is not a folder; pass the folder `grade run --out` wrote "
                         "(default: reports)")
    if manual is None and (results_dir / "manual.csv").is_file() and not (results_dir / "grades.sqlite").exists():
        manual = results_dir / "manual.csv"
    if manual is not None and not manual.is_file():
        raise UsageError(f"{manual}: no such file; create it with the columns "
                         "student,question,score,comment or leave out --manual")

    broken: list[tuple[Path, str]] = []
    loaded = load_results(results_dir, broken)
    wanted = set(students) if students else None
    if wanted is not None:
        unknown = sorted(wanted - set(loaded))
        if unknown:
            known = ", ".join(sorted(loaded)[:20]) or "none"
            raise UsageError(f"no results.json for {', '.join(unknown)} under {results_dir} "
                             f"(students found: {known}); run `grade run` for them first")
    if not loaded and not broken:
        raise UsageError(f"no */results.json under {results_dir}; run `grade run SUBMISSION --out "
                         f"{results_dir}` first")

    entries = []
    try:
        # grades entered in `grade serve` first; an explicit/default manual.csv overrides them row by row
        entries = stored_entries(results_dir, {s: r for s, (_, r) in loaded.items()})
    except StoreError as e:
        raise UsageError(str(e)) from None
    if manual is not None:
        try:
            rows = check_manual_csv(manual, {s: r for s, (_, r) in loaded.items()})
        except ManualGradeError as e:
            raise UsageError(str(e)) from None
        from_csv = {(e.student, e.question) for e in rows}
        entries = [e for e in entries if (e.student, e.question) not in from_csv] + rows

    failures = []
    for student, (path, result) in sorted(loaded.items()):
        if wanted is not None and student not in wanted:
            continue
        if entries and apply_manual(result, entries, student):
            save_in_place(result, path)
            click.echo(f"{student}: applied manual grades from {manual or 'grades.sqlite'} -> {path}")
        try:
            html, pdf = render_report(result, path.parent)
        except Exception as e:  # one broken report must not stop the others
            failures.append(f"{student}: {type(e).__name__}: {e}")
            click.echo(f"{student}: FAILED to render ({type(e).__name__}: {e})", err=True)
            continue
        pending = [q.id for q in result.questions if q.score is None]
        note = f" (written {', '.join(pending)} not graded yet)" if pending else ""
        click.echo(f"{student}: {fmt_points(result.score)}/{fmt_points(result.max_score)}{note} -> {pdf} (+ {html.name})")
    for path, why in broken:
        if wanted is None or path.parent.name in wanted:
            failures.append(f"{path}: unreadable ({why})")
            click.echo(f"{path}: unreadable, skipped ({why})", err=True)
    if failures:
        raise click.ClickException(f"{len(failures)} report(s) not written:\n  " + "\n  ".join(failures) +
                                   "\nRe-run `grade run` for these students, or fix the file named.")


@click.command(name="summary")
@click.argument("results_dir", default="reports", type=click.Path(path_type=Path, file_okay=False))
def summary_cmd(results_dir: Path) -> None:
    """Write RESULTS_DIR/summary.html and summary.pdf: score histogram, pass rate per check, common mistakes."""
    from grader.report.summary import render_summary

    if not results_dir.is_dir():
        raise UsageError(f"{results_dir} is not a folder; pass the folder `grade run --out` wrote "
                         "(default: reports)")
    if not any(results_dir.glob("*/results.json")):
        raise UsageError(f"no */results.json under {results_dir}; run `grade run` first")
    pdf = render_summary(results_dir)
    click.echo(f"wrote {pdf.with_suffix('.html')} and {pdf}")
