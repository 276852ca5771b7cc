"""Eight independently written solutions of the `vae` assignment, for the similarity tests.

Each student fills in the release starter's TODOs in their own way (as students do: same template,
same signatures, the usual PyTorch idioms, their own structure). Written for these tests; no
public code. `build(student)` returns the module a student would hand in.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# student -> {TODO target: body}; the body replaces `raise NotImplementedError("TODO: implement <target>")`
# at that line's indentation. "_top" is module-level code the student added after the imports.
SOLUTIONS: dict[str, dict[str, str]] = {
    "ana": {
        "log_normal_diag": "log_p = -0.5 * math.log(2 * math.pi) - 0.5 * log_var - 0.5 * (x - mu) ** 2 / torch.exp(log_var)",
        "log_standard_normal": "log_p = -0.5 * math.log(2 * math.pi) - 0.5 * x ** 2",
        "log_bernoulli": "p = p.clamp(EPS, 1 - EPS)\nlog_p = x * p.log() + (1 - x) * (1 - p).log()",
        "log_categorical": "oh = F.one_hot(x.long(), num_classes).to(p.dtype)\nlog_p = oh * p.clamp(EPS, 1 - EPS).log()",
        "Encoder.reparameterization": "return mu + torch.randn_like(mu) * (0.5 * log_var).exp()",
        "Encoder.encode": "out = self.encoder(x)\nreturn out[:, :out.shape[1] // 2], out[:, out.shape[1] // 2:]",
        "Encoder.sample": "if mu_e is None:\n    mu_e, log_var_e = self.encode(x)\nreturn self.reparameterization(mu_e, log_var_e)",
        "Encoder.log_prob": "if x is not None:\n    mu_e, log_var_e = self.encode(x)\n    z = self.reparameterization(mu_e, log_var_e)\nreturn log_normal_diag(z, mu_e, log_var_e).sum(-1)",
        "Decoder.decode": "h = self.decoder(z)\nif self.distribution == 'bernoulli':\n    return [torch.sigmoid(h)]\nreturn [h.view(h.shape[0], -1, self.num_vals).softmax(-1)]",
        "Decoder.sample": "probs = self.decode(z)[0]\nif self.distribution == 'bernoulli':\n    return torch.bernoulli(probs)\nflat = probs.reshape(-1, self.num_vals)\nreturn torch.multinomial(flat, 1).view(probs.shape[:2]).to(probs.dtype)",
        "Decoder.log_prob": "probs = self.decode(z)[0]\nif self.distribution == 'bernoulli':\n    return log_bernoulli(x, probs).sum(-1)\nreturn log_categorical(x, probs, self.num_vals).sum((-2, -1))",
        "MoGPrior.sample": "pi = torch.softmax(self.w.flatten(), 0)\nk = torch.multinomial(pi, batch_size, replacement=True)\nreturn self.means[k] + torch.randn(batch_size, self.L) * torch.exp(0.5 * self.logvars[k])",
        "MoGPrior.log_prob": "lw = torch.log_softmax(self.w.flatten(), 0)\nlp = log_normal_diag(z[None], self.means[:, None], self.logvars[:, None]).sum(-1)\nreturn torch.logsumexp(lw[:, None] + lp, 0)",
        "VAE.forward": "mu, lv = self.encoder.encode(x)\nz = self.encoder.reparameterization(mu, lv)\nRE = self.decoder.log_prob(x, z)\nKL = self.encoder.log_prob(mu_e=mu, log_var_e=lv, z=z) - self.prior.log_prob(z)",
        "VAE.sample": "return self.decoder.sample(self.prior.sample(batch_size))",
    },
    "ben": {
        "_top": "from torch.distributions import Normal, Bernoulli, Categorical",
        "log_normal_diag": "log_p = Normal(mu, torch.exp(0.5 * log_var)).log_prob(x)",
        "log_standard_normal": "log_p = Normal(torch.zeros_like(x), torch.ones_like(x)).log_prob(x)",
        "log_bernoulli": "log_p = Bernoulli(probs=torch.clamp(p, EPS, 1. - EPS)).log_prob(x)",
        "log_categorical": "mask = torch.zeros_like(p).scatter_(-1, x.long().unsqueeze(-1), 1.0)\nlog_p = mask * torch.log(torch.clamp(p, min=EPS, max=1. - EPS))",
        "Encoder.reparameterization": "std = torch.exp(log_var / 2)\nreturn Normal(mu, std).rsample()",
        "Encoder.encode": "mu_e, log_var_e = self.encoder(x).chunk(2, dim=-1)\nreturn mu_e, log_var_e",
        "Encoder.sample": "if x is not None:\n    mu_e, log_var_e = self.encode(x)\nstd = torch.exp(log_var_e / 2)\nreturn Normal(mu_e, std).rsample()",
        "Encoder.log_prob": "if x is not None:\n    mu_e, log_var_e = self.encode(x)\n    z = self.sample(mu_e=mu_e, log_var_e=log_var_e)\nreturn Normal(mu_e, torch.exp(log_var_e / 2)).log_prob(z).sum(dim=-1)",
        "Decoder.decode": "logits = self.decoder(z)\nif self.distribution == 'categorical':\n    logits = logits.reshape(z.size(0), -1, self.num_vals)\n    return [torch.softmax(logits, dim=-1)]\nreturn [torch.sigmoid(logits)]",
        "Decoder.sample": "probs = self.decode(z)[0]\nif self.distribution == 'categorical':\n    return Categorical(probs=probs).sample().to(probs.dtype)\nreturn Bernoulli(probs=probs).sample()",
        "Decoder.log_prob": "probs = self.decode(z)[0]\nif self.distribution == 'categorical':\n    return Categorical(probs=probs.clamp(EPS, 1 - EPS)).log_prob(x.long()).sum(dim=-1)\nreturn Bernoulli(probs=probs.clamp(EPS, 1 - EPS)).log_prob(x).sum(dim=-1)",
        "MoGPrior.sample": "mix = Categorical(logits=self.w.view(-1))\nidx = mix.sample((batch_size,))\nreturn Normal(self.means[idx], torch.exp(self.logvars[idx] / 2)).sample()",
        "MoGPrior.log_prob": "comp = Normal(self.means.unsqueeze(0), torch.exp(self.logvars.unsqueeze(0) / 2))\nper_k = comp.log_prob(z.unsqueeze(1)).sum(dim=-1)\nlogw = torch.log_softmax(self.w.view(1, -1), dim=-1)\nreturn torch.logsumexp(per_k + logw, dim=-1)",
        "VAE.forward": "mu_e, log_var_e = self.encoder.encode(x)\nz = self.encoder.sample(mu_e=mu_e, log_var_e=log_var_e)\nRE = self.decoder.log_prob(x, z)\nlog_q = self.encoder.log_prob(mu_e=mu_e, log_var_e=log_var_e, z=z)\nKL = log_q - self.prior.log_prob(z)",
        "VAE.sample": "z = self.prior.sample(batch_size)\nx = self.decoder.sample(z)\nreturn x",
    },
    "chloe": {
        "_top": "HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)\n\n\ndef _sum_last(t):\n    # sum over the last axis (the data/latent dimensions)\n    return torch.sum(t, dim=-1)",
        "log_normal_diag": "# Gaussian log-density, one value per element\nprecision = torch.exp(-log_var)\nsquared = (x - mu) ** 2\nlog_p = -HALF_LOG_2PI - 0.5 * log_var - 0.5 * precision * squared",
        "log_standard_normal": "log_p = -HALF_LOG_2PI - 0.5 * torch.pow(x, 2)",
        "log_bernoulli": "# clamp so that log never sees 0\nprob = torch.clamp(p, EPS, 1.0 - EPS)\nlog_p = torch.xlogy(x, prob) + torch.xlogy(1.0 - x, 1.0 - prob)",
        "log_categorical": "target = torch.nn.functional.one_hot(x.to(torch.int64), num_classes=num_classes)\ntarget = target.type_as(p)\nlog_p = target * torch.log(p.clamp(EPS, 1.0 - EPS))",
        "Encoder.reparameterization": "sigma = torch.exp(0.5 * log_var)\nnoise = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device)\nz = mu + sigma * noise\nreturn z",
        "Encoder.encode": "hidden = self.encoder(x)\nL = hidden.shape[-1] // 2\nmean = hidden[..., :L]\nlogvar = hidden[..., L:]\nreturn mean, logvar",
        "Encoder.sample": "if mu_e is None or log_var_e is None:\n    mu_e, log_var_e = self.encode(x)\nz = self.reparameterization(mu_e, log_var_e)\nreturn z",
        "Encoder.log_prob": "if x is not None:\n    mu_e, log_var_e = self.encode(x)\n    z = self.reparameterization(mu_e, log_var_e)\nlogq = log_normal_diag(z, mu_e, log_var_e)\nreturn _sum_last(logq)",
        "Decoder.decode": "hidden = self.decoder(z)\nif self.distribution == \"categorical\":\n    batch = hidden.shape[0]\n    hidden = hidden.view(batch, -1, self.num_vals)\n    probs = torch.softmax(hidden, dim=2)\nelse:\n    probs = torch.sigmoid(hidden)\nreturn [probs]",
        "Decoder.sample": "probs = self.decode(z)[0]\nif self.distribution == \"bernoulli\":\n    return torch.bernoulli(probs)\nbatch, dims = probs.shape[0], probs.shape[1]\nflat = probs.view(batch * dims, self.num_vals)\ndraws = torch.multinomial(flat, num_samples=1)\nreturn draws.view(batch, dims).float()",
        "Decoder.log_prob": "probs = self.decode(z)[0]\nif self.distribution == \"bernoulli\":\n    logp = log_bernoulli(x, probs)\n    return _sum_last(logp)\nlogp = log_categorical(x, probs, num_classes=self.num_vals)\nreturn _sum_last(_sum_last(logp))",
        "MoGPrior.sample": "weights = torch.softmax(self.w.view(-1), dim=0)\nchosen = torch.multinomial(weights, num_samples=batch_size, replacement=True)\nmeans = self.means[chosen]\nstds = torch.exp(0.5 * self.logvars[chosen])\nreturn means + stds * torch.randn_like(means)",
        "MoGPrior.log_prob": "z_exp = z.unsqueeze(1)\nmeans = self.means.unsqueeze(0)\nlogvars = self.logvars.unsqueeze(0)\nlog_comp = _sum_last(log_normal_diag(z_exp, means, logvars))\nlog_mix = torch.log_softmax(self.w.view(-1), dim=0)\nreturn torch.logsumexp(log_comp + log_mix.unsqueeze(0), dim=1)",
        "VAE.forward": "mean, logvar = self.encoder.encode(x)\nz = self.encoder.reparameterization(mean, logvar)\nRE = self.decoder.log_prob(x, z)\nlog_q = self.encoder.log_prob(mu_e=mean, log_var_e=logvar, z=z)\nlog_prior = self.prior.log_prob(z)\nKL = log_q - log_prior",
        "VAE.sample": "z = self.prior.sample(batch_size)\nreturn self.decoder.sample(z)",
    },
    "dev": {
        "log_normal_diag": "var = log_var.exp()\nlog_p = -0.5 * (LOG_2PI + log_var + (x - mu).pow(2) / var)",
        "log_standard_normal": "log_p = -0.5 * (LOG_2PI + x.pow(2))",
        "log_bernoulli": "p = p.clamp(min=EPS, max=1 - EPS)\nlog_p = -F.binary_cross_entropy(p, x, reduction='none')",
        "log_categorical": "idx = x.long().unsqueeze(-1)\nlog_p = torch.zeros_like(p).scatter(-1, idx, torch.log(torch.gather(p.clamp(EPS, 1 - EPS), -1, idx)))",
        "Encoder.reparameterization": "eps = torch.randn_like(log_var)\nreturn eps.mul(log_var.mul(0.5).exp()).add(mu)",
        "Encoder.encode": "return torch.split(self.encoder(x), self.encoder(x).size(-1) // 2, dim=-1)",
        "Encoder.sample": "if x is None and (mu_e is None or log_var_e is None):\n    raise ValueError('need x or mu/logvar')\nif x is not None:\n    mu_e, log_var_e = self.encode(x)\nreturn Encoder.reparameterization(mu_e, log_var_e)",
        "Encoder.log_prob": "if x is not None:\n    mu_e, log_var_e = self.encode(x)\n    z = Encoder.reparameterization(mu_e, log_var_e)\nreturn log_normal_diag(z, mu_e, log_var_e, reduction='sum', dim=1)",
        "Decoder.decode": "out = self.decoder(z)\nif self.distribution == 'categorical':\n    out = F.softmax(out.reshape(out.size(0), out.size(1) // self.num_vals, self.num_vals), dim=-1)\nelse:\n    out = out.sigmoid()\nreturn [out]",
        "Decoder.sample": "probs, = self.decode(z)\nif self.distribution == 'categorical':\n    u = torch.rand(probs.shape[:-1] + (1,), dtype=probs.dtype)\n    return (probs.cumsum(-1) < u).sum(-1).clamp(max=self.num_vals - 1).to(probs.dtype)\nreturn (torch.rand_like(probs) < probs).to(probs.dtype)",
        "Decoder.log_prob": "probs, = self.decode(z)\nif self.distribution == 'categorical':\n    return log_categorical(x, probs, num_classes=self.num_vals, reduction='sum', dim=(1, 2))\nreturn log_bernoulli(x, probs, reduction='sum', dim=1)",
        "MoGPrior.sample": "K = self.num_components\nprobs = F.softmax(self.w.squeeze(), dim=0)\nk = torch.distributions.Categorical(probs).sample([batch_size])\nmu = self.means.index_select(0, k)\nlv = self.logvars.index_select(0, k)\nreturn Encoder.reparameterization(mu, lv)",
        "MoGPrior.log_prob": "diff = z[:, None, :] - self.means[None, :, :]\nlp = -0.5 * (LOG_2PI + self.logvars[None] + diff.pow(2) / self.logvars[None].exp()).sum(2)\nreturn torch.logsumexp(lp + F.log_softmax(self.w.squeeze(), dim=0)[None, :], dim=1)",
        "VAE.forward": "mu_e, log_var_e = self.encoder.encode(x)\nz = Encoder.reparameterization(mu_e, log_var_e)\nRE = self.decoder.log_prob(x, z)\nKL = log_normal_diag(z, mu_e, log_var_e, reduction='sum', dim=1) - self.prior.log_prob(z)",
        "VAE.sample": "with torch.no_grad():\n    return self.decoder.sample(self.prior.sample(batch_size))",
    },
    "eli": {
        "log_normal_diag": "log_p = []\nlog_p = -(x - mu) ** 2 / (2 * torch.exp(log_var)) - log_var / 2 - math.log(math.sqrt(2 * math.pi))",
        "log_standard_normal": "log_p = -x * x / 2 - math.log(math.sqrt(2 * math.pi))",
        "log_bernoulli": "q = torch.clip(p, EPS, 1 - EPS)\nlog_p = torch.where(x > 0.5, torch.log(q), torch.log1p(-q))",
        "log_categorical": "classes = torch.arange(num_classes, device=p.device)\nmatch = (x.long().unsqueeze(-1) == classes).to(p.dtype)\nlog_p = match * torch.log(torch.clip(p, EPS, 1 - EPS))",
        "Encoder.reparameterization": "e = torch.normal(torch.zeros_like(mu), torch.ones_like(mu))\nreturn mu + e * torch.sqrt(torch.exp(log_var))",
        "Encoder.encode": "h = self.encoder(x)\nhalf = h.shape[1] // 2\nreturn h[:, :half], h[:, half:]",
        "Encoder.sample": "if x is not None:\n    mu_e, log_var_e = self.encode(x)\nelif mu_e is None or log_var_e is None:\n    raise ValueError('x or (mu_e, log_var_e)')\nreturn self.reparameterization(mu_e, log_var_e)",
        "Encoder.log_prob": "if x is not None:\n    mu_e, log_var_e = self.encode(x)\n    z = self.sample(mu_e=mu_e, log_var_e=log_var_e)\ntotal = 0\nfor d in range(z.shape[1]):\n    total = total + log_normal_diag(z[:, d], mu_e[:, d], log_var_e[:, d])\nreturn total",
        "Decoder.decode": "y = self.decoder(z)\nif self.distribution == 'bernoulli':\n    return [1 / (1 + torch.exp(-y))]\ny = y.view(y.shape[0], -1, self.num_vals)\ny = torch.exp(y - y.max(dim=-1, keepdim=True).values)\nreturn [y / y.sum(dim=-1, keepdim=True)]",
        "Decoder.sample": "p = self.decode(z)[0]\nif self.distribution == 'bernoulli':\n    return torch.bernoulli(p)\nsamples = []\nfor row in p:\n    samples.append(torch.multinomial(row, 1).squeeze(-1))\nreturn torch.stack(samples).to(p.dtype)",
        "Decoder.log_prob": "p = self.decode(z)[0]\nif self.distribution == 'bernoulli':\n    lp = log_bernoulli(x, p)\n    return lp.sum(1)\nlp = log_categorical(x, p, num_classes=self.num_vals)\nreturn lp.sum(2).sum(1)",
        "MoGPrior.sample": "w = torch.softmax(self.w.reshape(-1), dim=0)\nout = []\nfor _ in range(batch_size):\n    k = torch.multinomial(w, 1).item()\n    out.append(self.means[k] + torch.exp(self.logvars[k] / 2) * torch.randn(self.L))\nreturn torch.stack(out)",
        "MoGPrior.log_prob": "w = torch.softmax(self.w.reshape(-1), dim=0)\nterms = []\nfor k in range(self.num_components):\n    lk = log_normal_diag(z, self.means[k], self.logvars[k]).sum(1)\n    terms.append(lk + torch.log(w[k]))\nreturn torch.logsumexp(torch.stack(terms, dim=0), dim=0)",
        "VAE.forward": "m, v = self.encoder.encode(x)\nz = self.encoder.sample(mu_e=m, log_var_e=v)\nRE = self.decoder.log_prob(x, z)\nKL = self.encoder.log_prob(mu_e=m, log_var_e=v, z=z) - self.prior.log_prob(z)",
        "VAE.sample": "return self.decoder.sample(self.prior.sample(batch_size=batch_size))",
    },
    "fay": {
        "log_normal_diag": "log_p = -0.5 * (torch.log(2 * torch.pi * torch.exp(log_var)) + (x - mu) ** 2 * torch.exp(-log_var))",
        "log_standard_normal": "log_p = -0.5 * (math.log(2 * torch.pi) + x * x)",
        "log_bernoulli": "pc = torch.clamp(p, EPS, 1.0 - EPS)\nlog_p = torch.log(pc) * x + torch.log(1.0 - pc) * (1.0 - x)",
        "log_categorical": "log_p = torch.log(torch.clamp(p, EPS, 1.0 - EPS)) * F.one_hot(x.long(), num_classes=num_classes).type(p.dtype)",
        "Encoder.reparameterization": "return torch.addcmul(mu, torch.exp(0.5 * log_var), torch.randn_like(mu))",
        "Encoder.encode": "mu_e, log_var_e = torch.tensor_split(self.encoder(x), 2, dim=1)\nreturn mu_e, log_var_e",
        "Encoder.sample": "if mu_e is None:\n    mu_e, log_var_e = self.encode(x)\nreturn torch.addcmul(mu_e, torch.exp(0.5 * log_var_e), torch.randn_like(mu_e))",
        "Encoder.log_prob": "if z is None:\n    mu_e, log_var_e = self.encode(x)\n    z = self.sample(mu_e=mu_e, log_var_e=log_var_e)\nreturn torch.sum(log_normal_diag(z, mu_e, log_var_e), 1)",
        "Decoder.decode": "logits = self.decoder(z)\nif self.distribution != 'categorical':\n    return [torch.sigmoid(logits)]\nreturn [F.softmax(torch.reshape(logits, (len(z), -1, self.num_vals)), dim=2)]",
        "Decoder.sample": "(p,) = self.decode(z)\nif self.distribution != 'categorical':\n    return torch.bernoulli(p)\nreturn torch.distributions.Categorical(probs=p).sample().type(p.dtype)",
        "Decoder.log_prob": "(p,) = self.decode(z)\nif self.distribution != 'categorical':\n    return torch.sum(log_bernoulli(x, p), 1)\nreturn torch.sum(log_categorical(x, p, self.num_vals), (1, 2))",
        "MoGPrior.sample": "comp = torch.distributions.Categorical(logits=self.w.flatten()).sample((batch_size,))\nreturn torch.normal(self.means[comp], torch.exp(0.5 * self.logvars[comp]))",
        "MoGPrior.log_prob": "lw = F.log_softmax(self.w.flatten(), dim=0)\nlogn = torch.stack([torch.sum(log_normal_diag(z, m, lv), 1) for m, lv in zip(self.means, self.logvars)], 1)\nreturn torch.logsumexp(logn + lw, 1)",
        "VAE.forward": "mu_e, log_var_e = self.encoder.encode(x)\nz = self.encoder.sample(mu_e=mu_e, log_var_e=log_var_e)\nKL = self.encoder.log_prob(mu_e=mu_e, log_var_e=log_var_e, z=z) - self.prior.log_prob(z)\nRE = self.decoder.log_prob(x, z)",
        "VAE.sample": "return self.decoder.sample(self.prior.sample(batch_size))",
    },
    "gus": {
        "_top": "class _Const:\n    LOG2PI = math.log(2 * math.pi)",
        "log_normal_diag": "inv = torch.exp(-log_var)\nlog_p = -0.5 * _Const.LOG2PI - 0.5 * log_var - 0.5 * inv * (x - mu) * (x - mu)",
        "log_standard_normal": "log_p = -0.5 * _Const.LOG2PI - 0.5 * x * x",
        "log_bernoulli": "pp = torch.clamp(p, EPS, 1 - EPS)\nlog_p = x * torch.log(pp / (1 - pp)) + torch.log(1 - pp)",
        "log_categorical": "onehot = torch.eye(num_classes, dtype=p.dtype, device=p.device)[x.long()]\nlog_p = onehot * torch.log(torch.clamp(p, EPS, 1 - EPS))",
        "Encoder.reparameterization": "std = torch.exp(0.5 * log_var)\nreturn mu + std * torch.randn_like(std)",
        "Encoder.encode": "h = self.encoder(x)\nmu_e = h[:, 0::2] if False else h[:, : h.shape[1] // 2]\nlog_var_e = h[:, h.shape[1] // 2 :]\nreturn mu_e, log_var_e",
        "Encoder.sample": "if (mu_e is None) != (log_var_e is None):\n    raise ValueError('both or none')\nif mu_e is None:\n    mu_e, log_var_e = self.encode(x)\nreturn self.reparameterization(mu_e, log_var_e)",
        "Encoder.log_prob": "if x is not None:\n    mu_e, log_var_e = self.encode(x)\n    z = self.reparameterization(mu_e, log_var_e)\nreturn log_normal_diag(z, mu_e, log_var_e, reduction='sum', dim=-1)",
        "Decoder.decode": "h = self.decoder(z)\nif self.distribution == 'bernoulli':\n    return [torch.sigmoid(h)]\nh = h.unflatten(1, (-1, self.num_vals))\nreturn [torch.softmax(h, dim=-1)]",
        "Decoder.sample": "mu_d = self.decode(z)[0]\nif self.distribution == 'bernoulli':\n    return torch.bernoulli(mu_d)\ng = -torch.log(-torch.log(torch.rand_like(mu_d).clamp(EPS, 1 - EPS)))\nreturn torch.argmax(torch.log(mu_d + EPS) + g, dim=-1).to(mu_d.dtype)",
        "Decoder.log_prob": "mu_d = self.decode(z)[0]\nif self.distribution == 'bernoulli':\n    return log_bernoulli(x, mu_d, reduction='sum', dim=-1)\nreturn log_categorical(x, mu_d, num_classes=self.num_vals, reduction='sum', dim=(-2, -1))",
        "MoGPrior.sample": "cat = torch.distributions.Categorical(logits=self.w.view(-1))\nks = cat.sample(torch.Size([batch_size]))\neps = torch.randn(batch_size, self.L, dtype=self.means.dtype)\nreturn self.means[ks] + eps * torch.exp(0.5 * self.logvars[ks])",
        "MoGPrior.log_prob": "log_pi = torch.log_softmax(self.w.view(-1), dim=0)\nlog_comp = log_normal_diag(z.unsqueeze(1), self.means, self.logvars, reduction='sum', dim=-1)\nreturn torch.logsumexp(log_comp + log_pi, dim=1)",
        "VAE.forward": "mu_e, log_var_e = self.encoder.encode(x)\nz = self.encoder.reparameterization(mu_e, log_var_e)\nRE = self.decoder.log_prob(x, z)\nKL = self.encoder.log_prob(mu_e=mu_e, log_var_e=log_var_e, z=z) - self.prior.log_prob(z)",
        "VAE.sample": "z = self.prior.sample(batch_size)\nreturn self.decoder.sample(z)",
    },
    "hana": {
        "log_normal_diag": "log_p = torch.distributions.Normal(mu, (0.5 * log_var).exp()).log_prob(x)",
        "log_standard_normal": "log_p = -0.5 * x ** 2 - 0.9189385332046727",
        "log_bernoulli": "log_p = -F.binary_cross_entropy(torch.clamp(p, EPS, 1 - EPS), x.to(p.dtype), reduction='none')",
        "log_categorical": "log_p = torch.log(p.clamp(EPS, 1 - EPS)) * torch.nn.functional.one_hot(x.long(), num_classes=num_classes).to(dtype=p.dtype)",
        "Encoder.reparameterization": "eps = torch.empty_like(mu).normal_()\nreturn mu + eps * torch.exp(log_var * 0.5)",
        "Encoder.encode": "stats = self.encoder(x)\nmu_e, log_var_e = stats.chunk(2, dim=1)\nreturn mu_e, log_var_e",
        "Encoder.sample": "if mu_e is None or log_var_e is None:\n    stats = self.encoder(x)\n    mu_e, log_var_e = stats.chunk(2, dim=1)\nreturn self.reparameterization(mu_e, log_var_e)",
        "Encoder.log_prob": "if x is not None:\n    mu_e, log_var_e = self.encode(x)\n    z = self.sample(mu_e=mu_e, log_var_e=log_var_e)\nreturn torch.distributions.Normal(mu_e, (0.5 * log_var_e).exp()).log_prob(z).sum(-1)",
        "Decoder.decode": "if self.distribution == 'categorical':\n    return [self.decoder(z).view(z.shape[0], -1, self.num_vals).softmax(dim=-1)]\nreturn [self.decoder(z).sigmoid()]",
        "Decoder.sample": "probs = self.decode(z)[0]\nif self.distribution == 'categorical':\n    return torch.multinomial(probs.flatten(0, 1), 1).reshape(probs.shape[0], probs.shape[1]).to(probs.dtype)\nreturn torch.bernoulli(probs)",
        "Decoder.log_prob": "probs = self.decode(z)[0]\nif self.distribution == 'categorical':\n    return log_categorical(x, probs, num_classes=self.num_vals).sum(-1).sum(-1)\nreturn log_bernoulli(x, probs).sum(-1)",
        "MoGPrior.sample": "which = torch.multinomial(self.w.view(-1).softmax(0), batch_size, replacement=True)\nreturn torch.distributions.Normal(self.means[which], (0.5 * self.logvars[which]).exp()).sample()",
        "MoGPrior.log_prob": "normal = torch.distributions.Normal(self.means, (0.5 * self.logvars).exp())\nlp = normal.log_prob(z[:, None, :]).sum(-1) + self.w.view(-1).log_softmax(0)\nreturn lp.logsumexp(-1)",
        "VAE.forward": "z = self.encoder.sample(x=x)\nmu_e, log_var_e = self.encoder.encode(x)\nz = self.encoder.reparameterization(mu_e, log_var_e)\nRE = self.decoder.log_prob(x, z)\nKL = self.encoder.log_prob(mu_e=mu_e, log_var_e=log_var_e, z=z) - self.prior.log_prob(z)",
        "VAE.sample": "return self.decoder.sample(self.prior.sample(batch_size))",
    },
}


def _starter() -> str:
    from grader.authoring.release import make_starter

    return make_starter((REPO / "reference" / "vae.py").read_text())


def build(student: str, starter: str | None = None) -> str:
    """The vae.py that `student` hands in: the starter with each TODO replaced by their body."""
    text = starter if starter is not None else _starter()
    solution = SOLUTIONS[student]
    out = []
    for line in text.splitlines():
        m = re.match(r'^(\s*)raise NotImplementedError\("TODO: implement (.+)"\)$', line)
        if m and m.group(2) in solution:
            indent = m.group(1)
            out.extend(indent + b if b else "" for b in solution[m.group(2)].splitlines())
            continue
        out.append(line)
        if line.startswith("from torch import nn") and "_top" in solution:
            out.extend(["", *solution["_top"].splitlines()])
    return "\n".join(out) + "\n"


def write_class(root: Path, students: list[str] | None = None) -> Path:
    """One folder per student under `root`, each with its vae.py."""
    starter = _starter()
    for s in students or list(SOLUTIONS):
        (root / s).mkdir(parents=True, exist_ok=True)
        (root / s / "vae.py").write_text(build(s, starter))
    return root


def mixed_class(root: Path, n: int, seed: int = 0, copies: int = 10) -> list[tuple[str, str]]:
    """A class of `n` synthetic students for the benchmark: each TODO of each student taken from one of
    the eight authors at random (so students share whole functions, as idioms are shared), renamed and
    recommented; then `copies` of them copied by one more student each under every disguise.
    Returns the planted (original, copy) pairs."""
    import random

    from grader.similarity.disguise import DISGUISES, disguise

    rng = random.Random(seed)
    starter = _starter()
    authors = list(SOLUTIONS)
    targets = sorted({t for s in SOLUTIONS.values() for t in s if t != "_top"})
    sources = {}
    for i in range(n - copies):
        mix = {t: SOLUTIONS[rng.choice(authors)][t] for t in targets}
        mix["_top"] = "\n\n".join(s["_top"] for s in SOLUTIONS.values() if "_top" in s)
        name = f"s{i:03d}"
        SOLUTIONS[name] = mix
        try:
            sources[name] = disguise(build(name, starter), ["rename", "recomment"], seed=seed * 1000 + i)
        finally:
            del SOLUTIONS[name]
    planted = []
    for j, original in enumerate(rng.sample(sorted(sources), copies)):
        name = f"c{j:03d}"
        sources[name] = disguise(sources[original], list(DISGUISES), seed=seed * 1000 + 900 + j)
        planted.append((original, name))
    for name, text in sources.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "vae.py").write_text(text)
    return planted
