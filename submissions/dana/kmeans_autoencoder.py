"""Homework 7 — Dana. Mini-batch k-means and a small convolutional autoencoder for 8x8 digits."""

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- k-means

def squared_distances(x, centres):
    # ||x||^2 - 2 x.c + ||c||^2, clamped at 0 against round-off
    xx = (x * x).sum(1, keepdim=True)
    cc = (centres * centres).sum(1).unsqueeze(0)
    return (xx - 2.0 * x @ centres.T + cc).clamp_min(0.0)


def assign(x, centres):
    d = squared_distances(x, centres)
    return torch.min(d, dim=1).indices


def kmeans_loss(x, centres):
    d = squared_distances(x, centres)
    nearest, _ = torch.min(d, dim=1)
    return nearest.sum() / x.shape[0]


def minibatch_update(centres, x_batch, lr):
    labels = assign(x_batch, centres)
    new = centres.clone()
    for k in range(centres.shape[0]):
        members = x_batch[labels == k]
        if members.shape[0] == 0:
            continue  # nobody voted for this centre: leave it alone
        new[k] = centres[k] + lr * (members.mean(dim=0) - centres[k])
    return new


def init_centres(x, y, k=10, how="per_digit", seed=0):
    gen = torch.Generator()
    gen.manual_seed(seed)
    if how == "random":
        return torch.rand((k, x.shape[1]), generator=gen, dtype=x.dtype).to(x.device)
    if how != "per_digit":
        raise ValueError("unknown initialisation " + str(how))
    rows = []
    for digit in range(k):
        where = (y.cpu() == digit).nonzero(as_tuple=True)[0]
        shuffled = where[torch.randperm(len(where), generator=gen)]
        rows.append(x[int(shuffled[0])])
    return torch.stack(rows).clone()


def confusion(assignments, labels, k, n_classes=10):
    m = torch.zeros((n_classes, k), dtype=torch.int64, device=labels.device)
    ones = torch.ones_like(labels, dtype=torch.int64)
    m.index_put_((labels.long(), assignments.long()), ones, accumulate=True)
    return m


# ----------------------------------------------------------------------------- autoencoder

class ConvAutoencoder(nn.Module):
    def __init__(self, latent_dim=16, channels=(16, 32)):
        super().__init__()
        small, big = channels
        self.latent_dim = latent_dim
        enc = [nn.Conv2d(1, small, 3, 2, 1), nn.ReLU(inplace=True),
               nn.Conv2d(small, big, 3, 2, 1), nn.ReLU(inplace=True),
               nn.Flatten(start_dim=1),
               nn.Linear(big * 2 * 2, latent_dim)]
        dec = [nn.Linear(latent_dim, big * 2 * 2), nn.ReLU(inplace=True),
               nn.Unflatten(1, (big, 2, 2)),
               nn.ConvTranspose2d(big, small, 3, 2, 1, output_padding=1), nn.ReLU(inplace=True),
               nn.ConvTranspose2d(small, 1, 3, 2, 1, output_padding=1),
               nn.Sigmoid()]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        z = self.encode(x)
        return self.decode(z)

    def generate(self, n):
        w = self.decoder[0].weight
        z = torch.randn(n, self.latent_dim, device=w.device, dtype=w.dtype)
        return self.decode(z)


def reconstruction_loss(x_hat, x):
    return F.mse_loss(x_hat, x, reduction="mean")
