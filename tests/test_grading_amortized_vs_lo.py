"""`amortized-vs-lo`: the reference against independent computations, every planted mistake costs
points on its own component only and is named, the example submissions, and model-level grading
with a tiny training budget (digits)."""

from __future__ import annotations

import inspect
import json
import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import distributions as dist

from grader.engine import GradeOptions, grade_submission
from reference import amortized_vs_lo as ref
from reference.amortized_vs_lo_mistakes import MUTANTS
from tests.conftest import lost_points as _lost

REPO = Path(__file__).resolve().parents[1]
MODULE = "amortized_vs_lo.py"
TINY = {"cnn_epochs": 4, "vae_epochs": 4, "lo_epochs": 4, "H": 64, "K": 32, "lo_test_steps": 20, "time_budget_s": 120}


@pytest.fixture(scope="module")
def rubric():
    from grader.rubric import available_rubrics

    return available_rubrics()["amortized-vs-lo"]


def _unit(rubric) -> list[str]:
    return [c for c in rubric.components if c != "model"]


def _planted(mutant) -> str:
    """Source that, appended to a copy of the reference, plants `mutant` (and the helpers it calls)."""
    module = inspect.getmodule(mutant.fn)
    registered = {m.fn for m in module.MUTANTS.values()}
    helpers = [textwrap.dedent(inspect.getsource(o)) for n, o in vars(module).items()
               if inspect.isfunction(o) and o.__module__ == module.__name__ and o not in registered and n != "mutant"]
    src = textwrap.dedent(inspect.getsource(mutant.fn))
    body = re.sub(r"def \w+\(", "def _planted(", "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("@")),
                  count=1)
    owner, _, attr = mutant.component.rpartition(".")
    install = f"{owner}.{attr} = _planted" if owner else f"{attr} = _planted"
    prelude = "import sys as _sys\nref = _sys.modules[__name__]\n"
    return f"\n\n# --- planted mistake: {mutant.id} ---\n{prelude}" + "\n".join(helpers) + f"\n{body}\n{install}\n"


def _submission(tmp_path: Path, name: str, extra: str = "") -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / MODULE).write_text((REPO / "reference" / MODULE).read_text() + extra)
    return folder


# ---- the reference against independent computations ------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.floats(-6, 6), st.integers(0, 2 ** 31 - 1))
def test_log_normal_diag_and_kl_match_torch_distributions(b, l, lv0, seed):
    g = torch.Generator().manual_seed(seed)
    z, mu = torch.randn(b, l, generator=g, dtype=torch.float64), torch.randn(b, l, generator=g, dtype=torch.float64)
    lv = lv0 + torch.rand(b, l, generator=g, dtype=torch.float64)
    q = dist.Independent(dist.Normal(mu, torch.exp(0.5 * lv)), 1)
    p = dist.Independent(dist.Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    torch.testing.assert_close(ref.log_normal_diag(z, mu, lv), q.log_prob(z))
    torch.testing.assert_close(ref.kl_standard_normal(mu, lv), dist.kl_divergence(q, p))


def test_decoder_log_prob_matches_torch_bernoulli():
    torch.manual_seed(0)
    dec = ref.BernoulliDecoder(torch.nn.Linear(3, 7))
    x, z = torch.randint(0, 2, (4, 7)).float(), torch.randn(5, 4, 3)
    want = dist.Independent(dist.Bernoulli(probs=dec(z)), 1).log_prob(x)
    torch.testing.assert_close(dec.log_prob(x, z), want, rtol=1e-4, atol=1e-4)
    assert dec.log_prob(x, z).shape == (5, 4)


def _tiny_vae(seed=0, L=2, D=5):
    torch.manual_seed(seed)
    return ref.VAE(ref.GaussianEncoder(torch.nn.Linear(D, 2 * L)), ref.BernoulliDecoder(torch.nn.Linear(L, D)), L)


def test_importance_sampling_against_numerical_integration():
    """L = 1: log p(x) = log ∫ p(x|z) N(z; 0, 1) dz by quadrature; IS with many samples agrees, and
    the mean estimate rises from the ELBO (M = 1) towards it."""
    torch.manual_seed(0)
    model = _tiny_vae(L=1, D=6).double()
    with torch.no_grad():
        model.decoder.net.weight.mul_(4)
    x = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 1, 0, 1, 1]], dtype=torch.float64)
    grid = torch.linspace(-9, 9, 20001, dtype=torch.float64).reshape(-1, 1, 1)
    integrand = model.decoder.log_prob(x, grid.expand(-1, 2, 1)) + ref.log_normal_diag(grid, torch.zeros(1), torch.zeros(1))
    exact = torch.logsumexp(integrand, 0) + math.log(float(grid[1, 0, 0] - grid[0, 0, 0]))
    with torch.no_grad():
        torch.manual_seed(1)
        big = ref.log_px_importance(model, x, 200000)
        means = [torch.stack([ref.log_px_importance(model, x, M) for _ in range(300)]).mean(0) for M in (1, 10, 100)]
    torch.testing.assert_close(big, exact, rtol=0, atol=0.03)
    assert bool(torch.all(means[0] < means[1] + 0.01)) and bool(torch.all(means[1] < means[2] + 0.01))
    assert bool(torch.all(means[0] < means[2] - 0.5)) and bool(torch.all(means[2] <= exact + 0.05))
    with torch.no_grad():  # M = 1 is one ELBO draw (the ELBO's KL is closed-form: same expectation)
        torch.manual_seed(2)
        elbo_mc = torch.stack([ref.elbo(model.decoder, x, *model.posterior(x)) for _ in range(3000)]).mean(0)
        m1 = torch.stack([ref.log_px_importance(model, x, 1) for _ in range(3000)]).mean(0)
    torch.testing.assert_close(m1, elbo_mc, rtol=0, atol=0.3)


def test_importance_is_stable_far_from_the_mode():
    model = _tiny_vae(D=64)
    with torch.no_grad():
        model.decoder.net.bias.fill_(-30.0)
    x = torch.ones(3, 64)
    out = ref.log_px_importance(model, x, 50)
    assert torch.isfinite(out).all() and (out < -700).all()  # p clamped to EPS: 64·log 1e-5
    assert torch.isinf(MUTANTS["log_mean_exp_underflow"].fn(model, x, 50)).all()


def test_lo_parameters_are_per_example():
    torch.manual_seed(0)
    lo = ref.LatentOptimizationVAE(ref.BernoulliDecoder(torch.nn.Linear(2, 5)), 7, 2)
    assert lo.mu.shape == lo.log_var.shape == (7, 2) and isinstance(lo.mu, torch.nn.Parameter)
    idx = torch.tensor([3, 5])
    (-lo.elbo(torch.rand(2, 5), idx).sum()).backward()
    assert set(torch.nonzero(lo.mu.grad.abs().sum(1)).flatten().tolist()) == {3, 5}


def test_cnn_shapes_for_digits_and_mnist():
    for s in (8, 28):
        assert ref.CNNClassifier(image_size=s)(torch.rand(3, 1, s, s)).shape == (3, 10)


# ---- grading: reference copy, planted mistakes ----------------------------------------------------------

def test_reference_copy_gets_full_unit_marks(tmp_path, rubric):
    result = grade_submission(_submission(tmp_path, "refcopy"), rubric, GradeOptions(device="cpu", only=_unit(rubric)))
    failed = [(t.check, t.output) for t in result.tests if t.status != "passed"]
    assert not failed, failed
    assert not result.errors


DOWNSTREAM = {  # components whose checks use the student's own version of the key component
    "log_normal_diag": ("importance",), "reparameterize": ("elbo", "vae", "lo", "importance"),
    "kl": ("elbo", "vae", "lo"), "encoder": ("vae", "importance"),
    "decoder.forward": ("decoder.log_prob", "elbo", "vae", "lo", "importance"),
    "decoder.log_prob": ("elbo", "vae", "lo", "importance"), "elbo": ("vae", "lo"), "lo": ("importance",),
}


@pytest.mark.parametrize("mistake_id", sorted(MUTANTS))
def test_each_planted_mistake_costs_points_on_its_component_only_and_is_named(tmp_path, rubric, mistake_id):
    component = next(m.component for m in rubric.mistakes if m.id == mistake_id)
    sub = _submission(tmp_path, f"m_{mistake_id}", _planted(MUTANTS[mistake_id]))
    # the mistake's component and every component built on it (where a second charge could happen)
    only = [c for c in _unit(rubric) if c == component or c in DOWNSTREAM.get(component, ())]
    result = grade_submission(sub, rubric, GradeOptions(device="cpu", only=only))
    assert not result.errors, result.errors
    lost = _lost(result)
    assert lost.get(component, 0) > 0, f"{mistake_id}: no points lost on {component}"
    elsewhere = {c: v for c, v in lost.items() if c != component and v > 0}
    assert not elsewhere, f"{mistake_id}: points also lost on {elsewhere}: " + "; ".join(
        f"{t.check}: {t.output}" for t in result.tests if t.component in elsewhere and t.status != "passed")
    named = {m["id"] for t in result.tests for m in t.mistakes}
    assert mistake_id in named, f"{mistake_id} not diagnosed: " + " | ".join(
        t.output for t in result.tests if t.component == component and t.status != "passed")


# ---- example submissions -----------------------------------------------------------------------------------

def test_correct_example_heidi_full_marks_including_model_level(rubric, tmp_path):
    result = grade_submission(REPO / "submissions" / "heidi", rubric,
                              GradeOptions(device="cpu", model_overrides=TINY, out_dir=tmp_path))
    failed = [(t.check, t.output) for t in result.tests if t.status != "passed"]
    assert not failed, failed
    assert result.autograded_score == rubric.max_points
    m = result.metrics
    assert m["reference_cache"] in ("trained now", "reused")
    for key in ("CNN validation accuracy", "VAE log p(x) test (IS)", "LO training −ELBO"):
        assert m[key]["student"] is not None and math.isfinite(m[key]["student"]), key
    per_digit = m["vae_test_log_px_per_digit"]["student"]
    assert len(per_digit) == 10 and all(math.isfinite(v) for v in per_digit)
    assert set(m) <= set(result.metric_info), "every metric shown has a display declaration"
    assert m["VAE log p(x) train (IS)"]["student"] > m["VAE log p(x) test (IS)"]["student"] - 5
    names = {Path(f["path"]).name for f in result.figures}
    assert names == {"loss_curves.png", "reconstructions.png", "samples.png", "log_px_per_digit.png"}
    for name in names:
        assert (tmp_path / "heidi" / "figures" / name).stat().st_size > 1000


BUGGY = {"softmax_output": "classifier", "kl_wrong_sign": "elbo", "lo_shared_posterior": "lo",
         "mean_of_log_weights": "importance"}


def test_buggy_example_ivan_loses_the_right_points_with_the_right_diagnoses(rubric):
    result = grade_submission(REPO / "submissions" / "ivan", rubric,
                              GradeOptions(device="cpu", model_overrides=TINY))
    assert not result.errors, result.errors
    lost = _lost(result)
    named = {m["id"]: t.component for t in result.tests for m in t.mistakes}
    for mistake, component in BUGGY.items():
        assert lost.get(component, 0) > 0, component
        assert named.get(mistake) == component, (mistake, named)
    unharmed = set(_unit(rubric)) - set(BUGGY.values())
    assert not {c: v for c, v in lost.items() if c in unharmed and v > 0}
    by_check = {t.check: t for t in result.tests}
    # the KL sign spoils the amortized VAE, the shared q spoils latent optimization
    assert by_check["model.vae"].score < by_check["model.vae"].max_score
    assert by_check["model.lo"].score < by_check["model.lo"].max_score
    assert "found by the unit checks" in by_check["model.vae"].output
    json.dumps(result.to_json(), allow_nan=False, default=str)  # NaN metrics of a diverged model stay valid JSON


def test_optional_real_mnist_test_set_loads_for_the_classifier():
    folder = Path("/work/shared/data/mnist")
    if not folder.is_dir():
        pytest.skip("no local MNIST")
    from grader.checks.amortized_vs_lo_model import _prepare

    try:
        data = _prepare(f"mnist:{folder}")
    except ValueError as e:
        pytest.skip(f"local MNIST incomplete: {e}")
    x = data.x_val[:4].reshape(4, 1, 28, 28)
    assert float(x.max()) <= 1.0 and ref.CNNClassifier(image_size=28)(x).shape == (4, 10)


def test_all_nan_reparameterize_scores_zero_with_a_clear_message(tmp_path, rubric):
    """Statistical checks compare with NaN as False; a NaN sample must fail them, not pass them."""
    extra = "\ndef reparameterize(mu, log_var):\n    return mu + log_var * float('nan')\n"
    result = grade_submission(_submission(tmp_path, "nan", extra), rubric, GradeOptions(device="cpu", only=["reparameterize"]))
    assert result.tests and sum(t.score for t in result.tests) == 0, [(t.check, t.score, t.output) for t in result.tests]
    assert all("non-finite" in t.output for t in result.tests), [t.output for t in result.tests]


@pytest.mark.slow
def test_a_correct_cnn_cut_by_the_time_budget_is_compared_with_the_reference_at_the_same_epochs(rubric, tmp_path,
                                                                                                 monkeypatch):
    """A correct but slow CNN (a sleep in every forward pass) stops at the time budget after fewer epochs
    than the reference: it is compared with the reference trained for as many epochs, at full marks."""
    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "cache"))
    sub = tmp_path / "slow_cnn"
    sub.mkdir()
    src = (REPO / "submissions" / "heidi" / rubric.module).read_text()
    src += ("\nimport time as _time\n_orig_forward = CNNClassifier.forward\n"
            "def _slow(self, x):\n    _time.sleep(0.04)\n    return _orig_forward(self, x)\n"
            "CNNClassifier.forward = _slow\n")
    (sub / rubric.module).write_text(src)
    overrides = {**TINY, "cnn_epochs": 8, "time_budget_s": 3}
    result = grade_submission(sub, rubric, GradeOptions(device="cpu", only=["model"], model_overrides=overrides))
    accuracy = next(t for t in result.tests if "accuracy" in t.name.lower())
    assert "trained for the same" in accuracy.output, accuracy.output
    assert accuracy.score == accuracy.max_score, accuracy.output


def test_a_loop_cut_by_the_budget_mid_epoch_keeps_only_its_completed_epochs():
    """The time budget runs out in the middle of epoch 2 (one slow batch): the history counts epoch 1 only, and
    the weights are those at the end of epoch 1, identical to a run of exactly 1 epoch, so the reference matched
    to the student's epochs is trained as far as the student's weights were (a partial epoch is not a full one)."""
    import time
    import types

    from grader.harnesses.amortized_vs_lo import train_classifier

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(256, 1, 8, 8, generator=g), torch.randint(0, 10, (256,), generator=g)
    calls = {"train": 0}

    class SlowInEpoch2(ref.CNNClassifier):
        def forward(self, x):
            if self.training:
                calls["train"] += 1
                if calls["train"] == 6:  # 4 batches of 64 per epoch: epoch 2's second batch
                    time.sleep(3.0)
            return super().forward(x)

    args = (torch.device("cpu"), x, y, x[:64], y[:64], 8)
    # first (it also pays torch.optim's one-off import, so that epoch 1 below ends well within the budget)
    one = train_classifier(types.SimpleNamespace(CNNClassifier=ref.CNNClassifier), *args, epochs=1, time_budget_s=1e9)
    assert one["stopped_because"] == "max_epochs", one["message"]
    cut = train_classifier(types.SimpleNamespace(CNNClassifier=SlowInEpoch2), *args, epochs=4, time_budget_s=2.0)
    assert calls["train"] == 6 and cut["stopped_because"] == "time_budget", (calls, cut["message"])
    assert cut["epochs"] == [1], f"only the completed epoch 1 may count, got epochs {cut['epochs']}"
    assert len(cut["train_loss"]) == len(cut["val_loss"]) == len(cut["val_accuracy"]) == 1
    assert set(one["state_dict"]) == set(cut["state_dict"])
    for k, want in one["state_dict"].items():
        np.testing.assert_array_equal(cut["state_dict"][k], want, err_msg=f"{k}: expected the weights after epoch 1")
