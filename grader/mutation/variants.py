"""Interface variants: the correct example submission rewritten in other reasonable styles that change no value.

    for v in variants(rubric, example_text): v.id, v.text

Generic rewrites (every assignment):
- rename-parameters: the required parameters of every graded function get other names
  (`x` -> `x_in`); a grader must call them positionally, as the template's callers do;
- instance-methods: every @staticmethod becomes an ordinary method (as in the public course notebook);
- extra-buffer: every nn.Module registers one more buffer (a running statistic, a constant);
- rename-optional-parameters: parameters with defaults of graded functions and methods renamed
  (`reduction` -> `reduction_arg`), the file's own keyword calls too;
- positional-only: graded module-level functions take positional-only parameters (`def f(x, mu, /)`);
- keyword-order: parameters with defaults in reverse order (`init_centres(x, y, seed=0, how=..., k=10)`);
- without-optional-parameters: the rubric's [interface] optional parameters dropped (default inlined);
Assignment-specific ones (the parametrisations the assignment's text allows) are in SPECIFIC.
Each variant must keep full marks.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from grader.rubric import Rubric


@dataclass(frozen=True)
class Variant:
    id: str
    text: str


def _graded_functions(rubric: Rubric) -> set[str]:
    return {t for t in rubric.code_targets.values() if "." not in t}


class _RenameParams(ast.NodeTransformer):
    def __init__(self, functions: set[str]):
        self.functions = functions

    def visit_FunctionDef(self, node: ast.FunctionDef):
        if node.name not in self.functions:
            return node
        args = node.args
        n_required = len(args.posonlyargs) + len(args.args) - len(args.defaults)
        renames = {a.arg: a.arg + "_in" for a in (args.posonlyargs + args.args)[:n_required]}
        for a in args.posonlyargs + args.args:
            a.arg = renames.get(a.arg, a.arg)
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and n.id in renames:
                n.id = renames[n.id]
        return node


def rename_parameters(text: str, rubric: Rubric) -> str | None:
    tree = ast.parse(text)
    new = _RenameParams(_graded_functions(rubric)).visit(tree)
    out = ast.unparse(new)
    return out if out != ast.unparse(ast.parse(text)) else None


def instance_methods(text: str, rubric: Rubric) -> str | None:
    tree = ast.parse(text)
    changed = False
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            static = [d for d in fn.decorator_list if isinstance(d, ast.Name) and d.id == "staticmethod"]
            if static:
                fn.decorator_list = [d for d in fn.decorator_list if d not in static]
                fn.args.args.insert(0, ast.arg("self"))
                changed = True
    return ast.unparse(tree) if changed else None


def extra_buffer(text: str, rubric: Rubric) -> str | None:
    tree = ast.parse(text)
    changed = False
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"):
            fn.body.append(ast.parse("self.register_buffer('num_batches_seen', torch.zeros((), dtype=torch.long))").body[0])
            changed = True
    return ast.unparse(ast.fix_missing_locations(tree)) if changed else None


def _vae_mog_names(text: str, rubric: Rubric) -> str | None:
    """MoG prior parameters named as in other code bases: locs, log_vars, logits."""
    if "self.means" not in text:
        return None
    out = re.sub(r"\bself\.means\b", "self.locs", text)
    out = re.sub(r"\bself\.logvars\b", "self.log_vars", out)
    return re.sub(r"\bself\.w\b", "self.logits", out)


def _vae_mog_w_vector(text: str, rubric: Rubric) -> str | None:
    """Mixture logits of shape (K,) instead of (K, 1, 1) (the assignment allows (K,), (K, 1), (K, 1, 1))."""
    new = re.sub(r"self\.w = nn\.Parameter\(torch\.zeros\(num_components, 1, 1\)\)",
                 "self.w = nn.Parameter(torch.zeros(num_components))", text)
    return new if new != text else None


# ---- signatures in other styles (grader/checks/interface.py maps the grader's calls onto them) ----------

def _graded_methods(rubric: Rubric) -> dict[str, set[str]]:
    """{class: method names} the rubric grades: a class target's methods, "Class.method" targets and
    the [interface] table's methods (constructors excluded: the template gives them)."""
    out: dict[str, set[str]] = {}
    for t in rubric.code_targets.values():
        cls, _, method = t.partition(".")
        if method and method != "__init__":
            out.setdefault(cls, set()).add(method)
        elif not method and cls[:1].isupper():
            out.setdefault(cls, set()).add("*")
    for t in rubric.interface:
        cls, _, method = t.partition(".")
        if method:
            out.setdefault(cls, set()).add(method)
    return out


def _signature_targets(tree: ast.Module, rubric: Rubric) -> list[ast.FunctionDef]:
    """The graded functions and methods of a submission's syntax tree."""
    functions = _graded_functions(rubric) | {t for t in rubric.interface if "." not in t}
    methods = _graded_methods(rubric)
    out = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in functions]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in methods):
        wanted = methods[cls.name]
        out += [f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name != "__init__"
                and not f.name.startswith("_") and ("*" in wanted or f.name in wanted)]
    return out


def _called_name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _rename_in_body(fn: ast.FunctionDef, renames: dict[str, str]) -> None:
    for n in ast.walk(fn):
        if isinstance(n, ast.Name) and n.id in renames:
            n.id = renames[n.id]


def rename_optional_parameters(text: str, rubric: Rubric) -> str | None:
    """Every parameter with a default of a graded function or method gets another name
    (`reduction` -> `reduction_arg`, `idx` -> `idx_arg`), and so do the file's own keyword calls of
    it: the grader must pass them by position or by the student's name."""
    tree = ast.parse(text)
    renamed: dict[str, set[str]] = {}  # function name -> renamed parameters
    for fn in _signature_targets(tree, rubric):
        a = fn.args
        with_default = (a.posonlyargs + a.args)[len(a.posonlyargs) + len(a.args) - len(a.defaults):]
        with_default += [k for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
        if not with_default:
            continue
        renames = {p.arg: p.arg + "_arg" for p in with_default}
        for p in with_default:
            p.arg = renames[p.arg]
        _rename_in_body(fn, renames)
        renamed.setdefault(fn.name, set()).update(renames)
    if not renamed:
        return None
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        for kw in call.keywords:
            if kw.arg and kw.arg in renamed.get(_called_name(call) or "", ()):
                kw.arg += "_arg"
    return ast.unparse(tree)


def positional_only(text: str, rubric: Rubric) -> str | None:
    """Every graded module-level function takes its parameters positionally only (`def f(x, mu, /)`),
    unless the file itself calls it with keywords."""
    tree = ast.parse(text)
    by_keyword = {_called_name(c) for c in ast.walk(tree) if isinstance(c, ast.Call) and c.keywords}
    functions = _graded_functions(rubric) | {t for t in rubric.interface if "." not in t}
    changed = False
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in functions):
        if fn.name in by_keyword or not fn.args.args or fn.args.kwonlyargs:
            continue
        fn.args.posonlyargs, fn.args.args = fn.args.posonlyargs + fn.args.args, []
        changed = True
    return ast.unparse(tree) if changed else None


def keyword_order(text: str, rubric: Rubric) -> str | None:
    """The parameters with defaults of graded functions in reverse order (`seed=0, how=..., k=10`),
    where the file itself never passes them by position."""
    tree = ast.parse(text)
    changed = False
    for fn in _signature_targets(tree, rubric):
        a = fn.args
        n_req = len(a.posonlyargs) + len(a.args) - len(a.defaults)
        if len(a.defaults) < 2 or a.posonlyargs:
            continue
        offset = 1 if a.args and a.args[0].arg in ("self", "cls") else 0
        calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and _called_name(c) == fn.name]
        if any(len(c.args) + offset > n_req or any(isinstance(x, ast.Starred) for x in c.args) for c in calls):
            continue
        pairs = list(zip(a.args[n_req - len(a.posonlyargs):], a.defaults))[::-1]
        a.args = a.args[:n_req - len(a.posonlyargs)] + [p for p, _ in pairs]
        a.defaults = [d for _, d in pairs]
        changed = True
    return ast.unparse(tree) if changed else None


def without_optional(text: str, rubric: Rubric) -> str | None:
    """The [interface] table's optional parameters of module-level functions dropped (their default,
    a constant, used in the body instead), where the file itself never passes them."""
    tree = ast.parse(text)
    changed = False
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        optional = set((rubric.interface.get(fn.name) or {}).get("optional", []))
        a = fn.args
        n_req = len(a.args) - len(a.defaults)
        calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and _called_name(c) == fn.name]
        for i in range(len(a.args) - 1, n_req - 1, -1):
            p, d = a.args[i], a.defaults[i - n_req]
            if p.arg not in optional or not isinstance(d, ast.Constant) or i != len(a.args) - 1:
                continue
            if any(len(c.args) > i or any(k.arg == p.arg for k in c.keywords) for c in calls):
                continue
            for n in ast.walk(fn):
                if isinstance(n, ast.Name) and n.id == p.arg:
                    n.__class__, n.value, n.kind = ast.Constant, d.value, None
            a.args.pop(i)
            a.defaults.pop(i - n_req)
            changed = True
    return ast.unparse(ast.fix_missing_locations(tree)) if changed else None


GENERIC: dict[str, Callable] = {
    "rename-parameters": rename_parameters,
    "instance-methods": instance_methods,
    "extra-buffer": extra_buffer,
    "rename-optional-parameters": rename_optional_parameters,
    "positional-only": positional_only,
    "keyword-order": keyword_order,
    "without-optional-parameters": without_optional,
}
SPECIFIC: dict[str, dict[str, Callable]] = {
    "vae": {"mog-parameter-names": _vae_mog_names, "mog-logits-shape-K": _vae_mog_w_vector},
}


def variants(rubric: Rubric, example_text: str) -> list[Variant]:
    out = []
    for name, make in {**GENERIC, **SPECIFIC.get(rubric.id, {})}.items():
        text = make(example_text, rubric)
        if text is not None:
            out.append(Variant(name, text))
    return out


def grade_variants(study, only: set[str] | None = None) -> list[dict]:
    """Each variant (or those in `only`) of the study's example graded like the mutants: {id, full, lost, feedback}."""
    rubric = study.rubric
    out = []
    for v in variants(rubric, Path(study.example).read_text()):
        if only is not None and v.id not in only:
            continue
        folder = study.workdir / f"variant_{v.id}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / rubric.module).write_text(v.text)
        result = study._grade(folder)
        lost = {}
        feedback = ""
        for t in result.tests:
            if t.score < t.max_score:
                lost[t.component] = round(lost.get(t.component, 0.0) + t.max_score - t.score, 4)
                feedback += f"[{t.check}] " + (t.output or "").split("\n")[0][:200] + "\n"
        out.append({"id": v.id, "full": not lost, "lost": lost, "feedback": feedback})
    return out
