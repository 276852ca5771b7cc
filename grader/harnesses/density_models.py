"""Harnesses of the `density-models` assignment: the course's loops, run in the sandbox on the
student's module (and, by the grader, on the reference module, so both are trained alike).

No solution code here: the loops only call the student's `ConvVAE(...).elbo` and `gmm_em_step`.
Results are plain data (numbers, lists, numpy arrays); the grader evaluates them with reference code.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from grader.harnesses import state_arrays, using_threads
from grader.signatures import call

def GMM_EM_STEP(X, weights, means, covs, reg=1e-6):  # the template's signature (renamed parameters go by position)
    pass


def train_conv_vae(module, device, x_train, latent_dim: int = 2, image_size: int = 8, epochs: int = 20,
                   batch_size: int = 128, lr: float = 1e-3, time_budget_s: float = 20.0, seed: int = 0,
                   num_threads: int = 1) -> dict:
    """Adam (lr 1e-3), batches of 128, maximise the mean per-example `model.elbo(x)` for `epochs`
    epochs or `time_budget_s` seconds. x_train: N×D in [0, 1], reshaped to N×1×H×W.

    Returns {"state_dict": {name: array}, "history": {"train_loss": [negative ELBO per epoch], "epochs": [1, ..., n],
    "seconds": t, "stopped_because": "max_epochs" | "time_budget" | "diverged"} (grader/history.py),
    "error": "" | message}."""
    with using_threads(num_threads):
        return _train_conv_vae(module, device, x_train, latent_dim, image_size, epochs, batch_size, lr, time_budget_s, seed)


def _train_conv_vae(module, device, x_train, latent_dim, image_size, epochs, batch_size, lr, time_budget_s, seed) -> dict:
    torch.manual_seed(int(seed))
    g = torch.Generator().manual_seed(int(seed))
    model = module.ConvVAE(latent_dim=int(latent_dim), image_size=int(image_size))
    if not isinstance(model, torch.nn.Module):
        return {"state_dict": {}, "history": {}, "error": f"ConvVAE(...) built a {type(model).__name__}, not a torch.nn.Module"}
    model = model.to(device)
    x = x_train.float().view(-1, 1, int(image_size), int(image_size)).to(device)
    params = list(model.parameters())
    if not params:
        return {"state_dict": {}, "history": {}, "error": "ConvVAE has no parameters to train"}
    opt = torch.optim.Adam(params, lr=float(lr))
    history = {"train_loss": [], "epochs": [], "seconds": 0.0, "stopped_because": "max_epochs"}
    best = state_arrays(model)
    t0 = time.monotonic()
    error = ""
    for epoch in range(int(epochs)):
        model.train()
        perm = torch.randperm(len(x), generator=g).to(device)
        total, count = 0.0, 0
        for i in range(0, len(x), int(batch_size)):
            xb = x[perm[i:i + int(batch_size)]]
            elbo = model.elbo(xb)
            if not isinstance(elbo, torch.Tensor) or elbo.shape != (len(xb),):
                error = f"elbo(x) must return a tensor of shape ({len(xb)},), got {getattr(elbo, 'shape', type(elbo).__name__)}"
                break
            loss = -elbo.mean()
            if not torch.isfinite(loss):
                history["stopped_because"] = "diverged"
                error = f"the ELBO became non-finite in epoch {epoch + 1}"
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(elbo.detach().sum())
            count += len(xb)
        if error:
            break
        history["train_loss"].append(-total / max(count, 1))
        history["epochs"].append(epoch + 1)
        best = state_arrays(model)
        if time.monotonic() - t0 > float(time_budget_s):
            history["stopped_because"] = "time_budget"
            break
    history["seconds"] = time.monotonic() - t0
    return {"state_dict": best if history["epochs"] else {}, "history": history, "error": error}


def run_em(module, device, X, weights, means, covs, iterations: int = 15, reg: float = 1e-2, num_threads: int = 1,
           time_budget_s: float | None = None) -> dict:
    """Up to `iterations` calls of the student's gmm_em_step(X, weights, means, covs, reg=reg) from the given start,
    stopping after the iteration that ends past `time_budget_s` (a slow but correct loop over points and components,
    as in course notebooks, is then compared with the reference after as many iterations; at least one runs).

    Returns {"weights", "means", "covs": arrays, "iterations": steps done, "error": "" | message,
    "iteration": where it failed}."""
    t0 = time.monotonic()
    done = 0
    with using_threads(num_threads):
        for it in range(int(iterations)):
            out = call(module.gmm_em_step, GMM_EM_STEP, X, weights, means, covs, reg=float(reg))
            if not isinstance(out, (tuple, list)) or len(out) != 3 or not all(isinstance(t, torch.Tensor) for t in out):
                return {"error": "gmm_em_step must return a tuple of 3 tensors (weights, means, covs)", "iteration": it + 1}
            weights, means, covs = (t.detach() for t in out)
            done = it + 1
            if time_budget_s is not None and time.monotonic() - t0 > float(time_budget_s):
                break
    to = lambda t: np.asarray(t.detach().double().cpu().numpy(), dtype=np.float64).copy()
    return {"weights": to(weights), "means": to(means), "covs": to(covs), "iterations": done, "error": "",
            "iteration": 0, "seconds": time.monotonic() - t0}
