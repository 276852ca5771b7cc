"""Re-rendering reports after hand grading, in the background (one job per server, progress polled by the page).

Rendering a report takes seconds (WeasyPrint), a class a minute or more: a request that waited for it blocked
the page and was aborted when the TA left it. `RenderJob.start` runs `render_changed` in a server thread that
outlives the request; `RenderJob.state()` is what `/api/render` answers. No student code runs.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Callable

from grader.report.manual import apply_manual, save_in_place

Progress = Callable[[int, int, str], None]  # (reports done, reports to do, what is being rendered now)


def render_changed(classroom, store, progress: Progress | None = None) -> tuple[list[str], list[str]]:
    """Write the database's grades into results.json and re-render report.html/pdf of every student whose
    manual grades differ from their results.json, then gradebook.csv. No student code runs.
    Returns (rendered students, failures: "student: what went wrong")."""
    from grader.report.render import render_report
    from grader.manual_grades.store import stored_entries

    progress = progress or (lambda done, total, now: None)
    classroom.refresh()
    results = dict(classroom.results)
    entries = stored_entries(classroom.dir, results)
    todo = [(s, r) for s, r in sorted(results.items()) if apply_manual(r, entries, s)]
    done, failed = [], []
    for i, (s, r) in enumerate(todo):
        progress(i, len(todo), s)
        try:
            path = save_in_place(r, classroom.result_path(s))
            render_report(r, path.parent)
            done.append(s)
        except Exception as e:  # one broken report must not stop the others
            failed.append(f"{s}: {type(e).__name__}: {e}")
    if done:
        progress(len(todo), len(todo), "gradebook.csv")
        try:
            from grader.batch import write_gradebook

            write_gradebook(classroom.dir)  # gradebook.csv shows the new written grades too
        except Exception as e:
            failed.append(f"gradebook.csv: {type(e).__name__}: {e}")
    classroom.refresh()
    return done, failed


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RenderJob:
    """The server's one re-rendering job. Thread-safe; a second start while one runs joins the running one."""

    def __init__(self, classroom, store, render: Callable = render_changed):
        self.classroom, self.store, self._render = classroom, store, render
        self._lock = threading.Lock()
        self._state = {"running": False, "done": 0, "total": None, "current": "", "rendered": [], "failed": [],
                       "by": "", "started_at": "", "finished_at": ""}
        self._thread: threading.Thread | None = None

    def state(self) -> dict:
        """JSON-ready: running, done/total reports (total None while the changed reports are being found),
        current (student or gradebook.csv), rendered, failed, by (TA), started_at, finished_at (UTC)."""
        with self._lock:
            return {k: (list(v) if isinstance(v, list) else v) for k, v in self._state.items()}

    def start(self, ta: str) -> bool:
        """Start a job unless one runs; True when this call started it."""
        with self._lock:
            if self._state["running"]:
                return False
            self._state.update(running=True, done=0, total=None, current="", rendered=[], failed=[], by=ta,
                               started_at=_now(), finished_at="")
            self._thread = threading.Thread(target=self._run, daemon=True, name="grade-serve-render")
            self._thread.start()
            return True

    def wait(self, timeout: float | None = None) -> dict:
        """Block until the running job (if any) ends; its final state (for tests and scripts)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.state()

    def _progress(self, done: int, total: int, current: str) -> None:
        with self._lock:
            self._state.update(done=done, total=total, current=current)

    def _run(self) -> None:
        rendered, failed = [], []
        try:
            rendered, failed = self._render(self.classroom, self.store, self._progress)
        except Exception as e:  # e.g. the database became unreadable: say so on the page, keep serving
            failed = [f"re-rendering stopped: {type(e).__name__}: {e}"]
        finally:
            with self._lock:
                total = self._state["total"] or 0
                self._state.update(running=False, done=total, total=total, current="", rendered=rendered,
                                   failed=failed, finished_at=_now())
