"""Checks of `amortized-vs-lo` (rubric: rubrics/amortized-vs-lo.toml, reference: reference/amortized_vs_lo.py).

Unit checks (one `check_<name>(ctx)` per rubric entry, own deterministic inputs): the student's
functions and classes run in the sandbox on inputs and networks built here, the reference runs on
the same inputs here, and mismatches are explained by the mutants of reference/amortized_vs_lo_mistakes.py.

The model half (component "model": the CNN, the amortized VAE and the latent-optimization model trained on
digits by the course's loops) is grader/checks/amortized_vs_lo_model.py, on the shared framework
(grader/checks/model_level.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from grader.checks import CheckContext, distance, close, expect_any_variant, mistake_cause, sequence, tensor, to_torch
from grader.checks import seeded as _seed
from grader.checks import properties
from grader.checks.amortized_vs_lo_model import (  # noqa: F401  (the model half: its checks, metrics, preflight)
    METRICS, check_model_accuracy, check_model_lo, check_model_vae, preflight,
)
from grader.sandbox import nets

B, D, L = 6, 10, 3  # unit checks: batch, pixels, latent dimensions


def _f(a, dtype: str = "float32") -> np.ndarray:
    return np.asarray(a, dtype=dtype)


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

    # the mistake named reproduces both statistics, so it is the cause of whichever fails
    cause = mistake_cause(ctx.diagnose(diag)) if not (m_ok and s_ok) else None
    ctx.expect(m_ok, "sample mean equals mu", f"sample means {np.round(z.mean(0), 3)}, expected {mu[0]}", cause=cause)
    ctx.expect(s_ok, "sample std equals exp(0.5·log_var)", f"sample stds {np.round(z.std(0), 3)}, expected {np.round(std, 3)}",
               cause=cause)


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
    named = None
    if not ok:
        def diag(patches):
            with ctx.patched(patches), _seed(3, ctx.device):
                m, l = to_torch(mu, ctx.device).requires_grad_(), to_torch(lv, ctx.device).requires_grad_()
                out = ctx.ref.reparameterize(m, l)
                if not out.requires_grad:
                    return g_lv is None
                gl = torch.autograd.grad(out.sum(), l, allow_unused=True)[0]
            return (gl is None and g_lv is None) or (gl is not None and g_lv is not None and close(g_lv, _np(gl), 1e-3, 1e-4))
        named = ctx.diagnose(diag)
    ctx.expect(ok, "dz/dlog_var = 0.5·(z − mu)", "no gradient reaches log_var" if g_lv is None else
               "the gradient w.r.t. log_var is not 0.5·exp(0.5·log_var)·eps", cause=mistake_cause(named))
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
    # the narrow case names a mistake exactly; this one only statistically
    named = ctx.diagnose(mc_distance) if not ok and not ctx.mistakes else None
    want, se = mc({})
    ctx.expect(ok, "broad posterior: mean ELBO over 4000 draws",
               f"mean {got.mean():.4f}, expected {want:.4f} ± {6 * se:.3f}", cause=mistake_cause(named))


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
    named = ctx.diagnose(lambda p: distance(got2 - got, reference(p, changed) - reference(p), 1e-3, 1e-3)) \
        if not ok else None
    ctx.expect(ok, "changing example i's q changes only example i's ELBO",
               f"ELBO changed at batch positions {np.flatnonzero(diff).tolist()}, expected only [2] "
               "(the example whose mu was changed)", cause=mistake_cause(named))


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
        named = None
        if not ok:
            def matches(patches, name=name, rows=rows):
                with ctx.patched(patches), _seed(3, ctx.device):
                    m = _ref_lo(ctx, spec, state)
                    m.elbo(to_torch(x, ctx.device), to_torch(idx, ctx.device)).sum().backward()
                    want = getattr(m, name).grad
                return want is not None and rows == set(np.flatnonzero(_np(want).__abs__().sum(1) > 0).tolist())
            named = ctx.diagnose(matches)
        ctx.expect(ok, f"gradient of `{name}` reaches exactly rows idx = {sorted(idx.tolist())}",
                   f"nonzero gradient in rows {sorted(rows)}", cause=mistake_cause(named))
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
        # each distance separates candidates in its own units (docs/grading.md)
        named = (ctx.diagnose(same_draws) or ctx.diagnose(statistical)) if not ok else None
        ctx.expect(ok, f"{label}: log p(x) for given networks, M={M}",
                   f"got {np.round(got, 2)}, reference (same seed) {np.round(reference({}), 2)}",
                   cause=mistake_cause(named))


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
    # every case below is a function of the means the mistake named reproduces: it is their cause
    cause = mistake_cause(ctx.diagnose(distance))
    ctx.expect(grows, "the estimate tightens as M grows (mean over 32 repetitions, M = 1 → 16)",
               f"means {np.round(means[1][0], 2)} (M=1) → {np.round(means[16][0], 2)} (M=16); expected an increase of "
               f"about {np.round(ref[16][0] - ref[1][0], 2)}", cause=cause)
    ctx.expect(bounded, "stays below log p(x) in expectation (M = 128)",
               f"mean {np.round(means[128][0], 2)} exceeds the reference's {np.round(truth, 2)}", cause=cause)
    ctx.expect(False, "agrees with the reference in expectation for M = 1, 16, 128",
               f"means at M=128 {np.round(means[128][0], 2)}, reference {np.round(truth, 2)}", cause=cause)


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
