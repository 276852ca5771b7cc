"""The vae assignment's training loop (grader/harnesses/vae.py, child side), its evaluation
(grader/checks/vae_evaluation.py) and grader.figures (grader side), with tiny budgets."""

from __future__ import annotations

import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from grader.data import load_dataset
from grader.harnesses.vae import TrainConfig, TrainHistory, build_mlp_nets, build_vae, train_vae

REPO = Path(__file__).resolve().parents[1]
TINY = dict(M=32, L=4, num_components=3, max_epochs=2, time_budget_s=10.0, batch_size=100, num_threads=1)


def _ref():
    return pytest.importorskip("reference.vae", reason="reference/vae.py has not landed yet")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits):
    """The reference VAE trained briefly on digits, standing in for a student's (same parameter names)."""
    ref = _ref()
    cfg = TrainConfig(M=32, L=4, num_components=3, max_epochs=5, time_budget_s=60.0,
                      num_threads=1)  # ~0.5 s unloaded
    model = build_vae(ref, digits.D, digits.num_vals, digits.likelihood, cfg)
    hist = train_vae(model, digits.x_train, digits.x_val, cfg)
    return cfg, model, hist


# ---- stand-in "student" modules (no reference code needed) ---------------------------------------

class _Prior(nn.Module):
    def __init__(self, L, num_components):
        super().__init__()
        self.means = nn.Parameter(torch.zeros(num_components, L))


def _standin(forward):
    """A module with MoGPrior and a VAE whose forward is `forward(self, x, reduction)`."""
    class VAE(nn.Module):
        def __init__(self, encoder_net, decoder_net, prior, num_vals=256, L=16, likelihood_type="categorical"):
            super().__init__()
            self.enc, self.dec, self.prior = encoder_net, decoder_net, prior
            self.calls = 0

        def forward(self, x, reduction="avg"):
            self.calls += 1
            return forward(self, x, reduction)

    return types.SimpleNamespace(MoGPrior=_Prior, VAE=VAE)


def _mse_loss(self, x, reduction):  # a well-behaved loss that depends on the weights
    err = ((self.dec(self.enc(x / 16)[:, :4]) [:, :64] - x / 16) ** 2).sum(1)
    return err.mean() if reduction == "avg" else err.sum()


def _fit(module, digits, **kw):
    cfg = TrainConfig(**{**TINY, **kw})
    model = build_vae(module, digits.D, digits.num_vals, digits.likelihood, cfg)
    return model, train_vae(model, digits.x_train, digits.x_val, cfg)


# ---- training ----------------------------------------------------------------------------------

def test_build_mlp_nets_shapes():
    enc, dec = build_mlp_nets(64, 16, 32, 17, "categorical")
    assert enc(torch.zeros(3, 64)).shape == (3, 32) and dec(torch.zeros(3, 16)).shape == (3, 64 * 17)
    assert build_mlp_nets(784, 8, 32, 2, "bernoulli")[1](torch.zeros(2, 8)).shape == (2, 784)
    assert [type(m).__name__ for m in enc] == ["Linear", "LeakyReLU", "Linear", "LeakyReLU", "Linear"]
    with pytest.raises(ValueError):
        build_mlp_nets(64, 16, 32, 17, "gaussian")


def test_training_reduces_the_loss_and_keeps_the_best_weights(trained):
    cfg, model, hist = trained
    assert hist.stopped_because in ("max_epochs", "early_stopping", "time_budget"), hist.message
    assert len(hist.val_loss) >= 2, hist.message  # a loaded machine may cut it short, not that short
    assert hist.val_loss[-1] < hist.val_loss[0] - 5 and hist.train_loss[-1] < hist.train_loss[0]
    assert hist.epochs == list(range(1, len(hist.val_loss) + 1))
    assert hist.best_val_loss == min(hist.val_loss)
    assert hist.state_dict and all(a.dtype == np.float32 for a in hist.state_dict.values())
    for k, v in model.state_dict().items():  # the model ends with the best weights
        np.testing.assert_array_equal(v.numpy(), hist.state_dict[k])
    assert {"prior.means", "prior.logvars", "prior.w", "encoder.encoder.0.weight", "decoder.decoder.4.bias"} <= set(hist.state_dict)
    again = TrainHistory.from_dict(hist.to_dict())
    assert again.val_loss == hist.val_loss and again.state_dict.keys() == hist.state_dict.keys()


def test_training_is_reproducible_and_leaves_global_rng_alone(digits):
    module = _standin(_mse_loss)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    _, h1 = _fit(module, digits)
    after = torch.rand(3)
    _, h2 = _fit(module, digits)
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss
    assert torch.equal(before, after)


def test_nan_loss_stops_with_diverged(digits):
    def nan_after_3(self, x, reduction):
        loss = _mse_loss(self, x, reduction)
        return loss * float("nan") if self.calls > 3 else loss

    _, hist = _fit(_standin(nan_after_3), digits)
    assert hist.stopped_because == "diverged" and "nan" in hist.message
    assert hist.best_epoch == 0 and hist.state_dict  # the initial weights, never validated
    assert hist.batches == 3


@pytest.mark.parametrize("forward, words", [
    (lambda self, x, r: 1 / 0, "ZeroDivisionError"),
    (lambda self, x, r: 3.0, "float"),
    (lambda self, x, r: torch.ones(2, requires_grad=True), "shape (2,)"),
    (lambda self, x, r: torch.tensor(1.0), "does not require grad"),
])
def test_broken_forward_is_recorded_not_raised(digits, forward, words):
    _, hist = _fit(_standin(forward), digits)
    assert hist.stopped_because == "error" and words in hist.message


def test_num_threads_is_restored(digits):
    threads = torch.get_num_threads()
    _fit(_standin(_mse_loss), digits, num_threads=1, max_epochs=1)
    assert torch.get_num_threads() == threads


def test_time_budget_and_early_stopping(digits):
    _, hist = _fit(_standin(_mse_loss), digits, time_budget_s=0.0)
    assert hist.stopped_because == "time_budget" and hist.epochs == [] and hist.batches == 0

    def never_better(self, x, reduction):  # training loss can fall, validation loss never improves
        loss = _mse_loss(self, x, reduction)
        return loss if self.training else loss.detach() * 0 + 1.0 * len(x)

    _, hist = _fit(_standin(never_better), digits, patience=2, max_epochs=10)
    assert hist.stopped_because == "early_stopping" and hist.epochs == [1, 2, 3] and hist.best_epoch == 1


def test_child_side_never_imports_the_reference():
    code = ("import sys, grader.harnesses.vae; bad = [m for m in sys.modules if m.split('.')[0] == 'reference' "
            "or m in ('grader.checks.vae_evaluation', 'grader.figures', 'matplotlib')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


# ---- evaluation --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded(trained):
    from grader.checks.vae_evaluation import load_reference_model

    cfg, model, hist = trained
    d = load_dataset("digits")
    return load_reference_model(hist.state_dict, d.D, cfg.L, cfg.M, d.num_vals, d.likelihood, cfg.num_components)


def test_state_dict_round_trip_into_the_reference(trained, loaded, digits):
    from grader.checks.vae_evaluation import negative_elbo

    cfg, model, hist = trained
    x = digits.x_test[:50]
    with torch.no_grad():
        assert torch.equal(loaded.encoder.encode(x)[0], model.encoder.encode(x)[0])
    assert negative_elbo(loaded, x, seed=3) == negative_elbo(model, x, seed=3)


def test_load_reference_model_names_what_is_missing_and_ignores_extra_buffers(trained, digits):
    from grader.checks.vae_evaluation import load_reference_model

    cfg, _, hist = trained
    sd = dict(hist.state_dict)
    sd["prior.extra"] = np.zeros(cfg.num_components + 1, np.float32)  # an extra buffer plays no role: ignored
    load_reference_model(sd, digits.D, cfg.L, cfg.M, digits.num_vals, digits.likelihood, cfg.num_components)
    # no mixture weights at all: the student's model used equal ones, and so does the loaded model (the
    # interface check charges the missing weights once; model level grades the model as it is)
    del sd["prior.w"], sd["prior.extra"]
    model = load_reference_model(sd, digits.D, cfg.L, cfg.M, digits.num_vals, digits.likelihood, cfg.num_components)
    w = torch.softmax(model.prior.w.detach().reshape(-1), 0)
    assert torch.allclose(w, torch.full_like(w, 1.0 / cfg.num_components))
    sd = dict(hist.state_dict)
    del sd["encoder.encoder.0.weight"]
    with pytest.raises(ValueError, match="encoder.encoder"):
        load_reference_model(sd, digits.D, cfg.L, cfg.M, digits.num_vals, digits.likelihood, cfg.num_components)


def test_importance_sampling_bound_and_k1_matches_the_elbo(loaded, digits):
    from grader.checks.vae_evaluation import negative_elbo, nll_importance_sampling

    x = digits.x_test
    neg_elbo = np.mean([negative_elbo(loaded, x, seed=s) for s in range(4)])
    nll1 = np.mean([nll_importance_sampling(loaded, x, K=1, seed=10 + s).mean() for s in range(4)])
    nll100 = nll_importance_sampling(loaded, x, K=100, batch_size=64)
    assert nll100.shape == (len(x),) and np.isfinite(nll100).all()
    # K=1 is one ELBO sample: equal in expectation (4×447 samples: well within 0.5 %)
    assert abs(nll1 - neg_elbo) < 0.005 * neg_elbo
    # the importance-sampled bound is tighter: −log p̂_K(x) ≤ −ELBO on average, and it tightens with K
    assert nll100.mean() <= neg_elbo + 0.05
    assert nll100.mean() <= nll_importance_sampling(loaded, x, K=10).mean() + 0.05 <= nll1 + 0.1
    assert nll100.mean() > neg_elbo - 0.2 * neg_elbo  # but not absurdly far below
    # seeded and independent of batching in the number of examples
    np.testing.assert_array_equal(nll_importance_sampling(loaded, x[:20], K=5, seed=1),
                                  nll_importance_sampling(loaded, x[:20], K=5, seed=1))


def test_importance_weights_use_the_reference_decoders_log_prob_bit_for_bit(trained, loaded, digits):
    """evaluation's gathered log p(x|z) is the reference Decoder.log_prob's number exactly (categorical and
    Bernoulli), so the faster importance sampling changes no metric."""
    from grader.checks.vae_evaluation import _decoder_log_prob

    g = torch.Generator().manual_seed(0)
    x = digits.x_test[:200]
    z = torch.randn(len(x), trained[0].L, generator=g) * 3  # far from the data too
    with torch.no_grad():
        assert torch.equal(_decoder_log_prob(loaded, x, z), loaded.decoder.log_prob(x, z))
        ref = _ref()
        bern = ref.Decoder(nn.Sequential(nn.Linear(z.shape[1], digits.D)), distribution="bernoulli")
        xb = (x > 8).float()
        model = types.SimpleNamespace(decoder=bern)
        assert torch.equal(_decoder_log_prob(model, xb, z), bern.log_prob(xb, z))


def test_evaluate_and_diagnostics(loaded, digits):
    from grader.checks import vae_evaluation as ev

    x, y = digits.x_test[:120], digits.y_test[:120]
    r = ev.evaluate(loaded, x, y, K=20)
    assert r["n"] == 120 and r["finite"] and r["nll"] <= r["negative_elbo"] + 0.5
    assert set(r["per_class_loglik"]) == set(np.unique(y.numpy()).tolist())
    assert r["bits_per_dim"] == pytest.approx(r["nll"] / (64 * math.log(2)))
    assert 0 < r["reconstruction_mse"] < float(((x - x.mean()) ** 2).mean()) * 1.5
    assert len(r["kl_per_dim"]) == 4 and r["posterior_collapse"] > 0 and 0 <= r["active_units"] <= 4
    assert ev.per_class_loglik([1.0, 2.0, 4.0], np.array([0, 0, 3])) == {0: 1.5, 3: 4.0}
    rec = ev.reconstructions(loaded, x[:16], image_shape=(8, 8))
    assert rec.shape == (16, 8, 8) and rec.min() >= 0 and rec.max() <= 16
    s1, s2 = ev.samples(loaded, 9, seed=4), ev.samples(loaded, 9, seed=4)
    assert s1.shape == (9, 64) and np.array_equal(s1, s2)
    drawn = ev.samples(loaded, 9, seed=4, kind="sample")
    assert np.array_equal(drawn, drawn.round()) and drawn.max() <= 16


def test_figures_write_pngs(trained, loaded, digits, tmp_path):
    from grader import figures
    from grader.checks import vae_evaluation as ev

    _, _, hist = trained
    x = digits.x_test[:16]
    broken = {"train_loss": [5.0, float("nan")], "val_loss": [4.0, float("inf")], "epochs": [1, 2]}
    paths = [
        figures.loss_curves(hist, broken, tmp_path / "loss.png"),
        figures.loss_curves({"train_loss": []}, None, tmp_path / "empty.png"),
        figures.image_grid(x, ev.reconstructions(loaded, x), tmp_path / "recon.png", (8, 8)),
        figures.sample_grid(ev.samples(loaded, 10), tmp_path / "sub" / "samples.png", (8, 8)),
        figures.latent_projection(ev.encode_means(loaded, digits.x_test), digits.y_test, tmp_path / "latent.png"),
        figures.latent_projection(np.full((3, 2), np.nan), [0, 1, 2], tmp_path / "latent_nan.png"),
    ]
    for p in paths:
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_of_non_finite_weights_does_not_raise(trained, digits, tmp_path):
    from grader import figures
    from grader.checks import vae_evaluation as ev

    cfg, _, hist = trained
    sd = {k: np.full_like(v, np.nan) if k.startswith("decoder") else v for k, v in hist.state_dict.items()}
    m = ev.load_reference_model(sd, digits.D, cfg.L, cfg.M, digits.num_vals, digits.likelihood, cfg.num_components)
    r = ev.evaluate(m, digits.x_test[:30], digits.y_test[:30], K=3)
    assert not r["finite"] and math.isnan(r["nll"])
    s = ev.samples(m, 8, kind="sample")
    assert s.shape == (8, 64) and np.isfinite(s).all()
    figures.image_grid(digits.x_test[:16], ev.reconstructions(m, digits.x_test[:16]), tmp_path / "nan.png", (8, 8))


def test_a_budget_cut_mid_epoch_counts_only_the_completed_epochs(digits):
    """The time budget runs out in the middle of epoch 2 (one slow batch): the history counts epoch 1 only and the
    weights are those of a run of exactly 1 epoch, so the reference matched to the student's epochs is trained as
    far as the student's weights were (a partial epoch is not a full one)."""
    import time

    calls = {"train": 0}
    per_epoch = math.ceil(len(digits.x_train) / TINY["batch_size"])

    def slow_in_epoch_2(self, x, reduction):
        if self.training:
            calls["train"] += 1
            if calls["train"] == per_epoch + 2:  # epoch 2's second batch
                time.sleep(3.0)
        return _mse_loss(self, x, reduction)

    one_model, one = _fit(_standin(_mse_loss), digits, max_epochs=1, time_budget_s=1e9)  # (pays one-off imports)
    assert one.epochs == [1]
    model, cut = _fit(_standin(slow_in_epoch_2), digits, max_epochs=4, time_budget_s=2.0)
    assert cut.stopped_because == "time_budget" and "not counted" in cut.message, cut.message
    assert cut.epochs == [1] and cut.best_epoch == 1, f"only the completed epoch 1 may count, got {cut.epochs}"
    for k, want in one.state_dict.items():
        np.testing.assert_array_equal(cut.state_dict[k], want, err_msg=f"{k}: expected the weights after epoch 1")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), one_model.state_dict()[k].numpy(), err_msg=f"{k} in the model")
