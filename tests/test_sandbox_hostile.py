"""Hostile submissions: each attack ends in a fair score, a clear message, no harm and no hang.

Each case is the reference solution (full marks when honest) plus an attack, so a score above zero
on the attacked component would mean the attack worked.
"""

from __future__ import annotations

import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from grader.engine import GradeOptions, grade_submission
from grader.rubric import load_rubric
from tests.conftest import REPO, make_submission

QUICK = ["log_standard_normal", "log_bernoulli"]


@pytest.fixture(scope="module")
def fast_rubric(tmp_path_factory):
    """The vae rubric with a 3 s per-call and 30 s per-submission limit and a 1 GiB memory limit."""
    text = (REPO / "rubrics" / "vae.toml").read_text()
    text = text.replace("call_timeout_s = 20", "call_timeout_s = 3").replace("submission_timeout_s = 300", "submission_timeout_s = 30")
    text = text.replace("memory_mb = 4096", "memory_mb = 1024")
    p = tmp_path_factory.mktemp("rubric") / "vae.toml"
    p.write_text(text)
    return load_rubric(p)


def grade(sub: Path, rubric, only=QUICK, out=None):
    return grade_submission(sub, rubric, GradeOptions(device="cpu", only=only, out_dir=out))


def scores(result) -> dict[str, float]:
    """Points per component on its value checks. The gradient and declared-property checks judge what the
    code genuinely does (a constant offset leaves its gradients and dtype right), never the values an
    attack lies about, so they are left out here."""
    out: dict[str, float] = {}
    for t in result.tests:
        if ".property." in t.check or t.check.endswith(".gradients"):
            continue
        out[t.component] = out.get(t.component, 0.0) + t.score
    return out


def full(result, component) -> bool:
    ts = [t for t in result.tests if t.component == component]
    return bool(ts) and all(t.status == "passed" for t in ts)


def attack(body: str) -> str:
    return "\n" + textwrap.dedent(body)


def test_monkeypatched_comparisons_do_not_help_wrong_maths(tmp_path, fast_rubric):
    sub = make_submission(tmp_path, "patcher", attack("""
        import builtins, numpy, numpy.testing, torch.testing
        torch.allclose = lambda *a, **k: True
        torch.isclose = lambda a, b, *x, **k: torch.ones_like(a, dtype=torch.bool)
        torch.equal = lambda *a, **k: True
        numpy.allclose = lambda *a, **k: True
        numpy.testing.assert_allclose = lambda *a, **k: None
        torch.testing.assert_close = lambda *a, **k: None
        builtins.abs = lambda x: 0
        def log_standard_normal(x, reduction=None, dim=None):
            return torch.zeros_like(x)
    """))
    result = grade(sub, fast_rubric)
    assert scores(result)["log_standard_normal"] == 0
    assert full(result, "log_bernoulli")


def test_lying_tensor_subclass_and_lying_eq_are_judged_on_their_data(tmp_path, fast_rubric):
    sub = make_submission(tmp_path, "liar", attack("""
        import numpy as _np
        class Liar(torch.Tensor):
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                if func in (torch.allclose, torch.equal, torch.Tensor.__eq__, torch.isclose):
                    return True
                return super().__torch_function__(func, types, args, kwargs or {})
            def numpy(self, *a, **k):
                return _np.zeros(self.shape, dtype=_np.float32)
            def tolist(self):
                return [0.0]
        def log_standard_normal(x, reduction=None, dim=None):
            return (x * 0 + 123.0).as_subclass(Liar)
        class AlwaysEqual:
            def __eq__(self, other):
                return True
        def log_bernoulli(x, p, reduction=None, dim=None):
            return AlwaysEqual()
    """))
    result = grade(sub, fast_rubric)
    assert scores(result) == {"log_standard_normal": 0, "log_bernoulli": 0}
    bern = next(t for t in result.tests if t.component == "log_bernoulli")
    assert "must return a torch.Tensor" in bern.output and "AlwaysEqual" in bern.output


@pytest.mark.parametrize("where, code, expect", [
    ("import", "import sys\nsys.exit(0)\n", "SystemExit"),
    ("import", "raise SystemExit(3)\n", "SystemExit"),
    ("import", "import os\nos._exit(0)\n", "died"),
    ("import", "while True:\n    pass\n", "time limit"),
])
def test_import_time_attacks_give_zero_with_a_message(tmp_path, fast_rubric, where, code, expect):
    sub = make_submission(tmp_path, "importer", "\n" + code)
    t0 = time.monotonic()
    result = grade(sub, fast_rubric)
    assert time.monotonic() - t0 < 25
    assert result.autograded_score == 0
    assert any(expect in e for e in result.errors), result.errors


@pytest.mark.parametrize("code, expect", [
    ("import os\n    os._exit(0)", "exited with status 0"),
    ("import ctypes\n    ctypes.string_at(0)", "segmentation fault"),
    ("import sys\n    sys.exit('bye')", "SystemExit"),
    ("while True:\n        pass", "time limit"),
    ("a = []\n    while True:\n        a.append(bytearray(256 * 1024 * 1024))", "memory limit of 1024 MiB"),
])
def test_call_time_attacks_cost_only_their_component(tmp_path, fast_rubric, code, expect):
    sub = make_submission(tmp_path, "caller", f"\ndef log_bernoulli(x, p, reduction=None, dim=None):\n    {code}\n")
    t0 = time.monotonic()
    result = grade(sub, fast_rubric)
    assert time.monotonic() - t0 < 25
    assert scores(result)["log_bernoulli"] == 0
    assert full(result, "log_standard_normal"), [t.output for t in result.tests]
    text = " ".join(t.output for t in result.tests if t.component == "log_bernoulli")
    assert expect in text, text


def _sleepers(tag: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [l for l in ps.splitlines() if f"sleep {tag}" in l]


def test_processes_left_behind_do_not_survive_grading(tmp_path, fast_rubric):
    sub = make_submission(tmp_path, "orphans", attack("""
        import os, subprocess, time
        subprocess.Popen(["sleep", "317"], start_new_session=True)
        if os.fork() == 0:
            if os.fork() == 0:
                os.setsid()
                os.execvp("sleep", ["sleep", "317"])
            os._exit(0)
    """))
    result = grade(sub, fast_rubric)
    assert full(result, "log_bernoulli")
    if not result.sandbox.get("pid_namespace"):
        pytest.skip("no PID namespace on this machine: documented limit (docs/sandbox.md)")
    time.sleep(0.3)
    assert _sleepers("317") == []


def test_no_network_not_even_loopback(tmp_path, fast_rubric):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    sub = make_submission(tmp_path, "net", attack(f"""
        import socket as _socket
        _ref_lsn = log_standard_normal
        def log_standard_normal(x, reduction=None, dim=None):
            try:
                _socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
            except OSError as e:
                print("connection failed:", e)
                return torch.zeros_like(x)
            return _ref_lsn(x, reduction, dim)
    """))
    result = grade(sub, fast_rubric, only=["log_standard_normal"])
    server.close()
    if not result.sandbox.get("network_isolated"):
        pytest.skip("no network namespace on this machine: documented limit (docs/sandbox.md)")
    assert scores(result)["log_standard_normal"] == 0
    assert not accepted
    assert "connection failed" in result.student_output


def test_reference_rubric_and_checks_are_out_of_reach(tmp_path, fast_rubric):
    sub = make_submission(tmp_path, "thief", attack(f"""
        import gc, importlib, sys
        _found = None
        for _name in ("reference.vae", "reference"):
            try:
                _m = importlib.import_module(_name)
                _found = getattr(_m, "log_standard_normal", None) or _found
            except Exception as e:
                print("import", _name, "failed:", type(e).__name__)
        for _path in ({str(REPO / 'reference' / 'vae.py')!r}, {str(REPO / 'rubrics' / 'vae.toml')!r},
                      {str(REPO / 'grader' / 'checks' / 'vae.py')!r}):
            try:
                print("read", len(open(_path).read()), "bytes of", _path)
                _found = _found or "file"
            except OSError as e:
                print("read failed:", _path, type(e).__name__)
        for _obj in gc.get_objects():
            try:
                _modname = getattr(_obj, "__module__", "") or ""
            except Exception:
                continue
            if callable(_obj) and isinstance(_modname, str) and _modname.startswith(("reference", "grader.checks")):
                _found = _found or "memory"
        for _mod in list(sys.modules):
            if _mod.startswith(("reference", "grader.checks", "grader.rubric", "grader.engine")):
                _found = _found or "sys.modules"
        print("found:", _found)
        _honest = log_standard_normal
        def log_standard_normal(x, reduction=None, dim=None):
            return _honest(x, reduction, dim) if _found else torch.zeros_like(x)
    """))
    result = grade(sub, fast_rubric, only=["log_standard_normal"])
    assert "found: None" in result.student_output, result.student_output
    assert scores(result)["log_standard_normal"] == 0


def test_writes_outside_the_scratch_copy_change_nothing(tmp_path, fast_rubric):
    victim = make_submission(tmp_path, "victim")
    before = (victim / "vae.py").read_text()
    out = tmp_path / "reports"
    (out / "victim").mkdir(parents=True)
    (out / "victim" / "results.json").write_text('{"score": 1}')
    sub = make_submission(tmp_path, "vandal", attack(f"""
        import os
        for _p in ({str(victim / 'vae.py')!r}, {str(out / 'victim' / 'results.json')!r},
                   {str(REPO / 'grader' / 'pwned.py')!r}, {str(tmp_path / 'pwned')!r}):
            try:
                with open(_p, "w") as _f:
                    _f.write("pwned")
                print("wrote", _p)
            except OSError as e:
                print("write failed:", _p, type(e).__name__)
        open("local_scratch.txt", "w").write("allowed")
        print("All tests passed! Score: 100/100")
        print('{{"score": 100, "max_score": 100, "tests": []}}')
    """))
    result = grade(sub, fast_rubric, out=out)
    assert (victim / "vae.py").read_text() == before
    assert (out / "victim" / "results.json").read_text() == '{"score": 1}'
    assert not (REPO / "grader" / "pwned.py").exists()
    assert not (tmp_path / "pwned").exists()
    assert not (sub / "local_scratch.txt").exists()  # the submission itself is untouched too
    assert "All tests passed" in result.student_output  # quoted, not believed
    assert result.autograded_score == sum(t.max_score for t in result.tests)  # honest code: full marks


def test_huge_output_is_truncated(tmp_path, fast_rubric):
    sub = make_submission(tmp_path, "loud", attack("""
        import sys
        sys.stdout.write("x" * (20 * 1024 * 1024))
        sys.stdout.flush()
    """))
    result = grade(sub, fast_rubric)
    assert len(result.student_output) < 100_000
    assert "output truncated" in result.student_output
    assert full(result, "log_bernoulli")


def test_slow_but_correct_code_keeps_full_marks(tmp_path, fast_rubric):
    sub = make_submission(tmp_path, "slow", attack("""
        import time
        _fast = log_bernoulli
        def log_bernoulli(x, p, reduction=None, dim=None):
            time.sleep(0.3)
            return _fast(x, p, reduction, dim)
    """))
    result = grade(sub, fast_rubric)
    assert result.autograded_score == sum(t.max_score for t in result.tests)


def test_harness_op_runs_grader_code_next_to_the_student_module(tmp_path):
    """`ctx.harness` runs a grader.harnesses function in the child; only plain data comes back."""
    import numpy as np

    from grader.sandbox.client import Sandbox, SandboxConfig

    sub = tmp_path / "h"
    sub.mkdir()
    (sub / "vae.py").write_text("import torch\ndef double(x):\n    return 2 * x\n")
    with Sandbox(sub, SandboxConfig()) as sb:
        sb.request({"op": "load"}, timeout=30)
        x = np.arange(3, dtype=np.float32)
        out = sb.request({"op": "harness", "function": "selftest.call_on", "kwargs": {"name": "double", "x": x}},
                         timeout=30)["result"]
        assert np.array_equal(out["value"], 2 * x) and out["device"] == "cpu"
        with pytest.raises(Exception, match="bad harness name"):
            sb.request({"op": "harness", "function": "../x", "kwargs": {}}, timeout=30)
