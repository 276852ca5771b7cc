"""A constructor that fails (the course notebook's NameError in `MoGPrior.__init__`) is charged once, on its
class's components; the composite and the trained-model checks that need such an object say why they could
not run and earn the student's rate on the checks that ran (so the mistake is not charged again, and breaking
a constructor on purpose earns nothing). Never an internal grader error."""

from __future__ import annotations

import pytest

from grader.engine import GradeOptions, grade_submission
from tests.conftest import REPO
from tests.notebook_helpers import notebook_from_module, write_notebook

TINY = {"max_epochs": 2, "M": 32, "K": 5, "time_budget_s": 20, "L": 4, "num_components": 2}
CORRECT = "def __init__(self, L, num_components, multiplier=1.0):"
BROKEN = "def __init__(self, L, num_components):"  # `multiplier` used in the body, never defined: NameError


def _notebook(tmp_path):
    source = (REPO / "reference" / "vae.py").read_text()
    assert CORRECT in source
    folder = tmp_path / "course_notebook"
    write_notebook(notebook_from_module(source.replace(CORRECT, BROKEN)), folder / "vae_priors_example.ipynb")
    return folder


@pytest.fixture(scope="module")
def graded(tmp_path_factory, vae_rubric):
    folder = _notebook(tmp_path_factory.mktemp("ctor"))
    opts = GradeOptions(device="cpu", only=["log_normal_diag", "mog_prior.log_prob", "mog_prior.sample", "elbo",
                                            "model"], model_overrides=TINY)
    return grade_submission(folder, vae_rubric, opts)


def test_the_constructor_mistake_is_charged_on_the_prior_only(graded):
    by = {}
    for t in graded.tests:
        by.setdefault(t.component, []).append(t)
    assert all(t.score == 0 for c in ("mog_prior.log_prob", "mog_prior.sample") for t in by[c])
    assert all("NameError" in t.output and "multiplier" in t.output for t in by["mog_prior.log_prob"])
    for c in ("elbo", "model"):
        for t in by[c]:
            # log_normal_diag, the one other check that ran, is right: the rate is 100 %
            assert t.score == pytest.approx(t.max_score) and t.error == "blocked", (t.check, t.output)
            assert t.output.startswith("Not judged") and "`MoGPrior`" in t.output and "not charged" in t.output
            assert "rate on the checks that ran (100%" in t.output
    assert not any("internal" in e for e in graded.errors), graded.errors
    assert not any(t.error == "internal" for t in graded.tests)


def test_without_the_prior_checks_the_composite_is_charged_where_it_fails(tmp_path, vae_rubric):
    """The child's say-so alone never earns credit: a class not found broken by its own checks costs points."""
    result = grade_submission(_notebook(tmp_path), vae_rubric, GradeOptions(device="cpu", only=["elbo"]))
    assert result.tests and all(t.score == 0 and t.error == "exception" for t in result.tests)
    assert all("NameError" in t.output for t in result.tests)


def test_breaking_a_constructor_on_purpose_earns_nothing(tmp_path, vae_rubric):
    """The exploit: give up the prior's points by breaking its constructor, hoping that the composite and
    the model, which need a prior, are credited untested. They earn the rate of the other checks that ran
    (here a log-density that returns zeros: it keeps only its property checks' points), never full marks."""
    source = (REPO / "reference" / "vae.py").read_text().replace(CORRECT, BROKEN)
    source += ("\n\ndef log_normal_diag(x, mu, log_var, reduction=None, dim=None):\n"
               "    return _reduce(torch.zeros_like(x), reduction, dim)\n")
    folder = tmp_path / "exploit"
    folder.mkdir()
    (folder / "vae.py").write_text(source)
    result = grade_submission(folder, vae_rubric, GradeOptions(
        device="cpu", only=["log_normal_diag", "mog_prior.log_prob", "elbo"], model_overrides=TINY))
    blocked = [t for t in result.tests if t.error == "blocked"]
    assert blocked, [(t.check, t.error, t.output[:80]) for t in result.tests]
    others = [t for t in result.tests if t.component == "log_normal_diag"]
    rate = sum(t.score for t in others) / sum(t.max_score for t in others)
    assert rate < 0.5
    for t in blocked:
        assert t.score == pytest.approx(t.max_score * rate), (t.check, t.score, rate)


def test_credit_blocked_uses_the_rate_of_the_other_checks(vae_rubric):
    from grader.checks import Session
    from grader.checks.runners import credit_blocked
    from grader.results import TestResult

    session = Session()
    session.cache["broken_constructors"] = {"MoGPrior": "NameError"}
    tests = [TestResult("a", "1", 1.0, 2.0, component="log_normal_diag"),
             TestResult("b", "2", 0.0, 1.0, component="mog_prior.log_prob"),  # the broken class: left out
             TestResult("c", "3", 1.0, 1.0, component="elbo", error="blocked")]
    credit_blocked(tests, vae_rubric, session)
    assert tests[2].score == pytest.approx(0.5)
