"""Signatures by role: call the student's functions as they are written, charge what the template
truly requires once.

Every `ctx.call` is written against the template's signature (the reference's). Before it is sent,
`rebind` maps it onto the student's own signature (read once per submission in the sandbox by the
`interface.signatures` harness; rules in `grader/signatures.py`): parameters by name, renamed ones
by position, positional-only ones positionally, static and instance methods alike, and a template
parameter the student lacks left out when the call passes the template's default for it.

The rubric's [interface] table lists, per function or method, the template's parameters the
assignment *requires* and those it makes *optional*. When a call needs a listed parameter the
student's function lacks, the call is not made: `NotJudged` stops the check (the engine records a
note; cases judged so far keep their result, and a check with none gets one neutral case), or
a check that wants to go on with its other cases asks `skip_unsupported` first. A missing
required parameter costs points once, in the rubric's `interface` check (`judge_signatures`),
whose message says what to add; a missing optional one costs nothing. A target outside the table
that cannot be bound is called as written (the student's TypeError is then the feedback).
"""

from __future__ import annotations

import types

from typing import TYPE_CHECKING

from grader import signatures as sig

if TYPE_CHECKING:
    from grader.checks import CheckContext

_CACHE_KEY = "interface.signatures"


class NotJudged(Exception):
    """A case needs a parameter the student's signature lacks: it is not judged here (`note` says why)."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


class SignatureError(Exception):
    """The student's function lacks a parameter the template requires (and the rubric's [interface]
    table does not list it, so its own check charges it): the message says what to add."""


def _shown(tmpl: dict, name: str) -> str:
    return f"{name}(" + ", ".join(p if not d else f"{p}=..." for p, d in zip(tmpl["params"], tmpl["defaults"])) + ")"


_TEMPLATES: dict = {}


def template(ctx: "CheckContext", target: str) -> dict | None:
    """The template's (reference's) signature of dotted `target`, or None if it has none. Cached per
    reference module object: a stand-in for the reference (the release recorder's, the self-check's
    replay) may share its name but not its signatures, and must not leave None behind for the real one."""
    key = (id(ctx.ref), ctx.ref.__name__, target)
    if not isinstance(ctx.ref, types.ModuleType):
        key = None
    if key is None or key not in _TEMPLATES:
        obj, owner = ctx.ref, None
        try:
            for part in target.split("."):
                owner, obj = obj, getattr(obj, part)
            found = sig.read_signature(obj, owner, target.rsplit(".", 1)[-1])
        except (AttributeError, TypeError, ValueError):
            found = None
        if key is None:
            return found
        _TEMPLATES[key] = found
    return _TEMPLATES[key]


def _known_targets(ctx: "CheckContext") -> list[str]:
    """Every function and method the checks may call: the [interface] table, the [components]
    targets, and the methods the reference defines on the classes they name."""
    out = set(ctx.rubric.interface)
    for target in ctx.rubric.component_targets.values():
        cls_name = str(target).split(".")[0]
        cls = getattr(ctx.ref, cls_name, None)
        if isinstance(cls, type):
            out |= {f"{cls_name}.{n}" for n, v in vars(cls).items()
                    if callable(getattr(v, "__func__", v)) and (not n.startswith("_") or n == "__init__")}
        else:
            out.add(str(target))
    return sorted(out)


def signatures(ctx: "CheckContext", target: str | None = None) -> dict:
    """{target: signature | {"missing": True} | {"error": ...}} of the rubric's functions and
    methods (`_known_targets`), read in the sandbox once per submission (`target`: also read this
    one if the rubric names it and it is not known yet)."""
    cache = ctx.session.cache.setdefault(_CACHE_KEY, {})
    known = _known_targets(ctx)
    wanted = [t for t in (known if not cache else []) + ([target] if target in known else []) if t not in cache]
    if wanted:
        try:
            cache.update(ctx.harness("interface.signatures", timeout=ctx.call_timeout, targets=wanted))
        except Exception:  # unreadable signatures: every call goes as written
            pass
        for t in wanted:
            cache.setdefault(t, {})
    return cache


def _student(ctx: "CheckContext", target: str) -> dict | None:
    s = signatures(ctx, target).get(target) or {}
    return s if "params" in s else None


def _note(ctx: "CheckContext", target: str, lacking: list[str], case: str) -> str:
    spec = ctx.rubric.interface.get(target) or {}
    where = ("optional in this assignment" if all(m in spec.get("optional", []) for m in lacking)
             else "charged once in the interface check")
    return f"{case}: not judged, `{target}` takes no `{'`, `'.join(lacking)}` ({where})."


def rebind(ctx: "CheckContext", target, args: list, kwargs: dict, grad: dict | None):
    """(args, kwargs, grad) of a template-style call, mapped onto the student's signature of
    `target` (a dotted name, or {"object", "method", "label"}); grad["renamed"] maps the new
    input paths back to the check's ("kwargs.mu_e_arg" -> "kwargs.mu_e"). Raises NotJudged when
    the call needs a parameter of the [interface] table that the student's function lacks."""
    name = target if isinstance(target, str) else str(target.get("label", ""))
    student = _student(ctx, name) if name else None  # (first: the offline self-check knows none, and
    tmpl = template(ctx, name) if student is not None else None  # its reference is a recording)
    if tmpl is None or student is None:
        return args, kwargs, grad
    try:
        lenient = bool(getattr(ctx, "lenient_interface", False)) and name in ctx.rubric.interface
        new_args, new_kwargs, where = sig.bind(tmpl, student, args, kwargs, lenient=lenient)
    except sig.Unbound as e:
        if name in ctx.rubric.interface:
            raise NotJudged(_note(ctx, name, e.missing, "a case")) from None
        lacking = [m for m in e.missing if not tmpl["defaults"][tmpl["params"].index(m)]]
        if lacking:  # a parameter the template gives no default: the component cannot be called at all
            raise SignatureError(f"`{name}` has no parameter for the template's {', '.join(f'`{m}`' for m in lacking)}: "
                                 f"give it the template's parameters ({_shown(tmpl, name)}; names may differ, "
                                 "positions may not)") from None
        return args, kwargs, grad
    except TypeError:  # the check's call does not fit the template: leave it alone
        return args, kwargs, grad
    if grad and grad.get("inputs"):
        positional = [n for n, k in zip(tmpl["params"], tmpl["kinds"]) if k != "kwonly"]
        moved = {}
        for path in grad["inputs"]:
            kind, key = path.split(".", 1)
            tname = positional[int(key)] if kind == "args" else key
            moved[where.get(tname, path)] = path
        grad = {**grad, "inputs": list(moved), "renamed": moved}
    return new_args, new_kwargs, grad


def unsupported(ctx: "CheckContext", target: str, kwargs: dict) -> list[str]:
    """The parameters in `kwargs` (template names) that the student's `target` cannot take and the
    call cannot leave out (they are declared in [interface] and the values are not the template's defaults)."""
    if getattr(ctx, "lenient_interface", False):  # the re-run calls without them (rebind leaves them out)
        return []
    student = _student(ctx, target)
    tmpl = template(ctx, target) if student is not None else None
    if tmpl is None or student is None:
        return []
    declared = set((ctx.rubric.interface.get(target) or {}).get("required", [])) | set(
        (ctx.rubric.interface.get(target) or {}).get("optional", []))
    return [k for k in sig.missing(tmpl, student, [k for k in kwargs if k in declared])
            if not sig._is_default(tmpl, k, kwargs[k])]


def skip_unsupported(ctx: "CheckContext", target: str, kwargs: dict, case: str) -> bool:
    """True (and a note) when the case passes a parameter `target` lacks: it is not judged here."""
    lacking = unsupported(ctx, target, kwargs)
    if not lacking:
        return False
    ctx.notes.append(_note(ctx, target, lacking, case))
    ctx.not_judged += 1
    return True


def finish_if_nothing_judged(ctx: "CheckContext", what: str) -> None:
    """A check whose every case was skipped for a missing parameter records one neutral case (and
    the engine then judges it again, calling without the parameter: CheckContext._lenient_outcome)."""
    if not ctx.cases:
        ctx.nothing_judged = True
        ctx.expect(True, f"{what}: not applicable to your signature (see the notes)")


def judge_signatures(ctx: "CheckContext") -> None:
    """Every function/method of the [interface] table takes the parameters the template requires
    (by name, or renamed at the template's position)."""
    sigs = signatures(ctx)
    for target, spec in sorted(ctx.rubric.interface.items()):
        student, tmpl = sigs.get(target) or {}, template(ctx, target)
        if "params" not in student or tmpl is None:
            continue  # a missing function is charged by its own checks; an unreadable one is not judged
        lacking = sig.missing(tmpl, student, spec["required"])
        shown = _shown(tmpl, target)
        ctx.expect(not lacking, shown,
                   f"has no parameter {', '.join(f'`{m}`' for m in lacking)}: give it the template's parameters "
                   f"({shown}; names may differ, positions may not); the cases of other checks that "
                   "need them are charged here only")
        absent_optional = sig.missing(tmpl, student, spec["optional"])
        if absent_optional:
            ctx.notes.append(f"{target}: no {', '.join(f'`{p}`' for p in absent_optional)} (optional: accepted).")
    if not ctx.cases:
        ctx.expect(True, "no signature to check")
