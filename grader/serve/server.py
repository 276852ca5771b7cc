"""A threaded WSGI server for the app (werkzeug's, as Flask ships it; fine for a handful of TAs)."""

from __future__ import annotations

import threading
from pathlib import Path

from werkzeug.serving import make_server as _werkzeug_server

from grader.serve.app import create_app, open_classroom


def make_server(reports_dir: Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                submissions: Path | None = None):
    """Check the folder and database, then bind (port 0: a free one). `.serve_forever()` to run;
    `.classroom` / `.store` are attached for the caller. Raises before binding when the folder is unusable."""
    classroom, store = open_classroom(reports_dir, submissions)
    # scikit-learn takes seconds to import, and Markdown/grouping of a big class most of a second per question:
    # do both now, in the background, not when the first TA opens a question
    threading.Thread(target=_warm_up, args=(classroom,), daemon=True, name="grade-serve-warm-up").start()
    probe = _werkzeug_server(host, port, lambda e, s: [], threaded=True)  # learn the port before building the app
    real_port = probe.server_port
    app = create_app(classroom, store, host=host, port=real_port, token=token)
    probe.app = app  # the same socket serves the real app
    probe.classroom, probe.store = classroom, store
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
