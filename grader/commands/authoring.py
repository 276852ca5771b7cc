"""`grade new` and `grade release`: the instructor's authoring tools (grader/authoring/)."""

from __future__ import annotations

from pathlib import Path

import click


class AuthoringUsageError(click.ClickException):
    exit_code = 2


@click.command(name="new")
@click.argument("name")
@click.option("--title", help="The assignment's title (default: derived from NAME).")
@click.option("--no-tests", is_flag=True, help="Do not write tests/test_grading_<module>.py.")
def new_cmd(name: str, title: str | None, no_tests: bool) -> None:
    """Scaffold assignment NAME: reference, mistakes, rubric, checks, a correct example and tests.

    Right after scaffolding, `grade lint-rubric` passes and `grade run submissions/NAME-example` gives
    full marks. Existing files are never overwritten."""
    from grader.authoring.scaffold import REPO_ROOT, ScaffoldError, scaffold

    try:
        made = scaffold(name, title=title, tests=not no_tests)
    except ScaffoldError as e:
        raise AuthoringUsageError(str(e)) from None
    for p in made.files:
        click.echo(f"created {p.relative_to(REPO_ROOT)}")
    click.echo(f"\nNext: grade lint-rubric rubrics/{name}.toml; grade run submissions/{name}-example; "
               f"replace the example component with the assignment's own (docs/authoring.md); "
               f"grade release {name} to build what students receive.")


@click.command(name="release")
@click.argument("assignment")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Output folder (default: release/ASSIGNMENT).")
@click.option("--force", is_flag=True, help="Replace an earlier release in --out.")
@click.option("--record-with", "record_with", multiple=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Submission folders whose runs are recorded besides the reference's (repeatable; "
                   "default: every example under submissions/ holding the module).")
@click.option("--no-verify", is_flag=True, help="Skip running the bundle on the reference before returning.")
def release_cmd(assignment: str, out: Path | None, force: bool, record_with: tuple[Path, ...], no_verify: bool) -> None:
    """Build what students receive: starter code (solutions stripped), answers.md, and an offline
    self-check of the public checks (`python selfcheck.py <module>.py`)."""
    from grader.sandbox.client import Zygote

    Zygote.shared().launch()  # the recording runs use the sandbox: start it while torch imports here
    from grader.authoring.release import REPO_ROOT, ReleaseError, build_release
    from grader.rubric import RubricError, available_rubrics

    try:
        rubrics = available_rubrics()
    except RubricError as e:
        raise AuthoringUsageError(str(e)) from None
    if assignment not in rubrics:
        raise AuthoringUsageError(f"unknown assignment {assignment!r}; known: {', '.join(sorted(rubrics)) or 'none'}")
    rubric = rubrics[assignment]
    out = out or REPO_ROOT / "release" / assignment
    try:
        made = build_release(rubric, out, record_with=list(record_with) if record_with else None,
                             verify=not no_verify, force=force)
    except ReleaseError as e:
        raise AuthoringUsageError(str(e)) from None
    click.echo(f"release of {assignment}: {made.out}")
    click.echo(f"  starter code:  {made.starter.name} (solution blocks replaced by TODOs)")
    click.echo(f"  self-check:    python selfcheck.py {rubric.module}  ({len(made.public_checks)} public checks; "
               f"{made.records} recorded answers from {', '.join(made.recorded_with)})")
    click.echo(f"  files:         {len(made.files)}" + ("" if no_verify else "; verified: the bundle passes the reference"))
    for check_id in made.student_dependent:
        click.echo(f"  note: public check {check_id} asks the reference about the submission's own output: students "
                   "whose output differs from the recorded examples will see it as 'not checked offline'")
    for check_id, why in made.not_offline.items():
        click.echo(f"  warning: public check {check_id} is not in the self-check (the course's grader checks it): {why}")
