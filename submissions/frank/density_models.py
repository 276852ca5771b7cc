"""Frank's density models (PML exam project, part 1).

Same contract as the assignment, written my own way: SVD instead of an eigendecomposition,
torch.distributions for the Gaussians, loops over mixture components, BCE from torch.nn.functional.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import MultivariateNormal


class ConvVAE(nn.Module):
    def __init__(self, latent_dim=2, image_size=8):
        super().__init__()
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.s = image_size // 4
        flat = 32 * self.s ** 2
        # encoder: 1 -> 16 -> 32 channels, the side halves twice
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=16, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(in_channels=16, out_channels=32, kernel_size=3, stride=2, padding=1)
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_log_var = nn.Linear(flat, latent_dim)
        # decoder mirrors it
        self.fc_dec = nn.Linear(latent_dim, flat)
        self.deconv1 = nn.ConvTranspose2d(32, 16, kernel_size=3, stride=2, padding=1, output_padding=1)
        self.deconv2 = nn.ConvTranspose2d(16, 1, kernel_size=3, stride=2, padding=1, output_padding=1)

    def encode(self, x):
        features = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        features = features.reshape(x.shape[0], -1)
        return self.fc_mu(features), self.fc_log_var(features)

    def decode(self, z):
        h = torch.relu(self.fc_dec(z)).reshape(z.shape[0], 32, self.s, self.s)
        logits = self.deconv2(torch.relu(self.deconv1(h)))
        return torch.sigmoid(logits)

    def elbo(self, x, eps=None):
        mu, log_var = self.encode(x)
        noise = torch.randn_like(mu) if eps is None else eps
        z = mu + noise * (0.5 * log_var).exp()
        return vae_elbo(x, self.decode(z), mu, log_var)


def vae_elbo(x, probs, mu, log_var):
    probs = probs.clamp(1e-6, 1 - 1e-6)
    bce = F.binary_cross_entropy(probs, x, reduction="none")
    reconstruction = -bce.reshape(bce.shape[0], -1).sum(-1)
    kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=-1)
    return reconstruction - kl


def fit_ppca(X, q):
    n = X.shape[0]
    mu = X.mean(0)
    _, singular, Vt = torch.linalg.svd(X - mu, full_matrices=False)
    lam = singular ** 2 / n  # eigenvalues of the ML covariance, in decreasing order
    d = X.shape[1]
    if lam.shape[0] < d:  # fewer examples than dimensions: the rest are zero
        lam = torch.cat([lam, lam.new_zeros(d - lam.shape[0])])
    sigma2 = lam[q:].sum() / (d - q)
    scale = (lam[:q] - sigma2).clamp_min(0).sqrt()
    W = Vt[:q].T * scale
    return W, mu, sigma2


def ppca_log_likelihood(X, W, mu, sigma2):
    d = X.shape[1]
    cov = W @ W.T + sigma2 * torch.eye(d, dtype=X.dtype, device=X.device)
    return MultivariateNormal(mu, covariance_matrix=cov).log_prob(X)


def ppca_posterior_mean(X, W, mu, sigma2):
    q = W.shape[1]
    M = W.T @ W + sigma2 * torch.eye(q, dtype=W.dtype, device=W.device)
    rhs = (X - mu) @ W  # N x q
    return torch.linalg.solve(M, rhs.T).T


def ppca_reconstruct(X, W, mu, sigma2):
    return mu + ppca_posterior_mean(X, W, mu, sigma2) @ W.T


def _component_log_probs(X, means, covs):
    cols = [MultivariateNormal(means[k], covariance_matrix=covs[k]).log_prob(X) for k in range(means.shape[0])]
    return torch.stack(cols, dim=1)


def gmm_log_likelihood(X, weights, means, covs):
    return torch.logsumexp(_component_log_probs(X, means, covs) + weights.log(), dim=1)


def gmm_em_step(X, weights, means, covs, reg=1e-6):
    n, d = X.shape
    log_r = _component_log_probs(X, means, covs) + weights.log()
    r = torch.softmax(log_r, dim=1)
    new_weights, new_means, new_covs = [], [], []
    for k in range(means.shape[0]):
        rk = r[:, k]
        nk = rk.sum()
        m = (rk[:, None] * X).sum(0) / nk
        centred = X - m
        c = (rk[:, None] * centred).T @ centred / nk + reg * torch.eye(d, dtype=X.dtype, device=X.device)
        new_weights.append(nk / n)
        new_means.append(m)
        new_covs.append(c)
    return torch.stack(new_weights), torch.stack(new_means), torch.stack(new_covs)
