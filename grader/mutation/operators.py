"""Generic mutation operators over the solution blocks of a reference module.

    for m in mutants(Path("reference/vae.py").read_text()):
        m.qualname, m.operator, m.function_source, m.module_tree

A mutant is the reference module with ONE node inside a `# BEGIN SOLUTION` / `# END SOLUTION`
block replaced. The operators are the classic ones of mutation testing (as in mutmut and
cosmic-ray: arithmetic and comparison operator swaps, constant changes, negation, statement
deletion) plus the mistakes students make in tensor code (sum <-> mean, another `dim`, square <->
sqrt, exp <-> exp(0.5 ·), a detached value, off-by-one bounds, swapped arguments or outputs), and the
mistakes only a property shows (reseeding inside a sampler, an in-place edit of an input, a naive log-sum-exp,
ties counted once per tied extreme, a dtype cast, gradients cut by numpy, .data or torch.no_grad()).
Neither library is used: both mutate files on disk and run a test command per mutant, while the
grader needs the mutated *function* as a value (to plant into a student's file and to run in
process), so a small `ast.NodeTransformer` does the replacing.

Mutants whose function source is unchanged or repeats an earlier mutant's are dropped; which
ones change behaviour is decided elsewhere (grader.mutation.probes), by running them.
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass
from typing import Callable, Iterator

# Functions and methods whose integer arguments are dimensions.
DIM_FUNCS = {"sum", "mean", "softmax", "log_softmax", "logsumexp", "argmin", "argmax", "min", "max", "amin", "amax",
             "cat", "stack", "chunk", "flip", "unsqueeze", "squeeze", "flatten", "cumsum", "prod", "norm", "var", "std",
             "index_add_", "index_add", "index_select", "gather", "diagonal", "transpose", "Unflatten"}
DIM_KEYWORDS = {"dim", "axis", "dim1", "dim2", "start_dim", "end_dim"}
SWAPS = {"sum": "mean", "mean": "sum", "min": "max", "max": "min", "argmin": "argmax", "argmax": "argmin",
         "amin": "amax", "amax": "amin", "softmax": "log_softmax", "log_softmax": "softmax", "log": "log1p",
         "log1p": "log", "zeros_like": "ones_like", "ones_like": "zeros_like", "randn_like": "rand_like",
         "randn": "rand", "relu": "sigmoid", "sigmoid": "relu", "tanh": "sigmoid", "logsumexp": "amax"}
IDENTITY_DROPS = {"exp", "log", "sqrt", "sigmoid", "relu", "clamp", "log1p", "abs", "softmax", "log_softmax", "F.relu"}
BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
CMP_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is}

Builder = Callable[[ast.AST], "ast.AST | None"]  # the node (in a fresh copy of the tree) -> its replacement


@dataclass(frozen=True)
class Mutant:
    """One mutation of a reference module: `qualname` ("fn" or "Class.method") is the mutated function."""
    id: str  # "<qualname>:<operator>@L<line>" (+ "#n" when one line has several of the same kind)
    qualname: str
    operator: str
    line: int
    function_source: str  # the mutated function's `def`, decorators included, dedented
    original_source: str  # the same function unmutated (for planting a control)
    module_source: str  # the whole reference module (unmutated)

    def module_tree(self) -> ast.Module:
        """The whole mutated module (for running it in process)."""
        return _swap_function(ast.parse(self.module_source), self.qualname, ast.parse(self.function_source).body[0])


def solution_ranges(source: str) -> list[tuple[int, int]]:
    """1-based (first, last) line numbers strictly between each BEGIN/END SOLUTION marker pair."""
    out, start = [], None
    for i, line in enumerate(source.splitlines(), 1):
        if re.match(r"\s*# BEGIN SOLUTION", line):
            start = i
        elif re.match(r"\s*# END SOLUTION", line) and start is not None:
            out.append((start + 1, i - 1))
            start = None
    return out


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _int_const(node) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and type(node.operand.value) is int:
        return -node.operand.value
    return None


def _num(v) -> ast.expr:
    return ast.UnaryOp(ast.USub(), ast.Constant(-v)) if v < 0 else ast.Constant(v)


def _dim_nodes(tree: ast.AST) -> set[int]:
    """ids of the integer constants that are dimension arguments."""
    out = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg in DIM_KEYWORDS and _int_const(kw.value) is not None:
                out.add(id(kw.value))
        name = _call_name(node)
        if name in DIM_FUNCS:
            # x.sum(0) / torch.sum(x, 0) / torch.chunk(x, 2, 1): the last positional int is the dim
            ints = [a for a in node.args if _int_const(a) is not None]
            if ints and not (name == "chunk" and len(ints) == 1 and isinstance(node.func, ast.Attribute)
                             and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                out.add(id(ints[-1]))
    return out


def _other_dims(d: int) -> list[int]:
    return [0, -2] if d == -1 else [d + 1, d - 1] if d > 0 else [1, -1] if d == 0 else [d + 1, d - 1]


RANDOM_CALLS = {"randn", "randn_like", "rand", "rand_like", "randint", "multinomial", "normal", "bernoulli", "randperm"}
INPLACE = {ast.Add: "add_", ast.Sub: "sub_", ast.Mult: "mul_", ast.Div: "div_"}
NAIVE = {"logsumexp": "log(exp(x).sum)", "log_softmax": "log(softmax)"}
ARG_EXTREMES = {"argmin", "argmax"}  # tie handling: which of several equal extremes is the answer


def candidates(node: ast.AST, dims: set[int], parent: ast.AST | None, fn: ast.FunctionDef | None = None
               ) -> Iterator[tuple[str, Builder]]:
    """(operator label, builder) for every mutation of `node` itself (`fn`: the function it is in)."""
    c = copy.deepcopy
    params = {a.arg for a in (fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs)} - {"self"} if fn else set()
    # the mistakes no value check sees (issue 20): reseeding inside a sampler, an in-place edit of an input,
    # a log-sum-exp computed naively (overflows at extreme inputs), ties counted once per tied extreme, a dtype
    # cast, gradients cut by numpy, .data or torch.no_grad() (besides .detach())
    if fn is not None and isinstance(node, ast.stmt) and node is _first_solution_stmt(fn, node) \
            and any(isinstance(x, ast.Call) and _call_name(x) in RANDOM_CALLS for x in ast.walk(fn)):
        yield "reseed-inside", lambda n: [ast.Expr(ast.Call(ast.Attribute(ast.Name("torch", ast.Load()), "manual_seed",
                                                                          ast.Load()), [ast.Constant(0)], [])), n]
    if isinstance(node, ast.BinOp) and type(node.op) in INPLACE and isinstance(node.left, ast.Name) \
            and node.left.id in params and "in place" not in (ast.get_docstring(fn) or ""):  # (allowed there)
        method = INPLACE[type(node.op)]
        yield "in-place-input", lambda n: ast.Call(ast.Attribute(n.left, method, ast.Load()), [n.right], [])
    if isinstance(node, ast.Call) and _call_name(node) in NAIVE and isinstance(node.func, ast.Attribute) \
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ("torch", "F") and node.args:
        yield f"naive-{_call_name(node)}", lambda n: _naive(n)
    if isinstance(node, ast.Call) and _call_name(node) in ARG_EXTREMES and _arg_dim(node) is not None:
        yield "tie-every-index", lambda n: _every_tied_index(n)
    if isinstance(node, ast.Return) and node.value is not None and not isinstance(node.value, ast.Tuple):
        yield "cast-float32", lambda n: ast.Return(ast.Call(ast.Attribute(n.value, "float", ast.Load()), [], []))
        yield "numpy-output", lambda n: ast.Return(_through_numpy(n.value))
    if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Call, ast.BinOp)) and fn is not None:
        yield "data-value", lambda n: ast.Assign(n.targets, ast.Attribute(n.value, "data", ast.Load()), lineno=n.lineno)
        yield "no_grad-value", lambda n: ast.With([ast.withitem(ast.Call(ast.Attribute(ast.Name("torch", ast.Load()),
                                                                                       "no_grad", ast.Load()), [], []))],
                                                  [n], lineno=n.lineno)
    if isinstance(node, ast.BinOp):
        if type(node.op) in BINOP_SWAPS:
            new = BINOP_SWAPS[type(node.op)]
            yield "swap-operator", lambda n: ast.BinOp(n.left, new(), n.right)
        if isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            yield "drop-right-term", lambda n: n.left
            yield "drop-left-term", lambda n: (ast.UnaryOp(ast.USub(), n.right) if isinstance(n.op, ast.Sub) else n.right)
        if isinstance(node.op, (ast.Sub, ast.Div, ast.MatMult)):
            yield "swap-operands", lambda n: ast.BinOp(n.right, n.op, n.left)
        if isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant) and node.right.value == 2:
            yield "square->identity", lambda n: n.left
            yield "square->sqrt", lambda n: _torch("sqrt", n.left)
        if isinstance(node.op, (ast.Add, ast.Sub)):
            yield "add-term", lambda n: ast.BinOp(n, ast.Add(), ast.Constant(1.0))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _int_const(node) is None:
        yield "flip-sign", lambda n: n.operand
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in CMP_SWAPS:
        new = CMP_SWAPS[type(node.ops[0])]
        yield "swap-comparison", lambda n: ast.Compare(n.left, [new()], n.comparators)
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        yield "flip-bool", lambda n: ast.Constant(not n.value)
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not (
            isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.USub)):
        v = node.value
        if id(node) in dims:
            for d in _other_dims(v):
                yield "change-dim", (lambda d: lambda n: _num(d))(d)
        elif type(v) is int:
            yield "constant+1", lambda n: ast.Constant(n.value + 1)
            if v != 0:
                yield "constant-1", lambda n: ast.Constant(n.value - 1)
        else:
            yield "constant*2", lambda n: ast.Constant(n.value * 2)
    elif isinstance(node, ast.UnaryOp) and id(node) in dims:  # dim=-1
        for d in _other_dims(_int_const(node)):
            yield "change-dim", (lambda d: lambda n: _num(d))(d)
    elif isinstance(node, ast.Call):
        name = _call_name(node)
        if name in SWAPS and isinstance(node.func, ast.Attribute):
            new = SWAPS[name]
            yield f"{name}->{new}", lambda n: ast.Call(ast.Attribute(n.func.value, new, ast.Load()), n.args, n.keywords)
        if name == "exp" and node.args:
            a = node.args[0]
            if isinstance(a, ast.BinOp) and isinstance(a.op, ast.Mult) and isinstance(a.left, ast.Constant) and a.left.value == 0.5:
                yield "exp(0.5x)->exp(x)", lambda n: ast.Call(n.func, [n.args[0].right], [])
            else:
                yield "exp(x)->exp(0.5x)", lambda n: ast.Call(n.func, [ast.BinOp(ast.Constant(0.5), ast.Mult(), n.args[0])], [])
        if name == "sqrt" and node.args:
            yield "sqrt->square", lambda n: ast.BinOp(n.args[0], ast.Pow(), ast.Constant(2))
        if name in IDENTITY_DROPS and len(node.args) >= 1 and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id in ("torch", "F"):
            yield f"drop-{name}", lambda n: n.args[0]
        if name == "range":
            if len(node.args) == 1:
                yield "range-off-by-one", lambda n: ast.Call(n.func, [ast.BinOp(n.args[0], ast.Sub(), ast.Constant(1))], [])
            elif len(node.args) >= 2:
                yield "range-off-by-one", lambda n: ast.Call(n.func, [ast.BinOp(n.args[0], ast.Add(), ast.Constant(1))] + n.args[1:], [])
        positional = [a for a in node.args if not isinstance(a, ast.Starred)]
        if len(positional) >= 2 and len(positional) == len(node.args) and ast.dump(node.args[0]) != ast.dump(node.args[1]) \
                and name not in ("range", "chunk", "randint", "view", "reshape", "Conv2d", "ConvTranspose2d", "Linear"):
            yield "swap-arguments", lambda n: ast.Call(n.func, [n.args[1], n.args[0]] + n.args[2:], n.keywords)
        for i, kw in enumerate(node.keywords):
            if kw.arg in ("keepdim", "replacement", "upper", "minlength", "min", "output_padding", "padding"):
                yield f"drop-keyword-{kw.arg}", (lambda i: lambda n: ast.Call(n.func, n.args, n.keywords[:i] + n.keywords[i + 1:]))(i)
    elif isinstance(node, ast.Slice):
        for part in ("lower", "upper"):
            if getattr(node, part) is not None and _int_const(getattr(node, part)) is None:
                yield f"slice-{part}+1", (lambda p: lambda n: _set(n, p, ast.BinOp(getattr(n, p), ast.Add(), ast.Constant(1)))) (part)
    elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) >= 2:
        yield "swap-outputs", lambda n: ast.Return(ast.Tuple([n.value.elts[1], n.value.elts[0]] + n.value.elts[2:], ast.Load()))
    if isinstance(node, ast.Return) and node.value is not None and not isinstance(node.value, ast.Tuple):
        yield "detach-output", lambda n: ast.Return(_detach(n.value))
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        target = node.targets[0].id
        reads = {x.id for x in ast.walk(node.value) if isinstance(x, ast.Name)}
        if target in reads:  # `p = clamp(p)`, `h = relu(h)`: the step can be forgotten
            yield "delete-statement", lambda n: ast.Pass()
        if isinstance(node.value, (ast.Call, ast.BinOp)):
            yield "detach-value", lambda n: ast.Assign(n.targets, _detach(n.value), lineno=n.lineno)
    if isinstance(node, ast.AugAssign):
        yield "delete-statement", lambda n: ast.Pass()
    del c


def _first_solution_stmt(fn: ast.FunctionDef, node: ast.AST) -> ast.AST | None:
    """The first statement of `fn`'s body that lies at the same nesting level as `node` (the top level)."""
    return node if node in fn.body and all(getattr(s, "lineno", 0) >= node.lineno or isinstance(s, ast.Expr)
                                           and isinstance(getattr(s, "value", None), ast.Constant)
                                           for s in fn.body if s is not node and s.lineno < node.lineno) else None


def _naive(call: ast.Call) -> ast.expr:
    """torch.logsumexp(a, d) -> torch.log(torch.exp(a).sum(d)); log_softmax(a, d) -> torch.log(torch.softmax(a, d))."""
    a, rest = call.args[0], call.args[1:]
    if _call_name(call) == "logsumexp":
        summed = ast.Call(ast.Attribute(_torch("exp", a), "sum", ast.Load()), rest, call.keywords)
        return _torch("log", summed)
    return _torch("log", ast.Call(ast.Attribute(ast.Name("torch", ast.Load()), "softmax", ast.Load()), call.args,
                                  call.keywords))


def _arg_dim(call: ast.Call) -> tuple[ast.expr, ast.expr] | None:
    """(the tensor, its dim) of `e.argmin(dim=d)`, `e.argmin(d)`, `torch.argmin(e, dim=d)`, `torch.argmin(e, d)`;
    None without a dim (an arg-min over the flattened tensor) or with other arguments (keepdim)."""
    f = call.func
    if not isinstance(f, ast.Attribute):
        return None
    is_torch = isinstance(f.value, ast.Name) and f.value.id == "torch"
    args = list(call.args)
    tensor = args.pop(0) if is_torch and args else None if is_torch else f.value
    dims = [kw.value for kw in call.keywords if kw.arg == "dim"] + args
    if tensor is None or len(dims) != 1 or len(call.keywords) + len(args) != 1 or _int_const(dims[0]) is None:
        return None
    return tensor, dims[0]


def _every_tied_index(call: ast.Call) -> ast.expr:
    """e.argmin(dim=d) -> (e == e.amin(dim=d, keepdim=True)).nonzero()[:, d]: the index of *every* extreme entry,
    so a row with a tie appears once per tied entry (one point counted in two clusters); the same without ties."""
    tensor, dim = _arg_dim(call)
    extreme = "amin" if _call_name(call) == "argmin" else "amax"
    best = ast.Call(ast.Attribute(copy.deepcopy(tensor), extreme, ast.Load()), [],
                    [ast.keyword("dim", copy.deepcopy(dim)), ast.keyword("keepdim", ast.Constant(True))])
    mask = ast.Compare(tensor, [ast.Eq()], [best])
    rows = ast.Call(ast.Attribute(mask, "nonzero", ast.Load()), [], [])
    return ast.Subscript(rows, ast.Tuple([ast.Slice(), copy.deepcopy(dim)], ast.Load()), ast.Load())


def _through_numpy(value: ast.expr) -> ast.expr:
    """torch.as_tensor(v.detach().cpu().numpy()).to(v.device): the same values, no gradient."""
    arr = ast.Call(ast.Attribute(ast.Call(ast.Attribute(_detach(value), "cpu", ast.Load()), [], []), "numpy",
                                 ast.Load()), [], [])
    return ast.Call(ast.Attribute(_torch("as_tensor", arr), "to", ast.Load()),
                    [ast.Attribute(copy.deepcopy(value), "device", ast.Load())], [])


def _set(node, field, value):
    setattr(node, field, value)
    return node


def _torch(fn: str, arg: ast.expr) -> ast.expr:
    return ast.Call(ast.Attribute(ast.Name("torch", ast.Load()), fn, ast.Load()), [arg], [])


def _detach(value: ast.expr) -> ast.expr:
    return ast.Call(ast.Attribute(value, "detach", ast.Load()), [], [])


class _Replace(ast.NodeTransformer):
    """Replaces the one node `target` (by identity) with `new`."""

    def __init__(self, target: ast.AST, new: ast.AST):
        self.target, self.new = target, new

    def visit(self, node):
        if node is self.target:
            return self.new
        return self.generic_visit(node)


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef):
                    yield f"{node.name}.{sub.name}", sub


def _in(node: ast.AST, ranges) -> bool:
    first, last = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
    if first is None:
        return False
    return any(a <= first and last <= b for a, b in ranges)


def mutants(source: str, qualnames: set[str] | None = None) -> list[Mutant]:
    """Every distinct single-node mutant of the solution blocks of `source` (optionally of some functions only).

    Ordered by function (as in the file), then by position: deterministic for a given source.
    """
    tree = ast.parse(source)
    ranges = solution_ranges(source)
    dims = _dim_nodes(tree)
    out, seen = [], set()
    for qualname, fn in _functions(tree):
        if qualnames is not None and qualname not in qualnames:
            continue
        original = ast.unparse(fn)
        parents = {id(ch): p for p in ast.walk(fn) for ch in ast.iter_child_nodes(p)}
        nodes = list(ast.walk(fn))
        per_line: dict[tuple[str, int], int] = {}
        for index, node in enumerate(nodes):
            if not _in(node, ranges):
                continue
            for label, build in candidates(node, dims, parents.get(id(node)), fn):
                new_fn = copy.deepcopy(fn)
                target = list(ast.walk(new_fn))[index]
                replacement = build(target)
                if replacement is None:
                    continue
                new_fn = _Replace(target, replacement).visit(new_fn)
                ast.fix_missing_locations(new_fn)
                try:
                    text = ast.unparse(new_fn)
                    compile(ast.Module([copy.deepcopy(new_fn)], []), "<mutant>", "exec")
                except (SyntaxError, ValueError, TypeError):
                    continue
                if text == original or (qualname, text) in seen:
                    continue
                seen.add((qualname, text))
                key = (label, node.lineno)
                per_line[key] = per_line.get(key, 0) + 1
                mid = f"{qualname}:{label}@L{node.lineno}" + (f"#{per_line[key]}" if per_line[key] > 1 else "")
                out.append(Mutant(mid, qualname, label, node.lineno, text, original, source))
    return out


def _swap_function(tree: ast.Module, qualname: str, new_fn: ast.FunctionDef) -> ast.Module:
    module = tree
    owner, _, name = qualname.rpartition(".")
    body = module.body
    if owner:
        body = next(n for n in module.body if isinstance(n, ast.ClassDef) and n.name == owner).body
    for i, n in enumerate(body):
        if isinstance(n, ast.FunctionDef) and n.name == name:
            body[i] = new_fn
    return ast.fix_missing_locations(module)
