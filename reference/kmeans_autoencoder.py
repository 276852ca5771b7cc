"""Homework 7: mini-batch k-means and a convolutional autoencoder on 8×8 digits.

Data. Images are scikit-learn's 8×8 digits scaled to [0, 1] (pixel / 16). k-means sees them as
flat vectors `x` of shape (N, 64); the autoencoder as images of shape (N, 1, 8, 8). Labels `y`
are int64 digits 0..9. Every function keeps the dtype (float32 or float64) and the device of its
inputs and works on CPU and CUDA alike.

Part 1: mini-batch k-means (online Lloyd with a learning rate η)

    squared_distances(x, centres) -> (N, K)   ‖x_n − c_k‖²
    assign(x, centres)            -> (N,)     int64 index of the nearest centre (argmin)
    kmeans_loss(x, centres)       -> ()       (1/N) Σ_n min_k ‖x_n − c_k‖²
    minibatch_update(centres, x_batch, lr) -> (K, D)
        c_k ← c_k + η · (mean of the batch points assigned to c_k − c_k); a centre that gets no
        point of the batch does not move. η = 1 is a Lloyd step on the batch. (The same step is a
        gradient step on the batch loss with rate η·B/(2·n_k), where n_k points of the B in the
        batch are assigned to c_k: the seed report's "η = 4.5 ≈ B/(2·n_k)" for B = 64, K = 10.)
    init_centres(x, y, k, how="per_digit" | "random", seed) -> (k, D)
        "per_digit": centre j is one image of digit j, picked at random; "random": uniform
        random pixels in [0, 1). The same seed gives the same centres.
    confusion(assignments, labels, k, n_classes) -> (n_classes, k) int64
        M[i, j] = number of points with label i assigned to cluster j (rows: true digits).

The course loop (grader/harnesses/kmeans_autoencoder.py): centres = init_centres(...), then for
each epoch, for each shuffled batch of 64 images: centres = minibatch_update(centres, xb, lr).

Part 2: a convolutional autoencoder

    ConvAutoencoder(latent_dim=16, channels=(16, 32)), an nn.Module with two nn.Sequential
    attributes, `encoder` and `decoder`, whose stages have these output shapes (C1, C2 =
    channels, L = latent_dim; the sketch of the seed report scaled from 28×28 to 8×8):

        encoder                                   decoder
        x        (N, 1, 8, 8)                     z         (N, L)
        Conv 3×3/2, pad 1, ReLU  (N, C1, 4, 4)    Linear, ReLU        (N, 4·C2)
        Conv 3×3/2, pad 1, ReLU  (N, C2, 2, 2)    Unflatten           (N, C2, 2, 2)
        Flatten                  (N, 4·C2)        ConvT 3×3/2, pad 1, out-pad 1, ReLU (N, C1, 4, 4)
        Linear                   (N, L)           ConvT 3×3/2, pad 1, out-pad 1, Sigmoid (N, 1, 8, 8)

    Its parameters, in this order: the two convolutions, the encoder's Linear, the decoder's
    Linear, the two transposed convolutions (weight then bias for each).
    encode(x) -> z (N, L); decode(z) -> images (N, 1, 8, 8) in (0, 1); forward(x) = decode(encode(x));
    generate(n) -> n images decoded from codes z ~ N(0, I) drawn on the model's device.
    reconstruction_loss(x_hat, x) -> () mean squared error over all elements (batch and pixels).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["squared_distances", "assign", "kmeans_loss", "minibatch_update", "init_centres", "confusion",
           "ConvAutoencoder", "reconstruction_loss"]


# ---- Part 1: mini-batch k-means ------------------------------------------------------------------

def squared_distances(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ‖x_n − c_k‖² between points and centres.

    Args:
        x: (N, D) float points.
        centres: (K, D) float centres, same dtype and device as `x`.
    Returns:
        (N, K) tensor of x's dtype.
    """
    # BEGIN SOLUTION
    diff = x[:, None, :] - centres[None, :, :]
    return (diff ** 2).sum(dim=-1)
    # END SOLUTION


def assign(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (smallest squared distance) of every point.

    Args:
        x: (N, D) float points.  centres: (K, D) float centres.
    Returns:
        (N,) int64 tensor with values in 0..K-1.
    """
    # BEGIN SOLUTION
    return squared_distances(x, centres).argmin(dim=1)
    # END SOLUTION


def kmeans_loss(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The k-means objective on `x`: mean over points of the squared distance to the nearest centre.

    Args:
        x: (N, D) float points.  centres: (K, D) float centres.
    Returns:
        0-dim tensor of x's dtype: (1/N) Σ_n min_k ‖x_n − c_k‖².
    """
    # BEGIN SOLUTION
    return squared_distances(x, centres).min(dim=1).values.mean()
    # END SOLUTION


def minibatch_update(centres: torch.Tensor, x_batch: torch.Tensor, lr: float) -> torch.Tensor:
    """One step of mini-batch k-means (online Lloyd).

    Each point of the batch is assigned to its nearest centre; every centre c_k that received
    points moves a fraction `lr` (η) of the way to their mean:
        c_k ← c_k + η · (mean_{n: a_n = k} x_n − c_k).
    A centre that received no point stays where it is (no division by zero, no NaN).

    Args:
        centres: (K, D) float centres.
        x_batch: (B, D) float points, same dtype and device.
        lr: η, a float (η = 1 moves each centre to the mean of its batch points).
    Returns:
        (K, D) the new centres (the input may be updated in place or left untouched).
    """
    # BEGIN SOLUTION
    k = centres.shape[0]
    idx = assign(x_batch, centres)
    counts = torch.bincount(idx, minlength=k).to(centres.dtype)
    sums = torch.zeros_like(centres).index_add_(0, idx, x_batch)
    means = sums / counts.clamp(min=1.0)[:, None]
    step = torch.where(counts[:, None] > 0, means - centres, torch.zeros_like(centres))
    return centres + lr * step
    # END SOLUTION


def init_centres(x: torch.Tensor, y: torch.Tensor, k: int = 10, how: str = "per_digit", seed: int = 0) -> torch.Tensor:
    """Initial centres for k-means.

    Args:
        x: (N, D) float images scaled to [0, 1].  y: (N,) int64 labels.
        k: the number of centres.
        how: "per_digit": centre j is a copy of one image of digit j (j = 0..k-1), picked at
             random among the images of that digit; "random": every pixel uniform in [0, 1).
        seed: seeds a torch.Generator: the same seed gives the same centres.
    Returns:
        (k, D) tensor of x's dtype on x's device.
    """
    # BEGIN SOLUTION
    g = torch.Generator().manual_seed(int(seed))
    if how == "per_digit":
        labels = y.cpu()
        picks = []
        for j in range(k):
            candidates = torch.nonzero(labels == j).flatten()
            if len(candidates) == 0:
                raise ValueError(f"no image of digit {j} to initialise centre {j}")
            picks.append(candidates[torch.randint(len(candidates), (1,), generator=g)])
        return x[torch.cat(picks).to(x.device)].clone()
    if how == "random":
        return torch.rand(k, x.shape[1], generator=g, dtype=x.dtype).to(x.device)
    raise ValueError(f"how must be 'per_digit' or 'random', got {how!r}")
    # END SOLUTION


def confusion(assignments: torch.Tensor, labels: torch.Tensor, k: int, n_classes: int = 10) -> torch.Tensor:
    """Confusion matrix of true label against cluster.

    Args:
        assignments: (N,) int64 cluster indices in 0..k-1.  labels: (N,) int64 labels in 0..n_classes-1.
    Returns:
        (n_classes, k) int64 tensor M with M[i, j] = #{n : labels_n = i and assignments_n = j}.
    """
    # BEGIN SOLUTION
    flat = labels.long() * k + assignments.long()
    return torch.bincount(flat, minlength=n_classes * k).reshape(n_classes, k)
    # END SOLUTION


# ---- Part 2: convolutional autoencoder --------------------------------------------------------------

class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder for 1×8×8 images (see the module docstring for the stage shapes).

    Attributes:
        encoder: nn.Sequential, (N, 1, 8, 8) -> (N, latent_dim).
        decoder: nn.Sequential, (N, latent_dim) -> (N, 1, 8, 8), values in (0, 1).
        latent_dim: int.
    """

    def __init__(self, latent_dim: int = 16, channels: tuple[int, int] = (16, 32)):
        super().__init__()
        # BEGIN SOLUTION
        c1, c2 = channels
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, stride=2, padding=1), nn.ReLU(),   # (N, C1, 4, 4)
            nn.Conv2d(c1, c2, kernel_size=3, stride=2, padding=1), nn.ReLU(),  # (N, C2, 2, 2)
            nn.Flatten(),                                                      # (N, 4·C2)
            nn.Linear(4 * c2, latent_dim),                                     # (N, L)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 4 * c2), nn.ReLU(),                          # (N, 4·C2)
            nn.Unflatten(1, (c2, 2, 2)),                                       # (N, C2, 2, 2)
            nn.ConvTranspose2d(c2, c1, kernel_size=3, stride=2, padding=1, output_padding=1), nn.ReLU(),  # (N, C1, 4, 4)
            nn.ConvTranspose2d(c1, 1, kernel_size=3, stride=2, padding=1, output_padding=1),              # (N, 1, 8, 8)
            nn.Sigmoid(),
        )
        # END SOLUTION

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 8, 8) images -> (N, latent_dim) codes."""
        # BEGIN SOLUTION
        return self.encoder(x)
        # END SOLUTION

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent_dim) codes -> (N, 1, 8, 8) images with values in (0, 1)."""
        # BEGIN SOLUTION
        return self.decoder(z)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction decode(encode(x)), shape (N, 1, 8, 8)."""
        # BEGIN SOLUTION
        return self.decode(self.encode(x))
        # END SOLUTION

    def generate(self, n: int) -> torch.Tensor:
        """n images decoded from random codes z ~ N(0, I), drawn on the model's device: (n, 1, 8, 8)."""
        # BEGIN SOLUTION
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, device=device)
        return self.decode(z)
        # END SOLUTION


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements (batch, channels and pixels): a 0-dim tensor."""
    # BEGIN SOLUTION
    return ((x_hat - x) ** 2).mean()
    # END SOLUTION
