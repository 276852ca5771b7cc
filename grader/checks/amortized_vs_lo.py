"""Checks of `amortized-vs-lo` (rubric: rubrics/amortized-vs-lo.toml, reference: reference/amortized_vs_lo.py).

Unit checks (one `check_<name>(ctx)` per rubric entry, own deterministic inputs): the student's
functions and classes run in the sandbox on inputs and networks built here, the reference runs on
the same inputs here, and mismatches are explained by the mutants of reference/amortized_vs_lo_mistakes.py.

Model-level checks (component "model"): the student's CNN, amortized VAE and latent-optimization
model are trained in the sandbox by grader/harnesses/amortized_vs_lo.py (the course loops); only
loss histories and weights come back. The weights are loaded into the *reference* classes and
evaluated here with reference code (accuracy, −ELBO, importance-sampled log p(x) per digit, train vs
test). The reference models are trained by the same harness once and cached (grader.model_cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from grader import glossary, roles
from grader.checks import (
    CheckContext, distance, StudentValueError, close, expect_any_variant, likely_causes,
    model_settings, UNBOUNDED_S, believed_epochs, note_epoch_matched, reference_at_students_epochs, relative_score, sequence, tensor,
    to_torch,
)
from grader.checks import properties
from grader.history import TrainingClaim, epochs_done
from grader.metrics import Metric
from grader.sandbox import nets

B, D, L = 6, 10, 3  # unit checks: batch, pixels, latent dimensions


def _f(a, dtype: str = "float32") -> np.ndarray:
    return np.asarray(a, dtype=dtype)


@contextlib.contextmanager
def _seed(seed: int, device):
    devices = [device.index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# ---- networks and objects shared by both sides ---------------------------------------------------

def _enc_spec(ctx, scale=1.0) -> dict:
    return nets.mlp_spec([D, 8, 2 * L], seed=ctx.seed + 11, scale=scale)


def _dec_spec(ctx, scale=2.0) -> dict:
    return nets.mlp_spec([L, 8, D], seed=ctx.seed + 12, scale=scale)


def _student_vae(ctx, name: str, enc_spec: dict, dec_spec: dict) -> dict:
    enc = {"__new__": {"class": "GaussianEncoder", "args": [{"__net__": enc_spec}]}}
    dec = {"__new__": {"class": "BernoulliDecoder", "args": [{"__net__": dec_spec}]}}
    return ctx.new(name, "VAE", enc, dec, L)


def _build(spec: dict, device) -> torch.nn.Module:
    """nets.build without touching the global RNG (nn.Linear's init would shift the seeded noise)."""
    with _seed(0, device):
        return nets.build(spec, device)


def _ref_vae(ctx, enc_spec: dict, dec_spec: dict):
    r = ctx.ref
    return r.VAE(r.GaussianEncoder(_build(enc_spec, ctx.device)), r.BernoulliDecoder(_build(dec_spec, ctx.device)), L)


def _lo_state(ctx, N: int, log_var: float | None = None) -> dict:
    mu = _f(ctx.rng.standard_normal((N, L)))
    lv = _f(np.full((N, L), log_var) if log_var is not None else ctx.rng.uniform(-2, 0.5, (N, L)))
    return {"mu": mu, "log_var": lv}


def _student_lo(ctx, name: str, dec_spec: dict, state: dict) -> dict:
    dec = {"__new__": {"class": "BernoulliDecoder", "args": [{"__net__": dec_spec}]}}
    return ctx.new(name, "LatentOptimizationVAE", dec, len(state["mu"]), L, state=state)


def _ref_lo(ctx, dec_spec: dict, state: dict):
    r = ctx.ref
    with _seed(0, ctx.device):
        m = r.LatentOptimizationVAE(r.BernoulliDecoder(_build(dec_spec, ctx.device)), len(state["mu"]), L).to(ctx.device)
    with torch.no_grad():
        m.mu.copy_(to_torch(state["mu"], ctx.device))
        m.log_var.copy_(to_torch(state["log_var"], ctx.device))
    return m


def _images(ctx, n: int, d: int = D) -> np.ndarray:
    """Pixel intensities in [0, 1] with exact 0s and 1s, like scaled digits."""
    x = ctx.rng.uniform(0, 1, (n, d))
    x[:, ::3] = 0.0
    x[:, 1::4] = 1.0
    return _f(x)


# ---- classifier ------------------------------------------------------------------------------------

def _cnn_state(ctx, image_size: int) -> dict:
    with _seed(ctx.seed, "cpu"):
        m = ctx.ref.CNNClassifier(num_classes=10, image_size=image_size)
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(3.0)  # logits of a few units: far from probabilities
    return {k: v.numpy().copy() for k, v in m.state_dict().items()}


def check_classifier_logits(ctx: CheckContext) -> None:
    for size, n in ((8, 5), (28, 2)):
        state = _cnn_state(ctx, size)
        x = _f(ctx.rng.uniform(0, 1, (n, 1, size, size)))
        obj = ctx.new(f"cnn{size}", "CNNClassifier", num_classes=10, image_size=size, state=state)
        reply = ctx.call(ctx.method(obj, "forward", "CNNClassifier.forward"), x, grad={"params": f"cnn{size}"})
        got = tensor(reply["result"], "CNNClassifier.forward", dtype="float32")
        # training reaches every layer (a detached activation, found by generated mutants, scored full marks)
        no_grad = sorted(k.removeprefix("param:") for k, g in (reply.get("grads") or {}).items() if g is None or not np.any(g))
        ctx.expect(bool(reply.get("grads")) and not no_grad, f"{size}×{size} images: gradients reach every parameter",
                   f"no gradient reaches {', '.join(no_grad) or 'any parameter'}: is an activation detached, or computed "
                   "under torch.no_grad()?")
        if not ctx.require(got.shape == (n, 10), f"{size}×{size} images: shape",
                           f"shape {got.shape}, expected {(n, 10)}: one logit per class"):
            continue

        def reference(patches, state=state, x=x, size=size):
            with ctx.patched(patches):
                m = ctx.ref.CNNClassifier(num_classes=10, image_size=size).to(ctx.device)
                m.load_state_dict({k: to_torch(v, ctx.device) for k, v in state.items()})
                with torch.no_grad():
                    return _np(m(to_torch(x, ctx.device)))

        ctx.expect_close(got, reference({}), f"{size}×{size} images: logits for given weights", 1e-4, 1e-4,
                         diagnose=lambda p, r=reference: distance(got, r(p), 1e-4, 1e-4))
    ctx.expect(True, "CNNClassifier builds for 8×8 and 28×28 images")


# ---- densities ----------------------------------------------------------------------------------

def check_log_normal_diag(ctx: CheckContext) -> None:
    cases = []
    for dtype, shape in (("float32", (4, 3)), ("float64", (5, 6))):
        z, mu = ctx.rng.standard_normal(shape), ctx.rng.standard_normal(shape)
        cases.append((f"{dtype} {shape}", _f(z, dtype), _f(mu, dtype), _f(ctx.rng.uniform(-3, 3, shape), dtype)))
    z = ctx.rng.standard_normal((7, 4, 3))
    mu, lv = ctx.rng.standard_normal((4, 3)), ctx.rng.uniform(-2, 2, (4, 3))
    cases.append(("z (M=7, B=4, L=3) against mu, log_var (4, 3)", _f(z), _f(mu), _f(lv)))
    # every argument 3-D, and a log_var broadcast from (L,): a sum over a fixed axis (dim=1) instead
    # of the last one only shows when log_var has leading dimensions of its own
    cases.append(("z, mu, log_var all (M=2, B=4, L=3)", _f(ctx.rng.standard_normal((2, 4, 3))),
                  _f(ctx.rng.standard_normal((2, 4, 3))), _f(ctx.rng.uniform(-2, 2, (2, 4, 3)))))
    cases.append(("log_var (L=3,) broadcast against z, mu (5, 3)", _f(ctx.rng.standard_normal((5, 3))),
                  _f(ctx.rng.standard_normal((5, 3))), _f(ctx.rng.uniform(-2, 2, (3,)))))
    cases.append(("extremes: log_var in [-10, 10]", _f(ctx.rng.standard_normal((3, 5)) * 30), _f(np.zeros((3, 5))),
                  _f(np.linspace(-10, 10, 15).reshape(3, 5))))
    for label, z, mu, lv in cases:
        dtype = z.dtype.name
        got = tensor(ctx.call("log_normal_diag", z, mu, lv)["result"], "log_normal_diag", dtype=dtype)
        rtol, atol = ctx.tolerance(dtype)

        def reference(patches, z=z, mu=mu, lv=lv):
            with ctx.patched(patches):
                return _np(ctx.ref.log_normal_diag(*(to_torch(a, ctx.device) for a in (z, mu, lv))))

        ctx.expect_close(got, reference({}), label, rtol, atol, diagnose=lambda p, r=reference: distance(got, r(p), rtol, atol))


def check_reparameterize_distribution(ctx: CheckContext) -> None:
    n = 20000
    mu = _f(np.repeat([[1.5, -2.0, 0.0]], n, 0))
    lv = _f(np.repeat([[0.8, -1.5, 2.0]], n, 0))
    z = tensor(ctx.call("reparameterize", mu, lv, seed=ctx.seed % 10000)["result"], "reparameterize", dtype="float32",
               finite=True)
    if not ctx.require(z.shape == mu.shape, "shape", f"shape {z.shape}, expected {mu.shape} (the shape of mu)"):
        return
    std = np.exp(0.5 * lv[0])
    # mean within 6 standard errors, std within 6 standard errors (n large: the sd's se is ~std/sqrt(2n))
    m_ok = np.all(np.abs(z.mean(0) - mu[0]) < 6 * std / math.sqrt(n))
    s_ok = np.all(np.abs(z.std(0) - std) < 6 * std / math.sqrt(2 * n))

    def diag(patches):
        with ctx.patched(patches), _seed(1, ctx.device):
            w = _np(ctx.ref.reparameterize(to_torch(mu, ctx.device), to_torch(lv, ctx.device)))
        return bool(np.allclose(w.std(0), z.std(0), rtol=0.05, atol=1e-3) and np.allclose(w.mean(0), z.mean(0), atol=0.1))

    if not (m_ok and s_ok):
        ctx.diagnose(diag)
    ctx.expect(m_ok, "sample mean equals mu", f"sample means {np.round(z.mean(0), 3)}, expected {mu[0]}")
    ctx.expect(s_ok, "sample std equals exp(0.5·log_var)", f"sample stds {np.round(z.std(0), 3)}, expected {np.round(std, 3)}")


def check_reparameterize_gradients(ctx: CheckContext) -> None:
    mu, lv = _f(ctx.rng.standard_normal((4, L))), _f(ctx.rng.uniform(-1, 1, (4, L)))
    reply = ctx.call("reparameterize", mu, lv, seed=3, grad={"inputs": ["args.0", "args.1"], "cotangent": None})
    z = tensor(reply["result"], "reparameterize", dtype="float32", finite=True)
    grads = reply.get("grads") or {}
    g_mu, g_lv = grads.get("args.0"), grads.get("args.1")
    ctx.expect(g_mu is not None and close(g_mu, np.ones_like(mu), 1e-4, 1e-5), "dz/dmu = 1",
               "no gradient reaches mu" if g_mu is None else "dz/dmu should be 1 for every element")
    want = 0.5 * (z - mu)  # z = mu + exp(0.5·lv)·eps  =>  dz/dlv = 0.5·(z − mu)
    ok = g_lv is not None and close(g_lv, want, 1e-3, 1e-4)
    if not ok:
        def diag(patches):
            with ctx.patched(patches), _seed(3, ctx.device):
                m, l = to_torch(mu, ctx.device).requires_grad_(), to_torch(lv, ctx.device).requires_grad_()
                out = ctx.ref.reparameterize(m, l)
                if not out.requires_grad:
                    return g_lv is None
                gl = torch.autograd.grad(out.sum(), l, allow_unused=True)[0]
            return (gl is None and g_lv is None) or (gl is not None and g_lv is not None and close(g_lv, _np(gl), 1e-3, 1e-4))
        ctx.diagnose(diag)
    ctx.expect(ok, "dz/dlog_var = 0.5·(z − mu)", "no gradient reaches log_var" if g_lv is None else
               "the gradient w.r.t. log_var is not 0.5·exp(0.5·log_var)·eps")
    z2 = tensor(ctx.call("reparameterize", mu, lv, seed=4)["result"], "reparameterize", finite=True)
    ctx.expect(not np.allclose(z, z2), "fresh noise on every call", "two calls with different seeds gave the same z")


def check_kl(ctx: CheckContext) -> None:
    for label, shape in (("(B=5, L=3)", (5, 3)), ("(M=4, B=2, L=6)", (4, 2, 6))):
        mu, lv = _f(ctx.rng.standard_normal(shape) * 2), _f(ctx.rng.uniform(-4, 3, shape))
        got = tensor(ctx.call("kl_standard_normal", mu, lv)["result"], "kl_standard_normal", dtype="float32")

        def reference(patches, mu=mu, lv=lv):
            with ctx.patched(patches):
                return _np(ctx.ref.kl_standard_normal(to_torch(mu, ctx.device), to_torch(lv, ctx.device)))

        ctx.expect_close(got, reference({}), label, 1e-4, 1e-4, diagnose=lambda p, r=reference: distance(got, r(p), 1e-4, 1e-4))
    got = tensor(ctx.call("kl_standard_normal", _f(np.zeros((2, 4))), _f(np.zeros((2, 4))))["result"], "kl_standard_normal")
    ctx.expect_close(got, np.zeros(2), "KL(N(0, I) ‖ N(0, I)) = 0, one per example", 0, 1e-6)  # says a shape


# ---- encoder / decoder -----------------------------------------------------------------------------

def check_encoder(ctx: CheckContext) -> None:
    spec = _enc_spec(ctx)
    x = _images(ctx, B)
    enc = ctx.new("enc", "GaussianEncoder", {"__net__": spec})
    mu, lv = (tensor(v, "GaussianEncoder.forward") for v in sequence(
        ctx.call(ctx.method(enc, "forward", "GaussianEncoder.forward"), x)["result"], "GaussianEncoder.forward", 2))

    def reference(patches):
        with ctx.patched(patches), torch.no_grad():
            m, l = ctx.ref.GaussianEncoder(nets.build(spec, ctx.device))(to_torch(x, ctx.device))
        return np.stack([_np(m), _np(l)])

    got = np.stack([mu, lv]) if mu.shape == lv.shape else mu
    ctx.expect_close(got, reference({}), "(mu, log_var) for given weights",
                     diagnose=lambda p: distance(got, reference(p), 1e-4, 1e-5))


def check_decoder_forward(ctx: CheckContext) -> None:
    spec = _dec_spec(ctx)
    dec = ctx.new("dec", "BernoulliDecoder", {"__net__": spec})
    for label, shape in (("z (B, L)", (B, L)), ("z (M=3, B, L)", (3, B, L))):
        z = _f(ctx.rng.standard_normal(shape) * 2)
        first = shape == (B, L)
        reply = ctx.call(ctx.method(dec, "forward", "BernoulliDecoder.forward"), z,
                         grad={"params": "dec", "inputs": ["args.0"], "cotangent": None} if first else None)
        got = tensor(reply["result"], "BernoulliDecoder.forward", dtype="float32")
        if first:  # training reaches z and the network (a detached output, found by generated mutants, scored full marks)
            grads = reply.get("grads") or {}
            no_grad = sorted(k.removeprefix("param:").replace("args.0", "z") for k, g in grads.items()
                             if g is None or not np.any(g))
            ctx.expect(bool(grads) and not no_grad, "gradients reach z and every parameter of the network",
                       f"no gradient reaches {', '.join(no_grad) or 'z or any parameter'}: is the output detached, "
                       "or computed under torch.no_grad()?")

        def reference(patches, z=z):
            with ctx.patched(patches), torch.no_grad():
                return _np(ctx.ref.BernoulliDecoder(nets.build(spec, ctx.device))(to_torch(z, ctx.device)))

        ctx.expect_close(got, reference({}), f"{label}: pixel probabilities",
                         diagnose=lambda p, r=reference: distance(got, r(p), 1e-4, 1e-5))
    ctx.expect(True, "BernoulliDecoder builds around the given network")


def check_decoder_log_prob(ctx: CheckContext) -> None:
    spec = _dec_spec(ctx, scale=6.0)  # saturated probabilities: clamping matters
    dec = ctx.new("dec", "BernoulliDecoder", {"__net__": spec})
    x = _images(ctx, B)
    for label, shape in (("z (B, L)", (B, L)), ("z (M=4, B, L): broadcast over M", (4, B, L))):
        z = _f(ctx.rng.standard_normal(shape) * 2)
        got = tensor(ctx.call(ctx.method(dec, "log_prob", "BernoulliDecoder.log_prob"), x, z)["result"],
                     "BernoulliDecoder.log_prob", dtype="float32")

        def reference(patches, z=z):
            with ctx.patched(patches), torch.no_grad():
                return _np(ctx.ref.BernoulliDecoder(nets.build(spec, ctx.device)).log_prob(to_torch(x, ctx.device),
                                                                                         to_torch(z, ctx.device)))

        expect_any_variant(ctx, got, reference, f"{label}: log p(x|z) per example", 1e-4, 1e-3)


# ---- ELBO ------------------------------------------------------------------------------------------

def _elbo_reference(ctx, spec, x, mu, lv, seed):
    def reference(patches):
        with ctx.patched(patches), torch.no_grad(), _seed(seed, ctx.device):
            dec = ctx.ref.BernoulliDecoder(_build(spec, ctx.device))
            return _np(ctx.ref.elbo(dec, *(to_torch(a, ctx.device) for a in (x, mu, lv))))
    return reference


def check_elbo_value(ctx: CheckContext) -> None:
    spec = _dec_spec(ctx)
    x = _images(ctx, B)
    dec = {"__new__": {"class": "BernoulliDecoder", "args": [{"__net__": spec}]}}
    # (1) a nearly deterministic posterior far from the prior: z ≈ mu, so the value does not depend on the noise
    mu, lv = _f(ctx.rng.standard_normal((B, L)) * 2), _f(np.full((B, L), -18.0))
    got = tensor(ctx.call("elbo", dec, x, mu, lv, seed=5)["result"], "elbo", dtype="float32")
    if ctx.require(got.shape == (B,), "shape", f"shape {got.shape}, expected ({B},): one ELBO per example"):
        expect_any_variant(ctx, got, _elbo_reference(ctx, spec, x, mu, lv, 5), "narrow posterior: log p(x|mu) − KL", 1e-4, 1e-3)
    # (2) a broad posterior: the mean over many noise draws agrees with the reference's (Monte Carlo)
    n = 4000
    xr = np.repeat(x[:1], n, 0)
    mur, lvr = np.repeat(mu[:1], n, 0), _f(np.repeat(ctx.rng.uniform(-1, 0.5, (1, L)), n, 0))
    got = tensor(ctx.call("elbo", dec, xr, mur, lvr, seed=6)["result"], "elbo", dtype="float32", finite=True)
    if not ctx.require(got.shape == (n,), "shape", f"shape {got.shape}, expected ({n},)"):
        return

    def mc(patches):
        w = _elbo_reference(ctx, spec, xr, mur, lvr, 7)(patches)
        return w.mean(), w.std() / math.sqrt(n)

    def mc_distance(patches):  # in units of the Monte-Carlo tolerance (6 standard errors of the difference)
        want, se = mc(patches)
        return abs(got.mean() - want) / (6 * math.sqrt(2) * se + 1e-4)

    ok = mc_distance({}) <= 1
    if not ok and not ctx.mistakes:  # the narrow case names a mistake exactly; this one only statistically
        ctx.diagnose(mc_distance)
    want, se = mc({})
    ctx.expect(ok, "broad posterior: mean ELBO over 4000 draws",
               f"mean {got.mean():.4f}, expected {want:.4f} ± {6 * se:.3f}")


def check_elbo_gradients(ctx: CheckContext) -> None:
    spec = _dec_spec(ctx)
    x = _images(ctx, B)
    dec = ctx.new("dec", "BernoulliDecoder", {"__net__": spec})
    mu, lv = _f(ctx.rng.standard_normal((B, L))), _f(ctx.rng.uniform(-1, 0.5, (B, L)))
    reply = ctx.call("elbo", dec, x, mu, lv, seed=8, grad={"inputs": ["args.2", "args.3"], "cotangent": None, "params": "dec"})
    grads = reply.get("grads") or {}
    ctx.expect(grads.get("args.2") is not None and np.abs(grads["args.2"]).sum() > 0, "gradient reaches mu",
               "no gradient reaches mu (detached, or computed outside torch?)")
    ctx.expect(grads.get("args.3") is not None and np.abs(grads["args.3"]).sum() > 0, "gradient reaches log_var",
               "no gradient reaches log_var")
    ctx.expect(any(k.startswith("param:") and v is not None and np.abs(v).sum() > 0 for k, v in grads.items()),
               "gradient reaches the decoder's weights", "no gradient reaches the decoder's parameters")


# ---- amortized VAE -----------------------------------------------------------------------------------

def check_vae_elbo(ctx: CheckContext) -> None:
    # encoder biases push log_var very low: z ≈ mu, so the ELBO is (nearly) deterministic
    enc, dec = _enc_spec(ctx), _dec_spec(ctx)
    enc["state"][f"{len(enc['layers']) - 1}.bias"][L:] = -18.0
    x = _images(ctx, B)
    vae = _student_vae(ctx, "vae", enc, dec)
    got = tensor(ctx.call(ctx.method(vae, "elbo", "VAE.elbo"), x, seed=9)["result"], "VAE.elbo", dtype="float32")
    if not ctx.require(got.shape == (B,), "shape", f"shape {got.shape}, expected ({B},): one ELBO per example"):
        return

    def reference(patches):
        with ctx.patched(patches), torch.no_grad(), _seed(9, ctx.device):
            return _np(_ref_vae(ctx, enc, dec).elbo(to_torch(x, ctx.device)))

    if close(got, reference({}), 1e-4, 1e-3) or not _same_elbo_in_expectation(ctx, vae, enc, dec, x[:1]):
        expect_any_variant(ctx, got, reference, "ELBO per example through the encoder", 1e-4, 1e-3)
        return
    ctx.expect(True, "ELBO per example through the encoder (in expectation)")
    ctx.notes.append("Your VAE.elbo differs from log p(x|z) − KL(q‖p) draw by draw but agrees with it in expectation "
                     "(e.g. the KL term estimated as log q(z|x) − log p(z) at the sampled z): accepted.")


def _same_elbo_in_expectation(ctx, vae: dict, enc: dict, dec: dict, x1: np.ndarray, n: int = 4000) -> bool:
    """Whether the student's VAE.elbo, averaged over `n` noise draws for one image, agrees with the
    reference's average within 6 standard errors of the difference: another unbiased estimator of
    the same ELBO (a Monte-Carlo KL, several samples) is correct code, not a mistake."""
    xr = np.repeat(x1, n, 0)
    got = tensor(ctx.call(ctx.method(vae, "elbo", "VAE.elbo"), xr, seed=19)["result"], "VAE.elbo", dtype="float32")
    if got.shape != (n,) or not np.isfinite(got).all():
        return False
    with torch.no_grad(), _seed(19, ctx.device):
        want = _np(_ref_vae(ctx, enc, dec).elbo(to_torch(xr, ctx.device))).astype(np.float64)
    se = math.sqrt(got.astype(np.float64).var() / n + want.var() / n)
    return abs(float(got.mean()) - float(want.mean())) <= 6 * se + 1e-4 * abs(float(want.mean())) + 1e-4


def check_vae_gradients(ctx: CheckContext) -> None:
    vae = _student_vae(ctx, "vae", _enc_spec(ctx), _dec_spec(ctx))
    reply = ctx.call(ctx.method(vae, "elbo", "VAE.elbo"), _images(ctx, B), seed=10,
                     grad={"params": "vae", "cotangent": None})
    grads = {k[len("param:"):]: v for k, v in (reply.get("grads") or {}).items()}
    for part in ("encoder", "decoder"):
        got = [v for k, v in grads.items() if k.startswith(part + ".")]
        ctx.expect(bool(got) and all(v is not None and np.isfinite(v).all() for v in got)
                   and any(np.abs(v).sum() > 0 for v in got), f"gradient reaches the {part}",
                   f"no (finite) gradient reaches VAE.{part}'s parameters")


# ---- latent optimization -----------------------------------------------------------------------------

def check_lo_parameters(ctx: CheckContext) -> None:
    N = 12
    dec = {"__new__": {"class": "BernoulliDecoder", "args": [{"__net__": _dec_spec(ctx)}]}}
    ctx.new("lo", "LatentOptimizationVAE", dec, N, L)
    state = ctx.sandbox.request({"op": "params", "name": "lo"}, timeout=ctx.call_timeout)
    for name in ("mu", "log_var"):
        v = state.get(name)
        if not ctx.expect(v is not None and tuple(np.shape(v)) == (N, L), f"`{name}` table shape",
                          f"LatentOptimizationVAE.{name} must be a parameter of shape (N, L) = {(N, L)}, "
                          f"found {'nothing' if v is None else tuple(np.shape(v))}"):
            continue
        ctx.expect(np.isfinite(v).all(), f"`{name}` is finite at initialisation", "non-finite initial values")
    mu = state.get("mu")
    if mu is not None and np.shape(mu) == (N, L):
        ctx.expect(len(np.unique(np.round(mu, 6), axis=0)) == N, "one distinct q per example at initialisation",
                   "rows of mu are identical: each example needs its own initial q (mu ~ N(0, I))")
    reply = ctx.call(ctx.method({"__ref__": "lo"}, "elbo", "LatentOptimizationVAE.elbo"), _images(ctx, 4),
                     np.array([0, 3, 5, 11], dtype=np.int64), seed=1, grad={"params": "lo", "cotangent": None})
    names = set(k[len("param:"):] for k in (reply.get("grads") or {}))
    ctx.expect({"mu", "log_var"} <= names, "mu and log_var are nn.Parameters (trained by the optimizer)",
               f"parameters found: {sorted(names)[:8]}; wrap the tables in nn.Parameter")
    ctx.expect(not any(n.startswith("encoder") for n in names), "no encoder", "latent optimization has no encoder")


def check_lo_per_example(ctx: CheckContext) -> None:
    N = 8
    spec = _dec_spec(ctx)
    state = _lo_state(ctx, N, log_var=-18.0)  # narrow q: deterministic values
    x = _images(ctx, 4)
    idx = np.array([5, 1, 6, 2], dtype=np.int64)
    lo = _student_lo(ctx, "lo", spec, state)
    got = tensor(ctx.call(ctx.method(lo, "elbo", "LatentOptimizationVAE.elbo"), x, idx, seed=2)["result"],
                 "LatentOptimizationVAE.elbo", dtype="float32")
    if not ctx.require(got.shape == (4,), "shape", f"shape {got.shape}, expected (4,): one ELBO per example"):
        return

    def reference(patches, state=state):
        with ctx.patched(patches), torch.no_grad(), _seed(2, ctx.device):
            return _np(_ref_lo(ctx, spec, state).elbo(to_torch(x, ctx.device), to_torch(idx, ctx.device)))

    expect_any_variant(ctx, got, reference, "ELBO uses rows idx of mu and log_var", 1e-4, 1e-3)
    # changing example 6's parameters changes its ELBO only (it sits at batch position 2)
    changed = {k: v.copy() for k, v in state.items()}
    changed["mu"][6] += 1.5
    lo2 = _student_lo(ctx, "lo2", spec, changed)
    got2 = tensor(ctx.call(ctx.method(lo2, "elbo", "LatentOptimizationVAE.elbo"), x, idx, seed=2)["result"],
                  "LatentOptimizationVAE.elbo")
    diff = np.abs(got2 - got) > 1e-4
    ok = diff[2] and not diff[[0, 1, 3]].any()
    if not ok:
        ctx.diagnose(lambda p: distance(got2 - got, reference(p, changed) - reference(p), 1e-3, 1e-3))
    ctx.expect(ok, "changing example i's q changes only example i's ELBO",
               f"ELBO changed at batch positions {np.flatnonzero(diff).tolist()}, expected only [2] "
               "(the example whose mu was changed)")


def check_lo_gradients(ctx: CheckContext) -> None:
    N = 10
    spec, state, x = _dec_spec(ctx), _lo_state(ctx, N), _images(ctx, 3)
    lo = _student_lo(ctx, "lo", spec, state)
    idx = np.array([7, 2, 4], dtype=np.int64)
    reply = ctx.call(ctx.method(lo, "elbo", "LatentOptimizationVAE.elbo"), x, idx, seed=3,
                     grad={"params": "lo", "cotangent": None})
    grads = {k[len("param:"):]: v for k, v in (reply.get("grads") or {}).items()}
    for name in ("mu", "log_var"):
        g = grads.get(name)
        if not ctx.expect(g is not None and np.shape(g) == (N, L), f"gradient of `{name}`",
                          f"no gradient for LatentOptimizationVAE.{name} (shape (N, L))"):
            continue
        rows = set(np.flatnonzero(np.abs(g).sum(1) > 0).tolist())
        ok = rows == set(idx.tolist())
        if not ok:
            def matches(patches, name=name, rows=rows):
                with ctx.patched(patches), _seed(3, ctx.device):
                    m = _ref_lo(ctx, spec, state)
                    m.elbo(to_torch(x, ctx.device), to_torch(idx, ctx.device)).sum().backward()
                    want = getattr(m, name).grad
                return want is not None and rows == set(np.flatnonzero(_np(want).__abs__().sum(1) > 0).tolist())
            ctx.diagnose(matches)
        ctx.expect(ok, f"gradient of `{name}` reaches exactly rows idx = {sorted(idx.tolist())}",
                   f"nonzero gradient in rows {sorted(rows)}")
    dec = [v for k, v in grads.items() if k.startswith("decoder.")]
    ctx.expect(any(v is not None and np.abs(v).sum() > 0 for v in dec), "gradient reaches the decoder",
               "no gradient reaches the decoder's parameters")


# ---- importance sampling ---------------------------------------------------------------------------

def _is_call(ctx, model, x, M, seed, idx=None, finite=True):
    """The student's estimates; `finite` (the statistical checks, whose comparisons a NaN slips past)
    fails non-finite ones with a clear message. The exact check judges −inf itself (and names it)."""
    args = [model, x, M] + ([idx] if idx is not None else [])
    return tensor(ctx.call("log_px_importance", *args, seed=seed)["result"], "log_px_importance", finite=finite)


def check_importance_exact(ctx: CheckContext) -> None:
    """q(z|x) = p(z) and a constant, saturated decoder (p clamped to EPS): every weight equals
    p(x|z), so log p(x) = D·log EPS ≈ −115 nats exactly for any M (exp of it underflows in float32)."""
    enc, dec = _enc_spec(ctx), _dec_spec(ctx)
    for spec in (enc, dec):
        spec["state"] = {k: np.zeros_like(v) for k, v in spec["state"].items()}
    dec["state"][f"{len(dec['layers']) - 1}.bias"] = _f(np.full(D, -30.0))
    x = _f(np.ones((B, D)))
    vae = _student_vae(ctx, "vae", enc, dec)
    for M in (1, 10, 100):
        got = _is_call(ctx, vae, x, M, seed=M, finite=False)
        if not ctx.require(got.shape == (B,), f"M={M}: shape", f"shape {got.shape}, expected ({B},)"):
            continue

        def reference(patches, M=M):
            with ctx.patched(patches), torch.no_grad(), _seed(M, ctx.device):
                return _np(ctx.ref.log_px_importance(_ref_vae(ctx, enc, dec), to_torch(x, ctx.device), M))

        expect_any_variant(ctx, got, reference, f"M={M}: log p(x) = log p(x|z) = D·log EPS when q = p(z) and p(x|z) "
                                                 "is constant", 1e-4, 1e-2)


def _is_stats(values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    a = np.stack(values)
    return a.mean(0), a.std(0, ddof=1) + 1e-6


def check_importance_reference(ctx: CheckContext) -> None:
    enc, dec = _enc_spec(ctx, scale=1.5), _dec_spec(ctx, scale=3.0)
    x = _images(ctx, B)
    vae = _student_vae(ctx, "vae", enc, dec)
    state = _lo_state(ctx, 9)
    lo = _student_lo(ctx, "lo", dec, state)
    idx = np.array([8, 0, 3, 4, 7, 1], dtype=np.int64)
    M = 64
    for label, model, make_ref, extra in (("amortized VAE", vae, lambda: _ref_vae(ctx, enc, dec), None),
                                          ("latent optimization (idx)", lo, lambda: _ref_lo(ctx, dec, state), idx)):
        got = _is_call(ctx, model, x, M, seed=21, idx=extra)
        if not ctx.require(got.shape == (B,), f"{label}: shape", f"shape {got.shape}, expected ({B},)"):
            continue

        def reference(patches, seed=21, reps=1, make_ref=make_ref, extra=extra):
            """The reference's estimates, (B,); with reps > 1, (reps, B) independent repetitions in one batch."""
            with ctx.patched(patches), torch.no_grad(), _seed(seed, ctx.device):
                i = None if extra is None else to_torch(np.tile(extra, reps), ctx.device)
                out = _np(ctx.ref.log_px_importance(make_ref(), to_torch(np.tile(x, (reps, 1)), ctx.device), M, i))
            return out if reps == 1 else out.reshape(reps, B)

        def same_draws(patches, reference=reference) -> float:  # the same seed, so the same noise
            return distance(got, reference(patches), 1e-4, 1e-3)

        def statistical(patches, reference=reference) -> float:  # other draws: within 6 sd of 16 repetitions
            mean, sd = _is_stats(list(reference(patches, seed=100, reps=16)))
            return float(np.max(np.abs(got - mean) / (6 * sd + 1e-3)))

        ok = same_draws({}) <= 1 or statistical({}) <= 1
        if not ok:  # each distance separates candidates in its own units (docs/grading.md)
            ctx.diagnose(same_draws) or ctx.diagnose(statistical)
        ctx.expect(ok, f"{label}: log p(x) for given networks, M={M}",
                   f"got {np.round(got, 2)}, reference (same seed) {np.round(reference({}), 2)}")


def check_importance_bound(ctx: CheckContext) -> None:
    """Averaged over repetitions, the estimate grows with M towards log p(x) (M = 1 is the ELBO)."""
    enc, dec = _enc_spec(ctx, scale=1.0), _dec_spec(ctx, scale=3.0)
    x = _images(ctx, 3)
    vae = _student_vae(ctx, "vae", enc, dec)
    R = 32  # repetitions, as R copies of the 3 images in one batch (independent noise per row)
    xr = np.tile(x, (R, 1))
    means = {}
    for M in (1, 16, 128):
        v = _is_call(ctx, vae, xr, M, seed=1000 + M)
        if not ctx.require(v.shape == (3 * R,), f"M={M}: shape", f"shape {v.shape}, expected ({3 * R},)"):
            return
        means[M] = _is_stats(list(v.reshape(R, 3)))
    cache = {}

    def ref_means(patches):
        key = tuple(sorted((k, id(f)) for k, f in patches.items()))
        if key not in cache:
            out = {}
            for M in (1, 16, 128):
                with ctx.patched(patches), torch.no_grad(), _seed(2000 + M, ctx.device):
                    v = _np(ctx.ref.log_px_importance(_ref_vae(ctx, enc, dec), to_torch(xr, ctx.device), M))
                out[M] = _is_stats(list(v.reshape(R, 3)))
            cache[key] = out
        return cache[key]

    def se(M):
        return means[M][1] / math.sqrt(R)

    def distance(patches):
        m = ref_means(patches)
        return max(float(np.max(np.abs(means[k][0] - m[k][0]) / (6 * np.hypot(se(k), m[k][1] / math.sqrt(R)) + 1e-3)))
                   for k in m)

    if distance({}) <= 1:
        ctx.expect(True, "the estimate tightens as M grows, towards log p(x) (means over 32 repetitions)")
        return
    ref = ref_means({})
    truth = ref[128][0]
    elbo_gap = truth - ref[1][0]  # how much room there is between the ELBO and log p(x)
    grows = bool(np.all(means[16][0] - means[1][0] > np.maximum(3 * np.hypot(se(16), se(1)), 0.2 * elbo_gap)))
    bounded = bool(np.all(means[128][0] <= truth + 6 * np.hypot(se(128), ref[128][1] / math.sqrt(R)) + 1e-3))
    ctx.diagnose(distance)
    ctx.expect(grows, "the estimate tightens as M grows (mean over 32 repetitions, M = 1 → 16)",
               f"means {np.round(means[1][0], 2)} (M=1) → {np.round(means[16][0], 2)} (M=16); expected an increase of "
               f"about {np.round(ref[16][0] - ref[1][0], 2)}")
    ctx.expect(bounded, "stays below log p(x) in expectation (M = 128)",
               f"mean {np.round(means[128][0], 2)} exceeds the reference's {np.round(truth, 2)}")
    ctx.expect(False, "agrees with the reference in expectation for M = 1, 16, 128",
               f"means at M=128 {np.round(means[128][0], 2)}, reference {np.round(truth, 2)}")


# ---- model level ------------------------------------------------------------------------------------

DEFAULTS = {
    "data": "digits",
    "cnn_epochs": 20, "vae_epochs": 30, "lo_epochs": 30, "L": 8, "H": 128,
    "lr": 1e-3, "lr_latent": 1e-2, "batch_size": 64, "seed": 0, "time_budget_s": 30.0,
    "K": 256,  # importance samples per image
    "lo_test_steps": 150,  # Adam steps fitting q for unseen images (decoder frozen)
    # classifier: full marks within accuracy_full (absolute) of the reference, none from accuracy_zero below
    "accuracy_full": 0.02, "accuracy_zero": 0.15,
    # VAE / LO: relative to the reference, full marks up to *_full worse, none from *_zero worse
    "vae_full": 0.05, "vae_zero": 0.25, "lo_full": 0.05, "lo_zero": 0.25,
}
CODE_FILES = ("reference/amortized_vs_lo.py", "grader/harnesses/amortized_vs_lo.py", "grader/checks/amortized_vs_lo.py")


class ModelGradingError(Exception):
    pass


def settings(rubric, session=None) -> dict:
    return model_settings(rubric, session, DEFAULTS)


def preflight(rubric, session, selected) -> None:
    """Before grading: bad [model] settings or a missing data folder are the instructor's to fix."""
    if any(c.kind == "model" for c in selected):
        from grader.data import load_dataset

        load_dataset(settings(rubric, session)["data"])


@dataclasses.dataclass
class Prepared:
    x_train: torch.Tensor  # (N, D) in [0, 1]
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    image_shape: tuple
    summary: str  # the exact record (cache keys)
    words: str = ""  # the same for a student (the report's "Data set" line)


_BROKEN_NOTE = (" Red pixels: your model's output there is NaN or infinite (its numbers broke down; see the training "
                "notes above).")


def _prepare(spec: str) -> Prepared:
    from grader.data import load_dataset

    data = load_dataset(spec)
    scale = float(max(data.num_vals - 1, 1))
    f = lambda t: (t.float() / scale).clamp(0, 1) if data.likelihood != "bernoulli" else t.float()
    return Prepared(f(data.x_train), data.y_train.long(), f(data.x_val), data.y_val.long(), f(data.x_test),
                    data.y_test.long(), tuple(data.image_shape), data.summary(), data.describe())


def _img(x: torch.Tensor, shape) -> torch.Tensor:
    return x.reshape(len(x), 1, *shape)


def _train_all(run_harness, s: dict, data: Prepared, device) -> dict:
    """The three course loops through `run_harness(name, **kwargs)` (sandboxed for students)."""
    common = dict(lr=s["lr"], batch_size=s["batch_size"], seed=s["seed"], time_budget_s=s["time_budget_s"])
    size = data.image_shape[0]
    return {
        "cnn": run_harness("train_classifier", x_train=_img(data.x_train, data.image_shape), y_train=data.y_train,
                           x_val=_img(data.x_val, data.image_shape), y_val=data.y_val, image_size=size,
                           epochs=s["cnn_epochs"], **common),
        "vae": run_harness("train_vae", x_train=data.x_train, x_val=data.x_val, L=s["L"], H=s["H"], epochs=s["vae_epochs"],
                           **common),
        "lo": run_harness("train_lo", x_train=data.x_train, L=s["L"], H=s["H"], epochs=s["lo_epochs"],
                          lr_latent=s["lr_latent"], **common),
    }


def _load(model, weights: dict, what: str, device):
    if not weights:
        raise ModelGradingError(f"no weights came back for your {what}")
    try:  # by role: renamed submodules matched by shape in order, extra buffers ignored
        mapped, _ignored = roles.match_state(weights, {k: tuple(v.shape) for k, v in model.state_dict().items()})
        model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in mapped.items()}, strict=True)
    except Exception as e:  # a tensor nothing fits, dtypes
        raise ModelGradingError(f"your {what}'s weights do not fit the assignment's architecture: "
                                f"{str(e).splitlines()[0][:300]}") from None
    return model.to(device).eval()


def _reference_models(ctx, s: dict, data: Prepared, device):
    from grader.harnesses import amortized_vs_lo as H

    ref = ctx.ref
    N, Dx = data.x_train.shape
    with _seed(0, "cpu"):
        cnn = ref.CNNClassifier(num_classes=10, image_size=data.image_shape[0])
        vae = H.build_vae(ref, Dx, s["L"], s["H"])
        lo = H.build_lo(ref, Dx, s["L"], s["H"], N)
    return cnn, vae, lo


@torch.no_grad()
def _evaluate_cnn(model, data: Prepared, device) -> dict:
    out = {}
    for split in ("val", "test"):
        x, y = getattr(data, f"x_{split}").to(device), getattr(data, f"y_{split}").to(device)
        logits = model(_img(x, data.image_shape))
        out[f"{split}_accuracy"] = float((logits.argmax(1) == y).float().mean())
        out[f"{split}_loss"] = float(torch.nn.functional.cross_entropy(logits, y))
    return out


def _per_digit(values: torch.Tensor, labels: torch.Tensor) -> list[float]:
    return [float(values[labels == k].mean()) if (labels == k).any() else math.nan for k in range(10)]


def _log_px(ref, model, x, K: int, seed: int, idx=None, batch: int = 100) -> torch.Tensor:
    out = []
    with torch.no_grad(), _seed(seed, x.device):
        for i in range(0, len(x), batch):
            j = None if idx is None else idx[i:i + batch]
            out.append(ref.log_px_importance(model, x[i:i + batch], K, j))
    return torch.cat(out)


def _fit_lo_test(ref, lo, x: torch.Tensor, steps: int, lr: float, seed: int):
    """A latent-optimization model has no q for unseen images: fit one per image with the decoder frozen."""
    fitted = ref.LatentOptimizationVAE(lo.decoder, len(x), lo.L).to(x.device)
    for p in fitted.decoder.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        fitted.mu.zero_()
        fitted.log_var.zero_()
    opt = torch.optim.Adam([fitted.mu, fitted.log_var], lr=lr)
    idx = torch.arange(len(x), device=x.device)
    with _seed(seed, x.device):
        for _ in range(steps):
            loss = -fitted.elbo(x, idx).mean()
            if not torch.isfinite(loss):
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in fitted.decoder.parameters():
        p.requires_grad_(True)
    return fitted.eval()


def _evaluate(ctx, s, data: Prepared, cnn, vae, lo, device) -> dict:
    ref = ctx.ref
    m = {"cnn": _evaluate_cnn(cnn, data, device)}
    xtr, xva, xte = (t.to(device) for t in (data.x_train, data.x_val, data.x_test))
    with torch.no_grad(), _seed(1, device):
        m["vae_val_neg_elbo"] = float(-vae.elbo(xva).mean())
    lp_te, lp_tr = _log_px(ref, vae, xte, s["K"], 2), _log_px(ref, vae, xtr, s["K"], 3)
    m["vae_test_log_px"], m["vae_train_log_px"] = float(lp_te.mean()), float(lp_tr.mean())
    m["vae_test_log_px_per_digit"] = _per_digit(lp_te.cpu(), data.y_test)
    idx = torch.arange(len(xtr), device=device)
    with torch.no_grad(), _seed(4, device):
        m["lo_train_neg_elbo"] = float(-lo.elbo(xtr, idx).mean())
    lo_tr = _log_px(ref, lo, xtr, s["K"], 5, idx)
    m["lo_train_log_px"] = float(lo_tr.mean())
    m["lo_train_log_px_per_digit"] = _per_digit(lo_tr.cpu(), data.y_train)
    if s["lo_test_steps"] > 0:
        fitted = _fit_lo_test(ref, lo, xte, int(s["lo_test_steps"]), 0.05, 6)
        lo_te = _log_px(ref, fitted, xte, s["K"], 7, torch.arange(len(xte), device=device))
        m["lo_test_log_px"] = float(lo_te.mean())
    return m


def _strip(h: dict) -> dict:
    return {k: v for k, v in h.items() if k != "state_dict"}


def _reference(ctx, s: dict, data: Prepared):
    from grader import model_cache
    from grader.harnesses import amortized_vs_lo as harness

    device = ctx.device
    # the reference is never cut by wall-clock time: how far it trains must not depend on the load of the
    # machine that first filled the cache (a student's loop cut by the budget is matched to epochs instead)
    s = dict(s, time_budget_s=UNBOUNDED_S)
    key = model_cache.cache_key({"assignment": ctx.rubric.id, "data": data.summary,
                                 "settings": {k: v for k, v in s.items() if not k.endswith(("_full", "_zero"))},
                                 "device": device.type}, code_files=CODE_FILES)
    cnn, vae, lo = _reference_models(ctx, s, data, device)
    hit = model_cache.load(key)
    if hit is None:
        hists = _train_all(lambda name, **kw: getattr(harness, name)(
            ctx.ref, device, **{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}),
            s, data, device)
        for name, h in hists.items():
            if h.get("stopped_because") in ("error", "diverged"):
                raise RuntimeError(f"the reference {name} failed to train: {h.get('message')}")
        weights = {f"{name}/{k}": v for name, h in hists.items() for k, v in h["state_dict"].items()}
        histories = {name: _strip(h) for name, h in hists.items()}
        ctx.session.metrics["reference_cache"] = "trained now"
    else:
        weights, histories = hit["state_dict"], hit["meta"]["histories"]
        ctx.session.metrics["reference_cache"] = "reused"
    for name, model in (("cnn", cnn), ("vae", vae), ("lo", lo)):
        _load(model, {k.split("/", 1)[1]: v for k, v in weights.items() if k.startswith(name + "/")}, f"reference {name}",
              device)
    if hit is None:
        metrics = _evaluate(ctx, s, data, cnn, vae, lo, device)
        model_cache.store(key, weights, {"metrics": metrics, "histories": histories})
    else:
        metrics = hit["meta"]["metrics"]
    return metrics, histories, (cnn, vae, lo)


@dataclasses.dataclass
class Run:
    settings: dict
    data: Prepared
    reference: dict
    reference_histories: dict
    student: dict = dataclasses.field(default_factory=dict)
    histories: dict = dataclasses.field(default_factory=dict)
    errors: dict = dataclasses.field(default_factory=dict)  # "cnn"/"vae"/"lo" -> why it could not be graded
    epoch_matched: dict = dataclasses.field(default_factory=dict)  # loop -> epochs the reference was matched to


LOOPS = {"train_classifier": "cnn", "train_vae": "vae", "train_lo": "lo"}  # harness -> loop
WHAT = {"cnn": "your CNN classifier's training", "vae": "your VAE's training", "lo": "your LO model's training"}


def _epochs_matched(ctx, hists: dict, ref_hists: dict, seconds: dict, budget_s: float) -> dict:
    """{"cnn"|"vae"|"lo": epochs} for each of the student's loops that the time budget stopped after fewer
    epochs than the reference trained: how far a loop gets in the budget depends on the machine's load
    and the code's speed, not on its maths, so those are compared with the reference at the same epochs.
    A budget stop the grader did not measure (`seconds`: its own clock per loop) is not believed."""
    out = {}
    for name, h in hists.items():
        h = h if isinstance(h, dict) else {}
        claim = TrainingClaim(WHAT[name], epochs_done(h), str(h.get("stopped_because")), seconds.get(name, 0.0), budget_s)
        done = believed_epochs(ctx, claim, epochs_done(ref_hists.get(name)))
        if done:
            out[name] = done
    return out


def model_run(ctx: CheckContext) -> Run:
    if "avl_model" in ctx.session.cache:
        return ctx.session.cache["avl_model"]
    s = settings(ctx.rubric, ctx.session)
    data = _prepare(s["data"])
    ref_metrics, ref_hists, ref_models = _reference(ctx, s, data)
    run = Run(s, data, ref_metrics, ref_hists)
    ctx.session.cache["avl_model"] = run
    timeout = lambda: max(1.0, min(ctx.session.remaining_s(), s["time_budget_s"] * 2 + 30))
    seconds: dict = {}  # loop -> the grader's own clock around its training call

    def run_harness(name, **kw):
        t0 = time.monotonic()
        try:
            return ctx.harness(f"amortized_vs_lo.{name}", timeout=timeout(),
                               **{k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()})
        except Exception as e:  # a crash or timeout of the student's code in the sandbox
            return {"stopped_because": "error", "message": getattr(e, "message", None) or f"{type(e).__name__}: {e}"}
        finally:
            seconds[LOOPS[name]] = time.monotonic() - t0

    hists = _train_all(run_harness, s, data, ctx.device)
    matched = _epochs_matched(ctx, hists, ref_hists, seconds, float(s["time_budget_s"]))
    if matched:  # compared with the reference trained for as many epochs as the budget let the student's run
        run.reference, run.reference_histories, ref_models = reference_at_students_epochs(ctx, lambda: _reference(
            ctx, dict(s, **{f"{n}_epochs": e for n, e in matched.items()}), data))
        run.epoch_matched = matched
    cnn, vae, lo = _reference_models(ctx, s, data, ctx.device)
    models = {}
    for name, model, what in (("cnn", cnn, "CNNClassifier"), ("vae", vae, "VAE"), ("lo", lo, "LatentOptimizationVAE")):
        h = hists[name] if isinstance(hists[name], dict) else {}
        run.histories[name] = _strip(h)
        try:
            if h.get("stopped_because") == "error" and not h.get("epochs"):
                raise ModelGradingError(f"training your {what} failed: {h.get('message')}")
            models[name] = _load(model, h.get("state_dict") or {}, what, ctx.device)
        except ModelGradingError as e:
            run.errors[name] = str(e)
    if len(models) == 3:
        run.student = _evaluate(ctx, s, data, models["cnn"], models["vae"], models["lo"], ctx.device)
    else:  # evaluate what can be
        part = {}
        if "cnn" in models:
            part["cnn"] = _evaluate_cnn(models["cnn"], data, ctx.device)
        for name in ("vae", "lo"):
            if name in models:
                try:
                    full = _evaluate(ctx, s, data, ref_models[0], models.get("vae", ref_models[1]),
                                     models.get("lo", ref_models[2]), ctx.device)
                    part.update({k: v for k, v in full.items() if k.startswith(name)})
                except Exception as e:
                    run.errors[name] = f"evaluating your model failed: {type(e).__name__}: {e}"
        run.student = part
    _record_metrics(ctx, run)
    _figures(ctx, run, models, ref_models)
    return run


# How the numbers recorded below are shown in the report (grader/metrics.py).
_NATS = "nats per image"
METRICS = {
    "K (importance samples)": Metric("Importance samples per image (K)", kind="note"),
    "CNN validation accuracy": Metric("CNN validation accuracy", "share of images classified correctly", "higher"),
    "CNN test accuracy": Metric("CNN test accuracy", "share of images classified correctly", "higher"),
    "CNN validation loss": Metric("CNN validation loss", "cross-entropy, nats per image", "lower"),
    "VAE validation −ELBO": Metric("Amortized VAE: validation negative ELBO", _NATS, "lower"),
    "VAE log p(x) train (IS)": Metric("Amortized VAE: training log-likelihood (importance sampling)", _NATS, "higher"),
    "VAE log p(x) test (IS)": Metric("Amortized VAE: test log-likelihood (importance sampling)", _NATS, "higher"),
    "LO training −ELBO": Metric("Latent optimization: training negative ELBO", _NATS, "lower"),
    "LO log p(x) train (IS)": Metric("Latent optimization: training log-likelihood (importance sampling)", _NATS, "higher"),
    "LO log p(x) test (IS, q fitted)": Metric("Latent optimization: test log-likelihood (q fitted per image)", _NATS,
                                              "higher"),
    "vae_test_log_px_per_digit": Metric("Amortized VAE: test log-likelihood per digit", _NATS, "higher", kind="per_class",
                                        class_label="digit"),
    "lo_train_log_px_per_digit": Metric("Latent optimization: training log-likelihood per digit", _NATS, "higher",
                                        kind="per_class", class_label="digit"),
    **{f"{name} training": Metric(f"Training of your {what}", kind="note")
       for name, what in (("cnn", "CNN"), ("vae", "amortized VAE"), ("lo", "latent-optimization model"))},
}


def _record_metrics(ctx, run: Run) -> None:
    st, rf = run.student, run.reference

    def num(v):  # results.json is strict JSON: non-finite values are written as text
        return v if v is None or not isinstance(v, float) or math.isfinite(v) else str(v)

    pair = lambda a, b: {"student": num(a), "reference": num(b)}
    M = ctx.session.metrics
    M["data"] = run.data.words
    M["K (importance samples)"] = run.settings["K"]
    M["CNN validation accuracy"] = pair(st.get("cnn", {}).get("val_accuracy"), rf["cnn"]["val_accuracy"])
    M["CNN test accuracy"] = pair(st.get("cnn", {}).get("test_accuracy"), rf["cnn"]["test_accuracy"])
    M["CNN validation loss"] = pair(st.get("cnn", {}).get("val_loss"), rf["cnn"]["val_loss"])
    M["VAE validation −ELBO"] = pair(st.get("vae_val_neg_elbo"), rf["vae_val_neg_elbo"])
    M["VAE log p(x) train (IS)"] = pair(st.get("vae_train_log_px"), rf["vae_train_log_px"])
    M["VAE log p(x) test (IS)"] = pair(st.get("vae_test_log_px"), rf["vae_test_log_px"])
    M["LO training −ELBO"] = pair(st.get("lo_train_neg_elbo"), rf["lo_train_neg_elbo"])
    M["LO log p(x) train (IS)"] = pair(st.get("lo_train_log_px"), rf["lo_train_log_px"])
    if "lo_test_log_px" in rf:
        M["LO log p(x) test (IS, q fitted)"] = pair(st.get("lo_test_log_px"), rf.get("lo_test_log_px"))
    for key in ("vae_test_log_px_per_digit", "lo_train_log_px_per_digit"):  # one value per digit 0-9
        got = st.get(key)
        M[key] = {"student": None if got is None else [num(v) for v in got], "reference": [num(v) for v in rf[key]]}
    for name, h in run.histories.items():
        M[f"{name} training"] = (glossary.training_note(h.get("stopped_because") or "", len(h.get("epochs") or []),
                                                        h.get("seconds") or 0)
                                 + (f" ({h['message']})" if h.get("message") else ""))


# ---- figures -----------------------------------------------------------------------------------------

def _figures(ctx, run: Run, models: dict, ref_models) -> None:
    folder = ctx.session.figures_dir
    if folder is None:
        return
    from matplotlib.figure import Figure

    from grader import figures as F

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    # loss curves
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    axes = fig.subplots(1, 3)
    titles = {"cnn": "CNN: cross-entropy", "vae": "amortized VAE: −ELBO", "lo": "latent optimization: −ELBO (train)"}
    for ax, name in zip(axes, ("cnn", "vae", "lo")):
        series = []
        for label, h, color in (("reference", run.reference_histories.get(name, {}), "tab:gray"),
                                ("yours", run.histories.get(name, {}), "tab:blue")):
            for key, ls in (("train_loss", "--"), ("val_loss", "-")):
                if len(h.get(key) or []):
                    series.append({"label": f"{label}: {key.split('_')[0]}", "values": h[key], "color": color, "ls": ls,
                                   "reference": label == "reference",
                                   "diverged": label == "yours" and h.get("stopped_because") == "diverged"})
        F.draw_losses(ax, series)
        ax.set_title(titles[name], fontsize=9)
        if ax.get_legend():
            ax.legend(fontsize=6)
    made.append((F._save(fig, folder / "loss_curves.png"),
                 "Loss per epoch (dashed: training, solid: validation; for LO the whole training set): yours and the reference.",
                 "model"))
    data, shape = run.data, run.data.image_shape
    device = ctx.device
    pick = [int(torch.nonzero(data.y_train == k)[0]) for k in range(10) if (data.y_train == k).any()]
    idx = torch.tensor(pick, device=device)
    x = data.x_train[pick].to(device)
    rows, labels = [x.cpu().numpy()], ["data"]
    with torch.no_grad():
        for name, label in (("vae", "amortized"), ("lo", "LO")):
            m = models.get(name)
            if m is None:
                continue
            mu, _ = m.posterior(x, idx)
            rows.append(m.decoder(mu).cpu().numpy())
            labels.append(label)
    fig = Figure(figsize=(7, 0.9 * len(rows) + 0.3), layout="constrained")
    broken = 0
    for ax, imgs, label in zip(np.atleast_1d(fig.subplots(len(rows), 1)), rows, labels):
        broken += F.show_images(ax, imgs, 1, len(pick), shape, 1.0)
        ax.set_ylabel(label, fontsize=7)
    made.append((F._save(fig, folder / "reconstructions.png"),
                 "One training image per digit (top) and its reconstruction (decoder mean at z = mu) by your amortized VAE "
                 "and your latent-optimization model." + _BROKEN_NOTE * bool(broken), "model"))
    rows, labels = [], []
    with torch.no_grad(), _seed(0, device):
        z = torch.randn(10, run.settings["L"], device=device)
        for name, label in (("vae", "amortized"), ("lo", "LO")):
            if name in models:
                rows.append(models[name].decoder(z).cpu().numpy())
                labels.append(label)
    if rows:
        fig = Figure(figsize=(7, 0.9 * len(rows) + 0.3), layout="constrained")
        broken = 0
        for ax, imgs, label in zip(np.atleast_1d(fig.subplots(len(rows), 1)), rows, labels):
            broken += F.show_images(ax, imgs, 1, 10, shape, 1.0)
            ax.set_ylabel(label, fontsize=7)
        made.append((F._save(fig, folder / "samples.png"),
                     "Decoder means for the same 10 draws z ~ N(0, I): your amortized VAE and your LO model."
                     + _BROKEN_NOTE * bool(broken), "model"))
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, title in zip(axes, ("vae_test_log_px_per_digit", "lo_train_log_px_per_digit"),
                              ("amortized VAE (test images)", "latent optimization (training images)")):
        k = np.arange(10)
        ref_v = np.asarray(run.reference[key], dtype=float)
        ax.bar(k - 0.2, ref_v, 0.4, color="tab:gray", label="reference")
        if key in run.student:
            ax.bar(k + 0.2, np.asarray(run.student[key], dtype=float), 0.4, color="tab:blue", label="yours")
        shown = np.concatenate([ref_v, np.asarray(run.student.get(key, []), dtype=float)])
        shown = shown[np.isfinite(shown)]
        if len(shown):  # zoom on the values: the differences between digits are a few nats
            lo_, hi_ = shown.min(), shown.max()
            ax.set_ylim(lo_ - 0.15 * (hi_ - lo_ + 1), hi_ + 0.15 * (hi_ - lo_ + 1))
        ax.set_xticks(k)
        ax.set_xlabel("digit")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"mean log p(x) (nats, IS with K={run.settings['K']})")
    made.append((F._save(fig, folder / "log_px_per_digit.png"),
                 "Average log p(x) per digit, estimated by importance sampling (reference code on your trained weights).",
                 "model"))
    for path, caption, tag in made:
        ctx.session.figures.append({"path": f"figures/{Path(path).name}", "caption": caption, "tag": tag})


# ---- model-level scoring -------------------------------------------------------------------------------


# The student's components each model-level metric runs (training and evaluation use the reference's
# code for everything else): only their mistakes are named as likely causes.
_TRAINED_VAE = ("reparameterize", "kl", "decoder.forward", "decoder.log_prob", "elbo")
DEPENDS_ON = {"cnn": ("classifier",), "vae": _TRAINED_VAE + ("encoder", "vae"), "lo": _TRAINED_VAE + ("lo",)}


def _diagnose_model(ctx, run: Run, name: str) -> None:
    h = run.histories.get(name, {})
    if h.get("stopped_because") == "diverged":
        ctx.notes.append(f"Diagnosis: training diverged ({h.get('message')}): look for log(0) (a missing sigmoid or "
                         "clamp) and for exp overflow.")
    elif h.get("stopped_because") == "error":
        ctx.notes.append(f"Diagnosis: training stopped with an error: {h.get('message')}")
    val = [v for v in h.get("val_loss", []) if v is not None and math.isfinite(v)]
    if len(val) >= 3 and val[-1] > min(val) * 1.05 and val[-1] > val[0]:
        ctx.notes.append("Diagnosis: the loss rose during training: the optimiser made the model worse "
                         "(check the sign of each term of the loss).")
    likely_causes(ctx, DEPENDS_ON[name])


def check_model_accuracy(ctx: CheckContext) -> None:
    run = model_run(ctx)
    s = run.settings
    if "cnn" in run.errors:
        ctx.expect(False, "validation accuracy", run.errors["cnn"])
        return
    got, want = run.student["cnn"]["val_accuracy"], run.reference["cnn"]["val_accuracy"]
    gap = want - got
    frac = 1.0 if gap <= s["accuracy_full"] else 0.0 if gap >= s["accuracy_zero"] else \
        (s["accuracy_zero"] - gap) / (s["accuracy_zero"] - s["accuracy_full"])
    epochs = run.epoch_matched.get("cnn", s["cnn_epochs"])
    text = (f"yours {100 * got:.1f} %, reference {100 * want:.1f} % after {epochs} epochs "
            f"(full marks within {100 * s['accuracy_full']:.0f} points, none from {100 * s['accuracy_zero']:.0f} below)")
    ctx.partial(frac, "validation accuracy of the trained CNN", text)
    note_epoch_matched(ctx, run.epoch_matched.get("cnn", 0))
    ctx.notes.append(f"Test accuracy: yours {100 * run.student['cnn']['test_accuracy']:.1f} %, "
                     f"reference {100 * run.reference['cnn']['test_accuracy']:.1f} %.")
    if frac < 1:
        _diagnose_model(ctx, run, "cnn")


def _grade_relative(ctx, name: str, key: str, label: str, sign: float) -> None:
    run = model_run(ctx)
    s = run.settings
    if name in run.errors or key not in run.student:
        ctx.expect(False, label, run.errors.get(name, "no result"))
        return
    got, want = sign * run.student[key], sign * run.reference[key]  # lower is better
    frac = relative_score(got, want, s[f"{name}_full"], s[f"{name}_zero"])
    text = (f"yours {got:.2f} nats, reference {want:.2f} nats (full marks within {s[f'{name}_full']:.0%}, "
            f"none beyond {s[f'{name}_zero']:.0%} worse)")
    ctx.partial(frac, label, text)
    note_epoch_matched(ctx, run.epoch_matched.get(name, 0))
    if frac >= 1:
        ctx.notes.append(f"{label}: {text}")
    else:
        _diagnose_model(ctx, run, name)


def check_model_vae(ctx: CheckContext) -> None:
    """−log p(x) of the test images (importance sampling with reference code on the trained weights)."""
    _grade_relative(ctx, "vae", "vae_test_log_px", f"amortized VAE: test −log p(x) (IS, K={settings(ctx.rubric, ctx.session)['K']})", -1.0)


def check_model_lo(ctx: CheckContext) -> None:
    """−ELBO of the training images under the trained LO model (its own per-example q)."""
    _grade_relative(ctx, "lo", "lo_train_neg_elbo", "latent optimization: training-set −ELBO", 1.0)


# ---- examples for the declared properties (grader/checks/properties.py; rubric [properties]) ----------------

def _example_classifier(ctx, v):
    state = _cnn_state(ctx, 8)
    obj = ctx.new("cnn", "CNNClassifier", num_classes=10, image_size=8, state=state)
    with _seed(0, "cpu"):
        ref = ctx.ref.CNNClassifier(num_classes=10, image_size=8).to(ctx.device)
    ref.load_state_dict({k: to_torch(a, ctx.device) for k, a in state.items()})
    x = _f(ctx.rng.uniform(0, 1, (v.batch, 1, 8, 8)))
    return properties.Example(ctx.method(obj, "forward", "CNNClassifier.forward"), {"x": x}, lambda t: ref(t["x"]),
                              params="cnn", ref_object=ref, batched=("x",))


def _gaussian(ctx, v, extreme_lv=(-15.0, 15.0)):
    shape = (v.batch, 64 if v.extreme else 5 if v.wide else L)
    mu = ctx.rng.standard_normal(shape)
    lv = np.resize(np.linspace(*extreme_lv, 9), shape) if v.extreme else ctx.rng.uniform(-2, 1, shape)
    return _f(mu, v.dtype), _f(lv, v.dtype)


def _example_log_normal_diag(ctx, v):
    mu, lv = _gaussian(ctx, v)
    z = _f(mu + ctx.rng.standard_normal(mu.shape) * (1e3 if v.extreme else 1.0), v.dtype)
    return properties.Example("log_normal_diag", {"z": z, "mu": mu, "log_var": lv},
                              lambda t: ctx.ref.log_normal_diag(t["z"], t["mu"], t["log_var"]), batched=("z", "mu", "log_var"))


def _example_reparameterize(ctx, v):
    mu, lv = _gaussian(ctx, v)
    return properties.Example("reparameterize", {"mu": mu, "log_var": lv},
                              lambda t: ctx.ref.reparameterize(t["mu"], t["log_var"]), batched=("mu", "log_var"),
                              rows_independent=False)


def _example_kl(ctx, v):
    mu, lv = _gaussian(ctx, v, (-30.0, 30.0))
    return properties.Example("kl_standard_normal", {"mu": mu, "log_var": lv},
                              lambda t: ctx.ref.kl_standard_normal(t["mu"], t["log_var"]), batched=("mu", "log_var"))


def _example_encoder(ctx, v):
    spec = _enc_spec(ctx)
    enc = ctx.new("enc", "GaussianEncoder", {"__net__": spec})
    ref = ctx.ref.GaussianEncoder(_build(spec, ctx.device))
    return properties.Example(ctx.method(enc, "forward", "GaussianEncoder.forward"), {"x": _images(ctx, v.batch)},
                              lambda t: ref(t["x"]), params="enc", ref_object=ref, batched=("x",))


def _example_decoder(ctx, v, method: str):
    spec = _dec_spec(ctx)
    dec = ctx.new("dec", "BernoulliDecoder", {"__net__": spec})
    ref = ctx.ref.BernoulliDecoder(_build(spec, ctx.device))
    z = _f(ctx.rng.standard_normal((v.batch, L)))
    if method == "forward":
        return properties.Example(ctx.method(dec, "forward", "BernoulliDecoder.forward"), {"z": z}, lambda t: ref(t["z"]),
                                  params="dec", ref_object=ref, batched=("z",))
    return properties.Example(ctx.method(dec, "log_prob", "BernoulliDecoder.log_prob"), {"x": _images(ctx, v.batch), "z": z},
                              lambda t: ref.log_prob(t["x"], t["z"]), params="dec", ref_object=ref, batched=("x", "z"))


def _example_elbo(ctx, v):
    spec = _dec_spec(ctx)
    dec = ctx.new("dec", "BernoulliDecoder", {"__net__": spec})
    ref = ctx.ref.BernoulliDecoder(_build(spec, ctx.device))
    mu, lv = _f(ctx.rng.standard_normal((v.batch, L))), _f(ctx.rng.uniform(-1, 0.5, (v.batch, L)))
    return properties.Example("elbo", {"decoder": dec, "x": _images(ctx, v.batch), "mu": mu, "log_var": lv},
                              lambda t: ctx.ref.elbo(ref, t["x"], t["mu"], t["log_var"]), params="dec", ref_object=ref,
                              batched=("x", "mu", "log_var"), rows_independent=False, seed=8)


def _example_vae(ctx, v):
    enc, dec = _enc_spec(ctx), _dec_spec(ctx)
    vae = _student_vae(ctx, "vae", enc, dec)
    ref = _ref_vae(ctx, enc, dec)
    return properties.Example(ctx.method(vae, "elbo", "VAE.elbo"), {"x": _images(ctx, v.batch)}, lambda t: ref.elbo(t["x"]),
                              params="vae", ref_object=ref, batched=("x",), rows_independent=False, seed=9)


def _example_lo(ctx, v):
    N, spec = 8, _dec_spec(ctx)
    state = _lo_state(ctx, N)
    lo = _student_lo(ctx, "lo", spec, state)
    ref = _ref_lo(ctx, spec, state)
    idx = np.array([5, 1, 6, 2][: v.batch] if v.batch <= 4 else range(v.batch), dtype=np.int64)
    return properties.Example(ctx.method(lo, "posterior", "LatentOptimizationVAE.posterior"),
                              {"x": _images(ctx, len(idx)), "idx": idx}, lambda t: ref.posterior(t["x"], t["idx"]),
                              params="lo", ref_object=ref, batched=("x", "idx"))


def _example_importance(ctx, v):
    enc, dec = _enc_spec(ctx), _dec_spec(ctx)
    d, M = D, 10
    if v.extreme:
        # q = p(z) and a sharp decoder over 784 pixels: the log-weights spread over hundreds of nats, so a
        # log-mean-exp shifted by anything but the max overflows (float32: beyond ~88 nats)
        d, M = 784, 100
        enc = nets.mlp_spec([d, 8, 2 * L], seed=ctx.seed + 11)
        enc["state"] = {k: np.zeros_like(a) for k, a in enc["state"].items()}
        dec = nets.mlp_spec([L, 8, d], seed=ctx.seed + 12, scale=6.0)
    vae = _student_vae(ctx, "vae", enc, dec)
    ref = _ref_vae(ctx, enc, dec)
    return properties.Example("log_px_importance", {"model": vae, "x": _images(ctx, v.batch, d), "M": M},
                              lambda t: ctx.ref.log_px_importance(ref, t["x"], t["M"]), batched=("x",),
                              rows_independent=False, seed=4,
                              label="log-weights spread over hundreds of nats (784 pixels)" if v.extreme else "")


EXAMPLES = {
    "classifier": _example_classifier, "log_normal_diag": _example_log_normal_diag,
    "reparameterize": _example_reparameterize, "kl": _example_kl, "encoder": _example_encoder,
    "decoder.forward": lambda ctx, v: _example_decoder(ctx, v, "forward"),
    "decoder.log_prob": lambda ctx, v: _example_decoder(ctx, v, "log_prob"),
    "elbo": _example_elbo, "vae": _example_vae, "lo": _example_lo, "importance": _example_importance,
}
