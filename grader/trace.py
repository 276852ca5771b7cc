"""Phase timestamps of one `grade` command, for `bench/bench_startup.py` (off unless asked for).

With `GRADEKIT_TRACE=FILE` in the environment, `mark(name)` appends one JSON line
`{"t": wall-clock seconds, "pid": ..., "name": ...}` to FILE. Wall-clock (not monotonic) time, so
that the bench, the grader, the zygote and the sandboxed child (whose marks travel back over the
sandbox's socket, since it can neither see FILE nor keep the variable: `child.run`) share one axis.
Without the variable `mark` costs one dictionary lookup: no file is opened, nothing is imported.
"""

from __future__ import annotations

import os
import time

# A diagnostic switch, not a grading option: nothing graded depends on it, so it may reach every process
# of one command (workers, zygote) through the environment they inherit.
ENV = "GRADEKIT_TRACE"


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def mark(name: str, t: float | None = None, total_s: float | None = None, count: int | None = None) -> None:
    """Record that phase `name` ended now (or at wall-clock time `t`); `total_s`/`count`: time spent
    in (and number of) scattered events of one kind, e.g. the upcalls of all checks."""
    path = os.environ.get(ENV)
    if not path:
        return
    extra = "" if total_s is None else ', "total_s": %.6f, "count": %d' % (total_s, count or 0)
    line = '{"t": %.6f, "pid": %d, "name": "%s"%s}\n' % (time.time() if t is None else t, os.getpid(),
                                                         name.replace("\\", "/").replace('"', "'"), extra)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
