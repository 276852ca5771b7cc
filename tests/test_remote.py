"""grader.remote without a cluster: submissions packed as bytes, the grader's identity and its refusal,
reference-cache entries as bytes, and the wheel a worker installs (tests/test_dask_cluster.py runs a cluster)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, make_submission


def test_packed_digest_is_the_submission_hash_and_follows_the_copy_rules(tmp_path):
    from grader.engine import submission_hash
    from grader.remote import Packed, pack_submission, unpack

    sub = make_submission(tmp_path, "alice")
    (sub / "a").mkdir()
    (sub / "a" / "b").write_text("nested")  # Path order puts a/b before a.txt; str order would not
    (sub / "a.txt").write_text("flat")
    (sub / ".git").mkdir()
    (sub / ".git" / "HEAD").write_text("ref")
    (sub / "__pycache__").mkdir()
    (sub / "empty").mkdir()
    os.symlink("/etc/passwd", sub / "passwd")
    os.mkfifo(sub / "fifo")
    packed = pack_submission(sub)
    assert sorted(packed.files) == ["a.txt", "a/b", "vae.py"]
    assert sorted(packed.left_out) == ["fifo", "passwd"]
    assert "empty" in packed.folders
    copy = tmp_path / "copy" / "alice"
    unpack(packed, copy)
    assert packed.digest == submission_hash(copy)
    (sub / "passwd").unlink()
    (sub / "fifo").unlink()
    assert packed.digest == submission_hash(sub)
    with pytest.raises(ValueError, match="unsafe path"):
        unpack(Packed(files={"../evil.py": b"x"}), tmp_path / "evil")


def test_identity_difference_names_what_differs():
    from grader.remote import identity_difference

    client = {"gradekit": "0.1.0", "files": {"grader/engine.py": "a", "reference/vae.py": "b", "rubrics/vae.toml": "c"}}
    assert identity_difference(client, client) == ""
    worker = {"gradekit": "0.0.9", "files": {"grader/engine.py": "a", "reference/vae.py": "X", "grader/old.py": "d"}}
    why = identity_difference(client, worker)
    assert "gradekit 0.0.9 here, 0.1.0 on the client" in why
    assert "1 file(s) differ: reference/vae.py" in why
    assert "missing here: rubrics/vae.toml" in why and "only here: grader/old.py" in why


def test_worker_refuses_a_task_from_another_grader_without_running_anything(tmp_path):
    from grader.engine import GradeOptions
    from grader.remote import grade_packed, grader_identity, pack_submission
    from grader.rubric import available_rubrics

    rubric = available_rubrics()["vae"]
    ours = grader_identity(rubric)
    assert "reference/vae.py" in ours["files"] and "rubrics/vae.toml" in ours["files"]
    assert "grader/checks/vae.py" in ours["files"]
    theirs = {**ours, "files": {**ours["files"], "grader/checks/vae.py": "0" * 64}}
    packed = pack_submission(make_submission(tmp_path, "alice"))
    task = {"student": "alice", "assignment": "vae", "identity": theirs,
            "options": GradeOptions(only=["log_standard_normal"]).to_dict()}
    reply = grade_packed(task, packed)
    assert reply["ok"] is False and "grader/checks/vae.py" in reply["refused"] and "result" not in reply
    reply = grade_packed({**task, "identity": {**ours, "gradekit": "9.9"}}, packed)
    assert "gradekit 0.1.0 here, 9.9 on the client" in reply["refused"]
    reply = grade_packed({**task, "identity": ours, "options": {**task["options"], "data": "digits"},
                          "data_digest": "f" * 64}, packed)
    assert "the data of --data digits differ" in reply["refused"]
    reply = grade_packed({**task, "assignment": "no-such"}, packed)
    assert "cannot grade no-such" in reply["refused"]


def test_grade_options_travel_as_plain_values_and_come_back_equal(tmp_path):
    import json

    from grader.engine import GradeOptions

    options = GradeOptions(only=["elbo"], public_only=True, device="cpu", out_dir=tmp_path, data="digits",
                           model_overrides={"epochs": 2}, write_figures=False, threads=3, allow_unsandboxed=True,
                           left_out=["x.bin"], secret="0" * 32)
    plain = json.loads(json.dumps(options.to_dict()))  # nothing but JSON values in a task
    assert GradeOptions.from_dict(plain) == options
    assert GradeOptions.from_dict({}) == GradeOptions()
    with pytest.raises(ValueError, match="unknown grading option.*colour"):
        GradeOptions.from_dict({**plain, "colour": "red"})


def test_the_worker_grades_with_the_clients_options_and_its_own_opt_in(tmp_path, monkeypatch):
    """What grade_submission receives on a worker: the task's options, with out_dir, threads and left_out of
    the worker; `--allow-unsandboxed` from the client or the worker's own GRADEKIT_ALLOW_UNSANDBOXED=1."""
    import grader.engine
    from grader.engine import GradeOptions
    from grader.remote import grade_packed, grader_identity, pack_submission
    from grader.results import GradeResult
    from grader.rubric import available_rubrics
    from grader.sandbox.client import Zygote

    seen = []

    def fake_grade(submission, rubric, options):
        seen.append(options)
        return GradeResult(student=submission.name, assignment=rubric.id, tests=[])

    monkeypatch.setattr(grader.engine, "grade_submission", fake_grade)
    monkeypatch.setattr(Zygote, "shared", classmethod(lambda cls: type("Idle", (), {"launch": lambda self: None})()))
    monkeypatch.delenv("GRADEKIT_ALLOW_UNSANDBOXED", raising=False)
    rubric = available_rubrics()["vae"]
    sub = make_submission(tmp_path, "alice")
    os.symlink("/etc/passwd", sub / "passwd")
    packed = pack_submission(sub)
    client = GradeOptions(only=["elbo"], device="cpu", secret="1" * 32, allow_unsandboxed=True)
    task = {"student": "alice", "assignment": "vae", "identity": grader_identity(rubric), "options": client.to_dict()}
    assert grade_packed(task, packed)["ok"]
    got = seen[-1]
    assert (got.only, got.device, got.secret, got.allow_unsandboxed) == (["elbo"], "cpu", "1" * 32, True)
    assert got.left_out == ["passwd"] and got.threads >= 1 and got.out_dir is not None
    no = {**task, "options": GradeOptions(only=["elbo"]).to_dict()}
    assert grade_packed(no, packed)["ok"] and seen[-1].allow_unsandboxed is False
    monkeypatch.setenv("GRADEKIT_ALLOW_UNSANDBOXED", "1")
    assert grade_packed(no, packed)["ok"] and seen[-1].allow_unsandboxed is True


def test_data_digest_covers_the_files_read(tmp_path):
    from grader.remote import data_digest, resolve_data_spec

    assert data_digest(None) == ""
    assert len(data_digest("digits")) == 64
    mnist = Path("/work/shared/data/mnist")
    if not mnist.is_dir():
        pytest.skip("no MNIST files in /work/shared/data/mnist")
    here = data_digest(f"mnist:{mnist}")
    copy = tmp_path / "mnist"
    copy.mkdir()
    for p in mnist.iterdir():
        if p.is_file():
            (copy / p.name).write_bytes(p.read_bytes())
    assert data_digest(f"mnist:{copy}") == here
    victim = sorted(p for p in copy.iterdir() if "t10k-labels" in p.name)[0]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x01")
    assert data_digest(f"mnist:{copy}") != here
    os.chdir(tmp_path)
    assert resolve_data_spec("mnist:mnist") == f"mnist:{copy}"
    assert resolve_data_spec("digits") == "digits"


def test_reference_cache_entries_travel_as_verified_bytes(tmp_path, monkeypatch):
    import numpy as np

    from grader import model_cache

    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "a"))
    model_cache.store("k1", {"w": np.arange(6, dtype=np.float32)}, {"metrics": {"nll": 1.5}})
    exported = model_cache.export_entries()
    assert list(exported) == ["k1"]
    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "b"))
    tampered = dict(exported["k1"], meta=b'{"metrics": {"nll": 0.1}}')
    assert not model_cache.import_entry("k1", tampered) and model_cache.load("k1") is None
    assert not model_cache.import_entry("../k1", exported["k1"])
    assert model_cache.import_entry("k1", exported["k1"])
    hit = model_cache.load("k1")
    assert hit["meta"] == {"metrics": {"nll": 1.5}} and hit["state_dict"]["w"].tolist() == list(range(6))


def test_files_sent_back_cannot_leave_the_student_folder(tmp_path):
    from grader.remote import collect_files, write_files

    (tmp_path / "w" / "figures").mkdir(parents=True)
    (tmp_path / "w" / "figures" / "a.png").write_bytes(b"png")
    files, dropped = collect_files(tmp_path / "w")
    assert files == {"figures/a.png": b"png"} and dropped == []
    write_files(files, tmp_path / "out" / "alice")
    assert (tmp_path / "out" / "alice" / "figures" / "a.png").read_bytes() == b"png"
    for bad in ("../bob/results.json", "/etc/x", "figures/../../x"):
        with pytest.raises(ValueError, match="unsafe path"):
            write_files({bad: b"x"}, tmp_path / "out" / "alice")


@pytest.mark.slow
def test_wheel_is_a_complete_worker_with_the_checkouts_identity(tmp_path):
    """`pip wheel .` carries rubrics, templates, reference and static files, and its Python files are the
    checkout's: a worker installed from it has the identity of a client running from the checkout."""
    from grader.remote import grader_identity
    from grader.rubric import available_rubrics

    import shutil

    src = tmp_path / "src"  # a clean copy: a checkout's stale build/ would put deleted modules in the wheel
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "grader", "reference", "rubrics", "templates"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wheel = zipfile.ZipFile(next(tmp_path.glob("gradekit-*.whl")))
    names = set(wheel.namelist())
    for rubric in (REPO / "rubrics").glob("*.toml"):
        assert f"grader/rubrics/{rubric.name}" in names
    for t in (REPO / "templates").iterdir():
        assert f"grader/templates/{t.name}" in names
    assert "reference/vae.py" in names and "grader/serve/static/app.css" in names
    assert any(n.startswith("grader/authoring/templates/") for n in names)
    identity = grader_identity(available_rubrics()["vae"])
    in_wheel = {n: hashlib.sha256(wheel.read(n)).hexdigest() for n in names
                if n.endswith(".py") and n.startswith(("grader/", "reference/"))}
    in_wheel["rubrics/vae.toml"] = hashlib.sha256(wheel.read("grader/rubrics/vae.toml")).hexdigest()
    assert in_wheel == identity["files"]


def test_a_submission_of_countless_tiny_files_is_cut_short_with_a_message(tmp_path):
    """100 000 empty files (a 10 MB zip) cost 24 s of copying per grading, 12 s to pack and 22 s to unpack on a
    Dask worker, and as many inodes in its scratch folder: past MAX_COPY_ENTRIES a folder is left out whole,
    named once; the module beside it is still graded."""
    import time

    from grader.engine import submission_hash
    from grader.remote import pack_submission, unpack
    from grader.sandbox.client import MAX_COPY_ENTRIES

    sub = make_submission(tmp_path, "alice")
    (sub / "spam").mkdir()
    for i in range(MAX_COPY_ENTRIES + 10):
        (sub / "spam" / str(i)).touch()
    started = time.perf_counter()
    packed = pack_submission(sub)
    unpack(packed, tmp_path / "copy" / "alice")
    assert time.perf_counter() - started < 5
    assert sorted(packed.files) == ["vae.py"] and len(packed.left_out) == 1
    assert packed.left_out[0].startswith("spam/") and f"more than {MAX_COPY_ENTRIES}" in packed.left_out[0]
    assert packed.digest == submission_hash(sub) == submission_hash(tmp_path / "copy" / "alice")  # resume matches
