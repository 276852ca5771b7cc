"""`grade new` and `grade release` (grader/authoring/): scaffolding, starter code, the self-check bundle.

Nothing here writes into the repository: releases go to tmp_path, and the scaffolded assignment is
made in a temporary copy of the repository's layout.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import json
import re
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.authoring.release import ReleaseError, build_release, make_starter, public_checks_source, run_selfcheck, solution_blocks
from grader.authoring.replay import NotRecorded, Recorder, ReplayRef, merge
from grader.authoring.scaffold import ScaffoldError, scaffold

REPO = Path(__file__).resolve().parents[1]
SUBMISSIONS = REPO / "submissions"


# ---- starter code --------------------------------------------------------------------------------

SOURCE = textwrap.dedent('''\
    """Module docstring."""
    import torch

    CONST = 1


    def f(x, y=2):
        """f's contract."""
        # BEGIN SOLUTION
        z = x + y + 41
        return z
        # END SOLUTION


    class A:
        # BEGIN SOLUTION
        secret_attr = 7
        # END SOLUTION

        def m(self, x):
            """m's contract."""
            if x:
                ### BEGIN SOLUTION
                return x * 1234
                ### END SOLUTION
            return 2
    ''')


def test_starter_replaces_each_solution_block_by_a_todo_at_its_indentation():
    out = make_starter(SOURCE)
    assert '    raise NotImplementedError("TODO: implement f")' in out.splitlines()
    assert '            raise NotImplementedError("TODO: implement A.m")' in out.splitlines()
    assert "    pass  # TODO" in out.splitlines()  # a block outside any function
    for secret in ("41", "secret_attr", "1234", "SOLUTION"):
        assert secret not in out
    for kept in ('"""Module docstring."""', "import torch", "CONST = 1", "def f(x, y=2):", '"""f\'s contract."""',
                 "class A:", "def m(self, x):", "return 2"):
        assert kept in out
    module = types.ModuleType("starter")
    exec(compile(out, "starter.py", "exec"), module.__dict__)
    with pytest.raises(NotImplementedError, match="TODO: implement f"):
        module.f(1)
    with pytest.raises(NotImplementedError):
        module.A().m(1)
    assert module.A().m(0) == 2


@pytest.mark.parametrize("source, message", [
    ("def f():\n    return 1\n", "no `# BEGIN SOLUTION`"),
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    # END SOLUTION\n", "without a `# BEGIN SOLUTION`"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n", "inside the block"),
    ("def f():\n    if True:\n    # BEGIN SOLUTION\n        return 1\n    # END SOLUTION\n", "not valid Python"),
])
def test_starter_refuses_bad_markers_with_the_line(source, message):
    with pytest.raises(ReleaseError, match=re.escape(message)):
        make_starter(source, "ref.py")


# ---- recording and replaying the reference -------------------------------------------------------

FAKE_REFERENCE = '''
import torch
from torch import nn

SCALE = 2.0


def f(x, y=1.0):
    return torch.sin(x) * y


class Model(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.w = nn.Parameter(torch.randn(k))

    def score(self, x):
        return (x * self.w).sum(-1)
'''


def _fake_reference():
    module = types.ModuleType("fake_reference")
    exec(FAKE_REFERENCE, module.__dict__)
    return module


def _questions(ref, student_value: float, weights=(1.0, 2.0, 3.0, 4.0), bump=1.0):
    """What a check might ask the reference: constants, values, gradients, a model set up in place."""
    out = {"scale": ref.SCALE}
    t = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64, requires_grad=True)
    v = ref.f(t, y=3.0)
    (g,) = torch.autograd.grad((v * torch.arange(1.0, 5.0, dtype=torch.float64)).sum(), [t])  # any cotangent
    out["f"], out["grad"] = v.detach().numpy(), g.numpy()
    model = ref.Model(4)
    with torch.no_grad():
        model.w.copy_(torch.tensor(weights))
    out["score"] = model.score(torch.ones(2, 4)).detach().numpy()
    (g_w,) = torch.autograd.grad(2 * model.score(torch.ones(2, 4)).sum(), list(model.parameters()))
    out["param_grad"] = g_w.numpy()  # gradients w.r.t. the reference model's own parameters
    out["state"] = {k: v.numpy() for k, v in model.state_dict().items()}["w"]
    with torch.no_grad():  # the check changes the model's parameters in place
        list(model.parameters())[0].add_(bump)
    out["bumped"] = model.score(torch.ones(1, 4)).detach().numpy()
    out["from_student"] = ref.f(torch.tensor([student_value])).numpy()  # depends on the student's output
    return out


def test_replay_answers_what_was_recorded_gradients_included_and_refuses_the_rest():
    recorder = Recorder(_fake_reference())
    want = _questions(recorder.ref(), 1.0)
    records: dict = {}
    merge(records, recorder.export())
    assert all("import" not in json.dumps(v) for v in records.values())  # plain data only
    json.dumps(records)
    got = _questions(ReplayRef(records, recorder.arrays, "cpu").ref(), 1.0)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)
    np.testing.assert_allclose(want["grad"], 3.0 * np.cos([0.1, 0.2, 0.3, 0.4]) * np.arange(1, 5))
    np.testing.assert_array_equal(want["param_grad"], [4.0, 4.0, 4.0, 4.0])
    np.testing.assert_array_equal(want["bumped"], [14.0])
    with pytest.raises(NotRecorded, match=r"f\(\.\.\.\)"):
        _questions(ReplayRef(records, recorder.arrays, "cpu").ref(), 2.0)  # another student output
    with pytest.raises(NotRecorded, match=r"score\(\.\.\.\)"):  # changed in place by another amount
        _questions(ReplayRef(records, recorder.arrays, "cpu").ref(), 1.0, bump=2.0)
    with pytest.raises(NotRecorded, match=r"w\.copy_"):  # the model is set up with other weights
        _questions(ReplayRef(records, recorder.arrays, "cpu").ref(), 1.0, weights=(4.0, 3.0, 2.0, 1.0))
    assert issubclass(NotRecorded, BaseException) and not issubclass(NotRecorded, Exception)


def test_replay_refuses_questions_whose_recorded_answers_disagree():
    """Two runs answering one key differently (here: a random initialisation) make it ambiguous."""
    records: dict = {}
    arrays: dict = {}
    for _ in range(2):
        recorder = Recorder(_fake_reference())
        recorder.ref().Model(3).score(torch.ones(3)).detach()
        merge(records, recorder.export())
        arrays.update(recorder.arrays)
    with pytest.raises(NotRecorded):
        ReplayRef(records, arrays, "cpu").ref().Model(3).score(torch.ones(3))


# ---- the public checks shipped ----------------------------------------------------------------

def test_public_checks_source_holds_public_checks_and_their_helpers_only(vae_rubric):
    source = public_checks_source(vae_rubric)
    tree = ast.parse(source)
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    public = {"check_" + c.check for c in vae_rubric.checks if c.public}
    hidden = {"check_" + c.check for c in vae_rubric.checks if not c.public}
    assert public <= defined
    assert not hidden & defined
    for private in ("model_level", "_standard_normal_tests", "_mog_sample_matches", "_empirical_std_distance",
                    "FALSE_FAILURE_RATE", "preflight", "reference."):
        assert private not in source


CRAFTED_CHECKS = """
from __future__ import annotations
import math
import numpy as np
from grader.checks import CheckContext, tensor

SHARED = 3
PRIVATE = 7


def _shared(x):
    return x * SHARED


def _private(x):
    return x + PRIVATE


def check_public_one(ctx: CheckContext) -> None:
    ctx.expect(_shared(1) == 3, "shared helper")


def check_hidden_one(ctx: CheckContext) -> None:
    ctx.expect(_private(_shared(1)) == 10, "private helper")


def check_reads_reference(ctx: CheckContext) -> None:
    from reference import vae
    ctx.expect(vae is not None, "x")


def check_needs_grader_data(ctx: CheckContext) -> None:
    from grader.data import load_dataset
    ctx.expect(load_dataset is not None, "x")
"""


def test_public_checks_source_drops_hidden_code_and_refuses_what_cannot_be_shipped(tmp_path, monkeypatch, vae_rubric):
    from grader.rubric import CheckSpec

    (tmp_path / "crafted_checks_mod.py").write_text(CRAFTED_CHECKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = lambda name, vis: CheckSpec(id=name, name=name, component="c", check=name, points=1, visibility=vis)
    rubric = dataclasses.replace(vae_rubric, checks_module="crafted_checks_mod", checks=(
        spec("public_one", "public"), spec("hidden_one", "hidden"), spec("reads_reference", "public"),
        spec("needs_grader_data", "public")))
    source = public_checks_source(rubric, {"check_public_one"})
    assert "def check_public_one" in source and "def _shared" in source and "SHARED = 3" in source
    for gone in ("check_hidden_one", "_private", "PRIVATE", "import math", "tensor"):
        assert gone not in source, gone
    with pytest.raises(ReleaseError, match="cannot ship reference code"):
        public_checks_source(rubric, {"check_reads_reference"})
    with pytest.raises(ReleaseError, match="grader.data, which the self-check bundle does not ship"):
        public_checks_source(rubric, {"check_needs_grader_data"})


# ---- the release of `vae` --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vae_made(tmp_path_factory, vae_rubric):
    out = tmp_path_factory.mktemp("release") / "vae"
    # Recorded on the reference alone: bob's and alice's runs below must need nothing else.
    return build_release(vae_rubric, out, record_with=[], verify=True)


@pytest.fixture(scope="module")
def vae_release(vae_made):
    return vae_made.out


def test_release_of_vae_runs_every_public_check_offline(vae_made, vae_rubric):
    assert vae_made.public_checks == [c.id for c in vae_rubric.checks if c.public]
    assert vae_made.not_offline == {} and vae_made.student_dependent == []
    assert vae_made.recorded_with == ["reference-solution"]


def _text_files(folder: Path):
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix != ".npz":
            yield p, p.read_text(encoding="utf-8")


def assert_no_leaks(release: Path, rubric, min_solution_lines: int) -> None:
    """No file of the release holds a solution line of the reference, a hidden check (function or
    name), a mistake's message or an import of `reference`."""
    reference = (REPO / rubric.reference.replace(".", "/")).with_suffix(".py").read_text()
    lines = reference.splitlines()
    solution = {l.strip() for b, e, _ in solution_blocks(reference) for l in lines[b:e - 1]
                if len(l.strip()) >= 8 and not l.strip().startswith("#")}
    assert len(solution) >= min_solution_lines, "the reference marks too little as solution"
    hidden = [c for c in rubric.checks if not c.public]
    for path, text in _text_files(release):
        found = solution & {l.strip() for l in text.splitlines()}
        assert not found, f"{path} holds solution lines {found}"
        assert "BEGIN SOLUTION" not in text or path.name == "README.md"
        for c in hidden:
            assert not re.search(rf"\bcheck_{c.check}\b", text), f"{path} names hidden check_{c.check}"
            assert c.name not in text, f"{path} names hidden check {c.name!r}"
        for m in rubric.mistakes:
            assert m.message not in text, f"{path} holds the message of mistake {m.id}"
        assert not re.search(r"^\s*(from|import)\s+reference\b", text, re.M), path


@pytest.mark.parametrize("assignment", ["kmeans-autoencoder", "density-models", "amortized-vs-lo"])
def test_every_assignment_releases_without_leaking_solutions(tmp_path, assignment):
    """The other assignments' releases: starter code imports, and nothing secret is shipped."""
    from grader.rubric import available_rubrics

    rubric = available_rubrics()[assignment]
    made = build_release(rubric, tmp_path / assignment, record_with=[], verify=False)
    assert made.public_checks, "no public check made it into the self-check bundle"
    assert_no_leaks(made.out, rubric, min_solution_lines=10)
    starter = made.out / rubric.module
    assert _todos(starter.read_text()), "the starter code has no TODO"


def test_release_holds_no_solution_mutant_or_hidden_check(vae_release, vae_rubric):
    names = {p.relative_to(vae_release).as_posix() for p in vae_release.rglob("*") if p.is_file()}
    assert {"vae.py", "answers.md", "README.md", "selfcheck.py", "_selfcheck/rubric.json",
            "_selfcheck/recordings.json", "_selfcheck/recordings.npz", "_selfcheck/vae_public_checks.py"} <= names
    assert not any(n.startswith("reference") or "/reference" in n or "mistakes" in n for n in names), names
    assert not any(re.search(r"(^|/)(training|evaluation|model_cache|data|figures)\.py$", n) for n in names)
    assert not any("harnesses" in n or n.endswith("model_level.py") for n in names)

    assert_no_leaks(vae_release, vae_rubric, min_solution_lines=30)
    rubric_json = json.loads((vae_release / "_selfcheck" / "rubric.json").read_text())
    assert [c["id"] for c in rubric_json["checks"]] == [c.id for c in vae_rubric.checks if c.public]
    assert set(rubric_json) == {"format", "assignment", "limits", "checks"}
    assert set(rubric_json["assignment"]) == {"id", "title", "course", "module", "answers", "checks"}
    from grader.engine import parse_answers

    answers = vae_release / "answers.md"
    assert [f"## {q.id}" for q in vae_rubric.questions] == re.findall(r"^## Q\d+", answers.read_text(), re.M)
    assert parse_answers(answers) == {q.id: "" for q in vae_rubric.questions}  # the template answers nothing


def _todos(starter: str) -> list[str]:
    return re.findall(r'raise NotImplementedError\("TODO: implement ([\w.]+)"\)', starter)


def test_starter_imports_keeps_the_api_and_every_todo_raises(vae_release):
    from reference import vae as ref

    path = vae_release / "vae.py"
    spec = importlib.util.spec_from_file_location("_starter_vae", path)
    starter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(starter)
    todos = _todos(path.read_text())
    assert {"log_normal_diag", "Encoder.reparameterization", "MoGPrior.log_prob", "VAE.forward"} <= set(todos)
    for qualname in todos:
        owner_name, _, fn_name = qualname.rpartition(".")
        owner = getattr(starter, owner_name) if owner_name else starter
        fn = inspect.getattr_static(owner, fn_name)
        ref_fn = inspect.getattr_static(getattr(ref, owner_name) if owner_name else ref, fn_name)
        fn, ref_fn = getattr(fn, "__func__", fn), getattr(ref_fn, "__func__", ref_fn)
        assert inspect.signature(fn) == inspect.signature(ref_fn), qualname
        assert fn.__doc__ == ref_fn.__doc__, qualname
        params = [p for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty]
        args = [object.__new__(owner) if (owner_name and p.name == "self") else None for p in params]
        with pytest.raises(NotImplementedError, match=f"TODO: implement {re.escape(qualname)}"):
            fn(*args)
    # What is not a TODO is kept as it is: constructors, helpers, constants.
    assert starter.EPS == ref.EPS and starter._reduce(torch.ones(2, 3), "sum", 1).tolist() == [3.0, 3.0]
    assert isinstance(starter.MoGPrior(4, 3), torch.nn.Module)


def test_selfcheck_passes_alice_on_every_public_check(vae_release, vae_rubric):
    report = run_selfcheck(vae_release, SUBMISSIONS / "alice")
    assert report["returncode"] == 0, report
    assert report["bundle_root"] == str((vae_release / "_selfcheck").resolve())
    assert report["outside_modules"] == []  # nothing from the repository (no reference, no grader of the repo)
    assert [c["id"] for c in report["checks"]] == [c.id for c in vae_rubric.checks if c.public]
    assert all(c["status"] == "passed" for c in report["checks"]), report["checks"]


def test_selfcheck_fails_bob_where_grade_check_does(vae_release, vae_rubric):
    from grader.engine import GradeOptions, grade_submission

    report = run_selfcheck(vae_release, SUBMISSIONS / "bob" / "vae.py")  # a file path works too
    check = grade_submission(SUBMISSIONS / "bob", vae_rubric, GradeOptions(public_only=True, device="cpu"))
    # (the self-check ships no mistake library, so it cannot tell that several failures are one named mistake:
    # where grade check charges that mistake once (grader/charging.py) and gives the others their points back,
    # the self-check still shows them failing; every other check scores the same)
    refunded = {t.check for t in check.tests for d in t.charged_once if d["charged_in"] != t.check}
    offline = {c["id"]: c["score"] for c in report["checks"] if c["id"] not in refunded}
    online = {t.check: t.score for t in check.tests if t.check not in refunded}
    assert offline == online
    failed = {c["id"] for c in report["checks"] if c["status"] != "passed" and c["id"] not in refunded}
    assert failed == {t.check for t in check.tests if t.status != "passed" and t.check not in refunded}
    assert {"log_normal_diag.values", "mog_prior.log_prob.values"} <= failed
    assert report["returncode"] == 1
    assert not any(c["status"] == "not checked offline" for c in report["checks"])
    # A composite check failing after other components failed says that the course's grader, which can
    # name those mistakes, does not charge them twice (the self-check cannot name mistakes).
    mog = next(c for c in report["checks"] if c["id"] == "mog_prior.log_prob.values")
    assert "log_normal_diag" in mog["failed_upstream"] and "does not charge a mistake twice" in mog["output"]
    assert all(not c["failed_upstream"] for c in report["checks"] if c["id"].startswith("log_normal_diag"))


def test_selfcheck_accepts_a_notebook_and_scores_it_like_the_module(vae_release, tmp_path):
    from tests.notebook_helpers import notebook_from_module, write_notebook

    nb = write_notebook(notebook_from_module((SUBMISSIONS / "bob" / "vae.py").read_text()), tmp_path / "hw2.ipynb")
    as_notebook = run_selfcheck(vae_release, nb)
    as_module = run_selfcheck(vae_release, SUBMISSIONS / "bob" / "vae.py")
    assert as_notebook["outside_modules"] == []
    assert {c["id"]: c["score"] for c in as_notebook["checks"]} == {c["id"]: c["score"] for c in as_module["checks"]}
    assert as_notebook["returncode"] == 1


def test_selfcheck_on_the_starter_fails_every_check_with_the_todo(vae_release, vae_rubric):
    report = run_selfcheck(vae_release, vae_release / "vae.py")
    assert report["returncode"] == 1
    assert all(c["status"] == "failed" and c["score"] == 0 for c in report["checks"]), report["checks"]
    assert sum("NotImplementedError: TODO" in c["output"] for c in report["checks"]) >= 10


def test_release_refuses_a_reference_without_markers_and_an_existing_folder(tmp_path, vae_rubric, vae_release):
    unmarked = dataclasses.replace(vae_rubric, reference="reference.vae_mistakes")
    with pytest.raises(ReleaseError, match="no `# BEGIN SOLUTION` / `# END SOLUTION` blocks"):
        build_release(unmarked, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ReleaseError, match="not empty"):
        build_release(vae_rubric, vae_release)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ReleaseError, match="not a release folder"):
        build_release(vae_rubric, tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ---- grade new -------------------------------------------------------------------------------------

def _repo_copy(root: Path) -> Path:
    """The repository's layout with no assignment: grader/, reference/__init__.py, empty rubrics/."""
    shutil.copytree(REPO / "grader", root / "grader", ignore=shutil.ignore_patterns("__pycache__"))
    for d in ("reference", "rubrics", "tests", "submissions"):
        (root / d).mkdir()
    shutil.copyfile(REPO / "reference" / "__init__.py", root / "reference" / "__init__.py")
    shutil.copyfile(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize("name, message", [
    ("Bad", "bad assignment name"), ("1abc", "bad assignment name"), ("a", "bad assignment name"),
    ("x--y", "bad assignment name"), ("../evil", "bad assignment name"), ("math", "Python or gradekit"),
    ("grader", "Python or gradekit"), ("torch", "shadows the installed module"), ("test-me", "reserved"),
])
def test_new_refuses_bad_names(tmp_path, name, message):
    (tmp_path / "reference").mkdir()
    (tmp_path / "grader" / "checks").mkdir(parents=True)
    with pytest.raises(ScaffoldError, match=re.escape(message)):
        scaffold(name, root=tmp_path)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_new_never_overwrites(tmp_path):
    (tmp_path / "reference").mkdir()
    (tmp_path / "grader" / "checks").mkdir(parents=True)
    made = scaffold("demo", root=tmp_path)
    assert len(made.files) == 10  # reference, mistakes, checks, model half, harness, rubric, examples, test
    before = {p: p.read_text() for p in made.files}
    with pytest.raises(ScaffoldError, match="refusing to overwrite"):
        scaffold("demo", root=tmp_path)
    (made.files[2]).unlink()  # one file gone: the others still block, nothing is rewritten
    with pytest.raises(ScaffoldError, match="refusing to overwrite"):
        scaffold("demo", root=tmp_path)
    assert {p: p.read_text() for p in made.files if p.exists()} == {p: t for p, t in before.items() if p.exists()}
    with pytest.raises(ScaffoldError, match="already defines"):  # the rubric file of another name holds the id
        (tmp_path / "rubrics" / "other.toml").write_text('[assignment]\nid = "demo-two"\n')
        scaffold("demo-two", root=tmp_path)


EXTRA_CHECKS = """

def check_uses_data(ctx):
    from grader.data import load_dataset
    ctx.expect(True, "data")


def check_on_own_output(ctx):
    x = np.linspace(-1, 1, 6, dtype="float32").reshape(2, 3)
    got = tensor(ctx.call("log_normal", x, x * 0, x * 0)["result"], "log_normal", dtype="float32")
    again = ctx.ref.log_normal(to_torch(got, ctx.device), to_torch(x * 0, ctx.device), to_torch(x * 0, ctx.device))
    ctx.expect(bool(np.isfinite(again.cpu().numpy()).all()), "the reference on your output is finite")
"""
EXTRA_RUBRIC = """
[[checks]]
id = "log_normal.data"
name = "needs data"
component = "log_normal"
check = "uses_data"
points = 1

[[checks]]
id = "log_normal.own_output"
name = "asks the reference about the submission's output"
component = "log_normal"
check = "on_own_output"
points = 1
"""
OTHER = """import math
import torch


def log_normal(x, mu, log_var):
    return (-0.5 * math.log(2 * math.pi) - 0.5 * log_var - 0.5 * (x - mu) ** 2 / torch.exp(log_var)) * (1 + 1e-6)
"""


SCAFFOLD_SCRIPT = r'''
import json, sys
from tests_extra import EXTRA_CHECKS, EXTRA_RUBRIC, OTHER
from pathlib import Path
from grader.authoring.release import build_release, run_selfcheck
from grader.engine import GradeOptions, grade_submission
from grader.rubric import available_rubrics, lint_rubric
import grader
assert Path(grader.__file__).resolve().parents[1] == Path.cwd().resolve(), grader.__file__
rubric = available_rubrics()["demo-gen"]
lint = lint_rubric(rubric)
result = grade_submission(Path("submissions/demo-gen-example"), rubric, GradeOptions(device="cpu"))
# Two more public checks: one the bundle cannot ship (it needs the data module), one that asks the
# reference about the submission's own output.
with open("grader/checks/demo_gen.py", "a") as f:
    f.write(EXTRA_CHECKS)
with open("rubrics/demo-gen.toml", "a") as f:
    f.write(EXTRA_RUBRIC)
other = Path("other")  # right to 1e-6: passes the values check, but its output is not the recorded one
other.mkdir()
(other / "demo_gen.py").write_text("from reference_copy import *\n" if False else OTHER)
rubric = available_rubrics()["demo-gen"]
release = build_release(rubric, Path("release/demo-gen"))  # records with the example, verifies on the reference
report = run_selfcheck(release.out, Path("submissions/demo-gen-example/demo_gen.py"))
report_other = run_selfcheck(release.out, other)
print(json.dumps({"lint": lint, "score": result.autograded_score, "max": result.autograded_max,
                  "errors": result.errors, "recorded_with": release.recorded_with,
                  "not_offline": release.not_offline, "returncode": report["returncode"],
                  "student_dependent": release.student_dependent,
                  "selfcheck": {c["id"]: c["status"] for c in report["checks"]},
                  "other": {c["id"]: [c["status"], c["output"]] for c in report_other["checks"]},
                  "other_returncode": report_other["returncode"],
                  "starter": Path("release/demo-gen/demo_gen.py").read_text()}))
'''


def test_new_scaffolds_an_assignment_that_lints_grades_full_marks_and_releases(tmp_path):
    root = _repo_copy(tmp_path / "repo")
    # PYTHONPATH: the sandbox's children import the copy's grader too (its new harness, grader/harnesses/demo_gen.py)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(root)}
    new = subprocess.run([sys.executable, "-m", "grader.cli", "new", "demo-gen", "--title", "A demo"],
                         cwd=root, capture_output=True, text=True, env=env, timeout=60)
    assert new.returncode == 0, new.stdout + new.stderr
    assert "created rubrics/demo-gen.toml" in new.stdout
    again = subprocess.run([sys.executable, "-m", "grader.cli", "new", "demo-gen"], cwd=root, capture_output=True,
                           text=True, env=env, timeout=60)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    skeleton = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/test_grading_demo_gen.py"], cwd=root, capture_output=True, text=True, env=env,
                              timeout=420)
    assert skeleton.returncode == 0 and "3 passed" in skeleton.stdout, skeleton.stdout[-3000:] + skeleton.stderr[-2000:]
    (root / "tests_extra.py").write_text(f"EXTRA_CHECKS = {EXTRA_CHECKS!r}\nEXTRA_RUBRIC = {EXTRA_RUBRIC!r}\nOTHER = {OTHER!r}\n")
    run = subprocess.run([sys.executable, "-c", SCAFFOLD_SCRIPT], cwd=root, capture_output=True, text=True, env=env,
                         timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["lint"] == [] and not out["errors"]
    # three unit points, the model level (grader/checks/demo_gen_model.py) and log_normal's declared properties (0.95)
    assert out["score"] == out["max"] == 4.95
    assert out["recorded_with"] == ["reference-solution", "demo-gen-example"]
    assert out["selfcheck"] == {"log_normal.values": "passed", "log_normal.data": "not checked offline",
                                "log_normal.own_output": "passed"}  # the example's run was recorded
    assert list(out["not_offline"]) == ["log_normal.data"] and "grader.data" in out["not_offline"]["log_normal.data"]
    assert out["returncode"] == 3  # nothing failed, but not everything could be checked offline
    assert set(out["student_dependent"]) <= {"log_normal.own_output"}
    other = out["other"]
    assert other["log_normal.values"][0] == "passed"
    assert other["log_normal.own_output"][0] == "not checked offline"  # never a pass it cannot vouch for
    assert "course's grader" in other["log_normal.own_output"][1] and "log_normal(...)" in other["log_normal.own_output"][1]
    assert out["other_returncode"] == 3
    assert 'raise NotImplementedError("TODO: implement log_normal")' in out["starter"]
    assert "torch.exp(-log_var)" not in out["starter"]
    assert not (REPO / "rubrics" / "demo-gen.toml").exists() and not (REPO / "reference" / "demo_gen.py").exists()


def test_student_dependent_checks_are_the_ones_asking_other_questions_for_a_passing_example():
    from grader.authoring.release import student_dependent

    test = lambda check, status: types.SimpleNamespace(check=check, status=status)
    results = {"ref": types.SimpleNamespace(tests=[test("a", "passed"), test("b", "passed"), test("c", "passed")]),
               "ex1": types.SimpleNamespace(tests=[test("a", "passed"), test("b", "passed"), test("c", "failed")]),
               "ex2": types.SimpleNamespace(tests=[test("a", "passed"), test("b", "failed"), test("c", "failed")])}
    asked = {"ref": {"a": {"k1"}, "b": {"k2"}, "c": {"k3"}},
             "ex1": {"a": {"k1"}, "b": {"k2", "k9"}, "c": {"k8"}},  # c failed: its other questions do not count
             "ex2": {"a": {"k1"}, "b": {"k7"}, "c": {"k3"}}}
    assert student_dependent(results, asked, "ref") == ["b"]


def test_cli_reports_bad_usage_with_exit_status_2():
    from click.testing import CliRunner

    from grader.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["release", "no-such-assignment"])
    assert r.exit_code == 2 and "unknown assignment 'no-such-assignment'" in r.output
    r = runner.invoke(main, ["new", "Bad Name"])
    assert r.exit_code == 2 and "bad assignment name" in r.output
    r = runner.invoke(main, ["new", "vae"])  # the repository already has it: nothing is written
    assert r.exit_code == 2 and "refusing to overwrite" in r.output
