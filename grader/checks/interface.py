"""Signatures by the rubric: charge a missing required parameter once, never a missing optional one.

The rubric's [interface] table lists, per function or method, the parameters the assignment's
template requires and those it makes optional. an interface check (a rubric entry of its own)
(`judge_signatures`) reads the student's signatures in the sandbox and charges each missing required parameter there,
with a message saying what to add. The maths checks ask `skip_unsupported` before a case that
passes a keyword the student's function does not take: such a case is not judged (a note says
why), so the same gap is never charged twice, and an optional one never at all.
"""

from __future__ import annotations

from grader.checks import CheckContext

_CACHE_KEY = "interface.signatures"


def signatures(ctx: CheckContext) -> dict:
    """{target: {"params": [...], "varkw": bool} | {"missing": True} | {"error": ...}} for every
    target of the rubric's [interface] table, read once per submission (in the sandbox)."""
    cache = ctx.session.cache
    if _CACHE_KEY not in cache:
        targets = sorted(ctx.rubric.interface)
        try:
            cache[_CACHE_KEY] = ctx.harness("interface.signatures", timeout=ctx.call_timeout, targets=targets) if targets else {}
        except Exception:  # unreadable signatures: judge every case as before
            cache[_CACHE_KEY] = {}
    return cache[_CACHE_KEY]


def unsupported(ctx: CheckContext, target: str, kwargs: dict) -> list[str]:
    """The keywords in `kwargs` that the student's `target` does not accept (declared in [interface])."""
    sig = signatures(ctx).get(target) or {}
    declared = set((ctx.rubric.interface.get(target) or {}).get("required", [])) | set(
        (ctx.rubric.interface.get(target) or {}).get("optional", []))
    if "params" not in sig or sig.get("varkw"):
        return []
    return [k for k in kwargs if k in declared and k not in sig["params"]]


def skip_unsupported(ctx: CheckContext, target: str, kwargs: dict, case: str) -> bool:
    """True (and a note) when the case passes a keyword `target` lacks: it is not judged here."""
    missing = unsupported(ctx, target, kwargs)
    if not missing:
        return False
    spec = ctx.rubric.interface.get(target) or {}
    where = ("optional in this assignment" if all(m in spec.get("optional", []) for m in missing)
             else "charged once in the interface check")
    ctx.notes.append(f"{case}: not judged, `{target}` takes no `{'`, `'.join(missing)}` ({where}).")
    return True


def finish_if_nothing_judged(ctx: CheckContext, what: str) -> None:
    """A check whose every case was skipped for a missing keyword records one neutral case."""
    if not ctx.cases:
        ctx.expect(True, f"{what}: not applicable to your signature (see the notes)")


def judge_signatures(ctx: CheckContext) -> None:
    """Every function/method of the [interface] table takes the parameters the template requires."""
    sigs = signatures(ctx)
    for target, spec in sorted(ctx.rubric.interface.items()):
        sig = sigs.get(target) or {}
        if "params" not in sig:
            continue  # a missing function is charged by its own checks; an unreadable one is not judged
        if sig.get("varkw"):
            ctx.expect(True, f"{target}: accepts **kwargs")
            continue
        params = sig["params"]
        missing = [p for p in spec["required"] if p not in params]
        wanted = ", ".join(spec["required"] + [f"{p}=None" for p in spec["optional"] if p not in spec["required"]])
        ctx.expect(not missing, f"{target}({wanted})",
                   f"has no parameter {', '.join(f'`{m}`' for m in missing)}: give it the template's parameters "
                   f"({wanted}); the cases of other checks that need them are charged here only")
        absent_optional = [p for p in spec["optional"] if p not in params]
        if absent_optional:
            ctx.notes.append(f"{target}: no {', '.join(f'`{p}`' for p in absent_optional)} (optional: accepted).")
    if not ctx.cases:
        ctx.expect(True, "no signature to check")
