"""Known student mistakes of the `density-models` assignment, as mutants of reference/density_models.py.

Same contract as reference/vae_mistakes.py: `MUTANTS[id] = Mutant(id, component, fn)` where
`component` is the dotted name `fn` replaces in `reference.density_models` ("fit_ppca",
"ConvVAE.decode", ...) and `fn` has exactly its signature (methods take `self`). Mutants call other
reference functions through the module (`dm.gmm_log_likelihood`) so several patches compose, and
draw random numbers in the same order as the reference.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from reference import density_models as dm
from reference.density_models import EPS, LOG_2PI
from reference.mutants import registry


MUTANTS, mutant = registry()


# ---- ConvVAE -------------------------------------------------------------------------------------

@mutant("no_output_padding", "ConvVAE.__init__")
def _(self, latent_dim=2, image_size=8):
    nn.Module.__init__(self)
    self.latent_dim, self.image_size = latent_dim, image_size
    s = image_size // 4
    self.side = s
    self.conv1 = nn.Conv2d(1, 16, 3, stride=2, padding=1)
    self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
    self.fc_mu = nn.Linear(32 * s * s, latent_dim)
    self.fc_log_var = nn.Linear(32 * s * s, latent_dim)
    self.fc_dec = nn.Linear(latent_dim, 32 * s * s)
    self.deconv1 = nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1)
    self.deconv2 = nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1)


@mutant("encode_swapped", "ConvVAE.encode")
def _(self, x):
    h = F.relu(self.conv2(F.relu(self.conv1(x)))).flatten(start_dim=1)
    return self.fc_log_var(h), self.fc_mu(h)


@mutant("encode_no_relu", "ConvVAE.encode")
def _(self, x):
    h = self.conv2(self.conv1(x)).flatten(start_dim=1)
    return self.fc_mu(h), self.fc_log_var(h)


@mutant("decode_no_sigmoid", "ConvVAE.decode")
def _(self, z):
    h = F.relu(self.fc_dec(z)).view(-1, 32, self.side, self.side)
    return self.deconv2(F.relu(self.deconv1(h)))


@mutant("reparam_std_as_var", "ConvVAE.elbo")
def _(self, x, eps=None):
    mu, log_var = self.encode(x)
    if eps is None:
        eps = torch.randn_like(mu)
    z = mu + torch.exp(log_var) * eps
    return dm.vae_elbo(x, self.decode(z), mu, log_var)


@mutant("elbo_no_sampling", "ConvVAE.elbo")
def _(self, x, eps=None):
    mu, log_var = self.encode(x)
    return dm.vae_elbo(x, self.decode(mu), mu, log_var)


# ---- vae_elbo --------------------------------------------------------------------------------------

def _log_lik(x, probs):
    p = torch.clamp(probs, EPS, 1.0 - EPS)
    return x * torch.log(p) + (1.0 - x) * torch.log1p(-p)


def _kl(mu, log_var):
    return 0.5 * (torch.exp(log_var) + mu ** 2 - 1.0 - log_var).sum(dim=1)


@mutant("kl_wrong_sign", "vae_elbo")
def _(x, probs, mu, log_var):
    return _log_lik(x, probs).flatten(start_dim=1).sum(dim=1) + _kl(mu, log_var)


@mutant("log_lik_averaged", "vae_elbo")
def _(x, probs, mu, log_var):
    return _log_lik(x, probs).flatten(start_dim=1).mean(dim=1) - _kl(mu, log_var)


@mutant("kl_log_var_as_log_std", "vae_elbo")
def _(x, probs, mu, log_var):
    kl = 0.5 * (torch.exp(2 * log_var) + mu ** 2 - 1.0 - 2 * log_var).sum(dim=1)
    return _log_lik(x, probs).flatten(start_dim=1).sum(dim=1) - kl


# ---- PPCA ------------------------------------------------------------------------------------------

def _eig(X, denominator_offset=0):
    N = X.shape[0]
    mu = X.mean(dim=0)
    Xc = X - mu
    evals, evecs = torch.linalg.eigh(Xc.T @ Xc / (N - denominator_offset))
    return mu, evals.flip(0), evecs.flip(1)


@mutant("sigma2_smallest_eigenvalue", "fit_ppca")
def _(X, q):
    mu, evals, evecs = _eig(X)
    sigma2 = evals[-1]
    return evecs[:, :q] * torch.sqrt(torch.clamp(evals[:q] - sigma2, min=0.0)), mu, sigma2


@mutant("sigma2_mean_of_all", "fit_ppca")
def _(X, q):
    mu, evals, evecs = _eig(X)
    sigma2 = evals.mean()
    return evecs[:, :q] * torch.sqrt(torch.clamp(evals[:q] - sigma2, min=0.0)), mu, sigma2


@mutant("w_without_sigma2", "fit_ppca")
def _(X, q):
    mu, evals, evecs = _eig(X)
    sigma2 = evals[q:].mean()
    return evecs[:, :q] * torch.sqrt(evals[:q]), mu, sigma2


@mutant("unbiased_covariance", "fit_ppca")
def _(X, q):
    mu, evals, evecs = _eig(X, denominator_offset=1)
    sigma2 = evals[q:].mean()
    return evecs[:, :q] * torch.sqrt(torch.clamp(evals[:q] - sigma2, min=0.0)), mu, sigma2


def _ppca_parts(X, W, mu, sigma2):
    D = X.shape[1]
    C = W @ W.T + sigma2 * torch.eye(D, dtype=X.dtype, device=X.device)
    L = torch.linalg.cholesky(C)
    sol = torch.linalg.solve_triangular(L, (X - mu).T, upper=False)
    return D, (sol ** 2).sum(dim=0), 2.0 * torch.log(torch.diagonal(L)).sum()


@mutant("missing_log_det", "ppca_log_likelihood")
def _(X, W, mu, sigma2):
    D, maha, log_det = _ppca_parts(X, W, mu, sigma2)
    return -0.5 * D * LOG_2PI - 0.5 * maha


@mutant("missing_log2pi", "ppca_log_likelihood")
def _(X, W, mu, sigma2):
    D, maha, log_det = _ppca_parts(X, W, mu, sigma2)
    return -0.5 * log_det - 0.5 * maha


@mutant("log2pi_once", "ppca_log_likelihood")
def _(X, W, mu, sigma2):
    D, maha, log_det = _ppca_parts(X, W, mu, sigma2)
    return -0.5 * LOG_2PI - 0.5 * log_det - 0.5 * maha


@mutant("posterior_without_M_inverse", "ppca_posterior_mean")
def _(X, W, mu, sigma2):
    return (X - mu) @ W


@mutant("posterior_not_centred", "ppca_posterior_mean")
def _(X, W, mu, sigma2):
    q = W.shape[1]
    M = W.T @ W + sigma2 * torch.eye(q, dtype=X.dtype, device=X.device)
    return torch.linalg.solve(M, W.T @ X.T).T


# ---- GMM -------------------------------------------------------------------------------------------

@mutant("no_logsumexp", "gmm_log_likelihood")
def _(X, weights, means, covs):
    return torch.log((weights * torch.exp(dm._log_gaussians(X, means, covs))).sum(dim=1))


@mutant("weights_ignored", "gmm_log_likelihood")
def _(X, weights, means, covs):
    K = means.shape[0]
    return torch.logsumexp(dm._log_gaussians(X, means, covs), dim=1) - torch.log(torch.tensor(float(K), dtype=X.dtype))


def _responsibilities(X, weights, means, covs):
    log_joint = torch.log(weights) + dm._log_gaussians(X, means, covs)
    return torch.exp(log_joint - dm.gmm_log_likelihood(X, weights, means, covs)[:, None])


def _covs(X, resp, centres, Nk, reg):
    D = X.shape[1]
    diff = X[None, :, :] - centres[:, None, :]
    covs = torch.einsum("nk,kni,knj->kij", resp, diff, diff) / Nk[:, None, None]
    return covs + reg * torch.eye(D, dtype=X.dtype, device=X.device)


@mutant("em_weights_unnormalised", "gmm_em_step")
def _(X, weights, means, covs, reg=1e-6):
    resp = _responsibilities(X, weights, means, covs)
    Nk = resp.sum(dim=0)
    new_means = (resp.T @ X) / Nk[:, None]
    return Nk, new_means, _covs(X, resp, new_means, Nk, reg)


@mutant("em_covs_old_means", "gmm_em_step")
def _(X, weights, means, covs, reg=1e-6):
    resp = _responsibilities(X, weights, means, covs)
    Nk = resp.sum(dim=0)
    new_means = (resp.T @ X) / Nk[:, None]
    return Nk / X.shape[0], new_means, _covs(X, resp, means, Nk, reg)


@mutant("em_resp_unnormalised", "gmm_em_step")
def _(X, weights, means, covs, reg=1e-6):
    resp = torch.exp(torch.log(weights) + dm._log_gaussians(X, means, covs))
    Nk = resp.sum(dim=0)
    new_means = (resp.T @ X) / Nk[:, None]
    return Nk / X.shape[0], new_means, _covs(X, resp, new_means, Nk, reg)
