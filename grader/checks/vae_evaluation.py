"""Grader-side (trusted) evaluation of a trained VAE with the reference implementation.

The weights a student's VAE learnt in the sandbox (`TrainHistory.state_dict`, numpy arrays) are
loaded into the reference `VAE` with the standard networks, and every number here is computed by
the reference code: negative ELBO, importance-sampled negative log-likelihood, reconstruction
error, per-class log-likelihood, posterior-collapse diagnostics, reconstructions and samples.

All sampling is seeded and leaves torch's global random state as it was. Memory is bounded: data
are processed in batches and the importance samples in chunks sized from the decoder's output.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from grader import roles
from grader.harnesses.vae import build_mlp_nets, seeded

__all__ = ["load_reference_model", "negative_elbo", "nll_importance_sampling", "reconstruction_error",
           "per_class_loglik", "posterior_collapse", "kl_per_dim", "active_units", "encode_means",
           "reconstructions", "samples", "evaluate"]

# Elements of the largest intermediate tensor (decoder probabilities, rows × D × num_vals) per chunk.
MAX_ELEMENTS = 1 << 24  # 16 M floats = 64 MiB; a few such temporaries live at once


def load_reference_model(state_dict_arrays: dict, D: int, L: int, M: int, num_vals: int, likelihood: str,
                         num_components: int, device: str | torch.device = "cpu"):
    """The reference VAE with the standard nets and these weights, found by role (grader.roles: the
    networks by their layers' shapes, the prior's means/spreads/logits in any parametrisation the
    course allows; extra buffers ignored). ValueError saying what is missing when a role is absent."""
    from reference import vae as ref

    encoder_net, decoder_net = build_mlp_nets(D, L, M, num_vals, likelihood)
    model = ref.VAE(encoder_net, decoder_net, ref.MoGPrior(L, num_components), num_vals=num_vals, L=L,
                    likelihood_type=likelihood)
    expected = model.state_dict()
    given = {}
    for k, v in dict(state_dict_arrays or {}).items():
        a = np.asarray(v)
        if a.dtype.kind not in "fiub":
            raise ValueError(f"weight {k} has dtype {a.dtype}, expected numbers")
        given[k] = a
    try:
        mapped, _notes = roles.reference_state(given, {k: tuple(t.shape) for k, t in expected.items()},
                                               K=num_components, L=L)
    except roles.InterfaceError as e:
        raise ValueError(f"the trained weights do not fit the reference VAE (D={D}, L={L}, M={M}, num_vals={num_vals}, "
                         f"{likelihood}, K={num_components}): {e}. The VAE must keep the course's networks (as "
                         "encoder.encoder / decoder.decoder) and a mixture prior with K means, K (log-)variances and "
                         "K mixture logits.") from None
    tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)).to(expected[k].dtype) for k, v in mapped.items()}
    model.load_state_dict(tensors, strict=True)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _as_x(model, x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32).to(_device(model))


def _values_per_pixel(model) -> int:
    return model.num_vals if model.decoder.distribution == "categorical" else 1


@torch.no_grad()
def negative_elbo(model, x, batch_size: int = 500, seed: int = 0) -> float:
    """Mean over x of the model's single-sample negative ELBO (model(x, reduction='sum') / N), seeded."""
    x = _as_x(model, x)
    total = 0.0
    with seeded(seed, x.device):
        for i in range(0, len(x), batch_size):
            total += float(model(x[i:i + batch_size], reduction="sum"))
    return total / len(x)


@torch.no_grad()
def log_weights(model, x, K: int, batch_size: int | None = None, seed: int = 0) -> torch.Tensor:
    """log p(x|z_k) + log p(z_k) − log q(z_k|x) for z_k ~ q(z|x): a K×N tensor (float32, on the model's device)."""
    x = _as_x(model, x)
    n, D = x.shape
    rows = max(1, MAX_ELEMENTS // (D * _values_per_pixel(model)))  # z rows decoded at once
    B = max(1, min(n, batch_size or 1000, rows))
    S = max(1, min(K, rows // B))
    g = torch.Generator(device=x.device).manual_seed(seed)
    out = torch.empty(K, n, device=x.device)
    for i in range(0, n, B):
        xb = x[i:i + B]
        b = len(xb)
        mu, log_var = model.encoder.encode(xb)
        std = torch.exp(0.5 * log_var)
        for k in range(0, K, S):
            s = min(S, K - k)
            eps = torch.randn((s, b, mu.shape[1]), generator=g, device=x.device, dtype=mu.dtype)
            z = (mu + std * eps).reshape(s * b, -1)
            mu_r, lv_r = mu.repeat(s, 1), log_var.repeat(s, 1)
            lw = (_decoder_log_prob(model, xb.repeat(s, 1), z) + model.prior.log_prob(z)
                  - model.encoder.log_prob(mu_e=mu_r, log_var_e=lv_r, z=z))
            out[k:k + s, i:i + b] = lw.reshape(s, b)
    return out


def _decoder_log_prob(model, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """`model.decoder.log_prob(x, z)` (shape B), the same numbers bit for bit, at about half the cost for
    categorical pixels: reference `log_categorical` multiplies log(clamp(p)) by a B×D×V one-hot and sums over
    the values, keeping one term per pixel (the others are exact zeros); gathering that term skips the
    one-hot and the V-fold log (tests/test_training.py checks the equality)."""
    decoder = model.decoder
    if decoder.distribution != "categorical":
        return decoder.log_prob(x, z)
    from reference.vae import EPS

    p = decoder.decode(z)[0]
    return torch.log(torch.clamp(p.gather(-1, x.long().unsqueeze(-1)).squeeze(-1), EPS, 1.0 - EPS)).sum(-1)


def nll_importance_sampling(model, x, K: int = 100, batch_size: int | None = None, seed: int = 0) -> np.ndarray:
    """Per-example −log p(x) ≈ −log (1/K) Σ_k exp(log p(x|z_k) + log p(z_k) − log q(z_k|x)), z_k ~ q(z|x)."""
    if K < 1:
        raise ValueError(f"K must be at least 1, got {K}")
    lw = log_weights(model, x, K, batch_size, seed).double()
    return (-(torch.logsumexp(lw, dim=0) - math.log(K))).cpu().numpy()


@torch.no_grad()
def _decoder_mean(model, z: torch.Tensor) -> torch.Tensor:
    """E[x|z] in pixel units: Σ_v v·p_v (categorical) or p (Bernoulli); B×D."""
    probs = model.decoder.decode(z)[0]
    if model.decoder.distribution == "categorical":
        values = torch.arange(probs.shape[-1], device=probs.device, dtype=probs.dtype)
        return probs @ values
    return probs


@torch.no_grad()
def encode_means(model, x, batch_size: int = 1000) -> np.ndarray:
    """mu_e(x), N×L (numpy), e.g. for a latent projection."""
    x = _as_x(model, x)
    return torch.cat([model.encoder.encode(x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)]).cpu().numpy()


@torch.no_grad()
def reconstruction_error(model, x, batch_size: int = 500) -> float:
    """Mean squared error (pixel units², over pixels and examples) between x and E[x|z=mu_e(x)]."""
    x = _as_x(model, x)
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        total += float(((_decoder_mean(model, model.encoder.encode(xb)[0]) - xb) ** 2).sum())
    return total / x.numel()


def per_class_loglik(per_example_ll, y) -> dict[int, float]:
    """Mean of per-example values per label, {label: mean} sorted by label."""
    ll = np.asarray(per_example_ll, dtype=np.float64).reshape(-1)
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
    if len(ll) != len(y):
        raise ValueError(f"{len(ll)} values but {len(y)} labels")
    return {int(c): float(ll[y == c].mean()) for c in np.unique(y)}


@torch.no_grad()
def kl_per_dim(model, x, n_samples: int = 16, batch_size: int = 500, seed: int = 0) -> np.ndarray:
    """Per latent dimension d, a Monte-Carlo estimate of E_x KL(q(z_d|x) || p(z_d)), p(z_d) the prior's marginal.

    The MoG prior's marginal in one dimension is the 1-D mixture Σ_k w_k N(means_kd, exp(logvars_kd)).
    A value near 0 means that dimension carries no information about x (posterior collapse).
    A prior without `means`/`logvars`/`w` is treated as N(0, I).
    """
    x = _as_x(model, x)
    prior = model.prior
    mog = all(hasattr(prior, a) for a in ("means", "logvars", "w"))
    g = torch.Generator(device=x.device).manual_seed(seed)
    total = None
    for i in range(0, len(x), batch_size):
        mu, log_var = model.encoder.encode(x[i:i + batch_size])
        eps = torch.randn((n_samples,) + tuple(mu.shape), generator=g, device=x.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * log_var) * eps  # S×B×L
        log_q = -0.5 * (math.log(2 * math.pi) + log_var + eps ** 2)
        if mog:
            log_w = torch.log_softmax(prior.w.reshape(-1), dim=0)  # K
            m, lv = prior.means.T, prior.logvars.T  # L×K
            log_n = -0.5 * (math.log(2 * math.pi) + lv + torch.exp(-lv) * (z.unsqueeze(-1) - m) ** 2)  # S×B×L×K
            log_p = torch.logsumexp(log_w + log_n, dim=-1)
        else:
            log_p = -0.5 * (math.log(2 * math.pi) + z ** 2)
        part = (log_q - log_p).mean(0).sum(0)  # L
        total = part if total is None else total + part
    return (total / len(x)).double().cpu().numpy()


def posterior_collapse(model, x, n_samples: int = 16, seed: int = 0) -> float:
    """Mean over latent dimensions of kl_per_dim (nats); near 0 means the posterior collapsed to the prior."""
    return float(np.mean(kl_per_dim(model, x, n_samples=n_samples, seed=seed)))


def active_units(model, x, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies over x: Var_x(mu_e(x)_d) > threshold (Burda et al.)."""
    mu = encode_means(model, x)
    return int((mu.var(axis=0) > threshold).sum()) if len(mu) > 1 else 0


@torch.no_grad()
def reconstructions(model, x16, image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """E[x|z=mu_e(x)] for each row of x16, in pixel units: N×D, or N×H×W with image_shape."""
    x = _as_x(model, x16)
    out = _decoder_mean(model, model.encoder.encode(x)[0]).cpu().numpy()
    return out.reshape((len(out),) + tuple(image_shape)) if image_shape else out


@torch.no_grad()
def samples(model, n: int = 16, seed: int = 0, image_shape: tuple[int, int] | None = None, kind: str = "mean") -> np.ndarray:
    """n images from the model, z ~ prior: the decoder's mean E[x|z] ('mean') or a draw x ~ p(x|z) ('sample')."""
    if kind not in ("mean", "sample"):
        raise ValueError(f"kind must be 'mean' or 'sample', got {kind!r}")
    with seeded(seed, _device(model)):
        z = model.prior.sample(n)
        if kind == "mean":
            out = _decoder_mean(model, z)
        else:  # drawn here rather than by Decoder.sample, so that non-finite weights give noise, not an error
            probs = model.decoder.decode(z)[0]
            if model.decoder.distribution == "categorical":
                p = torch.nan_to_num(probs.reshape(-1, probs.shape[-1]), nan=0.0, posinf=0.0).clamp(min=0)
                p[p.sum(1) <= 0] = 1.0
                out = torch.multinomial(p, 1).reshape(probs.shape[:-1]).to(probs.dtype)
            else:
                out = torch.bernoulli(torch.nan_to_num(probs, nan=0.5).clamp(0, 1))
        out = out.cpu().numpy()
    return out.reshape((n,) + tuple(image_shape)) if image_shape else out


def evaluate(model, x, y=None, K: int = 100, seed: int = 0, batch_size: int | None = None) -> dict:
    """All numbers for one data split: plain Python values (floats, ints, lists, dicts)."""
    t0 = time.perf_counter()
    x = _as_x(model, x)
    n, D = x.shape
    neg_elbo = negative_elbo(model, x, seed=seed)
    t1 = time.perf_counter()
    nll = nll_importance_sampling(model, x, K=K, batch_size=batch_size, seed=seed)
    t2 = time.perf_counter()
    kl = kl_per_dim(model, x, seed=seed)
    out = {
        "n": int(n),
        "K": int(K),
        "negative_elbo": neg_elbo,
        "nll": float(nll.mean()),
        "nll_std_err": float(nll.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
        "bits_per_dim": float(nll.mean() / (D * math.log(2))),
        "reconstruction_mse": reconstruction_error(model, x),
        "kl_per_dim": [float(v) for v in kl],
        "posterior_collapse": float(kl.mean()),
        "collapsed_dims": int((kl < 0.01).sum()),
        "active_units": active_units(model, x),
        "per_class_loglik": per_class_loglik(-nll, y) if y is not None else {},
        "finite": bool(np.isfinite(nll).all() and math.isfinite(neg_elbo)),
        "seconds": {"negative_elbo": t1 - t0, "nll": t2 - t1, "total": time.perf_counter() - t0},
    }
    return out
