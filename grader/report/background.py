"""A report renderer forked at the start of `grade run`, warming up while the grading runs.

A cold report costs ~3 s on a 2-core machine, most of it before any result exists: importing
WeasyPrint and matplotlib, building mathtext's parser and drawing the formulas of answers.md,
loading fonts. `ReportWorker.start(answers_file)` forks (before torch is imported, while the
process is small and single-threaded) a process that does all that on the other core; once
results.json is written, `render(folder)` has it render report.html/.pdf from that file.

The worker never runs or imports student code: it reads answers.md as text, like the report does.
Where fork is unavailable or the worker fails, `render` falls back to rendering in this process.
"""

from __future__ import annotations

import json
import os
import select
import sys
from pathlib import Path

RENDER_TIMEOUT_S = 300.0


def _warm_up(answers_file: Path | None) -> None:
    """Import the renderer, load fonts, and draw answers.md's formulas into math_png's cache."""
    from grader.report import render

    try:
        import weasyprint

        weasyprint.HTML(string=f"<style>{render.stylesheet()}</style><p>warm-up</p>").write_pdf()
    except Exception:
        pass  # the real render reports the problem
    if answers_file is not None:
        try:
            text = answers_file.read_bytes()[:400_000].decode("utf-8", errors="replace")
            render.markdown_to_html(text)
        except Exception:
            pass


def _serve(conn_r: int, conn_w: int, answers_file: Path | None) -> None:
    _warm_up(answers_file)
    with os.fdopen(conn_r, "rb") as r, os.fdopen(conn_w, "wb") as w:
        line = r.readline()
        if not line:
            return  # the grader exited without results (an error, Ctrl-C)
        folder = Path(json.loads(line)["folder"])
        try:
            from grader.report.render import render_report
            from grader.results import load_result

            html, pdf = render_report(load_result(folder / "results.json"), folder)
            reply = {"ok": True, "html": str(html), "pdf": str(pdf)}
        except Exception as e:
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        w.write(json.dumps(reply).encode() + b"\n")


def background_supported() -> bool:
    """Forking is safe here: a POSIX system other than macOS, torch not imported, one thread only."""
    if not hasattr(os, "fork") or sys.platform == "darwin":  # macOS: forking after system frameworks start is unsafe
        return False
    if "torch" in sys.modules:  # e.g. `grade run` invoked in-process by a test: render in this process
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1  # native threads too (a BLAS pool, …)
    except OSError:
        import threading

        return threading.active_count() == 1


class ReportWorker:
    """Handle on the forked renderer; `render` always returns (html, pdf) or raises like render_report."""

    def __init__(self, pid: int | None = None, to_worker: int | None = None, from_worker: int | None = None):
        self.pid, self.to_worker, self.from_worker = pid, to_worker, from_worker
        self.submitted: Path | None = None  # the folder the worker was asked to render

    @classmethod
    def start(cls, answers_file: Path | None = None) -> "ReportWorker":
        """Fork the worker now. Call it before importing torch or starting threads (fork safety)."""
        if not background_supported():
            return cls()
        a_r, a_w = os.pipe()  # grader -> worker
        b_r, b_w = os.pipe()  # worker -> grader
        try:
            pid = os.fork()
        except OSError:
            for fd in (a_r, a_w, b_r, b_w):
                os.close(fd)
            return cls()
        if pid == 0:  # the worker
            code = 0
            try:
                os.close(a_w)
                os.close(b_r)
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, 0)  # never read the terminal; output of libraries goes nowhere
                os.dup2(devnull, 1)
                _serve(a_r, b_w, answers_file)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(a_r)
        os.close(b_w)
        return cls(pid, a_w, b_r)

    def submit(self, folder: Path) -> None:
        """Have the worker start rendering folder/results.json now (`render` then waits for it), so
        that the caller's own work, e.g. printing the results, overlaps with the rendering."""
        folder = Path(folder).resolve()
        if self.pid is None or self.submitted is not None:
            return
        try:
            os.write(self.to_worker, json.dumps({"folder": str(folder)}).encode() + b"\n")
            self.submitted = folder
        except OSError:
            self.close()  # `render` falls back to this process

    def render(self, folder: Path) -> tuple[Path, Path]:
        folder = Path(folder).resolve()
        self.submit(folder)
        if self.pid is not None and self.submitted == folder:
            reply = self._wait()
            if reply is not None:
                if reply.get("ok"):
                    return Path(reply["html"]), Path(reply["pdf"])
                raise RuntimeError(reply.get("error", "unknown error"))
        from grader.report.render import render_report
        from grader.results import load_result

        return render_report(load_result(folder / "results.json"), folder)

    def _wait(self) -> dict | None:
        try:
            data = b""
            while not data.endswith(b"\n"):
                ready, _, _ = select.select([self.from_worker], [], [], RENDER_TIMEOUT_S)
                chunk = os.read(self.from_worker, 1 << 16) if ready else b""
                if not chunk:
                    return None  # the worker died or hangs: render here instead
                data += chunk
            return json.loads(data)
        except (OSError, ValueError):
            return None
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker (if it still runs) and reap it."""
        for fd in (self.to_worker, self.from_worker):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.to_worker = self.from_worker = None
        if self.pid is not None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = None
