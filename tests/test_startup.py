"""Cold start of the `grade` commands: what they import, how they exit, what they leave behind."""

from __future__ import annotations

import re

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import grader.engine as engine
from grader.rubric import available_rubrics
from tests.conftest import REPO, make_submission

GRADE = REPO / ".venv" / "bin" / "grade"
EXE = [str(GRADE)] if GRADE.exists() else [sys.executable, "-m", "grader.cli"]


def test_a_traced_check_flushes_its_output_exits_0_and_leaves_no_folder_behind(tmp_path):
    """`grade check` ends with os._exit: its table still reaches a pipe, the zygote's and the run's
    folders are gone, and GRADEKIT_TRACE collects the phases of grader, zygote and child."""
    sub = make_submission(tmp_path, "fastexit")
    # A temp dir of its own, to see what the command leaves there; traversable (pytest's tmp_path
    # is under a 0700 folder that the sandbox's unprivileged id could not enter).
    tmp = Path(tempfile.mkdtemp(prefix="gradekit-test-tmpdir-"))
    os.chmod(tmp, 0o755)
    trace_file = tmp_path / "trace.jsonl"
    env = dict(os.environ, TMPDIR=str(tmp), GRADEKIT_TRACE=str(trace_file))
    try:
        p = subprocess.run(EXE + ["check", str(sub), "--only", "log_bernoulli"], capture_output=True, text=True,
                           timeout=600, env=env, cwd=tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "public checks passed" in p.stdout  # printed last, before os._exit: flushed
        assert sorted(x.name for x in tmp.iterdir()) == []  # no gradekit-zygote-*, no gradekit-run-*
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    names = [json.loads(line)["name"] for line in trace_file.read_text().splitlines()]
    for phase in ("torch imported", "zygote forked", "child: namespaces entered",
                  "child: privileges dropped (user namespace, capabilities, seccomp)", "submission imported in the child",
                  "table printed"):
        assert phase in names, names
    assert names.index("torch imported") < names.index("grader imported (engine, rubric, checks)")


def test_the_console_script_keeps_its_exit_codes(tmp_path):
    p = subprocess.run(EXE + ["run", str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and re.search(r"not a folder|does not exist", p.stdout + p.stderr)
    p = subprocess.run(EXE + ["no-such-command"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "No such command" in p.stderr


def test_the_batch_parent_does_not_import_torch():
    """`grade batch`'s parent only finds and hashes submissions: torch is its workers' to import."""
    code = ("import sys, grader.engine, grader.batch, grader.commands.batch; "
            "print(sorted(m for m in ('torch', 'grader.checks') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


class _Stop(Exception):
    pass


@pytest.mark.parametrize("only, threads, expected", [(["elbo"], 2, 1), (["elbo"], None, 1), (["model"], 2, 2)])
def test_the_child_gets_one_torch_thread_for_unit_checks_whatever_the_batch_offers(tmp_path, monkeypatch, only,
                                                                                   threads, expected):
    """`grade batch` asks for cores // jobs threads; unit checks still run on one (2-3x faster on 2 cores)."""
    seen = {}

    class Capture:
        def __init__(self, submission, config, zygote=None):
            seen["threads"] = config.threads
            raise _Stop

    monkeypatch.setattr(engine, "Sandbox", Capture)
    sub = make_submission(tmp_path, "threads")
    with pytest.raises(_Stop):
        engine.grade_submission(sub, available_rubrics()["vae"],
                                engine.GradeOptions(only=only, threads=threads, device="cpu"))
    assert seen["threads"] == expected


FORGED_SECONDS = """
import sys as _sys
_protocol = _sys.modules["grader.sandbox.protocol"]
_send = _protocol.send
_protocol.send = lambda sock, obj: _send(sock, {**obj, "seconds": 10 ** 400} if isinstance(obj, dict) else obj)
"""


def test_a_forged_seconds_field_in_the_childs_replies_changes_nothing(tmp_path):
    """The grader keeps per-request statistics for bench_startup; a reply's 'seconds' is the student's to forge."""
    sub = make_submission(tmp_path, "forger", FORGED_SECONDS)
    result = engine.grade_submission(sub, available_rubrics()["vae"],
                                     engine.GradeOptions(only=["log_bernoulli"], device="cpu"))
    assert not [e for e in result.errors if e.startswith("internal error")], result.errors
    assert result.tests and all(t.status == "passed" for t in result.tests), [t.output for t in result.tests]
