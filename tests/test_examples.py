"""The example submissions shipped in submissions/ grade as documented in the README."""

from __future__ import annotations

import pytest

from grader.engine import GradeOptions, grade_submission
from tests.conftest import SUBMISSIONS, unit_tags, lost_points as lost, named_mistakes as named


@pytest.fixture(scope="module")
def graded(vae_rubric):
    opts = GradeOptions(device="cpu", only=unit_tags(vae_rubric))
    return {name: grade_submission(SUBMISSIONS / name, vae_rubric, opts) for name in ("alice", "bob", "carol", "judy", "ken")}


def test_alice_written_differently_but_correct_gets_full_marks(graded):
    alice = graded["alice"]
    assert lost(alice) == {}, [(t.check, t.output) for t in alice.tests if t.status != "passed"]
    assert all(q.answer for q in alice.questions)


def test_bob_loses_points_exactly_where_his_four_mistakes_are_and_each_is_named(graded):
    bob = graded["bob"]
    assert set(lost(bob)) == {"log_normal_diag", "reparameterization", "mog_prior.log_prob", "elbo"}
    assert named(bob) == {"missing_log2pi", "variance_squared", "weights_not_normalised", "kl_wrong_sign"}
    assert [q.id for q in bob.questions if q.answer] == ["Q1", "Q2", "Q3", "Q4"]


def test_carol_broken_parts_get_zero_with_clear_messages_and_the_rest_is_graded(graded):
    carol = graded["carol"]
    by = {}
    for t in carol.tests:
        by.setdefault(t.component, []).append(t)
    text = lambda c: " ".join(t.output for t in by[c])
    assert sum(t.score for t in by["log_categorical"]) == 0 and "`log_categorical` is missing" in text("log_categorical")
    assert sum(t.score for t in by["log_bernoulli"]) == 0 and "NaN" in text("log_bernoulli")
    assert sum(t.score for t in by["mog_prior.sample"]) == 0 and "numpy" in text("mog_prior.sample")
    assert "NotImplementedError: TODO" in text("decoder")
    for ok in ("log_normal_diag", "log_standard_normal", "reparameterization", "encoder", "mog_prior.log_prob"):
        assert all(t.status == "passed" for t in by[ok]), ok


def test_judy_notebook_grades_like_alice_module_with_answers_from_its_markdown_cells(graded):
    judy, alice = graded["judy"], graded["alice"]
    assert lost(judy) == {} and judy.autograded_score == alice.autograded_score
    assert judy.submission["module_from"] == "vae_priors.ipynb" and judy.submission["answers_from"].endswith("(markdown cells)")
    assert all(q.answer for q in judy.questions)
    assert {lo["cell"] for lo in judy.submission["left_out"]} >= {2, 3}  # pip/magic cell, Colab mount


def test_ken_notebook_loses_bobs_points_and_his_answers_come_from_the_pdf_report(graded):
    ken, bob = graded["ken"], graded["bob"]
    assert lost(ken) == lost(bob) and named(ken) == named(bob)
    assert ken.submission["answers_from"] == "report.pdf"
    assert [q.id for q in ken.questions if q.answer] == ["Q1", "Q2", "Q3", "Q4", "Q5", "Q6"]
    assert ken.questions[4].answer.startswith("-ELBO = -E_q[log p(x|z)]")


@pytest.mark.parametrize("secret", ["053cae13c461457e0d67ff50e6c41787",  # once left kl_wrong_sign unnamed
                                    "a963fd532c1e99cfb01277f3d8c04b74",  # once left weights_not_normalised unnamed
                                    "0" * 32, "f" * 32])                 # in the 'far' check (charged twice: 3.0)
def test_bobs_mistakes_are_named_and_charged_once_whatever_the_checks_inputs(vae_rubric, secret):
    """Each run draws fresh inputs (grader/checks/inputs.py): naming and charging must not depend on them."""
    bob = grade_submission(SUBMISSIONS / "bob", vae_rubric,
                           GradeOptions(device="cpu", only=["elbo", "mog_prior.log_prob"], secret=secret))
    assert named(bob) == {"kl_wrong_sign", "weights_not_normalised"} and \
        lost(bob) == {"elbo": 2.0, "mog_prior.log_prob": 2.0}, [(t.name, t.output) for t in bob.tests if t.status != "passed"]
