"""Reference implementation of `amortized-vs-lo` ("Advanced Machine Learning", exercise 1).

Students implement, in `amortized_vs_lo.py`:

  CNNClassifier            a small CNN; `forward(x)` returns *logits* over 10 classes (the course
                           loop feeds them to `nn.CrossEntropyLoss`, which applies log-softmax itself).
  log_normal_diag          log N(z; mu, diag(exp(log_var))), summed over the last dimension.
  reparameterize           z = mu + exp(0.5·log_var)·eps, eps ~ N(0, I).
  kl_standard_normal       KL(N(mu, diag(exp(log_var))) ‖ N(0, I)) per example, in closed form.
  GaussianEncoder          amortized q(z|x): `forward(x) -> (mu, log_var)` from one network.
  BernoulliDecoder         p(x|z) with x in [0, 1]: `forward(z)` -> pixel probabilities (sigmoid of
                           the network's output), `log_prob(x, z)` -> log p(x|z) per example.
  elbo                     ELBO(x) = log p(x|z) - KL(q ‖ p(z)), z ~ q by reparameterization, per example.
  VAE                      amortized inference: `posterior(x, idx=None)` is the encoder's output,
                           `elbo(x, idx=None)` the ELBO of each example.
  LatentOptimizationVAE    latent optimization (LO), no encoder: one learned q(z|x_i) per training
                           example, `mu` and `log_var` are nn.Parameter tables of shape (N, L) indexed
                           by example id; `posterior(x, idx)`, `elbo(x, idx)`.
  log_px_importance        log p(x) per image by importance sampling with M samples from q(z|x):
                           log (1/M) Σ_m p(x|z_m) p(z_m) / q(z_m|x), computed with log-sum-exp.

Shapes: B batch, D = H·W pixels (images flattened, values in [0, 1]), L latent dimensions,
N training examples, M importance samples. Functions keep the inputs' dtype and device; tensors
they create are made like their inputs (`torch.randn_like`, ...). Leading batch dimensions
broadcast: `decoder.log_prob(x, z)` with x (B, D) and z (M, B, L) returns (M, B).

The networks are given: the encoder's maps D -> 2L (mu and log_var concatenated, in that order),
the decoder's maps L -> D (one logit per pixel). `CNNClassifier.__init__` fixes the architecture
so the grader can load trained weights; students write its `forward`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-5  # probabilities are clamped to [EPS, 1 - EPS] before taking logs
LOG_2PI = math.log(2 * math.pi)


# ---- supervised classification -----------------------------------------------------------------

class CNNClassifier(nn.Module):
    """conv(1→16, 3×3, pad 1) → ReLU → max-pool 2 → conv(16→32, 3×3, pad 1) → ReLU → max-pool 2
    → flatten → linear(32·(S/4)², 64) → ReLU → linear(64, num_classes).

    `image_size` S is 8 for the 8×8 digits and 28 for MNIST (S/4 rounds down).
    """

    def __init__(self, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(32 * (image_size // 4) ** 2, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, S, S) images in [0, 1] -> (B, num_classes) logits (unnormalised: no softmax)."""
        # BEGIN SOLUTION
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.relu(self.fc1(h.flatten(1)))
        return self.fc2(h)
        # END SOLUTION


# ---- densities ------------------------------------------------------------------------------

def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(log_var))) summed over the last dimension.

    z, mu, log_var broadcast together, shape (..., L) -> (...); the dtype of z.
    """
    # BEGIN SOLUTION
    log_p = -0.5 * LOG_2PI - 0.5 * log_var - 0.5 * torch.exp(-log_var) * (z - mu) ** 2
    return log_p.sum(-1)
    # END SOLUTION


def reparameterize(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """z = mu + exp(0.5·log_var)·eps with eps ~ N(0, I) of mu's shape, dtype and device.

    Differentiable with respect to mu and log_var (fresh noise on every call).
    """
    # BEGIN SOLUTION
    eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * log_var) * eps
    # END SOLUTION


def kl_standard_normal(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(log_var))) ‖ N(0, I)) = ½ Σ_l (mu² + exp(log_var) − 1 − log_var).

    (..., L) -> (...), summed over the last dimension; always >= 0.
    """
    # BEGIN SOLUTION
    return 0.5 * (mu ** 2 + torch.exp(log_var) - 1.0 - log_var).sum(-1)
    # END SOLUTION


# ---- amortized VAE --------------------------------------------------------------------------

class GaussianEncoder(nn.Module):
    """Amortized q(z|x) = N(mu(x), diag(exp(log_var(x)))); `net` maps (B, D) -> (B, 2L)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D) -> (mu, log_var), each (B, L): the first L outputs are mu, the last L log_var."""
        # BEGIN SOLUTION
        mu, log_var = torch.chunk(self.net(x), 2, dim=-1)
        return mu, log_var
        # END SOLUTION


class BernoulliDecoder(nn.Module):
    """p(x|z) = Π_d Bern(x_d; p_d(z)) for x in [0, 1]; `net` maps (..., L) -> (..., D) logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., L) -> pixel probabilities (..., D) in (0, 1): the sigmoid of the network's output."""
        # BEGIN SOLUTION
        return torch.sigmoid(self.net(z))
        # END SOLUTION

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) = Σ_d x_d log p_d + (1 − x_d) log(1 − p_d), p = self(z) clamped to [EPS, 1 − EPS].

        x (B, D) and z (..., B, L) broadcast: the result has z's leading shape (..., B).
        """
        # BEGIN SOLUTION
        p = torch.clamp(self(z), EPS, 1.0 - EPS)
        return (x * torch.log(p) + (1.0 - x) * torch.log(1.0 - p)).sum(-1)
        # END SOLUTION


def elbo(decoder: BernoulliDecoder, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """ELBO per example: log p(x|z) − KL(q(z|x) ‖ N(0, I)) with one z = reparameterize(mu, log_var).

    x (B, D), mu and log_var (B, L) -> (B,). Training minimises −elbo(...).mean().
    """
    # BEGIN SOLUTION
    z = reparameterize(mu, log_var)
    return decoder.log_prob(x, z) - kl_standard_normal(mu, log_var)
    # END SOLUTION


class VAE(nn.Module):
    """Amortized inference: q(z|x) comes from the shared encoder."""

    def __init__(self, encoder: GaussianEncoder, decoder: BernoulliDecoder, L: int):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.L = L

    def posterior(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_var) of q(z|x), each (B, L). `idx` is ignored (kept for a common interface with LO)."""
        # BEGIN SOLUTION
        return self.encoder(x)
        # END SOLUTION

    def elbo(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """ELBO of each example, (B,)."""
        # BEGIN SOLUTION
        mu, log_var = self.posterior(x, idx)
        return elbo(self.decoder, x, mu, log_var)
        # END SOLUTION


# ---- latent optimization --------------------------------------------------------------------

class LatentOptimizationVAE(nn.Module):
    """Latent optimization: no encoder; q(z|x_i) = N(mu[i], diag(exp(log_var[i]))) is learned for
    each of the N training examples, jointly with the decoder.

    Attributes: `mu` and `log_var`, nn.Parameter tables of shape (N, L); `mu` starts at N(0, I)
    draws (one row per example), `log_var` at 0. `decoder` is a BernoulliDecoder.
    """

    def __init__(self, decoder: BernoulliDecoder, num_examples: int, L: int):
        super().__init__()
        self.decoder = decoder
        self.L = L
        # BEGIN SOLUTION
        self.mu = nn.Parameter(torch.randn(num_examples, L))
        self.log_var = nn.Parameter(torch.zeros(num_examples, L))
        # END SOLUTION

    def posterior(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_var) of examples `idx` (int64, (B,)), each (B, L): rows idx of the tables."""
        # BEGIN SOLUTION
        return self.mu[idx], self.log_var[idx]
        # END SOLUTION

    def elbo(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """ELBO of each example, (B,): x are the training images number `idx`."""
        # BEGIN SOLUTION
        mu, log_var = self.posterior(x, idx)
        return elbo(self.decoder, x, mu, log_var)
        # END SOLUTION


# ---- log-likelihood by importance sampling ------------------------------------------------------

def log_px_importance(model, x: torch.Tensor, M: int, idx: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x) per image, (B,), by importance sampling with M samples from q(z|x):

        log p(x) ≈ log (1/M) Σ_m exp(w_m),  w_m = log p(x|z_m) + log N(z_m; 0, I) − log q(z_m|x),

    with z_m = reparameterize(mu, log_var) drawn as one (M, B, L) tensor and the log-mean-exp
    computed stably (torch.logsumexp(w, 0) − log M). `model` is a VAE or a LatentOptimizationVAE
    (`idx` selects the LO posteriors). In expectation a lower bound on log p(x) that tightens as M
    grows; M = 1 is the ELBO.
    """
    # BEGIN SOLUTION
    mu, log_var = model.posterior(x, idx)
    z = reparameterize(mu.expand(M, *mu.shape), log_var.expand(M, *log_var.shape))
    log_w = (model.decoder.log_prob(x, z) + log_normal_diag(z, torch.zeros_like(z), torch.zeros_like(z))
             - log_normal_diag(z, mu, log_var))
    return torch.logsumexp(log_w, dim=0) - math.log(M)
    # END SOLUTION
