"""`grade serve`: the web app to grade written answers (grader/serve/)."""

from __future__ import annotations

import secrets
from pathlib import Path

import click


class ServeError(click.ClickException):
    exit_code = 2


@click.command(name="serve")
@click.argument("reports_dir", default="reports", type=click.Path(path_type=Path, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but 127.0.0.1/localhost requires the token printed at start.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--submissions", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Folder of the students' submission folders, to show their code. Default: none.")
def serve_cmd(reports_dir: Path, host: str, port: int, submissions: Path | None) -> None:
    """Grade the written answers of REPORTS_DIR in the browser (grades in REPORTS_DIR/grades.sqlite).

    Opens nothing by itself: visit the printed address. Stop with Ctrl-C; every decision is already saved.
    """
    try:
        from grader.serve.server import make_server
    except ImportError as e:
        raise ServeError(f"the web app needs Flask ({e}); install it: pip install 'flask>=3'") from None
    from grader.serve.classroom import ClassroomError
    from grader.serve.store import StoreError
    from grader.report.manual import ManualGradeError

    token = None if host in ("127.0.0.1", "localhost", "::1") else secrets.token_urlsafe(18)
    try:
        server = make_server(reports_dir, host, port, token=token, submissions=submissions)
    except (ClassroomError, StoreError, ManualGradeError) as e:
        raise ServeError(str(e)) from None
    except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port") from None
    shown_host = "THIS-MACHINE" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
    click.echo(f"grade serve: {reports_dir} ({len(server.classroom.results)} students; "
               f"{', '.join(server.classroom.assignments)}); grades in {reports_dir / 'grades.sqlite'}")
    click.echo(f"open http://{shown_host}:{server.server_port}/")
    if token:
        click.echo(f"access token (each TA types it once with their name): {token}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped; every decision was saved as it was made")
    finally:
        server.server_close()
