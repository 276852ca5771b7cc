"""The grader's side of the sandbox: a warm zygote, and one `Sandbox` per submission.

    with Sandbox(submission_dir, SandboxConfig(...)) as sb:
        reply = sb.request({"op": "call", "target": "log_normal_diag", "args": [x, mu, lv]}, timeout=10)

`request` returns the child's reply (plain data) or raises `StudentCodeError` subclasses:
`StudentTimeout` (the child was killed), `StudentCrash` (the child died), `StudentException`
(the student's code raised; the child lives on). After a timeout or crash the next request
transparently starts a fresh child and re-imports the submission.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from grader import trace
from grader.sandbox import protocol, values
from grader.sandbox.errors import (  # noqa: F401  (re-exported: the engine and checks import them from here)
    MAX_COPY_ENTRIES, MAX_OUTPUT_BYTES, IsolationUnavailable, SandboxConfig, SandboxUnavailable, missing_protections, StudentCodeError, StudentCrash, StudentException,
    StudentTimeout,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_COPY_BYTES = 200 * 1024 * 1024  # a submission folder larger than this is not copied whole
# What one request may ask of the grader through upcalls (stand-ins, grader/checks/standins.py). A
# unit check's calls make a few dozen upcalls of a few KiB; beyond these the child is killed.
MAX_UPCALLS_PER_REQUEST = 5000
MAX_UPCALL_BYTES = 64 * 1024 * 1024  # one upcall message
MAX_UPCALL_TOTAL_BYTES = 512 * 1024 * 1024  # all the upcall messages of one request
# The largest message the grader reads for a request whose replies are small (a unit check's call on a few
# tensors, building an object): read whole before it is checked, a 500 MB reply (a zero-stride tensor
# expanded) cost the grader 2.4 GB and ~10 s per call. Trained weights and harness results may be larger
# (protocol.MAX_MESSAGE_BYTES).
SMALL_REPLY_OPS = {"call", "new", "assign", "layers", "load"}
MAX_SMALL_REPLY_BYTES = MAX_UPCALL_BYTES


class Zygote:
    """One warm template process per grader process, started lazily and restarted if it dies."""

    _lock = threading.Lock()
    _instance: "Zygote | None" = None

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.ctl: socket.socket | None = None
        self.ready = False
        self.workdir = tempfile.mkdtemp(prefix="gradekit-zygote-")
        # Stop it and remove its (empty) folder when the grader exits; they used to pile up in /tmp.
        atexit.register(self.close)

    @classmethod
    def shared(cls) -> "Zygote":
        with cls._lock:
            if cls._instance is None:
                cls._instance = Zygote()
            return cls._instance

    def launch(self, fork_here: bool = False) -> None:
        """Start the zygote without waiting for it (it imports torch while the caller does too).

        `fork_here=True` (the `grade` command's first step): import torch here and fork the zygote
        off this process, so torch is imported once, not twice side by side. Done only when this
        process holds nothing a child must not inherit (`_fork_here_is_safe`); otherwise, and for
        every restart, the zygote is a fresh `python -m grader.sandbox.zygote`."""
        if self.proc is not None and self.proc.poll() is None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if fork_here and _fork_here_is_safe():
            from grader.sandbox import zygote

            zygote.preload()
            trace.mark("torch imported")
            pid = os.fork()
            if pid == 0:  # the zygote: never returns into the caller's code
                try:
                    ours.close()
                    _detach_from_grader(theirs.fileno(), self.workdir)
                    zygote.serve(theirs)
                finally:
                    os._exit(0)
            theirs.close()
            self.proc, self.ctl, self.ready = _ForkedProcess(pid), ours, False
            trace.mark("zygote forked")
            return
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

    def prepare_training(self) -> None:
        """Ask the zygote to preload the training stack (torch._dynamo, which the first optimiser imports) before its next
        fork, so children that train do not each pay ~2.5 s. No reply, and no wait for the zygote's own start: the
        message waits in its socket, and the next `fork` waits for both (the grader goes on meanwhile)."""
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                self.stop()
                self.launch()
            try:
                self.ctl.send(json.dumps({"prepare": "training"}).encode())
            except OSError:
                self.stop()  # the next fork restarts it (and its children then import on their own)

    def fork(self, config: dict, extra_fds: tuple[int, ...] = ()) -> tuple[int, socket.socket]:
        """Fork a child; `extra_fds` (the output log, the status pipe) are handed to it as they are."""
        with self._lock:
            for attempt in (1, 2):
                self.start()
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    socket.send_fds(self.ctl, [json.dumps(config).encode()], [theirs.fileno(), *extra_fds])
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

    def close(self) -> None:
        """At exit: kill the zygote (not waiting for it: its memory is freed after this process is
        gone) and remove its working folder."""
        self.ready = False
        if self.proc is not None:
            self.proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stop(self) -> None:
        self.ready = False
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _fork_here_is_safe() -> bool:
    """True when a zygote forked off this process inherits nothing a student must not see or break.

    - no GRADEKIT_SECRET* variable and no `--seed` on the command line: a fork keeps the process's
      memory, where os.environ's strings, sys.argv (and the original environment and argument
      blocks) would stay readable; the spawned zygote gets an environment without them instead,
      and its own argv (grader/checks/inputs.py);
    - nothing of the grader's loaded yet (reference, rubric, checks, engine);
    - one Python thread (native BLAS pools, as in the spawned zygote, are fork-safe)."""
    if not hasattr(os, "fork") or sys.platform == "darwin":
        return False
    if any(k.startswith("GRADEKIT_SECRET") for k in os.environ):
        return False
    if any(a == "--seed" or a.startswith("--seed=") for a in sys.argv):
        return False
    loaded = ("reference", "rubrics", "grader.checks", "grader.engine", "grader.rubric")
    if any(m == p or m.startswith(p + ".") for m in sys.modules for p in loaded):
        return False
    return threading.active_count() == 1


def _detach_from_grader(ctl_fd: int, workdir: str) -> None:
    """In a freshly forked zygote: the state a spawned one starts with (fds, cwd, stdin, bytecode)."""
    import resource

    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    max_fd = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    max_fd = max_fd if 0 < max_fd < (1 << 20) else 1 << 16
    os.closerange(3, ctl_fd)  # e.g. the report worker's pipes, the caller's open files
    os.closerange(ctl_fd + 1, max_fd)
    os.chdir(workdir)
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.dont_write_bytecode = True


class _ForkedProcess:
    """The part of subprocess.Popen that Zygote uses, for a zygote forked off this process."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self) -> int:
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                self.returncode = -1
        return self.returncode


class Sandbox:
    """One submission's sandboxed child (restarted on demand after a timeout or crash)."""

    def __init__(self, submission_dir: Path, config: SandboxConfig, zygote: Zygote | None = None):
        self.submission_dir = Path(submission_dir).resolve()
        self.config = config
        self.zygote = zygote or Zygote.shared()
        self.tmp = Path(tempfile.mkdtemp(prefix="gradekit-run-"))
        self.scratch = self.tmp / "submission"
        if os.geteuid() == 0:  # the child runs as SANDBOX_ID: it must reach its copy (not list the folder)
            os.chmod(self.tmp, 0o711)
        # The grader's own files about this run: never visible to the child (a private tmpfs
        # covers the temp dir there), opened by fd, and read back without following links.
        self.log_dir = self.tmp / "log"
        self.log_dir.mkdir(mode=0o700)
        self.log_path = self.log_dir / "output.log"
        self.log_fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.status_r: int | None = None
        self.skipped = _copy_submission(self.submission_dir, self.scratch)
        trace.mark("submission copied")
        self.pids: list[int] = []
        self.stats = {"requests": 0, "request_s": 0.0, "upcalls": 0, "upcall_s": 0.0, "child_s": 0.0}
        self.sock: socket.socket | None = None
        self.protections: dict = {}
        self.load_error: StudentCodeError | None = None
        self.restarts = 0
        self.log_offset = 0
        self.output_from = 0  # `output()` shows the log from here on

    # ---- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _child_config(self) -> dict:
        return {
            "scratch": str(self.scratch), "module_file": self.config.module_file,
            "device": self.config.device, "memory_mb": self.config.memory_mb, "threads": self.config.threads,
            "namespaces": self.config.namespaces, "hide": self._hide_list(), "repo_root": str(REPO_ROOT),
            "tmp_root": tempfile.gettempdir(), "needed": _needed_paths(), "trace": trace.enabled(),
        }

    def _hide_list(self) -> list[str]:
        keep = [Path(sys.prefix).resolve(), self.tmp.resolve(), Path(tempfile.gettempdir()).resolve()]
        from grader import model_cache  # the reference's cached weights and their digests: never the child's

        out = []
        for p in [*self.config.hide, model_cache.cache_dir(), model_cache.index_dir()]:
            p = Path(p).resolve()
            # Never mask a folder the child needs (the venv, its scratch copy, the temp dir).
            if any(k == p or p in k.parents for k in keep):
                continue
            out.append(str(p))
        return out

    def write_module(self, source: str) -> None:
        """Write the module the child imports into the run's copy (a notebook's kept code, built by the grader)."""
        path = self.scratch / self.config.module_file
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)

    def start(self) -> None:
        """Fork a fresh child and import the submission (an import failure is kept in `load_error`)."""
        self.log_offset = os.fstat(self.log_fd).st_size
        self._close_status()
        self.status_r, status_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid, sock = self.zygote.fork(self._child_config(), (self.log_fd, status_w))
        finally:
            os.close(status_w)
        self.pids = [pid]
        self.sock = sock
        trace.mark("child forked by the zygote")
        deadline = time.monotonic() + self.config.load_timeout_s
        while True:
            msg, _ = self._recv(deadline, during="starting the sandbox")
            if "init_pid" in msg:
                self.pids.append(int(msg["init_pid"]))
            if "protections" in msg:
                self.protections = msg["protections"]
                if trace.enabled():  # the child's own marks (it cannot write the file), sent before any student code
                    for name, t in msg.get("trace") or []:
                        trace.mark("child: " + str(name), float(t))
            if msg.get("ready"):
                break
        missing = missing_protections(self.protections) if self.config.namespaces else []
        if missing and not self.config.allow_unsandboxed:
            self.kill()  # before the student's module is imported: nothing of theirs has run
            raise IsolationUnavailable(isolation_message(missing, self.protections))
        if missing:
            self.protections["unsandboxed"] = missing
        self.load_error = None
        trace.mark("child ready (isolated)")
        try:
            self.request({"op": "load"}, timeout=self.config.load_timeout_s, _starting=True)
        except StudentCodeError as e:
            self.load_error = e
        trace.mark("submission imported in the child")

    def prepare_training(self) -> None:
        """Call before `start` when this submission's checks will train a model (see Zygote.prepare_training)."""
        self.zygote.prepare_training()

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
        self._close_status()
        if self.log_fd is not None:
            os.close(self.log_fd)
            self.log_fd = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _close_status(self) -> None:
        if self.status_r is not None:
            os.close(self.status_r)
            self.status_r = None

    def _exit_status(self, wait_s: float = 0.5) -> int | None:
        """The dead child's wait status, as reported by its namespace's parent (None if none came)."""
        if self.status_r is None or len(self.pids) < 2:
            return None
        ready, _, _ = select.select([self.status_r], [], [], wait_s)
        if not ready:
            return None
        try:
            return int(os.read(self.status_r, 32))
        except (OSError, ValueError):
            return None

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
        t_request = time.perf_counter()
        self.stats["requests"] += 1
        # ONE deadline for the whole request: serving upcalls and slow or trickled messages count against it
        deadline = time.monotonic() + timeout
        during = f"{req.get('op')} {_label(req)}"
        try:
            protocol.send(self.sock, req, deadline=deadline)
        except TimeoutError:
            self.kill()
            raise StudentTimeout(f"did not finish within the time limit while {during}; the process was killed") from None
        except OSError:
            raise self._death("while receiving a request") from None
        upcalls, upcall_bytes = 0, 0
        limit = MAX_SMALL_REPLY_BYTES if req.get("op") in SMALL_REPLY_OPS else protocol.MAX_MESSAGE_BYTES
        while True:
            try:
                reply, size = self._recv(deadline, during=during, max_bytes=limit)
            finally:
                self.stats["request_s"] += time.perf_counter() - t_request
            if "upcall" not in reply and "upcall_backward" not in reply:
                break
            self._checked(values.upcall, reply, during)
            upcalls, upcall_bytes = upcalls + 1, upcall_bytes + size
            if upcalls > MAX_UPCALLS_PER_REQUEST or size > MAX_UPCALL_BYTES or upcall_bytes > MAX_UPCALL_TOTAL_BYTES:
                self.kill()
                raise StudentCrash(
                    f"your code asked the grader for stand-in values too often or with too much data while {during} "
                    f"(at most {MAX_UPCALLS_PER_REQUEST:,} calls, {MAX_UPCALL_BYTES >> 20} MiB each and "
                    f"{MAX_UPCALL_TOTAL_BYTES >> 20} MiB in all per call); the process was killed")
            t_upcall = time.perf_counter()
            answer = upcall(reply) if upcall is not None else {"ok": False, "error": "no stand-ins in this request"}
            self.stats["upcalls"] += 1
            self.stats["upcall_s"] += time.perf_counter() - t_upcall
            if time.monotonic() >= deadline:
                self.kill()
                raise StudentTimeout(f"did not finish within the time limit while {during}; the process was killed")
            t_request = time.perf_counter()
            try:
                protocol.send(self.sock, answer, deadline=deadline)  # a child that stops reading cannot block us
            except TimeoutError:
                self.kill()
                raise StudentTimeout(f"did not finish within the time limit while {during}; the process was killed") from None
            except OSError:
                raise self._death("while receiving a stand-in value") from None
        self._checked(lambda m: values.reply(req.get("op"), m), reply, during)
        seconds = reply.get("seconds")  # only for bench_startup's tables; the student's code may forge it
        if type(seconds) is float and 0.0 <= seconds < 1e6:
            self.stats["child_s"] += seconds
        if not reply.get("ok"):
            err = reply.get("error", {})
            raise StudentException(err.get("message", "unknown error"), err.get("where", ""), err.get("traceback", ""),
                                   str(err.get("constructor", "") or "")[:200])
        return reply

    def _checked(self, check, message: dict, during: str) -> None:
        """`check(message)` (grader/sandbox/values.py); a malformed message kills the child: the
        student's code tampered with it, and its check fails with what was wrong."""
        try:
            check(message)
        except values.Malformed as e:
            self.kill()
            raise StudentCrash(f"the process running your code sent a malformed message ({e}) while {during}; "
                               "it was killed") from None

    def _recv(self, deadline: float, during: str, max_bytes: int = protocol.MAX_MESSAGE_BYTES) -> tuple[dict, int]:
        """The child's next message and its size, by `deadline` (however it trickles in), else StudentTimeout;
        a message over `max_bytes` is refused before it is read (StudentCrash)."""
        limit = deadline - time.monotonic()
        ready, _, _ = select.select([self.sock], [], [], max(0.0, limit)) if limit > 0 else ([], [], [])
        if not ready:
            self.kill()
            raise StudentTimeout(f"did not finish within the time limit while {during}; the process was killed")
        try:
            message, size = protocol.recv_sized(self.sock, max_bytes, deadline=deadline)
        except protocol.TooLarge as e:
            self.kill()
            raise StudentCrash(f"your code's reply was too large while {during} ({e.size:,} bytes; at most "
                               f"{max_bytes >> 20} MiB here): a result far larger than the inputs asked for; "
                               "the process was killed") from None
        except TimeoutError:
            self.kill()
            raise StudentTimeout(f"did not finish within the time limit while {during} (its reply came too slowly); "
                                 "the process was killed") from None
        except (EOFError, OSError):
            raise self._death(f"while {during}") from None
        except protocol.ProtocolError as e:
            self.kill()
            raise StudentCrash(f"the process running your code sent garbage ({e}) while {during}") from None
        finally:
            if self.sock is not None:
                self.sock.settimeout(None)
        if not isinstance(message, dict):
            self.kill()
            raise StudentCrash(f"the process running your code sent garbage (not a message) while {during}")
        return message, size

    def _death(self, during: str) -> StudentCrash:
        status = self._exit_status()  # the namespace's parent writes it right after the death
        self.kill()
        why = _describe_status(status) or _fatal_from_log(self._read_log(self.log_offset, 8192, tail=True))
        return StudentCrash(f"the process running your code died {during}" + (f" ({why})" if why else ""))

    def _read_log(self, offset: int, limit: int, tail: bool = False) -> bytes:
        """At most `limit` bytes of the output log from `offset` (the last `limit` with `tail`),
        through the grader's own descriptor: the child cannot swap the file for a link or a FIFO."""
        if self.log_fd is None:
            return b""
        try:
            size = os.fstat(self.log_fd).st_size
            if tail:
                offset = max(offset, size - limit)
            return os.pread(self.log_fd, max(0, min(limit, size - offset)), offset)
        except OSError:
            return b""

    def output(self, limit: int = MAX_OUTPUT_BYTES) -> str:
        """The student's captured stdout/stderr: the first `limit` bytes, decoded leniently."""
        return joined_output([self], limit)

    def log_size(self) -> int:
        return os.fstat(self.log_fd).st_size if self.log_fd is not None else 0


def joined_output(sandboxes: list[Sandbox], limit: int = MAX_OUTPUT_BYTES) -> str:
    """The captured output of several sandboxes of one submission (the unit checks' child, then the one that
    trained ahead), as one child's log would hold it: the first `limit` bytes in all, decoded leniently."""
    head, size = b"", 0
    for sb in sandboxes:
        size += max(0, sb.log_size() - sb.output_from)
        if len(head) < limit:
            head += sb._read_log(sb.output_from, limit - len(head))
    text = head.decode("utf-8", errors="replace")
    if size > limit:
        text += f"\n[... output truncated: {size:,} bytes in all, first {limit:,} shown ...]"
    return text


def isolation_message(missing: list[str], protections: dict) -> str:
    """Why grading is refused, naming the cause: the namespaces themselves, or (when they worked)
    the mounts that could not be made read-only."""
    text = "this machine cannot isolate student code (missing: " + ", ".join(missing) + "). "
    if protections.get("pid_namespace") and protections.get("not_read_only"):
        return text + ("Namespaces work here, but these mounts could not be made read-only in the child's mount "
                       "namespace: " + ", ".join(protections["not_read_only"]) + ". Mount them read-only (or "
                       "remove them) on this worker, or pass --allow-unsandboxed to run it anyway, only for code "
                       "you trust.")
    return text + ("Grade on Linux with user namespaces enabled (sysctl kernel.unprivileged_userns_clone=1, or as "
                   "root), or pass --allow-unsandboxed to run it anyway, only for code you trust.")


def _needed_paths() -> list[str]:
    """Folders the child must see: the interpreter, its packages, the repo (harness code), wherever
    they are (a checkout in /tmp is bound back into the child's private /tmp). Other sys.path
    entries under the temp dir (a zygote's working folder) are not: /tmp is private there."""
    tmp = os.path.realpath(tempfile.gettempdir()) + os.sep
    others = [p for p in sys.path if p and os.path.isdir(p) and not os.path.realpath(p).startswith(tmp)]
    return sorted({sys.prefix, sys.base_prefix, str(REPO_ROOT), *others})


def _label(req: dict) -> str:
    t = req.get("target")
    if isinstance(t, dict):
        return t.get("label", t.get("method", ""))
    return t or ""


def _describe_status(st: int | None) -> str:
    if st is None:
        return ""
    if os.WIFSIGNALED(st):
        sig = os.WTERMSIG(st)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        extra = {"SIGSEGV": "segmentation fault", "SIGKILL": "killed, e.g. out of memory", "SIGXFSZ": "wrote a file over the size limit"}
        return f"signal {name}" + (f": {extra[name]}" if name in extra else "")
    if os.WIFEXITED(st):
        return f"it exited with status {os.WEXITSTATUS(st)} — code that calls sys.exit()/os._exit() ends the process"
    return ""


def _fatal_from_log(tail: bytes) -> str:
    for line in tail.decode("utf-8", errors="replace").splitlines():
        if line.startswith("Fatal Python error:"):
            return line.split(":", 1)[1].strip()
    return ""


def submission_files(src: Path):
    """The submission as the grader sees it: yields ("dir", rel, None), ("file", rel, open binary file)
    or ("left_out", rel, None), `rel` relative to `src`. Links, FIFOs, devices, hidden folders,
    __pycache__ and anything past MAX_COPY_BYTES or MAX_COPY_ENTRIES are left out. Each file is opened with O_NOFOLLOW and
    read from that descriptor (closed when the caller asks for the next item), so swapping a file for
    a link between the listing and the read changes nothing. The one place of these rules: the
    sandbox's copy and `grader.remote.pack_submission` both use it."""
    total = entries = 0
    for root, dirs, files in os.walk(src, followlinks=False):
        rel = Path(root).relative_to(src)
        entries += 1 + len(files)
        if entries > MAX_COPY_ENTRIES:  # the rest of the tree is not listed one by one either (names: unbounded)
            yield "left_out", rel / f"… (more than {MAX_COPY_ENTRIES} files and folders: this folder and the rest)", None
            return
        for d in list(dirs):
            if (Path(root) / d).is_symlink():
                yield "left_out", rel / d, None
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__" and not (Path(root) / d).is_symlink()]
        yield "dir", rel, None
        for name in files:
            try:
                fd = os.open(Path(root) / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                yield "left_out", rel / name, None
                continue
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or total + st.st_size > MAX_COPY_BYTES:
                    yield "left_out", rel / name, None
                    continue
                total += st.st_size
                yield "file", rel / name, f


def _copy_submission(src: Path, dst: Path) -> list[str]:
    """Copy the submission's files (`submission_files`) into the scratch folder, once; return what was
    left out, relative to `src`, so the report can say so. Everything the grader reads about the
    submission afterwards (answers, checkpoints, hash) reads this copy, readable by the sandbox's id."""
    skipped: list[str] = []
    dst.mkdir(parents=True, mode=0o755)
    os.chmod(dst, 0o755)
    for kind, rel, f in submission_files(src):
        if kind == "left_out":
            skipped.append(str(rel))
        elif kind == "dir":
            (dst / rel).mkdir(parents=True, exist_ok=True, mode=0o755)
        else:
            with open(dst / rel, "wb") as out:
                shutil.copyfileobj(f, out)
                os.fchmod(out.fileno(), 0o644)
    return skipped
