"""Known mistakes of the `arm-transformer` assignment, as mutants of the reference (reference/arm_transformer.py).

`MUTANTS: dict[str, Mutant]`; each replaces `TransformerBlock.attention` (same signature) with one classic
mistake of a causal multi-head self-attention. The checks name a mistake when the student's block shows the
same property signature as the mutant (grader/checks/arm_transformer.py `_name_mistake`); each needs a
[[mistakes]] entry (same id) with its message in rubrics/arm-transformer.toml.
"""

from __future__ import annotations

import math

import torch

from reference.mutants import registry

MUTANTS, mutant = registry()


def _heads(self, x):
    B, T, D = x.shape
    H, d = self.H, D // self.H
    q, k, v = self.qkv(x).split(D, dim=2)
    return (t.view(B, T, H, d).transpose(1, 2) for t in (q, k, v))


def _combine(self, weights, v):
    B, H, T, d = v.shape
    return self.proj((weights @ v).transpose(1, 2).reshape(B, T, H * d))


@mutant("no_causal_mask", "TransformerBlock.attention")
def _(self, x, causal=True):
    q, k, v = _heads(self, x)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # `causal` never used
    return _combine(self, torch.softmax(scores, dim=-1), v)


@mutant("mask_lets_next_in", "TransformerBlock.attention")
def _(self, x, causal=True):
    q, k, v = _heads(self, x)
    T = x.shape[1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(2), float("-inf"))
    return _combine(self, torch.softmax(scores, dim=-1), v)


@mutant("mask_hides_self", "TransformerBlock.attention")
def _(self, x, causal=True):
    q, k, v = _heads(self, x)
    T = x.shape[1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:  # masks s >= t: the first position has no key left
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(0), float("-inf"))
    return _combine(self, torch.softmax(scores, dim=-1), v)


@mutant("softmax_over_queries", "TransformerBlock.attention")
def _(self, x, causal=True):
    q, k, v = _heads(self, x)
    T = x.shape[1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
    return _combine(self, torch.softmax(scores, dim=-2), v)


@mutant("always_causal", "TransformerBlock.attention")
def _(self, x, causal=True):
    q, k, v = _heads(self, x)
    T = x.shape[1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
    return _combine(self, torch.softmax(scores, dim=-1), v)


@mutant("heads_alike", "TransformerBlock.attention")
def _(self, x, causal=True):
    B, T, D = x.shape
    q, k, v = self.qkv(x).split(D, dim=2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # one B×T×T pattern over all D dimensions, shared by every head
    if causal:
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
    weights = torch.softmax(scores, dim=-1).unsqueeze(1)  # B×1×T×T
    vh = v.view(B, T, self.H, D // self.H).transpose(1, 2)
    return _combine(self, weights.expand(B, self.H, T, T), vh)
