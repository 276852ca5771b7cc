"""What the sandbox's clients share: how a submission's run is configured and how student code fails.

Both the grader's sandbox (`grader.sandbox.client`) and the in-process stand-in shipped in a
student's self-check bundle (`grader/authoring/bundle_client.py`) raise these, so checks and the
engine handle failures the same way in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_OUTPUT_BYTES = 64 * 1024  # student stdout/stderr kept per submission
# A submission of more files and folders than this is not copied whole (grader.sandbox.client) nor hashed past it
# (grader.engine): 100 000 empty files (a 10 MB zip) took 24 s to copy to the scratch folder, 12 s to pack and 22 s
# to unpack on a Dask worker, once per grading, and their inodes
MAX_COPY_ENTRIES = 20_000


class StudentCodeError(Exception):
    kind = "error"

    def __init__(self, message: str, where: str = "", traceback: str = "", constructor: str = ""):
        super().__init__(message)
        self.message, self.where, self.traceback = message, where, traceback
        self.constructor = constructor  # "Class.__init__" the error passed through, "" if none (as the child says)


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


class IsolationUnavailable(SandboxUnavailable):
    """This machine cannot isolate student code and the user did not opt in to run it anyway."""


# What a child must have before untrusted code runs in it (see docs/sandbox.md).
REQUIRED_PROTECTIONS = {
    "network_isolated": "no network", "pid_namespace": "own PID namespace", "fresh_proc": "own /proc",
    "read_only_filesystem": "read-only file system", "private_tmp": "private size-bounded /tmp",
    "unprivileged_id": "unprivileged id", "capabilities_dropped": "no capabilities",
}
# The user-facing spelling of `--allow-unsandboxed` in the environment. Read only at the edges: by the CLI
# (click `envvar` of `grade run` / `grade batch`) and by a Dask worker for its own opt-in (grader.remote).
# The choice then travels as a value (GradeOptions, SandboxConfig), never through os.environ.
ALLOW_UNSANDBOXED_ENV = "GRADEKIT_ALLOW_UNSANDBOXED"


def missing_protections(protections: dict) -> list[str]:
    """The required protections a child reported as not active, in words."""
    return [words for key, words in REQUIRED_PROTECTIONS.items() if not protections.get(key)]


@dataclass
class SandboxConfig:
    module_file: str = "vae.py"
    device: str = "cpu"
    memory_mb: int = 4096
    threads: int = 1
    load_timeout_s: float = 30.0
    namespaces: bool = True  # False: no isolation wanted (a student's self-check of their own code)
    # Run untrusted code even where it cannot be isolated (not Linux, no user namespaces): an explicit
    # opt-in; results and reports then carry a warning.
    allow_unsandboxed: bool = False
    hide: list[str] = field(default_factory=list)  # paths the child must not see
