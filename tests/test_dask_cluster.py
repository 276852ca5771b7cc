"""`grade batch --executor dask` on a real cluster whose workers share no files with the client.

A scheduler and workers started with Dask's own commands (`dask scheduler`, `dask worker --preload
grader.remote`), each worker in its own mount namespace (`unshare -m`, needs root) where the client's
folders (the class and the reports) are covered by an empty tmpfs. One worker has a *stale copy* at the
client's paths (every student's file replaced by a buggy one): content travels with the task, so it must
grade what the client sent, not what it finds there. Another worker runs a changed reference
implementation: it must refuse, never grade. One test kills a worker in the middle of a task.

Each worker gets its own temp dir outside the hidden folder (what a container or a Slurm job has): the
sandbox covers the temp dir with a private tmpfs, and a mount below it is h2's "sandbox in containers" case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, make_submission

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

ONLY = ["log_standard_normal", "log_bernoulli"]
BUG = "\ndef log_standard_normal(x, reduction=None, dim=None):\n    return -0.5 * x**2\n"
# `dask scheduler` / `dask worker`, run by this interpreter (the `dask` script's #! may name another venv)
SECRET = "5ec7e7" * 6  # the same checks' inputs on both sides (grader/checks/inputs.py): comparable outputs
DASK = [sys.executable, "-m", "distributed.cli.dask_scheduler"], [sys.executable, "-m", "distributed.cli.dask_worker"]


def _why_no_namespaces() -> str:
    if os.geteuid() != 0:
        return "needs root to give each worker its own mount namespace (unshare -m)"
    if not shutil.which("unshare"):
        return "needs util-linux's unshare"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return "" if probe.returncode == 0 else f"unshare -m fails here: {probe.stderr.decode().strip()}"


class Cluster:
    """A `dask scheduler` and namespaced `dask worker`s (subprocesses of this test, stopped at the end)."""

    def __init__(self, base: Path):
        self.base = base
        self.procs: list[subprocess.Popen] = []
        sched_file = base / "scheduler.json"
        self.procs.append(subprocess.Popen(
            [*DASK[0], "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(sched_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.2)
        time.sleep(0.2)
        self.address = json.loads(sched_file.read_text())["address"]
        self.client = distributed.Client(self.address, timeout="30s")

    def add_worker(self, name: str, hide: list[Path], setup: str = "") -> None:
        """A worker in its own mount namespace: `hide` covered by empty tmpfs, then `setup` (shell) run there."""
        tmp = tempfile.mkdtemp(prefix=f"gradekit-worker-{name}-")
        script = "set -e\n" + "".join(f"mount -t tmpfs tmpfs '{p}'\n" for p in hide) + setup + (
            f"\nexec env TMPDIR='{tmp}' {' '.join(DASK[1])} {self.address} --name {name} --nthreads 1 --no-nanny "
            f"--no-dashboard --local-directory '{tmp}' --preload grader.remote\n")
        log = open(self.base / f"worker-{name}.log", "wb")
        self.procs.append(subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                           cwd="/", stdout=log, stderr=log, start_new_session=True))

    def wait_for(self, n: int) -> dict[str, int]:
        """{worker address: pid} once `n` workers are up."""
        self.client.wait_for_workers(n, timeout=240)
        return self.client.run(os.getpid)

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            for p in reversed(self.procs):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    """A class of three (two correct, one buggy), the local pool's grades, and a cluster of two workers:
    `clean` (the client's folders hidden) and `stale` (a buggy copy of every submission at the client's paths)."""
    why = _why_no_namespaces()
    if why:
        pytest.skip(why)
    from grader.batch import grade_batch
    from grader.engine import GradeOptions

    base = tmp_path_factory.mktemp("dask")
    client_side = base / "client"  # everything the client has: hidden from every worker
    root = client_side / "class"
    root.mkdir(parents=True)
    make_submission(root, "alice")
    make_submission(root, "anna")
    make_submission(root, "bob_bug", BUG)
    stale = base / "stale"
    for s in ("alice", "anna", "bob_bug"):
        make_submission(stale, s, BUG + "\ndef log_bernoulli(x, p, reduction=None, dim=None):\n    return x\n")
    local = grade_batch(root, client_side / "local", GradeOptions(only=ONLY, secret=SECRET), jobs=1)
    assert len(local.graded) == 3
    cluster = Cluster(base)
    cluster.add_worker("clean", [client_side])
    cluster.add_worker("stale", [client_side], setup=f"cp -r '{stale}' '{root}'")
    try:
        cluster.wait_for(2)
        yield root, client_side, cluster
    finally:
        cluster.close()


def _comparable(result: dict) -> dict:
    """results.json without what differs between two runs of the same grading on two machines: time stamps,
    durations, and the sandbox's report of the machine (its paths, mounts and sockets), of which only the
    protections every grading machine must have are kept."""
    from grader.sandbox.errors import REQUIRED_PROTECTIONS

    r = json.loads(json.dumps(result))
    r.pop("execution_time", None)
    g = r["extra_data"]["gradekit"]
    g.pop("graded_at", None)
    g["sandbox"] = {k: g["sandbox"].get(k) for k in REQUIRED_PROTECTIONS}
    assert all(g["sandbox"].values()), g["sandbox"]
    for t in r["tests"]:
        t["extra_data"].pop("duration", None)
    return r


def _report_text(folder: Path) -> str:
    """report.html without the time it was graded and the run time."""
    html = (folder / "report.html").read_text()
    return re.sub(r"\d\d:\d\d UTC|\d+(\.\d+)? ?s\b", "#", html)


def test_cluster_without_shared_files_grades_like_the_local_pool(classroom):
    from grader.batch import grade_batch
    from grader.engine import GradeOptions

    root, client_side, cluster = classroom
    out = client_side / "dask"
    remote = grade_batch(root, out, GradeOptions(only=ONLY, secret=SECRET), executor="dask", scheduler=cluster.address)
    assert not remote.failed, [(o.student, o.message) for o in remote.failed]
    assert sorted(o.student for o in remote.graded) == ["alice", "anna", "bob_bug"]
    for s in ("alice", "anna", "bob_bug"):
        a = json.loads((client_side / "local" / s / "results.json").read_text())
        b = json.loads((out / s / "results.json").read_text())
        assert json.dumps(_comparable(b), indent=1) == json.dumps(_comparable(a), indent=1), s  # not the stale copy
        assert _report_text(out / s) == _report_text(client_side / "local" / s), s
        assert (out / s / "report.pdf").stat().st_size > 10_000
        assert sorted(p.relative_to(out / s).as_posix() for p in (out / s).rglob("*") if p.is_file()) == \
            sorted(p.relative_to(client_side / "local" / s).as_posix() for p in (client_side / "local" / s).rglob("*")
                   if p.is_file())
    # the client's restart: everything is up to date (the hashes are the client's own)
    again = grade_batch(root, out, GradeOptions(only=ONLY), executor="dask", scheduler=cluster.address)
    assert len(again.skipped) == 3 and not again.graded


def test_worker_with_another_grader_refuses_and_batch_fails(tmp_path):
    """A worker whose reference/vae.py differs from the client's grades nothing; the only worker refusing,
    `grade batch` exits 1 and each student's error names the file."""
    why = _why_no_namespaces()
    if why:
        pytest.skip(why)
    changed = tmp_path / "vae.py"
    changed.write_text((REPO / "reference" / "vae.py").read_text() + "\n# an older copy on that machine\n")
    root = tmp_path / "client" / "class"
    root.mkdir(parents=True)
    make_submission(root, "alice")
    make_submission(root, "bob_bug", BUG)
    cluster = Cluster(tmp_path)
    cluster.add_worker("old", [tmp_path / "client"], setup=f"mount --bind '{changed}' '{REPO / 'reference' / 'vae.py'}'")
    try:
        cluster.wait_for(1)
        out = tmp_path / "client" / "reports"
        done = subprocess.run([sys.executable, "-m", "grader.cli", "batch", str(root), "--out", str(out), "--only",
                               ",".join(ONLY), "--executor", "dask", "--scheduler", cluster.address],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        cluster.close()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "nothing could be graded" in done.stdout
    for s in ("alice", "bob_bug"):
        error = (out / s / "error.txt").read_text()
        assert "runs another grader" in error and "reference/vae.py" in error, error
        assert not (out / s / "results.json").exists()


def test_killed_worker_task_is_graded_elsewhere(classroom, tmp_path):
    """SIGKILL the worker in the middle of a task: the scheduler reruns it on the other worker, the student
    is graded like the local pool and the outcome says the worker was lost. (Runs last: it kills a worker.)"""
    from grader.batch import grade_batch
    from grader.engine import GradeOptions

    root, client_side, cluster = classroom
    slow = root.parent / "slow_class"
    make_submission(slow, "sleepy", "\nimport time\ntime.sleep(6)\n")  # a slow import: time to kill its worker
    pids = cluster.wait_for(2)
    killed: list[str] = []

    def kill_when_running():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for worker, keys in cluster.client.processing().items():
                if any(str(k).startswith("grade-sleepy") for k in keys):
                    time.sleep(2)  # inside the task by now (the import sleeps 6 s)
                    os.kill(pids[worker], signal.SIGKILL)
                    killed.append(worker)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_running, daemon=True)
    killer.start()
    summary = grade_batch(slow, tmp_path / "out", GradeOptions(only=ONLY), executor="dask", scheduler=cluster.address)
    killer.join()
    assert killed, "the task never started"
    assert [o.status for o in summary.outcomes] == ["graded"], summary.outcomes
    assert "worker was lost 1×" in summary.outcomes[0].message
    sleepy = json.loads((tmp_path / "out" / "sleepy" / "results.json").read_text())
    alice = json.loads((client_side / "local" / "alice" / "results.json").read_text())
    assert [t["score"] for t in sleepy["tests"]] == [t["score"] for t in alice["tests"]]
