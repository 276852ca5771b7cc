"""Writing a mutated reference function into a student's file, as a student submission.

    text = planted(base_text, reference_source, "MoGPrior.log_prob", mutant.function_source, label)

The function is appended to the submission and installed over the student's own
(`MoGPrior.log_prob = ...`); it is built inside a factory function that first defines the
reference module's imports, constants and private helpers *as locals*, so the planted code finds
the names it was written against while the student's module keeps its own (and every other
component it calls is the student's). The reference itself never enters the sandbox.
"""

from __future__ import annotations

import ast
import textwrap

from grader.mutation.operators import solution_ranges


def component_of(qualname: str, targets: dict[str, str]) -> str | None:
    """The rubric component whose [components] target is `qualname` or its class (the most specific wins).

    Pass `rubric.code_targets`: a model-level component is never the answer (it grades a trained model, not code).
    """
    best, best_len = None, -1
    for tag, target in targets.items():
        if (qualname == target or qualname.startswith(target + ".")) and len(target) > best_len:
            best, best_len = tag, len(target)
    return best


def _context(reference_source: str) -> list[str]:
    """Source of the reference's module-level imports, constants and helpers that hold no solution block."""
    tree = ast.parse(reference_source)
    ranges = solution_ranges(reference_source)
    out = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(ast.unparse(node))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and not (
                isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)):
            out.append(ast.unparse(node))
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("_") and not any(
                node.lineno <= a and b <= node.end_lineno for a, b in ranges):
            out.append(ast.unparse(node))
    return out


def planted(base_text: str, reference_source: str, qualname: str, function_source: str, label: str) -> str:
    """`base_text` with `function_source` (a `def` of the reference's `qualname`) installed over the student's."""
    fn = ast.parse(textwrap.dedent(function_source)).body[0]
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    fn.decorator_list = []
    fn.name = "_gk_planted"  # a method named like a module function (`VAE.elbo` calls `elbo`) must not shadow it
    # zero-argument super() needs the class cell the planted function does not have
    body = ast.unparse(fn).replace("super().__init__(", "nn.Module.__init__(self, ")
    body = body.replace("nn.Module.__init__(self, )", "nn.Module.__init__(self)")
    owner, _, name = qualname.rpartition(".")
    lines = ["", "", f"# ---- planted by grader.mutation: {label} ----", "def _gk_planted_factory():"]
    lines += [textwrap.indent(s, "    ") for s in _context(reference_source)]
    lines += [textwrap.indent(body, "    "), "    return _gk_planted", ""]
    value = "staticmethod(_gk_planted_factory())" if static else "_gk_planted_factory()"
    lines.append(f"{owner}.{name} = {value}" if owner else f"{name} = {value}")
    return base_text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
