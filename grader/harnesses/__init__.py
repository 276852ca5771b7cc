"""Grader-side code that runs *inside* the sandboxed child, next to the student's module.

A harness is `fn(module, device, **kwargs) -> plain data` (dicts/lists of numbers, strings and
numpy arrays), called through `CheckContext.harness("<module>.<fn>", ...)`. Typical use: train a
student's model with the course's own loop and return its loss history and weights, which the
grader then evaluates with reference code. Harnesses must hold no solution code (the child can
read them) and must not trust anything the student returns beyond turning it into arrays.
"""

import contextlib

import numpy as np
import torch


@contextlib.contextmanager
def using_threads(n: int | None):
    """Run on `n` intra-op threads, then restore (1 is many times faster than 2 for small nets on
    a busy 2-core CPU); None or 0 leaves the setting alone."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def state_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """A model's floating-point state as float32 numpy arrays (what crosses the sandbox boundary)."""
    return {k: v.detach().to("cpu").float().numpy().copy() for k, v in model.state_dict().items()
            if isinstance(v, torch.Tensor) and v.is_floating_point()}
