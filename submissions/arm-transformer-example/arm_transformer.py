"""A correct `arm-transformer` submission written unlike the reference: post-norm, torch's
nn.MultiheadAttention with a float mask, a ReLU MLP with dropout (as in the original Transformer)."""

import torch
import torch.nn as nn


class TransformerBlock(nn.Module):
    def __init__(self, num_emb, num_neurons, num_heads=4):
        super().__init__()

        # hyperparams
        self.D = num_emb  # the embedding size
        self.H = num_heads  # the number of heads
        self.neurons = num_neurons  # the number of neurons in MLP

        # components
        self.msha = nn.MultiheadAttention(embed_dim=self.D, num_heads=self.H, batch_first=True)
        self.layer_norm1 = nn.LayerNorm(self.D)
        self.layer_norm2 = nn.LayerNorm(self.D)
        self.mlp = nn.Sequential(nn.Linear(self.D, self.neurons), nn.ReLU(), nn.Dropout(0.1),
                                 nn.Linear(self.neurons, self.D))

    def forward(self, x, causal=True):
        T = x.shape[1]
        mask = None
        if causal:  # -inf above the diagonal: query t ignores keys s > t
            mask = torch.full((T, T), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        attn, _ = self.msha(x, x, x, attn_mask=mask, need_weights=False)
        x = self.layer_norm1(x + attn)
        return self.layer_norm2(x + self.mlp(x))
