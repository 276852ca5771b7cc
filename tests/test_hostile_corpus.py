"""The hostile corpus (tests/submissions/, one attack per folder, see each README) graded as one class.

A copy of the corpus plus a correct classmate (`alice`) is batch-graded with two workers and
reports on: the batch completes, every attack gets the score its README states, the grader's
files, the classmate's files and results are untouched, and nothing is left running.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import HOSTILE, REPO, SUBMISSIONS

pytestmark = pytest.mark.slow

EVERYTHING = "*"
# attack -> (components that must score 0 (or lose points, for wrong_types), words the feedback must contain)
ZERO = {
    "syntax_error": (EVERYTHING, "SyntaxError"),
    "import_error": (EVERYTHING, "not_a_real_module_xyz"),
    "exit_at_import": (EVERYTHING, "exit"),
    "infinite_loop_import": (EVERYTHING, "time"),
    "os_exit_in_call": ({"log_bernoulli"}, "exit"),
    "segfault_in_call": ({"log_standard_normal"}, "segmentation fault"),
    "infinite_loop_call": ({"mog_prior.log_prob", "elbo"}, "time limit"),
    # on a busy machine the 3 s call limit may strike before the memory limit: both end the call
    "memory_bomb": ({"log_categorical"}, "memory|time limit"),
    "monkeypatch_allclose": ({"log_normal_diag"}, ""),
    "lying_tensor": ({"log_normal_diag", "log_standard_normal"}, ""),
    "reads_reference": ({"log_normal_diag"}, ""),
}
LOSES = {"wrong_types": {"log_normal_diag", "log_standard_normal", "encoder", "mog_prior.log_prob"}}
FULL = {"alice", "escape_privileges", "fork_bomb_orphans", "huge_output", "network", "slow_but_correct", "writes_outside", "pickle_checkpoint"}
PWNED = [Path("/tmp/gradekit_pwned"), Path("/tmp/gradekit_pickle_pwned")]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def sleepers() -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return sum(line.strip() == "sleep 300" for line in out.splitlines())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from grader.batch import grade_batch
    from grader.engine import GradeOptions
    from grader.rubric import available_rubrics

    tmp = tmp_path_factory.mktemp("hostile")
    root, out = tmp / "class", tmp / "reports"  # writes_outside aims at ../alice and ../../reports/alice
    shutil.copytree(HOSTILE, root, ignore=shutil.ignore_patterns("__pycache__", "README.md"))
    shutil.copytree(SUBMISSIONS / "alice", root / "alice")
    rubrics = tmp / "rubrics"
    rubrics.mkdir()
    text = (REPO / "rubrics" / "vae.toml").read_text()
    assert "call_timeout_s = 20" in text
    (rubrics / "vae.toml").write_text(text.replace("call_timeout_s = 20", "call_timeout_s = 3"))
    for p in PWNED:
        p.unlink(missing_ok=True)
    before = {"class": digest(root), "corpus": digest(HOSTILE), "grader": digest(REPO / "reference"),
              "sleepers": sleepers()}
    units = [c for c in available_rubrics(rubrics)["vae"].components if c != "model"]
    summary = grade_batch(root, out, GradeOptions(only=units), jobs=2, rubrics_dir=rubrics)
    results = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/results.json")}
    return root, out, before, summary, results


def by_component(result: dict, values_only: bool = False) -> dict[str, tuple[float, float, str]]:
    """{component: (score, max, feedback)}; `values_only` leaves out the gradient and declared-property
    checks, which judge what the code genuinely does (a constant offset leaves its gradients right), never
    the values an attack lies about."""
    out: dict[str, list] = {}
    for t in result["tests"]:
        c = t["extra_data"]["component"]
        check = t["extra_data"].get("check", "")
        if values_only and (".property." in check or check.endswith(".gradients")):
            continue
        s, m, o = out.setdefault(c, [0.0, 0.0, ""])
        out[c] = [s + t["score"], m + t["max_score"], o + "\n" + t.get("output", "")]
    return {c: tuple(v) for c, v in out.items()}


def test_the_batch_completes_with_a_result_and_a_report_for_everyone(corpus):
    root, out, _, summary, results = corpus
    assert not summary.interrupted
    assert {o.student for o in summary.outcomes} == {p.name for p in root.iterdir() if p.is_dir()}
    assert not summary.failed, [(o.student, o.message) for o in summary.failed]
    assert set(results) == set(ZERO) | set(LOSES) | FULL
    for student in results:
        assert (out / student / "report.pdf").stat().st_size > 10_000, f"{student}: no report"


@pytest.mark.parametrize("attack", sorted(ZERO))
def test_an_attack_scores_zero_where_it_cheats_and_full_marks_elsewhere(corpus, attack):
    zero, words = ZERO[attack]
    comps = by_component(corpus[4][attack])
    values = by_component(corpus[4][attack], values_only=True)
    for c, (score, max_score, output) in comps.items():
        if zero == EVERYTHING or c in zero:
            # the cheat earns nothing: every value check of the component scores 0 (a lie about the values
            # changes no gradient or dtype, so the property checks judge the code's own maths, e.g. an offset)
            score, max_score, output = values.get(c, (0.0, 0.0, output))
            assert score == 0, f"{attack}: {c} earned {score}/{max_score} it did not deserve:{output}"
            assert re.search(words, output, re.IGNORECASE), f"{attack}: {c} feedback lacks {words!r}:{output}"
        else:
            assert score == max_score, f"{attack}: {c} lost points for an attack elsewhere:{output}"


def test_wrong_types_lose_points_with_a_message_naming_the_type(corpus):
    comps = by_component(corpus[4]["wrong_types"])
    for c, (score, max_score, output) in comps.items():
        if c in LOSES["wrong_types"]:
            assert score < max_score and re.search(r"must return|shape|type", output), (c, output)
        else:
            assert score == max_score, (c, output)


@pytest.mark.parametrize("student", sorted(FULL))
def test_correct_maths_behind_side_effects_gets_full_marks(corpus, student):
    lost = [t["output"] for t in corpus[4][student]["tests"] if t["score"] < t["max_score"]]
    assert corpus[4][student]["tests"] and not lost, lost


def test_nothing_outside_the_sandbox_was_touched_and_nothing_left_running(corpus):
    root, out, before, _, results = corpus
    assert digest(root) == before["class"], "a submission folder changed during grading"
    assert digest(HOSTILE) == before["corpus"]
    assert digest(REPO / "reference") == before["grader"]
    assert not any(p.exists() for p in PWNED)
    assert sleepers() <= before["sleepers"], "a student's `sleep 300` outlived its grading"
    fake = results["writes_outside"]["extra_data"]["gradekit"]
    assert "All tests passed" in fake["student_output"]  # quoted as the student's output, nothing more
    assert all(t["score"] == t["max_score"] for t in results["alice"]["tests"])
    assert len(results["huge_output"]["extra_data"]["gradekit"]["student_output"]) < 200_000
    escape = results["escape_privileges"]["extra_data"]["gradekit"]["student_output"]
    assert "[escape] 0 attempts succeeded" in escape, escape
