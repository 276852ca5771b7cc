"""Reference implementation of the `arm-transformer` assignment: the transformer block of a
decoder-transformer autoregressive model (Deep Generative Modeling, Assignment 1; the course's
notebook is jmtomczak/intro_dgm, teaching/assignments_examples/assignment_1).

Students write `TransformerBlock`; the course gives the rest (the token and positional embeddings,
the stack of blocks, the logits, the NLL and the sampler). That given code lives once, in
grader/harnesses/arm_transformer.py (`DecoderTransformer`, `LossFun`), because it runs in the
sandbox around the student's block; the grader runs the same code around this reference block.

Contract of the block: `TransformerBlock(num_emb, num_neurons, num_heads)` maps x of shape
B×T×D (D = num_emb, a multiple of num_heads) to B×T×D in x's dtype, position-wise except for
multi-head self-attention; with `causal=True` (the default: the course's decoder calls `block(x)`)
output t depends on x[:, :t+1] only. Any reasonable block is correct (pre- or post-norm, any
activation, `nn.MultiheadAttention` or hand-written attention): the checks test properties, not
these exact values. This one is GPT-2's pre-norm block: x + MHA(LN(x)), then + MLP(LN(·)).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: multi-head causal self-attention and a GELU MLP, each with a residual."""

    def __init__(self, num_emb, num_neurons, num_heads=4):
        super().__init__()

        # hyperparams
        self.D = num_emb  # the embedding size
        self.H = num_heads  # the number of heads
        self.neurons = num_neurons  # the number of neurons in MLP

        # components
        # BEGIN SOLUTION
        if num_emb % num_heads:
            raise ValueError(f"num_emb ({num_emb}) must be a multiple of num_heads ({num_heads})")
        self.ln1 = nn.LayerNorm(num_emb)
        self.qkv = nn.Linear(num_emb, 3 * num_emb)  # queries, keys and values of all heads at once
        self.proj = nn.Linear(num_emb, num_emb)  # the heads' outputs mixed back into D dimensions
        self.ln2 = nn.LayerNorm(num_emb)
        self.mlp = nn.Sequential(nn.Linear(num_emb, num_neurons), nn.GELU(), nn.Linear(num_neurons, num_emb))
        # END SOLUTION

    def attention(self, x, causal=True):
        """Multi-head self-attention of x (B×T×D) -> B×T×D; with `causal`, position t attends to positions <= t."""
        # BEGIN SOLUTION
        B, T, D = x.shape
        H, d = self.H, D // self.H
        q, k, v = self.qkv(x).split(D, dim=2)
        q, k, v = (t.view(B, T, H, d).transpose(1, 2) for t in (q, k, v))  # B×H×T×d
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # B×H×T×T: query t (rows), key s (columns)
        if causal:
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # s > t
            scores = scores.masked_fill(future, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # over the keys
        out = (weights @ v).transpose(1, 2).reshape(B, T, D)
        return self.proj(out)
        # END SOLUTION

    def forward(self, x, causal=True):
        """x: B×T×D -> B×T×D (x's dtype)."""
        # BEGIN SOLUTION
        x = x + self.attention(self.ln1(x), causal=causal)
        return x + self.mlp(self.ln2(x))
        # END SOLUTION
