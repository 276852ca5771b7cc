"""A report renderer forked at the start of `grade run`, warming up while the grading runs.

A cold report costs ~3 s on a 2-core machine, most of it before any result exists: importing
WeasyPrint and matplotlib, building mathtext's parser and drawing the formulas of answers.md,
loading fonts. `ReportWorker.start(answers_file)` forks (before torch is imported, while the
process is small and single-threaded) a process that does all that on the other core; once
results.json is written, `render(folder)` has it render report.html/.pdf from that file.

While the grader evaluates the student's model, the idle worker can also draw its figures
(`draw`: a `grader.figures.draw_plan` plan, arrays sent as .npy bytes, so the PNGs are the ones this
process would draw): matplotlib holds the GIL, so a thread here would take turns with the evaluation
instead of running beside it on the other core.

The worker never runs or imports student code: it reads answers.md as text, like the report does, and
draws from numbers. Where fork is unavailable or the worker fails, `render` falls back to rendering in
this process and a plan is drawn here.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import sys
import time
from pathlib import Path

from grader import figure_offload

RENDER_TIMEOUT_S = 300.0
DRAW_TIMEOUT_S = 120.0  # a plan not drawn by then is drawn in the grader's process instead
_WARM = {"warm": True}  # the worker's first line: warmed up, waiting for requests
_ACTIVE: "ReportWorker | None" = None  # this process's worker, for `figure_worker()`


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


def encode(value, arrays: dict) -> object:
    """`value` as JSON-able data, its numpy arrays and scalars moved into `arrays` (exact: no array goes through
    text; a Python float's JSON form reads back as the same float). TypeError for anything else."""
    import numpy as np

    if isinstance(value, (np.ndarray, np.generic)):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(value)
        return {"__array__": key, "scalar": isinstance(value, np.generic)}
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is list:
        return [encode(v, arrays) for v in value]
    if type(value) is tuple:
        return {"__tuple__": [encode(v, arrays) for v in value]}
    if type(value) is dict and all(type(k) is str for k in value):
        return {"__dict__": {k: encode(v, arrays) for k, v in value.items()}}
    raise TypeError(f"cannot send a {type(value).__name__} to the report worker")


def decode(value, arrays: dict):
    """The inverse of `encode`."""
    if type(value) is list:
        return [decode(v, arrays) for v in value]
    if type(value) is not dict:
        return value
    if "__array__" in value:
        a = arrays[value["__array__"]]
        return a[()] if value["scalar"] else a
    if "__tuple__" in value:
        return tuple(decode(v, arrays) for v in value["__tuple__"])
    return {k: decode(v, arrays) for k, v in value["__dict__"].items()}


def pack_plan(folder: Path, plan: list[dict]) -> bytes:
    """A `draw` request: one JSON line, the arrays inside as base64 .npz bytes (loaded without pickle)."""
    import numpy as np

    arrays: dict = {}
    spec = encode(plan, arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return json.dumps({"draw": {"folder": str(folder), "plan": spec,
                                "npz": base64.b64encode(buf.getvalue()).decode("ascii")}}).encode() + b"\n"


def unpack_plan(request: dict) -> tuple[Path, list[dict]]:
    import numpy as np

    with np.load(io.BytesIO(base64.b64decode(request["npz"])), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return Path(request["folder"]), decode(request["plan"], arrays)


def _draw(request: dict) -> dict:
    try:
        from grader import figures

        folder, plan = unpack_plan(request)
        return {"ok": True, "paths": [str(p) for p in figures.draw_plan(folder, plan)]}
    except Exception as e:  # the grader draws the plan itself, and meets the same error there
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def _warm_up_figures() -> None:
    """Import what `draw_plan` uses and draw a small figure (fonts, the Agg canvas): its first plan then costs
    what the grader's own process would pay."""
    try:
        import tempfile

        from grader import figures

        with tempfile.TemporaryDirectory(prefix="gradekit-warm-") as tmp:
            figures.loss_curves({"train_loss": [2.0, 1.0], "val_loss": [2.5, 1.5], "best_epoch": 2}, None,
                                Path(tmp) / "warm.png")
    except Exception:
        pass  # a plan that fails is drawn by the grader, which reports the problem


def _serve(conn_r: int, conn_w: int, answers_file: Path | None) -> None:
    _warm_up(answers_file)
    with os.fdopen(conn_r, "rb") as r, os.fdopen(conn_w, "wb") as w:
        _warm_up_figures()
        w.write(json.dumps(_WARM).encode() + b"\n")
        w.flush()
        while True:
            line = r.readline()
            if not line:
                return  # the grader exited without results (an error, Ctrl-C)
            request = json.loads(line)
            if "draw" not in request:
                break
            w.write(json.dumps(_draw(request["draw"])).encode() + b"\n")
            w.flush()
        folder = Path(request["folder"])
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
        self.warm = False  # the worker said it is warmed up and waiting
        self.drawing = False  # a `draw` request awaits its reply
        self._drawn: "list[Path] | None" = None  # the paths of the last `draw`, once its reply was read
        self.draw_error: str | None = None  # why the last `draw` came back undrawn
        self._buf = b""  # bytes read from the worker beyond the last full line

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
        global _ACTIVE
        _ACTIVE = cls(pid, a_w, b_r)
        return _ACTIVE

    def idle(self) -> bool:
        """Warmed up and waiting for a request (never blocks: a worker still warming up is not idle)."""
        if self.pid is None or self.submitted is not None or self.drawing:
            return False
        if not self.warm:
            try:
                self.warm = self._read_line(0.0) == _WARM
            except (OSError, EOFError, ValueError):
                self.close()
        return self.warm

    def draw(self, folder: Path, plan: list[dict]) -> bool:
        """Have the idle worker draw `plan` (`grader.figures.draw_plan`) into `folder`; `drawn` collects the
        paths. False when it was not sent (not idle, a value that cannot be sent, a dead worker)."""
        if not self.idle():
            return False
        try:
            request = pack_plan(Path(folder).resolve(), plan)
        except (TypeError, ValueError):
            return False
        try:
            view = memoryview(request)
            while view:
                view = view[os.write(self.to_worker, view):]
        except OSError:
            self.close()
            return False
        self.drawing, self._drawn = True, None
        return True

    def drawn(self, timeout: float = DRAW_TIMEOUT_S) -> list[Path] | None:
        """The paths the worker drew for the last `draw`; None when it did not (an error, a dead or hung worker,
        which is then stopped): the caller then draws the plan itself. The reply is read once and kept: `submit`
        may have collected it first, and the plan is then not drawn a second time."""
        if not self.drawing:
            return self._drawn
        self.drawing = False
        try:
            reply = self._read_line(timeout)
        except (OSError, EOFError, ValueError):
            reply = None
        if reply is None:
            self.draw_error = "no reply"
            self.close()  # hung or dead: the report is rendered in this process too
            return None
        self.draw_error = None if reply.get("ok") else str(reply.get("error"))
        self._drawn = [Path(p) for p in reply["paths"]] if reply.get("ok") else None
        return self._drawn

    def _read_line(self, timeout: float) -> dict | None:
        """The worker's next line as JSON; None if none came within `timeout` s. EOFError: the worker is gone."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            ready, _, _ = select.select([self.from_worker], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self.from_worker, 1 << 16)
            if not chunk:
                raise EOFError("the report worker exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def submit(self, folder: Path) -> None:
        """Have the worker start rendering folder/results.json now (`render` then waits for it), so
        that the caller's own work, e.g. printing the results, overlaps with the rendering."""
        folder = Path(folder).resolve()
        if self.pid is None or self.submitted is not None:
            return
        if self.drawing:
            self.drawn()  # a plan's reply not collected yet comes first: never read as the report's
            if self.pid is None:
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
            deadline = time.monotonic() + RENDER_TIMEOUT_S
            while True:
                reply = self._read_line(max(0.0, deadline - time.monotonic()))
                if reply != _WARM:
                    return reply  # None: the worker hangs; render here instead
        except (OSError, EOFError, ValueError):
            return None  # it died (EOFError) or said something unreadable
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
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None
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


def figure_worker() -> ReportWorker | None:
    """This process's report worker when it is idle (`grade run`, warmed up, nothing submitted yet), else None."""
    worker = _ACTIVE
    return worker if worker is not None and worker.idle() else None


figure_offload.register(figure_worker)
