"""`grade similarity`: code similarity across a class, for the instructor (never in a student's report)."""

from __future__ import annotations

from pathlib import Path

import click


class _BadInput(click.ClickException):
    exit_code = 2


@click.command(name="similarity")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--assignment", "-a", default=None, metavar="ID",
              help="The assignment (see `grade list`). Default: the one most folders under ROOT fit.")
@click.option("--starter", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="Starter code to ignore: a file or a folder of .py/.ipynb files. "
                   "Default: what `grade release` gives the students of the assignment.")
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False), default=Path("similarity"),
              show_default=True, help="Folder for similarity.csv and similarity.html.")
@click.option("--top", type=click.IntRange(0), default=50, show_default=True,
              help="Pairs shown with side-by-side evidence in the HTML (the CSV has every pair).")
@click.option("--no-cache", is_flag=True, help="Recompute every fingerprint (default: cached by content).")
def similarity_cmd(root: Path, assignment: str | None, starter: Path | None, out: Path, top: int,
                   no_cache: bool) -> None:
    """Compare every pair of submissions under ROOT (one folder per student) and rank them.

    Renamed identifiers, reordered functions, new comments and formatting, split or merged
    expressions, loops vs comprehensions, torch.sum(x, dim=1) vs x.sum(1) and inserted dead code do
    not hide a copy; the starter code and fragments most students share weigh nothing or little.
    Writes OUT/similarity.csv (student_a,student_b,score, highest first) and OUT/similarity.html.
    """
    import time

    from grader.commands.console import Table, console, shown
    from grader.similarity import run_similarity
    from grader.similarity.load import SimilarityError
    from grader.similarity.output import FLAG, write_csv, write_html

    started = time.perf_counter()
    try:
        comparison, rubric = run_similarity(root, assignment, starter, top, use_cache=not no_cache)
    except SimilarityError as e:
        raise _BadInput(str(e)) from None
    if len(comparison.documents) < 2:
        for s in comparison.skipped:
            console.print(f"[yellow]skipped[/] {shown(s.student)}: {shown(s.reason)}")
        raise _BadInput(f"{len(comparison.documents)} submission(s) of {rubric.id} could be read under {root}: "
                        "at least two are needed to compare")
    csv_path = write_csv(comparison, out / "similarity.csv")
    html_path = write_html(comparison, out / "similarity.html", rubric.id, top)
    seconds = time.perf_counter() - started

    table = Table(title=f"Most similar pairs ({rubric.id})")
    for col in ("#", "student A", "student B", "score", "largest copied unit"):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    for i, p in enumerate(comparison.pairs[:10], 1):
        style = "bold red" if p.score >= FLAG else None
        table.add_row(str(i), shown(p.a), shown(p.b), f"{p.score:.2f}", shown(p.partial_unit.replace(":", ": ")), style=style)
    console.print(table)
    for s in comparison.skipped:
        console.print(f"[yellow]not compared[/] {shown(s.student)}: {shown(s.reason)}")
    flagged = sum(p.score >= FLAG for p in comparison.pairs)
    console.print(f"{len(comparison.documents)} submissions, {len(comparison.pairs)} pairs, {flagged} at or above "
                  f"{FLAG:.2f} (review them in the HTML) · starter removed: {comparison.starter or 'none'} · "
                  f"{seconds:.1f} s")
    console.print(f"wrote {csv_path} and {html_path}")
