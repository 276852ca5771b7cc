"""`grade batch`, `grade export`, `grade import`, `grade gradescope build`: a whole class at once."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from grader.glossary import fmt_points, shorten

from grader.commands.console import Table, console, shown
from grader.sandbox.errors import ALLOW_UNSANDBOXED_ENV


class BatchUsageError(click.ClickException):
    exit_code = 2


def _tags(value: str | None) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()] if value else []


@click.command(name="batch")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes grading in parallel.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("reports"), show_default=True,
              help="Folder for <student>/results.json and gradebook.csv.")
@click.option("--assignment", "-a", help="Assignment id (inferred per submission when only one fits).")
@click.option("--only", help="Comma-separated tags (components) to grade, e.g. log_normal_diag,elbo.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Regrade submissions whose results are up to date.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: a process pool on this machine; dask: tasks on a Dask cluster (docs/cluster.md).")
@click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler address (with --executor dask).")
@click.option("--data", metavar="SPEC", help="Data for model-level checks: digits, mnist:PATH or mnist-binary:PATH "
              "(default: the rubric's).")
@click.option("--no-reports", is_flag=True, help="Write results.json only (render later with `grade report`).")
@click.option("--allow-unsandboxed", is_flag=True, envvar=ALLOW_UNSANDBOXED_ENV, show_envvar=True,
              help="Grade even where student code cannot be isolated (not Linux, no user namespaces): only for code "
              "you trust; every result and report says so (the choice travels to every worker, local or Dask).")
def batch_cmd(root, jobs, out, assignment, only, device, force, executor, scheduler, data, no_reports, allow_unsandboxed):
    """Grade every submission folder under ROOT (one subfolder per student); resumable."""
    if allow_unsandboxed:
        console.print("[bold red]WARNING[/]: --allow-unsandboxed: where this machine cannot isolate student code, "
                      "it runs unisolated; every affected result and report says so.")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from grader.batch import find_submissions, grade_batch, not_submissions
    from grader.engine import GradeOptions, GradingError
    from grader.rubric import RubricError

    if not root.is_dir():
        raise BatchUsageError(f"{root} is not a folder: pass the folder that holds one subfolder per student")
    if executor == "dask" and not scheduler:
        raise BatchUsageError("--executor dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    total = len(find_submissions(root))
    left_out = not_submissions(root)
    for name, why in left_out:  # before grading starts: a student who is not graded must not vanish
        console.print(f"[yellow]not graded: {shown(root / name)}: {shown(why)}[/]")
    if total == 0:
        raise BatchUsageError(f"{root} holds no submission folders: put each student's files in ROOT/<student>/")
    failures = [0]
    with Progress(TextColumn("[bold]grading"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("[red]{task.fields[failed]} failed"), TextColumn("{task.fields[last]}"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console.real(), transient=False) as bar:
        task = bar.add_task("grading", total=total, failed=0, last="")

        def progress(outcome, done, total_):
            failures[0] += outcome.status == "failed"
            bar.update(task, completed=done, failed=failures[0], last=f"{shown(outcome.student)}: {outcome.status}")

        try:
            options = GradeOptions(only=_tags(only), device=device, data=data, allow_unsandboxed=allow_unsandboxed)
            summary = grade_batch(root, out, options, jobs=jobs, assignment=assignment, force=force, progress=progress,
                                  executor=executor, scheduler=scheduler, reports=not no_reports)
        except (GradingError, RubricError) as e:
            raise BatchUsageError(str(e)) from None

    table = Table(title=f"{root} → {out}")
    table.add_column("student")
    table.add_column("score", justify="right")
    table.add_column("time", justify="right")
    table.add_column("status")
    table.add_column("note", overflow="fold")
    style = {"graded": "green", "skipped": "dim", "failed": "red"}
    for o in sorted(summary.outcomes, key=lambda o: o.student):
        score = f"{fmt_points(o.score)}/{fmt_points(o.max_score)}" if o.score is not None else "—"
        table.add_row(shown(o.student), score, f"{o.seconds:.1f} s" if o.status != "skipped" else "",
                      f"[{style.get(o.status, '')}]{o.status}[/]", shown(shorten(o.message, 200)))
    console.print(table)
    if only:
        console.print(f"[dim]--only {only}: scores count the selected checks only (out of their points), "
                      "not the assignment's total[/]")
    console.print(f"{len(summary.graded)} graded, {len(summary.skipped)} up to date (skipped), "
                  f"[red]{len(summary.failed)} failed[/] of {summary.total} in {summary.elapsed:.1f} s"
                  + (f"; worker pool restarted {summary.pool_restarts}×" if summary.pool_restarts else "")
                  + (f"; [yellow]{len(left_out)} entr{'y' if len(left_out) == 1 else 'ies'} of {root} not graded "
                     "(listed above)[/]" if left_out else ""))
    for name, why in left_out:
        console.print(f"[yellow]not graded: {shown(root / name)}: {shown(why)}[/]")
    for o in summary.failed:
        console.print(f"[red]✗ {shown(o.student)}[/]: {shown(o.message)}  (details: {shown(out / o.student / 'error.txt')})")
    if summary.gradebook:
        console.print(f"gradebook: {summary.gradebook}")
    if summary.interrupted:
        console.print(f"[yellow]interrupted: {summary.not_done} not graded yet; run the same command again to resume[/]")
        sys.exit(130)
    if summary.total and not summary.graded and not summary.skipped:
        console.print("[red]nothing could be graded[/]: see the messages above")
        sys.exit(1)


@click.command(name="export")
@click.option("--format", "fmt", type=click.Choice(["canvas", "moodle", "csv"]), required=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("reports"), show_default=True,
              help="The folder `grade batch --out` wrote.")
@click.option("--roster", type=click.Path(path_type=Path, dir_okay=False),
              help="CSV with folder,name,id,sis_user_id,sis_login_id,section,email mapping folders to LMS identities.")
def export_cmd(fmt, out, roster):
    """Write the class's grades in an LMS's import format (OUT/canvas_grades.csv, ...)."""
    from grader.lms import LmsError, export_gradebook
    from grader.manual_grades.store import StoreError

    try:
        path, warnings = export_gradebook(out, fmt, roster, return_warnings=True)
    except (LmsError, StoreError) as e:  # StoreError: reports/grades.sqlite unusable (e.g. from a newer gradekit)
        raise BatchUsageError(str(e)) from None
    for w in warnings:
        console.print(f"[yellow]! {w}[/]")
    console.print(f"{fmt} gradebook: {path}")


@click.command(name="import")
@click.argument("kind", type=click.Choice(["canvas", "moodle"]))
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--into", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder to create one subfolder per student in (then: grade batch INTO).")
@click.option("--force", is_flag=True, help="Replace student folders that already exist.")
def import_cmd(kind, archive, into, force):
    """Unpack an LMS bulk download (zip) safely into one folder per student."""
    from grader.lms import LmsError, import_archive

    try:
        report = import_archive(kind, archive, into, force=force)
    except LmsError as e:
        raise BatchUsageError(str(e)) from None
    table = Table(title=f"{archive} → {into}")
    table.add_column("student")
    table.add_column("files", justify="right")
    for student, files in sorted(report.imported.items()):
        table.add_row(shown(student), str(len(files)))
    console.print(table)
    for name, reason in report.skipped:
        console.print(f"[yellow]skipped {shown(name)}: {shown(reason)}[/]")
    console.print(f"{len(report.imported)} student folder(s) written, {len(report.skipped)} entr(y/ies) skipped")


@click.group(name="gradescope")
def gradescope_group():
    """Gradescope autograder packaging."""


@gradescope_group.command(name="build")
@click.option("--assignment", "-a", required=True, help="Assignment id (see `grade list`).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=Path("autograder.zip"), show_default=True)
def gradescope_build_cmd(assignment, out):
    """Write an autograder zip (setup.sh, run_autograder, gradekit's source) to upload to Gradescope."""
    from grader.gradescope import GradescopeError, build_autograder

    try:
        path = build_autograder(assignment, out)
    except GradescopeError as e:
        raise BatchUsageError(str(e)) from None
    console.print(f"autograder: {path} ({path.stat().st_size / 1e6:.1f} MB); upload it in Gradescope → Configure Autograder")
