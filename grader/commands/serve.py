"""`grade serve`: the web app to grade written answers (grader/serve/)."""

from __future__ import annotations

from pathlib import Path

import click


class ServeError(click.ClickException):
    exit_code = 2


@click.command(name="serve")
@click.argument("reports_dir", default="reports", type=click.Path(path_type=Path, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (127.0.0.1: this machine only). On every address the TAs need the "
                   "sign-in link (or token) printed at start.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--submissions", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Folder of the students' submission folders, to show their code. Default: none.")
def serve_cmd(reports_dir: Path, host: str, port: int, submissions: Path | None) -> None:
    """Grade the written answers of REPORTS_DIR in the browser (grades in REPORTS_DIR/grades.sqlite).

    Opens nothing by itself: open the printed sign-in link (it holds a token that changes at every start;
    other accounts on this machine cannot use the server without it). Stop with Ctrl-C; every decision is
    already saved.
    """
    try:
        from grader.serve.server import make_server
    except ImportError as e:
        raise ServeError(f"the web app needs Flask ({e}); install it: pip install 'flask>=3'") from None
    from grader.serve.classroom import ClassroomError
    from grader.manual_grades.store import StoreError
    from grader.report.manual import ManualGradeError

    try:
        server = make_server(reports_dir, host, port, submissions=submissions)
    except (ClassroomError, StoreError, ManualGradeError) as e:
        raise ServeError(str(e)) from None
    except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port") from None
    click.echo(f"grade serve: {reports_dir} ({len(server.classroom.results)} students; "
               f"{', '.join(server.classroom.assignments)}); grades in {reports_dir / 'grades.sqlite'}")
    click.echo("sign in (each TA opens this link once and types their name; it changes at every start):")
    click.echo(f"    {server.sign_in_url}", nl=True)
    click.echo(f"access token, to type on the sign-in page instead: {server.token}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped; every decision was saved as it was made")
    finally:
        server.server_close()
