"""An `arm-transformer` submission with two classic mistakes (an example for the grader's tests and demo):

- the mask is built with tril(..., diagonal=1), so position t also attends to the token t+1 (the future leaks in);
- the attention scores are computed once over all num_emb dimensions and shared by every head (heads all alike).
Everything else (pre-norm, residuals, a SiLU MLP, separate query/key/value layers) is fine."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class TransformerBlock(nn.Module):
    def __init__(self, num_emb, num_neurons, num_heads=4):
        super().__init__()

        # hyperparams
        self.D = num_emb
        self.H = num_heads
        self.neurons = num_neurons

        # components
        self.query = nn.Linear(self.D, self.D)
        self.key = nn.Linear(self.D, self.D)
        self.value = nn.Linear(self.D, self.D)
        self.out = nn.Linear(self.D, self.D)
        self.norm_attn = nn.LayerNorm(self.D)
        self.norm_mlp = nn.LayerNorm(self.D)
        self.fc1 = nn.Linear(self.D, self.neurons)
        self.fc2 = nn.Linear(self.neurons, self.D)

    def forward(self, x, causal=True):
        B, T, D = x.shape
        h = self.norm_attn(x)
        q, k, v = self.query(h), self.key(h), self.value(h)
        att = q @ k.transpose(1, 2) / math.sqrt(D)  # B x T x T, the same for every head
        if causal:
            allowed = torch.tril(torch.ones(T, T, device=x.device), diagonal=1)
            att = att.masked_fill(allowed == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        v = v.view(B, T, self.H, D // self.H).transpose(1, 2)  # B x H x T x D/H
        y = (att.unsqueeze(1) @ v).transpose(1, 2).reshape(B, T, D)
        x = x + self.out(y)
        return x + self.fc2(F.silu(self.fc1(self.norm_mlp(x))))
