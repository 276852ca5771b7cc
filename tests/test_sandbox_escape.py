"""A determined student who knows the code: escapes, path tricks, bombs (issue 12; docs/sandbox.md).

Each attack is the reference solution (full marks when honest) plus the attack, so a lost point
on an honest component means the attack cost the grade, and anything it reaches outside its own
sandbox is checked from the grader's side. The privilege attacks run both as root and, where the
machine allows it, with the whole grader running as an unprivileged user (`setpriv`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch

from grader.engine import GradeOptions, grade_submission
from grader.sandbox import isolation
from tests.conftest import HOSTILE, REPO, make_submission
from tests.test_sandbox_hostile import QUICK, attack, fast_rubric, full, grade  # noqa: F401  (fixture)

SECRET = "GRADEKIT-TEST-SECRET-7f3a"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="namespaces are Linux only")


@pytest.fixture(scope="module", autouse=True)
def warm_zygote():
    """Start the zygote before any timing: on a loaded machine its torch import alone can exceed
    the 30 s per-submission budget of the fast rubric."""
    from grader.sandbox.client import Zygote

    Zygote.shared().start()


@pytest.fixture(scope="module")
def patient_rubric(tmp_path_factory):
    """The vae rubric with limits loose enough for bombs that must run into their bounds."""
    from grader.rubric import load_rubric

    text = (REPO / "rubrics" / "vae.toml").read_text().replace("call_timeout_s = 20", "call_timeout_s = 60")
    p = tmp_path_factory.mktemp("patient") / "vae.toml"
    p.write_text(text)
    return load_rubric(p)


def escape_attempts(output: str) -> list[str]:
    return [l for l in output.splitlines() if l.startswith("[escape]") and "SUCCEEDED" in l]


@linux_only
def test_escape_attempts_are_all_blocked_and_cost_nothing(tmp_path, fast_rubric):
    sub = tmp_path / "escape"
    shutil.copytree(HOSTILE / "escape_privileges", sub, ignore=shutil.ignore_patterns("README.md"))
    result = grade(sub, fast_rubric)
    assert "[escape] umount2 of the mounts: blocked" in result.student_output, result.student_output
    assert not escape_attempts(result.student_output), result.student_output
    assert not Path("/tmp/gradekit_pwned").exists()
    assert all(full(result, c) for c in QUICK), [t.output for t in result.tests]
    p = result.sandbox
    assert p["capabilities_dropped"] and p["no_new_privs"] and p["fresh_proc"] and p["unprivileged_id"]
    assert p["read_only_filesystem"] and p["private_tmp"] and p["network_isolated"]


def test_links_and_fifos_in_a_submission_are_not_followed(tmp_path, fast_rubric):
    secret = tmp_path / "secret.txt"
    secret.write_text(f"## Q1\n{SECRET}\n")
    sub = make_submission(tmp_path, "linker")
    (sub / "answers.md").symlink_to(secret)
    (sub / "model.pt").symlink_to(secret)
    (sub / "data").symlink_to(tmp_path)
    os.mkfifo(sub / "notes.txt")
    result = grade(sub, fast_rubric)
    text = json.dumps(result.to_json())
    assert SECRET not in text
    assert all(q.answer is None for q in result.questions)
    assert any("answers.md" in e and "model.pt" in e and "notes.txt" in e for e in result.errors), result.errors
    assert all(full(result, c) for c in QUICK)


@linux_only
def test_the_output_log_cannot_be_swapped_for_a_link_or_a_fifo(tmp_path, fast_rubric):
    secret = Path(tempfile.mkdtemp(prefix="gradekit-secret-")) / "secret.txt"
    secret.write_text(SECRET)
    try:
        sub = make_submission(tmp_path, "logswap", attack(f"""
            import os
            print("my output")
            for _root, _dirs, _files in os.walk("/tmp"):
                for _name in _files:
                    if _name in ("output.log", "exit_status"):
                        _p = os.path.join(_root, _name)
                        try:
                            os.unlink(_p)
                            os.symlink({str(secret)!r}, _p) if _name == "output.log" else os.mkfifo(_p)
                            print("[escape] swapped", _p, "SUCCEEDED")
                        except OSError as e:
                            print("swap failed", _p, e)
            for _fd in (1, 2):  # its own log through /proc: a fresh file, then a FIFO in its place
                _p = os.readlink(f"/proc/self/fd/{{_fd}}")
                print("fd", _fd, "is", _p)
        """))
        result = grade(sub, fast_rubric)
        assert "my output" in result.student_output
        assert SECRET not in result.student_output
        assert not escape_attempts(result.student_output)
        assert all(full(result, c) for c in QUICK)
    finally:
        shutil.rmtree(secret.parent)


def test_compressed_or_legacy_checkpoints_are_refused_before_loading(tmp_path):
    from grader.checks.model_level import ModelGradingError, _bounded_checkpoint

    good = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3, 3)}, good)
    _bounded_checkpoint(good)  # what torch.save writes passes
    bomb = tmp_path / "bomb" / "model.pt"
    bomb.parent.mkdir()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if "/data/" in info.filename:
                data = bytes(64 << 20)  # 64 MiB of zeros: ~64 kB compressed
            dst.writestr(info.filename, data)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ModelGradingError, match="compressed"):
        _bounded_checkpoint(bomb)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelGradingError, match="legacy"):
        _bounded_checkpoint(legacy)


@linux_only
def test_thread_fork_and_disk_bombs_hit_their_bounds(tmp_path, patient_rubric):
    sub = make_submission(tmp_path, "bomber", attack("""
        import os, threading, time
        _stop = threading.Event()
        _threads = 0
        try:
            for _ in range(3000):
                threading.Thread(target=_stop.wait, daemon=True).start()
                _threads += 1
        except RuntimeError as e:
            pass
        print("threads started:", _threads)
        _stop.set()
        _forks = 0
        try:
            for _ in range(3000):
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                _forks += 1
        except OSError:
            pass
        print("processes forked:", _forks)
        _written = 0
        try:
            with open("/tmp/filler", "wb") as _f:
                for _ in range(4096):  # up to 4 GiB
                    _f.write(bytes(1 << 20))
                    _written += 1
        except OSError as e:
            print("disk filler stopped:", type(e).__name__)
        print("MiB written:", _written)
        os.unlink("/tmp/filler")
    """))
    result = grade(sub, patient_rubric)
    out = result.student_output
    counts = {k: int(out.split(k)[1].split()[0]) for k in ("threads started:", "processes forked:", "MiB written:")}
    assert counts["threads started:"] < isolation.MAX_TASKS, out
    assert counts["processes forked:"] < isolation.MAX_TASKS, out
    assert counts["MiB written:"] <= isolation.WRITABLE_MB, out
    assert all(full(result, c) for c in QUICK), [t.output for t in result.tests]


def test_a_tampered_or_planted_cache_entry_is_not_used(tmp_path, monkeypatch):
    import numpy as np

    from grader import model_cache

    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "cache"))
    model_cache.store("k1", {"w": np.ones(3, np.float32)}, {"metrics": {"nll": 90.0}})
    assert model_cache.load("k1")["meta"]["metrics"]["nll"] == 90.0
    meta = tmp_path / "cache" / "k1" / "meta.json"
    meta.write_text(json.dumps({"metrics": {"nll": 1e9}}))  # a worse reference: everyone "beats" it
    assert model_cache.load("k1") is None
    planted = tmp_path / "cache" / "k2"  # an entry that never came from store()
    shutil.copytree(tmp_path / "cache" / "k1", planted)
    assert model_cache.load("k2") is None
    model_cache.store("k1", {"w": np.ones(3, np.float32)}, {"metrics": {"nll": 90.0}})  # retrained: replaced
    assert model_cache.load("k1")["meta"]["metrics"]["nll"] == 90.0


def _unprivileged_prefix() -> tuple[list[str], str] | None:
    """A command prefix that runs the grader without any privilege, and what it is: `nobody` via
    setpriv when that user can run this interpreter, else (e.g. the interpreter lives under a 0700
    /root) an id 1000 in a user namespace of its own, which has no capability outside it either."""
    if os.geteuid() != 0:
        return [], "the current unprivileged user"
    probe = [sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', '0'], check=True)"]
    for prefix, what in ((["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], "nobody (setpriv)"),
                         (["unshare", "--user", "--map-user=1000", "--map-group=1000"], "id 1000 in a user namespace")):
        if shutil.which(prefix[0]) and subprocess.run(prefix + probe, capture_output=True).returncode == 0:
            return prefix, what
    return None


def _grade_cli(prefix: list[str], sub: Path, out: Path, *extra: str, env: dict | None = None):
    cmd = prefix + [str(REPO / ".venv" / "bin" / "grade") if (REPO / ".venv" / "bin" / "grade").exists() else "grade",
                    "run", str(sub), "--out", str(out), "--only", ",".join(QUICK), "--device", "cpu", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def _world_readable_copy(name: str) -> tuple[Path, Path, Path]:
    base = Path(tempfile.mkdtemp(prefix="gradekit-nobody-"))
    os.chmod(base, 0o777)
    sub, out = base / name, base / "out"
    shutil.copytree(HOSTILE / "escape_privileges", sub, ignore=shutil.ignore_patterns("README.md"))
    out.mkdir(mode=0o777)
    os.chmod(out, 0o777)
    for p in [sub, *sub.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return base, sub, out


@pytest.mark.slow
@linux_only
def test_escape_attempts_are_blocked_when_the_grader_runs_unprivileged():
    found = _unprivileged_prefix()
    if found is None:
        pytest.skip("no way to run this interpreter unprivileged here (setpriv/unshare)")
    prefix, _ = found
    base, sub, out = _world_readable_copy("escape")
    try:
        r = _grade_cli(prefix, sub, out, env={"HOME": str(base), "GRADEKIT_CACHE": str(base / "cache")})
        if "cannot isolate" in r.stdout + r.stderr:
            pytest.skip("this kernel does not give unprivileged users a user namespace")
        assert r.returncode == 0, r.stdout + r.stderr
        result = json.loads((out / "escape" / "results.json").read_text())
        g = result["extra_data"]["gradekit"]
        assert not escape_attempts(g["student_output"]), g["student_output"]
        assert g["sandbox"]["capabilities_dropped"] and g["sandbox"]["user_namespace"]
        assert all(t["score"] == t["max_score"] for t in result["tests"])
    finally:
        shutil.rmtree(base, ignore_errors=True)


# A platform without namespaces, simulated: the command runs under a seccomp filter (inherited by every
# process it starts) that denies unshare and mount.
NO_NAMESPACES = [sys.executable, "-c", "import os, sys\nfrom grader.sandbox import isolation\n"
                 "assert isolation._lib().prctl(isolation.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0\n"
                 "assert isolation.install_seccomp()\nos.execvp(sys.argv[1], sys.argv[1:])\n"]


@pytest.mark.slow
@linux_only
def test_without_isolation_grading_is_refused_unless_opted_in(tmp_path):
    """A platform without namespaces, simulated: the grader itself runs under a seccomp filter
    that denies unshare and mount. `grade run` refuses; with --allow-unsandboxed it warns."""
    prefix = NO_NAMESPACES
    sub = make_submission(tmp_path, "plain")
    refused = _grade_cli(prefix, sub, tmp_path / "out")
    assert refused.returncode != 0
    assert "cannot isolate student code" in refused.stdout + refused.stderr
    assert "--allow-unsandboxed" in refused.stdout + refused.stderr
    assert not (tmp_path / "out" / "plain" / "results.json").exists()
    allowed = _grade_cli(prefix, sub, tmp_path / "out", "--allow-unsandboxed")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "WITHOUT isolation" in allowed.stdout
    result = json.loads((tmp_path / "out" / "plain" / "results.json").read_text())
    assert any("WITHOUT isolation" in e for e in result["extra_data"]["gradekit"]["errors"])


@pytest.mark.slow
@linux_only
def test_grade_batch_hands_allow_unsandboxed_to_its_workers(tmp_path):
    """The opt-in reaches the batch's worker processes as an option (flag or its environment spelling at
    the command line), where the machine cannot isolate: refused without it, graded with a warning with it."""
    make_submission(tmp_path / "class", "plain")
    grade = str(REPO / ".venv" / "bin" / "grade") if (REPO / ".venv" / "bin" / "grade").exists() else "grade"
    env = {k: v for k, v in os.environ.items() if k != "GRADEKIT_ALLOW_UNSANDBOXED"}

    def batch(out: str, *extra: str, **more_env: str):
        cmd = [*NO_NAMESPACES, grade, "batch", str(tmp_path / "class"), "--out", str(tmp_path / out), "--only",
               ",".join(QUICK), "--device", "cpu", "--no-reports", *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**env, **more_env})

    refused = batch("refused")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "cannot isolate student code" in (tmp_path / "refused" / "plain" / "error.txt").read_text()
    for out, extra, more_env in (("flag", ["--allow-unsandboxed"], {}),
                                 ("env", [], {"GRADEKIT_ALLOW_UNSANDBOXED": "1"})):
        allowed = batch(out, *extra, **more_env)
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        result = json.loads((tmp_path / out / "plain" / "results.json").read_text())
        assert any("WITHOUT isolation" in e for e in result["extra_data"]["gradekit"]["errors"]), out
        assert all(t["score"] == t["max_score"] for t in result["tests"]), out


@pytest.mark.skipif(not isolation.linux(), reason="Linux namespaces only")
def test_needed_folders_under_the_temp_dir_stay_visible_in_the_private_tmp():
    """A checkout (and its .venv) under /tmp must stay importable by the child although /tmp is
    private there (a clone in /tmp lost grader.harnesses: every model-level check failed), while
    the rest of the temp dir stays hidden."""
    root = Path(tempfile.mkdtemp(prefix="gradekit-needed-"))  # walkable by anyone, like /tmp/<clone>
    os.chmod(root, 0o755)
    (root / "checkout" / "grader").mkdir(parents=True)
    (root / "checkout" / "grader" / "harness.py").write_text("X = 1\n")
    (root / "other_run").mkdir()
    (root / "other_run" / "secret.txt").write_text("classmate\n")
    scratch = root / "run" / "submission"
    scratch.mkdir(parents=True)
    pid = os.fork()
    if pid == 0:  # the child: enter namespaces as the sandbox does, then look around
        code = 3
        try:
            got = isolation.enter_namespaces()
            if got.get("filesystem_masking"):
                isolation.lock_down_filesystem(str(scratch), str(root), [str(root / "checkout")])
                visible = (root / "checkout" / "grader" / "harness.py").read_text() == "X = 1\n"
                hidden = not (root / "other_run" / "secret.txt").exists()
                code = 0 if visible and hidden else (1 if not visible else 2)
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    shutil.rmtree(root, ignore_errors=True)
    if code == 3:
        pytest.skip("no mount namespace on this machine")
    assert code != 1, "a needed folder under the temp dir was hidden from the child"
    assert code != 2, "the rest of the temp dir was visible to the child"
    assert code == 0, f"the child failed ({code})"


def test_the_checkout_and_interpreter_are_needed_even_under_the_temp_dir(monkeypatch):
    from grader.sandbox import client

    monkeypatch.setattr(tempfile, "tempdir", str(client.REPO_ROOT.parent))  # as if the clone were in /tmp
    needed = client._needed_paths()
    assert str(client.REPO_ROOT) in needed and sys.prefix in needed
