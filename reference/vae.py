"""Reference implementation of the `vae` assignment (Tomczak, "Deep Generative Modeling", course code style).

Log-densities are element-wise unless a `reduction` ('sum' or 'avg') is given, in which case they
are summed/averaged over `dim` (over all elements when `dim` is None). Everything is
device- and dtype-agnostic: tensors are created like the inputs or the parameters.

Shapes: B batch, D data dimensions, L latent dimensions, K mixture components, V = num_vals classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-5
LOG_2PI = math.log(2 * math.pi)


def _reduce(t: torch.Tensor, reduction: str | None, dim) -> torch.Tensor:
    """`t` unchanged (None), summed ('sum') or averaged ('avg') over `dim` (all elements if None)."""
    if reduction is None:
        return t
    if reduction == "sum":
        return t.sum() if dim is None else t.sum(dim)
    if reduction == "avg":
        return t.mean() if dim is None else t.mean(dim)
    raise ValueError(f"reduction must be None, 'sum' or 'avg', got {reduction!r}")


def log_normal_diag(x, mu, log_var, reduction=None, dim=None):
    """log N(x; mu, exp(log_var)) element-wise (broadcast shape, x's dtype), then reduced."""
    # BEGIN SOLUTION
    log_p = -0.5 * LOG_2PI - 0.5 * log_var - 0.5 * torch.exp(-log_var) * (x - mu) ** 2
    # END SOLUTION
    return _reduce(log_p, reduction, dim)


def log_standard_normal(x, reduction=None, dim=None):
    """log N(x; 0, 1) element-wise (shape and dtype of x), then reduced."""
    # BEGIN SOLUTION
    log_p = -0.5 * LOG_2PI - 0.5 * x ** 2
    # END SOLUTION
    return _reduce(log_p, reduction, dim)


def log_bernoulli(x, p, reduction=None, dim=None):
    """log Bern(x; p) element-wise with p clamped to [EPS, 1 - EPS], then reduced."""
    # BEGIN SOLUTION
    p = torch.clamp(p, EPS, 1.0 - EPS)
    log_p = x * torch.log(p) + (1.0 - x) * torch.log(1.0 - p)
    # END SOLUTION
    return _reduce(log_p, reduction, dim)


def log_categorical(x, p, num_classes=256, reduction=None, dim=None):
    """one_hot(x) * log(clamp(p)): x holds class indices (any dtype), p is x.shape + (num_classes,).

    The result has shape x.shape + (num_classes,) and p's dtype, then is reduced.
    """
    # BEGIN SOLUTION
    x_one_hot = F.one_hot(x.long(), num_classes=num_classes).to(p.dtype)
    log_p = x_one_hot * torch.log(torch.clamp(p, EPS, 1.0 - EPS))
    # END SOLUTION
    return _reduce(log_p, reduction, dim)


class Encoder(nn.Module):
    """Gaussian encoder q(z|x) = N(mu_e(x), diag exp(log_var_e(x))); the net maps B×D to B×2L."""

    def __init__(self, encoder_net):
        super().__init__()
        self.encoder = encoder_net

    @staticmethod
    def reparameterization(mu, log_var):
        """z = mu + exp(0.5 log_var) * eps, eps ~ N(0, I) like mu (shape, dtype, device)."""
        # BEGIN SOLUTION
        std = torch.exp(0.5 * log_var)
        eps = torch.randn_like(std)
        return mu + std * eps
        # END SOLUTION

    def encode(self, x):
        """(mu_e, log_var_e), each B×L: the two halves of the net's output."""
        # BEGIN SOLUTION
        h_e = self.encoder(x)
        mu_e, log_var_e = torch.chunk(h_e, 2, dim=1)
        return mu_e, log_var_e
        # END SOLUTION

    def sample(self, x=None, mu_e=None, log_var_e=None):
        """z ~ q(z|x), B×L, from x or from given (mu_e, log_var_e)."""
        # BEGIN SOLUTION
        if mu_e is None and log_var_e is None:
            if x is None:
                raise ValueError("give x, or both mu_e and log_var_e")
            mu_e, log_var_e = self.encode(x)
        elif mu_e is None or log_var_e is None:
            raise ValueError("give both mu_e and log_var_e")
        return self.reparameterization(mu_e, log_var_e)
        # END SOLUTION

    def log_prob(self, x=None, mu_e=None, log_var_e=None, z=None):
        """log q(z|x), shape B: from x (z sampled), or from given mu_e, log_var_e and z."""
        # BEGIN SOLUTION
        if x is not None:
            mu_e, log_var_e = self.encode(x)
            z = self.sample(mu_e=mu_e, log_var_e=log_var_e)
        elif mu_e is None or log_var_e is None or z is None:
            raise ValueError("give x, or all of mu_e, log_var_e and z")
        return log_normal_diag(z, mu_e, log_var_e, reduction="sum", dim=-1)
        # END SOLUTION

    def forward(self, x, type="log_prob"):
        if type == "log_prob":
            return self.log_prob(x)
        if type == "encode":
            return self.sample(x)
        raise ValueError(f"type must be 'encode' or 'log_prob', got {type!r}")


class Decoder(nn.Module):
    """p(x|z): categorical over num_vals values per pixel (net: B×L to B×(D·V)) or Bernoulli (B×L to B×D)."""

    def __init__(self, decoder_net, distribution="categorical", num_vals=None):
        super().__init__()
        if distribution not in ("categorical", "bernoulli"):
            raise ValueError(f"distribution must be 'categorical' or 'bernoulli', got {distribution!r}")
        if distribution == "categorical" and num_vals is None:
            raise ValueError("the categorical distribution needs num_vals")
        self.decoder = decoder_net
        self.distribution = distribution
        self.num_vals = num_vals

    def decode(self, z):
        """[probs]: B×D×V (softmax over values) for categorical, B×D (sigmoid) for Bernoulli."""
        # BEGIN SOLUTION
        h_d = self.decoder(z)
        if self.distribution == "categorical":
            b = h_d.shape[0]
            mu_d = torch.softmax(h_d.view(b, -1, self.num_vals), dim=2)
        else:
            mu_d = torch.sigmoid(h_d)
        return [mu_d]
        # END SOLUTION

    def sample(self, z):
        """x ~ p(x|z), B×D, floating point (the dtype of the probabilities)."""
        # BEGIN SOLUTION
        mu_d = self.decode(z)[0]
        if self.distribution == "categorical":
            b, m = mu_d.shape[0], mu_d.shape[1]
            x_new = torch.multinomial(mu_d.reshape(b * m, self.num_vals), num_samples=1).view(b, m)
            return x_new.to(mu_d.dtype)
        return torch.bernoulli(mu_d)
        # END SOLUTION

    def log_prob(self, x, z):
        """log p(x|z), shape B."""
        # BEGIN SOLUTION
        mu_d = self.decode(z)[0]
        if self.distribution == "categorical":
            return log_categorical(x, mu_d, num_classes=self.num_vals, reduction="sum", dim=-1).sum(-1)
        return log_bernoulli(x, mu_d, reduction="sum", dim=-1)
        # END SOLUTION

    def forward(self, z, x=None, type="log_prob"):
        if type == "log_prob":
            return self.log_prob(x, z)
        if type == "decoder":
            return self.sample(z)
        raise ValueError(f"type must be 'decoder' or 'log_prob', got {type!r}")


class MoGPrior(nn.Module):
    """Mixture of K diagonal Gaussians in L dimensions with learnable means, log-variances and logits w."""

    def __init__(self, L, num_components, multiplier=1.0):
        super().__init__()
        self.L = L
        self.num_components = num_components
        self.means = nn.Parameter(torch.randn(num_components, L) * multiplier)  # K×L
        self.logvars = nn.Parameter(torch.randn(num_components, L))  # K×L
        self.w = nn.Parameter(torch.zeros(num_components, 1, 1))  # K×1×1 mixture logits

    def get_params(self):
        return self.means, self.logvars

    def sample(self, batch_size):
        """z ~ sum_k softmax(w)_k N(means_k, diag exp(logvars_k)), batch_size×L."""
        # BEGIN SOLUTION
        w = torch.softmax(self.w, dim=0).flatten()
        idx = torch.multinomial(w, batch_size, replacement=True)
        eps = torch.randn(batch_size, self.means.shape[1], dtype=self.means.dtype, device=self.means.device)
        return self.means[idx] + torch.exp(0.5 * self.logvars[idx]) * eps
        # END SOLUTION

    def log_prob(self, z):
        """log sum_k softmax(w)_k N(z; means_k, diag exp(logvars_k)), shape B (z is B×L), via log-sum-exp."""
        # BEGIN SOLUTION
        log_w = torch.log_softmax(self.w, dim=0).view(-1, 1)  # K×1
        log_n = log_normal_diag(z.unsqueeze(0), self.means.unsqueeze(1), self.logvars.unsqueeze(1),
                                reduction="sum", dim=-1)  # K×B
        return torch.logsumexp(log_w + log_n, dim=0)
        # END SOLUTION


class VAE(nn.Module):
    """VAE with a Gaussian encoder, a categorical/Bernoulli decoder and a given prior module."""

    def __init__(self, encoder_net, decoder_net, prior, num_vals=256, L=16, likelihood_type="categorical"):
        super().__init__()
        self.encoder = Encoder(encoder_net=encoder_net)
        self.decoder = Decoder(decoder_net, distribution=likelihood_type, num_vals=num_vals)
        self.prior = prior
        self.num_vals = num_vals
        self.L = L
        self.likelihood_type = likelihood_type

    def forward(self, x, reduction="avg"):
        """Negative ELBO, -(RE - KL), averaged ('avg') or summed ('sum') over the batch (a scalar)."""
        # BEGIN SOLUTION
        mu_e, log_var_e = self.encoder.encode(x)
        z = self.encoder.sample(mu_e=mu_e, log_var_e=log_var_e)
        RE = self.decoder.log_prob(x, z)
        KL = self.encoder.log_prob(mu_e=mu_e, log_var_e=log_var_e, z=z) - self.prior.log_prob(z)
        # END SOLUTION
        if reduction == "sum":
            return -(RE - KL).sum()
        if reduction == "avg":
            return -(RE - KL).mean()
        raise ValueError(f"reduction must be 'sum' or 'avg', got {reduction!r}")

    def sample(self, batch_size=64):
        """x ~ p(x), batch_size×D."""
        # BEGIN SOLUTION
        z = self.prior.sample(batch_size)
        return self.decoder.sample(z)
        # END SOLUTION
