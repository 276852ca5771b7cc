"""Harness: the parameter names of the student's functions and methods (runs in the child).

`signatures(module, device, targets=[...])` -> {target: {"params": [...], "varkw": bool} or
{"missing": True} or {"error": "..."}} for dotted targets ("log_normal_diag", "Encoder.sample").
Nothing is called: only `inspect.signature` is read. `self` of an instance method is dropped so
that static and instance methods read alike.
"""

from __future__ import annotations

import inspect


def signatures(module, device, targets=()) -> dict:
    out = {}
    for target in list(targets)[:64]:
        obj, owner = module, None
        try:
            for part in str(target).split("."):
                owner, obj = obj, getattr(obj, part)
        except AttributeError:
            out[target] = {"missing": True}
            continue
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError) as e:
            out[target] = {"error": f"{type(e).__name__}: {e}"[:300]}
            continue
        params = list(sig.parameters.values())
        if inspect.isclass(owner) and params and params[0].name == "self" \
                and not isinstance(inspect.getattr_static(owner, target.rsplit(".", 1)[-1]), staticmethod):
            params = params[1:]
        out[target] = {"params": [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)],
                       "varkw": any(p.kind == p.VAR_KEYWORD for p in params)}
    return out
