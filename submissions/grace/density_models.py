"""Grace's density models. Conv VAE, PPCA and a GMM for the digits."""

import math

import torch
from torch import nn


class ConvVAE(nn.Module):
    def __init__(self, latent_dim=2, image_size=8):
        super().__init__()
        self.latent_dim = latent_dim
        side = image_size // 4
        self.side = side
        self.conv1 = nn.Conv2d(1, 16, 3, 2, 1)
        self.conv2 = nn.Conv2d(16, 32, 3, 2, 1)
        self.fc_mu = nn.Linear(32 * side * side, latent_dim)
        self.fc_log_var = nn.Linear(32 * side * side, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, 32 * side * side)
        self.deconv1 = nn.ConvTranspose2d(32, 16, 3, 2, 1, 1)
        self.deconv2 = nn.ConvTranspose2d(16, 1, 3, 2, 1, 1)
        self.act = nn.ReLU()

    def encode(self, x):
        h = self.act(self.conv1(x))
        h = self.act(self.conv2(h))
        h = torch.flatten(h, 1)
        return self.fc_mu(h), self.fc_log_var(h)

    def decode(self, z):
        h = self.act(self.fc_dec(z))
        h = h.view(z.size(0), 32, self.side, self.side)
        h = self.act(self.deconv1(h))
        return torch.sigmoid(self.deconv2(h))

    def elbo(self, x, eps=None):
        mu, log_var = self.encode(x)
        if eps is None:
            eps = torch.randn_like(mu)
        std = torch.exp(0.5 * log_var)
        z = mu + std * eps
        return vae_elbo(x, self.decode(z), mu, log_var)


def vae_elbo(x, probs, mu, log_var):
    p = torch.clamp(probs, 1e-6, 1 - 1e-6)
    log_px = torch.sum((x * torch.log(p) + (1 - x) * torch.log(1 - p)).view(x.size(0), -1), dim=1)
    kl = 0.5 * torch.sum(mu ** 2 + torch.exp(log_var) - log_var - 1, dim=1)
    return log_px + kl  # ELBO = E[log p(x|z)] + KL


def fit_ppca(X, q):
    N, D = X.shape
    mu = torch.mean(X, dim=0)
    S = (X - mu).T @ (X - mu) / N
    lam, U = torch.linalg.eigh(S)
    order = torch.argsort(lam, descending=True)
    lam, U = lam[order], U[:, order]
    sigma2 = lam[-1]  # the noise level is the smallest variance
    W = U[:, :q] @ torch.diag(torch.sqrt(lam[:q] - sigma2))
    return W, mu, sigma2


def ppca_log_likelihood(X, W, mu, sigma2):
    D = X.shape[1]
    C = W @ W.T + sigma2 * torch.eye(D, dtype=X.dtype, device=X.device)
    diff = X - mu
    maha = torch.sum(diff * torch.linalg.solve(C, diff.T).T, dim=1)
    return -0.5 * D * math.log(2 * math.pi) - 0.5 * maha


def ppca_posterior_mean(X, W, mu, sigma2):
    q = W.shape[1]
    M = W.T @ W + sigma2 * torch.eye(q, dtype=X.dtype, device=X.device)
    return (torch.linalg.inv(M) @ W.T @ (X - mu).T).T


def ppca_reconstruct(X, W, mu, sigma2):
    return ppca_posterior_mean(X, W, mu, sigma2) @ W.T + mu


def _log_normal(X, mean, cov):
    D = X.shape[1]
    diff = X - mean
    maha = torch.sum(diff * torch.linalg.solve(cov, diff.T).T, dim=1)
    return -0.5 * (D * math.log(2 * math.pi) + torch.logdet(cov) + maha)


def gmm_log_likelihood(X, weights, means, covs):
    total = 0
    for k in range(len(weights)):
        total = total + weights[k] * torch.exp(_log_normal(X, means[k], covs[k]))
    return torch.log(total)


def gmm_em_step(X, weights, means, covs, reg=1e-6):
    N, D = X.shape
    K = len(weights)
    log_joint = torch.stack([torch.log(weights[k]) + _log_normal(X, means[k], covs[k]) for k in range(K)], dim=1)
    resp = torch.exp(log_joint - torch.logsumexp(log_joint, dim=1, keepdim=True))
    Nk = resp.sum(dim=0)
    new_means = resp.T @ X / Nk[:, None]
    new_covs = []
    for k in range(K):
        d = X - new_means[k]
        new_covs.append((resp[:, k:k + 1] * d).T @ d / Nk[k] + reg * torch.eye(D, dtype=X.dtype, device=X.device))
    return Nk / N, new_means, torch.stack(new_covs)
