"""Harnesses of the `kmeans-autoencoder` assignment: the course's loops, run on the student's module.

Called in the sandboxed child as `fn(module, device, **kwargs)` (array kwargs arrive as tensors on
`device`) and, for the reference, in the grader with `module = reference.kmeans_autoencoder`, so
both are trained by exactly the same code. No solution code here: only loops that call the
module's functions, and conversions of what they return into plain arrays (never trusted
further: the grader judges the arrays with reference code).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from grader.harnesses import using_threads
from grader.signatures import call

def INIT_CENTRES(x, y, k=10, how="per_digit", seed=0):  # the template's signature (renamed parameters go by position)
    pass


def _array(value, what: str) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must return a torch.Tensor, but returned {type(value).__name__}")
    with torch._C.DisableTorchFunctionSubclass():
        t = torch.Tensor.detach(value)
        return torch.Tensor.numpy(torch.Tensor.cpu(t).to(torch.float64 if t.is_floating_point() else torch.int64)).copy()


def _model(module, latent_dim: int, channels, device):
    model = module.ConvAutoencoder(latent_dim=int(latent_dim), channels=tuple(int(c) for c in channels))
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"ConvAutoencoder(...) did not build a torch.nn.Module but {type(model).__name__}")
    return model.to(device)


def _stages(seq, t, what: str) -> list:
    if not isinstance(seq, torch.nn.Sequential):
        raise TypeError(f"self.{what} must be an nn.Sequential of the stages in the sketch, "
                        f"found {type(seq).__name__}")
    shapes = [list(t.shape)]
    for layer in seq:
        t = layer(t)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"stage {type(layer).__name__} of self.{what} returned {type(t).__name__}, not a tensor")
        shapes.append(list(t.shape))
    return shapes


# ---- unit-level helpers ------------------------------------------------------------------------------

def stage_shapes(module, device, x, z, latent_dim: int = 16, channels=(16, 32)) -> dict:
    """Output shape of every stage of `model.encoder` on x and of `model.decoder` on z."""
    torch.manual_seed(0)
    model = _model(module, latent_dim, channels, device)
    with torch.no_grad():
        return {"encoder": _stages(model.encoder, x, "encoder"), "decoder": _stages(model.decoder, z, "decoder")}


def load_flat(model, flat: torch.Tensor) -> None:
    """Copy a flat vector into the model's parameters, in the order model.parameters() yields them."""
    params = list(model.parameters())
    sizes = [p.numel() for p in params]
    if sum(sizes) != flat.numel():
        raise ValueError(f"the model has {len(params)} parameter tensors with {sum(sizes)} numbers in all "
                         f"({[tuple(p.shape) for p in params]}); the architecture in the assignment has "
                         f"{flat.numel()}: check the layers and their sizes against the sketch")
    with torch.no_grad():
        offset = 0
        for p in params:
            p.copy_(flat[offset: offset + p.numel()].reshape(p.shape).to(p.device, p.dtype))
            offset += p.numel()


def run_with_params(module, device, flat, x, z, latent_dim: int = 16, channels=(16, 32), n_generate: int = 0,
                    seed: int = 0) -> dict:
    """encode(x), decode(z), forward(x) (and generate(n_generate) twice) with the given weights."""
    model = _model(module, latent_dim, channels, device)
    load_flat(model, flat)
    model.eval()
    out = {}
    with torch.no_grad():
        out["encode"] = _array(model.encode(x), "ConvAutoencoder.encode")
        out["decode"] = _array(model.decode(z), "ConvAutoencoder.decode")
        out["forward"] = _array(model(x), "ConvAutoencoder.forward")
        if n_generate:
            torch.manual_seed(int(seed))
            out["generate"] = _array(model.generate(int(n_generate)), "ConvAutoencoder.generate")
            out["generate_again"] = _array(model.generate(int(n_generate)), "ConvAutoencoder.generate")
    return out


# ---- the course's loops ----------------------------------------------------------------------------

def train_kmeans(module, device, x, y, k: int = 10, how: str = "per_digit", seed: int = 0, lr: float = 0.2,
                 epochs: int = 10, batch_size: int = 64, num_threads: int | None = 1) -> dict:
    """init_centres, then `epochs` passes of shuffled mini-batches through minibatch_update.

    Returns the centres after initialisation and after every epoch (list of (k, D) arrays)."""
    with using_threads(num_threads), torch.no_grad():
        centres = call(module.init_centres, INIT_CENTRES, x, y, k=int(k), how=how, seed=int(seed))
        history = [_array(centres, "init_centres")]
        g = torch.Generator().manual_seed(int(seed))
        for _ in range(int(epochs)):
            perm = torch.randperm(len(x), generator=g).to(x.device)
            for i in range(0, len(x), int(batch_size)):
                centres = module.minibatch_update(centres, x[perm[i: i + int(batch_size)]], float(lr))
                if not isinstance(centres, torch.Tensor):
                    raise TypeError(f"minibatch_update must return a torch.Tensor, but returned {type(centres).__name__}")
            history.append(_array(centres, "minibatch_update"))
    return {"centres": history}


def train_autoencoder(module, device, x_train, x_val, x_test, latent_dim: int = 16, channels=(16, 32),
                      epochs: int = 20, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                      time_budget_s: float = 30.0, n_generate: int = 20, num_threads: int | None = 1) -> dict:
    """Adam on reconstruction_loss(model(x), x) over shuffled mini-batches (images (N, 1, 8, 8)).

    Returns the training history (grader/history.py: the module's own loss per epoch, for display; epochs;
    stopped_because; seconds), the validation reconstructions after every epoch, the final weights as a flat
    vector, the test reconstructions and `n_generate` images decoded from random codes."""
    t0 = time.monotonic()
    with using_threads(num_threads):
        torch.manual_seed(int(seed))
        model = _model(module, latent_dim, channels, device)
        opt = torch.optim.Adam(model.parameters(), lr=float(lr))
        g = torch.Generator().manual_seed(int(seed))
        train_loss, val_recon, stopped = [], [], "max_epochs"
        for _ in range(int(epochs)):
            model.train()
            total, n = 0.0, 0
            perm = torch.randperm(len(x_train), generator=g).to(x_train.device)
            for i in range(0, len(x_train), int(batch_size)):
                xb = x_train[perm[i: i + int(batch_size)]]
                loss = module.reconstruction_loss(model(xb), xb)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise TypeError("reconstruction_loss must return a scalar torch.Tensor")
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(xb)
                n += len(xb)
            train_loss.append(total / n)
            model.eval()
            with torch.no_grad():
                val_recon.append(_array(model(x_val), "ConvAutoencoder.forward").astype(np.float32))
            if not math.isfinite(train_loss[-1]):
                stopped = "diverged"
                break
            if time.monotonic() - t0 > float(time_budget_s):
                stopped = "time_budget"
                break
        model.eval()
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1).cpu().double() for p in model.parameters()]).numpy()
            test_recon = _array(model(x_test), "ConvAutoencoder.forward").astype(np.float32)
            torch.manual_seed(int(seed) + 1)
            generated = _array(model.generate(int(n_generate)), "ConvAutoencoder.generate").astype(np.float32)
    # the training history in grader/history.py's keys, beside the arrays the grader evaluates
    return {"train_loss": train_loss, "epochs": list(range(1, len(train_loss) + 1)), "stopped_because": stopped,
            "seconds": time.monotonic() - t0,
            "val_recon": val_recon, "params": flat, "test_recon": test_recon, "generated": generated}
