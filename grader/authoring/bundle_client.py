"""`grader.sandbox.client` as shipped in a student's self-check bundle: the student's code runs in
this process (it is their own machine), through the same request handler as the grader's sandboxed
child (`grader.sandbox.child.Child`) and the same wire encoding, so the public checks see exactly
the plain data they see when grading. A call that runs over its time limit is interrupted with
SIGALRM where the platform has it. Nothing here isolates anything: the course's grader does that.
"""

from __future__ import annotations

import contextlib
import io
import signal
import sys
import threading
from pathlib import Path

from grader.sandbox import protocol
from grader.sandbox.errors import (  # noqa: F401  (re-exported: the engine and checks import them from here)
    MAX_COPY_ENTRIES, MAX_OUTPUT_BYTES, IsolationUnavailable, SandboxConfig, SandboxUnavailable, StudentCodeError, StudentCrash,
    StudentException, StudentTimeout,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


class _Timeout(BaseException):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable or seconds is None or seconds <= 0 or seconds == float("inf"):
        yield
        return

    def alarm(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Sandbox:
    """Runs the submission in-process (no isolation: for a student's own self-check only)."""

    def __init__(self, submission_dir: Path, config: SandboxConfig, zygote=None):
        self.submission_dir = Path(submission_dir).resolve()
        self.scratch = self.submission_dir  # the engine reads answers and hashes from here (the student's own folder)
        self.skipped: list[str] = []
        self.config = config
        self.protections = {"in_process": True}
        self.load_error: StudentCodeError | None = None
        self._out = io.StringIO()
        self.child = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if str(self.submission_dir) in sys.path:
            sys.path.remove(str(self.submission_dir))

    def prepare_training(self) -> None:
        """Nothing to preload in-process (the real sandbox's zygote preloads the training stack)."""

    def write_module(self, source: str) -> None:
        """A notebook's kept code: imported from a folder of its own (the student's folder is left as it is)."""
        import tempfile

        self.submission_dir = Path(tempfile.mkdtemp(prefix="selfcheck-notebook-"))
        (self.submission_dir / self.config.module_file).write_text(source, encoding="utf-8")

    def start(self) -> None:
        from grader.sandbox.child import Child

        self.child = Child({"scratch": str(self.submission_dir), "module_file": self.config.module_file,
                            "device": self.config.device})
        sys.path.insert(0, str(self.submission_dir))
        name = Path(self.config.module_file).stem
        sys.modules.pop(name, None)
        self.load_error = None
        try:
            self.request({"op": "load"}, timeout=self.config.load_timeout_s)
        except StudentCodeError as e:
            self.load_error = e

    def request(self, req: dict, timeout: float, upcall=None) -> dict:
        from grader.sandbox.child import RequestError, describe_exception

        if self.child is None:
            self.start()
        req = protocol.decode(protocol.encode(req))
        # stand-in values (grader/sandbox/standins.py) cross as plain data here too
        self.child.ask = None if upcall is None else (
            lambda msg: protocol.decode(protocol.encode(upcall(protocol.decode(protocol.encode(msg))))))
        try:
            with contextlib.redirect_stdout(self._out), contextlib.redirect_stderr(self._out), _time_limit(timeout):
                reply = {"ok": True, **self.child.handle(req)}
        except _Timeout:
            raise StudentTimeout(f"did not finish within the time limit of {timeout:g} s") from None
        except RequestError as e:
            raise StudentException(str(e)) from None
        except (KeyboardInterrupt, SystemExit) as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            raise StudentCrash("your code called sys.exit() (it ends the process when grading)") from None
        except Exception as e:
            info = describe_exception(e, str(self.submission_dir))
            raise StudentException(info["message"], info["where"], info["traceback"], info["constructor"]) from None
        return protocol.decode(protocol.encode(reply))

    def output(self, limit: int = MAX_OUTPUT_BYTES) -> str:
        text = self._out.getvalue()
        return text if len(text) <= limit else text[:limit] + "\n[... output truncated ...]"


def joined_output(sandboxes: list[Sandbox], limit: int = MAX_OUTPUT_BYTES) -> str:
    """The output of several sandboxes of one submission, in order, as one (`grader.sandbox.client.joined_output`)."""
    text = "".join(sb._out.getvalue() for sb in sandboxes)
    return text if len(text) <= limit else text[:limit] + "\n[... output truncated ...]"
