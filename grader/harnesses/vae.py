"""The vae assignment's training loop (model level): the `vae.train` harness, run in the sandboxed child,
and the same loop trains the reference in the grader (grader/checks/vae_model.py).

It imports torch and numpy only: no density formulas and no `reference` import, so it can train a
student's VAE where the reference must not be reachable. Everything it returns is plain data
(`TrainHistory.to_dict()`: lists, numbers, strings and a dict of numpy arrays), which the grader
loads into the reference VAE (`grader.checks.vae_evaluation.load_reference_model`).

The loop is the course's (Tomczak, "Deep Generative Modeling"): Adamax, shuffled mini-batches,
`loss = model(x, reduction='avg')`, validation loss = sum of `model(x, reduction='sum')` / N,
early stopping on the validation loss, keeping the best weights. Added for grading: a wall-clock
budget, a seeded shuffle, and the student's forward is never trusted (exceptions, non-tensors and
non-finite losses end training with a reason instead of crashing the harness).
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch import nn

from grader.history import STOP_REASONS as _STOP_WORDS

__all__ = ["build_mlp_nets", "build_vae", "TrainConfig", "TrainHistory", "train", "train_vae", "seeded", "state_dict_arrays"]

STOP_REASONS = tuple(_STOP_WORDS)  # grader/history.py: one list for every loop, worded by the report


def build_mlp_nets(D: int, L: int, M: int, num_vals: int, likelihood: str = "categorical") -> tuple[nn.Sequential, nn.Sequential]:
    """The course's networks: encoder D -> M -> M -> 2L, decoder L -> M -> M -> num_vals·D (Bernoulli: D)."""
    if likelihood not in ("categorical", "bernoulli"):
        raise ValueError(f"likelihood must be 'categorical' or 'bernoulli', got {likelihood!r}")
    out = D if likelihood == "bernoulli" else num_vals * D
    encoder_net = nn.Sequential(nn.Linear(D, M), nn.LeakyReLU(), nn.Linear(M, M), nn.LeakyReLU(), nn.Linear(M, 2 * L))
    decoder_net = nn.Sequential(nn.Linear(L, M), nn.LeakyReLU(), nn.Linear(M, M), nn.LeakyReLU(), nn.Linear(M, out))
    return encoder_net, decoder_net


@dataclass
class TrainConfig:
    lr: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 50
    patience: int = 5  # stop after this many epochs in a row without a better validation loss
    time_budget_s: float = 30.0  # wall clock for the whole loop, checked between batches
    seed: int = 0  # network initialisation (build_vae), shuffling and the model's sampling noise
    L: int = 16
    M: int = 256
    num_components: int = 16
    eval_batch_size: int = 500  # validation batches (the value does not depend on it, only the speed)
    # torch CPU threads while training (restored afterwards); None leaves the process setting. These nets
    # are small: on a busy 2-core machine 1 thread ran the digits default 23× faster than 2 (0.10 vs 2.2 s
    # per epoch, bench/bench_training.py), and a time budget then cuts the 2-thread run short.
    num_threads: int | None = 1

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)


@dataclass
class TrainHistory:
    train_loss: list[float] = field(default_factory=list)  # per epoch: mean of the batch losses
    val_loss: list[float] = field(default_factory=list)  # per epoch: summed negative ELBO / N
    epochs: list[int] = field(default_factory=list)  # 1-based epoch numbers of the entries above
    best_epoch: int = 0  # epoch whose weights are in state_dict; 0 = initial weights (never validated)
    stopped_because: str = "max_epochs"  # one of STOP_REASONS
    seconds: float = 0.0
    state_dict: dict[str, np.ndarray] = field(default_factory=dict)  # best weights, CPU, float32
    message: str = ""  # why it stopped, in words (the exception for 'error')
    epoch_seconds: list[float] = field(default_factory=list)
    batches: int = 0  # optimiser steps taken

    @property
    def best_val_loss(self) -> float:
        if self.best_epoch in self.epochs:
            return self.val_loss[self.epochs.index(self.best_epoch)]
        return math.nan

    def to_dict(self) -> dict:
        """Plain data (the state_dict stays a dict of numpy arrays) for crossing the sandbox boundary."""
        d = asdict(self)
        d["state_dict"] = dict(self.state_dict)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainHistory":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["state_dict"] = {k: np.asarray(v) for k, v in (d.get("state_dict") or {}).items()}
        return cls(**kw)


@contextlib.contextmanager
def seeded(seed: int, device: str | torch.device = "cpu"):
    """Seed torch's global generators inside the block and restore their previous state afterwards."""
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def state_dict_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state_dict as CPU numpy arrays (floating tensors as float32)."""
    out = {}
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu")
        if t.is_floating_point():
            t = t.float()
        out[k] = t.numpy().copy()
    return out


def build_vae(module, D: int, num_vals: int, likelihood: str, config: TrainConfig | None = None):
    """`module.VAE(enc, dec, module.MoGPrior(L, K), num_vals, L, likelihood)` with the standard nets.

    `module` is the student's (or the reference's) vae module. Weights are drawn under
    `config.seed`, so the same config gives the same initial networks on both sides.
    """
    config = config or TrainConfig()
    with seeded(config.seed):
        encoder_net, decoder_net = build_mlp_nets(D, config.L, config.M, num_vals, likelihood)
        prior = module.MoGPrior(config.L, config.num_components)
        return module.VAE(encoder_net, decoder_net, prior, num_vals=num_vals, L=config.L, likelihood_type=likelihood)


class _Stop(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def _loss_value(loss, what: str) -> float:
    """The scalar value of a loss the student's forward returned; _Stop if it is unusable or not finite."""
    if not isinstance(loss, torch.Tensor):
        raise _Stop("error", f"{what}: forward returned {type(loss).__name__}, expected a scalar torch.Tensor")
    if loss.numel() != 1:
        raise _Stop("error", f"{what}: forward returned a tensor of shape {tuple(loss.shape)}, expected a scalar")
    if not (loss.is_floating_point() or loss.is_complex()):
        raise _Stop("error", f"{what}: forward returned a {loss.dtype} tensor, expected a floating-point scalar")
    value = float(loss.detach().reshape(()).real)
    if not math.isfinite(value):
        raise _Stop("diverged", f"{what}: the loss is {value}")
    return value


def _describe(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}, in {tb[-1].name})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"


def _validate(model: nn.Module, x_val: torch.Tensor, batch_size: int) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x_val), batch_size):
            total += _loss_value(model(x_val[i:i + batch_size], reduction="sum"), "validation")
    model.train()
    return total / len(x_val)


def train_vae(model: nn.Module, x_train: torch.Tensor, x_val: torch.Tensor, config: TrainConfig | None = None,
              device: str | torch.device = "cpu") -> TrainHistory:
    """Train `model` in place (it ends up with the best weights) and return its history; never raises
    for problems in the model's own code (they end training with stopped_because 'error' or 'diverged')."""
    config = config or TrainConfig()
    if config.num_threads:
        threads = torch.get_num_threads()
        torch.set_num_threads(config.num_threads)
        try:
            return train_vae(model, x_train, x_val, TrainConfig.from_dict({**asdict(config), "num_threads": None}), device)
        finally:
            torch.set_num_threads(threads)
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError(f"need non-empty training and validation data, got {len(x_train)} and {len(x_val)} rows")
    t0 = time.perf_counter()
    hist = TrainHistory()
    x_train = torch.as_tensor(x_train, dtype=torch.float32).to(device)
    x_val = torch.as_tensor(x_val, dtype=torch.float32).to(device)
    g = torch.Generator().manual_seed(config.seed)
    best_state: dict[str, np.ndarray] | None = None
    try:
        model.to(device)
        model.train()
        best_state = state_dict_arrays(model)
    except Exception as e:  # student module code (to/state_dict overridden, ...)
        hist.stopped_because, hist.message = "error", f"preparing the model: {_describe(e)}"
        hist.seconds = time.perf_counter() - t0
        return hist
    best_val, bad_epochs = math.inf, 0
    with seeded(config.seed, device):
        try:
            optimizer = torch.optim.Adamax([p for p in model.parameters() if p.requires_grad], lr=config.lr)
        except Exception as e:
            hist.stopped_because, hist.message = "error", f"creating the optimiser: {_describe(e)}"
            hist.seconds = time.perf_counter() - t0
            hist.state_dict = best_state
            return hist
        stop: _Stop | None = None
        epoch = 0
        while stop is None and epoch < config.max_epochs:
            epoch += 1
            te = time.perf_counter()
            perm = torch.randperm(len(x_train), generator=g).to(device)
            losses = []
            try:
                for i in range(0, len(x_train), config.batch_size):
                    if time.perf_counter() - t0 > config.time_budget_s:
                        stop = _Stop("time_budget", f"time budget of {config.time_budget_s:g} s used up in epoch {epoch} "
                                                    f"after {len(losses)} batches")
                        break
                    loss = model(x_train[perm[i:i + config.batch_size]], reduction="avg")
                    value = _loss_value(loss, f"epoch {epoch}, batch {len(losses) + 1}")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(value)
                    hist.batches += 1
                if not losses:  # the budget ran out before this epoch trained anything
                    epoch -= 1
                    break
                if stop is not None and hist.epochs:
                    # cut mid-epoch: a partial epoch is not a full one. Its updates are not counted (the best
                    # weights of the completed epochs are restored below), so the reference matched to the
                    # student's epochs is trained exactly as far.
                    stop = _Stop(stop.reason, f"{stop.message}; those batches are not counted: the weights are "
                                              f"the best of the {len(hist.epochs)} completed epochs")
                    epoch -= 1
                    break
                val = _validate(model, x_val, config.eval_batch_size)
            except _Stop as s:
                stop = s
                break
            except Exception as e:
                stop = _Stop("error", f"epoch {epoch}: {_describe(e)}")
                break
            hist.epochs.append(epoch)
            hist.train_loss.append(float(np.mean(losses)))
            hist.val_loss.append(val)
            hist.epoch_seconds.append(time.perf_counter() - te)
            if val < best_val:
                best_val, bad_epochs, hist.best_epoch = val, 0, epoch
                best_state = state_dict_arrays(model)
            else:
                bad_epochs += 1
                if bad_epochs >= config.patience and stop is None:
                    stop = _Stop("early_stopping", f"no better validation loss for {bad_epochs} epochs "
                                                   f"(best {best_val:.4f} at epoch {hist.best_epoch})")
        if stop is None:
            stop = _Stop("max_epochs", f"trained the maximum of {config.max_epochs} epochs")
    hist.stopped_because, hist.message = stop.reason, stop.message
    hist.state_dict = best_state
    try:
        model.load_state_dict({k: torch.as_tensor(v) for k, v in best_state.items()})
    except Exception as e:  # keep the history; the weights are in hist.state_dict anyway
        hist.message += f"; could not restore the best weights into the model: {_describe(e)}"
    hist.seconds = time.perf_counter() - t0
    return hist


def train(module, device, config: dict, D: int, num_vals: int, likelihood: str, x_train, x_val) -> dict:
    """The harness (`ctx.harness("vae.train", ...)`): build the student's VAE around the standard networks and
    train it with the course's loop. Returns {"history": TrainHistory.to_dict()} (the best weights in it);
    the grader evaluates them with the reference code and believes none of the student's own numbers."""
    config = TrainConfig.from_dict(dict(config))
    model = build_vae(module, int(D), int(num_vals), str(likelihood), config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"VAE(...) did not build a torch.nn.Module but {type(model).__name__}")
    model = model.to(device)
    return {"history": train_vae(model, x_train, x_val, config, device).to_dict()}
