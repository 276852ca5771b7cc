"""Known mistakes of the `arm-transformer` assignment, as mutants of the reference (reference/arm_transformer.py).

`MUTANTS: dict[str, Mutant]`; each replaces `TransformerBlock.attention` (same signature) with one classic
mistake of a causal multi-head self-attention, written self-contained (the tests plant a mutant's source in a
copy of the reference). The checks name a mistake when the student's block shows the same property signature
as the mutant (grader/checks/arm_transformer.py `_name_mistake`); each needs a [[mistakes]] entry (same id)
with its message in rubrics/arm-transformer.toml.
"""

from __future__ import annotations

import math

import torch

from reference.mutants import registry

MUTANTS, mutant = registry()


@mutant("no_causal_mask", "TransformerBlock.attention")
def _(self, x, causal=True):
    B, T, D = x.shape
    q, k, v = (t.view(B, T, self.H, D // self.H).transpose(1, 2) for t in self.qkv(x).split(D, dim=2))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.H)  # `causal` never used
    return self.proj((torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, D))


@mutant("mask_lets_next_in", "TransformerBlock.attention")
def _(self, x, causal=True):
    B, T, D = x.shape
    q, k, v = (t.view(B, T, self.H, D // self.H).transpose(1, 2) for t in self.qkv(x).split(D, dim=2))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.H)
    if causal:  # masks s > t + 1 only
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(2), float("-inf"))
    return self.proj((torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, D))


@mutant("mask_hides_self", "TransformerBlock.attention")
def _(self, x, causal=True):
    B, T, D = x.shape
    q, k, v = (t.view(B, T, self.H, D // self.H).transpose(1, 2) for t in self.qkv(x).split(D, dim=2))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.H)
    if causal:  # masks s >= t: the first position has no key left
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(0), float("-inf"))
    return self.proj((torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, D))


@mutant("softmax_over_queries", "TransformerBlock.attention")
def _(self, x, causal=True):
    B, T, D = x.shape
    q, k, v = (t.view(B, T, self.H, D // self.H).transpose(1, 2) for t in self.qkv(x).split(D, dim=2))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.H)
    if causal:
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
    return self.proj((torch.softmax(scores, dim=-2) @ v).transpose(1, 2).reshape(B, T, D))


@mutant("always_causal", "TransformerBlock.attention")
def _(self, x, causal=True):
    B, T, D = x.shape
    q, k, v = (t.view(B, T, self.H, D // self.H).transpose(1, 2) for t in self.qkv(x).split(D, dim=2))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.H)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
    return self.proj((torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, D))


@mutant("heads_alike", "TransformerBlock.attention")
def _(self, x, causal=True):
    B, T, D = x.shape
    q, k, v = self.qkv(x).split(D, dim=2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # one B×T×T pattern over all D dimensions, shared by every head
    if causal:
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
    v = v.view(B, T, self.H, D // self.H).transpose(1, 2)
    return self.proj((torch.softmax(scores, dim=-1).unsqueeze(1) @ v).transpose(1, 2).reshape(B, T, D))
