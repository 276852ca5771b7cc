"""Does a mutant change behaviour? Run it and the reference, in process, on the same random inputs.

    probe = rubric.probe_function(); same_behaviour(probe(reference_module), probe(mutant_module))

A probe calls every component of an assignment's module on random float64 inputs (including hard
ones: ties, empty clusters, probabilities at the clamp, extreme variances, a batch of one; networks and what
runs through them in float32, as the assignments specify them: `_net`) and
returns {key: value}: outputs, the gradients of a random projection of each output with respect
to the inputs and parameters where the assignment trains through the component with autograd
(not for k-means, PPCA, EM, samplers or evaluation-only code: a detached value there is no
mistake), or ("raises", exception type). The torch RNG is reseeded before
every call, so sampling code that draws the same numbers gives the same values. Only the
grader's own trusted code (the reference and mutants generated from it) runs here; student code
runs in the sandbox.

A new assignment names its probe (a dozen lines, here or in its own files) in its rubric's
[assignment] probe = "module.function" for the validity bench.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class _Recorder:
    def __init__(self):
        self.out: dict[str, object] = {}

    def __call__(self, key: str, fn: Callable, wrt=(), seed: int = 1234):
        """Record fn()'s tensors and the gradients of a fixed random projection of them w.r.t. `wrt`."""
        torch.manual_seed(seed)
        try:
            value = fn()
            tensors = _flatten(value)
            for i, t in enumerate(tensors):
                self.out[f"{key}[{i}]"] = t.detach().clone() if isinstance(t, torch.Tensor) else t
            wrt = [w for w in (wrt() if callable(wrt) else wrt)]
            diff = [t for t in tensors if isinstance(t, torch.Tensor) and t.requires_grad]
            if wrt and diff:
                g = torch.Generator().manual_seed(7)
                total = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in diff)
                grads = torch.autograd.grad(total, wrt, allow_unused=True)
                for i, gr in enumerate(grads):
                    self.out[f"{key}.grad[{i}]"] = None if gr is None else gr.detach().clone()
            return value
        except Exception as e:  # a mutant may crash where the reference does not: that is behaviour too
            self.out[key] = ("raises", type(e).__name__)
            return None


def _flatten(v) -> list:
    if isinstance(v, (tuple, list)):
        return [x for item in v for x in _flatten(item)]
    if isinstance(v, nn.Module):
        return [p for p in v.state_dict().values()] + [tuple(p.shape) for p in v.parameters()]
    return [v]


# float32 values (networks and what runs through them) are compared within a few ulps of their scale: the same
# maths in another order (log(exp(log w + log N).sum()) and log((w * exp(log N)).sum())) differs by 1 ulp in a
# VAE's float32 gradients, up to 3.6e-6 relative on small entries (held-out bench, seed 912431: the library
# mistake no_logsumexp then counted as misnamed for its own generated twin)
FLOAT32_RTOL, FLOAT32_ATOL = 1e-5, 1e-7


def same_behaviour(a: dict, b: dict, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.shape != y.shape or x.dtype != y.dtype:
                return False
            if x.dtype.is_floating_point:
                low = torch.finfo(x.dtype).bits <= 32
                r, t = (max(rtol, FLOAT32_RTOL), max(atol, FLOAT32_ATOL)) if low else (rtol, atol)
                if not torch.allclose(x, y, rtol=r, atol=t, equal_nan=True):
                    return False
            elif not torch.equal(x, y):
                return False
        elif (x is None or y is None) and ".grad[" in k and _zero(y if x is None else x):
            continue  # autograd's None (no path from that input) is a zero gradient: `mu` and `mu + 0 * log_var` agree
        elif isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            return False
        elif isinstance(x, tuple) and isinstance(y, tuple) and x[:1] == y[:1] == ("raises",):
            continue  # both refuse the input; which exception they raise is no part of any contract
        elif x != y:
            return False
    return True


def _zero(t) -> bool:
    return t is None or isinstance(t, torch.Tensor) and not bool(torch.count_nonzero(t))


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def _rand(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _net(n_in: int, n_out: int, seed: int, scale: float = 1.0) -> nn.Module:
    """A float32 MLP: the assignments specify their networks in float32 (no rubric declares a dtype property for a
    component that runs a network, and students may cast with x.float()), so a `.float()` on what a network
    computes is no change of behaviour (it was, on float64 networks, and such mutants escaped every check)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(n_in, 6), nn.Tanh(), nn.Linear(6, n_out))
    with torch.no_grad():
        net[2].weight.mul_(scale)
    return net


def probe_vae(M) -> dict:
    rec = _Recorder()
    x, mu = _leaf(_rand(3, 4, seed=1, scale=2)), _leaf(_rand(3, 4, seed=2))
    lv = _leaf(torch.cat([_rand(3, 3, seed=3), torch.tensor([[-8.0], [0.0], [6.0]], dtype=torch.float64)], 1))
    reds = [(None, None), ("sum", None), ("sum", -1), ("sum", 0), ("avg", 1), ("avg", None)]
    for r, d in reds:
        rec(f"lnd.{r}.{d}", lambda: M.log_normal_diag(x, mu, lv, reduction=r, dim=d), [x, mu, lv])
        rec(f"lnd3.{r}.{d}", lambda: M.log_normal_diag(x[None], mu[:, None], lv[:, None], reduction=r, dim=d), [x, mu, lv])
        rec(f"lsn.{r}.{d}", lambda: M.log_standard_normal(x, reduction=r, dim=d), [x])
    xb = torch.tensor([[1.0, 0.0, 1.0, 0.3], [0.0, 1.0, 0.5, 1.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    p = _leaf(torch.tensor([[0.3, 0.9, 1e-9, 1.0], [0.5, 0.01, 0.99, 0.7], [1 - 1e-9, 0.2, 0.0, 0.6]], dtype=torch.float64))
    for r, d in reds:
        rec(f"lb.{r}.{d}", lambda: M.log_bernoulli(xb, p, reduction=r, dim=d), [p])
    xc = torch.tensor([[0, 4, 2], [1, 1, 3]])
    pc = torch.softmax(_rand(2, 3, 5, seed=4, scale=3), -1)
    pc[0, 0] = torch.tensor([0.0, 1e-9, 1.0 - 1e-9, 1.0, 0.0], dtype=torch.float64)  # at the clamps: x = 0 picks p = 0,
    pc[1, 0] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # x = 1 picks p = 1
    pc = _leaf(pc)
    for r, d in reds:
        rec(f"lc.{r}.{d}", lambda: M.log_categorical(xc, pc, num_classes=5, reduction=r, dim=d), [pc])
    rec("lc.float", lambda: M.log_categorical(xc.double(), pc, num_classes=5), [pc])
    L, D, V = 3, 3, 4
    enc = M.Encoder(_net(D, 2 * L, 5))
    xe = _rand(4, D, seed=6).float()
    rec("reparam", lambda: M.Encoder.reparameterization(mu, lv), [mu, lv])
    rec("encode", lambda: enc.encode(xe), lambda: list(enc.parameters()))
    rec("enc.sample", lambda: enc.sample(xe), lambda: list(enc.parameters()))
    rec("enc.sample2", lambda: enc.sample(mu_e=mu, log_var_e=lv), [mu, lv])
    rec("enc.log_prob", lambda: enc.log_prob(xe), lambda: list(enc.parameters()))
    z = _leaf(_rand(3, 4, seed=7))
    rec("enc.log_prob2", lambda: enc.log_prob(mu_e=mu, log_var_e=lv, z=z), [mu, lv, z])
    rec("enc.forward", lambda: enc(xe, type="encode"))
    for dist, v in (("categorical", V), ("bernoulli", None)):
        dec = M.Decoder(_net(L, D * (V if v else 1), 8), distribution=dist, num_vals=v)
        zd = _leaf(_rand(5, L, seed=9).float())
        xd = torch.randint(0, V, (5, D), generator=torch.Generator().manual_seed(3)).float() if v else \
            torch.bernoulli(torch.full((5, D), 0.5), generator=torch.Generator().manual_seed(3))
        rec(f"dec.{dist}.decode", lambda: dec.decode(zd), [zd])
        rec(f"dec.{dist}.sample", lambda: dec.sample(zd))
        rec(f"dec.{dist}.log_prob", lambda: dec.log_prob(xd, zd), [zd])
    for K in (1, 3):
        torch.manual_seed(11)
        prior = M.MoGPrior(L, K).double()
        with torch.no_grad():
            for prm in prior.parameters():
                prm.copy_(torch.randn(prm.shape, generator=torch.Generator().manual_seed(12), dtype=torch.float64))
        zp = _leaf(torch.cat([_rand(4, L, seed=13), torch.full((1, L), 30.0, dtype=torch.float64)]))
        rec(f"mog{K}.log_prob", lambda: prior.log_prob(zp), lambda: [zp] + list(prior.parameters()))
        rec(f"mog{K}.log_prob1", lambda: prior.log_prob(zp[:1]), lambda: [zp] + list(prior.parameters()))
        rec(f"mog{K}.sample", lambda: prior.sample(200))
        rec(f"mog{K}.sample1", lambda: prior.sample(1))
    torch.manual_seed(14)
    prior = M.MoGPrior(L, 3)
    vae = M.VAE(_net(D, 2 * L, 15), _net(L, D * V, 16), prior, num_vals=V, L=L)
    xv = torch.randint(0, V, (4, D), generator=torch.Generator().manual_seed(17)).float()
    for r in ("avg", "sum"):
        rec(f"vae.{r}", lambda: vae(xv, reduction=r), lambda: list(vae.parameters()))
    rec("vae.sample", lambda: vae.sample(batch_size=3))
    return rec.out


def probe_kmeans_autoencoder(M) -> dict:
    rec = _Recorder()
    x = _leaf(torch.cat([_rand(9, 3, seed=1), torch.tensor([[0.0, 0, 0], [1.0, 1, 1], [0.5, 0.5, 0.5]], dtype=torch.float64)]))
    # centre 3 duplicates centre 0 (ties), centre 4 is far away (gets no point)
    c = _leaf(torch.tensor([[0.0, 0, 0], [1.0, 1, 1], [-1.0, 0.5, 0], [0.0, 0, 0], [50.0, 50, 50]], dtype=torch.float64))
    for name, xs, cs in (("all", x, c), ("one", x[:1], c), ("k1", x, c[:1])):
        rec(f"dist.{name}", lambda: M.squared_distances(xs, cs))
        rec(f"assign.{name}", lambda: M.assign(xs, cs))
        rec(f"loss.{name}", lambda: M.kmeans_loss(xs, cs))
        for lr in (1.0, 0.3):
            rec(f"update.{name}.{lr}", lambda: M.minibatch_update(cs.detach().clone(), xs.detach(), lr))
    # points that change centre after a move
    rec("update.moves", lambda: M.minibatch_update(torch.tensor([[0.0], [1.0]], dtype=torch.float64),
                                                   torch.tensor([[0.4], [0.6], [0.45], [3.0]], dtype=torch.float64), 0.5))
    xi = torch.rand(30, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)  # D != k
    y = torch.arange(30) % 4
    for how in ("per_digit", "random"):
        for seed in (0, 5):
            rec(f"init.{how}.{seed}", lambda: M.init_centres(xi, y, k=4, how=how, seed=seed))
    rec("init.k3", lambda: M.init_centres(xi, y, k=3, how="per_digit", seed=1))
    rec("init.bad", lambda: M.init_centres(xi, y, k=6, how="per_digit", seed=1))
    a = torch.tensor([0, 2, 2, 1, 0, 3, 3, 3])
    lab = torch.tensor([1, 1, 0, 2, 2, 0, 1, 1])
    rec("confusion", lambda: M.confusion(a, lab, 4, 3))
    rec("confusion.sq", lambda: M.confusion(a % 3, lab, 3, 3))
    rec("confusion.wide", lambda: M.confusion(a, lab, 5, 4))
    torch.manual_seed(3)
    ae = M.ConvAutoencoder(latent_dim=3, channels=(2, 4))  # float32: generate() draws codes in the default dtype
    xa = _leaf(torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(4)))
    rec("ae.params", lambda: [tuple(p.shape) for p in ae.parameters()])
    rec("ae.encode", lambda: ae.encode(xa), lambda: [xa] + list(ae.parameters()))
    rec("ae.forward", lambda: ae(xa), lambda: [xa] + list(ae.parameters()))
    rec("ae.decode", lambda: ae.decode(_rand(1, 3, seed=5).float()), lambda: list(ae.parameters()))
    rec("ae.generate", lambda: ae.generate(2))
    xh = _leaf(_rand(2, 1, 8, 8, seed=6).float())
    rec("recon", lambda: M.reconstruction_loss(xh, xa), [xh, xa])
    rec("recon.flat", lambda: M.reconstruction_loss(xh.reshape(4, 32), xa.reshape(4, 32)), [xh, xa])
    return rec.out


def probe_density_models(M) -> dict:
    rec = _Recorder()
    torch.manual_seed(1)
    vae = M.ConvVAE(latent_dim=2, image_size=8)  # float32, as specified (see _net)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[0] = (x[0] > 0.5).double()
    params = lambda: list(vae.parameters())  # noqa: E731
    rec("vae.params", lambda: [(n, tuple(p.shape)) for n, p in vae.named_parameters()])
    rec("vae.encode", lambda: vae.encode(x.float()), params)
    rec("vae.decode", lambda: vae.decode(_rand(3, 2, seed=3).float()), params)
    eps = _rand(3, 2, seed=4).float()
    rec("vae.elbo", lambda: vae.elbo(x.float(), eps), params)
    rec("vae.elbo.noeps", lambda: vae.elbo(x.float()), params)
    probs = _leaf(torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    with torch.no_grad():
        probs[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 1e-9], dtype=torch.float64)
    mu, lv = _leaf(_rand(3, 2, seed=6)), _leaf(_rand(3, 2, seed=7, scale=3))
    rec("vae_elbo", lambda: M.vae_elbo(x, probs, mu, lv), [probs, mu, lv])
    rec("vae_elbo.flat", lambda: M.vae_elbo(x.flatten(1), probs.flatten(1), mu, lv), [probs, mu, lv])
    g = torch.Generator().manual_seed(8)
    X = _leaf(torch.randn(40, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 6, generator=g, dtype=torch.float64)
              * 2 + 0.3 * torch.randn(40, 6, generator=g, dtype=torch.float64) + 1.5)
    for q in (1, 2, 4):
        # W is defined up to a rotation: compare W Wᵀ
        rec(f"ppca.fit{q}", lambda: (lambda W, m, s: (W @ W.T, m, s))(*M.fit_ppca(X, q)))
    W, m, s2 = _leaf(_rand(6, 2, seed=9)), _leaf(X.detach().mean(0)), _leaf(torch.tensor(0.7, dtype=torch.float64))
    rec("ppca.ll", lambda: M.ppca_log_likelihood(X, W, m, s2))
    rec("ppca.ll1", lambda: M.ppca_log_likelihood(X[:1], W, m, s2))
    rec("ppca.post", lambda: M.ppca_posterior_mean(X, W, m, s2))
    rec("ppca.rec", lambda: M.ppca_reconstruct(X, W, m, s2))
    K, D = 3, 6
    w = _leaf(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    means = _leaf(_rand(K, D, seed=10, scale=2))
    A = _rand(K, D, D, seed=11)
    covs = _leaf(A @ A.transpose(1, 2) + torch.tensor([0.5, 2.0, 0.05], dtype=torch.float64)[:, None, None] * torch.eye(D, dtype=torch.float64))
    Xg = torch.cat([X.detach(), 100 * torch.ones(1, D, dtype=torch.float64)])
    rec("gmm.ll", lambda: M.gmm_log_likelihood(Xg, w, means, covs))
    rec("gmm.em", lambda: M.gmm_em_step(X.detach(), w, means, covs))
    rec("gmm.em.reg", lambda: M.gmm_em_step(X.detach(), w, means, covs, reg=0.1))
    return rec.out


def probe_amortized_vs_lo(M) -> dict:
    rec = _Recorder()
    torch.manual_seed(1)
    # float32, as the assignment specifies its networks (the rubric declares no dtype property for them; students
    # may cast their input with x.float()): a `.float()` on the logits is then no change of behaviour
    cnn = M.CNNClassifier(num_classes=10, image_size=8)
    xi = _leaf(_rand(2, 1, 8, 8, seed=2).float())
    rec("cnn", lambda: cnn(xi), lambda: [xi] + list(cnn.parameters()))
    z, mu = _leaf(_rand(3, 4, seed=3, scale=2)), _leaf(_rand(3, 4, seed=4))
    lv = _leaf(torch.cat([_rand(3, 3, seed=5), torch.tensor([[-8.0], [0.0], [6.0]], dtype=torch.float64)], 1))
    rec("lnd", lambda: M.log_normal_diag(z, mu, lv), [z, mu, lv])
    rec("lnd.bcast", lambda: M.log_normal_diag(z[None].expand(2, 3, 4), mu, lv), [z, mu, lv])
    rec("reparam", lambda: M.reparameterize(mu, lv), [mu, lv])
    rec("reparam.3d", lambda: M.reparameterize(mu.expand(2, 3, 4), lv.expand(2, 3, 4)), [mu, lv])
    rec("kl", lambda: M.kl_standard_normal(mu, lv), [mu, lv])
    rec("kl.3d", lambda: M.kl_standard_normal(mu[None], lv[None]), [mu, lv])
    L, D = 3, 5
    enc = M.GaussianEncoder(_net(D, 2 * L, 6))
    dec = M.BernoulliDecoder(_net(L, D, 7, scale=40.0))  # logits far outside ±log(1/EPS): the clamp matters
    x = torch.rand(3, D, generator=torch.Generator().manual_seed(8))
    x[0] = (x[0] > 0.5).float()
    zz = _leaf(_rand(3, L, seed=9, scale=3).float())
    rec("enc", lambda: enc(x), lambda: list(enc.parameters()))
    rec("dec", lambda: dec(zz), [zz])
    rec("dec.log_prob", lambda: dec.log_prob(x, zz), [zz])
    rec("dec.log_prob.M", lambda: dec.log_prob(x, zz[None].expand(2, 3, L) * 10), [zz])
    mu2, lv2 = _leaf(_rand(3, L, seed=10).float()), _leaf(_rand(3, L, seed=11).float())
    rec("elbo", lambda: M.elbo(dec, x, mu2, lv2), [mu2, lv2])
    vae = M.VAE(enc, dec, L)
    rec("vae.posterior", lambda: vae.posterior(x), lambda: list(vae.parameters()))
    rec("vae.elbo", lambda: vae.elbo(x), lambda: list(vae.parameters()))
    torch.manual_seed(12)
    lo = M.LatentOptimizationVAE(dec, 6, L)
    idx = torch.tensor([4, 0, 4])
    rec("lo.state", lambda: [(n, p) for n, p in lo.named_parameters() if not n.startswith("decoder")])
    rec("lo.posterior", lambda: lo.posterior(x, idx), lambda: list(lo.parameters()))
    rec("lo.elbo", lambda: lo.elbo(x, idx), lambda: list(lo.parameters()))
    for Ms in (1, 4):
        rec(f"iw.vae.{Ms}", lambda: M.log_px_importance(vae, x, Ms))
        rec(f"iw.lo.{Ms}", lambda: M.log_px_importance(lo, x, Ms, idx))
    # log p(x) far below log(smallest double) (~ -745): averaging exp(log w) underflows, log-mean-exp does not
    Dw = 300
    wide = M.VAE(M.GaussianEncoder(_net(Dw, 2 * L, 13)), M.BernoulliDecoder(_net(L, Dw, 14, scale=40.0)), L)
    xw = (torch.rand(2, Dw, generator=torch.Generator().manual_seed(15)) > 0.5).float()
    rec("iw.vae.underflow", lambda: M.log_px_importance(wide, xw, 4))
    return rec.out

