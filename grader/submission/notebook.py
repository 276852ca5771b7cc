"""A Jupyter/Colab notebook -> the plain module the sandbox imports, plus a map back to cells.

Nothing here executes the notebook: code cells are parsed with `ast` and only statements that
define something are copied (the rule is stated in docs/notebooks.md and in `KEPT_RULE`):

* IPython magics and shell lines (`%…`, `%%…` cells, `!…`) are dropped before parsing;
* imports are kept, except notebook-only ones (`google.colab`, `IPython`, `ipywidgets`, …);
* `def`, `async def` and `class` statements are kept (decorators included);
* an assignment to plain names is kept when its value is a *constant expression*: literals,
  containers, operators, names already kept, attribute access and calls of pure functions of
  `math`, `numpy`, `torch` or a few builtins (`torch.load`, `np.loadtxt`, data sets … are not pure);
* a `try` or `if __name__ …`-free block is kept only when everything inside it would be kept;
* everything else (training loops, plotting, downloads, `print`, calls, `for`/`while`/`with`) is left out
  and listed (cell number, line, reason) so the student can see why.

Line numbers: the generated module keeps every kept line at a line of its own; `line_map[g-1]` is the
(cell, line) of generated line g. Cells are numbered from 1 counting every cell (markdown too), the way
they appear from the top of the notebook.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

MAX_NOTEBOOK_BYTES = 256 * 1024 * 1024  # read no further than this (a notebook full of outputs is ~200 MB)
MAX_CODE_CHARS = 2_000_000  # code kept from one notebook (far above any homework)
MAX_CELL_CHARS = 500_000  # one code cell parsed at most (a generated cell past this is left out, not parsed)

KEPT_RULE = ("only imports, function and class definitions and constant assignments are run when grading; "
             "other top-level statements (training, plotting, downloads, prints) are left out")

NOTEBOOK_ONLY_MODULES = ("google.colab", "IPython", "ipywidgets", "ipykernel", "tqdm.notebook", "tqdm.auto",
                         "matplotlib_inline", "pyngrok", "wandb", "tensorboard")
PURE_MODULES = ("math", "numpy", "torch", "cmath", "fractions")
# Attribute names on a pure module that still touch the outside world (files, network, devices, randomness state).
IMPURE_ATTRS = {"load", "loads", "save", "savez", "savez_compressed", "loadtxt", "savetxt", "genfromtxt", "fromfile",
                "tofile", "memmap", "hub", "utils", "distributed", "multiprocessing", "jit", "compile", "manual_seed",
                "seed", "set_default_device", "set_default_dtype", "set_num_threads", "backends", "cuda", "mps",
                "profiler", "open", "DataLoader", "datasets", "from_file", "use_deterministic_algorithms"}
PURE_BUILTINS = {"int", "float", "complex", "bool", "str", "bytes", "tuple", "list", "dict", "set", "frozenset", "range",
                 "len", "abs", "min", "max", "round", "pow", "sum", "divmod", "sorted", "reversed", "zip", "enumerate",
                 "slice", "repr", "hash", "chr", "ord"}
# torch.cuda.is_available() is the one read of the device kept (device = 'cuda' if ... else 'cpu').
PURE_EXCEPTIONS = {("cuda", "is_available"), ("backends", "mps", "is_available")}
_BUILTIN_NAMES = set(dir(builtins)) | {"__name__", "__file__", "__doc__"}


class NotebookError(Exception):
    """The notebook cannot be read at all; the message says what is wrong and what to do."""


@dataclass
class LeftOut:
    """A top-level statement of the notebook that is not run when grading."""
    cell: int
    line: int
    end_line: int
    code: str  # its first line, shortened
    why: str

    def where(self) -> str:
        lines = f"line {self.line}" if self.end_line == self.line else f"lines {self.line}-{self.end_line}"
        return f"cell {self.cell}, {lines}"

    def to_json(self) -> dict:
        return {"cell": self.cell, "line": self.line, "end_line": self.end_line, "code": self.code, "why": self.why}


@dataclass
class ModuleSource:
    """The module source the sandbox imports as the assignment's module file, and where it came from."""
    source: str
    origin: str  # file name in the submission: "vae.ipynb" (or the module itself)
    module_file: str  # the name the sandbox writes it to ("vae.py")
    line_map: list = field(default_factory=list)  # generated line g -> (cell, line) at index g-1, or None
    left_out: list[LeftOut] = field(default_factory=list)
    dropped_names: dict = field(default_factory=dict)  # name -> LeftOut that assigns it (and nothing kept does)
    code_cells: int = 0

    @property
    def is_notebook(self) -> bool:
        return self.origin.endswith(".ipynb")

    def location(self, line: int) -> str:
        """Generated line -> "cell C, line L" ("line N" beyond the map)."""
        if 1 <= line <= len(self.line_map) and self.line_map[line - 1] is not None:
            cell, cl = self.line_map[line - 1]
            return f"cell {cell}, line {cl}"
        return f"line {line}"

    def translate(self, text: str) -> str:
        """Rewrite `vae.py, line 12` / `File ".../vae.py", line 12` into the notebook's cell and line, and explain
        names that are missing because the statement that set them was left out."""
        if not self.is_notebook or not text:
            return text
        mod = re.escape(self.module_file)
        text = re.sub(r'File "[^"\n]*?' + mod + r'", line (\d+)',
                      lambda m: f'File "{self.origin}", {self.location(int(m.group(1)))}', text)
        text = re.sub(r"(?<![\w/.])" + mod + r"(?:, | line |:)(?:line )?(\d+)",
                      lambda m: f"{self.origin}, {self.location(int(m.group(1)))}", text)
        text = re.sub(r"\b" + mod + r"\b", self.origin, text)

        def explain(m: re.Match) -> str:
            name = m.group(1) or m.group(2)
            lo = self.dropped_names.get(name)
            if lo is None:
                return m.group(0)
            return (f"{m.group(0)} (`{name}` is set in {self.origin}, {lo.where()}, by a statement that is not run "
                    f"when grading: {lo.why}; {KEPT_RULE})")
        return re.sub(r"name '(\w+)' is not defined|`(\w+)` is missing: the module defines no `\w+`", explain, text)

    def left_out_lines(self) -> list[str]:
        return [f"{lo.where()}: {lo.code} — {lo.why}" for lo in self.left_out]


# ---- reading --------------------------------------------------------------------------------------
def read_notebook(path: Path):
    """Parse a notebook file (nbformat 4; 3 is upgraded) without running anything. Raises NotebookError."""
    try:
        import nbformat  # imported here: only notebook submissions pay for it
    except ImportError:  # a student's self-check bundle without Jupyter: nbformat 4 is plain JSON
        nbformat = None
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise NotebookError(f"{path.name} is {size / 2**20:.0f} MB, more than the {MAX_NOTEBOOK_BYTES >> 20} MB a notebook "
                            "may have: clear its outputs (Edit > Clear all outputs) and hand it in again")
    with open(path, "rb") as f:
        raw = f.read(MAX_NOTEBOOK_BYTES + 1)
    try:
        data = json.loads(raw)  # bytes: json decodes UTF-8 itself (no second copy of a big file)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise NotebookError(f"{path.name} is not a readable notebook (it is not valid JSON: {str(e)[:120]}); it may be "
                            "truncated or corrupt: open it in Jupyter or Colab, save it again and hand it in again") from None
    del raw
    if not isinstance(data, dict) or not isinstance(data.get("cells", data.get("worksheets")), list):
        raise NotebookError(f"{path.name} is JSON but not a Jupyter notebook (no list of cells): hand in the .ipynb "
                            "saved by Jupyter or Colab")
    major = data.get("nbformat")
    if nbformat is None:
        if major != 4:
            raise NotebookError(f"{path.name} is an nbformat {major} notebook; reading it needs the nbformat package")
        return data
    try:
        nb = nbformat.from_dict(data)
        if isinstance(major, int) and major < 4:
            nb = nbformat.convert(nb, 4)  # nbformat 3 (IPython 2/3): cells inside worksheets
    except Exception as e:  # nbformat's own errors on odd documents; say what it said
        raise NotebookError(f"{path.name} (nbformat {major}) could not be read: {type(e).__name__}: {str(e)[:160]}; "
                            "save it with a current Jupyter or Colab and hand it in again") from None
    if not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{path.name} has no cells that could be read (nbformat {major})")
    return nb


def cell_source(cell) -> str:
    """A cell's text, always encodable: JSON may spell a lone surrogate ("\\udcff"), which no file, parser
    or PDF can take (ast.parse raised UnicodeEncodeError out of `prepare`): each becomes U+FFFD."""
    src = cell.get("source", "")
    if isinstance(src, list):  # nbformat allows a list of lines on disk
        src = "".join(s for s in src if isinstance(s, str))
    if not isinstance(src, str):
        return ""
    try:
        src.encode("utf-8")
    except UnicodeEncodeError:
        src = re.sub("[\ud800-\udfff]", "\ufffd", src)
    return src


def code_cells(nb) -> list[tuple[int, str]]:
    """[(cell number from 1, source)] of the code cells."""
    return [(i, cell_source(c)) for i, c in enumerate(nb.get("cells", []), 1)
            if isinstance(c, dict) and c.get("cell_type") == "code"]


# ---- conversion -----------------------------------------------------------------------------------
_MAGIC = re.compile(r"^(\s*)([%!]|\w[\w.]*\s*=\s*[%!])")
_HELP = re.compile(r"^\s*[\w.]+\?\??\s*$|^\s*\?")


def _strip_magics(src: str) -> tuple[str, list[tuple[int, str]]]:
    """Magic / shell / help lines -> `pass` at the same indentation (line numbers kept)."""
    lines = src.split("\n")
    dropped = []
    if lines and lines[0].lstrip().startswith("%%"):
        return "", [(1, lines[0].strip())]
    cont = False
    for i, line in enumerate(lines):
        if cont:  # continuation of a magic line ending in a backslash
            dropped.append((i + 1, line.strip()))
            cont = line.rstrip().endswith("\\")
            lines[i] = ""
            continue
        m = _MAGIC.match(line)
        if m or _HELP.match(line):
            dropped.append((i + 1, line.strip()))
            cont = line.rstrip().endswith("\\")
            lines[i] = (m.group(1) if m else re.match(r"^\s*", line).group(0)) + "pass"
    return "\n".join(lines), dropped


def _short(code: str, n: int = 70) -> str:
    first = code.strip().split("\n", 1)[0]
    return first if len(first) <= n else first[: n - 1] + "…"


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


class _Scope:
    """Names bound by kept statements, and which of them are pure modules."""

    def __init__(self):
        self.bound: set[str] = set()
        self.pure_modules: dict[str, str] = {}  # local alias -> module path ("np" -> "numpy")

    def add_import(self, node: ast.Import | ast.ImportFrom) -> None:
        for a in node.names:
            if isinstance(node, ast.Import):
                local = a.asname or a.name.split(".")[0]
                full = a.name if a.asname else a.name.split(".")[0]
            else:
                if a.name == "*":
                    continue
                local, full = a.asname or a.name, f"{node.module or ''}.{a.name}"
            self.bound.add(local)
            if full.split(".")[0] in PURE_MODULES:
                self.pure_modules[local] = full


def _import_is_notebook_only(node: ast.Import | ast.ImportFrom) -> bool:
    mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    return any(m == n or m.startswith(n + ".") for m in mods for n in NOTEBOOK_ONLY_MODULES)


def _import_needed(node: ast.Import | ast.ImportFrom, used: set[str]) -> bool:
    if isinstance(node, ast.ImportFrom) and (node.module == "__future__" or any(a.name == "*" for a in node.names)):
        return True
    return any((a.asname or a.name.split(".")[0]) in used for a in node.names)


def _import_tops(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name.split(".")[0] for a in node.names]
    return [(node.module or "").split(".")[0]] if node.module else []


@lru_cache(maxsize=256)
def _installed(top: str) -> bool:
    """Is the top-level module importable where the sandbox runs (the grader's environment)? Looks, never imports."""
    if top in sys.builtin_module_names or top == "__future__":
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _const_problem(value: ast.AST, scope: _Scope) -> str | None:
    """None when `value` is a constant expression under the rule, else why not."""
    for node in ast.walk(value):
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Await,
                             ast.Yield, ast.YieldFrom, ast.NamedExpr)):
            return "its value is not a constant expression"
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in scope.bound and node.id not in _BUILTIN_NAMES:
                return f"it uses `{node.id}`, which is not set by a kept statement"
        if isinstance(node, ast.Call):
            parts = _dotted(node.func)
            if parts is None:
                return "it calls something that is not a plain function"
            if len(parts) == 1 and parts[0] in PURE_BUILTINS and parts[0] not in scope.bound:
                continue
            if parts[0] not in scope.pure_modules:
                return f"it calls `{'.'.join(parts)}` (only pure functions of math, numpy and torch are run)"
            if tuple(parts[1:]) in PURE_EXCEPTIONS:
                continue
            if any(p in IMPURE_ATTRS for p in parts[1:]):
                return f"it calls `{'.'.join(parts)}`, which reads or changes state outside the code"
    return None


def _target_names(targets: list[ast.AST]) -> list[str] | None:
    names = []
    for t in targets:
        if isinstance(t, ast.Name):
            names.append(t.id)
        elif isinstance(t, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in t.elts):
            names.extend(e.id for e in t.elts)
        else:
            return None
    return names


def _assigned_names(node: ast.stmt) -> set[str]:
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n is node:
            out.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name.split(".")[0]) for a in n.names if a.name != "*")
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        out.add(node.name)
    return out


def _definition_problem(node: ast.stmt, scope: _Scope) -> str | None:
    """A def/class runs its decorators, bases and defaults at import: they must only use kept names."""
    exprs = list(node.decorator_list)
    if isinstance(node, ast.ClassDef):
        exprs += node.bases + [k.value for k in node.keywords]
    else:
        exprs += node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
    for e in exprs:
        for n in ast.walk(e):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in scope.bound \
                    and n.id not in _BUILTIN_NAMES:
                return f"it needs `{n.id}` when defined, which is not set by a kept statement"
    return None


def _keep(node: ast.stmt, scope: _Scope) -> str | None:
    """None to keep the top-level statement, else why it is left out."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        if _import_is_notebook_only(node):
            return "notebook-only import (Colab, IPython display, widgets, progress bars in the browser)"
        if isinstance(node, ast.ImportFrom) and node.level:
            return "a relative import (a notebook has no package)"
        if isinstance(node, ast.ImportFrom) and node.module == "__future__" and scope.bound:
            return "a __future__ import after other code (Python allows it only first)"
        for top in _import_tops(node):
            if not _installed(top):
                return f"`{top}` is not installed where the grader runs (a `!pip install` is not run either)"
        return None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return _definition_problem(node, scope)
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if _target_names(targets) is None:
            return "it assigns to an attribute or an item, not to a name"
        if node.value is None:
            return None
        return _const_problem(node.value, scope)
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        return None  # a docstring
    if isinstance(node, ast.Pass):
        return "magic"
    if isinstance(node, ast.Try):
        inner = node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        sub = _Scope()
        sub.bound, sub.pure_modules = set(scope.bound), dict(scope.pure_modules)
        for s in inner:
            why = _keep(s, sub)
            if why is not None and why != "magic":
                return "a try block that does more than import or define"
            _bind(s, sub)
        return None
    kind = {ast.For: "a loop", ast.While: "a loop", ast.With: "a with block", ast.If: "a conditional block",
            ast.Expr: "a call or expression run for its effect", ast.AugAssign: "an update of a variable",
            ast.Delete: "a del statement", ast.Assert: "an assert"}.get(type(node), "not a definition")
    return kind


def _bind(node: ast.stmt, scope: _Scope) -> None:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        scope.add_import(node)
    elif isinstance(node, ast.Try):
        for s in node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]:
            _bind(s, scope)
    else:
        scope.bound.update(_assigned_names(node))


def module_from_notebook(path: Path, module_file: str, nb=None) -> ModuleSource:
    """Build the module from the notebook's code cells under the rule above. Raises NotebookError when the
    notebook cannot be read or holds no code."""
    path = Path(path)
    nb = nb if nb is not None else read_notebook(path)
    cells = code_cells(nb)
    out = ModuleSource(source="", origin=path.name, module_file=module_file, code_cells=len(cells))
    if not any(src.strip() for _, src in cells):
        raise NotebookError(f"{path.name} holds no code ({len(cells)} code cells, all empty): nothing could be graded")
    scope = _Scope()
    lines: list[str] = [f"# Built by gradekit from {path.name}: {KEPT_RULE}."]
    line_map: list = [None]
    set_by_left_out: dict[str, LeftOut] = {}
    kept: list = []  # (node, cell, first line, last line, source lines) in notebook order
    total = 0
    for cell_no, raw in cells:
        src, magics = _strip_magics(raw)
        for ln, text in magics:
            out.left_out.append(LeftOut(cell_no, ln, ln, _short(text), "IPython magic or shell command"))
        if not src.strip():
            continue
        if len(src) > MAX_CELL_CHARS:
            out.left_out.append(LeftOut(cell_no, 1, 1, _short(src.strip()), f"the cell holds more than "
                                        f"{MAX_CELL_CHARS // 1000} k characters of code, so none of it is run"))
            continue
        try:
            tree = ast.parse(src)
        except (RecursionError, MemoryError):  # deeply nested expressions exhaust the parser, not the grader
            out.left_out.append(LeftOut(cell_no, 1, 1, _short(src.strip()), "the cell nests expressions too deeply "
                                        "to be read (split the expression into steps), so none of it is run"))
            continue
        except SyntaxError as e:
            lo = LeftOut(cell_no, e.lineno or 1, e.lineno or 1, _short((e.text or "").strip() or "(this cell)"),
                         f"the cell is not valid Python ({e.msg}), so none of it is run")
            out.left_out.append(lo)
            for m in re.finditer(r"^(?:def|class)\s+(\w+)|^(\w+)\s*=", src, re.M):
                set_by_left_out.setdefault(m.group(1) or m.group(2), lo)
            continue
        src_lines = src.split("\n")
        body = tree.body
        for i, node in enumerate(body):
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            end = node.end_lineno or node.lineno
            shares = (i > 0 and (body[i - 1].end_lineno or 0) >= start) or \
                     (i + 1 < len(body) and body[i + 1].lineno <= end)
            why = _keep(node, scope)
            if why == "magic":
                continue
            if why is None and shares:
                why = "it shares a line with another statement (write one statement per line)"
            if why is not None:
                lo = LeftOut(cell_no, start, end, _short("\n".join(src_lines[start - 1:end])), why)
                out.left_out.append(lo)
                for name in _assigned_names(node):
                    set_by_left_out.setdefault(name, lo)
                continue
            _bind(node, scope)
            chunk = src_lines[start - 1:end]
            total += sum(len(c) + 1 for c in chunk)
            if total > MAX_CODE_CHARS:
                raise NotebookError(f"{path.name} holds more than {MAX_CODE_CHARS // 1000} k characters of code to keep")
            kept.append((node, cell_no, start, end, chunk))
    # An import only the left-out statements use (matplotlib, seaborn, tqdm for the training loop) is not run
    # either: importing plotting stacks can take seconds in the sandbox and has nothing to grade.
    used = set()
    for node, *_ in kept:
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            used |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    for node, cell_no, start, end, chunk in kept:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not _import_needed(node, used):
            lo = LeftOut(cell_no, start, end, _short("\n".join(chunk)),
                         "imported only for statements that are not run")
            out.left_out.append(lo)
            for name in _assigned_names(node):
                set_by_left_out.setdefault(name, lo)
                scope.bound.discard(name)
            continue
        lines.extend(chunk)
        line_map.extend((cell_no, start + k) for k in range(len(chunk)))
    out.left_out.sort(key=lambda lo: (lo.cell, lo.line))
    out.source = "\n".join(lines) + "\n"
    out.line_map = line_map
    out.dropped_names = {n: lo for n, lo in set_by_left_out.items() if n not in scope.bound}
    return out


# A literal first word lets `re` jump between candidates (memchr speed: ~0.3 s for 200 MB of base64 outputs,
# where an alternation in front scanned at ~8 MB/s); the byte before tells a top-level definition.
_DEF_IN_JSON = (re.compile(rb"def[ \t]+([A-Za-z_]\w*)"), re.compile(rb"class[ \t]+([A-Za-z_]\w*)"))
_names_cache: dict = {}


def defined_names(path: Path, nb=None) -> set[str]:
    """Top-level names a notebook's cells define with `def`/`class`, for telling assignments and notebooks apart.

    Scans the file's bytes (no JSON parse: a 200 MB notebook is looked at by several rubrics), cached by
    (path, size, mtime). A name in a markdown cell may count too; this only ranks candidates."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return set()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _names_cache:
        with open(path, "rb") as f:
            raw = f.read(MAX_NOTEBOOK_BYTES)
        if len(_names_cache) > 256:
            _names_cache.clear()
        names = set()
        for pattern in _DEF_IN_JSON:
            for m in pattern.finditer(raw):
                i = m.start()
                if raw[i - 6:i] == b"async ":
                    i -= 6
                if i == 0 or raw[i - 1:i] == b'"' or raw[i - 2:i] == b"\\n":
                    names.add(m.group(1).decode())
        _names_cache[key] = names
    return set(_names_cache[key])
