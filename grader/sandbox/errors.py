"""What the sandbox's clients share: how a submission's run is configured and how student code fails.

Both the grader's sandbox (`grader.sandbox.client`) and the in-process stand-in shipped in a
student's self-check bundle (`grader/authoring/bundle_client.py`) raise these, so checks and the
engine handle failures the same way in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_OUTPUT_BYTES = 64 * 1024  # student stdout/stderr kept per submission


class StudentCodeError(Exception):
    kind = "error"

    def __init__(self, message: str, where: str = "", traceback: str = ""):
        super().__init__(message)
        self.message, self.where, self.traceback = message, where, traceback


class StudentException(StudentCodeError):
    """The student's code raised; the child lives on."""
    kind = "exception"


class StudentTimeout(StudentCodeError):
    """A call ran over its limit: the child's process group was killed."""
    kind = "timeout"


class StudentCrash(StudentCodeError):
    """The child died (exit, segfault, memory limit)."""
    kind = "crash"


class SandboxUnavailable(RuntimeError):
    """The grader could not start the sandbox at all (an environment problem, not the student's)."""


@dataclass
class SandboxConfig:
    module_file: str = "vae.py"
    device: str = "cpu"
    memory_mb: int = 4096
    threads: int = 1
    load_timeout_s: float = 30.0
    namespaces: bool = True
    hide: list[str] = field(default_factory=list)  # paths the child must not see
    module_source: str | None = None  # written as module_file into the run's copy (a notebook's kept code)
