"""The Gradescope runner publishes a score the student's code cannot touch (issue 19).

Simulated container: a PID namespace of its own (`unshare --pid --fork --mount-proc`), the grader
run as root under a seccomp filter that denies namespaces (as Gradescope's Docker containers do,
so grading runs with --allow-unsandboxed), and a process of the container that grading did not
start. The attack: a vae.py that leaves a detached process at import (double fork + setsid) which
keeps rewriting every results.json it can reach as 33/33, then raises ImportError.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from grader import gradescope
from tests.conftest import REPO

root_linux = pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0
                                or not shutil.which("unshare") or not shutil.which("setpriv"),
                                reason="needs root, Linux, unshare(1) and setpriv(1) to simulate the container")

FORGER = textwrap.dedent('''
    import glob, json, os, time
    _forged = {"score": 33, "output": "", "tests": [{"name": "all", "score": 33, "max_score": 33}]}
    if os.fork() == 0:
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            with open("MARKS/forger.pid", "w") as f:
                f.write(str(os.getpid()))
            for _ in range(1200):  # a minute of rewriting every results.json in reach
                for p in set(glob.glob("/tmp/**/results.json", recursive=True)) | {"RESULTS/results.json"}:
                    try:
                        with open(p, "w") as f:
                            json.dump(_forged, f)
                    except OSError:
                        pass
                time.sleep(0.05)
        finally:
            os._exit(0)
    time.sleep(1)
    raise ImportError("this submission imports nothing useful")
''')

CONTAINER = textwrap.dedent('''
    set -u
    sleep 313 &                                   # the container's own process: grading did not start it
    BYSTANDER=$!
    "$PY" -c "$WRAPPER" "$PY" -c "$RUN" "$SUB" "$RESULTS" > "$LOG" 2>&1
    echo "runner exit $?"
    kill -0 $BYSTANDER 2>/dev/null && echo "bystander alive"
    FORGER=$(cat "$MARKS/forger.pid" 2>/dev/null || echo none)
    echo "forger pid $FORGER"
    [ "$FORGER" != none ] && [ -d /proc/$FORGER ] && echo "forger alive"
    kill $BYSTANDER
''')

NO_NAMESPACES = ("import os, sys\nfrom grader.sandbox import isolation\n"
                 "assert isolation._lib().prctl(isolation.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0\n"
                 "assert isolation.install_seccomp()\nos.execvp(sys.argv[1], sys.argv[1:])\n")
RUN = ("import sys\nfrom pathlib import Path\nfrom grader.gradescope import run_autograder\n"
       "run_autograder('vae', submission=Path(sys.argv[1]), results_dir=Path(sys.argv[2]))\n")


@pytest.mark.slow
@root_linux
def test_a_detached_process_cannot_change_the_published_score(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    os.chmod(results, 0o777)  # even where the student's id could write there, the runner writes last
    sub = tmp_path / "submission"
    sub.mkdir()
    marks = Path(tempfile.mkdtemp(prefix="gradekit-gs-marks-"))  # where any id may leave its pid
    os.chmod(marks, 0o777)
    (sub / "vae.py").write_text(FORGER.replace("RESULTS", str(results)).replace("MARKS", str(marks)))
    os.chmod(tmp_path, 0o755)
    log = tmp_path / "runner.log"
    env = {**os.environ, "PY": sys.executable, "WRAPPER": NO_NAMESPACES, "RUN": RUN, "SUB": str(sub),
           "RESULTS": str(results), "LOG": str(log), "MARKS": str(marks), "PYTHONPATH": str(REPO), "GRADEKIT_CACHE": str(tmp_path / "c")}
    try:
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "-m", "bash", "-c", CONTAINER],
                           capture_output=True, text=True, timeout=400, env=env)
    finally:
        shutil.rmtree(marks, ignore_errors=True)
    runner_log = log.read_text() if log.exists() else ""
    assert "runner exit 0" in r.stdout, r.stdout + r.stderr + runner_log
    published = json.loads((results / "results.json").read_text())
    assert published["score"] == 0, (published, runner_log)
    assert "forger pid none" not in r.stdout, runner_log  # the attack did run, and left its process
    assert "forger alive" not in r.stdout, r.stdout
    assert "bystander alive" in r.stdout, r.stdout  # the sweep kills what grading started, nothing else
    assert "WITHOUT isolation" in json.dumps(published) or "without isolation" in json.dumps(published).lower()


@root_linux
def test_the_sweep_kills_every_process_of_the_grading_id_and_nothing_else():
    uid = gradescope._unused_uid()
    assert uid is not None and uid not in gradescope._uids_in_use()
    theirs = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "setsid", "sleep", "311"])
    other_uid = subprocess.Popen(["setpriv", f"--reuid={uid + 1}", f"--regid={uid + 1}", "--clear-groups", "sleep", "312"])
    ours = subprocess.Popen(["sleep", "312"])
    try:
        deadline = time.monotonic() + 10
        while uid not in gradescope._uids_in_use() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gradescope._kill_uid(uid)
        assert theirs.wait(timeout=10) != 0
        assert other_uid.poll() is None and ours.poll() is None
    finally:
        for p in (theirs, other_uid, ours):
            p.kill()
            p.wait()
