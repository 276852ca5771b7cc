"""Harnesses of the `arm-transformer` assignment: the course's given code around the student's block.

The course (Deep Generative Modeling, Assignment 1) gives students the decoder-transformer, the NLL
and the training loop; they write `TransformerBlock`. That given code is here, once: it runs in the
sandboxed child around `module.TransformerBlock`, and in the grader around the reference's block
(`module = reference.arm_transformer`), so both are trained and evaluated by the same lines.
No solution code here. Results are plain data (numbers, lists, numpy arrays): the grader computes
the metrics from them (bits per token from the returned log-probabilities, never the student's own
loss values) and checks that those log-probabilities are normalised and causal.
"""

from __future__ import annotations

import copy
import itertools
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grader.harnesses import using_threads


# ---- the course's given code (assignment_1 notebook: LossFun, DecoderTransformer) --------------------

class LossFun(nn.Module):
    """The course's NLL: y_model B×T×V log-probabilities, y_true B×T token ids; 'sum' over everything,
    'mean' of the per-sequence sums."""

    def __init__(self):
        super().__init__()
        self.loss = nn.NLLLoss(reduction="none")

    def forward(self, y_model, y_true, reduction="sum"):
        B, T, V = y_model.size()
        loss_matrix = self.loss(y_model.view(B * T, V), y_true.view(B * T))
        if reduction == "sum":
            return torch.sum(loss_matrix)
        if reduction == "mean":
            return torch.mean(torch.sum(loss_matrix.view(B, T), 1))
        raise ValueError("Reduction could be either `sum` or `mean`.")


class DecoderTransformer(nn.Module):
    """The course's decoder-transformer with `block` (the student's TransformerBlock class) as its blocks.

    Token ids B×T (the first one is the start token num_token_vals − 1) -> log-probabilities B×T×V of the
    next token; `forward` is the NLL of x[:, 1:] given x[:, :-1]. As in the course, the blocks are
    called as `block(x)`: their default must be causal."""

    def __init__(self, block, num_tokens, num_token_vals, num_emb, num_neurons, num_heads=2, dropout_prob=0.1,
                 num_blocks=10, device="cpu"):
        super().__init__()
        self.device = device
        self.num_tokens = num_tokens
        self.num_token_vals = num_token_vals
        self.num_emb = num_emb
        self.num_blocks = num_blocks
        self.embedding = nn.Embedding(num_token_vals, num_emb)
        self.positional_embedding = nn.Embedding(num_tokens, num_emb)
        self.transformer_blocks = nn.ModuleList()
        for _ in range(num_blocks):
            b = block(num_emb=num_emb, num_neurons=num_neurons, num_heads=num_heads)
            if not isinstance(b, nn.Module):
                raise TypeError(f"TransformerBlock(...) built a {type(b).__name__}, not a torch.nn.Module")
            self.transformer_blocks.append(b)
        self.logits = nn.Sequential(nn.Linear(num_emb, num_token_vals))
        self.dropout = nn.Dropout(dropout_prob)
        self.loss_fun = LossFun()

    def transformer_forward(self, x, causal=True, temperature=1.0):
        x = self.embedding(x)
        pos = torch.arange(0, x.shape[1], dtype=torch.long).unsqueeze(0).to(self.device)
        x = self.dropout(x + self.positional_embedding(pos))
        for i in range(self.num_blocks):
            x = self.transformer_blocks[i](x)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"TransformerBlock.forward returned a {type(x).__name__}, not a tensor")
        return F.log_softmax(self.logits(x) / temperature, 2)

    @torch.no_grad()
    def sample(self, batch_size=4, temperature=1.0):
        x_seq = np.asarray([[self.num_token_vals - 1] for _ in range(batch_size)])
        for i in range(self.num_tokens - 1):
            xx = torch.tensor(x_seq, dtype=torch.long, device=self.device)
            x_log_probs = self.transformer_forward(xx, temperature=temperature)
            x_i_sample = torch.multinomial(torch.exp(x_log_probs[:, i]), 1).to(self.device)
            x_seq = np.concatenate((x_seq, x_i_sample.to("cpu").detach().numpy()), 1)
        return x_seq

    def forward(self, x, causal=True, temperature=1.0, reduction="mean"):
        log_prob = self.transformer_forward(x, causal=causal, temperature=temperature)
        return self.loss_fun(log_prob[:, :-1].contiguous(), x[:, 1:].contiguous(), reduction=reduction)


def _block_class(module):
    cls = getattr(module, "TransformerBlock", None)
    if not isinstance(cls, type):
        raise TypeError("the submission defines no class `TransformerBlock`")
    return cls


def build_decoder(module, device, num_tokens: int, num_token_vals: int, num_emb: int, num_neurons: int,
                  num_heads: int, num_blocks: int, dropout_prob: float = 0.1, seed: int = 0) -> DecoderTransformer:
    torch.manual_seed(int(seed))
    model = DecoderTransformer(_block_class(module), num_tokens=int(num_tokens), num_token_vals=int(num_token_vals),
                               num_emb=int(num_emb), num_neurons=int(num_neurons), num_heads=int(num_heads),
                               dropout_prob=float(dropout_prob), num_blocks=int(num_blocks), device=device)
    return model.to(device)


def _np(t: torch.Tensor) -> np.ndarray:
    with torch._C.DisableTorchFunctionSubclass():
        return torch.Tensor.numpy(torch.Tensor.cpu(torch.Tensor.detach(t)).to(torch.float64)).copy()


# ---- unit level: the course's NLL and sampler with the student's block ------------------------------

def all_sequences(num_tokens: int, num_token_vals: int) -> np.ndarray:
    """Every sequence the decoder can emit: the start token num_token_vals − 1, then any of V values
    at each of the num_tokens − 1 positions (V^(num_tokens − 1) rows, lexicographic order)."""
    rest = np.asarray(list(itertools.product(range(num_token_vals), repeat=num_tokens - 1)), dtype=np.int64)
    return np.concatenate([np.full((len(rest), 1), num_token_vals - 1, dtype=np.int64), rest], axis=1)


def decoder_nll(module, device, num_tokens: int = 4, num_token_vals: int = 4, num_emb: int = 16,
                num_neurons: int = 32, num_heads: int = 4, num_blocks: int = 2, seed: int = 0,
                num_threads: int = 1) -> dict:
    """The course's decoder with the student's block (eval mode): its NLL (reduction 'sum') of every
    possible sequence, one at a time, and of all at once with 'sum' and 'mean'; whether the loss's
    gradient reaches every block; the next-token log-probabilities of every sequence.

    Returns {"nll": (S,), "sum": float, "mean": float, "log_probs": S×T×V, "blocks_without_grad": [i, ...]}."""
    with using_threads(num_threads):
        model = build_decoder(module, device, num_tokens, num_token_vals, num_emb, num_neurons, num_heads,
                              num_blocks, seed=seed)
        x = torch.from_numpy(all_sequences(num_tokens, num_token_vals)).to(device)
        model.eval()
        with torch.no_grad():
            nll = [float(model.forward(x[i:i + 1], reduction="sum")) for i in range(len(x))]
            log_probs = model.transformer_forward(x)
        loss = model.forward(x, reduction="sum")
        model.zero_grad()
        loss.backward()
        stuck = [i for i, b in enumerate(model.transformer_blocks)
                 if not any(p.grad is not None and bool(torch.any(p.grad != 0)) for p in b.parameters())]
        with torch.no_grad():
            mean = float(model.forward(x, reduction="mean"))
        return {"nll": np.asarray(nll), "sum": float(loss.detach()), "mean": mean, "log_probs": _np(log_probs),
                "blocks_without_grad": stuck}


def decoder_samples(module, device, n: int = 4000, num_tokens: int = 4, num_token_vals: int = 4, num_emb: int = 16,
                    num_neurons: int = 32, num_heads: int = 4, num_blocks: int = 2, seed: int = 0,
                    sample_seed: int = 1, num_threads: int = 1) -> dict:
    """`n` sequences from the course's sampler (eval mode) with the student's block, built as in `decoder_nll`
    (same seed: the same weights). Returns {"samples": n×num_tokens int64}."""
    with using_threads(num_threads):
        model = build_decoder(module, device, num_tokens, num_token_vals, num_emb, num_neurons, num_heads,
                              num_blocks, seed=seed)
        model.eval()
        torch.manual_seed(int(sample_seed))
        out = model.sample(batch_size=int(n))
        return {"samples": np.asarray(out, dtype=np.int64)}


# ---- model level: the course's training loop ----------------------------------------------------------

def train_and_evaluate(module, device, x_train, x_val, x_eval, num_tokens: int, num_token_vals: int, num_emb: int,
                       num_neurons: int, num_heads: int, num_blocks: int, dropout_prob: float = 0.1,
                       lr: float = 1e-3, batch_size: int = 32, max_epochs: int = 20, max_patience: int = 3,
                       time_budget_s: float = 60.0, num_samples: int = 64, eval_batch_size: int = 256, seed: int = 0,
                       num_threads: int = 1) -> dict:
    """The course's `training`: AdamW (lr 1e-3), batches of 32, the mean per-sequence NLL, the model with the best
    validation NLL kept, early stopping after `max_patience` epochs without improvement, here also after the epoch
    that ends past `time_budget_s`. Then, with the best model (eval mode): the next-token log-probabilities of every
    row of `x_eval` (in batches of `eval_batch_size`, in the order given), and `num_samples` samples.

    x_*: N×num_tokens int64 (start token first); `x_eval` is the grader's mix of test rows and probes
    (grader/checks/arm_transformer_model.py: `EvalSet`): nothing here knows which is which, and nothing is derived
    from the log-probabilities here. Returns {"history": {"val_nll": [...] (nats per sequence), "epochs": [1, ..., n],
    "seconds": t, "stopped_because": "max_epochs" | "early_stopping" | "time_budget" | "diverged"} (grader/history.py),
    "log_probs": M×(T−1)×V float32 (row i, position t: log p(token t+1 = v | tokens ≤ t)), "samples": num_samples×T,
    "error": "" | message}."""
    with using_threads(num_threads):
        return _train_and_evaluate(module, device, x_train, x_val, x_eval, num_tokens, num_token_vals, num_emb,
                                   num_neurons, num_heads, num_blocks, dropout_prob, lr, batch_size, max_epochs,
                                   max_patience, time_budget_s, num_samples, eval_batch_size, seed)


def _nll(model, x, batch_size: int) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            total += float(model.forward(x[i:i + batch_size], reduction="sum"))
    return total / max(len(x), 1)


def _train_and_evaluate(module, device, x_train, x_val, x_eval, num_tokens, num_token_vals, num_emb, num_neurons,
                        num_heads, num_blocks, dropout_prob, lr, batch_size, max_epochs, max_patience, time_budget_s,
                        num_samples, eval_batch_size, seed) -> dict:
    model = build_decoder(module, device, num_tokens, num_token_vals, num_emb, num_neurons, num_heads, num_blocks,
                          dropout_prob=dropout_prob, seed=seed)
    x_train, x_val, x_eval = (t.long().to(device) for t in (x_train, x_val, x_eval))
    params = [p for p in model.parameters() if p.requires_grad]
    history = {"val_nll": [], "epochs": [], "seconds": 0.0, "stopped_because": "max_epochs"}
    if not params:
        return {"history": history, "error": "the model has no parameters to train"}
    optimizer = torch.optim.AdamW(params, lr=float(lr))
    g = torch.Generator().manual_seed(int(seed))
    best, best_nll, patience = None, math.inf, 0
    t0 = time.monotonic()
    for e in range(int(max_epochs)):
        model.train()
        perm = torch.randperm(len(x_train), generator=g).to(device)
        for i in range(0, len(x_train), int(batch_size)):
            loss = model.forward(x_train[perm[i:i + int(batch_size)]])
            if not isinstance(loss, torch.Tensor) or not torch.isfinite(loss):
                history["stopped_because"] = "diverged"
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if history["stopped_because"] == "diverged":
            break
        val = _nll(model, x_val, 256)
        history["val_nll"].append(val)
        history["epochs"].append(e + 1)
        if val < best_nll:
            best, best_nll, patience = copy.deepcopy(model.state_dict()), val, 0
        else:
            patience += 1
        if patience > int(max_patience):
            history["stopped_because"] = "early_stopping"
            break
        if time.monotonic() - t0 > float(time_budget_s):
            history["stopped_because"] = "time_budget"
            break
    history["seconds"] = time.monotonic() - t0
    if best is None:
        return {"history": history, "error": "training produced no model with a finite validation NLL"}
    model.load_state_dict(best)
    model.eval()
    out = {"history": history, "error": ""}
    step = max(1, int(eval_batch_size))
    with torch.no_grad():
        log_probs = [model.transformer_forward(x_eval[i:i + step])[:, :-1] for i in range(0, len(x_eval), step)]
        out["log_probs"] = _np(torch.cat(log_probs)).astype(np.float32)
        torch.manual_seed(int(seed) + 2)
        out["samples"] = np.asarray(model.sample(batch_size=int(num_samples)), dtype=np.int64)
    return out
