"""A constructor that fails (the course notebook's NameError in `MoGPrior.__init__`) is charged once, on its
class's components; the composite and the trained-model checks that need such an object say why they could
not run and cost nothing more. Never an internal grader error."""

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
    opts = GradeOptions(device="cpu", only=["mog_prior.log_prob", "mog_prior.sample", "elbo", "model"],
                        model_overrides=TINY)
    return grade_submission(folder, vae_rubric, opts)


def test_the_constructor_mistake_is_charged_on_the_prior_only(graded):
    by = {}
    for t in graded.tests:
        by.setdefault(t.component, []).append(t)
    assert all(t.score == 0 for c in ("mog_prior.log_prob", "mog_prior.sample") for t in by[c])
    assert all("NameError" in t.output and "multiplier" in t.output for t in by["mog_prior.log_prob"])
    for c in ("elbo", "model"):
        for t in by[c]:
            assert t.score == t.max_score and t.error == "blocked", (t.check, t.output)
            assert t.output.startswith("Not judged") and "`MoGPrior`" in t.output and "nothing more" in t.output
    assert not any("internal" in e for e in graded.errors), graded.errors
    assert not any(t.error == "internal" for t in graded.tests)


def test_without_the_prior_checks_the_composite_is_charged_where_it_fails(tmp_path, vae_rubric):
    """The child's say-so alone never earns credit: a class not found broken by its own checks costs points."""
    result = grade_submission(_notebook(tmp_path), vae_rubric, GradeOptions(device="cpu", only=["elbo"]))
    assert result.tests and all(t.score == 0 and t.error == "exception" for t in result.tests)
    assert all("NameError" in t.output for t in result.tests)
