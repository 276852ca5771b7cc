"""A threaded WSGI server for the app (werkzeug's, as Flask ships it; fine for a handful of TAs)."""

from __future__ import annotations

import threading
from pathlib import Path

from werkzeug.serving import make_server as _werkzeug_server

from grader.serve.app import create_app, new_token, open_classroom, sign_in_url


def make_server(reports_dir: Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                submissions: Path | None = None):
    """Check the folder and database, then bind (port 0: a free one). `.serve_forever()` to run;
    `.classroom`, `.store`, `.token` (a new one unless given) and `.sign_in_url` (the link to print) are attached
    for the caller. Raises before binding when the folder is unusable."""
    token = token or new_token()
    classroom, store = open_classroom(reports_dir, submissions)
    # Markdown and grouping of a big class take most of a second per question: do them now, in the background,
    # not when the first TA opens a question
    threading.Thread(target=_warm_up, args=(classroom,), daemon=True, name="grade-serve-warm-up").start()
    probe = _werkzeug_server(host, port, lambda e, s: [], threaded=True)  # learn the port before building the app
    real_port = probe.server_port
    app = create_app(classroom, store, token, host=host, port=real_port)
    probe.app = app  # the same socket serves the real app
    probe.classroom, probe.store, probe.token = classroom, store, token
    shown = "THIS-MACHINE" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
    probe.sign_in_url = sign_in_url(f"http://{shown}:{real_port}", token)
    return probe


def _warm_up(classroom) -> None:
    from grader.serve.groups import group_answers
    from grader.serve.markup import answer_html

    try:
        for q in classroom.questions:
            answers = classroom.answers(q.key)
            group_answers(answers)
            for text in answers.values():
                answer_html(text)
    except Exception:  # only a cache: the pages compute what they need themselves
        pass
