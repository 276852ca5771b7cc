"""The `density-models` assignment: reference against independent computations, every planted
mistake costs points on its own component only and is named, the examples grade as documented,
and model-level grading (tiny budgets) gives full marks to a correct submission.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from grader.engine import GradeOptions, grade_submission
from reference import density_models as R
from reference.density_models_mistakes import MUTANTS
from tests.conftest import (
    REPO, SUBMISSIONS, _helpers, lost_points as lost_by_component, named_mistakes as named,
)

# A tiny budget: 3 epochs at a higher learning rate are enough for a correct VAE to match the reference and
# for a wrong KL sign to show.
TINY = {"epochs": 3, "lr": 3e-3, "time_budget_s": 10, "gmm_iterations": 4, "gmm_components": 4, "elbo_samples": 2}


@pytest.fixture(scope="module")
def rubric():
    from grader.rubric import available_rubrics

    return available_rubrics()["density-models"]


def unit_tags(rubric) -> list[str]:
    return [c for c in rubric.components if c != "model"]


def make_submission(tmp_path: Path, name: str, extra: str = "") -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "density_models.py").write_text((REPO / "reference" / "density_models.py").read_text() + extra)
    return folder


def mutant_source(mutant) -> str:
    """Source that, appended to a copy of reference/density_models.py, plants `mutant` in it."""
    src = textwrap.dedent(inspect.getsource(mutant.fn))
    body = re.sub(r"def \w+\(", "def _planted(", "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("@")), count=1)
    owner, _, attr = mutant.component.rpartition(".")
    install = f"{owner}.{attr} = _planted" if owner else f"{attr} = _planted"
    prelude = "import sys as _sys\ndm = _sys.modules[__name__]\n"
    return f"\n\n# --- planted mistake: {mutant.id} ---\n{prelude}{_helpers(mutant)}{body}\n{install}\n"


# ---- the reference against independent computations ----------------------------------------------

def _data(seed, N=60, D=7, rank=3):
    g = np.random.default_rng(seed)
    X = g.standard_normal((N, rank)) @ g.standard_normal((rank, D)) * 2 + 0.4 * g.standard_normal((N, D)) + g.uniform(-1, 1, D)
    return torch.from_numpy(X)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), q=st.integers(1, 4), D=st.integers(5, 9))
def test_ppca_matches_sklearn_pca_and_low_rank_normal(seed, q, D):
    from sklearn.decomposition import PCA

    X = _data(seed, D=D)
    N = X.shape[0]
    W, mu, s2 = R.fit_ppca(X, q)
    pca = PCA(q).fit(X.numpy())  # sklearn divides by N - 1; Tipping & Bishop's ML estimate by N
    assert s2.dim() == 0 and W.shape == (D, q) and mu.shape == (D,)
    np.testing.assert_allclose(s2.item(), pca.noise_variance_ * (N - 1) / N, rtol=1e-9)
    C = W @ W.T + s2 * torch.eye(D, dtype=X.dtype)
    np.testing.assert_allclose(C.numpy(), pca.get_covariance() * (N - 1) / N, atol=1e-9)
    lr = torch.distributions.LowRankMultivariateNormal(mu, W, s2.expand(D))
    np.testing.assert_allclose(R.ppca_log_likelihood(X, W, mu, s2).numpy(), lr.log_prob(X).numpy(), rtol=1e-10)
    full = torch.distributions.MultivariateNormal(mu, covariance_matrix=C)
    np.testing.assert_allclose(R.ppca_log_likelihood(X, W, mu, s2).numpy(), full.log_prob(X).numpy(), rtol=1e-10)


def test_ppca_is_the_maximum_likelihood_fit():
    """The ML fit beats perturbed parameters on the training data (log-likelihood is maximal)."""
    X = _data(3)
    W, mu, s2 = R.fit_ppca(X, 2)
    best = R.ppca_log_likelihood(X, W, mu, s2).sum()
    for dW, ds in ((0.05, 0.0), (0.0, 0.05), (-0.05, -0.02)):
        assert R.ppca_log_likelihood(X, W * (1 + dW), mu, s2 * (1 + ds)).sum() < best


def test_ppca_posterior_matches_the_conditional_gaussian():
    """E[z|x] from the joint Gaussian of (z, x): Wᵀ C⁻¹ (x − mu), an independent formula."""
    X = _data(5)
    W, mu, s2 = R.fit_ppca(X, 3)
    C = W @ W.T + s2 * torch.eye(X.shape[1], dtype=X.dtype)
    want = (W.T @ torch.linalg.solve(C, (X - mu).T)).T
    np.testing.assert_allclose(R.ppca_posterior_mean(X, W, mu, s2).numpy(), want.numpy(), atol=1e-10)
    np.testing.assert_allclose(R.ppca_reconstruct(X, W, mu, s2).numpy(), (want @ W.T + mu).numpy(), atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(1, 4), D=st.integers(1, 5))
def test_gmm_log_likelihood_matches_torch_mixture(seed, K, D):
    g = np.random.default_rng(seed)
    w = torch.from_numpy(g.dirichlet(np.ones(K)) + 1e-3)
    w = w / w.sum()
    means = torch.from_numpy(g.standard_normal((K, D)) * 3)
    A = torch.from_numpy(g.standard_normal((K, D, D)))
    covs = A @ A.transpose(1, 2) + 0.3 * torch.eye(D, dtype=torch.float64)
    X = torch.from_numpy(g.standard_normal((20, D)) * 4)
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(w),
                                                torch.distributions.MultivariateNormal(means, covs))
    np.testing.assert_allclose(R.gmm_log_likelihood(X, w, means, covs).numpy(), mix.log_prob(X).numpy(), rtol=1e-9, atol=1e-9)
    far = X * 100
    assert torch.isfinite(R.gmm_log_likelihood(far, w, means, covs)).all()


@pytest.mark.parametrize("reg", [1e-6, 1e-3])
def test_gmm_em_step_matches_one_sklearn_iteration(reg):
    from sklearn.mixture import GaussianMixture

    g = np.random.default_rng(1)
    centres = g.standard_normal((3, 4)) * 3
    X = centres[g.integers(0, 3, 150)] + g.standard_normal((150, 4))
    w0, m0 = np.array([0.2, 0.3, 0.5]), centres + 0.5 * g.standard_normal((3, 4))
    c0 = np.stack([np.eye(4) * s for s in (1.0, 2.0, 0.5)])
    gm = GaussianMixture(3, covariance_type="full", max_iter=1, tol=0.0, reg_covar=reg, weights_init=w0,
                         means_init=m0, precisions_init=np.linalg.inv(c0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X)
    w, m, c = R.gmm_em_step(*(torch.from_numpy(a) for a in (X, w0, m0, c0)), reg=reg)
    np.testing.assert_allclose(w.numpy(), gm.weights_, atol=1e-12)
    np.testing.assert_allclose(m.numpy(), gm.means_, atol=1e-12)
    np.testing.assert_allclose(c.numpy(), gm.covariances_, atol=1e-12)
    before = R.gmm_log_likelihood(torch.from_numpy(X), *(torch.from_numpy(a) for a in (w0, m0, c0))).mean()
    after = R.gmm_log_likelihood(torch.from_numpy(X), w, m, c).mean()
    assert after >= before  # EM never decreases the likelihood


def test_vae_elbo_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 1, 8, 8, generator=g) > 0.5).double()
    probs = torch.rand(6, 1, 8, 8, generator=g, dtype=torch.float64) * 0.9 + 0.05
    mu, log_var = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
    ll = torch.distributions.Bernoulli(probs=probs).log_prob(x).flatten(1).sum(1)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * log_var))
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    np.testing.assert_allclose(R.vae_elbo(x, probs, mu, log_var).numpy(), (ll - kl).numpy(), rtol=1e-10)


@pytest.mark.parametrize("side, sizes", [(8, (4, 2)), (28, (14, 7))])
def test_conv_vae_shapes_follow_the_contract(side, sizes):
    m = R.ConvVAE(latent_dim=2, image_size=side)
    x = torch.rand(3, 1, side, side)
    assert m.conv1(x).shape[-1] == sizes[0] and m.conv2(m.conv1(x)).shape[-1] == sizes[1]
    mu, lv = m.encode(x)
    assert mu.shape == lv.shape == (3, 2)
    p = m.decode(mu)
    assert p.shape == (3, 1, side, side) and bool(((p > 0) & (p < 1)).all())
    eps = torch.randn(3, 2)
    e = m.elbo(x, eps)
    assert e.shape == (3,)
    z = mu + torch.exp(0.5 * lv) * eps
    np.testing.assert_allclose(e.detach().numpy(), R.vae_elbo(x, m.decode(z), mu, lv).detach().numpy(), rtol=1e-6)


def test_every_mutant_differs_from_the_reference_somewhere():
    """A mutant equal to the reference could never be diagnosed."""
    assert len(MUTANTS) >= 20 and {m.component for m in MUTANTS.values()} >= {
        "ConvVAE.__init__", "ConvVAE.encode", "ConvVAE.decode", "vae_elbo", "ConvVAE.elbo", "fit_ppca",
        "ppca_log_likelihood", "ppca_posterior_mean", "gmm_log_likelihood", "gmm_em_step"}


# ---- grading -------------------------------------------------------------------------------------

def test_reference_copy_gets_full_unit_marks(tmp_path, rubric):
    result = grade_submission(make_submission(tmp_path, "refcopy"), rubric, GradeOptions(device="cpu", only=unit_tags(rubric)))
    failed = [(t.check, t.output) for t in result.tests if t.status != "passed"]
    assert not failed, failed
    assert result.autograded_score == sum(c.points for c in rubric.select(unit_tags(rubric)))


FAMILIES = {  # components that can interact (composites); unrelated families are graded apart
    "conv_vae": ["conv_vae.architecture", "conv_vae.encode", "conv_vae.decode", "vae_elbo", "conv_vae.elbo"],
    "ppca": ["ppca.fit", "ppca.log_likelihood", "ppca.posterior"],
    "gmm": ["gmm.log_likelihood", "gmm.em_step", "interface"],  # interface: gmm_em_step's reg
}


@functools.lru_cache(maxsize=None)
def _component_of(mutant_id: str) -> str:
    from grader.rubric import available_rubrics

    return next(m.component for m in available_rubrics()["density-models"].mistakes if m.id == mutant_id)


def _groups() -> list[tuple[str, ...]]:
    """Mutants in groups of at most one per family: families share no code, so planting one mistake
    per family in the same submission tests each as if alone (and starts 9 sandboxes, not 23)."""
    by_family = {f: sorted(i for i in MUTANTS if _component_of(i) in comps) for f, comps in FAMILIES.items()}
    n = max(len(v) for v in by_family.values())
    return [tuple(v[i] for v in by_family.values() if i < len(v)) for i in range(n)]


@pytest.mark.parametrize("group", _groups(), ids=lambda g: "+".join(g))
def test_each_planted_mistake_costs_points_on_its_component_only_and_is_named(tmp_path, rubric, group):
    sub = make_submission(tmp_path, "m_" + "_".join(group), "".join(mutant_source(MUTANTS[i]) for i in group))
    result = grade_submission(sub, rubric, GradeOptions(device="cpu", only=unit_tags(rubric)))
    assert not result.errors, result.errors
    lost = lost_by_component(result)
    components = {_component_of(i): i for i in group}
    for mistake_id in group:
        component = _component_of(mistake_id)
        assert lost.get(component, 0) > 0, f"{mistake_id}: no points lost on {component}"
        assert mistake_id in named(result), f"{mistake_id} not diagnosed: " + " | ".join(
            t.output for t in result.tests if t.component == component and t.status != "passed")
    elsewhere = {c: v for c, v in lost.items() if c not in components}
    assert not elsewhere, f"{group}: points also lost on {elsewhere}: " + "; ".join(
        f"{t.check}: {t.output}" for t in result.tests if t.component in elsewhere and t.status != "passed")


def test_every_mutant_is_in_a_group():
    assert sorted(i for g in _groups() for i in g) == sorted(MUTANTS)


def test_families_cover_every_unit_component(rubric):
    assert sorted(c for f in FAMILIES.values() for c in f) == sorted(unit_tags(rubric))


@pytest.mark.parametrize("extra, component, message", [
    ("\ndel gmm_em_step\n", "gmm.em_step", "`gmm_em_step` is missing"),
    ("\n_ref_fit = fit_ppca\ndef fit_ppca(X, q):\n    W, mu, s2 = _ref_fit(X, q)\n    return W.numpy(), mu, s2\n",
     "ppca.fit", "numpy"),
    ("\ndef ppca_log_likelihood(X, W, mu, sigma2):\n    return X.sum()\n", "ppca.log_likelihood", "shape"),
    ("\ndef _boom(self, z):\n    raise NotImplementedError('TODO')\nConvVAE.decode = _boom\n", "conv_vae.decode", "NotImplementedError"),
])
def test_broken_components_get_zero_with_a_clear_message(tmp_path, rubric, extra, component, message):
    result = grade_submission(make_submission(tmp_path, "broken", extra), rubric, GradeOptions(device="cpu", only=[component]))
    assert result.tests and all(t.component == component for t in result.tests)
    assert sum(t.score for t in result.tests) < sum(t.max_score for t in result.tests)
    text = " ".join(t.output for t in result.tests)
    assert message in text, text


# ---- the examples ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples(rubric, tmp_path_factory):
    import os

    os.environ["GRADEKIT_CACHE"] = str(tmp_path_factory.mktemp("dm-cache"))
    out = tmp_path_factory.mktemp("dm-out")
    opts = GradeOptions(device="cpu", model_overrides=TINY, out_dir=out)
    return out, {name: grade_submission(SUBMISSIONS / name, rubric, opts) for name in ("frank", "grace")}


def test_frank_written_differently_but_correct_gets_full_marks_with_figures_and_table(examples, rubric):
    out, graded = examples
    frank = graded["frank"]
    assert not frank.errors, frank.errors
    assert lost_by_component(frank) == {}, [(t.check, t.output) for t in frank.tests if t.status != "passed"]
    assert frank.autograded_score == pytest.approx(sum(c.points for c in rubric.checks))
    from grader.checks.density_models import comparison_key

    for model in ("conv_vae", "ppca", "gmm"):  # the comparison table: one row per model and metric
        ll, mse = (frank.metrics[comparison_key(model, m)] for m in ("log_likelihood", "reconstruction_mse"))
        for who in ("student", "reference"):
            assert math.isfinite(ll[who]) and 0 <= mse[who] < 0.2, (model, ll, mse)
        assert ll["student"] == pytest.approx(ll["reference"], rel=0.05, abs=0.05), model
    assert {Path(f["path"]).name for f in frank.figures} >= {"model_comparison.png", "latent_clusters.png", "latent_grid.png"}
    for f in frank.figures:
        assert (out / "frank" / f["path"]).is_file(), f
    assert all(q.answer for q in frank.questions)


def test_grace_loses_points_exactly_where_her_mistakes_are_and_each_is_named(examples):
    grace = examples[1]["grace"]
    assert not grace.errors, grace.errors
    lost = lost_by_component(grace)
    assert set(lost) - {"model"} == {"vae_elbo", "ppca.fit", "ppca.log_likelihood", "gmm.log_likelihood"}, lost
    assert named(grace) == {"kl_wrong_sign", "sigma2_smallest_eigenvalue", "missing_log_det", "no_logsumexp"}
    model = {t.check: t for t in grace.tests if t.component == "model"}
    assert model["model.ppca"].score < model["model.ppca"].max_score  # a wrong sigma2 fits the test digits worse
    assert model["model.vae_elbo"].score < model["model.vae_elbo"].max_score  # maximising the KL spoils training
    assert model["model.gmm"].score == model["model.gmm"].max_score  # her EM step is right
    assert grace.metrics["reference_cache"] == "reused"  # trained once for frank, cached
    assert "Likely cause" in model["model.vae_elbo"].output


@pytest.mark.parametrize("latent_dim, side", [(2, 8), (3, 28)])
def test_the_checks_parameter_table_is_the_references_architecture(latent_dim, side):
    from grader.checks.density_models import param_shapes

    got = {k: tuple(v.shape) for k, v in R.ConvVAE(latent_dim, side).state_dict().items()}
    assert got == param_shapes(latent_dim, side)


MNIST = Path("/work/shared/data/mnist")


@pytest.mark.skipif(not MNIST.is_dir(), reason="no local MNIST (optional)")
def test_mnist_scales_to_unit_interval_and_fits_the_28x28_architecture():
    from grader.checks.density_models_model import Settings, load_data

    data = load_data(Settings(data=f"mnist:{MNIST}"))
    assert data.image_shape == (28, 28) and data.x_train.shape[1] == 784
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    m = R.ConvVAE(latent_dim=2, image_size=28)
    x = torch.from_numpy(data.x_test[:16]).float().view(-1, 1, 28, 28)
    e = m.elbo(x)
    assert e.shape == (16,) and torch.isfinite(e).all()


def test_vae_elbo_with_an_epsilon_inside_the_log_passes_the_values_check(tmp_path, rubric):
    """log(p + 1e-8) instead of clamping differs from the reference by ~1e-8 per pixel: within the
    rubric's float64 tolerance (was a hard-coded 1e-8: "got -67.2587, expected -67.2587")."""
    extra = ("\ndef vae_elbo(x, probs, mu, log_var):\n"
             "    log_lik = (x * torch.log(probs + 1e-8) + (1 - x) * torch.log(1 - probs + 1e-8)).flatten(1).sum(1)\n"
             "    return log_lik - 0.5 * (torch.exp(log_var) + mu ** 2 - 1 - log_var).sum(1)\n")
    result = grade_submission(make_submission(tmp_path, "eps", extra), rubric, GradeOptions(device="cpu", only=["vae_elbo"]))
    values = [t for t in result.tests if t.check == "vae_elbo.values"]
    assert values and values[0].score == values[0].max_score, values[0].output


@pytest.mark.parametrize("noise, correct", [
    ("torch.randn_like(mu)", True),
    ("torch.distributions.Normal(torch.zeros_like(mu), 1.0).sample()", True),
    ("torch.stack([torch.randn(mu.shape[1]) for _ in range(mu.shape[0])])", True),  # a loop: another stream
    ("torch.rand_like(mu)", False),  # uniform on [0, 1): found by bench_validity, scored full marks before
    ("0.5 * torch.randn_like(mu)", False),
])
def test_conv_vae_elbo_draws_standard_normal_noise(tmp_path, noise, correct):
    """ConvVAE.elbo(x) without eps is judged by the distribution of its ELBO over 200 fresh draws per example
    (mean and spread against standard-normal noise); any N(0, I) stream passes, a uniform or rescaled one
    costs points on conv_vae.elbo only."""
    from grader.engine import find_assignment

    sub = tmp_path / noise.split("(")[0].replace(".", "_").replace(" ", "")
    sub.mkdir()
    src = (SUBMISSIONS / "frank" / "density_models.py").read_text()
    assert "torch.randn_like(mu) if eps is None" in src
    (sub / "density_models.py").write_text(src.replace("torch.randn_like(mu) if eps is None", f"{noise} if eps is None"))
    rubric = find_assignment(SUBMISSIONS / "frank", None)
    result = grade_submission(sub, rubric, GradeOptions(device="cpu", only=["conv_vae.elbo"], out_dir=tmp_path / "out"))
    lost = {t.check: t.max_score - t.score for t in result.tests if t.score < t.max_score}
    if correct:
        assert not lost, [t.output for t in result.tests]
    else:
        assert set(lost) == {"conv_vae.elbo.value"} and 0 < lost["conv_vae.elbo.value"] < 1, lost
        out = next(t.output for t in result.tests if t.check == "conv_vae.elbo.value")
        assert "eps ~ N(0, I)" in out and "randn_like" in out


@pytest.mark.slow
def test_a_correct_conv_vae_cut_by_the_time_budget_is_compared_with_the_reference_at_the_same_epochs(tmp_path,
                                                                                                      monkeypatch):
    """A correct but slow ConvVAE (a sleep in every elbo call) stops at the time budget after fewer epochs
    than the reference (which trains without one): it is compared with the reference at as many epochs."""
    from grader.engine import find_assignment

    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "cache"))
    sub = tmp_path / "slow_vae"
    sub.mkdir()
    src = (SUBMISSIONS / "frank" / "density_models.py").read_text()
    src += ("\nimport time as _time\n_orig_elbo = ConvVAE.elbo\n"
            "def _slow(self, x, eps=None):\n    _time.sleep(0.05)\n    return _orig_elbo(self, x, eps)\n"
            "ConvVAE.elbo = _slow\n")
    (sub / "density_models.py").write_text(src)
    rubric = find_assignment(SUBMISSIONS / "frank", None)
    opts = GradeOptions(device="cpu", only=["model"], model_overrides={**TINY, "epochs": 10, "time_budget_s": 2})
    result = grade_submission(sub, rubric, opts)
    vae = [t for t in result.tests if t.check in ("model.vae_elbo", "model.reconstruction")]
    assert vae and all("trained for the same" in t.output for t in vae), [t.output for t in vae]
    assert all(t.score == t.max_score for t in vae), [t.output for t in vae]
