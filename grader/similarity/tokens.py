"""Python source -> a canonical token stream that survives the usual disguises of a copy.

A copy is usually disguised by renaming identifiers, reordering functions and classes, rewriting
comments, docstrings and formatting, splitting or merging expressions, turning loops into
comprehensions (or back), calling `torch.sum(x, dim=1)` instead of `x.sum(1)`, and inserting dead
code. Each has a normalisation here, applied to the syntax tree before any token is emitted:

| disguise                                | normalisation                                          |
|-----------------------------------------|--------------------------------------------------------|
| comments, formatting, parentheses       | the tree has none of them                              |
| docstrings, bare string statements      | dropped                                                |
| renamed variables, parameters, helpers, | every name the student binds becomes `V`; names of     |
| attributes (`self.net` -> `self.body`)  | imports (`torch`, `F`) and builtins are kept           |
| `torch.sum(x, dim=1)` vs `x.sum(1)`     | module-function calls on a tensor become method calls; |
|                                         | `dim=`/`axis=` keywords become positional              |
| `a * b` vs `b * a`                      | operands of + and * ordered by their own tokens        |
| a temporary split out of an expression  | a local assigned once and read once is inlined         |
| list comprehension vs append loop       | both emit `for target in iter [if c] append elt`       |
| dead code                               | statements after return/raise/break/continue,          |
|                                         | `if False:` bodies, `pass`, stores never read           |
| reordered functions, classes, methods   | each function is a token segment of its own, and       |
|                                         | fingerprints are compared as sets (fingerprints.py)    |

Every token keeps the line of the original source it came from, so evidence can point at it.
Contract: `tokenize_source(text) -> list[Token]`; raises `SyntaxError` for text that does not parse.
"""

from __future__ import annotations

import ast
import builtins
import copy
from dataclasses import dataclass

#: bump when the normalisation changes: cached fingerprints of an older version are recomputed
VERSION = 4

_BUILTINS = frozenset(dir(builtins)) | {"self", "cls", "super"}
_DIM_KEYWORDS = frozenset({"dim", "axis", "keepdim", "keepdims"})
#: `torch.f(x, ...)` / `np.f(x, ...)` that are also tensor methods: written as `x.f(...)`
_METHOD_LIKE = frozenset("""
    sum mean exp log log1p expm1 sqrt rsqrt abs pow clamp clip sigmoid tanh relu softmax log_softmax
    logsumexp matmul mm bmm transpose permute reshape view squeeze unsqueeze flatten max min argmax argmin
    norm square sign floor ceil round std var prod cumsum sort topk gather index_select masked_fill where
    detach clone exp2 log2 log10 neg reciprocal mul add sub div dot outer einsum chunk split
""".split())
_MODULE_ALIASES_HINT = frozenset({"torch", "np", "numpy", "F", "nn", "math", "dist", "D", "td"})
_COMMUTATIVE = (ast.Add, ast.Mult)


@dataclass(frozen=True)
class Token:
    """One normalised token: its text and the 1-based line of the original source it stands for."""
    text: str
    line: int


# ---------------------------------------------------------------------------------------------
# Tree rewrites (each a small pass; all operate on a private copy of the tree)
# ---------------------------------------------------------------------------------------------

def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)


def _always_false(test: ast.expr) -> bool:
    return isinstance(test, ast.Constant) and not test.value


_TERMINAL = (ast.Return, ast.Raise, ast.Break, ast.Continue)


class _DropDeadCode(ast.NodeTransformer):
    """Docstrings, bare constants, `pass`, `if False:` bodies and statements after a terminal one."""

    def _block(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in body:
            if _is_docstring(stmt) or isinstance(stmt, ast.Pass):
                continue
            if isinstance(stmt, (ast.If, ast.While)) and _always_false(stmt.test):
                out.extend(self._block(stmt.orelse) if isinstance(stmt, ast.If) else [])
                continue
            new = self.visit(stmt)
            out.extend(new if isinstance(new, list) else [new] if new is not None else [])
            if isinstance(stmt, _TERMINAL):
                break
        return out

    def generic_visit(self, node):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                setattr(node, field, self._block(block))
        _visit_clauses(self, node)
        return node


_CLAUSES = (ast.excepthandler, ast.match_case)


def _visit_clauses(visitor: ast.NodeVisitor, node: ast.AST) -> None:
    """Visit the except handlers and match cases of `node` (the other nodes that hold statements). An
    expression never holds a statement, so a pass that rewrites statements need not descend into one."""
    for value in (getattr(node, f, None) for f in node._fields):
        if isinstance(value, list):
            for v in value:
                if isinstance(v, _CLAUSES):
                    visitor.visit(v)


def _name_counts(fn: ast.AST) -> tuple[dict[str, int], dict[str, int]]:
    """(loads, stores) of each name in a function; a parameter counts as two stores (never inlined)."""
    loads: dict[str, int] = {}
    stores: dict[str, int] = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Name):
            counts = loads if isinstance(node.ctx, ast.Load) else stores
            counts[node.id] = counts.get(node.id, 0) + 1
        elif isinstance(node, ast.arg):
            stores[node.arg] = stores.get(node.arg, 0) + 2
    return loads, stores


def _simple_target(stmt: ast.stmt) -> str | None:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
        return stmt.target.id
    return None


class _Substitute(ast.NodeTransformer):
    def __init__(self, name: str, value: ast.expr):
        self.name, self.value, self.done = name, value, False

    def visit_Name(self, node: ast.Name):
        if node.id == self.name and isinstance(node.ctx, ast.Load) and not self.done:
            self.done = True
            return self.value  # moved, not copied: its assignment is deleted
        return node


def _names_in(stmt: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}


def _inline_block(body: list[ast.stmt], loads: dict[str, int], stores: dict[str, int]) -> list[ast.stmt]:
    """Inline `t = expr` into the one later statement of the same block that reads `t` (read once,
    stored once in the whole function), and drop stores that are never read."""
    out = list(body)
    names: list[set[str] | None] = [None] * len(out)  # each statement's names, walked when first needed
    i = 0
    while i < len(out):
        name = _simple_target(out[i])
        if name is not None and stores.get(name, 0) == 1:
            uses = loads.get(name, 0)
            if uses == 0 and not isinstance(out[i].value, ast.Call):
                del out[i], names[i]  # dead store (a call is kept: it may be what the line is for)
                continue
            if uses == 1:
                for j in range(i + 1, len(out)):
                    if names[j] is None:
                        names[j] = _names_in(out[j])
                    if name in names[j]:
                        sub = _Substitute(name, out[i].value)
                        out[j] = sub.visit(out[j])
                        if sub.done:
                            names[j] = _names_in(out[j])
                            del out[i], names[i]
                            i -= 1
                        break
        i += 1
    return out


class _InlineTemporaries(ast.NodeTransformer):
    def generic_visit(self, node):  # functions are found in statement lists only
        for value in (getattr(node, f, None) for f in node._fields):
            if isinstance(value, list):
                for v in value:
                    if isinstance(v, (ast.stmt, *_CLAUSES)):
                        self.visit(v)  # rewrites in place, returns v
        return node

    def visit_FunctionDef(self, node):
        loads, stores = _name_counts(node)

        def walk(stmts):
            stmts = _inline_block(stmts, loads, stores)
            for s in stmts:
                for field in ("body", "orelse", "finalbody"):
                    block = getattr(s, field, None)
                    if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                        setattr(s, field, walk(block))
            return stmts

        node.body = walk(node.body)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef


class BlockTransformer(ast.NodeTransformer):
    """Rewrites statement lists: `_block(stmts) -> stmts` is called on every body, orelse and finalbody
    (after their own statements were visited), and every other field is visited as usual."""

    def _block(self, body: list[ast.stmt]) -> list[ast.stmt]:
        return body

    def generic_visit(self, node):
        for field in ("body", "orelse", "finalbody"):
            b = getattr(node, field, None)
            if isinstance(b, list) and b and isinstance(b[0], ast.stmt):
                setattr(node, field, self._block(b))
        for field, value in ast.iter_fields(node):
            if field not in ("body", "orelse", "finalbody") and isinstance(value, ast.AST):
                self.visit(value)
        return node


class _LoopToComp(BlockTransformer):
    """`v = []` + `for t in it: v.append(e)` -> `v = [e for t in it]` (the comprehension is then
    inlined where `v` is read once, as `[e for t in it]` written directly would be)."""

    def generic_visit(self, node):  # the loops it rewrites sit in statement lists, never in an expression
        for field in ("body", "orelse", "finalbody"):
            b = getattr(node, field, None)
            if isinstance(b, list) and b and isinstance(b[0], ast.stmt):
                setattr(node, field, self._block(b))
        return node

    def _block(self, body):
        out = []
        for s in body:
            self.generic_visit(s)
            prev = out[-1] if out else None
            call = s.body[0].value if isinstance(s, ast.For) and len(s.body) == 1 \
                and isinstance(s.body[0], ast.Expr) else None
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "append" \
                    and len(call.args) == 1 and isinstance(call.func.value, ast.Name) and not s.orelse \
                    and isinstance(prev, ast.Assign) and len(prev.targets) == 1 \
                    and isinstance(prev.targets[0], ast.Name) and isinstance(prev.value, ast.List) \
                    and not prev.value.elts and prev.targets[0].id == call.func.value.id:
                comp = ast.ListComp(call.args[0], [ast.comprehension(s.target, s.iter, [], 0)])
                out[-1] = ast.copy_location(ast.Assign([prev.targets[0]], comp), prev)
                continue
            out.append(s)
        return out


def _module_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(imported names, attribute names the student defines) in one walk of the module. The defined
    attributes are `self.X = ...` targets and methods of their classes, less forward and __init__."""
    imported: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            bound.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            bound |= {s.name for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return imported, bound - {"forward", "__init__"}


def normalise_tree(tree: ast.Module, in_place: bool = False) -> ast.Module:
    """The rewrites above, in order, on a copy of `tree` (on `tree` itself when `in_place`)."""
    if not in_place:
        tree = copy.deepcopy(tree)
    tree = _DropDeadCode().visit(tree)
    tree = _LoopToComp().visit(tree)
    tree = _InlineTemporaries().visit(tree)
    return tree


# ---------------------------------------------------------------------------------------------
# Token emission
# ---------------------------------------------------------------------------------------------

class _Emitter:
    """Pre-order tokens of a normalised tree: node kinds, kept names, and placeholders."""

    def __init__(self, keep: set[str], bound_attrs: set[str]):
        self.keep = keep
        self.bound_attrs = bound_attrs
        self.out: list[Token] = []
        self.segments: list[list[Token]] = []  # one per function/method body, in source order
        self.line = 1
        self.span = (1, 1)  # lines of the statement being emitted

    def tok(self, text: str) -> None:
        self.out.append(Token(text, self.line))

    def emit(self, node) -> None:
        if node is None:
            return
        if isinstance(node, list):
            for n in node:
                self.emit(n)
            return
        if not isinstance(node, ast.AST):
            return
        saved, saved_span = self.line, self.span
        line = getattr(node, "lineno", None)
        if isinstance(node, ast.stmt) and line:
            self.line, self.span = line, (line, node.end_lineno or line)
        elif line and self.span[0] <= line <= self.span[1]:
            self.line = line  # (f-string parts carry lines of their own in Python 3.11: ignored)
        method = getattr(self, "e_" + type(node).__name__, None)
        if method is not None:
            method(node)
        else:
            self.generic(node)
        self.line, self.span = saved, saved_span

    def generic(self, node: ast.AST) -> None:
        if isinstance(node, (ast.expr_context, ast.Load, ast.Store, ast.Del)):
            return
        self.tok(type(node).__name__)
        for field, value in ast.iter_fields(node):
            if field in ("type_comment", "kind"):
                continue
            if isinstance(value, (ast.AST, list)):
                self.emit(value)
            elif isinstance(value, str) and field in ("attr", "name", "arg", "id", "module"):
                self.tok(self.name(value))

    # --- leaves ---
    def name(self, value: str) -> str:
        return value if value in self.keep else "V"

    def e_Name(self, node: ast.Name) -> None:
        self.tok(self.name(node.id))

    def e_Constant(self, node: ast.Constant) -> None:
        v = node.value
        if isinstance(v, bool) or v is None:
            self.tok(repr(v))
        elif isinstance(v, int):
            self.tok(str(v) if abs(v) <= 10 else "INT")
        elif isinstance(v, float):
            self.tok("FLOAT" if v not in (0.0, 0.5, 1.0, 2.0) else repr(v))
        else:
            self.tok("STR")

    def e_Attribute(self, node: ast.Attribute) -> None:
        self.emit(node.value)
        self.tok("." + ("V" if node.attr in self.bound_attrs else node.attr))

    def e_arg(self, node: ast.arg) -> None:
        self.tok("arg")

    def e_arguments(self, node: ast.arguments) -> None:
        n = len(node.posonlyargs) + len(node.args) + len(node.kwonlyargs)
        self.tok(f"args{n}")
        self.emit(node.defaults)
        self.emit(node.kw_defaults)

    def e_alias(self, node: ast.alias) -> None:
        self.tok(node.name)

    def e_Import(self, node) -> None:  # imports say little about authorship and are reordered freely
        pass

    e_ImportFrom = e_Import

    def e_FunctionDef(self, node: ast.FunctionDef) -> None:
        # Each function is a segment of its own: k-grams never span two functions, so their order
        # in the file (or in a class) changes no fingerprint.
        self.tok("def")
        outer, self.out = self.out, []
        self.tok("def")
        self.emit(node.args)
        self.emit(node.decorator_list)
        self.emit(node.body)
        self.line = node.end_lineno or self.line
        self.tok("enddef")
        self.segments.append(self.out)
        self.out = outer

    e_AsyncFunctionDef = e_FunctionDef

    def e_ClassDef(self, node: ast.ClassDef) -> None:
        self.tok("class")
        self.emit(node.bases)
        self.emit(node.body)
        self.line = node.end_lineno or self.line
        self.tok("endclass")

    def e_Expr(self, node: ast.Expr) -> None:
        call = node.value
        # `out.append(e)` in a loop reads like the comprehension `[e for ...]`
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "append" \
                and len(call.args) == 1:
            self.tok("append")
            self.emit(call.args[0])
            return
        self.emit(call)

    def e_For(self, node: ast.For) -> None:
        self.tok("for")
        self.emit(node.target)
        self.tok("in")
        self.emit(node.iter)
        self.emit(node.body)
        self.emit(node.orelse)

    def _comprehension(self, elt_nodes: list, generators: list[ast.comprehension]) -> None:
        for g in generators:
            self.line = getattr(g.target, "lineno", self.line)
            self.tok("for")
            self.emit(g.target)
            self.tok("in")
            self.emit(g.iter)
            for cond in g.ifs:
                self.tok("If")
                self.emit(cond)
        self.tok("append")
        self.emit(elt_nodes)

    def e_ListComp(self, node) -> None:
        self._comprehension([node.elt], node.generators)

    e_SetComp = e_GeneratorExp = e_ListComp

    def e_DictComp(self, node) -> None:
        self._comprehension([node.key, node.value], node.generators)

    def e_Call(self, node: ast.Call) -> None:
        func, args = node.func, list(node.args)
        keywords = list(node.keywords)
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and func.value.id in self.keep and func.value.id not in _BUILTINS \
                and func.attr in _METHOD_LIKE and args:
            # torch.sum(x, 1) -> x.sum(1)
            receiver, args = args[0], args[1:]
            self.emit(receiver)
            self.tok("." + func.attr)
        else:
            self.emit(func)
        self.tok("call")
        self.emit(args)
        for kw in sorted(keywords, key=lambda k: k.arg or ""):
            if kw.arg not in _DIM_KEYWORDS:
                self.tok("kw")  # keyword names of the student's own helpers may be renamed
            self.emit(kw.value)
        self.tok(")")

    def e_keyword(self, node) -> None:
        self.emit(node.value)

    def e_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, _COMMUTATIVE):
            parts = sorted((self.sub(node.left), self.sub(node.right)), key=lambda ts: [t.text for t in ts])
            self.tok(type(node.op).__name__)
            for ts in parts:
                self.out.extend(ts)
            return
        self.tok(type(node.op).__name__)
        self.emit(node.left)
        self.emit(node.right)

    def sub(self, node) -> list[Token]:
        saved, self.out = self.out, []
        self.emit(node)
        got, self.out = self.out, saved
        return got

    def e_AugAssign(self, node: ast.AugAssign) -> None:
        # x += y is x = x + y
        self.tok("Assign")
        self.emit(node.target)
        self.e_BinOp(ast.BinOp(node.target, node.op, node.value))

    def e_Assign(self, node: ast.Assign) -> None:
        self.tok("Assign")
        self.emit(node.targets)
        self.emit(node.value)

    def e_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is None:
            return
        self.tok("Assign")
        self.emit(node.target)
        self.emit(node.value)


def tokenize_segments(text: str) -> list[list[Token]]:
    """The canonical tokens of a module's source, one list per function or method body and one for
    the module level (see the module docstring)."""
    return tokenize_tree(ast.parse(text))


def tokenize_tree(tree: ast.Module) -> list[list[Token]]:
    """`tokenize_segments` of a parsed module; normalises `tree` in place (parse it again to reuse it)."""
    imported, bound = _module_names(tree)
    em = _Emitter(imported | _BUILTINS | _MODULE_ALIASES_HINT, bound)
    em.emit(normalise_tree(tree, in_place=True).body)
    return [seg for seg in [*em.segments, em.out] if seg]


def tokenize_source(text: str) -> list[Token]:
    """All canonical tokens of a module's source, segment after segment."""
    return [t for seg in tokenize_segments(text) for t in seg]


def top_level_units(text: str | ast.Module) -> list[tuple[str, int, int]]:
    """(name, first line, last line) of each top-level function and class of a source or parsed module:
    the units a partial copy is looked for in."""
    tree = ast.parse(text) if isinstance(text, str) else text
    return [(n.name, n.lineno, n.end_lineno or n.lineno) for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]