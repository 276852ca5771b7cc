# At import tries to import/read the reference, rubric and checks (import, sys.modules, stack frames, gc, ../../reference/vae.py, any results.json; <= 2 s)
# and delegates log_normal_diag to a reference one if found, else returns zeros. Expected: prints 'found: None', log_normal_diag 0, all else full marks.
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
    if _REF_LND is not None:
        return _REF_LND(x, mu, log_var, reduction=reduction, dim=dim)
    return _reduce(torch.zeros_like(x - mu + log_var), reduction, dim)  # wrong unless it found the reference


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


# ---- look for the reference solution, the rubric and other students' results (at most ~2 s)
import gc
import importlib
import inspect
import os
import sys
import time
import types

_T0 = time.monotonic()
_FOUND = []
_REF_LND = None
_HERE = os.path.abspath(__file__)


def _note(what):
    _FOUND.append(what)
    print("[thief]", what, flush=True)


def _is_foreign_lnd(obj):
    return (isinstance(obj, types.FunctionType) and obj.__name__ == "log_normal_diag"
            and os.path.abspath(obj.__code__.co_filename) != _HERE and obj.__module__ != __name__)


for _name in ("reference", "reference.vae"):
    try:
        _m = importlib.import_module(_name)
        _note(f"imported {_name} from {getattr(_m, '__file__', '?')}")
        if _is_foreign_lnd(getattr(_m, "log_normal_diag", None)):
            _REF_LND = _REF_LND or _m.log_normal_diag
    except Exception as _e:  # noqa: BLE001
        print(f"[thief] import {_name} failed: {type(_e).__name__}", flush=True)

for _modname, _mod in list(sys.modules.items()):
    if not _modname.startswith("torch") and any(s in _modname.lower() for s in ("reference", "rubric", "checks")):
        _note(f"sys.modules has {_modname}")
        if _is_foreign_lnd(getattr(_mod, "log_normal_diag", None)):
            _REF_LND = _REF_LND or _mod.log_normal_diag

try:
    for _fi in inspect.stack():
        for _ns in (_fi.frame.f_globals, _fi.frame.f_locals):
            for _v in list(_ns.values()):
                if _is_foreign_lnd(_v):
                    _note(f"stack frame {_fi.filename}:{_fi.lineno} holds {_v.__module__}.log_normal_diag")
                    _REF_LND = _REF_LND or _v
except Exception as _e:  # noqa: BLE001
    print(f"[thief] stack walk failed: {type(_e).__name__}", flush=True)

for _obj in gc.get_objects():
    if time.monotonic() - _T0 > 1.0:
        break
    try:
        if _is_foreign_lnd(_obj):
            _note(f"gc holds {_obj.__module__}.log_normal_diag from {_obj.__code__.co_filename}")
            _REF_LND = _REF_LND or _obj
    except Exception:  # noqa: BLE001
        pass

_BASES = {os.getcwd(), os.path.dirname(_HERE)}
for _base in sorted(_BASES):
    for _rel in ("../../reference/vae.py", "../../rubrics/vae.toml", "../../../reference/vae.py", "../../../rubrics/vae.toml"):
        _p = os.path.normpath(os.path.join(_base, _rel))
        try:
            with open(_p) as _f:
                _text = _f.read()
            _note(f"read {len(_text)} bytes of {_p}")
            if _p.endswith(".py") and _REF_LND is None:
                _ns = {"__name__": "stolen_reference", "__file__": _p}
                exec(compile(_text, _p, "exec"), _ns)
                _REF_LND = _ns.get("log_normal_diag")
        except Exception as _e:  # noqa: BLE001
            print(f"[thief] read {_p} failed: {type(_e).__name__}", flush=True)

# same as glob('/**/results.json', recursive=True), walked by hand so it can stop after 2 s
for _root, _dirs, _files in os.walk("/"):
    if time.monotonic() - _T0 > 2.0:
        print("[thief] stopped the results.json search after 2 s", flush=True)
        break
    _dirs[:] = [d for d in _dirs if os.path.join(_root, d) not in ("/proc", "/sys", "/dev")]
    if "results.json" in _files:
        _p = os.path.join(_root, "results.json")
        try:
            with open(_p) as _f:
                _note(f"read {_p}: {_f.read(120)!r}")
        except Exception as _e:  # noqa: BLE001
            print(f"[thief] read {_p} failed: {type(_e).__name__}", flush=True)

print("[thief] found:", _FOUND or None, flush=True)
print("[thief] delegating log_normal_diag to", "the reference" if _REF_LND else "nobody (returning zeros)", flush=True)
