"""The engine on correct, buggy and broken `vae` submissions.

The grader is honest only if a wrong implementation loses points: every known mistake (mutant of
the reference) is planted in an otherwise correct submission, and must cost points on its own
component, be named in the feedback, and cost nothing anywhere else.
"""

from __future__ import annotations

import pytest

from grader.engine import GradeOptions, grade_submission
from reference.vae_mistakes import MUTANTS
from tests.conftest import make_submission, mutant_source, unit_tags


def _by_component(result):
    out: dict[str, list[float]] = {}
    for t in result.tests:
        lost = t.max_score - t.score
        out.setdefault(t.component, []).append(lost)
    return {c: sum(v) for c, v in out.items()}


def test_reference_copy_gets_full_marks(tmp_path, vae_rubric):
    sub = make_submission(tmp_path, "refcopy")
    result = grade_submission(sub, vae_rubric, GradeOptions(device="cpu", only=unit_tags(vae_rubric)))
    failed = [(t.check, t.output) for t in result.tests if t.status != "passed"]
    assert not failed, failed
    assert result.autograded_score == sum(c.points for c in vae_rubric.select(unit_tags(vae_rubric)))
    assert result.sandbox.get("process_group") is True


def _mistake_component(vae_rubric, mistake_id):
    return next(m.component for m in vae_rubric.mistakes if m.id == mistake_id)


@pytest.mark.parametrize("mistake_id", sorted(MUTANTS))
def test_each_planted_mistake_costs_points_on_its_component_only_and_is_named(tmp_path, vae_rubric, mistake_id):
    mutant = MUTANTS[mistake_id]
    component = _mistake_component(vae_rubric, mistake_id)
    sub = make_submission(tmp_path, f"m_{mistake_id}", mutant_source(mutant))
    # Model-level marks are meant to drop for any bug that spoils training: tests/test_model_level.py.
    result = grade_submission(sub, vae_rubric, GradeOptions(device="cpu", only=unit_tags(vae_rubric)))
    assert not result.errors, result.errors
    lost = _by_component(result)
    assert lost[component] > 0, f"{mistake_id}: no points lost on {component}"
    elsewhere = {c: v for c, v in lost.items() if c != component and v > 0}
    assert not elsewhere, f"{mistake_id}: points also lost on {elsewhere}: " + "; ".join(
        f"{t.check}: {t.output}" for t in result.tests if t.component in elsewhere and t.status != "passed")
    named = {m["id"] for t in result.tests for m in t.mistakes}
    assert mistake_id in named, f"{mistake_id} not diagnosed; feedback: " + " | ".join(
        t.output for t in result.tests if t.component == component and t.status != "passed")


FORWARD_MISTAKES = ("kl_wrong_sign", "missing_kl", "reduction_ignored")
SECRETS = ("053cae13c461457e0d67ff50e6c41787", "1" * 32, "2" * 32, "3" * 32, "4" * 32, "5" * 32)


@pytest.mark.parametrize("mistake_id", FORWARD_MISTAKES)
def test_the_elbo_mistakes_are_named_whatever_the_checks_inputs(tmp_path, vae_rubric, mistake_id):
    """Each run draws fresh inputs (grader/checks/inputs.py): the Monte Carlo ELBO check must tell its
    three mistakes apart for every draw, not only for most."""
    sub = make_submission(tmp_path, f"m_{mistake_id}", mutant_source(MUTANTS[mistake_id]))
    for secret in SECRETS:
        result = grade_submission(sub, vae_rubric, GradeOptions(device="cpu", only=["elbo"], secret=secret))
        named = {m["id"] for t in result.tests for m in t.mistakes}
        assert named == {mistake_id}, (secret, [t.output for t in result.tests if t.status != "passed"])


def test_only_selects_components(tmp_path, vae_rubric):
    sub = make_submission(tmp_path, "only")
    result = grade_submission(sub, vae_rubric, GradeOptions(device="cpu", only=["log_bernoulli", "elbo"]))
    assert {t.component for t in result.tests} == {"log_bernoulli", "elbo"}


@pytest.mark.parametrize("extra, component, message", [
    ("\ndel log_categorical\n", "log_categorical", "`log_categorical` is missing"),
    ("\ndef log_bernoulli(x, p, reduction=None, dim=None):\n    return x * float('nan')\n", "log_bernoulli", "NaN"),
    ("\ndef log_standard_normal(x, reduction=None, dim=None):\n    return (-0.5 * x**2).numpy()\n", "log_standard_normal", "numpy"),
    # no `reduction`: charged once by the interface check; here its cases are not judged, and say so
    ("\ndef log_normal_diag(x, mu, log_var):\n    return x\n", "log_normal_diag", "takes no `reduction`"),
    ("\nMoGPrior.sample = lambda self, batch_size: self.means[:1].expand(batch_size, -1).detach().numpy()\n", "mog_prior.sample", "numpy"),
    ("\ndef _boom(self, x, z):\n    raise NotImplementedError('TODO')\nDecoder.log_prob = _boom\n", "decoder", "NotImplementedError"),
    ("\ndef _shape(self, z):\n    return z[:, :1]\nMoGPrior.log_prob = _shape\n", "mog_prior.log_prob", "shape"),
])
def test_broken_components_get_zero_there_with_a_clear_message(tmp_path, vae_rubric, extra, component, message):
    sub = make_submission(tmp_path, "broken", extra)
    result = grade_submission(sub, vae_rubric, GradeOptions(device="cpu", only=[component]))
    assert result.tests and all(t.component == component for t in result.tests)
    assert sum(t.score for t in result.tests) < sum(t.max_score for t in result.tests)
    text = " ".join(t.output for t in result.tests)
    assert message in text, text


def test_syntax_error_grades_zero_everywhere_and_says_where(tmp_path, vae_rubric):
    sub = make_submission(tmp_path, "syntax", "\ndef broken(:\n    pass\n")
    result = grade_submission(sub, vae_rubric, GradeOptions(device="cpu", only=unit_tags(vae_rubric)))
    assert result.autograded_score == 0
    assert any("SyntaxError" in e for e in result.errors)
    assert all(t.error == "import" for t in result.tests)
    assert "line" in result.tests[0].output


def test_missing_module_file(tmp_path, vae_rubric):
    (tmp_path / "empty").mkdir()
    result = grade_submission(tmp_path / "empty", vae_rubric, GradeOptions(device="cpu", only=unit_tags(vae_rubric)))
    assert result.autograded_score == 0
    assert any("no vae.py" in e for e in result.errors)


@pytest.mark.parametrize("std, named", [("0.5 * log_var", set()), ("log_var", {"log_var_as_std"})])
def test_a_factor_two_in_the_noise_scale_is_not_named_as_another_mistake(tmp_path, vae_rubric, std, named):
    """std = 0.5·log_var (a generated mutant) is not `log_var_as_std` (std = log_var): the gradient
    check's ratio is blind to the scale and names nothing; the distribution check sees the factor 2.
    The real `log_var_as_std` is still named (by the distribution check)."""
    from tests.conftest import SUBMISSIONS

    src = (SUBMISSIONS / "alice" / "vae.py").read_text()
    assert "std = torch.exp(0.5 * log_var)" in src
    sub = make_submission(tmp_path, "scale", base=SUBMISSIONS / "alice" / "vae.py")
    (sub / "vae.py").write_text(src.replace("std = torch.exp(0.5 * log_var)", f"std = {std}"))
    result = grade_submission(sub, vae_rubric, GradeOptions(device="cpu", only=["reparameterization"]))
    assert sum(t.max_score - t.score for t in result.tests) > 0
    assert {m["id"] for t in result.tests for m in t.mistakes} == named, [(t.check, t.mistakes) for t in result.tests]


def test_a_shifted_sample_with_the_right_spread_is_not_named_detached(tmp_path, vae_rubric):
    """z = mu + std·eps + 1 (a generated mutant, held-out bench seed 583269) has the correct spread, as a detached
    z has: the distribution check named `detached`, its statistic (the spread) being blind to the shift, because
    its matcher could not say how close the correct implementation is (no patch: no prediction)."""
    from tests.conftest import SUBMISSIONS

    src = (SUBMISSIONS / "alice" / "vae.py").read_text()
    assert "        return mu + eps * std\n" in src
    sub = make_submission(tmp_path, "shift", base=SUBMISSIONS / "alice" / "vae.py")
    (sub / "vae.py").write_text(src.replace("        return mu + eps * std\n", "        return mu + eps * std + 1.0\n"))
    result = grade_submission(sub, vae_rubric, GradeOptions(device="cpu", only=["reparameterization"]))
    assert sum(t.max_score - t.score for t in result.tests) > 0
    assert {m["id"] for t in result.tests for m in t.mistakes} == set(), [(t.check, t.mistakes) for t in result.tests]


def test_log_categorical_clamps_a_sure_probability_at_one_minus_eps_too(tmp_path, vae_rubric):
    """clamp(p, EPS, 2 − EPS) (a generated mutant, held-out bench seed 780458) passed every case: no p reached 1."""
    from tests.conftest import SUBMISSIONS

    src = (SUBMISSIONS / "alice" / "vae.py").read_text()
    old = "mask * p.clamp(EPS, 1.0 - EPS).log()"
    assert old in src
    sub = make_submission(tmp_path, "clamp", base=SUBMISSIONS / "alice" / "vae.py")
    (sub / "vae.py").write_text(src.replace(old, "mask * p.clamp(EPS, 2.0 - EPS).log()"))
    result = grade_submission(sub, vae_rubric, GradeOptions(device="cpu", only=["log_categorical"]))
    lost = {t.check for t in result.tests if t.score < t.max_score}
    assert lost == {"log_categorical"}, [(t.check, t.output) for t in result.tests if t.check in lost]

