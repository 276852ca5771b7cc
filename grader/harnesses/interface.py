"""Harness: the signatures of the student's functions and methods (runs in the child; nothing is
called, only `inspect.signature` is read). Data format and binding rules: grader/signatures.py."""

from __future__ import annotations

from grader.signatures import read_signature


def signatures(module, device, targets=()) -> dict:
    """Harness: {target: signature | {"missing": True} | {"error": ...}} for dotted targets
    ("log_normal_diag", "Encoder.sample") of the student's module."""
    out = {}
    for target in list(targets)[:128]:
        obj, owner = module, None
        try:
            for part in str(target).split("."):
                owner, obj = obj, getattr(obj, part)
        except AttributeError:
            out[target] = {"missing": True}
            continue
        try:
            out[target] = read_signature(obj, owner, str(target).rsplit(".", 1)[-1])
        except (TypeError, ValueError) as e:
            out[target] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return out
