"""Known student mistakes of the `kmeans-autoencoder` assignment, as mutants of the reference
(reference/kmeans_autoencoder.py).

Contract (as in reference/vae_mistakes.py): `MUTANTS: dict[str, Mutant]`, keyed by id, where
`Mutant(id, component, fn)` names what `fn` replaces in `reference.kmeans_autoencoder`: a function
("minibatch_update") or "Class.method" ("ConvAutoencoder.__init__"). `fn` has exactly the signature
of what it replaces. Mutants call other reference functions through the module (`ka.assign`) so
that several patches compose. Mutants of `ConvAutoencoder.__init__` call `nn.Module.__init__(self)`
(no zero-argument super(): they are defined outside the class) and create their parameters in the
reference's order, so the same weights load into them.
"""

from __future__ import annotations


import torch
from torch import nn

from reference import kmeans_autoencoder as ka
from reference.mutants import registry


MUTANTS, mutant = registry()


# ---- k-means ---------------------------------------------------------------------------------------

@mutant("distances_not_squared", "squared_distances")
def _(x, centres):
    return ((x[:, None, :] - centres[None, :, :]) ** 2).sum(dim=-1).sqrt()


@mutant("argmax_not_argmin", "assign")
def _(x, centres):
    return ka.squared_distances(x, centres).argmax(dim=1)


@mutant("loss_summed", "kmeans_loss")
def _(x, centres):
    return ka.squared_distances(x, centres).min(dim=1).values.sum()


@mutant("loss_all_centres", "kmeans_loss")
def _(x, centres):
    return ka.squared_distances(x, centres).mean()


@mutant("update_ignores_lr", "minibatch_update")
def _(centres, x_batch, lr):
    k = centres.shape[0]
    idx = ka.assign(x_batch, centres)
    counts = torch.bincount(idx, minlength=k).to(centres.dtype)
    sums = torch.zeros_like(centres).index_add_(0, idx, x_batch)
    means = sums / counts.clamp(min=1.0)[:, None]
    return torch.where(counts[:, None] > 0, means, centres)


@mutant("update_sum_not_mean", "minibatch_update")
def _(centres, x_batch, lr):
    k = centres.shape[0]
    idx = ka.assign(x_batch, centres)
    counts = torch.bincount(idx, minlength=k).to(centres.dtype)
    sums = torch.zeros_like(centres).index_add_(0, idx, x_batch)
    return centres + lr * (sums - counts[:, None] * centres)


@mutant("empty_cluster_nan", "minibatch_update")
def _(centres, x_batch, lr):
    k = centres.shape[0]
    idx = ka.assign(x_batch, centres)
    counts = torch.bincount(idx, minlength=k).to(centres.dtype)
    sums = torch.zeros_like(centres).index_add_(0, idx, x_batch)
    return centres + lr * (sums / counts[:, None] - centres)


@mutant("per_digit_ignores_labels", "init_centres")
def _(x, y, k=10, how="per_digit", seed=0):
    g = torch.Generator().manual_seed(int(seed))
    if how == "per_digit":
        picks = torch.randperm(len(x), generator=g)[:k]
        return x[picks.to(x.device)].clone()
    return torch.rand(k, x.shape[1], generator=g, dtype=x.dtype).to(x.device)


@mutant("confusion_transposed", "confusion")
def _(assignments, labels, k, n_classes=10):
    flat = assignments.long() * n_classes + labels.long()
    return torch.bincount(flat, minlength=n_classes * k).reshape(k, n_classes)


# ---- autoencoder -------------------------------------------------------------------------------------

def _build(self, latent_dim, channels, output_padding=1, sigmoid=True):
    nn.Module.__init__(self)
    c1, c2 = channels
    self.latent_dim = latent_dim
    self.encoder = nn.Sequential(
        nn.Conv2d(1, c1, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * c2, latent_dim))
    layers = [nn.Linear(latent_dim, 4 * c2), nn.ReLU(), nn.Unflatten(1, (c2, 2, 2)),
              nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=output_padding), nn.ReLU(),
              nn.ConvTranspose2d(c1, 1, 3, stride=2, padding=1, output_padding=output_padding)]
    if sigmoid:
        layers.append(nn.Sigmoid())
    self.decoder = nn.Sequential(*layers)


@mutant("no_output_padding", "ConvAutoencoder.__init__")
def _(self, latent_dim=16, channels=(16, 32)):
    _build(self, latent_dim, channels, output_padding=0)


@mutant("decoder_no_sigmoid", "ConvAutoencoder.__init__")
def _(self, latent_dim=16, channels=(16, 32)):
    _build(self, latent_dim, channels, sigmoid=False)


@mutant("reconstruction_loss_summed", "reconstruction_loss")
def _(x_hat, x):
    return ((x_hat - x) ** 2).sum()
