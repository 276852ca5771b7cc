"""Known student mistakes of `amortized-vs-lo`, as mutants of reference/amortized_vs_lo.py.

Same contract as reference/vae_mistakes.py: `MUTANTS: dict[str, Mutant]`; `component` is the dotted
name of what `fn` replaces in `reference.amortized_vs_lo` ("log_px_importance", "VAE.elbo", ...),
and `fn` has exactly its signature. Mutants call other reference functions through the module
(`ref.reparameterize`), so several patches compose, and draw random numbers in the reference's order.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from reference import amortized_vs_lo as ref
from reference.amortized_vs_lo import EPS, LOG_2PI
from reference.mutants import registry


MUTANTS, mutant = registry()


# ---- classifier ---------------------------------------------------------------------------------

@mutant("softmax_output", "CNNClassifier.forward")
def _(self, x):
    h = F.max_pool2d(F.relu(self.conv1(x)), 2)
    h = F.max_pool2d(F.relu(self.conv2(h)), 2)
    h = F.relu(self.fc1(h.flatten(1)))
    return torch.softmax(self.fc2(h), dim=1)


@mutant("relu_on_logits", "CNNClassifier.forward")
def _(self, x):
    h = F.max_pool2d(F.relu(self.conv1(x)), 2)
    h = F.max_pool2d(F.relu(self.conv2(h)), 2)
    h = F.relu(self.fc1(h.flatten(1)))
    return F.relu(self.fc2(h))


# ---- densities ------------------------------------------------------------------------------------

@mutant("missing_log2pi", "log_normal_diag")
def _(z, mu, log_var):
    return (-0.5 * log_var - 0.5 * torch.exp(-log_var) * (z - mu) ** 2).sum(-1)


@mutant("logvar_as_log_std", "log_normal_diag")
def _(z, mu, log_var):
    return (-0.5 * LOG_2PI - log_var - 0.5 * torch.exp(-2 * log_var) * (z - mu) ** 2).sum(-1)


@mutant("variance_squared", "reparameterize")
def _(mu, log_var):
    return mu + torch.exp(log_var) * torch.randn_like(mu)


@mutant("no_noise", "reparameterize")
def _(mu, log_var):
    return mu + 0.0 * log_var


@mutant("kl_missing_log_var", "kl_standard_normal")
def _(mu, log_var):
    return 0.5 * (mu ** 2 + torch.exp(log_var) - 1.0).sum(-1)


@mutant("kl_std_for_var", "kl_standard_normal")
def _(mu, log_var):
    return 0.5 * (mu ** 2 + torch.exp(0.5 * log_var) - 1.0 - log_var).sum(-1)


# ---- encoder / decoder ----------------------------------------------------------------------------

@mutant("encode_swapped", "GaussianEncoder.forward")
def _(self, x):
    log_var, mu = torch.chunk(self.net(x), 2, dim=-1)
    return mu, log_var


@mutant("bernoulli_no_sigmoid", "BernoulliDecoder.forward")
def _(self, z):
    return self.net(z)


@mutant("bernoulli_swapped", "BernoulliDecoder.log_prob")
def _(self, x, z):
    p = torch.clamp(self(z), EPS, 1.0 - EPS)
    return (x * torch.log(1.0 - p) + (1.0 - x) * torch.log(p)).sum(-1)


# ---- ELBO -----------------------------------------------------------------------------------------

@mutant("kl_wrong_sign", "elbo")
def _(decoder, x, mu, log_var):
    z = ref.reparameterize(mu, log_var)
    return decoder.log_prob(x, z) + ref.kl_standard_normal(mu, log_var)


@mutant("missing_kl", "elbo")
def _(decoder, x, mu, log_var):
    z = ref.reparameterize(mu, log_var)
    return decoder.log_prob(x, z)


# ---- latent optimization --------------------------------------------------------------------------

@mutant("lo_shared_posterior", "LatentOptimizationVAE.posterior")
def _(self, x, idx):
    # one q for every example: row 0 of the tables, whatever idx says
    return self.mu[:1].expand(len(idx), -1), self.log_var[:1].expand(len(idx), -1)


@mutant("lo_index_by_position", "LatentOptimizationVAE.posterior")
def _(self, x, idx):
    # rows 0..B-1 (the position in the batch) instead of the examples' ids
    return self.mu[: len(idx)], self.log_var[: len(idx)]


# ---- importance sampling --------------------------------------------------------------------------

def _log_weights(model, x, M, idx):
    mu, log_var = model.posterior(x, idx)
    z = ref.reparameterize(mu.expand(M, *mu.shape), log_var.expand(M, *log_var.shape))
    return (model.decoder.log_prob(x, z) + ref.log_normal_diag(z, torch.zeros_like(z), torch.zeros_like(z))
            - ref.log_normal_diag(z, mu, log_var))


@mutant("log_mean_exp_underflow", "log_px_importance")
def _(model, x, M, idx=None):
    log_w = _log_weights(model, x, M, idx)
    return torch.log(torch.exp(log_w).mean(0))


@mutant("mean_of_log_weights", "log_px_importance")
def _(model, x, M, idx=None):
    return _log_weights(model, x, M, idx).mean(0)


@mutant("missing_log_M", "log_px_importance")
def _(model, x, M, idx=None):
    return torch.logsumexp(_log_weights(model, x, M, idx), dim=0)


@mutant("max_of_log_weights", "log_px_importance")
def _(model, x, M, idx=None):
    return _log_weights(model, x, M, idx).max(0).values

