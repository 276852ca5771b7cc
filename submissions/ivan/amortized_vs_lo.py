"""Exercise 1 - Advanced Machine Learning. Ivan's solution."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-5
HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


class CNNClassifier(nn.Module):
    def __init__(self, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(32 * (image_size // 4) ** 2, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        for conv in (self.conv1, self.conv2):
            x = F.max_pool2d(torch.relu(conv(x)), kernel_size=2)
        x = x.reshape(x.shape[0], -1)
        return F.softmax(self.fc2(torch.relu(self.fc1(x))), dim=1)  # class probabilities


def log_normal_diag(z, mu, log_var):
    sq = (z - mu).pow(2) / log_var.exp()
    return -(HALF_LOG_TWO_PI + 0.5 * log_var + 0.5 * sq).sum(dim=-1)


def reparameterize(mu, log_var):
    std = (0.5 * log_var).exp()
    return mu + std * torch.randn_like(std)


def kl_standard_normal(mu, log_var):
    return -0.5 * torch.sum(1 + log_var - mu * mu - log_var.exp(), dim=-1)


class GaussianEncoder(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        h = self.net(x)
        L = h.shape[-1] // 2
        return h[..., :L], h[..., L:]


class BernoulliDecoder(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z):
        return 1.0 / (1.0 + torch.exp(-self.net(z)))

    def log_prob(self, x, z):
        p = self.forward(z).clamp(min=EPS, max=1 - EPS)
        return torch.sum(x * p.log() + (1 - x) * (1 - p).log(), dim=-1)


def elbo(decoder, x, mu, log_var):
    z = reparameterize(mu, log_var)
    reconstruction = decoder.log_prob(x, z)
    return reconstruction + kl_standard_normal(mu, log_var)


class VAE(nn.Module):
    def __init__(self, encoder, decoder, L):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.L = L

    def posterior(self, x, idx=None):
        mu, log_var = self.encoder(x)
        return mu, log_var

    def elbo(self, x, idx=None):
        return elbo(self.decoder, x, *self.posterior(x))


class LatentOptimizationVAE(nn.Module):
    def __init__(self, decoder, num_examples, L):
        super().__init__()
        self.decoder = decoder
        self.L = L
        self.mu = nn.Parameter(torch.randn(num_examples, L))
        self.log_var = nn.Parameter(torch.zeros(num_examples, L))

    def posterior(self, x, idx):
        B = len(idx)
        return self.mu[0].expand(B, -1), self.log_var[0].expand(B, -1)

    def elbo(self, x, idx):
        mu, log_var = self.posterior(x, idx)
        return elbo(self.decoder, x, mu, log_var)


def log_px_importance(model, x, M, idx=None):
    mu, log_var = model.posterior(x, idx)
    eps = torch.randn((M,) + tuple(mu.shape), dtype=mu.dtype, device=mu.device)
    z = mu + torch.exp(0.5 * log_var) * eps                      # (M, B, L)
    log_prior = log_normal_diag(z, torch.zeros_like(z), torch.zeros_like(z))
    log_q = log_normal_diag(z, mu, log_var)
    log_w = model.decoder.log_prob(x, z) + log_prior - log_q      # (M, B)
    return log_w.mean(dim=0)
