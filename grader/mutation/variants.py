"""Interface variants: the correct example submission rewritten in other reasonable styles that change no value.

    for v in variants(rubric, example_text): v.id, v.text

Generic rewrites (every assignment):
- rename-parameters: the required parameters of every graded function get other names
  (`x` -> `x_in`); a grader must call them positionally, as the template's callers do;
- instance-methods: every @staticmethod becomes an ordinary method (as in the public course notebook);
- extra-buffer: every nn.Module registers one more buffer (a running statistic, a constant);
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
    return {t for tag, t in rubric.component_targets.items() if tag != "model" and "." not in t}


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


GENERIC: dict[str, Callable] = {
    "rename-parameters": rename_parameters,
    "instance-methods": instance_methods,
    "extra-buffer": extra_buffer,
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
