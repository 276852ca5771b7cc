"""Signatures by role: read a student's parameters and bind a template-style call onto them.

Pure Python, used on both sides of the sandbox: in the child (the `interface.signatures` harness,
stand-in proxies, and harness loops that call student functions with the template's keywords)
and in the grader (`CheckContext.call` rebinds every call before it is sent;
`grader/checks/interface.py` judges the signatures; stand-in upcalls are mapped onto the
reference's). Nothing here calls student code: only `inspect.signature` is read.

A *signature* is plain data: {"params": [name, ...], "kinds": ["posonly" | "pos" | "kwonly", ...],
"defaults": [bool, ...], "varargs": bool, "varkw": bool}; `self` of an instance method is dropped,
so that static and instance methods read alike.

`bind(template, student, args, kwargs)` maps a call written against the template's signature
onto the student's: a template parameter is the student's parameter of the same name, or else the
student's parameter at the same position when that one's name is not a template name (a renamed
parameter). Values go positionally as long as the student's positional parameters line up, and
by the student's keyword after that (positional-only parameters always positionally). A template
parameter the student lacks is left out when the call passes the template's default for it, and
makes the call unbindable (`Unbound`, naming it) otherwise.
"""

from __future__ import annotations

import inspect

_KIND = {inspect.Parameter.POSITIONAL_ONLY: "posonly", inspect.Parameter.POSITIONAL_OR_KEYWORD: "pos",
         inspect.Parameter.KEYWORD_ONLY: "kwonly"}
_SIMPLE = (bool, int, float, str, type(None))


class Unbound(Exception):
    """The call needs template parameters the student's signature lacks (`missing`, template names)."""

    def __init__(self, missing: list[str]):
        super().__init__(", ".join(missing))
        self.missing = list(missing)


def read_signature(obj, owner=None, name: str = "") -> dict:
    """The signature data of callable `obj` (found as attribute `name` of class `owner`, if any)."""
    sig = inspect.signature(obj)
    params = list(sig.parameters.values())
    if inspect.isclass(owner) and params and params[0].name in ("self", "cls") \
            and not isinstance(inspect.getattr_static(owner, name, None), staticmethod):
        params = params[1:]
    named = [p for p in params if p.kind in _KIND]
    return {"params": [p.name for p in named], "kinds": [_KIND[p.kind] for p in named],
            "defaults": [p.default is not inspect.Parameter.empty for p in named],
            "default_values": [p.default if isinstance(p.default, _SIMPLE) else None for p in named],
            "simple_defaults": [isinstance(p.default, _SIMPLE) and p.default is not inspect.Parameter.empty
                                for p in named],
            "varargs": any(p.kind == p.VAR_POSITIONAL for p in params),
            "varkw": any(p.kind == p.VAR_KEYWORD for p in params)}


def template_values(template: dict, args, kwargs) -> dict:
    """{template name: value} of a call written against `template` (raises TypeError if it does not fit)."""
    positional = [n for n, k in zip(template["params"], template["kinds"]) if k != "kwonly"]
    if len(args) > len(positional):
        raise TypeError(f"{len(args)} positional arguments for {len(positional)} positional parameters")
    named = dict(zip(positional, args))
    for k, v in kwargs.items():
        if k not in template["params"] or k in named:
            raise TypeError(f"unexpected or repeated argument {k!r}")
        named[k] = v
    return named


def mapping(template: dict, student: dict) -> dict:
    """{template name: student parameter index} for the template parameters the student has."""
    t_names, s_names = template["params"], student["params"]
    t_pos = [n for n, k in zip(t_names, template["kinds"]) if k != "kwonly"]
    s_pos = [i for i, k in enumerate(student["kinds"]) if k != "kwonly"]
    out = {}
    for name in t_names:
        if name in s_names:
            out[name] = s_names.index(name)
        elif name in t_pos and t_pos.index(name) < len(s_pos):
            i = s_pos[t_pos.index(name)]
            if s_names[i] not in t_names:
                out[name] = i
    return out


def missing(template: dict, student: dict, names) -> list[str]:
    """The template parameters among `names` that the student's signature cannot take."""
    if student.get("varkw") or (student.get("varargs") and not student["params"]):
        return []
    found = mapping(template, student)
    return [n for n in names if n not in found and n not in student["params"]]


def _is_default(template: dict, name: str, value) -> bool:
    if name not in template["params"]:
        return False
    i = template["params"].index(name)
    if not template["defaults"][i]:
        return False
    d = template["default_values"][i]
    return isinstance(value, _SIMPLE) and type(value) is type(d) and value == d


def bind(template: dict, student: dict, args, kwargs, lenient: bool = False) -> tuple[list, dict, dict]:
    """(args, kwargs, where) for calling the student's function with a call written against the
    template; `where` maps each template name to "args.<i>" or "kwargs.<name>" in the new call.
    Raises Unbound naming the template parameters the call needs and the student lacks, unless
    `lenient`: then those the template gives no default (`k`) are left out — the student's function
    is called with what it takes, e.g. a hard-coded k — while one with a default passed another value
    (`how="random"`) still raises: it asks for a behaviour the student's function cannot be asked for."""
    named = template_values(template, args, kwargs)
    if student.get("varargs") and not student["params"]:  # (*args, **kwargs): a wrapper; call as written
        return list(args), dict(kwargs), {**{n: f"args.{i}" for i, n in enumerate(list(named)[:len(args)])},
                                         **{k: f"kwargs.{k}" for k in kwargs}}
    found = mapping(template, student)
    lacking = [n for n in named if n not in found and not _is_default(template, n, named[n])
               and not student.get("varkw")]
    if lenient:
        lacking = [n for n in lacking if template["defaults"][template["params"].index(n)]]
    if lacking:
        raise Unbound(lacking)
    by_index = {i: n for n, i in found.items() if n in named}
    kinds = student["kinds"]
    last_posonly = max((i for i in by_index if kinds[i] == "posonly"), default=-1)
    simple = student.get("simple_defaults") or [False] * len(kinds)
    new_args, new_kwargs, where = [], {}, {}
    i = 0
    while i < len(kinds) and kinds[i] != "kwonly":  # positional while they line up
        if i in by_index:
            new_args.append(named[by_index[i]])
            where[by_index[i]] = f"args.{i}"
        elif i < last_posonly and simple[i]:  # a gap before a positional-only one: the student's own default
            new_args.append(student["default_values"][i])
        else:
            break
        i += 1
    for n, value in named.items():
        if n in where:
            continue
        if n not in found:
            if student.get("varkw") and not _is_default(template, n, value):
                new_kwargs[n] = value
                where[n] = f"kwargs.{n}"
            continue
        j = found[n]
        if student["kinds"][j] == "posonly":
            raise Unbound([n])  # positional-only after a gap: cannot be placed
        new_kwargs[student["params"][j]] = value
        where[n] = f"kwargs.{student['params'][j]}"
    return new_args, new_kwargs, where


def call(fn, template, *args, **kwargs):
    """Call student function `fn` (in a harness) with a call written against `template` (a stub
    with the template's signature, a list of its parameter names in order, or a signature dict);
    as written when it cannot be bound (the student's own TypeError then says what is wrong)."""
    if callable(template):
        template = read_signature(template)
    elif isinstance(template, (list, tuple)):
        template = {"params": list(template), "kinds": ["pos"] * len(template), "defaults": [False] * len(template),
                    "default_values": [None] * len(template)}
    try:
        student = read_signature(fn)
        a, kw, _ = bind(template, student, args, kwargs)
    except (TypeError, ValueError, Unbound):
        return fn(*args, **kwargs)
    return fn(*a, **kw)
