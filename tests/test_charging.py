"""Each mistake costs points once, where it is (grader/charging.py; docs/grading.md, "Charged in proportion").

Every case is a one-line edit planted into an assignment's correct example. The double charges were found in the
example reports (issue 20's review): a mistake named by two checks of one component cost both, because one of
them named it without recording it as the case's cause (`ivan`: lo_shared_posterior 2 + 0.4 points,
mean_of_log_weights 2 + 1; `bob`: the variance exp(log_var)² cost 2 + 0.5, the gradient check naming nothing).
The other direction: two independent mistakes in one component each still cost their own points.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from grader.engine import GradeOptions, grade_submission
from grader.rubric import available_rubrics

REPO = Path(__file__).resolve().parents[1]
RUBRICS = available_rubrics()

SHARED_Q = ("        return self.mu.index_select(0, idx), self.log_var.index_select(0, idx)\n",
            "        return self.mu[0].expand(len(idx), -1), self.log_var[0].expand(len(idx), -1)\n")
MEAN_OF_LOG_WEIGHTS = ("    m = log_w.max(dim=0, keepdim=True).values\n",
                       "    return log_w.mean(dim=0)\n    m = log_w.max(dim=0, keepdim=True).values\n")
SAME_INIT = ("        self.mu = nn.Parameter(torch.randn(num_examples, L))\n",
             "        self.mu = nn.Parameter(torch.zeros(num_examples, L))\n")
VARIANCE_SQUARED = ("        std = torch.exp(0.5 * log_var)\n        eps = torch.empty_like(std).normal_()\n",
                    "        std = torch.exp(log_var)\n        eps = torch.empty_like(std).normal_()\n")


def _planted(tmp_path: Path, example: str, module: str, *edits: tuple[str, str]) -> Path:
    root = tmp_path / f"{example}_planted"
    shutil.copytree(REPO / "submissions" / example, root)
    src = (root / module).read_text()
    for old, new in edits:
        assert src.count(old) == 1, "the example changed: update the planted edit"
        src = src.replace(old, new)
    (root / module).write_text(src)
    return root


def _lost(result) -> dict[str, float]:
    return {t.check: round(t.max_score - t.score, 4) for t in result.tests if t.score < t.max_score - 1e-9}


def _charged_once(result, check: str) -> list[dict]:
    return next(t.charged_once for t in result.tests if t.check == check)


@pytest.mark.slow
@pytest.mark.parametrize("assignment, example, module, component, edit, mistake, charged_in, also_seen_by", [
    # before: lo.per_example 2 + lo.gradients 0.4 (ivan)
    ("amortized-vs-lo", "heidi", "amortized_vs_lo.py", "lo", SHARED_Q, "lo_shared_posterior", "lo.per_example",
     ["lo.gradients"]),
    # before: importance.reference 2 + importance.bound 1 (ivan)
    ("amortized-vs-lo", "heidi", "amortized_vs_lo.py", "importance", MEAN_OF_LOG_WEIGHTS, "mean_of_log_weights",
     "importance.reference", ["importance.bound"]),
    # before: reparameterization.distribution 2 + reparameterization.gradients 0.5 (bob)
    ("vae", "alice", "vae.py", "reparameterization", VARIANCE_SQUARED, "variance_squared",
     "reparameterization.distribution", ["reparameterization.gradients"]),
])
def test_one_mistake_seen_by_two_checks_of_its_component_is_charged_once(
        tmp_path, assignment, example, module, component, edit, mistake, charged_in, also_seen_by):
    result = grade_submission(_planted(tmp_path, example, module, edit), RUBRICS[assignment],
                              GradeOptions(only=[component], device="cpu"))
    by = {t.check: t for t in result.tests}
    assert _lost(result) == {charged_in: by[charged_in].max_score}, _lost(result)
    for check in also_seen_by:
        assert mistake in [m["id"] for m in by[check].mistakes], (check, by[check].output)  # it still says so
        assert _charged_once(result, check)[0]["charged_in"] == charged_in
        assert f"charged once, in check {by[charged_in].number}" in by[check].output
    assert f"mistake:{mistake}" in [c["cause"] for c in by[charged_in].charged_once]


@pytest.mark.slow
def test_two_independent_mistakes_of_one_component_each_cost_their_points(tmp_path):
    # the shared q (named by lo.per_example and lo.gradients, charged once) and identical initial rows of mu
    # (lo.parameters, a cause of its own): both are charged
    root = _planted(tmp_path, "heidi", "amortized_vs_lo.py", SHARED_Q, SAME_INIT)
    result = grade_submission(root, RUBRICS["amortized-vs-lo"], GradeOptions(only=["lo"], device="cpu"))
    lost = _lost(result)
    assert lost.get("lo.per_example") == 2.0 and "lo.gradients" not in lost, lost
    assert lost.get("lo.parameters", 0) > 0, lost  # not merged into the shared q's charge
    assert not _charged_once(result, "lo.parameters")


LND_VALUES = "    values = -HALF_LOG_TWO_PI - 0.5 * log_var - 0.5 * (x - mu) ** 2 / torch.exp(log_var)\n    return _reduce(values, reduction, dim)\n"
LND_WRONG = (LND_VALUES, "    values = 0.0 * x + 3.0\n    return _reduce(values, reduction, dim)\n")
LND_WRONG_AS_FLOAT16 = (LND_VALUES, "    values = 0.0 * x + 3.0\n    return _reduce(values, reduction, dim).to("
                        "torch.float16 if x.dtype != torch.float16 else torch.float32)\n")
LND_FLOAT32_SLIP = (LND_VALUES, LND_VALUES.replace("dim)\n", "dim).float()\n"))


@pytest.mark.slow
def test_a_wrong_function_disguised_as_a_dtype_slip_is_not_charged_once(tmp_path):
    """Red team (issue 19, fifth round): every result in the wrong dtype fails each case on its dtype before its values
    are compared, so a wrong log_normal_diag turned float16 was charged once ('dtype': 3.7/5.95) where the same code
    in the right dtype got 0.95. The dtype property now sees that the slip does not explain the values; an honest
    float32 slip keeps its single charge (4.95/5.95 before and after)."""
    def score(name, edit):
        result = grade_submission(_planted(tmp_path / name, "alice", "vae.py", edit), RUBRICS["vae"],
                                  GradeOptions(only=["log_normal_diag"], device="cpu"))
        return sum(t.score for t in result.tests), result

    honest, _ = score("wrong", LND_WRONG)
    disguised, result = score("disguised", LND_WRONG_AS_FLOAT16)
    assert disguised <= honest + 1e-9, (disguised, honest, _lost(result))
    slip, result = score("slip", LND_FLOAT32_SLIP)
    assert slip > disguised and any(c["cause"] == "dtype" for t in result.tests for c in t.charged_once), _lost(result)
