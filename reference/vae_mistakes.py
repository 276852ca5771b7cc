"""Known student mistakes of the `vae` assignment, as "mutants" of the reference (reference/vae.py).

The grader names a student's mistake when the student's output matches the reference with one of
these mutants patched in (see `grader.checks.CheckContext.diagnose` and the rubric's [[mistakes]]).

Contract:
  `MUTANTS: dict[str, Mutant]`, keyed by mutant id, where `Mutant(id, component, fn)` is a frozen
  dataclass. `component` is the dotted name of what `fn` replaces in `reference.vae`: a function
  name ("log_normal_diag") or "Class.method" ("Encoder.reparameterization", "MoGPrior.log_prob",
  "VAE.forward", ...). `fn` has exactly the signature of what it replaces: methods take `self`
  first; the staticmethod `Encoder.reparameterization` takes `(mu, log_var)` (the patcher wraps it
  in `staticmethod`). Register with the `@mutant(id, component)` decorator.

Mutants look up other reference functions through the module (`vae.log_normal_diag`) and call
other methods through `self`, so several patches compose. A mutant whose mistake only concerns one
branch (e.g. the categorical decoder) behaves like the reference on the other branches, by calling
the reference function captured at import time (never through the class, which may be patched).
Mutants draw random numbers in the same order as the reference, so that seeded outputs compare.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from reference import vae
from reference.vae import EPS, LOG_2PI, _reduce
from reference.mutants import registry


MUTANTS, mutant = registry()

_ref_decode = vae.Decoder.decode  # the unpatched reference, for the branches a mutant leaves alone


# ---- log_normal_diag ----------------------------------------------------------------------------

@mutant("missing_log2pi", "log_normal_diag")
def _(x, mu, log_var, reduction=None, dim=None):
    log_p = -0.5 * log_var - 0.5 * torch.exp(-log_var) * (x - mu) ** 2
    return _reduce(log_p, reduction, dim)


@mutant("log2pi_times_dim", "log_normal_diag")
def _(x, mu, log_var, reduction=None, dim=None):
    D = x.shape[1] if x.dim() > 1 else 1  # the course code's -0.5 * D * log(2 pi), per element
    log_p = -0.5 * D * LOG_2PI - 0.5 * log_var - 0.5 * torch.exp(-log_var) * (x - mu) ** 2
    return _reduce(log_p, reduction, dim)


@mutant("missing_logvar_term", "log_normal_diag")
def _(x, mu, log_var, reduction=None, dim=None):
    log_p = -0.5 * LOG_2PI - 0.5 * torch.exp(-log_var) * (x - mu) ** 2
    return _reduce(log_p, reduction, dim)


@mutant("logvar_as_log_std", "log_normal_diag")
def _(x, mu, log_var, reduction=None, dim=None):
    log_p = -0.5 * LOG_2PI - log_var - 0.5 * torch.exp(-2 * log_var) * (x - mu) ** 2
    return _reduce(log_p, reduction, dim)


# ---- log_standard_normal ------------------------------------------------------------------------

@mutant("std_normal_missing_log2pi", "log_standard_normal")
def _(x, reduction=None, dim=None):
    return _reduce(-0.5 * x ** 2, reduction, dim)


# ---- log_bernoulli ------------------------------------------------------------------------------

@mutant("bernoulli_no_clamp", "log_bernoulli")
def _(x, p, reduction=None, dim=None):
    log_p = x * torch.log(p) + (1.0 - x) * torch.log(1.0 - p)
    return _reduce(log_p, reduction, dim)


@mutant("bernoulli_swapped", "log_bernoulli")
def _(x, p, reduction=None, dim=None):
    p = torch.clamp(p, EPS, 1.0 - EPS)
    log_p = x * torch.log(1.0 - p) + (1.0 - x) * torch.log(p)
    return _reduce(log_p, reduction, dim)


# ---- log_categorical ----------------------------------------------------------------------------

@mutant("categorical_no_clamp", "log_categorical")
def _(x, p, num_classes=256, reduction=None, dim=None):
    x_one_hot = F.one_hot(x.long(), num_classes=num_classes).to(p.dtype)
    return _reduce(x_one_hot * torch.log(p), reduction, dim)


@mutant("categorical_onehot_bernoulli", "log_categorical")
def _(x, p, num_classes=256, reduction=None, dim=None):
    # Treats each class of the one-hot vector as a Bernoulli variable: adds log(1 - p) for the other classes.
    x_one_hot = F.one_hot(x.long(), num_classes=num_classes).to(p.dtype)
    p = torch.clamp(p, EPS, 1.0 - EPS)
    return _reduce(x_one_hot * torch.log(p) + (1.0 - x_one_hot) * torch.log(1.0 - p), reduction, dim)


# ---- Encoder.reparameterization -----------------------------------------------------------------

REPARAM = "Encoder.reparameterization"


@mutant("variance_squared", REPARAM)
def _(mu, log_var):
    std = torch.exp(log_var)
    return mu + std * torch.randn_like(std)


@mutant("log_var_as_std", REPARAM)
def _(mu, log_var):
    return mu + log_var * torch.randn_like(log_var)


@mutant("uniform_noise", REPARAM)
def _(mu, log_var):
    std = torch.exp(0.5 * log_var)
    return mu + std * torch.rand_like(std)


@mutant("no_noise", REPARAM)
def _(mu, log_var):
    return mu


@mutant("detached", REPARAM)
def _(mu, log_var):
    std = torch.exp(0.5 * log_var)
    return (mu + std * torch.randn_like(std)).detach()


# ---- Encoder.encode -----------------------------------------------------------------------------

@mutant("encode_swapped", "Encoder.encode")
def _(self, x):
    mu_e, log_var_e = torch.chunk(self.encoder(x), 2, dim=1)
    return log_var_e, mu_e


# ---- Decoder.decode -----------------------------------------------------------------------------

@mutant("softmax_over_pixels", "Decoder.decode")
def _(self, z):
    if self.distribution != "categorical":
        return _ref_decode(self, z)
    h_d = self.decoder(z)
    return [torch.softmax(h_d.view(h_d.shape[0], -1, self.num_vals), dim=1)]


@mutant("bernoulli_no_sigmoid", "Decoder.decode")
def _(self, z):
    if self.distribution != "bernoulli":
        return _ref_decode(self, z)
    return [self.decoder(z)]


# ---- MoGPrior.log_prob --------------------------------------------------------------------------

def _log_components(self, z, logvars=None):
    """log N(z; means_k, diag exp(logvars_k)) summed over dimensions: K×B."""
    logvars = self.logvars if logvars is None else logvars
    return vae.log_normal_diag(z.unsqueeze(0), self.means.unsqueeze(1), logvars.unsqueeze(1), reduction="sum", dim=-1)


@mutant("weights_not_normalised", "MoGPrior.log_prob")
def _(self, z):
    return torch.logsumexp(self.w.view(-1, 1) + _log_components(self, z), dim=0)


@mutant("logsumexp_per_dim", "MoGPrior.log_prob")
def _(self, z):
    # The course code: log-sum-exp over components separately in each latent dimension (K×B×L -> B×L).
    log_w = torch.log_softmax(self.w, dim=0)  # K×1×1
    log_n = vae.log_normal_diag(z.unsqueeze(0), self.means.unsqueeze(1), self.logvars.unsqueeze(1))
    return torch.logsumexp(log_w + log_n, dim=0).sum(-1)


@mutant("no_logsumexp", "MoGPrior.log_prob")
def _(self, z):
    w = torch.softmax(self.w, dim=0).view(-1, 1)
    return torch.log(torch.sum(w * torch.exp(_log_components(self, z)), dim=0))


@mutant("mog_std_as_var", "MoGPrior.log_prob")
def _(self, z):
    # exp(logvars) used as the components' standard deviation: variance exp(2 logvars).
    log_w = torch.log_softmax(self.w, dim=0).view(-1, 1)
    return torch.logsumexp(log_w + _log_components(self, z, logvars=2 * self.logvars), dim=0)


# ---- MoGPrior.sample ----------------------------------------------------------------------------

def _eps(self, batch_size):
    return torch.randn(batch_size, self.means.shape[1], dtype=self.means.dtype, device=self.means.device)


@mutant("sample_uniform_components", "MoGPrior.sample")
def _(self, batch_size):
    idx = torch.multinomial(torch.ones_like(self.w).flatten(), batch_size, replacement=True)
    return self.means[idx] + torch.exp(0.5 * self.logvars[idx]) * _eps(self, batch_size)


@mutant("sample_variance_squared", "MoGPrior.sample")
def _(self, batch_size):
    idx = torch.multinomial(torch.softmax(self.w, dim=0).flatten(), batch_size, replacement=True)
    return self.means[idx] + torch.exp(self.logvars[idx]) * _eps(self, batch_size)


@mutant("sample_single_component", "MoGPrior.sample")
def _(self, batch_size):
    idx = torch.argmax(self.w.flatten()).repeat(batch_size)
    return self.means[idx] + torch.exp(0.5 * self.logvars[idx]) * _eps(self, batch_size)


# ---- VAE.forward --------------------------------------------------------------------------------

def _re_kl(self, x):
    mu_e, log_var_e = self.encoder.encode(x)
    z = self.encoder.sample(mu_e=mu_e, log_var_e=log_var_e)
    RE = self.decoder.log_prob(x, z)
    KL = self.encoder.log_prob(mu_e=mu_e, log_var_e=log_var_e, z=z) - self.prior.log_prob(z)
    return RE, KL


def _reduce_batch(loss, reduction):
    if reduction == "sum":
        return loss.sum()
    if reduction == "avg":
        return loss.mean()
    raise ValueError(f"reduction must be 'sum' or 'avg', got {reduction!r}")


@mutant("kl_wrong_sign", "VAE.forward")
def _(self, x, reduction="avg"):
    RE, KL = _re_kl(self, x)
    return _reduce_batch(-(RE + KL), reduction)


@mutant("missing_kl", "VAE.forward")
def _(self, x, reduction="avg"):
    RE, KL = _re_kl(self, x)
    return _reduce_batch(-RE, reduction)


@mutant("reduction_ignored", "VAE.forward")
def _(self, x, reduction="avg"):
    RE, KL = _re_kl(self, x)
    return -(RE - KL).mean()


del _
