"""The grader's side of the sandbox: a warm zygote, and one `Sandbox` per submission.

    with Sandbox(submission_dir, SandboxConfig(...)) as sb:
        reply = sb.request({"op": "call", "target": "log_normal_diag", "args": [x, mu, lv]}, timeout=10)

`request` returns the child's reply (plain data) or raises `StudentCodeError` subclasses:
`StudentTimeout` (the child was killed), `StudentCrash` (the child died), `StudentException`
(the student's code raised; the child lives on). After a timeout or crash the next request
transparently starts a fresh child and re-imports the submission.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from grader.sandbox import protocol
from grader.sandbox.errors import (  # noqa: F401  (re-exported: the engine and checks import them from here)
    MAX_OUTPUT_BYTES, SandboxConfig, SandboxUnavailable, StudentCodeError, StudentCrash, StudentException,
    StudentTimeout,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_COPY_BYTES = 200 * 1024 * 1024  # a submission folder larger than this is not copied whole


class Zygote:
    """One warm template process per grader process, started lazily and restarted if it dies."""

    _lock = threading.Lock()
    _instance: "Zygote | None" = None

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.ctl: socket.socket | None = None
        self.ready = False
        self.workdir = tempfile.mkdtemp(prefix="gradekit-zygote-")

    @classmethod
    def shared(cls) -> "Zygote":
        with cls._lock:
            if cls._instance is None:
                cls._instance = Zygote()
            return cls._instance

    def launch(self) -> None:
        """Start the zygote without waiting for it (it imports torch while the caller does too)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADEKIT_SECRET")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "grader.sandbox.zygote", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, cwd=self.workdir, env=env,
        )
        theirs.close()
        self.ctl = ours
        self.ready = False

    def start(self, timeout: float = 120.0) -> None:
        """Make sure the zygote runs and has finished its imports."""
        if self.proc is None or self.proc.poll() is not None:
            self.stop()
            self.launch()
        if self.ready:
            return
        ready, _, _ = select.select([self.ctl], [], [], timeout)
        msg = self.ctl.recv(1 << 16) if ready else b""
        if not msg:
            self.stop()
            raise SandboxUnavailable("the sandbox's template process did not start (is torch importable?)")
        self.ready = True

    def fork(self, config: dict) -> tuple[int, socket.socket]:
        with self._lock:
            for attempt in (1, 2):
                self.start()
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    socket.send_fds(self.ctl, [json.dumps(config).encode()], [theirs.fileno()])
                    reply = self.ctl.recv(1 << 16)
                    if not reply:
                        raise OSError("zygote closed")
                    return json.loads(reply)["pid"], ours
                except OSError:
                    ours.close()
                    self.stop()
                    if attempt == 2:
                        raise SandboxUnavailable("the sandbox's template process died twice in a row")
                finally:
                    theirs.close()
        raise AssertionError("unreachable")

    def stop(self) -> None:
        self.ready = False
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Sandbox:
    """One submission's sandboxed child (restarted on demand after a timeout or crash)."""

    def __init__(self, submission_dir: Path, config: SandboxConfig, zygote: Zygote | None = None):
        self.submission_dir = Path(submission_dir).resolve()
        self.config = config
        self.zygote = zygote or Zygote.shared()
        self.tmp = Path(tempfile.mkdtemp(prefix="gradekit-run-"))
        self.scratch = self.tmp / "submission"
        self.log_dir = self.tmp / "log"
        self.log_dir.mkdir()
        _copy_submission(self.submission_dir, self.scratch)
        self.pids: list[int] = []
        self.sock: socket.socket | None = None
        self.protections: dict = {}
        self.load_error: StudentCodeError | None = None
        self.restarts = 0
        self.log_offset = 0

    # ---- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _child_config(self) -> dict:
        return {
            "scratch": str(self.scratch), "log_dir": str(self.log_dir), "module_file": self.config.module_file,
            "device": self.config.device, "memory_mb": self.config.memory_mb, "threads": self.config.threads,
            "namespaces": self.config.namespaces, "hide": self._hide_list(), "repo_root": str(REPO_ROOT),
            "run_dir": str(self.tmp), "tmp_root": tempfile.gettempdir(), "needed": [sys.prefix, sys.base_prefix, str(REPO_ROOT)],
        }

    def _hide_list(self) -> list[str]:
        keep = [Path(sys.prefix).resolve(), self.tmp.resolve(), Path(tempfile.gettempdir()).resolve()]
        out = []
        for p in self.config.hide:
            p = Path(p).resolve()
            # Never mask a folder the child needs (the venv, its scratch copy, the temp dir).
            if any(k == p or p in k.parents for k in keep):
                continue
            out.append(str(p))
        return out

    def start(self) -> None:
        """Fork a fresh child and import the submission (an import failure is kept in `load_error`)."""
        (self.log_dir / "exit_status").unlink(missing_ok=True)
        log = self.log_dir / "output.log"
        self.log_offset = log.stat().st_size if log.exists() else 0
        pid, sock = self.zygote.fork(self._child_config())
        self.pids = [pid]
        self.sock = sock
        deadline = time.monotonic() + self.config.load_timeout_s
        while True:
            msg = self._recv(deadline, during="starting the sandbox")
            if "init_pid" in msg:
                self.pids.append(int(msg["init_pid"]))
            if "protections" in msg:
                self.protections = msg["protections"]
            if msg.get("ready"):
                break
        self.load_error = None
        try:
            self.request({"op": "load"}, timeout=self.config.load_timeout_s, _starting=True)
        except StudentCodeError as e:
            self.load_error = e

    @property
    def alive(self) -> bool:
        return self.sock is not None

    def kill(self) -> None:
        """Kill the child's whole process group (and with it its PID namespace)."""
        for pid in reversed(self.pids):
            for fn in (os.killpg, os.kill):
                try:
                    fn(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- requests -------------------------------------------------------------------------
    def request(self, req: dict, timeout: float, _starting: bool = False, upcall=None) -> dict:
        """Send `req` and return the child's reply. While the child works on it, it may ask for
        stand-in values ("upcall" messages, grader/sandbox/standins.py): `upcall(message)` answers
        them with plain data (no upcall handler: every upcall is answered with an error)."""
        if not self.alive and not _starting:
            self.restarts += 1
            self.start()
            if self.load_error is not None:
                raise self.load_error
        try:
            protocol.send(self.sock, req)
        except OSError:
            raise self._death("while receiving a request") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline, during=f"{req.get('op')} {_label(req)}")
            if "upcall" not in reply and "upcall_backward" not in reply:
                break
            answer = upcall(reply) if upcall is not None else {"ok": False, "error": "no stand-ins in this request"}
            try:
                protocol.send(self.sock, answer)
            except OSError:
                raise self._death("while receiving a stand-in value") from None
        if not reply.get("ok"):
            err = reply.get("error", {})
            raise StudentException(err.get("message", "unknown error"), err.get("where", ""), err.get("traceback", ""))
        return reply

    def _recv(self, deadline: float, during: str) -> dict:
        limit = deadline - time.monotonic()
        ready, _, _ = select.select([self.sock], [], [], max(0.0, limit))
        if not ready:
            self.kill()
            raise StudentTimeout(f"did not finish within the time limit while {during}; the process was killed")
        try:
            self.sock.settimeout(max(1.0, deadline - time.monotonic()))
            return protocol.recv(self.sock)
        except (EOFError, OSError, socket.timeout):
            raise self._death(f"while {during}") from None
        except protocol.ProtocolError as e:
            self.kill()
            raise StudentCrash(f"the process running your code sent garbage ({e}) while {during}") from None
        finally:
            if self.sock is not None:
                self.sock.settimeout(None)

    def _death(self, during: str) -> StudentCrash:
        status = self.log_dir / "exit_status"
        for _ in range(50):  # the namespace's parent writes the wait status right after the death
            if status.exists() or len(self.pids) < 2:
                break
            time.sleep(0.01)
        self.kill()
        why = _describe_status(status) or _fatal_from_log(self.log_dir / "output.log", self.log_offset)
        return StudentCrash(f"the process running your code died {during}" + (f" ({why})" if why else ""))

    def output(self, limit: int = MAX_OUTPUT_BYTES) -> str:
        """The student's captured stdout/stderr: the first `limit` bytes, decoded leniently."""
        path = self.log_dir / "output.log"
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                data = f.read(limit)
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace")
        if size > limit:
            text += f"\n[... output truncated: {size:,} bytes in all, first {limit:,} shown ...]"
        return text


def _label(req: dict) -> str:
    t = req.get("target")
    if isinstance(t, dict):
        return t.get("label", t.get("method", ""))
    return t or ""


def _describe_status(path: Path) -> str:
    try:
        st = int(path.read_text())
    except (OSError, ValueError):
        return ""
    if os.WIFSIGNALED(st):
        sig = os.WTERMSIG(st)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        extra = {"SIGSEGV": "segmentation fault", "SIGKILL": "killed, e.g. out of memory", "SIGXFSZ": "wrote a file over the size limit"}
        return f"signal {name}" + (f": {extra[name]}" if name in extra else "")
    if os.WIFEXITED(st):
        return f"it exited with status {os.WEXITSTATUS(st)} — code that calls sys.exit()/os._exit() ends the process"
    return ""


def _fatal_from_log(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(offset, path.stat().st_size - 8192))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    for line in tail.splitlines():
        if line.startswith("Fatal Python error:"):
            return line.split(":", 1)[1].strip()
    return ""


def _copy_submission(src: Path, dst: Path) -> None:
    """Copy the submission's regular files (no symlinks, nothing huge) into the scratch folder."""
    total = 0
    dst.mkdir(parents=True)
    for root, dirs, files in os.walk(src, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            p = Path(root) / name
            if p.is_symlink() or not p.is_file():
                continue
            total += p.stat().st_size
            if total > MAX_COPY_BYTES:
                return
            shutil.copyfile(p, dst / rel / name)
