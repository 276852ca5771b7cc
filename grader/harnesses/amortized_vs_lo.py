"""Training loops of `amortized-vs-lo`, run inside the sandbox on the student's module.

The course's loops (Adam, shuffled mini-batches, fixed number of epochs), with a wall-clock budget
and a seeded initialisation and shuffle. No solution code: the loops only call the student's classes
(`CNNClassifier`, `GaussianEncoder`, `BernoulliDecoder`, `VAE`, `LatentOptimizationVAE`) as the
assignment's API says. The grader runs the *same* functions on the reference module to train the
reference models, so both are trained alike. What comes back is plain data: loss histories and the
final weights as numpy arrays (the grader evaluates them with reference code).

Problems in the student's code never raise out of here: training stops with `stopped_because`
'error' (and the exception in `message`) or 'diverged' (a non-finite loss).
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback

import numpy as np
import torch
from torch import nn

from grader.harnesses import state_arrays, using_threads


def mlp(sizes: list[int]) -> nn.Sequential:
    """The course's MLP: Linear layers with LeakyReLU between them."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        if i:
            layers.append(nn.LeakyReLU())
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
    return nn.Sequential(*layers)


def build_vae(module, D: int, L: int, H: int):
    """module.VAE(GaussianEncoder(D -> H -> H -> 2L), BernoulliDecoder(L -> H -> H -> D), L)."""
    encoder = module.GaussianEncoder(mlp([D, H, H, 2 * L]))
    decoder = module.BernoulliDecoder(mlp([L, H, H, D]))
    return module.VAE(encoder, decoder, L)


def build_lo(module, D: int, L: int, H: int, N: int):
    """module.LatentOptimizationVAE(BernoulliDecoder(L -> H -> H -> D), N, L)."""
    return module.LatentOptimizationVAE(module.BernoulliDecoder(mlp([L, H, H, D])), N, L)


@contextlib.contextmanager
def _threads_and_seed(seed: int, device):
    devices = [device.index or 0] if device.type == "cuda" else []
    with using_threads(1), torch.random.fork_rng(devices=devices):  # tiny nets: 1 thread is much faster
        torch.manual_seed(seed)
        yield


def _describe(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}, in {tb[-1].name})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"[:600]


class _Stop(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def _scalar(loss, what: str) -> float:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise _Stop("error", f"{what}: expected a scalar tensor, got "
                             f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__}")
    value = float(loss.detach().reshape(()))
    if not math.isfinite(value):
        raise _Stop("diverged", f"{what}: the loss is {value}")
    return value


def _per_example(out, B: int, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (B,):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise _Stop("error", f"{what} must return one value per example, shape ({B},), got {shape}")
    return out


def _loop(model, params, epochs: int, batches, step_loss, validate, time_budget_s: float, seed: int) -> dict:
    """Shared loop: per epoch, mean training loss over batches and a validation value.

    Only completed epochs count: when the time budget runs out in the middle of an epoch, that epoch's updates
    are discarded (the weights go back to the end of the last completed epoch) and it is not recorded, so the
    reference that the grader trains for as many epochs as the student's run recorded has been trained exactly as
    far as the weights that come back. A budget that runs out within epoch 1 leaves no epoch recorded (and the
    partly trained weights: there is nothing complete to go back to)."""
    hist = {"train_loss": [], "val_loss": [], "epochs": [], "stopped_because": "max_epochs", "message": "",
            "seconds": 0.0}
    t0 = time.perf_counter()
    try:
        opt = torch.optim.Adam(params)
        g = torch.Generator().manual_seed(seed)
        completed = None  # the model's state at the end of the last completed epoch (None: none yet)
        for epoch in range(1, int(epochs) + 1):
            model.train()
            losses = []
            order = batches(g)
            cut = False
            for i, batch in enumerate(order):
                loss = step_loss(batch)
                losses.append(_scalar(loss, "training loss"))
                opt.zero_grad()
                loss.backward()
                opt.step()
                if time.perf_counter() - t0 > time_budget_s:
                    cut = i + 1 < len(order)
                    break
            if cut:
                hist["stopped_because"] = "time_budget"
                if completed is None:
                    hist["message"] = (f"the time budget of {time_budget_s:g} s ran out in epoch 1, "
                                       f"after {len(losses)} of {len(order)} batches: no epoch completed")
                else:
                    model.load_state_dict(completed)
                    hist["message"] = (f"stopped after {epoch - 1} epoch(s): the time budget of {time_budget_s:g} s "
                                       f"ran out in epoch {epoch}, whose {len(losses)} of {len(order)} batches "
                                       f"were discarded (the weights are those after epoch {epoch - 1})")
                break
            hist["train_loss"].append(float(np.mean(losses)) if losses else math.nan)
            model.eval()
            with torch.no_grad():
                extra = validate()
            for k, v in extra.items():
                hist.setdefault(k, []).append(v)
            hist["epochs"].append(epoch)
            if time.perf_counter() - t0 > time_budget_s:
                hist["stopped_because"] = "time_budget"
                hist["message"] = f"stopped after {epoch} epoch(s): the time budget of {time_budget_s:g} s ran out"
                break
            if epoch < int(epochs):
                completed = {k: v.detach().clone() for k, v in model.state_dict().items()}
    except _Stop as e:
        hist["stopped_because"], hist["message"] = e.reason, e.message
    except Exception as e:  # the student's code
        hist["stopped_because"], hist["message"] = "error", _describe(e)
    hist["seconds"] = time.perf_counter() - t0
    return hist


def _batches(n: int, batch_size: int, device):
    def make(g):
        perm = torch.randperm(n, generator=g).to(device)
        return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    return make


def train_classifier(module, device, x_train, y_train, x_val, y_val, image_size: int, epochs: int = 10,
                     lr: float = 1e-3, batch_size: int = 64, seed: int = 0, time_budget_s: float = 30.0) -> dict:
    """CNNClassifier trained with Adam(lr) and nn.CrossEntropyLoss on its outputs (the course loop).

    x_*: (N, 1, S, S) in [0, 1]; y_*: int64 labels. History: train_loss, val_loss, val_accuracy
    (as computed here from the student's own outputs: shown, not graded), and the final weights."""
    try:
        with _threads_and_seed(seed, device):
            model = module.CNNClassifier(num_classes=10, image_size=int(image_size)).to(device)
    except Exception as e:
        return {"stopped_because": "error", "message": f"building CNNClassifier: {_describe(e)}", "state_dict": {}}
    criterion = nn.CrossEntropyLoss()
    y_train, y_val = y_train.long(), y_val.long()

    def step(idx):
        out = model(x_train[idx])
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(idx), 10):
            raise _Stop("error", f"CNNClassifier.forward must return (B, 10) logits, got "
                                 f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        return criterion(out, y_train[idx])

    def validate():
        out = model(x_val)
        return {"val_loss": _scalar(criterion(out, y_val), "validation loss"),
                "val_accuracy": float((out.argmax(1) == y_val).float().mean())}

    with _threads_and_seed(seed + 1, device):
        for p in model.parameters():
            p.requires_grad_(True)
        opt_params = [{"params": list(model.parameters()), "lr": lr}]
        hist = _loop(model, opt_params, epochs, _batches(len(x_train), batch_size, device), step, validate,
                     time_budget_s, seed)
    hist["state_dict"] = _safe_state(model, hist)
    return hist


def train_vae(module, device, x_train, x_val, L: int = 8, H: int = 128, epochs: int = 30, lr: float = 1e-3,
              batch_size: int = 64, seed: int = 0, time_budget_s: float = 30.0) -> dict:
    """Amortized VAE: loss = −model.elbo(x).mean(); validation loss = −ELBO averaged over x_val."""
    D = int(x_train.shape[1])
    try:
        with _threads_and_seed(seed, device):
            model = build_vae(module, D, int(L), int(H)).to(device)
    except Exception as e:
        return {"stopped_because": "error", "message": f"building the VAE: {_describe(e)}", "state_dict": {}}

    def step(idx):
        return -_per_example(model.elbo(x_train[idx]), len(idx), "VAE.elbo").mean()

    def validate():
        return {"val_loss": _scalar(-_per_example(model.elbo(x_val), len(x_val), "VAE.elbo").mean(), "validation loss")}

    with _threads_and_seed(seed + 1, device):
        hist = _loop(model, [{"params": list(model.parameters()), "lr": lr}], epochs,
                     _batches(len(x_train), batch_size, device), step, validate, time_budget_s, seed)
    hist["state_dict"] = _safe_state(model, hist)
    return hist


def train_lo(module, device, x_train, L: int = 8, H: int = 128, epochs: int = 30, lr: float = 1e-3,
             lr_latent: float = 1e-2, batch_size: int = 64, seed: int = 0, time_budget_s: float = 30.0) -> dict:
    """Latent optimization: loss = −model.elbo(x[idx], idx).mean(); the decoder learns at `lr`, the
    per-example tables `mu`, `log_var` at `lr_latent`. There is no validation set (no q for unseen
    images): val_loss is −ELBO over all training examples at the end of each epoch."""
    D, N = int(x_train.shape[1]), int(x_train.shape[0])
    try:
        with _threads_and_seed(seed, device):
            model = build_lo(module, D, int(L), int(H), N).to(device)
        latent = [p for name, p in model.named_parameters() if name in ("mu", "log_var")]
        if not latent:
            raise _Stop("error", "LatentOptimizationVAE has no nn.Parameter attributes `mu` and `log_var`")
        others = [p for name, p in model.named_parameters() if name not in ("mu", "log_var")]
    except _Stop as e:
        return {"stopped_because": "error", "message": e.message, "state_dict": {}}
    except Exception as e:
        return {"stopped_because": "error", "message": f"building LatentOptimizationVAE: {_describe(e)}", "state_dict": {}}
    all_idx = torch.arange(N, device=x_train.device)

    def step(idx):
        return -_per_example(model.elbo(x_train[idx], idx), len(idx), "LatentOptimizationVAE.elbo").mean()

    def validate():
        out = _per_example(model.elbo(x_train, all_idx), N, "LatentOptimizationVAE.elbo")
        return {"val_loss": _scalar(-out.mean(), "training-set loss")}

    with _threads_and_seed(seed + 1, device):
        hist = _loop(model, [{"params": others, "lr": lr}, {"params": latent, "lr": lr_latent}], epochs,
                     _batches(N, batch_size, device), step, validate, time_budget_s, seed)
    hist["state_dict"] = _safe_state(model, hist)
    return hist


def _safe_state(model, hist) -> dict:
    try:
        return state_arrays(model)
    except Exception as e:
        hist["stopped_because"], hist["message"] = "error", f"reading the weights: {_describe(e)}"
        return {}
