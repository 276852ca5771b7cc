"""A Gradescope autograder zip for one assignment: `grade gradescope build --assignment vae`.

The zip holds, at its root (Gradescope unpacks it into /autograder/source):

- `setup.sh`: installs Python, a CPU build of torch and gradekit (editable, from `gradekit/`, so the
  rubrics and reference implementations next to the code are found);
- `run_autograder`: `exec python3 -m grader.gradescope ASSIGNMENT` (`run_autograder` below): grades
  /autograder/submission with `grade run` in a child process, the student's code running as a
  fresh id of its own; once every process of that id is killed, writes
  /autograder/results/results.json itself (checked, clamped); if grading could not run at all, a
  zero-score results.json whose output says why;
- `gradekit/`: the grader's source, reference implementations, rubrics, templates, pyproject.toml.
"""

from __future__ import annotations

import os
import shlex
import stat
import tempfile
import time
import zipfile
from pathlib import Path

from grader.fileio import write_atomic

REPO = Path(__file__).resolve().parents[1]
INCLUDE = ["pyproject.toml", "README.md", "grader", "reference", "rubrics", "templates", "docs"]
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".git", ".venv"}


class GradescopeError(ValueError):
    """The autograder cannot be built (the message says what to do)."""


SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder image.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update && apt-get install -y python3 python3-pip python3-venv
fi
python3 -m pip install --upgrade pip
# CPU-only torch keeps the image small; gradekit accepts any torch>=2.2,<3.
python3 -m pip install "torch>=2.2,<3" torchvision --index-url https://download.pytorch.org/whl/cpu \\
    || python3 -m pip install "torch>=2.2,<3" torchvision
python3 -m pip install -e /autograder/source/gradekit
grade list
"""

# `exec` at once: bash reads a script as it runs, so a line appended to this file by anything that
# runs later would be executed; after `exec` nothing more is read from it.
RUN_AUTOGRADER = """#!/usr/bin/env bash
cd /autograder/source/gradekit && exec python3 -m grader.gradescope {assignment}
"""

SANDBOX_NOTE = ("Each Gradescope submission runs in its own throwaway container, where user namespaces are "
                "usually unavailable: the student's code then runs unisolated (the report says so), as an id of "
                "its own that cannot reach the grader or its results; the score is written by this runner after "
                "every process of that id is gone.")
UID_RANGE = range(61184, 65519)  # searched for an id no account and no process uses (systemd's dynamic range)


def run_autograder(assignment: str, submission: Path = Path("/autograder/submission"),
                   results_dir: Path = Path("/autograder/results"), allow_unsandboxed: bool = True,
                   kill_leftovers: bool = True) -> dict:
    """Grade `submission` with `grade run` in a child process and write Gradescope's results.json
    from this process only, after the student's code is gone: parsed, checked, clamped, atomic.

    As root (Gradescope's runner) the student's code runs as a fresh id that no account or process
    uses (GRADEKIT_SANDBOX_UID): it cannot signal, trace or write to this runner, `grade run` or
    their work folder (0700, root's), and once grading ends every process of that id is killed
    (`kill_leftovers`), which reaches exactly what the student started, however it detached, and
    nothing else on the machine. Not root, the child keeps this user's id and the note in the
    output says the result is not protected. Returns what was written."""
    import json
    import shutil
    import subprocess
    import sys

    work = Path(tempfile.mkdtemp(prefix="gradekit-gs-"))  # 0700: only this runner's id enters it
    cmd = [sys.executable, "-m", "grader.cli", "run", str(submission), "--assignment", assignment, "--out", str(work)]
    if allow_unsandboxed:
        cmd.append("--allow-unsandboxed")
    env = dict(os.environ)
    uid = _unused_uid() if os.geteuid() == 0 else None
    if uid is not None:
        env["GRADEKIT_SANDBOX_UID"] = str(uid)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        out, _ = proc.communicate()
        status, log = proc.returncode, out.decode("utf-8", "replace")[-8000:]
        if kill_leftovers:
            _kill_group(proc.pid)  # grade run's own session (its zygote, if it outlived it)
    except OSError as e:
        status, log = -1, str(e)
    if kill_leftovers and uid is not None:
        _kill_uid(uid)  # everything the student's code started, before its results are read
    result = None
    path = work / submission.name / "results.json"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as f:
            if stat.S_ISREG(os.fstat(fd).st_mode) and os.fstat(fd).st_size < 16 << 20:
                result = json.load(f)
    except (OSError, ValueError):
        result = None
    if not isinstance(result, dict) or not isinstance(result.get("tests"), list):
        result = {"score": 0, "output": f"The autograder could not grade this submission (exit status {status}). "
                                        "Check that you uploaded the assignment's module (or a Jupyter notebook with "
                                        "its code).\n\n"
                                        + log[-4000:], "visibility": "visible", "tests": []}
    else:
        total = 0.0
        for t in result["tests"]:  # the score is the sum of the tests, each within its maximum
            t["score"] = min(max(float(t.get("score", 0) or 0), 0.0), float(t.get("max_score", 0) or 0))
            total += t["score"]
        result["score"] = round(total, 4)
    if uid is None:
        result["output"] = (result.get("output") or "") + (
            "\n\nNote: this runner is not root, so the student's code ran as its own user: the result is not "
            "protected from it.")
    write_atomic(results_dir / "results.json", json.dumps(result))
    shutil.rmtree(work, ignore_errors=True)
    print(log)
    return result


def _uids_in_use() -> set[int]:
    used = set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                            break  # dead, waiting to be reaped: holds nothing
                        if line.startswith("Uid:"):
                            used.update(int(u) for u in line.split()[1:])
                            break
            except (OSError, ValueError):
                pass
    return used


def _unused_uid() -> int | None:
    """An id with no account and no process: only the student's code will ever run as it."""
    import pwd

    used = _uids_in_use()
    for uid in UID_RANGE:
        if uid in used:
            continue
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    return None


def _kill_group(pgid: int) -> None:
    import signal

    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _kill_uid(uid: int, rounds: int = 50) -> bool:
    """SIGKILL every process running as `uid`: a helper takes that id and calls kill(-1), which
    reaches exactly the processes of its own id (and no other); repeated until none is left (a
    process forking while the signal goes round). True when none is left."""
    import signal

    for _ in range(rounds):
        if uid not in _uids_in_use():
            return True
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.02)
    return uid not in _uids_in_use()


def _add(zf: zipfile.ZipFile, arcname: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(arcname, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
    zf.writestr(info, data)


def build_autograder(assignment_id: str, out_zip: Path) -> Path:
    """Write the autograder zip for `assignment_id` to `out_zip` (atomically); return its path."""
    from grader.rubric import RubricError, available_rubrics

    try:
        rubrics = available_rubrics()
    except RubricError as e:
        raise GradescopeError(str(e)) from None
    if assignment_id not in rubrics:
        raise GradescopeError(f"unknown assignment {assignment_id!r}; known: {', '.join(sorted(rubrics)) or 'none'} (see `grade list`)")
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_zip.parent, prefix=f".{out_zip.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            _add(zf, "setup.sh", SETUP_SH.encode(), executable=True)
            _add(zf, "run_autograder", RUN_AUTOGRADER.format(assignment=shlex.quote(assignment_id)).encode(),
                 executable=True)
            for item in INCLUDE:
                src = REPO / item
                if not src.exists():
                    continue
                files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
                for p in files:
                    rel = p.relative_to(REPO)
                    if SKIP_PARTS & set(rel.parts) or p.is_symlink() or p.suffix in (".pyc", ".tmp"):
                        continue
                    _add(zf, f"gradekit/{rel.as_posix()}", p.read_bytes())
        os.replace(tmp, out_zip)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_zip


if __name__ == "__main__":  # run_autograder's entry point on Gradescope
    import sys

    run_autograder(sys.argv[1])
