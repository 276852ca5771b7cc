"""Mechanical disguises of a copied module, to plant copies that the similarity search must find.

Each disguise is a function `(source, rng) -> source` that changes no behaviour a grader would
notice, the way a student hiding a copy would: rename, reorder, reformat and recomment, split or
merge expressions, swap loops and comprehensions, swap `torch.f(x)` and `x.f()`, insert dead code.
`disguise(source, kinds, seed)` applies several in a row. Used by tests/test_similarity.py and
bench/bench_similarity.py; nothing here is used when grading.
"""

from __future__ import annotations

import ast
import random
from typing import Callable

from grader.similarity.tokens import _METHOD_LIKE, BlockTransformer, _LoopToComp

_WORDS = ("alpha beta gamma delta sigma theta omega kappa lam rho tau phi chi psi zeta eta nu xi acc buf "
          "tmp val res out cur nxt hid lat enc dec agg part head tail core mid").split()


def _fresh(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}{rng.randint(0, 99)}"
        if name not in taken:
            taken.add(name)
            return name


def rename(source: str, rng: random.Random) -> str:
    """Every local variable of every function gets a new name (parameters and the template's names
    stay: renaming them would break the interface the grader calls)."""
    tree = ast.parse(source)
    taken = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        params = {a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs}
        params |= {a.arg for a in (fn.args.vararg, fn.args.kwarg) if a is not None}
        local = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} - params
        mapping = {name: _fresh(rng, taken) for name in sorted(local)}
        for n in ast.walk(fn):
            if isinstance(n, ast.Name) and n.id in mapping:
                n.id = mapping[n.id]
    return ast.unparse(tree)


def reorder(source: str, rng: random.Random) -> str:
    """Top-level functions and classes, and the methods of each class, in another order (imports and
    constants first, as Python needs them)."""
    tree = ast.parse(source)
    head = [s for s in tree.body if not isinstance(s, (ast.FunctionDef, ast.ClassDef))]
    defs = [s for s in tree.body if isinstance(s, (ast.FunctionDef, ast.ClassDef))]
    rng.shuffle(defs)
    for c in defs:
        if isinstance(c, ast.ClassDef):
            rng.shuffle(c.body)
    tree.body = head + defs
    return ast.unparse(tree)


def recomment(source: str, rng: random.Random) -> str:
    """Docstrings dropped, new comments on every few lines, blank lines and indentation changed."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and len(body) > 1 and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            del body[0]
    lines = ast.unparse(tree).splitlines()
    out = []
    for line in lines:
        stripped = line.lstrip()
        indent = (len(line) - len(stripped)) // 4
        new = "  " * indent + stripped  # two-space indentation
        if stripped and rng.random() < 0.3:
            new += f"  # {rng.choice(_WORDS)} step, see notes"
        out.append(new)
        if stripped.startswith(("def ", "class ")) and rng.random() < 0.5:
            out.append("")
    return "\n".join(out) + "\n"


class _Split(BlockTransformer):
    """`return a OP b` -> `t = a; return t OP b`."""

    def __init__(self, rng: random.Random, taken: set[str]):
        self.rng, self.taken = rng, taken

    def _block(self, body):
        out = []
        for s in body:
            self.generic_visit(s)
            if isinstance(s, ast.Return) and isinstance(s.value, ast.BinOp) and self.rng.random() < 0.8:
                name = _fresh(self.rng, self.taken)
                out.append(ast.Assign(targets=[ast.Name(name, ast.Store())], value=s.value.left, lineno=0))
                s.value.left = ast.Name(name, ast.Load())
            out.append(s)
        return out


def split_expressions(source: str, rng: random.Random) -> str:
    """Returned expressions split into a temporary and the rest."""
    tree = ast.parse(source)
    taken = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    tree = _Split(rng, taken).visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree))


def merge_expressions(source: str, rng: random.Random) -> str:
    """Temporaries read once inlined into the expression that reads them (the inverse of split)."""
    from grader.similarity.tokens import _InlineTemporaries

    tree = _InlineTemporaries().visit(ast.parse(source))
    return ast.unparse(tree)


class _CompToLoop(BlockTransformer):
    def _block(self, body):
        out = []
        for s in body:
            self.generic_visit(s)
            if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name) \
                    and isinstance(s.value, ast.ListComp) and len(s.value.generators) == 1:
                g, name = s.value.generators[0], s.targets[0].id
                append = ast.Expr(ast.Call(ast.Attribute(ast.Name(name, ast.Load()), "append", ast.Load()),
                                           [s.value.elt], []))
                inner = append if not g.ifs else ast.If(g.ifs[0], [append], [])
                out += [ast.Assign([ast.Name(name, ast.Store())], ast.List([], ast.Load()), lineno=0),
                        ast.For(g.target, g.iter, [inner], [], lineno=0)]
                continue
            out.append(s)
        return out


def swap_loops(source: str, rng: random.Random) -> str:
    """List comprehensions become append loops and append loops become comprehensions."""
    tree = _LoopToComp().visit(_CompToLoop().visit(ast.parse(source)))
    return ast.unparse(ast.fix_missing_locations(tree))


class _MethodToFunction(ast.NodeTransformer):
    """`x.sum(1)` -> `torch.sum(x, dim=1)` (and the other tensor methods torch also has as functions)."""

    def __init__(self, rng):
        self.rng = rng

    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in _METHOD_LIKE and not (
                isinstance(f.value, ast.Name) and f.value.id in ("torch", "F", "nn", "np", "math", "self")) \
                and self.rng.random() < 0.9:
            args = list(node.args)
            kws = list(node.keywords)
            if f.attr in ("sum", "mean", "softmax", "log_softmax", "logsumexp") and len(args) == 1:
                kws.append(ast.keyword("dim", args.pop()))
            return ast.Call(ast.Attribute(ast.Name("torch", ast.Load()), f.attr, ast.Load()), [f.value, *args], kws)
        return node


def methods_to_functions(source: str, rng: random.Random) -> str:
    """Tensor methods written as torch functions with keyword dims."""
    tree = _MethodToFunction(rng).visit(ast.parse(source))
    return ast.unparse(ast.fix_missing_locations(tree))


def insert_dead_code(source: str, rng: random.Random) -> str:
    """Unused assignments, `if False:` blocks and an unused helper function sprinkled in."""
    tree = ast.parse(source)
    taken = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        if rng.random() < 0.6:
            junk = ast.parse(f"{_fresh(rng, taken)} = {rng.randint(2, 99)} * 0.5").body[0]
            fn.body.insert(rng.randint(0, len(fn.body) - 1) if len(fn.body) > 1 else 0, junk)
        if rng.random() < 0.3:
            fn.body.insert(0, ast.parse("if False:\n    print('debug', 1)").body[0])
    helper = ast.parse(f"def {_fresh(rng, taken)}(t):\n    s = 0\n    for v in t:\n        s = s + v * v\n"
                       "    return s ** 0.5\n").body[0]
    tree.body.insert(len(tree.body) // 2, helper)
    return ast.unparse(ast.fix_missing_locations(tree))


DISGUISES: dict[str, Callable[[str, random.Random], str]] = {
    "rename": rename,
    "reorder": reorder,
    "recomment": recomment,
    "split": split_expressions,
    "merge": merge_expressions,
    "loops": swap_loops,
    "functions": methods_to_functions,
    "dead-code": insert_dead_code,
}


def disguise(source: str, kinds: list[str], seed: int = 0) -> str:
    """`source` with each disguise of `kinds` applied in order (recomment last keeps its comments)."""
    rng = random.Random(seed)
    ordered = [k for k in kinds if k != "recomment"] + (["recomment"] if "recomment" in kinds else [])
    for kind in ordered:
        source = DISGUISES[kind](source, rng)
    return source


def transplant(own: str, donor: str, unit: str) -> str:
    """`own` with its top-level function or class `unit` replaced by the donor's (a partial copy); added at
    the end when `own` has none of that name. Raises ValueError when the donor has none."""
    own_tree, donor_tree = ast.parse(own), ast.parse(donor)
    units = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    new = next((n for n in donor_tree.body if isinstance(n, units) and n.name == unit), None)
    if new is None:
        raise ValueError(f"the donor has no top-level function or class {unit!r}")
    if any(isinstance(n, units) and n.name == unit for n in own_tree.body):
        own_tree.body = [new if isinstance(n, units) and n.name == unit else n for n in own_tree.body]
    else:  # `own` has no such unit: the copy is added to it (otherwise `own` would come back unchanged)
        own_tree.body.append(new)
    return ast.unparse(own_tree)
