"""Small networks described as data, so grader and child build identical ones.

A spec is `{"layers": [["linear", in, out], ["leaky_relu"], ...], "state": {name: array}}`.
The grader builds the reference's net from the same spec, so both sides compute with the same
weights without any object crossing the boundary.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_ACTIVATIONS = {"leaky_relu": nn.LeakyReLU, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity}


def build(spec: dict, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> nn.Sequential:
    layers = []
    for layer in spec["layers"]:
        kind, *args = layer
        if kind == "linear":
            layers.append(nn.Linear(int(args[0]), int(args[1])))
        elif kind in _ACTIVATIONS:
            layers.append(_ACTIVATIONS[kind]())
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    net = nn.Sequential(*layers)
    state = spec.get("state")
    if state:
        net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})
    return net.to(device=device, dtype=dtype)


def mlp_spec(sizes: list[int], seed: int, activation: str = "leaky_relu", scale: float = 1.0) -> dict:
    """An MLP spec with deterministic random weights: Linear(sizes[i], sizes[i+1]) between activations."""
    layers: list[list] = []
    for i in range(len(sizes) - 1):
        if i:
            layers.append([activation])
        layers.append(["linear", sizes[i], sizes[i + 1]])
    g = torch.Generator().manual_seed(seed)
    torch_layers = []
    for layer in layers:
        if layer[0] == "linear":
            lin = nn.Linear(layer[1], layer[2])
            bound = scale / np.sqrt(layer[1])
            with torch.no_grad():
                lin.weight.copy_((torch.rand(lin.weight.shape, generator=g) * 2 - 1) * bound)
                lin.bias.copy_((torch.rand(lin.bias.shape, generator=g) * 2 - 1) * bound)
            torch_layers.append(lin)
        else:
            torch_layers.append(nn.Identity())
    state = {k: v.detach().numpy().copy() for k, v in nn.Sequential(*torch_layers).state_dict().items()}
    return {"layers": layers, "state": state}


# Layers a constructor may be specified with, described as plain data ([class name, kwargs]) so the
# child can build the specified layers of a student's object whose own constructor fails
# (grader.sandbox.child `_rebuild`); the grader describes them from the reference (`describe_layer`).
LAYER_KINDS = {"Linear": ("in_features", "out_features"),
               "Conv1d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
               "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
               "ConvTranspose1d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding",
                                   "dilation", "groups"),
               "ConvTranspose2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding",
                                   "dilation", "groups")}


def describe_layer(layer: nn.Module) -> list | None:
    """[class name, constructor kwargs] of a torch layer of a kind in LAYER_KINDS, else None."""
    kind = type(layer).__name__
    if kind not in LAYER_KINDS or type(layer) is not getattr(nn, kind):
        return None
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k in LAYER_KINDS[kind] for v in [getattr(layer, k)]}
    kwargs["bias"] = layer.bias is not None
    return [kind, kwargs]
