"""The `grade` command line: `grade run`, `grade check`, `grade list` (+ report commands).

Exit codes: 0 when grading completed (whatever the score), 2 for bad usage or bad input,
1 for an internal error of the grader.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from grader import __version__

console = Console(highlight=False)


class UsageError(click.ClickException):
    exit_code = 2


def _tags(value: str | None) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()] if value else []


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradekit")
def main() -> None:
    """gradekit: grade deep-generative-model homework against reference implementations."""


def _grade(path: str, assignment: str | None, only: str | None, device: str, out: Path | None, public_only: bool,
           data: str | None = None, allow_unsandboxed: bool | None = None):
    from grader.sandbox.client import Zygote

    Zygote.shared().launch()  # imports torch in parallel with this process's own imports
    from grader.engine import GradeOptions, GradingError, find_assignment, grade_submission
    from grader.rubric import RubricError

    submission = Path(path)
    if submission.is_file() and submission.suffix == ".ipynb":  # one notebook: graded as a folder holding only it
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gradekit-notebook-") as tmp:
            folder = Path(tmp) / submission.stem
            folder.mkdir()
            shutil.copyfile(submission, folder / submission.name)
            return _grade(str(folder), assignment, only, device, out, public_only, data, allow_unsandboxed)
    if not submission.is_dir():
        raise UsageError(f"{path} is not a folder: pass a submission folder (e.g. submissions/alice) or a .ipynb")
    try:
        rubric = find_assignment(submission.resolve(), assignment)
        options = GradeOptions(only=_tags(only), public_only=public_only, device=device, out_dir=out, data=data,
                               allow_unsandboxed=allow_unsandboxed)
        return rubric, grade_submission(submission, rubric, options)
    except (GradingError, RubricError) as e:
        raise UsageError(str(e)) from None


def warn_unsandboxed(result) -> None:
    missing = (result.sandbox or {}).get("unsandboxed")
    if missing:
        console.print(f"[bold red]WARNING[/]: {result.student}'s code ran WITHOUT isolation (--allow-unsandboxed); "
                      f"missing: {', '.join(missing)}")


def _print_handed_in(result) -> None:
    """Which file was graded and where the answers came from (notebooks, reports: grader.submission)."""
    sub = result.submission or {}
    for note in sub.get("notes", []):
        console.print(f"[dim]{escape(note)}[/]")
    left = sub.get("left_out", [])
    if left:
        cells = sorted({lo["cell"] for lo in left})
        console.print(f"[dim]not run when grading: {len(left)} top-level statements in cells "
                      f"{', '.join(map(str, cells[:12]))}{' …' if len(cells) > 12 else ''} (see the report)[/]")


def _brief(test, limit: int = 240) -> str:
    """The terminal's short form of a check's feedback: the diagnosis, else the first failing case."""
    if test.status == "passed":
        return ""
    lines = test.output.splitlines()
    picked = [l for l in lines if l.startswith("Diagnosis")][:2] or [l for l in lines if l.startswith("- ")][:1] or lines[:1]
    text = " ".join(l.removeprefix("- ") for l in picked)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _print_table(result, title: str, show_hidden_output: bool = True) -> None:
    table = Table(title=title, show_lines=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("check")
    table.add_column("points", justify="right")
    table.add_column("feedback", overflow="fold")
    for t in result.tests:
        style = "green" if t.status == "passed" else ("yellow" if t.score > 0 else "red")
        table.add_row(t.number, t.name, f"[{style}]{t.score:g}/{t.max_score:g}[/]", escape(_brief(t)))
    console.print(table)
    for e in result.errors:
        console.print(f"[red]! {escape(e.splitlines()[0])}[/]")


@main.command("run")
@click.argument("path", type=click.Path())
@click.option("--assignment", "-a", help="Assignment id (inferred when only one fits).")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True,
              help="Folder for <student>/results.json.")
@click.option("--only", help="Comma-separated tags (components) to grade, e.g. log_normal_diag,elbo.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--data", metavar="SPEC", help="Data for model-level checks: digits (embedded), mnist:PATH (local "
              "IDX files or a torchvision root) or mnist-binary:PATH. Default: the rubric's.")
@click.option("--allow-unsandboxed", is_flag=True, help="Grade even where student code cannot be isolated (not Linux, "
              "no user namespaces): only for code you trust; the results and the report say so.")
def run_cmd(path, assignment, out, only, device, data, allow_unsandboxed):
    """Grade one submission folder and write OUT/<student>/results.json."""
    from grader.results import save_result

    rubric, result = _grade(path, assignment, only, device, out.resolve(), public_only=False, data=data,
                            allow_unsandboxed=allow_unsandboxed or None)
    written = save_result(result, out)
    _print_table(result, f"{result.student} — {rubric.title}")
    _print_handed_in(result)
    auto = f"{result.autograded_score:g}/{result.autograded_max:g}"
    console.print(f"[bold]{result.student}[/]: autograded {auto}; written answers: "
                  f"{sum(1 for q in result.questions if q.answer)}/{len(result.questions)} submitted "
                  f"({sum(q.max_score for q in result.questions):g} points, graded by hand)")
    console.print(f"results: {written}  ({result.execution_time:.1f} s on {result.device})")
    warn_unsandboxed(result)
    _render_report_if_available(result, written.parent)
    if any(e.startswith("internal error") for e in result.errors):
        sys.exit(1)


def _render_report_if_available(result, folder: Path) -> None:
    try:
        from grader.report.render import render_report
    except ImportError:
        return
    try:
        html, pdf = render_report(result, folder)
        console.print(f"report:  {pdf}")
    except Exception as e:  # the results are written; a report failure must not hide them
        console.print(f"[yellow]report not rendered: {type(e).__name__}: {e}[/]")


@main.command("check")
@click.argument("path", type=click.Path(), default=".")
@click.option("--assignment", "-a", help="Assignment id (inferred when only one fits).")
@click.option("--only", help="Comma-separated tags to check.")
def check_cmd(path, assignment, only):
    """Self-check before upload: public checks only, nothing written."""
    # The student's own code on their own machine: no isolation needed (nor refused).
    rubric, result = _grade(path, assignment, only, "cpu", None, public_only=True, allow_unsandboxed=True)
    _print_table(result, f"Self-check — {rubric.title} (public checks only)")
    _print_handed_in(result)
    passed = sum(t.status == "passed" for t in result.tests)
    colour = "green" if passed == len(result.tests) else "yellow"
    console.print(f"[{colour}]{passed}/{len(result.tests)} public checks passed "
                  f"({result.autograded_score:g}/{result.autograded_max:g} points)[/] in {result.execution_time:.1f} s. "
                  "Hidden checks run at grading time.")


@main.command("list")
def list_cmd():
    """The assignments gradekit knows, with their components and points."""
    from grader.rubric import RubricError, available_rubrics

    try:
        rubrics = available_rubrics()
    except RubricError as e:
        raise UsageError(str(e)) from None
    for r in rubrics.values():
        table = Table(title=f"{r.id} — {r.title} ({r.course})")
        table.add_column("component")
        table.add_column("checks", justify="right")
        table.add_column("public", justify="right")
        table.add_column("points", justify="right")
        for comp in r.components:
            cs = [c for c in r.checks if c.component == comp]
            table.add_row(comp, str(len(cs)), str(sum(c.public for c in cs)), f"{sum(c.points for c in cs):g}")
        table.add_row("written questions", str(len(r.questions)), "", f"{sum(q.points for q in r.questions):g}")
        console.print(table)
        console.print(f"submission file: {r.module}; answers: {r.answers}; total {r.max_points + sum(q.points for q in r.questions):g} points")


@main.command("lint-rubric")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def lint_rubric_cmd(paths):
    """Validate rubric files (default: all under rubrics/)."""
    from grader.rubric import RUBRICS_DIR, RubricError, lint_rubric, load_rubric

    paths = paths or sorted(RUBRICS_DIR.glob("*.toml"))
    bad = 0
    for p in paths:
        try:
            problems = lint_rubric(load_rubric(p))
        except RubricError as e:
            problems = [str(e)]
        for problem in problems:
            console.print(f"[red]{p}[/]: {problem}")
        bad += bool(problems)
        if not problems:
            console.print(f"[green]{p}: ok[/]")
    if bad:
        raise UsageError(f"{bad} rubric file(s) have problems (listed above)")


def _register_optional_commands() -> None:
    from grader.commands.serve import serve_cmd; main.add_command(serve_cmd)  # noqa: E702 (Flask imported on use)
    try:
        from grader.commands.batch import batch_cmd, export_cmd, import_cmd, gradescope_group
    except ImportError:
        pass
    else:
        main.add_command(batch_cmd)
        main.add_command(export_cmd)
        main.add_command(import_cmd)
        main.add_command(gradescope_group)
    try:
        from grader.commands.authoring import new_cmd, release_cmd
    except ImportError:
        pass
    else:
        main.add_command(new_cmd, "new")
        main.add_command(release_cmd, "release")
    try:
        from grader.commands.report import report_cmd, summary_cmd
    except ImportError:
        return
    main.add_command(report_cmd, "report")
    main.add_command(summary_cmd, "summary")


_register_optional_commands()


if __name__ == "__main__":
    main()
