# HW7 - Eve
# k-means on digits + conv autoencoder
import torch
from torch import nn


def squared_distances(x, centres):
    out = torch.empty(x.shape[0], centres.shape[0], dtype=x.dtype, device=x.device)
    for k in range(centres.shape[0]):
        out[:, k] = ((x - centres[k]) ** 2).sum(dim=1)
    return out


def assign(x, centres):
    return torch.argmin(squared_distances(x, centres), dim=1)


def kmeans_loss(x, centres):
    return squared_distances(x, centres).min(dim=1)[0].mean()


def minibatch_update(centres, x_batch, lr):
    # Lloyd: every centre goes to the average of the points that picked it
    a = assign(x_batch, centres)
    out = centres.clone()
    for k in range(len(centres)):
        pts = x_batch[a == k]
        if len(pts) > 0:
            out[k] = pts.mean(0)
    return out


def init_centres(x, y, k=10, how="per_digit", seed=0):
    g = torch.Generator().manual_seed(seed)
    if how == "random":
        return torch.rand(k, x.shape[1], generator=g, dtype=x.dtype).to(x.device)
    idx = []
    for d in range(k):
        cands = torch.where(y.cpu() == d)[0]
        idx.append(cands[torch.randint(0, len(cands), (1,), generator=g)].item())
    return x[idx].clone()


def confusion(assignments, labels, k, n_classes=10):
    m = torch.zeros(k, n_classes, dtype=torch.long, device=labels.device)
    for a, l in zip(assignments.tolist(), labels.tolist()):
        m[a, l] += 1
    return m


class ConvAutoencoder(nn.Module):
    def __init__(self, latent_dim=16, channels=(16, 32)):
        super().__init__()
        c1, c2 = channels
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * 4, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, c2 * 4),
            nn.ReLU(),
            nn.Unflatten(1, (c2, 2, 2)),
            nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 3, stride=2, padding=1, output_padding=1),
        )

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        return self.decoder(self.encoder(x))

    def generate(self, n):
        z = torch.randn(n, self.latent_dim, device=next(self.parameters()).device)
        return self.decoder(z)


def reconstruction_loss(x_hat, x):
    return ((x_hat - x) ** 2).sum()
