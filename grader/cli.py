"""The `grade` command line: `grade run`, `grade check`, `grade list` (+ report commands).

Exit codes: 0 when grading completed (whatever the score), 2 for bad usage or bad input,
1 for an internal error of the grader.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grader import trace

trace.mark("python started, grader.cli imported")
import click  # noqa: E402

from grader import __version__  # noqa: E402
from grader.glossary import check_title, fmt_points, shorten  # noqa: E402
from grader.commands.console import Table, console, escape, shown  # noqa: E402  (rich, imported on first use)
from grader.sandbox.errors import ALLOW_UNSANDBOXED_ENV  # noqa: E402


class UsageError(click.ClickException):
    exit_code = 2


def _tags(value: str | None) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()] if value else []


class _Program(click.Group):
    """The `grade` group. Run as a program (the console script, `python -m grader.cli`: no `args`
    given, standalone mode), it ends with `exit_now` instead of a normal interpreter shutdown;
    called with `args` (click's CliRunner, a Python caller) it behaves like any click group."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if args is not None or not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            super().main(None, prog_name, complete_var, True, **extra)
            code = 0
        except SystemExit as e:
            code = e.code
        exit_now(code)


def exit_now(code) -> None:
    """`sys.exit(code)` without tearing the interpreter down (os._exit once output is flushed).

    Freeing an interpreter that imported torch object by object takes 1.5-4 s on the project's
    2-core VM (`bench/bench_startup.py`, row "exit"), more than the grading itself, and gains
    nothing: by now results.json was written atomically and fsynced by its writer, the sandbox's
    children were killed and its folder removed, the report worker reaped. atexit handlers still
    run (temporary folders, the zygote's), except torch's finalizers of its operator libraries
    (0.1 s of unregistering operators in a process about to vanish). With another Python thread
    alive (it might still be writing), the normal shutdown is kept: it joins that thread first."""
    import atexit
    import os
    import threading
    import weakref

    if threading.active_count() > 1:
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): print it, status 1
        print(code, file=sys.stderr)
        code = 1
    try:
        for f, info in list(getattr(weakref.finalize, "_registry", {}).items()):
            if getattr(info.func, "__module__", "").startswith("torch."):
                f.atexit = False
    except Exception:
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe (`grade … | head`): nothing left to say
            pass
    os._exit(code & 0xFF)


@click.group(cls=_Program, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradekit")
def main() -> None:
    """gradekit: grade deep-generative-model homework against reference implementations."""


def _require_folder(path: str) -> Path:
    """Fail early (before starting the sandbox) on a path that is neither a folder nor a notebook."""
    p = Path(path)
    if p.is_dir() or (p.is_file() and p.suffix == ".ipynb"):
        return p
    if p.is_file():
        raise UsageError(f"{path} is a file: pass the folder that holds it ({p.parent}), or a .ipynb notebook")
    raise UsageError(f"{path} does not exist: pass a submission folder (e.g. submissions/alice) or a .ipynb notebook")


def _grade(path: str, assignment: str | None, only: str | None, device: str, out: Path | None, public_only: bool,
           data: str | None = None, allow_unsandboxed: bool = False, secret: str | None = None):
    from grader.engine import GradeOptions, GradingError, find_assignment, grade_submission
    from grader.rubric import RubricError

    trace.mark("grader imported (engine, rubric, checks)")

    submission = Path(path)
    if submission.is_file() and submission.suffix == ".ipynb":  # one notebook: graded as a folder holding only it
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gradekit-notebook-") as tmp:
            folder = Path(tmp) / submission.stem
            folder.mkdir()
            shutil.copyfile(submission, folder / submission.name)
            try:
                return _grade(str(folder), assignment, only, device, out, public_only, data, allow_unsandboxed, secret)
            except UsageError as e:  # name what the user passed, never the temporary folder
                raise UsageError(e.message.replace(str(folder.resolve()), str(submission))
                                 .replace(str(folder), str(submission))) from None
    if not submission.is_dir():
        raise UsageError(f"{path} is not a folder: pass a submission folder (e.g. submissions/alice) or a .ipynb")
    try:
        rubric = find_assignment(submission.resolve(), assignment)
        trace.mark("rubric found")
        options = GradeOptions(only=_tags(only), public_only=public_only, device=device, out_dir=out, data=data,
                               allow_unsandboxed=allow_unsandboxed, secret=secret)
        return rubric, grade_submission(submission, rubric, options)
    except (GradingError, RubricError) as e:
        raise UsageError(str(e)) from None


def warn_unsandboxed(result) -> None:
    missing = (result.sandbox or {}).get("unsandboxed")
    if missing:
        console.print(f"[bold red]WARNING[/]: {shown(result.student)}'s code ran WITHOUT isolation (--allow-unsandboxed); "
                      f"missing: {', '.join(missing)}")


def _print_handed_in(result, report: str = "the report") -> None:
    """Which file was graded and where the answers came from (notebooks, reports: grader.submission).
    `report`: where the details are (a command that writes no report names the one that would)."""
    from grader.report.handed_in import broken_cells

    sub = result.submission or {}
    elsewhere = report
    for note in broken_cells(sub):
        console.print(f"[yellow]{shown(note)}[/]")
    for note in sub.get("notes", []):
        console.print(f"[dim]{shown(note.replace('the report', elsewhere))}[/]")
    left = sub.get("left_out", [])
    if left:
        cells = sorted({lo["cell"] for lo in left})
        console.print(f"[dim]not run when grading: {len(left)} top-level statements in cells "
                      f"{', '.join(map(str, cells[:12]))}{' …' if len(cells) > 12 else ''} (listed in {elsewhere})[/]")


_NOT_JUDGED = ("Not applicable", "Not judged")


def _not_judged(test) -> str:
    """The note of a check that passed without judging some of its cases (a signature that lacks a template
    parameter: `grade check` runs no interface check, so this is where the student hears of it), else ''."""
    lines = test.output.splitlines()
    lacks = next((line for line in lines if "not judged, " in line and " takes no " in line), "")
    if lacks:  # the line that names the missing parameter: "a case: not judged, `f` takes no `reduction` (…)"
        return "Not judged: " + lacks.split("not judged, ", 1)[1]
    return next((line for line in lines if line.startswith(_NOT_JUDGED)), "")


def _brief(test, limit: int = 240) -> str:
    """The terminal's short form of a check's feedback: the diagnosis, else the first failing case."""
    if test.status == "passed":
        return shorten(_not_judged(test), limit)
    lines = test.output.splitlines()
    picked = [l for l in lines if l.startswith("Diagnosis")][:2] or [l for l in lines if l.startswith("- ")][:1] or lines[:1]
    text = " ".join(l.removeprefix("- ") for l in picked)
    return shorten(text, limit)


def _component_rows(result, rubric) -> list[tuple[str, str, list]]:
    """(tag, title, tests) per component, in the order of the checks (the report's grouping)."""
    from grader.glossary import component_title

    groups: dict[str, list] = {}
    for t in result.tests:
        groups.setdefault(t.component or (t.tags[0] if t.tags else "") or "other", []).append(t)
    targets = dict(getattr(rubric, "component_targets", {}) or {})
    return [(tag, component_title(tag, targets.get(tag, "")), tests) for tag, tests in groups.items()]


def _print_table(result, title: str, rubric=None) -> None:
    """One row per component, then a row for each of its checks that did not pass (72 checks, ~10 that matter):
    a component whose checks all passed is one line."""
    table = Table(title=title, show_lines=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("component / check")
    table.add_column("points", justify="right")
    table.add_column("feedback", overflow="fold")
    for tag, name, tests in _component_rows(result, rubric):
        score, top = sum(t.score for t in tests), sum(t.max_score for t in tests)
        passed = sum(t.status == "passed" for t in tests)
        style = "green" if passed == len(tests) else ("yellow" if score > 0 else "red")
        number = (tests[0].number or "").split(".")[0]
        summary = ("its check passed" if passed else "its check did not pass") if len(tests) == 1 else \
            f"all {len(tests)} checks passed" if passed == len(tests) else f"{passed} of {len(tests)} checks passed"
        table.add_row(number, f"[bold]{escape(name)}[/] [dim]— {summary}[/]",
                      f"[{style}]{fmt_points(score)}/{fmt_points(top)}[/]", "")
        said: dict[str, str] = {}  # feedback -> the check that gave it first (a model's four measures: one cause)
        for t in tests:
            if t.status == "passed" and not _not_judged(t):
                continue
            colour = "green" if t.status == "passed" else "yellow" if t.score > 0 else "red"
            brief = _brief(t)
            key = brief.split(": ", 1)[-1]  # without the case's name: the same failure seen by another case
            feedback = f"the same as {said[key]}" if brief and key in said else brief
            said.setdefault(key, t.number)
            table.add_row(t.number, "  " + escape(check_title(t.name, name, tag)),
                          f"[{colour}]{fmt_points(t.score)}/{fmt_points(t.max_score)}[/]", shown(feedback))
    console.print(table)
    for e in result.errors:
        console.print(f"[red]! {shown(e.splitlines()[0])}[/]")


@main.command("run")
@click.argument("path", type=click.Path())
@click.option("--assignment", "-a", help="Assignment id (inferred when only one fits).")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True,
              help="Folder for <student>/results.json.")
@click.option("--only", help="Comma-separated tags (components) to grade, e.g. log_normal_diag,elbo.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--data", metavar="SPEC", help="Data for model-level checks: digits (embedded), mnist:PATH (local "
              "IDX files or a torchvision root) or mnist-binary:PATH. Default: the rubric's.")
@click.option("--allow-unsandboxed", is_flag=True, envvar=ALLOW_UNSANDBOXED_ENV, show_envvar=True,
              help="Grade even where student code cannot be isolated (not Linux, no user namespaces): only for code "
              "you trust; the results and the report say so.")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Render OUT/<student>/report.html and report.pdf after results.json is written.")
@click.option("--seed", "secret", metavar="SECRET", help="Draw the checks' inputs from this secret (the `inputs_secret` "
              "of an earlier results.json) to reproduce that grade. Default: a fresh secret, recorded in results.json.")
def run_cmd(path, assignment, out, only, device, data, allow_unsandboxed, report, secret):
    """Grade one submission folder and write OUT/<student>/results.json (and the report)."""
    _require_folder(path)
    reporter = _start_report_worker(Path(path)) if report else None
    try:
        _start_sandbox()
        from grader.results import save_result

        rubric, result = _grade(path, assignment, only, device, out.resolve(), public_only=False, data=data,
                                allow_unsandboxed=allow_unsandboxed, secret=secret)
        written = save_result(result, out)
        trace.mark("results.json written")
        if reporter is not None:
            reporter.submit(written.parent)  # rendered on the other core while the table prints
        _print_table(result, f"{shown(result.student)} — {rubric.title}", rubric)
        _print_handed_in(result, "the report" if reporter is not None else
                         f"the report that `grade report {out}` writes from results.json")
        auto = f"{fmt_points(result.autograded_score)}/{fmt_points(result.autograded_max)}"
        console.print(f"[bold]{shown(result.student)}[/]: autograded {auto}; written answers: "
                      f"{sum(1 for q in result.questions if q.answer)}/{len(result.questions)} submitted "
                      f"({sum(q.max_score for q in result.questions):g} points, graded by hand)")
        console.print(f"results: {written}  ({result.execution_time:.1f} s on {result.device})")
        warn_unsandboxed(result)
        trace.mark("table printed")
        if reporter is not None:
            _render_report(reporter, written.parent)
            trace.mark("report rendered (worker)")
    finally:
        if reporter is not None:
            reporter.close()
    if any(e.startswith("internal error") for e in result.errors):
        sys.exit(1)


def _start_sandbox() -> None:
    """Import torch, then fork the sandbox's zygote off this process before anything of the grader's
    is imported (torch imported once; a fresh zygote process when forking here is not safe)."""
    from grader.sandbox.client import Zygote

    Zygote.shared().launch(fork_here=True)


def _start_report_worker(submission: Path):
    """Fork the report renderer (before torch is imported here); None when reports cannot be rendered."""
    try:
        from grader.report.background import ReportWorker
    except ImportError:
        return None
    answers = next((p for p in sorted(submission.glob("answers.*")) if p.is_file() and not p.is_symlink()), None)
    return ReportWorker.start(answers)


def _render_report(reporter, folder: Path) -> None:
    try:
        html, pdf = reporter.render(folder)
        console.print(f"report:  {pdf}")
    except Exception as e:  # the results are written; a report failure must not hide them
        console.print(f"[yellow]report not rendered: {type(e).__name__}: {e}[/]")


@main.command("check")
@click.argument("path", type=click.Path(), default=".")
@click.option("--assignment", "-a", help="Assignment id (inferred when only one fits).")
@click.option("--only", help="Comma-separated tags to check.")
def check_cmd(path, assignment, only):
    """Self-check before upload: public checks only, nothing written."""
    _require_folder(path)
    _start_sandbox()
    # The student's own code on their own machine: no isolation needed (nor refused).
    rubric, result = _grade(path, assignment, only, "cpu", None, public_only=True, allow_unsandboxed=True)
    _print_table(result, f"Self-check — {rubric.title} (public checks only)", rubric)
    _print_handed_in(result, "the report that `grade run` writes")
    passed = sum(t.status == "passed" for t in result.tests)
    colour = "green" if passed == len(result.tests) else "yellow"
    graded = {t.component for t in result.tests}
    hidden = [c for c in rubric.checks if not c.public and (not only or c.component in graded)]
    more = f" ({len(hidden)} more, {fmt_points(sum(c.points for c in hidden))} points)" if hidden else ""
    console.print(f"[{colour}]{passed}/{len(result.tests)} public checks passed "
                  f"({fmt_points(result.autograded_score)}/{fmt_points(result.autograded_max)} points)[/] in {result.execution_time:.1f} s. "
                  f"Hidden checks{more} run at grading time.")
    trace.mark("table printed")


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
        except UnicodeDecodeError as e:
            problems = [f"not UTF-8 text (byte {e.start}): save the file as UTF-8 (TOML files must be UTF-8)"]
        except OSError as e:
            problems = [f"cannot be read ({e.strerror or e})"]
        for problem in problems:  # escaped: rich took "[[checks]]" in a message for markup and printed "[]"
            problem = str(problem).removeprefix(f"{p}: ").removeprefix(f"{p} ")  # the path once, in front
            console.print(f"[red]{escape(str(p))}[/]: {escape(problem)}")
        bad += bool(problems)
        if not problems:
            console.print(f"[green]{escape(str(p))}: ok[/]")
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
    from grader.commands.similarity import similarity_cmd; main.add_command(similarity_cmd)  # noqa: E702
    try:
        from grader.commands.report import report_cmd, summary_cmd
    except ImportError:
        return
    main.add_command(report_cmd, "report")
    main.add_command(summary_cmd, "summary")


_register_optional_commands()
trace.mark("click and the commands loaded")


if __name__ == "__main__":
    main()
