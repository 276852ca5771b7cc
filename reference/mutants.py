"""Known mistakes as mutants: small functions that replace one component of a reference module.

Each assignment's `reference/<name>_mistakes.py` makes its own registry,

    MUTANTS, mutant = registry()

    @mutant("variance_squared", "Encoder.reparameterization")
    def _(mu, log_var):
        return mu + torch.exp(log_var) * torch.randn_like(mu)

and the grader patches `fn` in place of `component` ("function" or "Class.method" of the reference)
to see whether a student's wrong output is that mistake. Each id needs a [[mistakes]] entry with
its message in the assignment's rubric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Mutant:
    id: str
    component: str  # dotted name in the reference module of what `fn` replaces
    fn: Callable  # same signature as what it replaces


def registry() -> tuple[dict[str, Mutant], Callable[[str, str], Callable[[Callable], Callable]]]:
    """A fresh `MUTANTS` dict and the `@mutant(id, component)` decorator that fills it."""
    mutants: dict[str, Mutant] = {}

    def mutant(id: str, component: str) -> Callable[[Callable], Callable]:
        def register(fn: Callable) -> Callable:
            if id in mutants:
                raise ValueError(f"duplicate mutant id {id!r}")
            fn.__name__ = fn.__qualname__ = id  # readable in tracebacks and reprs
            mutants[id] = Mutant(id, component, fn)
            return fn
        return register

    return mutants, mutant
