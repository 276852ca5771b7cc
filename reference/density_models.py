"""Reference implementation of the `density-models` assignment (Probabilistic ML exam project, part 1).

Three density models of handwritten digits, compared on held-out data:

* a convolutional VAE with a Bernoulli likelihood (`ConvVAE`, `vae_elbo`),
* probabilistic PCA in closed form (Tipping & Bishop 1999: `fit_ppca`, `ppca_log_likelihood`,
  `ppca_posterior_mean`, `ppca_reconstruct`),
* a Gaussian mixture model with full covariances (`gmm_log_likelihood`, `gmm_em_step`).

Data: images scaled to [0, 1] (8×8 digits divided by 16, or MNIST divided by 255). The VAE reads
them as Bernoulli means ("soft" binary images); PPCA and the GMM model them as flattened vectors.

Shapes: N examples, D = H·W pixels, q latent dimensions of PPCA, K mixture components,
B batch, L latent dimensions of the VAE. Every function works in the dtype and on the device of its
inputs (create new tensors like the inputs: `torch.eye(D, dtype=X.dtype, device=X.device)`).

The conv VAE's architecture is fixed (the grader loads weights into it by name):

    conv1     Conv2d(1, 16, 3, stride=2, padding=1)                      H -> H/2
    conv2     Conv2d(16, 32, 3, stride=2, padding=1)                     H/2 -> H/4
    fc_mu     Linear(32·s·s, L)    and   fc_log_var  Linear(32·s·s, L)     with s = image_size // 4
    fc_dec    Linear(L, 32·s·s)
    deconv1   ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1)    s -> 2s
    deconv2   ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1)     2s -> 4s

with a ReLU after conv1, conv2, fc_dec and deconv1, flattening in (C, H, W) order between the
convolutions and the linear layers. For 8×8 digits the spatial sizes are 8 -> 4 -> 2 -> 4 -> 8,
for 28×28 MNIST 28 -> 14 -> 7 -> 14 -> 28 (image_size must be a multiple of 4).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)
EPS = 1e-6  # clamp for Bernoulli probabilities


# ---- convolutional VAE ---------------------------------------------------------------------------

class ConvVAE(nn.Module):
    """VAE with a convolutional encoder/decoder, N(0, I) prior and Bernoulli likelihood.

    Args:
        latent_dim: L, the size of z (2 in the exam project, so latents can be plotted).
        image_size: H = W of the square images, a multiple of 4 (8 for digits, 28 for MNIST).
    """

    def __init__(self, latent_dim: int = 2, image_size: int = 8):
        super().__init__()
        self.latent_dim = latent_dim
        self.image_size = image_size
        s = image_size // 4
        self.side = s
        # BEGIN SOLUTION
        self.conv1 = nn.Conv2d(1, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc_mu = nn.Linear(32 * s * s, latent_dim)
        self.fc_log_var = nn.Linear(32 * s * s, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, 32 * s * s)
        self.deconv1 = nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1)
        self.deconv2 = nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1)
        # END SOLUTION

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_var) of q(z|x) = N(mu, diag exp(log_var)), each B×L, for images x of shape B×1×H×W."""
        # BEGIN SOLUTION
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))
        h = h.flatten(start_dim=1)
        return self.fc_mu(h), self.fc_log_var(h)
        # END SOLUTION

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli means p(x|z) (probabilities in (0, 1)), shape B×1×H×W, for latents z of shape B×L."""
        # BEGIN SOLUTION
        h = F.relu(self.fc_dec(z)).view(-1, 32, self.side, self.side)
        h = F.relu(self.deconv1(h))
        return torch.sigmoid(self.deconv2(h))
        # END SOLUTION

    def elbo(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example ELBO (shape B) with one reparameterised sample z = mu + exp(log_var / 2)·eps.

        eps: standard-normal noise of shape B×L; drawn with torch.randn_like(mu) when None.
        """
        # BEGIN SOLUTION
        mu, log_var = self.encode(x)
        if eps is None:
            eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * log_var) * eps
        return vae_elbo(x, self.decode(z), mu, log_var)
        # END SOLUTION


def vae_elbo(x: torch.Tensor, probs: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Per-example ELBO, shape B: log Bern(x | probs) summed over pixels − KL(N(mu, exp(log_var)) ‖ N(0, I)).

    x, probs: B×1×H×W (or B×D), x in [0, 1] (the "soft" binary cross-entropy), probs clamped to
    [EPS, 1 − EPS] before taking logs. mu, log_var: B×L. The KL is the analytic one:
    ½ Σ_l (exp(log_var) + mu² − 1 − log_var).
    """
    # BEGIN SOLUTION
    p = torch.clamp(probs, EPS, 1.0 - EPS)
    log_lik = (x * torch.log(p) + (1.0 - x) * torch.log1p(-p)).flatten(start_dim=1).sum(dim=1)
    kl = 0.5 * (torch.exp(log_var) + mu ** 2 - 1.0 - log_var).sum(dim=1)
    return log_lik - kl
    # END SOLUTION


# ---- probabilistic PCA ---------------------------------------------------------------------------

def fit_ppca(X: torch.Tensor, q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maximum-likelihood PPCA (Tipping & Bishop): (W: D×q, mu: D, sigma2: 0-d tensor).

    With S = (X − mu)ᵀ(X − mu) / N (the ML covariance: divide by N) and eigenpairs (λ_i, u_i)
    sorted decreasingly: sigma2 = mean of the D − q discarded eigenvalues, and
    W = U_q (Λ_q − sigma2·I)^{1/2} (any rotation W·R is equally correct: graded through W Wᵀ).
    """
    # BEGIN SOLUTION
    N, D = X.shape
    mu = X.mean(dim=0)
    Xc = X - mu
    S = Xc.T @ Xc / N
    evals, evecs = torch.linalg.eigh(S)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma2 = evals[q:].mean()
    W = evecs[:, :q] * torch.sqrt(torch.clamp(evals[:q] - sigma2, min=0.0))
    return W, mu, sigma2
    # END SOLUTION


def ppca_log_likelihood(X: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Exact per-example log-density, shape N: log N(x_n; mu, C) with C = W Wᵀ + sigma2·I (D×D).

    log N = −D/2·log 2π − ½·log det C − ½·(x − mu)ᵀ C⁻¹ (x − mu). Use a Cholesky factor of C.
    """
    # BEGIN SOLUTION
    D = X.shape[1]
    C = W @ W.T + sigma2 * torch.eye(D, dtype=X.dtype, device=X.device)
    L = torch.linalg.cholesky(C)
    diff = (X - mu).T  # D×N
    sol = torch.linalg.solve_triangular(L, diff, upper=False)
    maha = (sol ** 2).sum(dim=0)
    log_det = 2.0 * torch.log(torch.diagonal(L)).sum()
    return -0.5 * D * LOG_2PI - 0.5 * log_det - 0.5 * maha
    # END SOLUTION


def ppca_posterior_mean(X: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """E[z | x_n] = M⁻¹ Wᵀ (x_n − mu) with M = Wᵀ W + sigma2·I (q×q); shape N×q."""
    # BEGIN SOLUTION
    q = W.shape[1]
    M = W.T @ W + sigma2 * torch.eye(q, dtype=X.dtype, device=X.device)
    return torch.linalg.solve(M, W.T @ (X - mu).T).T
    # END SOLUTION


def ppca_reconstruct(X: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Reconstruction through the posterior mean: x̂_n = W·E[z | x_n] + mu, shape N×D."""
    # BEGIN SOLUTION
    return ppca_posterior_mean(X, W, mu, sigma2) @ W.T + mu
    # END SOLUTION


# ---- Gaussian mixture model ------------------------------------------------------------------------

def _log_gaussians(X: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
    """log N(x_n; means_k, covs_k) for every pair, shape N×K (Cholesky of each K×D×D covariance)."""
    # BEGIN SOLUTION
    D = X.shape[1]
    L = torch.linalg.cholesky(covs)  # K×D×D
    diff = (X[None, :, :] - means[:, None, :]).transpose(1, 2)  # K×D×N
    sol = torch.linalg.solve_triangular(L, diff, upper=False)
    maha = (sol ** 2).sum(dim=1)  # K×N
    log_det = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(dim=-1)  # K
    return (-0.5 * D * LOG_2PI - 0.5 * log_det[:, None] - 0.5 * maha).T
    # END SOLUTION


def gmm_log_likelihood(X: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
    """Per-example log-density of a Gaussian mixture, shape N: log Σ_k weights_k N(x_n; means_k, covs_k).

    weights: K mixing proportions (non-negative, summing to 1); means: K×D; covs: K×D×D positive
    definite. Combine the components with log-sum-exp so points far from every mode stay finite.
    """
    # BEGIN SOLUTION
    return torch.logsumexp(torch.log(weights) + _log_gaussians(X, means, covs), dim=1)
    # END SOLUTION


def gmm_em_step(X: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor,
                reg: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One EM iteration; returns the new (weights K, means K×D, covs K×D×D).

    E-step: responsibilities r_nk = weights_k N(x_n; means_k, covs_k) / p(x_n) (in log space).
    M-step: N_k = Σ_n r_nk, weights = N_k / N, means_k = Σ_n r_nk x_n / N_k,
    covs_k = Σ_n r_nk (x_n − means_k)(x_n − means_k)ᵀ / N_k + reg·I (with the *new* means).
    """
    # BEGIN SOLUTION
    N, D = X.shape
    log_resp = torch.log(weights) + _log_gaussians(X, means, covs) - gmm_log_likelihood(X, weights, means, covs)[:, None]
    resp = torch.exp(log_resp)  # N×K
    Nk = resp.sum(dim=0)
    new_weights = Nk / N
    new_means = (resp.T @ X) / Nk[:, None]
    diff = X[None, :, :] - new_means[:, None, :]  # K×N×D
    new_covs = torch.einsum("nk,kni,knj->kij", resp, diff, diff) / Nk[:, None, None]
    new_covs = new_covs + reg * torch.eye(D, dtype=X.dtype, device=X.device)
    return new_weights, new_means, new_covs
    # END SOLUTION
