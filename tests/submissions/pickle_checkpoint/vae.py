# Correct vae.py plus model.pt, a malicious pickle whose __reduce__ runs os.system('touch /tmp/gradekit_pickle_pwned') when unpickled
# (see make_checkpoint.py). Expected: unit components full marks; the checkpoint refused ('could not be loaded safely'), the file never created.
# Homework 2 -- VAE with a mixture-of-Gaussians prior
# (hostile-corpus base: Alice's correct solution; the public names are thin wrappers around private helpers)
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1.0e-5
HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def _reduce(values, reduction, dim):
    if reduction is None:
        return values
    if reduction == "sum":
        return values.sum() if dim is None else values.sum(dim)
    if reduction == "avg":
        return values.mean() if dim is None else values.mean(dim)
    raise ValueError(f"unknown reduction {reduction}")


# ---- private helpers: what the classes below use, so an attack on a public name costs only that name
def _log_normal_diag(x, mu, log_var, reduction=None, dim=None):
    values = -HALF_LOG_TWO_PI - 0.5 * log_var - 0.5 * (x - mu) ** 2 / torch.exp(log_var)
    return _reduce(values, reduction, dim)


def _log_standard_normal(x, reduction=None, dim=None):
    return _reduce(-HALF_LOG_TWO_PI - 0.5 * x.pow(2), reduction, dim)


def _log_bernoulli(x, p, reduction=None, dim=None):
    p = p.clamp(EPS, 1.0 - EPS)
    return _reduce(x * p.log() + (1.0 - x) * torch.log1p(-p), reduction, dim)


def _log_categorical(x, p, num_classes=256, reduction=None, dim=None):
    mask = F.one_hot(x.long(), num_classes=num_classes).type_as(p)
    return _reduce(mask * p.clamp(EPS, 1.0 - EPS).log(), reduction, dim)


# ---- the assignment's functions
def log_normal_diag(x, mu, log_var, reduction=None, dim=None):
    return _log_normal_diag(x, mu, log_var, reduction, dim)


def log_standard_normal(x, reduction=None, dim=None):
    return _log_standard_normal(x, reduction, dim)


def log_bernoulli(x, p, reduction=None, dim=None):
    return _log_bernoulli(x, p, reduction, dim)


def log_categorical(x, p, num_classes=256, reduction=None, dim=None):
    return _log_categorical(x, p, num_classes, reduction, dim)


class Encoder(nn.Module):
    def __init__(self, encoder_net):
        super().__init__()
        self.encoder = encoder_net

    @staticmethod
    def reparameterization(mu, log_var):
        std = torch.exp(0.5 * log_var)
        eps = torch.empty_like(std).normal_()
        return mu + eps * std

    def _encode(self, x):
        h = self.encoder(x)
        half = h.shape[1] // 2
        return h[:, :half], h[:, half:]

    def encode(self, x):
        return self._encode(x)

    def sample(self, x=None, mu_e=None, log_var_e=None):
        if mu_e is None or log_var_e is None:
            if x is None:
                raise ValueError("give x, or mu_e and log_var_e")
            mu_e, log_var_e = self._encode(x)
        return self.reparameterization(mu_e, log_var_e)

    def log_prob(self, x=None, mu_e=None, log_var_e=None, z=None):
        if x is not None:
            mu_e, log_var_e = self._encode(x)
            z = self.reparameterization(mu_e, log_var_e)
        elif mu_e is None or log_var_e is None or z is None:
            raise ValueError("give x, or mu_e, log_var_e and z")
        return _log_normal_diag(z, mu_e, log_var_e)  # element-wise, B x L

    def forward(self, x, type="log_prob"):
        return self.log_prob(x) if type == "log_prob" else self.sample(x)


class Decoder(nn.Module):
    def __init__(self, decoder_net, distribution="categorical", num_vals=None):
        super().__init__()
        self.decoder = decoder_net
        self.distribution = distribution
        self.num_vals = num_vals

    def decode(self, z):
        h = self.decoder(z)
        if self.distribution == "categorical":
            logits = h.reshape(h.shape[0], -1, self.num_vals)
            return [F.softmax(logits, dim=-1)]
        if self.distribution == "bernoulli":
            return [torch.sigmoid(h)]
        raise ValueError("distribution must be 'categorical' or 'bernoulli'")

    def sample(self, z):
        probs = self.decode(z)[0]
        if self.distribution == "categorical":
            return torch.distributions.Categorical(probs=probs).sample().float()
        return torch.bernoulli(probs)

    def log_prob(self, x, z):
        probs = self.decode(z)[0]
        if self.distribution == "categorical":
            return _log_categorical(x, probs, num_classes=self.num_vals, reduction="sum", dim=-1).sum(-1)
        return _log_bernoulli(x, probs, reduction="sum", dim=-1)


class MoGPrior(nn.Module):
    def __init__(self, L, num_components):
        super().__init__()
        self.L = L
        self.num_components = num_components
        self.means = nn.Parameter(torch.randn(num_components, L))
        self.logvars = nn.Parameter(torch.randn(num_components, L))
        self.w = nn.Parameter(torch.zeros(num_components, 1, 1))

    def sample(self, batch_size):
        k = torch.distributions.Categorical(logits=self.w.view(-1)).sample((batch_size,))
        eps = torch.randn(batch_size, self.L, device=self.means.device)
        return self.means[k] + torch.exp(0.5 * self.logvars[k]) * eps

    def log_prob(self, z):
        # components on the last axis: B x K
        log_w = F.log_softmax(self.w.view(-1), dim=0)
        per_comp = _log_normal_diag(z.unsqueeze(1), self.means.unsqueeze(0), self.logvars.unsqueeze(0)).sum(-1)
        return torch.logsumexp(per_comp + log_w, dim=1)


class VAE(nn.Module):
    def __init__(self, encoder_net, decoder_net, prior, num_vals=256, L=16, likelihood_type="categorical"):
        super().__init__()
        self.encoder = Encoder(encoder_net)
        self.decoder = Decoder(decoder_net, distribution=likelihood_type, num_vals=num_vals)
        self.prior = prior
        self.num_vals = num_vals
        self.L = L
        self.likelihood_type = likelihood_type

    def forward(self, x, reduction="avg"):
        mu_e, log_var_e = self.encoder._encode(x)
        z = self.encoder.reparameterization(mu_e, log_var_e)
        rec = self.decoder.log_prob(x, z)
        kl = _log_normal_diag(z, mu_e, log_var_e).sum(-1) - self.prior.log_prob(z)
        loss = -(rec - kl)
        return loss.sum() if reduction == "sum" else loss.mean()

    def sample(self, batch_size=64):
        return self.decoder.sample(self.prior.sample(batch_size))
