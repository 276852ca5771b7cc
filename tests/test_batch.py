"""`grade batch`: a small class graded in parallel, resumed, killed and restarted, (optionally) on Dask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, make_submission

ONLY = ["log_standard_normal", "log_bernoulli"]
BUG = "\ndef log_standard_normal(x, reduction=None, dim=None):\n    return -0.5 * x**2\n"
LOOP = "\ndef log_bernoulli(x, p, reduction=None, dim=None):\n    while True:\n        pass\n"

pytestmark = pytest.mark.slow


def fast_rubrics(tmp_path: Path) -> Path:
    """A copy of the vae rubric with a 2 s per-call limit (the infinite loop costs seconds, not minutes)."""
    d = tmp_path / "rubrics"
    d.mkdir()
    text = (REPO / "rubrics" / "vae.toml").read_text()
    assert "call_timeout_s = 20" in text
    (d / "vae.toml").write_text(text.replace("call_timeout_s = 20", "call_timeout_s = 2"))
    return d


def make_class(root: Path, hostile: bool = True) -> None:
    make_submission(root, "alice")
    make_submission(root, "anna")
    make_submission(root, "bob_bug", BUG)
    if hostile:
        (root / "syntax").mkdir()
        (root / "syntax" / "vae.py").write_text("def broken(:\n")
        make_submission(root, "exiter", "\nimport os\nos._exit(1)\n")
        make_submission(root, "looper", LOOP)
        (root / "empty").mkdir()  # no vae.py: a failure, recorded, not fatal
    (root / ".hidden").mkdir()


def all_parse(out: Path) -> None:
    for p in out.glob("*/results.json"):
        json.loads(p.read_text())


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    from grader.batch import grade_batch
    from grader.engine import GradeOptions

    tmp = tmp_path_factory.mktemp("class")
    root, out = tmp / "class", tmp / "out"
    root.mkdir()
    make_class(root)
    rubrics = fast_rubrics(tmp)
    events = []
    summary = grade_batch(root, out, GradeOptions(only=ONLY), jobs=2, rubrics_dir=rubrics,
                          progress=lambda o, done, total: events.append((o, done, total)))
    return root, out, rubrics, summary, events


def test_batch_grades_everyone_and_survives_hostile_code(graded_class):
    root, out, _, summary, events = graded_class
    assert not summary.interrupted
    assert summary.total == 7  # .hidden is not a submission
    assert [e[1] for e in events] == list(range(1, 8))
    status = {o.student: o.status for o in summary.outcomes}
    assert status.pop("empty") == "failed"
    assert set(status.values()) == {"graded"}
    assert "vae.py" in (out / "empty" / "error.txt").read_text()
    all_parse(out)
    for s in status:  # each graded student gets a report beside results.json
        assert (out / s / "report.pdf").stat().st_size > 10_000 and (out / s / "report.html").is_file()
    assert not (out / "empty" / "report.pdf").exists()
    score = {s: json.loads((out / s / "results.json").read_text())["score"] for s in status}
    assert score["alice"] == score["anna"] > score["bob_bug"] > 0
    assert score["syntax"] == score["exiter"] == 0
    assert score["looper"] < score["alice"]
    gradebook = pd.read_csv(out / "gradebook.csv")
    assert sorted(gradebook["student"]) == sorted(status)
    for col in ("score", "max_score", "autograded_score", "Q1", "log_standard_normal", "log_bernoulli",
                "submission_hash", "graded_at"):
        assert col in gradebook.columns
    rows = gradebook.set_index("student")
    bob, alice = rows.loc["bob_bug"], rows.loc["alice"]
    # bob's log_standard_normal loses its values checks (its property checks, which a constant offset
    # leaves intact, keep their points); his log_bernoulli is right
    assert bob["log_standard_normal"] < alice["log_standard_normal"] - 0.9
    assert bob["log_bernoulli"] == alice["log_bernoulli"] > 0


def test_results_for_other_data_are_not_up_to_date(graded_class):
    from grader.batch import is_up_to_date
    from grader.rubric import available_rubrics

    root, out, rubrics, _, _ = graded_class
    rubric = available_rubrics(rubrics)["vae"]
    assert is_up_to_date(root / "alice", rubric, out, ONLY)
    assert not is_up_to_date(root / "alice", rubric, out, ONLY, data="mnist:/data/mnist")


def test_batch_resumes_only_what_changed(graded_class):
    from grader.batch import grade_batch
    from grader.engine import GradeOptions

    root, out, rubrics, _, _ = graded_class
    (out / "anna" / "results.json").unlink()
    with open(root / "bob_bug" / "vae.py", "a") as f:
        f.write("\n# edited after the deadline\n")
    before = {p.parent.name: p.stat().st_ino for p in out.glob("*/results.json")}
    summary = grade_batch(root, out, GradeOptions(only=ONLY), jobs=2, rubrics_dir=rubrics)
    graded = sorted(o.student for o in summary.graded)
    assert graded == ["anna", "bob_bug"]
    assert sorted(o.student for o in summary.failed) == ["empty"]
    after = {p.parent.name: p.stat().st_ino for p in out.glob("*/results.json")}
    for student, inode in before.items():
        if student != "bob_bug":
            assert after[student] == inode, f"{student} was regraded"
    # a different selection of checks is not up to date either
    summary = grade_batch(root, out, GradeOptions(only=["log_standard_normal"]), jobs=1, rubrics_dir=rubrics)
    assert len(summary.graded) == 6


def test_killed_batch_restarts_without_regrading(tmp_path):
    root, out = tmp_path / "class", tmp_path / "out"
    root.mkdir()
    for name in ("s1", "s2", "s3", "s4"):
        make_submission(root, name)
    cmd = [sys.executable, "-m", "grader.cli", "batch", str(root), "-j", "1", "--out", str(out),
           "--only", ",".join(ONLY)]
    bad: list[str] = []
    stop = threading.Event()

    def watch():  # no half-written results.json, ever
        while not stop.is_set():
            for p in out.glob("*/results.json"):
                try:
                    json.loads(p.read_text())
                except FileNotFoundError:
                    pass
                except ValueError as e:
                    bad.append(f"{p}: {e}")
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not list(out.glob("*/results.json")):
            assert proc.poll() is None, "grade batch ended before the first result"
            assert time.monotonic() < deadline, "no result after 90 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the batch and its workers, mid-flight
        proc.wait()
    first = {p.parent.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*/results.json")}
    assert 1 <= len(first) < 4
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    stop.set()
    watcher.join()
    assert done.returncode == 0, done.stdout + done.stderr
    assert not bad, bad
    assert sorted(p.parent.name for p in out.glob("*/results.json")) == ["s1", "s2", "s3", "s4"]
    for student, ident in first.items():
        p = out / student / "results.json"
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == ident, f"{student} was regraded"
    assert f"{len(first)} up to date" in done.stdout
    assert not list(out.glob("*/.results.json.*")), "temp files left behind"


def test_batch_cli_bad_input_exits_2(tmp_path):
    from click.testing import CliRunner

    from grader.cli import main

    r = CliRunner().invoke(main, ["batch", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a folder" in r.output
    (tmp_path / "emptyroot").mkdir()
    r = CliRunner().invoke(main, ["batch", str(tmp_path / "emptyroot")])
    assert r.exit_code == 2 and "no submission folders" in r.output
    r = CliRunner().invoke(main, ["batch", str(tmp_path / "emptyroot"), "--executor", "dask"])
    assert r.exit_code == 2 and "--scheduler" in r.output


def test_dask_executor_matches_local_pool(tmp_path):
    distributed = pytest.importorskip("distributed")
    from grader.batch import grade_batch
    from grader.engine import GradeOptions

    root = tmp_path / "class"
    root.mkdir()
    make_class(root, hostile=False)
    (root / "syntax").mkdir()
    (root / "syntax" / "vae.py").write_text("def broken(:\n")
    local = grade_batch(root, tmp_path / "local", GradeOptions(only=ONLY), jobs=1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = grade_batch(root, tmp_path / "dask", GradeOptions(only=ONLY), executor="dask", scheduler=cluster.scheduler_address)
        again = grade_batch(root, tmp_path / "dask", GradeOptions(only=ONLY), executor="dask", scheduler=cluster.scheduler_address)
    assert not remote.failed and len(remote.graded) == 4
    assert len(again.skipped) == 4  # the parent wrote them: resumable as the local pool
    for s in ("alice", "anna", "bob_bug", "syntax"):
        a = json.loads((tmp_path / "local" / s / "results.json").read_text())
        b = json.loads((tmp_path / "dask" / s / "results.json").read_text())
        assert a["score"] == b["score"]
        assert [t["score"] for t in a["tests"]] == [t["score"] for t in b["tests"]]


def test_hostile_entry_names_are_shown_not_obeyed_by_the_terminal(tmp_path):
    """A name from ROOT (a student's folder or loose file) is printed as text: an ESC sequence would retitle or
    clear the TA's terminal and forge lines of the log; rich markup would plant a link or a style."""
    from click.testing import CliRunner

    from grader.cli import main

    root = tmp_path / "class"
    root.mkdir()
    (root / "a\x1b]0;pwned\x07\x1b[2J[link=x.example]b\u202e.zip").write_bytes(b"PK")
    r = CliRunner().invoke(main, ["batch", str(root), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "holds no submission folders" in r.output
    assert "\x1b" not in r.output and "\x07" not in r.output and "\u202e" not in r.output
    assert "\\x1b]0;pwned" in r.output and "[link=x.example]b\\u202e.zip" in r.output
